"""ONNX export of models with xsep layers, as standard ONNX: grouped Conv for the depthwise half, Conv
for the pointwise one, Relu/Clip/Elu for the activations and Pad where the padding is asymmetric (no
custom domain), the graph the `torch` backend's plain convolutions export to, whatever the backend.

- `torch.onnx.export(..., dynamo=True)`: the exporter runs torch.export's decompositions, which
  cover xsep's ops (xsep/ops/decompositions.py); nothing here.
- `torch.onnx.export(..., dynamo=False)` (the TorchScript exporter): the symbolic functions below,
  registered for both op namespaces (torch.ops.xsep, torch.ops.xsep_triton) by `import xsep`.
"""

from __future__ import annotations

import torch
from torch.onnx import symbolic_helper as sh

NAMESPACES = ("xsep", "xsep_triton")
OPSET = 11  # the first with Pad's pads and Clip's bounds as inputs, which the exporter emits for F.pad, F.relu6


def _dtype(x) -> torch.dtype:
    scalar_type = sh._try_get_scalar_type(x)
    return scalar_type.dtype() if scalar_type is not None else torch.float32


def _activation(g, x, name: str):
    if name == "relu":
        return g.op("Relu", x)
    if name == "relu6":
        bounds = [g.op("Constant", value_t=torch.tensor(v, dtype=_dtype(x))) for v in (0.0, 6.0)]
        return g.op("Clip", x, *bounds)
    if name == "elu":
        return g.op("Elu", x, alpha_f=1.0)
    return x


def _conv(g, x, weight, bias, stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1), groups=1):
    """ONNX Conv; `pads` is ONNX's (top, left, bottom, right)."""
    inputs = [x, weight] if sh._is_none(bias) else [x, weight, bias]
    kernel = sh._get_tensor_sizes(weight)
    attrs = {"kernel_shape_i": kernel[2:]} if kernel and None not in kernel else {}
    return g.op("Conv", *inputs, strides_i=list(stride), pads_i=list(pads), dilations_i=list(dilation),
                group_i=groups, **attrs)


def _depthwise(g, input, weight, bias, stride, padding, dilation, input_activation):
    channels = sh._get_tensor_dim_size(input, 1)
    if channels is None:
        raise torch.onnx.errors.SymbolicValueError(
            "xsep's ONNX export needs the input's channel count (dimension 1) to be static", input)
    x = _activation(g, input, input_activation)
    top, bottom, left, right = padding
    if top == bottom and left == right:
        pads = (top, left, bottom, right)
    else:  # as F.pad exports: a Pad node, then an unpadded convolution
        x = g.op("Pad", x, g.op("Constant", value_t=torch.tensor([0, 0, top, left, 0, 0, bottom, right])),
                 mode_s="constant")
        pads = (0, 0, 0, 0)
    return _conv(g, x, weight, bias, stride, pads, dilation, channels)


@sh.parse_args("v", "v", "v", "is", "is", "is", "s")
def depthwise_conv2d(g, input, weight, bias, stride, padding, dilation, input_activation):
    return _depthwise(g, input, weight, bias, stride, padding, dilation, input_activation)


@sh.parse_args("v", "v", "v")
def pointwise_conv2d(g, input, weight, bias):
    return _conv(g, input, weight, bias)


@sh.parse_args("v", "v", "v", "v", "is", "is", "is", "s", "s", "v")
def separable_conv2d(g, input, depthwise_weight, pointwise_weight, bias, stride, padding, dilation,
                     input_activation, mid_activation, depthwise_bias):
    mid = _depthwise(g, input, depthwise_weight, depthwise_bias, stride, padding, dilation, input_activation)
    return _conv(g, _activation(g, mid, mid_activation), pointwise_weight, bias)


SYMBOLICS = {"depthwise_conv2d": depthwise_conv2d, "pointwise_conv2d": pointwise_conv2d,
             "separable_conv2d": separable_conv2d}


def register() -> None:
    """Registers the TorchScript exporter's symbolic functions (idempotent)."""
    for namespace in NAMESPACES:
        for name, fn in SYMBOLICS.items():
            torch.onnx.register_custom_op_symbolic(f"{namespace}::{name}", fn, OPSET)
