"""The memory counters per CUDA kernel on Xception's layers at batch 128, and a predicted H100 time
beside each layer's floor (issue 13, item 2), without a GPU.

Runs the kernels the native ops launch for bfloat16 and float32 channels_last tensors (the depthwise
forward and backward, the pointwise GEMMs, the fused separable forward and backward) in the CPU
emulator's counters build (counters.h) on a sample of each grid's blocks, and writes
benchmarks/results/kernels/<date>_emu-counters.md (tables) and .json (every count, for a GPU run to
calibrate the model against):

    python tests/cuda_emu/memory_counters.py [--layers 19x19 ...] [--dtypes bf16 ...] [--out DIR]

Per kernel: global sectors per request against the ideal (the fewest 32-byte sectors that hold each
request's distinct bytes), the distinct bytes the blocks read and write (each block's own, summed over
the grid: what the SMs fetch from L2) against the op's minimum, shared-memory wavefronts per request
against the ideal, and mma.sync instructions; then a predicted time from the model below.

The model (an H100 SXM; its figures are assumptions that a GPU run must calibrate):
- HBM: the kernel's minimum bytes (each tensor once) at 3.35 TB/s: L2 is assumed to serve every
  re-read, so this term is optimistic where a re-read tensor exceeds the 50 MB L2 (then the L2 term
  below counts those bytes, at the L2's rate instead of the HBM's);
- L2: the distinct bytes per block, summed, at 5.5 TB/s (assumed L2-to-SM bandwidth);
- SM memory pipe: global sectors x 32 B + shared, ldmatrix and cp.async wavefronts x 128 B, at
  128 B/clk per SM, 132 SMs, 1.755 GHz;
- tensor cores: mma.sync m16n8k16 (4096 FLOP each) at 660 TFLOP/s (assumed: two thirds of the 989
  TFLOP/s dense bf16 datasheet peak, which only wgmma reaches);
- CUDA cores: the op's fp32 FMA work (float32 GEMMs, depthwise) at 67 TFLOP/s;
- a kernel's time is the largest of these (no latency, occupancy, tail or instruction-issue costs:
  64-bit division, address arithmetic and spills are not seen), an op's the sum of its kernels'.
Floors: the op's minimum bytes at 3.35 TB/s or its FLOPs at the datasheet peak (989 TFLOP/s bf16;
67 fp32, no TF32), whichever is larger.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import emu_build  # noqa: E402

BATCH = 128
SMEM_PER_BLOCK = 227 * 1024  # the H100's opt-in limit: the fused forward's resident tile fits
H100 = dict(hbm=3.35e12, l2=5.5e12, sm_bytes_per_clk=128, sms=132, clock=1.755e9, mma_flops=660e12,
            bf16_peak=989e12, fp32_peak=67e12)
MMA_FLOPS = 2 * 16 * 8 * 16


@dataclass(frozen=True)
class Layer:
    name: str
    hw: int
    c: int
    o: int
    relu_input: bool  # block 2's first separable conv has no ReLU before it


LAYERS = [Layer("147x147 64->128", 147, 64, 128, False), Layer("37x37 728->728", 37, 728, 728, True),
          Layer("19x19 728->728", 19, 728, 728, True), Layer("10x10 1536->2048", 10, 1536, 2048, True)]
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
# Blocks sampled per launch (runs of one block each): many for the cheap depthwise kernels, few for the
# weight gradient's (each thread sums a whole chunk of pixels) and the GEMMs, whose blocks the emulator
# runs slowly (every mma.sync and ldmatrix is a warp rendezvous; float32 blocks have 256 threads).
SAMPLES = {"depthwise": 16, "depthwise_weight": 6, "gemm": 1, "long_gemm": 1}


@dataclass
class Op:
    """One launch function of the native ops: its minimum traffic (each tensor read or written once,
    plus, for a split reduction, the partials written by its first kernel) and its CUDA-core work."""
    name: str
    sample: str  # a key of SAMPLES
    run: object  # () -> None: launches the kernels
    min_bytes: float
    fma_flops: float  # multiply-adds x 2 on CUDA cores (the depthwise, float32 GEMMs; not mma.sync)
    work_scale: int = 1  # its first kernel ran on 1 / work_scale of the batch, on the same grid (see layer_ops)
    # The fused forward: (out_channels) -> launches on the first out_channels of the weights (see count_op).
    run_for: object = None
    out_channels: int = 0


# The split reductions (weight gradients) have at most 64 splits or 1024 chunks: where batch 128 reaches
# that cap, so does a batch REDUCED times smaller, on the same grid, each block doing 1 / REDUCED of the
# work (a block's pixels per split). They run at the smaller batch there and count REDUCED times over:
# a block of the 147x147 layer's split GEMMs would otherwise take the emulator a minute.
REDUCED = 8


def layer_ops(ops, layer: Layer, dtype: torch.dtype) -> dict[str, Op]:
    n, hw, c, o = BATCH, layer.hw, layer.c, layer.o
    s = torch.finfo(dtype).bits // 8
    p = n * hw * hw
    small = n // REDUCED
    ps = small * hw * hw
    # Contents do not matter to the counters; memory no sampled block reads is never even mapped.
    x = torch.empty(n, hw, hw, c, dtype=dtype)
    go = torch.empty(n, hw, hw, o, dtype=dtype)  # the pointwise output's gradient
    gd = torch.empty(n, hw, hw, c, dtype=dtype)  # the depthwise output's gradient
    taps = torch.empty(9, c)
    w_pw = torch.empty(o, c, dtype=dtype)
    params = [n, c, hw, hw, 1, c, 3, 3, 1, 1, 1, 1, 1, 1, hw, hw]
    small_params = [small, *params[1:]]
    relu = layer.relu_input
    partials = 4 * o * c  # one split's float partial of a pointwise weight gradient
    pw_splits = ops.gemm_k_splits(o, c, p)
    dw_chunks = ops.depthwise_grad_weight_chunks(params)
    pw_partials, dw_partials = pw_splits * partials, dw_chunks * 9 * c * 4
    # (the reduced batch's tensors: views of the first images of the full ones)
    reduce_pw = ops.gemm_k_splits(o, c, ps) == pw_splits
    reduce_dw = ops.depthwise_grad_weight_chunks(small_params) == dw_chunks

    def batch(t, reduced):
        return t[:small] if reduced else t

    def geometry(reduced):
        return small_params if reduced else params
    dw = 2 * 9 * p * c
    gemm = 0 if dtype == torch.bfloat16 else 2 * p * c * o  # bf16 GEMMs count by their mma.sync
    pw_bytes = (p * c + p * o + o * c) * s
    return {
        "depthwise forward": Op("depthwise forward", "depthwise",
                                lambda: ops.depthwise_forward_nhwc(x, taps, None, params, relu), 2 * p * c * s, dw),
        "depthwise grad input": Op("depthwise grad input", "depthwise",
                                   lambda: ops.depthwise_grad_input_nhwc(gd, taps, x, params, relu),
                                   (3 if relu else 2) * p * c * s, dw),
        "depthwise grad weight": Op("depthwise grad weight", "depthwise_weight",
                                    lambda: ops.depthwise_grad_weight_nhwc(batch(gd, reduce_dw), batch(x, reduce_dw),
                                                                           geometry(reduce_dw), relu),
                                    2 * p * c * s + dw_partials, dw, REDUCED if reduce_dw else 1),
        "pointwise forward": Op("pointwise forward", "gemm", lambda: ops.pointwise_gemm(x.view(p, c), w_pw.t(), None),
                                pw_bytes, gemm),
        "pointwise grad input": Op("pointwise grad input", "gemm",
                                   lambda: ops.pointwise_gemm(go.view(p, o), w_pw, None), pw_bytes, gemm),
        "pointwise grad weight": Op("pointwise grad weight", "long_gemm",
                                    lambda: ops.pointwise_gemm_split_k(batch(go, reduce_pw).reshape(-1, o).t(),
                                                                       batch(x, reduce_pw).reshape(-1, c)),
                                    (p * c + p * o) * s + pw_partials, gemm, REDUCED if reduce_pw else 1),
        "separable forward": Op("separable forward", "long_gemm",
                                lambda: ops.separable_forward_nhwc(x, taps, None, w_pw, None, params, relu, 0,
                                                                   SMEM_PER_BLOCK), pw_bytes, dw + gemm,
                                run_for=lambda oc: ops.separable_forward_nhwc(x, taps, None, w_pw[:oc], None, params,
                                                                              relu, 0, SMEM_PER_BLOCK),
                                out_channels=o),
        "separable grad mid": Op("separable grad mid", "gemm",
                                 lambda: ops.separable_grad_mid_nhwc(go, None, w_pw, params, relu, 0),
                                 pw_bytes, gemm),
    }


# The paths a layer takes: the unfused pair and the fused op, forward and backward (whose depthwise
# backward runs on the depthwise output's gradient either way). The fused backward (separable_conv2d_cuda.cpp)
# makes one depthwise pass writing act(d) (Xception has no mid activation: the depthwise forward's
# launch), the pointwise weight gradient on it (the pointwise op's split-K GEMM, the same launch as
# "pointwise grad weight", d in place of x) and the mid gradient (without a mid activation, the
# pointwise input gradient's GEMM: "separable grad mid" runs it through the fused op's launcher).
PATHS = {
    "depthwise forward": ["depthwise forward"],
    "depthwise backward": ["depthwise grad input", "depthwise grad weight"],
    "fused forward": ["separable forward"],
    "fused backward": ["depthwise forward", "pointwise grad weight", "separable grad mid", "depthwise grad input",
                       "depthwise grad weight"],
    "unfused forward": ["depthwise forward", "pointwise forward"],
    "unfused backward": ["pointwise grad input", "pointwise grad weight", "depthwise grad input",
                         "depthwise grad weight"],
}
GOALS = {"depthwise forward": 1.4, "fused forward": 1.4, "depthwise backward": 2.0, "fused backward": 2.0}


def floors(layer: Layer, dtype: torch.dtype) -> dict[str, float]:
    """Seconds at 100% of the datasheet: min bytes / HBM or FLOPs / peak, whichever is larger."""
    s = torch.finfo(dtype).bits // 8
    p, c, o = BATCH * layer.hw * layer.hw, layer.c, layer.o
    peak = H100["bf16_peak"] if dtype == torch.bfloat16 else H100["fp32_peak"]
    hbm, fma = H100["hbm"], H100["fp32_peak"]
    dw_fwd = max(2 * p * c * s / hbm, 18 * p * c / fma)
    dw_bwd = max((3 if layer.relu_input else 2) * p * c * s / hbm + p * c * s / hbm, 36 * p * c / fma)
    pw = max((p * c + p * o) * s / hbm, 2 * p * c * o / peak)
    fused_fwd = max((p * c + p * o) * s / hbm, 2 * p * c * o / peak)
    fused_bwd = max((2 * p * c + p * o) * s / hbm, 4 * p * c * o / peak)
    pw_bwd = max((2 * p * c + 2 * p * o) * s / hbm, 4 * p * c * o / peak)
    return {"depthwise forward": dw_fwd, "depthwise backward": dw_bwd, "fused forward": fused_fwd,
            "fused backward": fused_bwd, "unfused forward": dw_fwd + pw, "unfused backward": pw_bwd + dw_bwd}


def scaled(launch: dict, work_scale: int = 1) -> dict:
    """The launch's counts over its whole grid (sampled blocks x blocks / blocks run), times
    `work_scale` (a launch on a reduced batch: see REDUCED)."""
    f = launch["blocks"] / launch["blocks_run"] * work_scale
    counts = {k: {key: v * f for key, v in c.items()} for k, c in launch["counts"].items()}
    return dict(counts=counts, distinct={k: v * f for k, v in launch["distinct"].items()}, mma=launch["mma"] * f)


def kernel_terms(launch: dict, op: Op, main: bool) -> dict[str, float]:
    """Seconds per term of the model for one launch; `main`: the op's first kernel (its minimum bytes
    and CUDA-core work are the op's), else a final sum over partials (its own distinct bytes)."""
    g = scaled(launch, op.work_scale if main else 1)
    c = g["counts"]
    sectors = c["global_load"]["sectors"] + c["global_store"]["sectors"] + c["cp_async"]["sectors"]
    wavefronts = sum(c[k]["wavefronts"] for k in ("shared_load", "shared_store", "ldmatrix", "cp_async"))
    sm_rate = H100["sm_bytes_per_clk"] * H100["sms"] * H100["clock"]
    distinct = g["distinct"]["read_bytes"] + g["distinct"]["write_bytes"]
    return {"hbm": (op.min_bytes if main else distinct) / H100["hbm"], "l2": distinct / H100["l2"],
            "sm_memory": (sectors * 32 + wavefronts * 128) / sm_rate,
            "tensor": g["mma"] * MMA_FLOPS / H100["mma_flops"],
            "fma": (op.fma_flops if main else 0.0) / H100["fp32_peak"]}


