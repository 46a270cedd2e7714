"""xsep: fast, fused depthwise separable convolution for PyTorch.

    import xsep
    conv = xsep.SeparableConv2d(64, 128, 3, padding="same")   # drop-in for depthwise + pointwise nn.Conv2d
    y = xsep.functional.separable_conv2d(x, dw_weight, pw_weight, bias, padding=1)

Backends (`backend=` or XSEP_BACKEND): 'native' (compiled C++/CUDA), 'triton', 'torch' (reference).
"""

from xsep import backends, functional
from xsep.convert import convert, fuse_for_inference
from xsep._extension import load as _load
from xsep.nn import DepthwiseConv2d, SeparableConv2d

__version__ = "0.1.0"
__all__ = ["DepthwiseConv2d", "SeparableConv2d", "backends", "convert", "functional", "fuse_for_inference",
           "__version__"]

# A prebuilt library loads now (cheap), so torch.ops.xsep exists after `import xsep`; a missing
# one is compiled on first use of the native backend instead of at import.
_load(jit=False)
