"""CPU speed of the native backend against the torch baseline (oneDNN), on Xception's separable
layer shapes, measured side by side in one process.

    python benchmarks/cpu_speed.py [--batch 8] [--dtype float32] [--layout channels_last] [--out FILE]

Prints per-layer times (minimum of interleaved calls) and ratios (baseline time / native time,
> 1 means xsep is faster) and the geometric means; --out writes the same as JSON. The full
benchmark suite (pytest-benchmark, GPU, plots) is separate work; this is the measurement behind the
CPU targets.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import statistics
import time

import torch

import xsep
from xsep import functional as XF
from xsep.bench.shapes import unique_layers, xception_separable_layers


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()} ({torch.get_num_threads()} threads)"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def time_interleaved(fns: dict, repeats: int, warmup: int = 2) -> dict:
    """Seconds per call for each of `fns`, calls interleaved (a, b, a, b, ...) so that both sides
    see the same machine state; the minimum over repeats, since this shared VM adds large, random
    delays (page faults, neighbours) that the minimum filters out."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: min(ts) for name, ts in times.items()}


def bench_layer(layer, batch, dtype, layout, repeats):
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x = torch.randn(batch, layer.in_channels, layer.size, layer.size, dtype=dtype).to(memory_format=fmt)
    dw = torch.randn(layer.in_channels, 1, 3, 3, dtype=dtype)
    pw = torch.randn(layer.out_channels, layer.in_channels, 1, 1, dtype=dtype) / layer.in_channels**0.5
    row = {"layer": layer.name, "size": layer.size, "in": layer.in_channels, "out": layer.out_channels}
    cases = {
        "depthwise": lambda b: XF.depthwise_conv2d(x, dw, None, 1, 1, backend=b),
        "separable": lambda b: XF.separable_conv2d(x, dw, pw, None, 1, 1, backend=b),
    }
    with torch.no_grad():
        for op, fn in cases.items():
            t = time_interleaved({b: (lambda b=b: fn(b)) for b in ("torch", "native")}, repeats)
            for backend, seconds in t.items():
                row[f"{op}_{backend}_ms"] = 1e3 * seconds
            row[f"{op}_speedup"] = row[f"{op}_torch_ms"] / row[f"{op}_native_ms"]
    # forward + backward of the fused op
    xg, dwg, pwg = (t.clone().requires_grad_() for t in (x, dw, pw))

    def step(backend):
        y = XF.separable_conv2d(xg, dwg, pwg, None, 1, 1, backend=backend)
        y.backward(torch.ones_like(y))

    t = time_interleaved({b: (lambda b=b: step(b)) for b in ("torch", "native")}, max(2, repeats // 2), warmup=1)
    for backend, seconds in t.items():
        row[f"separable_fwdbwd_{backend}_ms"] = 1e3 * seconds
    row["separable_fwdbwd_speedup"] = row["separable_fwdbwd_torch_ms"] / row["separable_fwdbwd_native_ms"]
    return row


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16", "float64"])
    p.add_argument("--layout", default="channels_last", choices=["channels_last", "nchw"])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--out")
    args = p.parse_args()
    dtype = getattr(torch, args.dtype)
    rows = []
    layers = unique_layers(xception_separable_layers())
    for layer, count in layers:
        row = bench_layer(layer, args.batch, dtype, args.layout, args.repeats)
        row["count"] = count
        rows.append(row)
        print(f"{row['layer']:>13} {layer.size:>3} {layer.in_channels:>4}->{layer.out_channels:<4} "
              f"dw {row['depthwise_torch_ms']:8.2f} / {row['depthwise_native_ms']:7.2f} ms = {row['depthwise_speedup']:5.2f}x  "
              f"sep {row['separable_torch_ms']:8.2f} / {row['separable_native_ms']:7.2f} ms = {row['separable_speedup']:5.2f}x  "
              f"sep fwd+bwd {row['separable_fwdbwd_torch_ms']:8.1f} / {row['separable_fwdbwd_native_ms']:7.1f} ms "
              f"= {row['separable_fwdbwd_speedup']:5.2f}x", flush=True)
    geo = {k: math.exp(statistics.fmean(math.log(r[k]) for r in rows))
           for k in ("depthwise_speedup", "separable_speedup", "separable_fwdbwd_speedup")}
    print("geometric mean over distinct layers (torch time / native time): "
          + ", ".join(f"{k.removesuffix('_speedup')} {v:.2f}x" for k, v in geo.items()))
    result = {
        "date": datetime.date.today().isoformat(), "device": cpu_name(),
        "cpu_threads": torch.get_num_threads(), "torch": torch.__version__, "xsep": xsep.__version__,
        "batch": args.batch, "dtype": args.dtype, "layout": args.layout, "baseline": "torch (oneDNN)",
        "statistic": f"min of {args.repeats} interleaved calls ({max(2, args.repeats // 2)} for fwd+bwd)",
        "layers": rows, "geomean": geo,
    }
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
