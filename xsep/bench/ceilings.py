"""The device's own ceilings, measured in the same run as the kernels: copy bandwidth (a
device-to-device tensor copy: bytes read + bytes written) and the matmul rate at the benchmark's
dtype. Floors and "percent of floor" are computed from these rather than from a datasheet."""

from __future__ import annotations

import torch

from xsep.bench.timing import summarize, time_calls


def copy_bandwidth(device: torch.device, *, nbytes: int | None = None, repeats: int = 10) -> float:
    """Bytes per second moved by `dst.copy_(src)` (counting the read and the write)."""
    if nbytes is None:
        nbytes = (1 << 30) if device.type == "cuda" else (256 << 20)
    src = torch.rand(nbytes // 4, device=device)
    dst = torch.empty_like(src)
    samples = time_calls({"copy": lambda i: dst.copy_(src)}, device, repeats=repeats, warmup=2)["copy"]
    return 2 * nbytes / summarize(samples, "median" if device.type == "cuda" else "min")


def matmul_rate(device: torch.device, dtype: torch.dtype, *, n: int | None = None, repeats: int = 10) -> float:
    """FLOP/s of an n x n x n matmul at `dtype` (float32 math at TF32 off, as the kernels use)."""
    if n is None:
        n = 8192 if device.type == "cuda" else 2048
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    samples = time_calls({"mm": lambda i: torch.mm(a, b)}, device, repeats=repeats, warmup=2)["mm"]
    return 2.0 * n**3 / summarize(samples, "median" if device.type == "cuda" else "min")


def measure(device: torch.device, dtype: torch.dtype, *, quick: bool = False) -> dict:
    kwargs = {"repeats": 5} if quick else {}
    return {"copy_bytes_per_s": copy_bandwidth(device, **kwargs), "matmul_flops_per_s": matmul_rate(device, dtype, **kwargs),
            "matmul_dtype": str(dtype).removeprefix("torch.")}
