"""Timers that can be trusted on both devices.

CUDA: each call bracketed by CUDA events on the current stream, after warm-up, median of the
repeats; arguments rotated between calls over enough copies that the working set exceeds twice the
L2 cache, so neither side is flattered by data a previous call left in L2.
CPU: wall clock around each call, calls of the compared functions interleaved (a, b, a, b, ...) so
both see the same machine state; the median, or the minimum on a noisy shared machine.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

import torch


def l2_cache_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 50 << 20))
    return 0


def rotation_count(device: torch.device, bytes_per_set: float, cap: int = 8) -> int:
    """How many copies of a case's inputs to rotate through so that they overflow the L2 twice."""
    l2 = l2_cache_bytes(device)
    if l2 == 0 or bytes_per_set <= 0:
        return 1
    return max(1, min(cap, int(-(-2 * l2 // bytes_per_set))))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fns: dict[str, Callable[[int], object]], device: torch.device, *, repeats: int,
               warmup: int = 2, rotate: int = 1, statistic: str = "median") -> dict[str, list[float]]:
    """Seconds per call for each of `fns` (called with the rotation index 0..rotate-1), calls of
    the different functions interleaved. Returns the list of samples per name."""
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for i in range(warmup):
        for fn in fns.values():
            fn(i % rotate)
    synchronize(device)
    for r in range(repeats):
        for name, fn in fns.items():
            if device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn(r % rotate)
                end.record()
                end.synchronize()
                samples[name].append(start.elapsed_time(end) / 1e3)
            else:
                t0 = time.perf_counter()
                fn(r % rotate)
                samples[name].append(time.perf_counter() - t0)
    return samples


def summarize(samples: Sequence[float], statistic: str) -> float:
    if statistic == "median":
        return statistics.median(samples)
    if statistic == "min":
        return min(samples)
    raise ValueError(f"statistic must be 'median' or 'min', got {statistic!r}")
