"""Xception (Chollet, CVPR 2017) assembled from xsep's fused separable convolutions.

The module tree and state_dict keys follow timm's `legacy_xception` (a port of the Keras reference
weights), so a timm state_dict loads after one rename (xsep/models/weights.py): stem `conv1`/`bn1`/
`conv2`/`bn2`, `block1`..`block12` each with `rep` (separable convs and BNs, under timm's indices)
and, where the shape changes, `skip`/`skipbn`, exit flow `conv3`/`bn3`/`conv4`/`bn4`, head `fc`.

Every "ReLU -> SeparableConv" unit of the paper is one fused op (`input_activation='relu'`): the
ReLU is applied as the input is read, so the un-activated tensor stays intact for the residual add
and no separate ReLU pass over memory is made. timm's `rep` holds those ReLUs as modules; here their
indices are simply unused, which keeps timm's numbering for the modules that hold weights.
"""

from __future__ import annotations

from collections import OrderedDict
from os import PathLike

import torch
import torch.nn.functional as F
from torch import nn

from xsep.nn import SeparableConv2d

# Output channels of the paper's network at width 1: stem, entry-flow modules, middle flow,
# exit-flow module, final separable convs.
STEM_CHANNELS = (32, 64)
ENTRY_CHANNELS = (128, 256, 728)
MIDDLE_CHANNELS = 728
EXIT_CHANNELS = (728, 1024)  # the exit module's two separable convs (it grows last, not first)
FINAL_CHANNELS = (1536, 2048)
PAPER_MIDDLE_BLOCKS = 8


def scaled_channels(channels: int, width: float) -> int:
    """`channels * width` rounded to a multiple of 8 (at least 8): the widths of the reduced
    variants; width 1 gives the paper's channel counts, all multiples of 8."""
    return max(8, int(round(channels * width / 8)) * 8)


