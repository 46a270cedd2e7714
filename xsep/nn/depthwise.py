from __future__ import annotations

import torch
from torch import nn

from xsep import backends
from xsep import functional as XF
from xsep.nn._common import NotScriptable, check_channels, conv_args, conv_init_, conv_repr, op_padding
from xsep.ops.checks import activation_name
from xsep.ops.schemas import INPUT_ACTIVATIONS


class DepthwiseConv2d(NotScriptable, nn.Module):
    """Depthwise convolution, a drop-in for `nn.Conv2d(in_channels, in_channels * depth_multiplier,
    kernel_size, stride, padding, dilation, groups=in_channels, bias=bias)`: same `weight`
    [in * M, 1, kh, kw] and `bias`, same initialisation, state_dicts interchangeable. `padding` also
    takes (top, bottom, left, right) and TensorFlow-style 'same' (any stride)."""

    def __init__(self, in_channels: int, kernel_size, stride=1, padding=0, dilation=1, depth_multiplier: int = 1,
                 bias: bool = False, input_activation: str | None = None, backend: str | None = None,
                 device=None, dtype=None):
        super().__init__()
        self.in_channels = check_channels(in_channels, "in_channels")
        self.depth_multiplier = check_channels(depth_multiplier, "depth_multiplier")
        self.out_channels = in_channels * depth_multiplier
        self.kernel_size, self.stride, self.padding, self.dilation = conv_args(kernel_size, stride, padding, dilation)
        self.input_activation = activation_name(input_activation, "input_activation", INPUT_ACTIVATIONS)
        if backend is not None:
            backends.check_name(backend)  # a typo fails here; availability is known only at forward time
        self.backend = backend
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(self.out_channels, 1, *self.kernel_size, **factory))
        self.bias = nn.Parameter(torch.empty(self.out_channels, **factory)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        conv_init_(self.weight, self.bias)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        padding = op_padding(self.padding)
        if padding is not None:
            out = XF.module_call("depthwise_conv2d", self.backend, input, self.weight, self.bias, self.stride,
                                      padding, self.dilation, self.input_activation)
            if out is not None:
                return out
        return XF.depthwise_conv2d(input, self.weight, self.bias, self.stride, self.padding, self.dilation,
                                   self.input_activation, self.backend)

    def extra_repr(self) -> str:
        s = conv_repr(self, f"{self.in_channels}")
        if self.bias is not None:
            s += ", bias=True"
        if self.input_activation != "none":
            s += f", input_activation={self.input_activation!r}"
        if self.backend is not None:
            s += f", backend={self.backend!r}"
        return s