def resolve(library: str, addresses: list[int]) -> list[tuple[str, str]]:
    """(function, file:line relative to the repository) of each code address in the library."""
    if not addresses:
        return []
    out = subprocess.run(["addr2line", "-f", "-C", "-e", library, *map(hex, addresses)], capture_output=True,
                         text=True, check=False).stdout.splitlines()
    out += ["??", "??:0"] * (len(addresses) - len(out) // 2)
    resolved = []
    for function, location in zip(out[0::2], out[1::2]):
        path, _, line = location.partition(":")
        base = os.path.basename(path)
        if base.endswith("_emu.cpp"):  # a translation (emu_build.py): name its .cu
            stem = base[: -len("_emu.cpp")] + ".cu"
            path = next((os.path.join(ROOT, d, stem) for d in ("csrc/cuda", "tests/cuda_emu")
                         if os.path.exists(os.path.join(ROOT, d, stem))), stem)
        if os.path.isabs(path):
            path = os.path.relpath(path, ROOT)
        resolved.append((function, f"{path}:{line.split()[0] if line else '?'}"))
    return resolved


def kernel_name(function: str) -> str:
    """`void ns::kernel<T, ...>(args)` -> `kernel<T, ...>`, with short type names."""
    function = function.replace("(anonymous namespace)::", "").removeprefix("void ")
    depth, end = 0, len(function)
    for i, ch in enumerate(function):
        depth += ch == "<"
        depth -= ch == ">"
        if ch == "(" and depth == 0:
            end = i
            break
    name = function[:end]
    head, _, args = name.partition("<")
    name = head.rsplit("::", 1)[-1] + (f"<{args}" if args else "")
    for long, short in (("c10::BFloat16", "bf16"), ("c10::Half", "f16"), ("xsep::cuda::", "")):
        name = name.replace(long, short)
    return name


def worst_sites(launch: dict, most: int = 3) -> list[dict]:
    """The call sites that cost most beyond their ideal (excess sectors x 32 B + wavefronts x 128 B)."""
    def excess(site):
        c = site["counts"]
        return (c["sectors"] - c["ideal_sectors"]) * 32 + (c["wavefronts"] - c["ideal_wavefronts"]) * 128
    sites = sorted((s for s in launch["sites"] if excess(s) > 0), key=excess, reverse=True)[:most]
    out = []
    for site, (_, line) in zip(sites, resolve(launch["library"], [s["pc"] - 1 for s in sites])):
        c = site["counts"]
        out.append(dict(site=line, kind=site["kind"], requests=c["requests"],
                        per_request=round((c["sectors"] or c["wavefronts"]) / c["requests"], 2),
                        ideal=round((c["ideal_sectors"] or c["ideal_wavefronts"]) / c["requests"], 2),
                        lanes=round(c["lanes"] / c["requests"], 1), bytes_per_lane=round(c["bytes"] / c["lanes"], 1)))
    return out


def counted(ops, runs: int, launch) -> list[dict]:
    ops.counters_start(runs, 1)
    try:
        launch()
    finally:
        launches = json.loads(ops.counters_stop())
    return launches


# The fused forward's resident block runs its depthwise rows against every 128 (64 on FMA units) output
# channels in turn: its counts are linear in the output channels (in whole tiles), on the same grid. Wider than
# EXTRAPOLATE_ABOVE, it is counted at the two widths of EXTRAPOLATE_FROM and extrapolated (a block of the
# 10x10 1536->2048 layer in float32 would take the emulator over a minute).
EXTRAPOLATE_FROM, EXTRAPOLATE_ABOVE = (256, 512), 1024


def extrapolated(at: list[list[dict]], widths: tuple[int, int], width: int) -> list[dict]:
    """Launch records at `width` from those at two smaller widths (numbers linear in the width)."""
    (a, b), (wa, wb) = at, widths
    f = (width - wb) / (wb - wa)

    def line(x, y):
        if isinstance(y, dict):
            return {k: line(x[k], v) for k, v in y.items()}
        return y + (y - x) * f if isinstance(y, (int, float)) and not isinstance(y, bool) else y

    out = []
    for la, lb in zip(a, b):
        launch = dict(lb)
        for key in ("counts", "distinct", "mma"):
            launch[key] = line(la[key], lb[key])
        out.append(launch)  # (its sites: the wider run's, whose ratios per request hold)
    return out


def count_op(ops, op: Op) -> tuple[list[dict], float, bool]:
    """The op's launch records, the emulator's seconds, and whether they were extrapolated."""
    runs = SAMPLES[op.sample]
    start = time.time()
    launches = None
    if op.run_for is not None and op.out_channels > EXTRAPOLATE_ABOVE:
        at = [counted(ops, runs, lambda w=w: op.run_for(w)) for w in EXTRAPOLATE_FROM]
        # only where the blocks' work grows with the width on the same grid (the resident kernel; on
        # layers too wide for it the fused forward's GEMM grows its grid instead: run it as it is)
        if all(la["grid"] == lb["grid"] for la, lb in zip(*at)):
            launches = extrapolated(at, EXTRAPOLATE_FROM, op.out_channels)
    from_smaller = launches is not None
    if launches is None:
        launches = counted(ops, runs, op.run)
    return launches, time.time() - start, from_smaller


def summarize(launch: dict, op: Op) -> dict:
    c = launch["counts"]
    glob = {k: c[k] for k in ("global_load", "global_store", "cp_async")}
    shared = {k: c[k] for k in ("shared_load", "shared_store", "ldmatrix", "cp_async")}
    requests = sum(v["requests"] for v in glob.values())
    shared_requests = sum(v["requests"] for v in shared.values())
    name = kernel_name(resolve(launch["library"], [launch["function"]])[0][0])
    main = not name.startswith(("sum_chunks_kernel", "ordered_sum_kernel"))
    g = scaled(launch, op.work_scale if main else 1)
    distinct = g["distinct"]["read_bytes"] + g["distinct"]["write_bytes"]
    terms = kernel_terms(launch, op, main)
    return dict(kernel=name, launched_as=launch["kernel"], grid=launch["grid"], block=launch["block"],
                blocks=launch["blocks"], blocks_run=launch["blocks_run"], work_scale=op.work_scale if main else 1,
                sectors_per_request=sum(v["sectors"] for v in glob.values()) / max(requests, 1),
                ideal_sectors_per_request=sum(v["ideal_sectors"] for v in glob.values()) / max(requests, 1),
                wavefronts_per_request=sum(v["wavefronts"] for v in shared.values()) / max(shared_requests, 1),
                ideal_wavefronts_per_request=sum(v["ideal_wavefronts"] for v in shared.values())
                / max(shared_requests, 1),
                distinct_bytes=distinct, min_bytes=op.min_bytes if main else None, mma=g["mma"], terms=terms,
                predicted=max(terms.values()),
                worst_sites=worst_sites(launch), counts=launch["counts"], distinct=launch["distinct"])


def run(layers: list[Layer], dtypes: list[str]) -> dict:
    emu_build.load(emu_build.COUNTERS)
    ops = torch.ops.xsep_emu_counters
    results = []
    for layer in layers:
        for dname in dtypes:
            dtype = DTYPES[dname]
            entry = dict(layer=layer.name, dtype=dname, ops={}, paths={})
            layer_floors = floors(layer, dtype)
            for name, op in layer_ops(ops, layer, dtype).items():
                launches, seconds, extrapolated = count_op(ops, op)
                kernels = [summarize(launch, op) for launch in launches]
                entry["ops"][name] = dict(min_bytes=op.min_bytes, emulated_seconds=round(seconds, 1),
                                          extrapolated=extrapolated,
                                          kernels=kernels, predicted=sum(k["predicted"] for k in kernels))
                print(f"{layer.name} {dname} {name}: {seconds:.1f} s emulated", file=sys.stderr, flush=True)
            for path, names in PATHS.items():
                predicted = sum(entry["ops"][n]["predicted"] for n in names)
                entry["paths"][path] = dict(predicted=predicted, floor=layer_floors[path],
                                            ratio=predicted / layer_floors[path], goal=GOALS.get(path))
            results.append(entry)
    commit = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"], capture_output=True, text=True,
                            check=False).stdout.strip()
    return dict(commit=commit, model=H100, batch=BATCH, samples=SAMPLES, results=results)