class Block(nn.Module):
    """One Xception module: `reps` x (ReLU -> SeparableConv 3x3 -> BN), then a 3x3/2 max-pool when
    `stride` is 2, plus a residual branch (identity, or 1x1/stride conv + BN where the shape changes).

    `grow_first`: the first separable conv changes the channel count (entry flow); otherwise the last
    does (exit flow). `start_with_relu=False` for the first module, whose input the stem already ReLU'd.
    """

    def __init__(self, in_channels: int, out_channels: int, reps: int, stride: int = 1, *,
                 start_with_relu: bool = True, grow_first: bool = True, residual: bool = True,
                 mid_activation: str | None = None, backend: str | None = None):
        super().__init__()
        self.residual = residual
        if residual and (out_channels != in_channels or stride != 1):
            self.skip = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
            self.skipbn = nn.BatchNorm2d(out_channels)
        else:
            self.skip = None
            self.skipbn = None

        layers: list[tuple[str, nn.Module]] = []
        # timm numbers rep as [ReLU, SepConv, BN] * reps (the first ReLU dropped when the module does not
        # start with one); we keep those indices for the SepConvs and BNs so the state_dict keys match.
        index = 0 if start_with_relu else -1
        for i in range(reps):
            if grow_first:
                conv_in, conv_out = (in_channels if i == 0 else out_channels), out_channels
            else:
                conv_in, conv_out = in_channels, (in_channels if i < reps - 1 else out_channels)
            activation = "relu" if (start_with_relu or i > 0) else None
            layers.append((str(index + 1), SeparableConv2d(
                conv_in, conv_out, 3, padding=1, bias=False, input_activation=activation,
                mid_activation=mid_activation, backend=backend)))
            layers.append((str(index + 2), nn.BatchNorm2d(conv_out)))
            index += 3
        if stride != 1:
            # timm (and the PyTorch port of the Keras weights) pads the pool symmetrically; Keras' 'same'
            # differs on the one even-sized input (74x74). We match timm, so its weights give its logits.
            layers.append((str(index), nn.MaxPool2d(3, stride, padding=1)))
        self.rep = nn.Sequential(OrderedDict(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.rep(x)
        if not self.residual:
            return out
        skip = x if self.skip is None else self.skipbn(self.skip(x))
        return out + skip  # not in place: under autocast the two branches may differ in dtype


class Xception(nn.Module):
    """The paper's Xception (entry flow, middle flow x `middle_blocks`, exit flow; BN after every conv;
    global average pooling; dropout; linear classifier). See `xception()` for the arguments."""

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.0, *,
                 width: float = 1.0, middle_blocks: int = PAPER_MIDDLE_BLOCKS, mid_activation: str | None = None,
                 residual: bool = True, backend: str | None = None):
        super().__init__()
        _check_args(num_classes, in_chans, drop_rate, width, middle_blocks)
        c = lambda channels: scaled_channels(channels, width)  # noqa: E731
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.width = width
        self.middle_blocks = middle_blocks
        self.residual = residual
        self.mid_activation = mid_activation
        self.backend = backend
        sep = {"residual": residual, "mid_activation": mid_activation, "backend": backend}

        # Entry flow: stem (two plain 3x3 'valid' convs: 299 -> 149 -> 147), then three strided modules.
        self.conv1 = nn.Conv2d(in_chans, c(STEM_CHANNELS[0]), 3, stride=2, bias=False)
        self.bn1 = nn.BatchNorm2d(c(STEM_CHANNELS[0]))
        self.conv2 = nn.Conv2d(c(STEM_CHANNELS[0]), c(STEM_CHANNELS[1]), 3, bias=False)
        self.bn2 = nn.BatchNorm2d(c(STEM_CHANNELS[1]))
        blocks = []
        channels = c(STEM_CHANNELS[1])
        for i, out in enumerate(ENTRY_CHANNELS):
            blocks.append(Block(channels, c(out), 2, 2, start_with_relu=i > 0, **sep))
            channels = c(out)
        # Middle flow: identity-skip modules of three separable convs at 19x19 (for a 299 input).
        for _ in range(middle_blocks):
            blocks.append(Block(channels, c(MIDDLE_CHANNELS), 3, 1, **sep))
        # Exit flow: one strided module that widens on its second conv, then two separable convs.
        blocks.append(Block(channels, c(EXIT_CHANNELS[1]), 2, 2, grow_first=False, **sep))
        for i, block in enumerate(blocks, start=1):
            self.add_module(f"block{i}", block)
        self.num_blocks = len(blocks)

        self.conv3 = SeparableConv2d(c(EXIT_CHANNELS[1]), c(FINAL_CHANNELS[0]), 3, padding=1, bias=False,
                                     mid_activation=mid_activation, backend=backend)
        self.bn3 = nn.BatchNorm2d(c(FINAL_CHANNELS[0]))
        # bn3 -> ReLU -> conv4 is one fused op: conv4 applies the ReLU as it reads its input.
        self.conv4 = SeparableConv2d(c(FINAL_CHANNELS[0]), c(FINAL_CHANNELS[1]), 3, padding=1, bias=False,
                                     input_activation="relu", mid_activation=mid_activation, backend=backend)
        self.bn4 = nn.BatchNorm2d(c(FINAL_CHANNELS[1]))
        self.num_features = self.head_hidden_size = c(FINAL_CHANNELS[1])
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        # timm's (and Keras') choice: He-normal convs (fan-out), BN at identity.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, SeparableConv2d):
                for half in (module.depthwise, module.pointwise):
                    nn.init.kaiming_normal_(half.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The final feature map [N, 2048, 10, 10] for a 299x299 input, after the last ReLU."""
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        for i in range(1, self.num_blocks + 1):
            x = getattr(self, f"block{i}")(x)
        x = self.bn3(self.conv3(x))  # no ReLU between the last module's add and conv3 (paper, Keras, timm)
        x = self.bn4(self.conv4(x))
        return F.relu(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        if self.drop_rate:
            x = F.dropout(x, self.drop_rate, training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new, freshly initialised classifier for `num_classes` (0: none, forward returns the pooled
        features). `global_pool` is accepted for timm's signature; only average pooling exists here."""
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 0:
            raise ValueError(f"num_classes must be a non-negative int, got {num_classes!r}")
        if global_pool not in (None, "avg"):
            raise ValueError(f"global_pool must be None or 'avg' (the only pooling), got {global_pool!r}")
        self.num_classes = num_classes
        reference = self.bn4.weight
        self.fc = (nn.Linear(self.num_features, num_classes, device=reference.device, dtype=reference.dtype)
                   if num_classes > 0 else nn.Identity())
        self.fc.train(self.training)


def _check_args(num_classes, in_chans, drop_rate, width, middle_blocks) -> None:
    for name, value, minimum in (("num_classes", num_classes, 0), ("in_chans", in_chans, 1),
                                 ("middle_blocks", middle_blocks, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    if not isinstance(drop_rate, (int, float)) or not 0.0 <= drop_rate < 1.0:
        raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate!r}")
    if not isinstance(width, (int, float)) or isinstance(width, bool) or width <= 0:
        raise ValueError(f"width must be a positive number, got {width!r}")


def xception(num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.0, backend: str | None = None,
             weights: str | PathLike | None = None, mid_activation: str | None = None, residual: bool = True, *,
             width: float = 1.0, middle_blocks: int = PAPER_MIDDLE_BLOCKS) -> Xception:
    """The paper's Xception: 22,855,952 parameters at 1000 classes; a 299x299 input gives 10x10x2048
    features (the minimum input is 71x71).

    backend: passed to every SeparableConv2d ('native', 'triton', 'torch', or None for automatic);
        'torch' gives the same network in plain PyTorch ops.
    weights: a file holding a timm `legacy_xception` state_dict or xsep's own (a training checkpoint
        with a 'model' entry works too); read with torch.load(weights_only=True), never downloaded.
    mid_activation: None (the paper's choice), 'relu' or 'elu' between depthwise and pointwise halves,
        for the ablation of section 4.7 (also 'relu6').
    residual: False removes every residual branch (and the skip convs), the ablation of section 4.6.
    width, middle_blocks: a reduced network (channel counts times `width`, rounded to multiples of 8;
        `middle_blocks` middle-flow modules instead of 8) for training on CPUs; see xception_tiny.
    """
    model = Xception(num_classes, in_chans, drop_rate, width=width, middle_blocks=middle_blocks,
                     mid_activation=mid_activation, residual=residual, backend=backend)
    if weights is not None:
        from xsep.models.weights import load_weights

        load_weights(model, weights)
    return model


def xception_tiny(num_classes: int = 10, in_chans: int = 3, drop_rate: float = 0.0, backend: str | None = None,
                  weights: str | PathLike | None = None, mid_activation: str | None = None, residual: bool = True,
                  *, width: float = 0.125, middle_blocks: int = 1) -> Xception:
    """Xception at 1/8 width with one middle-flow module (158,058 parameters at 10 classes): the
    paper's structure (every kind of module, stride and skip) at a size that trains on a CPU in minutes."""
    return xception(num_classes, in_chans, drop_rate, backend, weights, mid_activation, residual,
                    width=width, middle_blocks=middle_blocks)
