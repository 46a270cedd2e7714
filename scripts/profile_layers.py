"""Where the time goes inside one fused separable forward+backward: for each layer and backend, the
total time and number of calls of every CUDA kernel it launched (torch.profiler), after warm-up.

    python scripts/profile_layers.py --device cuda --layers 147:64:128,19:728:728 --backends native,torch
    python scripts/profile_layers.py ... --plain     one call per case and no profiler (for ncu to profile)

Inputs are the benchmark's own (xsep.bench.cases: random, bfloat16, channels_last, batch 128 by
default). On a CPU the table lists operators' self CPU time instead (for tests). --out FILE appends
each table to FILE as soon as it is measured.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout, installed or not

from xsep.bench import cases, shapes  # noqa: E402

DEFAULT_LAYERS = "147:64:128,37:728:728,19:728:728,10:1536:2048"
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def kernel_times(prof, on_gpu: bool) -> dict[str, list]:
    """{name: [total microseconds, calls]}: CUDA kernels on a GPU, operators' self CPU time on a CPU."""
    from torch.autograd import DeviceType

    totals: dict[str, list] = defaultdict(lambda: [0.0, 0])
    for e in prof.events():
        if on_gpu:
            if e.device_type != DeviceType.CUDA:
                continue
            us = e.time_range.elapsed_us()  # a kernel (or memcpy/memset) on the GPU
        else:
            if e.device_type != DeviceType.CPU:
                continue
            us = e.self_cpu_time_total
        totals[e.name][0] += us
        totals[e.name][1] += 1
    return totals


def table(title: str, totals: dict[str, list], width: int = 100) -> str:
    total = sum(t for t, _ in totals.values()) or 1.0
    lines = [title, f"  {'total us':>10} {'calls':>5} {'share':>6}  kernel"]
    for name, (us, calls) in sorted(totals.items(), key=lambda kv: -kv[1][0]):
        short = name if len(name) <= width else name[: width - 3] + "..."
        lines.append(f"  {us:10.1f} {calls:5d} {100 * us / total:5.1f}%  {short}")
    lines.append(f"  {sum(t for t, _ in totals.values()):10.1f} {sum(c for _, c in totals.values()):5d}   total")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--layers", default=DEFAULT_LAYERS, help=f"SIZE:IN:OUT,... (default {DEFAULT_LAYERS})")
    p.add_argument("--backends", default="native,torch")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--dtype", choices=list(DTYPES), default="bfloat16")
    p.add_argument("--layout", choices=list(cases.LAYOUTS), default="channels_last")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--plain", action="store_true", help="one call per case, no warm-up and no profiler (for ncu)")
    p.add_argument("--out", type=Path, help="append the tables to this file too")
    args = p.parse_args()
    device = torch.device(args.device)
    on_gpu = device.type == "cuda"
    torch.backends.cudnn.benchmark = True  # the baseline as the bench runs it
    layers = shapes.select_layers(shapes.unique_layers(shapes.xception_separable_layers()), args.layers.split(","))
    activities = [torch.profiler.ProfilerActivity.CUDA if on_gpu else torch.profiler.ProfilerActivity.CPU]
    for layer, _ in layers:
        inputs = cases.make_inputs("separable", layer, args.batch, DTYPES[args.dtype], args.layout, device,
                                   backward=True)
        for backend in args.backends.split(","):
            step = cases.callable_for("separable", "forward+backward", backend, layer, [inputs])
            title = (f"{layer.describe()} separable forward+backward, {backend}, batch {args.batch}, "
                     f"{args.dtype}, {args.layout}")
            if args.plain:
                step(0)
                if on_gpu:
                    torch.cuda.synchronize(device)
                print(f"ran once: {title}", flush=True)
                continue
            for _ in range(args.warmup):
                step(0)
            if on_gpu:
                torch.cuda.synchronize(device)
            with torch.profiler.profile(activities=activities) as prof:
                step(0)
                if on_gpu:
                    torch.cuda.synchronize(device)
            text = table(title, kernel_times(prof, on_gpu)) + "\n"
            print(text, flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(text + "\n")
        del inputs
    return 0


if __name__ == "__main__":
    sys.exit(main())