def us(seconds: float) -> str:
    return f"{seconds * 1e6:,.0f}"


def markdown(report: dict, date: str) -> str:
    lines = [f"# Memory counters per kernel, Xception layers at batch {BATCH} ({date})", "",
             f"From `python tests/cuda_emu/memory_counters.py` at {report['commit']} (the CPU emulator's "
             "counters build: see "
             "tests/cuda_emu/counters.cpp and the script's docstring for the model). No GPU: every time here "
             "is a prediction, to be calibrated against a GPU run. Blocks sampled per launch: "
             + ", ".join(f"{k} {v}" for k, v in report["samples"].items()) + ".", "",
             "Columns: sectors per global request (incl. cp.async) / ideal; shared wavefronts per request "
             "(incl. ldmatrix and cp.async's shared side) / ideal; distinct bytes of all blocks (each block's "
             "own, summed) / the op's minimum; mma.sync instructions; predicted us and its largest term. "
             f"'batch /{REDUCED}': a split reduction counted on a batch {REDUCED} times smaller, on the same grid, "
             f"and scaled by {REDUCED}.", ""]
    for entry in report["results"]:
        lines += [f"## {entry['layer']}, {entry['dtype']}", "",
                  "| op | kernel | blocks run | sectors/req | ideal | wavefronts/req | ideal | distinct/min | mma "
                  "| predicted us | bound by |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, op in entry["ops"].items():
            for k in op["kernels"]:
                bound = max(k["terms"], key=k["terms"].get)
                ratio = f"{k['distinct_bytes'] / k['min_bytes']:.2f}" if k["min_bytes"] else "(partials)"
                sample = f"{k['blocks_run']}/{k['blocks']}"
                if k["work_scale"] > 1:
                    sample += f" (batch /{k['work_scale']})"
                if op["extrapolated"]:
                    sample += " (from {} and {} outputs)".format(*EXTRAPOLATE_FROM)
                lines.append(f"| {name} | {k['kernel']} | {sample} | "
                             f"{k['sectors_per_request']:.2f} | {k['ideal_sectors_per_request']:.2f} | "
                             f"{k['wavefronts_per_request']:.2f} | {k['ideal_wavefronts_per_request']:.2f} | "
                             f"{ratio} | {k['mma']:,.0f} | "
                             f"{us(k['predicted'])} | {bound} |")
        lines += ["", "| path | predicted us | floor us | predicted/floor | goal |", "|---|---|---|---|---|"]
        for path, v in entry["paths"].items():
            goal = f"<= {v['goal']}" if v["goal"] else ""
            lines.append(f"| {path} | {us(v['predicted'])} | {us(v['floor'])} | {v['ratio']:.2f} | {goal} |")
        lines += ["", "Worst call sites (excess sectors x 32 B + wavefronts x 128 B): per request / ideal, "
                      "lanes, bytes per lane:", ""]
        for name, op in entry["ops"].items():
            for k in op["kernels"]:
                for s in k["worst_sites"]:
                    lines.append(f"- {name}, {k['kernel'].split('<')[0]}: {s['site']} {s['kind']} {s['per_request']} / "
                                 f"{s['ideal']} ({s['lanes']} lanes x {s['bytes_per_lane']} B)")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", nargs="*", help="layer names' prefixes (default: all four), e.g. 19x19")
    parser.add_argument("--dtypes", nargs="*", default=list(DTYPES), choices=list(DTYPES))
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "kernels"),
                        help="folder for <date>_emu-counters.md and .json ('-': print the markdown only)")
    args = parser.parse_args(argv)
    layers = [layer for layer in LAYERS if not args.layers or any(layer.name.startswith(p) for p in args.layers)]
    report = run(layers, args.dtypes)
    date = datetime.date.today().isoformat()
    text = markdown(report, date)
    if args.out == "-":
        print(text)
        return 0
    os.makedirs(args.out, exist_ok=True)
    base = os.path.join(args.out, f"{date}_emu-counters")
    with open(base + ".md", "w", encoding="utf-8") as f:
        f.write(text + "\n")
    with open(base + ".json", "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
        f.write("\n")
    print(f"wrote {base}.md and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
