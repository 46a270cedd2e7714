"""xsep's Triton backend: Triton kernels for the three ops, forward and backward.

Triton is imported lazily (xsep imports fine without it), and so are the kernel modules: Triton
decides at decoration time (`@triton.jit`) whether a kernel is compiled for the GPU or run by its
CPU interpreter (TRITON_INTERPRET=1), so the kernels are defined only once the environment is known.

- `unavailable_reason(device_type)`: None when the backend can run tensors of that device type.
- `xsep.triton._ops`: the ops, registered as torch.ops.xsep_triton.* (custom ops with fake kernels
  and autograd); `xsep.triton.{depthwise,pointwise,separable}_conv2d`: the kernels and launch code.
"""

from __future__ import annotations

import functools
import os


@functools.cache
def _import_error() -> str | None:
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception as e:  # ImportError, or a broken installation
        return f"{type(e).__name__}: {e}"
    return None


def _language_interpreted() -> bool:
    """Whether triton.language's own @triton.jit functions (tl.zeros, ...) were defined for the
    interpreter, which kernels run by the interpreter need."""
    import triton.language as tl

    return type(tl.zeros).__name__ == "InterpretedFunction"


def interpreting() -> bool:
    """Whether Triton runs kernels in its CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in ("1", "true", "yes", "on")


def unavailable_reason(device_type: str) -> str | None:
    """None when xsep's Triton kernels can run tensors of `device_type`, else a sentence saying why not."""
    error = _import_error()
    if error is not None:
        return f"Triton is not importable ({error})"
    if device_type == "cuda":
        import torch

        if not torch.cuda.is_available():
            return "torch.cuda is not available"
        return None
    if device_type == "cpu":
        if not interpreting():
            return "Triton runs CPU tensors only under TRITON_INTERPRET=1 (the interpreter, for tests)"
        if not _language_interpreted():
            return ("TRITON_INTERPRET=1 was set after Triton was imported (importing torch._dynamo or xsep "
                    "imports it); set it before starting Python")
        return None
    return f"xsep has no Triton kernels for '{device_type}' tensors"
