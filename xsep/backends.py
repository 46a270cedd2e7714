"""Backends by name, what each needs, and how one is chosen.

- `native`: the compiled library (C++ kernels for CPU tensors, hand-written CUDA for CUDA tensors)
- `triton`: Triton kernels (CUDA tensors; CPU tensors under TRITON_INTERPRET=1, for tests, only when asked for)
- `torch`: the pure-PyTorch reference (cuDNN / oneDNN underneath)

Choice (per op): the `backend=` argument, else the XSEP_BACKEND environment variable, else automatically:
`native` where it has kernels for the tensor's device, `triton` for CUDA tensors without native CUDA
kernels, `torch` as the last resort; for CUDA tensors the automatic choice skips the backends in
NOT_YET_VERIFIED_ON_GPU. An explicit choice that cannot run raises, saying why.

`implementation(name)` is a backend's three ops on normalised arguments (see xsep/ops/checks.py),
each differentiable: what xsep.functional calls once it has chosen.
"""

from __future__ import annotations

import os

import torch

from xsep import _extension
from xsep.ops import autograd, reference
from xsep.ops.schemas import FORWARD_OPS as OPS

BACKENDS = ("native", "triton", "torch")
_AUTO_ORDER = ("native", "triton", "torch")


def _native_reason(device_type: str, op: str) -> str | None:
    if not _extension.load():
        return f"the compiled library could not be loaded ({_extension.load_error()})"
    key = {"cpu": "CPU", "cuda": "CUDA"}.get(device_type)
    if key is None:
        return f"xsep has no native kernels for '{device_type}' tensors"
    if not torch._C._dispatch_has_kernel_for_dispatch_key(f"xsep::{op}", key):
        if device_type == "cuda" and _extension.build_info().get("cuda") != "1":
            return "the library was built without CUDA kernels (see `python -m xsep info`)"
        return f"the library has no {key} kernel for {op} yet"
    return None


def _triton_reason(device_type: str, op: str) -> str | None:
    from xsep import triton as xsep_triton

    return xsep_triton.unavailable_reason(device_type)


def _torch_reason(device_type: str, op: str) -> str | None:
    return None


_REASONS = {"native": _native_reason, "triton": _triton_reason, "torch": _torch_reason}

# Kernels that compiled and pass the tests on this side (Triton's under its CPU interpreter) but have
# not yet passed the GPU check (scripts/gpu_check.sh) on real hardware: for CUDA tensors they run
# only when asked for by name, never by the automatic choice. Remove a name once they have.
NOT_YET_VERIFIED_ON_GPU = frozenset({"native", "triton"})


def unavailable_reason(backend: str, device: torch.device | str, op: str = "separable_conv2d") -> str | None:
    """None when `backend` can run `op` on `device`, else a sentence saying why not."""
    check_name(backend)
    if op not in OPS:
        raise ValueError(f"unknown op '{op}'; expected one of {', '.join(OPS)}")
    return _REASONS[backend](torch.device(device).type, op)


def check_name(backend: str, source: str = "backend") -> None:
    if backend not in BACKENDS:
        raise ValueError(f"unknown {source} '{backend}'; expected one of {', '.join(BACKENDS)}")


def select(backend: str | None, device: torch.device | str, op: str = "separable_conv2d") -> str:
    """The backend to run `op` on `device` (see the module docstring)."""
    source = "backend"
    if backend is None and os.environ.get("XSEP_BACKEND"):
        backend, source = os.environ["XSEP_BACKEND"], "XSEP_BACKEND"
    if backend is not None:
        check_name(backend, source)
        reason = unavailable_reason(backend, device, op)
        if reason is not None:
            raise RuntimeError(f"xsep backend '{backend}' ({source}) cannot run on {torch.device(device)}: {reason}")
        return backend
    device_type = torch.device(device).type
    for name in _AUTO_ORDER:
        if name == "triton" and device_type != "cuda":
            continue  # CPU tensors run on Triton only when asked for (the interpreter is for tests)
        if device_type == "cuda" and name in NOT_YET_VERIFIED_ON_GPU:
            continue
        if unavailable_reason(name, device, op) is None:
            return name
    raise AssertionError("the torch backend is always available")


class _Namespace:
    """The three ops of a torch.ops namespace, each run by xsep.ops.autograd.apply (its
    autograd.Function, which torch.func's transforms see). Plain methods rather than objects built
    per call, so that torch.compile can trace through."""

    namespace = ""

    @classmethod
    def depthwise_conv2d(cls, *args):
        return autograd.apply(cls.namespace, "depthwise_conv2d", *args)

    @classmethod
    def pointwise_conv2d(cls, *args):
        return autograd.apply(cls.namespace, "pointwise_conv2d", *args)

    @classmethod
    def separable_conv2d(cls, *args):
        return autograd.apply(cls.namespace, "separable_conv2d", *args)


class _Native(_Namespace):
    namespace = "xsep"  # exists once xsep._extension.load() succeeded


class _Triton(_Namespace):
    namespace = "xsep_triton"  # defined when xsep.triton._ops is imported


def implementation(backend: str):
    """The object whose methods `depthwise_conv2d`, `pointwise_conv2d`, `separable_conv2d` run
    `backend`'s kernels (normalised arguments, as the ops' schemas take them)."""
    if backend == "torch":
        return reference
    if backend == "native":
        return _Native
    if backend == "triton":
        import xsep.triton._ops  # noqa: F401  (defines torch.ops.xsep_triton on first use)

        return _Triton
    raise ValueError(f"no implementation for backend '{backend}'")
