"""Backends by name, what each needs, and how one is chosen.

- `native`: the compiled library (C++ kernels for CPU tensors, hand-written CUDA for CUDA tensors)
- `triton`: Triton kernels (CUDA tensors)
- `torch`: the pure-PyTorch reference (cuDNN / oneDNN underneath)

Choice: the `backend=` argument, else the XSEP_BACKEND environment variable, else automatically:
`native` where it has kernels for the tensor's device, `triton` for CUDA tensors without native CUDA
kernels, `torch` as the last resort. An explicit choice that cannot run raises, saying why.
"""

from __future__ import annotations

import os

import torch

from xsep import _extension

BACKENDS = ("native", "triton", "torch")
_AUTO_ORDER = ("native", "triton", "torch")


def _native_reason(device_type: str) -> str | None:
    if not _extension.load():
        return f"the compiled library could not be loaded ({_extension.load_error()})"
    key = {"cpu": "CPU", "cuda": "CUDA"}.get(device_type)
    if key is None:
        return f"xsep has no native kernels for '{device_type}' tensors"
    if not torch._C._dispatch_has_kernel_for_dispatch_key("xsep::separable_conv2d", key):
        if device_type == "cuda":
            info = _extension.build_info()
            if info.get("cuda") != "1":
                return "the library was built without CUDA kernels (see `python -m xsep info`)"
        return f"the library has no {key} kernels yet"
    return None


def _triton_reason(device_type: str) -> str | None:
    return "xsep's Triton kernels are not part of this version yet"


def _torch_reason(device_type: str) -> str | None:
    return None


_REASONS = {"native": _native_reason, "triton": _triton_reason, "torch": _torch_reason}


def unavailable_reason(backend: str, device: torch.device | str) -> str | None:
    """None when `backend` can run on `device`, else a sentence saying why not."""
    check_name(backend)
    return _REASONS[backend](torch.device(device).type)


def check_name(backend: str, source: str = "backend") -> None:
    if backend not in BACKENDS:
        raise ValueError(f"unknown {source} '{backend}'; expected one of {', '.join(BACKENDS)}")


def select(backend: str | None, device: torch.device | str) -> str:
    """The backend to run on `device` (see the module docstring)."""
    source = "backend"
    if backend is None and os.environ.get("XSEP_BACKEND"):
        backend, source = os.environ["XSEP_BACKEND"], "XSEP_BACKEND"
    if backend is not None:
        check_name(backend, source)
        reason = unavailable_reason(backend, device)
        if reason is not None:
            raise RuntimeError(f"xsep backend '{backend}' ({source}) cannot run on {torch.device(device)}: {reason}")
        return backend
    for name in _AUTO_ORDER:
        if unavailable_reason(name, device) is None:
            return name
    raise AssertionError("the torch backend is always available")
