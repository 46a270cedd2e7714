"""The per-layer benchmark: for every layer shape, op and mode, first verify every backend against
the float64 reference, then time the backends and the `torch` baseline side by side on the same
inputs in the same process, and turn the times into rates and fractions of the floor."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from xsep.bench import cases
from xsep.bench.shapes import SeparableLayer
from xsep.bench.timing import rotation_count, summarize, time_calls
from xsep.bench.verify import verify
from xsep.bench.work import work

BASELINE = "torch"


@dataclass
class Settings:
    device: torch.device
    dtype: torch.dtype
    layout: str
    batch: int
    verify_batch: int
    repeats: int
    warmup: int
    statistic: str          # 'median' (GPU) or 'min' (a shared, noisy CPU)
    ceilings: dict          # copy_bytes_per_s, matmul_flops_per_s


def bench_case(layer: SeparableLayer, count: int, op: str, mode: str, backends: list[str], s: Settings) -> list[dict]:
    """One row per backend (the baseline included) for `op` in `mode` on `layer`."""
    checks = verify(op, mode, layer, backends, batch=s.verify_batch, dtype=s.dtype, layout=s.layout, device=s.device)
    w = work(op, mode, batch=s.batch, in_channels=layer.in_channels, out_channels=layer.out_channels,
             size=layer.size, kernel_size=layer.kernel_size, stride=layer.stride,
             depth_multiplier=layer.depth_multiplier, element_size=torch.empty((), dtype=s.dtype).element_size())
    floor = w.floor_seconds(s.ceilings["copy_bytes_per_s"], s.ceilings["matmul_flops_per_s"])
    timed = [b for b in backends if checks[b]["ok"]]
    rotate = rotation_count(s.device, w.bytes)
    rotation = [cases.make_inputs(op, layer, s.batch, s.dtype, s.layout, s.device, backward=mode != "forward")
                for _ in range(rotate)]
    fns = {b: cases.callable_for(op, mode, b, layer, rotation) for b in timed}
    samples = time_calls(fns, s.device, repeats=s.repeats, warmup=s.warmup, rotate=rotate)
    del rotation
    seconds = {b: summarize(v, s.statistic) for b, v in samples.items()}
    base = seconds.get(BASELINE)
    rows = []
    for b in backends:
        t = seconds.get(b)
        rows.append({
            "layer": layer.name, "count": count, "size": layer.size, "in_channels": layer.in_channels,
            "out_channels": layer.out_channels, "kernel_size": layer.kernel_size, "stride": layer.stride,
            "depth_multiplier": layer.depth_multiplier, "op": op, "mode": mode, "backend": b,
            "dtype": str(s.dtype).removeprefix("torch."), "layout": s.layout, "batch": s.batch,
            "verified": checks[b]["ok"], "rel_error": checks[b]["error"], "worst_output": checks[b]["worst"],
            "tolerance": checks[b]["tolerance"], "verify_batch": s.verify_batch,
            "seconds": t, "baseline_seconds": base, "samples": len(samples.get(b, [])), "rotation": rotate,
            "speedup": (base / t) if (t and base) else None,
            "flops": w.flops, "bytes": w.bytes,
            "tflops_per_s": w.flops / t / 1e12 if t else None, "gbytes_per_s": w.bytes / t / 1e9 if t else None,
            "floor_seconds": floor, "percent_of_floor": 100 * floor / t if t else None,
        })
    return rows


def bench_layers(layers: list[tuple[SeparableLayer, int]], ops: Iterable[str], modes: Iterable[str],
                 backends: list[str], settings: Settings, progress: Callable[[str], None] | None = None) -> list[dict]:
    from xsep.backends import unavailable_reason

    rows = []
    for op in ops:
        # a backend may have kernels for some ops only (e.g. CUDA depthwise before the fused op)
        runs = [b for b in backends if b != BASELINE and unavailable_reason(b, settings.device, f"{op}_conv2d") is None]
        for layer, count in layers:
            for mode in modes:
                if progress:
                    progress(f"{layer.describe()} {op} {mode}")
                rows += bench_case(layer, count, op, mode, runs + [BASELINE], settings)
    return rows
