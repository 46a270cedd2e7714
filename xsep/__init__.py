"""xsep: fast, fused depthwise separable convolution for PyTorch.

    import xsep
    conv = xsep.SeparableConv2d(64, 128, 3, padding="same")   # drop-in for depthwise + pointwise nn.Conv2d
    y = xsep.functional.separable_conv2d(x, dw_weight, pw_weight, bias, padding=1)

Backends (`backend=` or XSEP_BACKEND): 'native' (compiled C++/CUDA), 'triton', 'torch' (reference).
`xsep.models` (Xception) is imported on first use.
"""

import importlib

from xsep import backends, functional
from xsep._extension import load as _load
from xsep.convert import convert, fuse_for_inference
from xsep.nn import DepthwiseConv2d, SeparableConv2d
from xsep.onnx import register as _register_onnx

__version__ = "0.1.0"
__all__ = ["DepthwiseConv2d", "SeparableConv2d", "backends", "convert", "functional", "fuse_for_inference",
           "models", "__version__"]
_LAZY_SUBMODULES = ("models",)


def __getattr__(name: str):
    # xsep.models on first use: `import xsep` stays light (and never imports timm or torchvision).
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"xsep.{name}")
    raise AttributeError(f"module 'xsep' has no attribute {name!r}")


# A prebuilt library loads now (cheap), so torch.ops.xsep exists after `import xsep`; a missing
# one is compiled on first use of the native backend instead of at import. Either way its fake
# kernels, autograd and decompositions are registered as it loads (xsep.ops.register).
_load(jit=False)
_register_onnx()  # the TorchScript ONNX exporter's symbolic functions (by op name: no library needed)
