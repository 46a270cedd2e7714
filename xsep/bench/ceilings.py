"""The device's own ceilings, measured in the same run as the kernels: copy bandwidth (a
device-to-device tensor copy: bytes read + bytes written), the matmul rate at the benchmark's dtype,
and what touching fresh output memory costs. Floors and "percent of floor" are computed from these
rather than from a datasheet.

The matmul ceiling is the best GEMM torch has on the machine: the larger of `torch.mm` (MKL on CPUs,
cuBLAS on GPUs) and torch's own 1x1 convolution (oneDNN, cuDNN) on the same [n, n] x [n, n] product,
timed interleaved in the same run. On AMD processors MKL runs AVX2 code while oneDNN uses AVX-512,
so `torch.mm` alone can under-report the ceiling by ~2x. Both rates are recorded.

Fresh memory: a kernel's output is a new tensor. On a CPU with glibc's default settings a large block
is returned to the operating system on free and page-faulted in again on the next allocation, so
allocating and filling an output costs far more than filling memory that is already mapped; the
difference (`cost_seconds`) is measured per output size and shown beside the floor.
"""

from __future__ import annotations

import resource
from collections.abc import Callable

import torch

from xsep.bench.timing import summarize, time_calls

FRESH_BYTES = 64 << 20  # the representative size in the header: above glibc's largest dynamic mmap threshold (32 MiB)


def _statistic(device: torch.device) -> str:
    return "median" if device.type == "cuda" else "min"


def copy_bandwidth(device: torch.device, *, nbytes: int | None = None, repeats: int = 10) -> float:
    """Bytes per second moved by `dst.copy_(src)` (counting the read and the write)."""
    if nbytes is None:
        nbytes = (1 << 30) if device.type == "cuda" else (256 << 20)
    src = torch.rand(nbytes // 4, device=device)
    dst = torch.empty_like(src)
    samples = time_calls({"copy": lambda i: dst.copy_(src)}, device, repeats=repeats, warmup=2)["copy"]
    return 2 * nbytes / summarize(samples, _statistic(device))


def gemm_labels(device: torch.device) -> dict[str, str]:
    """Which library runs each candidate GEMM: {'mm': 'torch.mm (MKL)', 'conv1x1': '1x1 conv2d (oneDNN)'}."""
    if device.type == "cuda":
        blas, conv = "cuBLAS", "cuDNN"
    else:
        blas = "MKL" if torch.backends.mkl.is_available() else "BLAS"
        conv = "oneDNN" if torch.backends.mkldnn.is_available() else "ATen"
    return {"mm": f"torch.mm ({blas})", "conv1x1": f"1x1 conv2d ({conv})"}


def gemm_callables(device: torch.device, dtype: torch.dtype, n: int) -> dict[str, Callable[[int], object]]:
    """The same [n, n] x [n, n] product two ways: `torch.mm`, and `F.conv2d` of the left matrix viewed
    as a [1, n, 1, n] channels_last tensor (n pixels of n channels) with an [n, n, 1, 1] weight."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    x = a.view(1, 1, n, n).permute(0, 3, 1, 2)  # [1, K, 1, P], channels_last: the rows of `a`
    w = b.t().contiguous().view(n, n, 1, 1)      # [N, K, 1, 1]
    assert x.is_contiguous(memory_format=torch.channels_last)
    return {"mm": lambda i: torch.mm(a, b), "conv1x1": lambda i: torch.nn.functional.conv2d(x, w)}


def matmul_rates(device: torch.device, dtype: torch.dtype, *, n: int | None = None,
                 repeats: int = 10) -> dict[str, float | None]:
    """FLOP/s of each GEMM candidate at `dtype` (float32 math with TF32 off, as the kernels use),
    calls interleaved. A candidate that fails (e.g. an unsupported dtype) is None."""
    if n is None:
        n = 8192 if device.type == "cuda" else 2048
    fns = gemm_callables(device, dtype, n)
    usable = {}
    with torch.backends.cudnn.flags(enabled=True, benchmark=True, deterministic=False, allow_tf32=False):
        for name, fn in fns.items():
            try:
                fn(0)
                usable[name] = fn
            except RuntimeError:
                pass
        samples = time_calls(usable, device, repeats=repeats, warmup=2)
    return {name: (2.0 * n**3 / summarize(samples[name], _statistic(device)) if name in samples else None)
            for name in fns}


def matmul_ceiling(rates: dict[str, float | None], labels: dict[str, str]) -> dict:
    """The ceiling is the best candidate; all of them are kept, under their libraries' names."""
    measured = {k: v for k, v in rates.items() if v}
    if not measured:
        raise RuntimeError("no GEMM candidate ran on this device")
    best = max(measured, key=measured.get)
    return {"matmul_flops_per_s": measured[best], "matmul_source": labels[best],
            "matmul_candidates": {labels[k]: v for k, v in rates.items()}}


def matmul_rate(device: torch.device, dtype: torch.dtype, *, n: int | None = None, repeats: int = 10) -> float:
    """FLOP/s of the best GEMM candidate (see `matmul_rates`)."""
    return matmul_ceiling(matmul_rates(device, dtype, n=n, repeats=repeats), gemm_labels(device))["matmul_flops_per_s"]


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def fresh_memory(device: torch.device, nbytes: int, *, repeats: int = 5, warmup: int = 1) -> dict:
    """Seconds to allocate and fill a new `nbytes` tensor (freed again, as an op's output is) against
    filling one already allocated, calls interleaved; `cost_seconds` is the difference (>= 0).
    On a CPU `page_faults` is the mean number of minor page faults per fresh allocation."""
    nbytes = max(1, int(nbytes))
    mapped = torch.empty(nbytes, dtype=torch.uint8, device=device)
    faults = [0]

    def fresh(i):
        before = _minor_faults()
        torch.empty(nbytes, dtype=torch.uint8, device=device).fill_(1)  # freed before the next line
        faults[0] += _minor_faults() - before

    samples = time_calls({"fresh": fresh, "mapped": lambda i: mapped.fill_(1)}, device,
                         repeats=repeats, warmup=warmup)
    fresh_s, mapped_s = (summarize(samples[k], _statistic(device)) for k in ("fresh", "mapped"))
    calls = warmup + repeats
    return {"bytes": nbytes, "fresh_seconds": fresh_s, "mapped_seconds": mapped_s,
            "cost_seconds": max(0.0, fresh_s - mapped_s),
            "page_faults": faults[0] / calls if device.type == "cpu" else None}


def measure(device: torch.device, dtype: torch.dtype, *, quick: bool = False) -> dict:
    kwargs = {"repeats": 5} if quick else {}
    ceiling = {"copy_bytes_per_s": copy_bandwidth(device, **kwargs)}
    ceiling.update(matmul_ceiling(matmul_rates(device, dtype, **kwargs), gemm_labels(device)))
    ceiling["matmul_dtype"] = str(dtype).removeprefix("torch.")
    ceiling["fresh_memory"] = fresh_memory(device, FRESH_BYTES, repeats=3 if quick else 5)
    return ceiling
