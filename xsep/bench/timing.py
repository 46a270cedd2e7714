"""Timers that can be trusted on both devices.

CUDA: each call bracketed by CUDA events on the current stream, after warm-up, median of the
repeats; arguments rotated between calls over enough copies that the working set exceeds twice the
L2 cache, so neither side is flattered by data a previous call left in L2.
CPU: wall clock around each call, calls of the compared functions interleaved so both see the same
machine state, and the order rotated each round (a, b, then b, a, ...), so that neither always
runs in the memory the other just freed. The median, or the minimum on a noisy shared machine. With
glibc's default allocator a CPU's large steps stay noisy even so: two identical copies of
mobilenet_v2's training step (batch 8, Zen 5) measured 0.84-1.19x of each other, 0.98-1.03x with
freed memory kept mapped (bench --allocator retain).
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
    the different functions interleaved, their order rotated each round. Returns the list of samples
    per name."""
    samples: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for i in range(warmup):
        for fn in fns.values():
            fn(i % rotate)
    synchronize(device)
    for r in range(repeats):
        first = r % len(names) if names else 0
        for name in names[first:] + names[:first]:
            fn = fns[name]
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


# The host allocator decides what a CPU benchmark measures: with glibc's defaults every large output
# is a fresh mmap, page-faulted in on first touch and returned on free. The variables below are read
# once, at process start (glibc) or at allocation (torch's THP_MEM_ALLOC_ENABLE), so a different
# setting needs a fresh process (bench --allocator).
MALLOC_VARS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_ARENA_MAX",
               "GLIBC_TUNABLES", "THP_MEM_ALLOC_ENABLE", "MALLOC_CONF", "TCMALLOC_RELEASE_RATE")
PRELOADED_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")
RETAIN = {"MALLOC_MMAP_THRESHOLD_": str(1 << 30), "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}
ALLOCATOR_SETTINGS = ("default", "retain")


def _preloaded(environ) -> list[str]:
    return [lib for lib in environ.get("LD_PRELOAD", "").replace(":", " ").split()
            if any(name in lib for name in PRELOADED_ALLOCATORS)]


def allocator(environ=None) -> dict:
    """The host allocator's setting as the environment configures it: {"setting": "default" (nothing
    set), "retain" (exactly RETAIN) or "custom", "env": the variables set, "preload": jemalloc /
    tcmalloc / mimalloc in LD_PRELOAD, "thp": the kernel's transparent huge page mode}."""
    import os

    environ = os.environ if environ is None else environ
    env = {k: environ[k] for k in MALLOC_VARS if k in environ}
    preload = _preloaded(environ)
    setting = "default" if not env and not preload else "retain" if env == RETAIN and not preload else "custom"
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            thp = f.read().split("[", 1)[1].split("]", 1)[0]
    except (OSError, IndexError):
        thp = None
    return {"setting": setting, "env": env, "preload": preload, "thp": thp}


def allocator_environ(setting: str, environ) -> dict[str, str]:
    """A copy of `environ` configured for `setting`: 'default' removes every allocator variable and
    preloaded allocator; 'retain' does the same, then raises glibc's mmap and trim thresholds (1 GiB)
    so that freed outputs stay mapped and are reused without page faults."""
    if setting not in ALLOCATOR_SETTINGS:
        raise ValueError(f"allocator setting must be one of {ALLOCATOR_SETTINGS}, got {setting!r}")
    env = {k: v for k, v in environ.items() if k not in MALLOC_VARS}
    if "LD_PRELOAD" in env:
        rest = [lib for lib in env.pop("LD_PRELOAD").replace(":", " ").split() if lib not in _preloaded(environ)]
        if rest:
            env["LD_PRELOAD"] = " ".join(rest)
    if setting == "retain":
        env.update(RETAIN)
    return env
