from __future__ import annotations

import torch
from torch import nn

from xsep import backends
from xsep import functional as XF
from xsep.nn._common import NotScriptable, check_channels, conv_args, conv_init_, conv_repr, op_padding
from xsep.ops.checks import activation_name
from xsep.ops.schemas import INPUT_ACTIVATIONS, MID_ACTIVATIONS


class _Weights(nn.Module):
    """Holds one half's parameters under the names nn.Conv2d uses (`weight`, `bias`)."""

    def __init__(self, shape, bias_channels: int | None, factory):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(*shape, **factory))
        self.bias = nn.Parameter(torch.empty(bias_channels, **factory)) if bias_channels else None

    def extra_repr(self) -> str:
        return f"weight={tuple(self.weight.shape)}" + (", bias" if self.bias is not None else "")


class SeparableConv2d(NotScriptable, nn.Module):
    """Fused depthwise-separable convolution, a drop-in for the pair

        nn.Sequential(depthwise=nn.Conv2d(in, in * M, kernel_size, stride, padding, dilation, groups=in,
                                          bias=depthwise_bias),
                      pointwise=nn.Conv2d(in * M, out, 1, bias=bias))

    with parameters at `depthwise.weight`, `depthwise.bias` (when `depthwise_bias=True`; added
    before the mid activation), `pointwise.weight` and `pointwise.bias`, so that pair's state_dict
    loads unchanged; nn.Conv2d's initialisation. Optional `input_activation` ('relu', applied as the
    input is loaded) and `mid_activation` ('relu', 'relu6', 'elu') between halves. `padding` also
    takes (top, bottom, left, right) and TensorFlow-style 'same' (any stride)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 depth_multiplier: int = 1, bias: bool = True, input_activation: str | None = None,
                 mid_activation: str | None = None, backend: str | None = None, device=None, dtype=None,
                 depthwise_bias: bool = False):
        super().__init__()
        self.in_channels = check_channels(in_channels, "in_channels")
        self.out_channels = check_channels(out_channels, "out_channels")
        self.depth_multiplier = check_channels(depth_multiplier, "depth_multiplier")
        self.kernel_size, self.stride, self.padding, self.dilation = conv_args(kernel_size, stride, padding, dilation)
        self.input_activation = activation_name(input_activation, "input_activation", INPUT_ACTIVATIONS)
        self.mid_activation = activation_name(mid_activation, "mid_activation", MID_ACTIVATIONS)
        if backend is not None:
            backends.check_name(backend)  # a typo fails here; availability is known only at forward time
        self.backend = backend
        factory = {"device": device, "dtype": dtype}
        mid = in_channels * depth_multiplier
        self.depthwise = _Weights((mid, 1, *self.kernel_size), mid if depthwise_bias else None, factory)
        self.pointwise = _Weights((out_channels, mid, 1, 1), out_channels if bias else None, factory)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        conv_init_(self.depthwise.weight, self.depthwise.bias)
        conv_init_(self.pointwise.weight, self.pointwise.bias)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        padding = op_padding(self.padding)
        if padding is not None:
            out = XF.module_call("separable_conv2d", self.backend, input, self.depthwise.weight,
                                      self.pointwise.weight, self.pointwise.bias, self.stride, padding, self.dilation,
                                      self.input_activation, self.mid_activation, self.depthwise.bias)
            if out is not None:
                return out
        return XF.separable_conv2d(input, self.depthwise.weight, self.pointwise.weight, self.pointwise.bias,
                                   self.stride, self.padding, self.dilation, self.input_activation,
                                   self.mid_activation, self.backend, self.depthwise.bias)

    def __repr__(self) -> str:  # one line, like nn.Conv2d
        s = conv_repr(self, f"{self.in_channels}, {self.out_channels}")
        if self.pointwise.bias is None:
            s += ", bias=False"
        if self.depthwise.bias is not None:
            s += ", depthwise_bias=True"
        for name in ("input_activation", "mid_activation"):
            if getattr(self, name) != "none":
                s += f", {name}={getattr(self, name)!r}"
        if self.backend is not None:
            s += f", backend={self.backend!r}"
        return f"{type(self).__name__}({s})"
