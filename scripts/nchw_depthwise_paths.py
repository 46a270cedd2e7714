"""Where NCHW depthwise layers should run: xsep's plane kernels, its channel blocks, or oneDNN's
depthwise convolution (torch's own call) on narrow float32 planes, which csrc/cpu/depthwise_conv2d.cpp's
nchw_depthwise_path chooses between. Times the forward and the backward (input and weight
gradients) of each case in alternating processes, one per XSEP_CPU_NCHW_DEPTHWISE setting (read once
a process): `planes`, `blocks`, `narrow` (oneDNN's forward and input gradient on narrow planes,
plane kernels elsewhere) and `auto` (the library's choice), and writes a JSON of the times per case,
with the machine it ran on.

    python scripts/nchw_depthwise_paths.py OUT.json [--rounds 2]

Cases: MobileNet-, EfficientNet-, ConvNeXt- and Xception-like planes, kernels and strides, batch 8
and one image. Timing: min over 11 runs of enough calls for ~2 ms, then min over the rounds' processes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

SETTINGS = ("planes", "blocks", "narrow", "auto")
# (kernel, stride, input width = height, channels), each at batch 8 and 1.
LAYERS = [(3, 1, 7, 960), (3, 1, 10, 1024), (3, 1, 14, 576), (3, 1, 19, 728), (3, 1, 28, 192), (3, 1, 37, 728),
          (3, 1, 56, 144), (3, 1, 112, 32), (3, 2, 14, 576), (3, 2, 28, 240), (3, 2, 56, 144), (3, 2, 112, 96),
          (5, 1, 7, 1152), (5, 1, 14, 672), (5, 1, 28, 240), (5, 1, 32, 240), (5, 1, 56, 144), (5, 2, 14, 672),
          (5, 2, 28, 240), (5, 2, 56, 144), (7, 1, 7, 320), (7, 1, 14, 160), (7, 1, 28, 80), (7, 1, 56, 40)]
CASES = [(k, s, w, n, c) for k, s, w, c in LAYERS for n in (8, 1)]


def _time(fn) -> float:
    for _ in range(3):
        fn()
    start = time.perf_counter()
    fn()
    reps = max(3, int(2e-3 / max(1e-6, time.perf_counter() - start)))
    best = float("inf")
    for _ in range(11):
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        best = min(best, (time.perf_counter() - start) / reps)
    return best


def measure() -> dict:
    """One process: every case's seconds, forward and backward, on this process's setting."""
    import torch

    from xsep import _extension

    _extension.load()
    out = {}
    for k, s, w, n, c in CASES:
        p = k // 2
        wo = (w + 2 * p - k) // s + 1
        x, go, weight = torch.randn(n, c, w, w), torch.randn(n, c, wo, wo), torch.randn(c, 1, k, k)
        args = ([s, s], [p] * 4, [1, 1], "none")
        out[f"{k},{s},{w},{n},{c},forward"] = _time(lambda: torch.ops.xsep.depthwise_conv2d(x, weight, None, *args))
        out[f"{k},{s},{w},{n},{c},backward"] = _time(
            lambda: torch.ops.xsep.depthwise_conv2d_backward(go, x, weight, *args))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        json.dump(measure(), sys.stdout)
        return 0
    runs = {setting: [] for setting in SETTINGS}
    for _ in range(args.rounds):
        for setting in runs:
            env = dict(os.environ, XSEP_CPU_NCHW_DEPTHWISE=setting)
            done = subprocess.run([sys.executable, __file__, args.out, "--measure"], env=env, capture_output=True,
                                  text=True, check=True)
            runs[setting].append(json.loads(done.stdout))
    import torch

    from xsep import _extension
    from xsep.bench import report

    _extension.load()
    cases = []
    for key in runs["auto"][0]:
        k, s, w, n, c, mode = key.split(",")
        seconds = {setting: min(r[key] for r in runs[setting]) for setting in SETTINGS}
        cases.append({"kernel": int(k), "stride": int(s), "width": int(w), "batch": int(n), "channels": int(c),
                      "mode": mode, **{f"{setting}_seconds": t for setting, t in seconds.items()},
                      "auto_over_best": seconds["auto"] / min(seconds.values())})
    doc = {"device": report.device_name(torch.device("cpu")), "cpu_family_model": report.cpu_family_model(),
           "threads": torch.get_num_threads(), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
           "library": torch.ops.xsep._build_info(), "rounds": args.rounds,
           "malloc_env": {v: os.environ[v] for v in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
                          if v in os.environ},
           "cases": cases}
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=1)
    for r in cases:
        print(f"k{r['kernel']} s{r['stride']} w{r['width']:>3} n{r['batch']} c{r['channels']:>5} {r['mode']:8} "
              + "  ".join(f"{setting} {r[f'{setting}_seconds'] * 1e6:7.1f}" for setting in SETTINGS)
              + f" us  auto/best {r['auto_over_best']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
