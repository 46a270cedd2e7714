"""`python -m xsep kernels [--check]`: the kernel report (see xsep/kernels/__init__.py)."""

from __future__ import annotations

import datetime
import json
import os
import sys
import time

from xsep import _build
from xsep.kernels import ratchet, report

DEFAULT_CACHE = os.path.join(_build.ROOT, "build", "xsep-kernels")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "kernels", help="registers, spills, occupancy and memory access widths of every CUDA and Triton kernel "
        "(compiled for sm_90, no GPU needed)",
        description=__doc__.splitlines()[0])
    p.add_argument("--dtypes", default="bf16,f32",
                   help="show the kernels serving these dtypes (comma-separated; 'all'); default bf16,f32")
    p.add_argument("--check", action="store_true",
                   help="exit 1 on a spill or a scalar 16-bit global access in a loop of a bf16 kernel that the "
                   "baseline does not list (or a worse one)")
    p.add_argument("--baseline", default=ratchet.BASELINE, help="known violations (default: %(default)s)")
    p.add_argument("--update-baseline", action="store_true",
                   help="rewrite the baseline with the current violations (refused if one is new or worse)")
    p.add_argument("--json", metavar="PATH", help="also write the whole report as JSON")
    p.add_argument("--out", metavar="DIR",
                   help="also write the text report to DIR/<date>_nvcc-<version>_triton-<version>.txt (text only: "
                   "benchmarks/render.py reads benchmarks/results/*/*.json as bench results)")
    p.add_argument("--no-cuda", action="store_true", help="skip the CUDA kernels")
    p.add_argument("--no-triton", action="store_true", help="skip the Triton kernels")
    p.add_argument("--cache-dir", default=os.environ.get("XSEP_KERNELS_CACHE", DEFAULT_CACHE),
                   help="compiled cubins and Triton results, by source hash (default: %(default)s)")
    p.set_defaults(func=run)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def build(args) -> dict:
    """The report as a JSON-able document."""
    from xsep.kernels import toolchain

    doc = {"date": datetime.date.today().isoformat(), "versions": {}, "skipped": {}, "kernels": [],
           "how": report.HOW}
    start = time.time()
    if not args.no_cuda:
        why = None if toolchain.nvcc() else "no nvcc (CUDA toolkit) found"
        why = why or (None if toolchain.cuobjdump() else "no cuobjdump (CUDA toolkit, or Triton's wheel)")
        if why:
            doc["skipped"]["cuda"] = why
        else:
            from xsep.kernels import cuda

            records, versions = cuda.report(args.cache_dir, _log)
            doc["kernels"] += records
            doc["versions"].update(nvcc=versions["nvcc"], cuobjdump=versions["cuobjdump"], cuda_arch=versions["arch"])
    if not args.no_triton:
        from xsep.kernels import triton_kernels

        why = triton_kernels.available()
        if why:
            doc["skipped"]["triton"] = why
        else:
            dtypes = ["bf16", "f32", "f16", "f64"] if args.dtypes == "all" else args.dtypes.split(",")
            if args.check or args.update_baseline:
                dtypes = sorted(set(dtypes) | {ratchet.CHECKED_DTYPE})
            records, versions = triton_kernels.report(args.cache_dir, dtypes, _log)
            doc["kernels"] += records
            doc["versions"].update(triton=versions["triton"], triton_arch=versions["arch"])
    order = {"bf16": 0, "f16": 1, "f32": 2, "f64": 3}
    doc["kernels"].sort(key=lambda r: (r["backend"], r["source"], r["name"], order.get(r["dtype"], 9)))
    doc["seconds"] = round(time.time() - start, 1)
    return doc


def run(args) -> int:
    doc = build(args)
    shown = None if args.dtypes == "all" else args.dtypes.split(",")
    text = report.format_text(doc, shown) + "\n" + report.summary(doc) + "\n"
    current = ratchet.violations(doc["kernels"])
    comparison = ratchet.compare(current, ratchet.load(args.baseline)) if os.path.exists(args.baseline) else None
    if comparison is not None:
        text += "\nbf16 check against " + os.path.relpath(args.baseline, _build.ROOT) + ":\n"
        text += "\n".join(ratchet.format_comparison(comparison)) + "\n"
    sys.stdout.write(text)
    doc["violations"] = current
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        v = doc["versions"]
        name = f"{doc['date']}_nvcc-{v.get('nvcc', 'none')}_triton-{v.get('triton', 'none')}.txt"
        with open(os.path.join(args.out, name), "w", encoding="utf-8") as f:
            f.write(text)
    incomplete = bool(doc["skipped"]) and os.environ.get("XSEP_REQUIRE_NATIVE", "") == "1"
    if args.update_baseline:
        if doc["skipped"]:
            print("kernels: not updating the baseline from an incomplete report", file=sys.stderr)
            return 1
        if comparison is not None and comparison.failed:
            print("kernels: refusing to update the baseline: it may only shrink (new or worse violations above)",
                  file=sys.stderr)
            return 1
        ratchet.save(current, args.baseline)
        print(f"kernels: wrote {args.baseline}", file=sys.stderr)
    if args.check:
        if comparison is None:
            print(f"kernels: no baseline at {args.baseline}", file=sys.stderr)
            return 1
        if incomplete:
            print("kernels: FAIL: parts were skipped and XSEP_REQUIRE_NATIVE=1", file=sys.stderr)
            return 1
        print(f"kernels: check {'FAILED' if comparison.failed else 'passed'} ({len(comparison.new)} new, "
              f"{len(comparison.worse)} worse, {len(comparison.known)} known, {len(comparison.improved)} improved; "
              f"{doc['seconds']} s)", file=sys.stderr)
        return 1 if comparison.failed else 0
    return 0
