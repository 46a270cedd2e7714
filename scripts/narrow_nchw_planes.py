"""Where NCHW depthwise layers on narrow float32 planes should run: xsep's plane kernels or oneDNN's
depthwise convolution (torch's own call), which csrc/cpu/depthwise_conv2d.cpp's
narrow_planes_on_onednn chooses between. Times the forward and the input gradient of each case in
alternating processes, one per XSEP_CPU_NCHW_DEPTHWISE setting (read once a process): `narrow`
(every case on oneDNN), `xsep` (every case on xsep's kernels) and `auto` (the library's choice),
and writes a JSON of the three times per case, with the machine it ran on.

    python scripts/narrow_nchw_planes.py OUT.json [--rounds 2]

Cases: Xception-, MobileNet- and EfficientNet-like widths and kernels, from one small image to
batch 8 of Xception's widest layers. Every plane here is narrow by the rule's width bounds.
Timing: min over 11 runs of enough calls for ~2 ms, then min over the rounds' processes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

# (kernel, plane width = height, batch, channels)
CASES = [(k, w, n, c) for k, w in [(3, 7), (3, 10), (3, 12), (5, 14), (5, 28), (7, 14), (7, 28)]
         for n, c in [(1, 32), (1, 160), (1, 480), (1, 960), (4, 480), (8, 728), (8, 1536)]]


def _time(fn) -> float:
    for _ in range(5):
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
    """One process: every case's seconds, forward and input gradient, on this process's setting."""
    import torch

    from xsep import _extension

    _extension.load()
    out = {}
    for k, w, n, c in CASES:
        p = k // 2
        x, go, weight = torch.randn(n, c, w, w), torch.randn(n, c, w, w), torch.randn(c, 1, k, k)
        args = ([1, 1], [p] * 4, [1, 1], "none")
        out[f"{k},{w},{n},{c},forward"] = _time(lambda: torch.ops.xsep.depthwise_conv2d(x, weight, None, *args))
        out[f"{k},{w},{n},{c},grad_input"] = _time(
            lambda: torch.ops.xsep.depthwise_conv2d_grad_input(go, x, weight, *args))
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
    runs = {"narrow": [], "xsep": [], "auto": []}
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
        k, w, n, c, mode = key.split(",")
        onednn, xsep, auto = (min(r[key] for r in runs[s]) for s in runs)
        cases.append({"kernel": int(k), "width": int(w), "batch": int(n), "channels": int(c), "mode": mode,
                      "multiply_adds": int(n) * int(c) * int(w) ** 2 * int(k) ** 2, "onednn_seconds": onednn,
                      "xsep_seconds": xsep, "auto_seconds": auto, "auto_over_best": auto / min(onednn, xsep)})
    doc = {"device": report.device_name(torch.device("cpu")), "cpu_family_model": report.cpu_family_model(),
           "threads": torch.get_num_threads(), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
           "library": torch.ops.xsep._build_info(), "rounds": args.rounds,
           "malloc_env": {v: os.environ[v] for v in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
                          if v in os.environ},
           "cases": cases}
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=1)
    for r in cases:
        print(f"k{r['kernel']} w{r['width']:>3} n{r['batch']} c{r['channels']:>5} {r['mode']:10} "
              f"{r['multiply_adds'] / 1e6:8.2f} M  onednn {r['onednn_seconds'] * 1e6:8.1f} us  "
              f"xsep {r['xsep_seconds'] * 1e6:8.1f} us  auto {r['auto_seconds'] * 1e6:8.1f} us  "
              f"auto/best {r['auto_over_best']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
