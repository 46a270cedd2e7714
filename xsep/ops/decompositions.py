"""Every xsep op written in core ATen ops (convolution, convolution_backward, pad, relu, ...), so that
`torch.export.export(model, args).run_decompositions()` lowers xsep's ops to plain convolutions with
no table to pass, and the ONNX exporter (`torch.onnx.export(..., dynamo=True)`, which runs those
decompositions) produces standard ONNX.

How torch.export picks them up: `run_decompositions()` decomposes a custom op by default only when
it has a CompositeImplicitAutograd (CIA) kernel. A C++ CIA kernel would change eager dispatch (our
kernels and autograd bypassed), so the kernels here are registered on the Python dispatcher only
(`OpOverload.py_impl`), which eager mode never consults:

- `py_impl(CompositeImplicitAutograd)`: lists the op in `torch.export.default_decompositions()`
  (deleting it there keeps the op). Outside torch.export it returns NotImplemented, so torch.compile
  and fake tensors keep the op and its fake kernel (and Inductor's table never lists it: see register).
- `py_impl(Autograd<device>)`: the retrace in `run_decompositions()` only calls a CIA kernel where
  autograd would have, i.e. never for an op with a CPU or CUDA kernel; this kernel applies the
  decomposition while exporting and otherwise runs the op's own autograd kernel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch._C import DispatchKey

from xsep.ops import reference

try:  # the table entry torch.export uses for an op the user chose to keep
    from torch._export.utils import _special_op_to_preserve_cia as _KEEP
except ImportError:  # pragma: no cover
    _KEEP = None

aten = torch.ops.aten

# Python-dispatcher keys of the devices xsep runs on (and meta, for tracing on meta tensors).
_AUTOGRAD_KEYS = (DispatchKey.AutogradCPU, DispatchKey.AutogradCUDA, DispatchKey.AutogradMeta)


def _conv_input(input, padding, input_activation):
    """The depthwise convolution's input as reference.depthwise_conv2d builds it: activated, padded
    explicitly when the padding is asymmetric; with the padding left to the convolution."""
    top, bottom, left, right = padding
    x = reference.activation(input, input_activation)
    if top == bottom and left == right:
        return x, [top, left]
    return F.pad(x, (left, right, top, bottom)), [0, 0]


def _depthwise_backward(grad_output, input, weight, stride, padding, dilation, input_activation, mask):
    """(grad_input, grad_weight) of the depthwise convolution, each None unless asked for by `mask`."""
    x, conv_padding = _conv_input(input, padding, input_activation)
    grad_x, grad_weight, _ = aten.convolution_backward(
        grad_output, x, weight, None, list(stride), conv_padding, list(dilation), False, [0, 0],
        input.shape[1], [mask[0], mask[1], False])
    if grad_x is not None:
        top, _, left, _ = padding
        if conv_padding == [0, 0]:  # drop the explicit padding's rows and columns
            grad_x = grad_x[:, :, top:top + input.shape[2], left:left + input.shape[3]]
        if input_activation == "relu":
            grad_x = torch.where(input > 0, grad_x, 0)
    return grad_x, grad_weight


def depthwise_conv2d_grad_input(grad_output, input, weight, stride, padding, dilation, input_activation):
    return _depthwise_backward(grad_output, input, weight, stride, padding, dilation, input_activation,
                               (True, False))[0]


def depthwise_conv2d_grad_weight(grad_output, input, weight, stride, padding, dilation, input_activation):
    return _depthwise_backward(grad_output, input, weight, stride, padding, dilation, input_activation,
                               (False, True))[1]


def depthwise_conv2d_backward(grad_output, input, weight, stride, padding, dilation, input_activation):
    return _depthwise_backward(grad_output, input, weight, stride, padding, dilation, input_activation, (True, True))


def _pointwise_backward(grad_output, input, weight, mask):
    return aten.convolution_backward(grad_output, input, weight, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1,
                                     [mask[0], mask[1], False])


def pointwise_conv2d_grad_input(grad_output, input, weight):
    return _pointwise_backward(grad_output, input, weight, (True, False))[0]


def pointwise_conv2d_grad_weight(grad_output, input, weight):
    return _pointwise_backward(grad_output, input, weight, (False, True))[1]


def separable_conv2d_backward(grad_output, input, depthwise_weight, pointwise_weight, stride, padding, dilation,
                              input_activation, mid_activation, depthwise_bias=None):
    mid = reference.depthwise_conv2d(input, depthwise_weight, depthwise_bias, stride, padding, dilation,
                                     input_activation)
    grad_act, grad_pointwise, _ = _pointwise_backward(grad_output, reference.activation(mid, mid_activation),
                                                      pointwise_weight, (True, True))
    grad_mid = grad_act * reference.activation_derivative(mid, mid_activation)
    grad_input, grad_depthwise = _depthwise_backward(grad_mid, input, depthwise_weight, stride, padding, dilation,
                                                     input_activation, (True, True))
    grad_bias = grad_mid.sum(dim=(0, 2, 3)) if depthwise_bias is not None else grad_mid.new_empty(0)
    return grad_input, grad_depthwise, grad_pointwise, grad_bias


DECOMPOSITIONS = {
    "depthwise_conv2d": reference.depthwise_conv2d,
    "depthwise_conv2d_grad_input": depthwise_conv2d_grad_input,
    "depthwise_conv2d_grad_weight": depthwise_conv2d_grad_weight,
    "depthwise_conv2d_backward": depthwise_conv2d_backward,
    "pointwise_conv2d": reference.pointwise_conv2d,
    "pointwise_conv2d_grad_input": pointwise_conv2d_grad_input,
    "pointwise_conv2d_grad_weight": pointwise_conv2d_grad_weight,
    "separable_conv2d": reference.separable_conv2d,
    "separable_conv2d_backward": separable_conv2d_backward,
}


def _when_exporting(decomposition):
    def cia_kernel(*args, **kwargs):
        if not torch.compiler.is_exporting():
            return NotImplemented  # torch.compile, fake tensors: keep the op
        return decomposition(*args, **kwargs)
    return cia_kernel


def _autograd_kernel(op, key):
    def kernel(*args, **kwargs):
        if torch.compiler.is_exporting():
            # The table's entry: ours, the user's own, or torch.export's marker for a kept op.
            cia = op.py_kernels.get(DispatchKey.CompositeImplicitAutograd)
            if cia is not None and cia is not _KEEP:
                out = cia(*args, **kwargs)
                if out is not NotImplemented:
                    return out
        return op._op_dk(fallthrough, *args, **kwargs)

    # The op's own autograd kernel, registered to the Autograd alias key (torch.library.register_autograd).
    has_alias = torch._C._dispatch_has_kernel_for_dispatch_key(op.name(), DispatchKey.Autograd)
    fallthrough = DispatchKey.Autograd if has_alias else key
    return kernel


def register(namespace: str) -> None:
    """Registers the decompositions for the ops of `namespace` (torch.ops.xsep, torch.ops.xsep_triton),
    which must be defined already. Called once per namespace, by xsep.ops.register."""
    # Inductor copies the CIA ops of the moment into its decomposition table when this module is
    # first imported, and refuses an op that is both there and a fallback (xsep's kernels): import
    # it before the op becomes CIA (cheap once torch._dynamo is loaded, as xsep loads it).
    try:
        import torch._inductor.decomposition  # noqa: F401
    except ImportError:  # pragma: no cover  (a torch without Inductor)
        pass
    for name, decomposition in DECOMPOSITIONS.items():
        op = getattr(getattr(torch.ops, namespace), name).default
        op.py_impl(DispatchKey.CompositeImplicitAutograd)(_when_exporting(decomposition))
        for key in _AUTOGRAD_KEYS:
            op.py_impl(key)(_autograd_kernel(op, key))
