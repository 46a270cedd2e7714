"""A depthwise forward on a tensor of more than 2**31 elements (64-bit indexing), checked against
the `torch` backend on the batch items at the start, on both sides of element 2**31 and at the end.

    python scripts/big_tensor_case.py --device cuda            (bfloat16, native, both layouts)
    python scripts/big_tensor_case.py --device cpu --min-elements 100000   (the same logic, small: tests)

Prints 'skipped: ...' and exits 0 when the device has too little free memory; exit 1 on a wrong answer.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout, installed or not

from xsep import functional as XF  # noqa: E402

CHANNELS, SIZE, KERNEL = 128, 64, 3
LAYOUTS = {"channels_last": torch.channels_last, "nchw": torch.contiguous_format}


def rel_error(actual: torch.Tensor, reference: torch.Tensor) -> float:
    reference = reference.double()
    return ((actual.double() - reference).norm() / reference.norm().clamp_min(1e-30)).item()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--backend", default="native")
    p.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], default="bfloat16")
    p.add_argument("--min-elements", type=int, default=2**31 + 2**20)
    p.add_argument("--tolerance", type=float, default=1e-2, help="relative error against torch (default 1e-2)")
    args = p.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    per_item = CHANNELS * SIZE * SIZE
    batch = -(-args.min_elements // per_item)
    numel = batch * per_item
    need = 2 * numel * dtype.itemsize + 2**30  # input, output and slack for the checks
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if free < need:
            print(f"skipped: {free / 2**30:.1f} GiB free, {need / 2**30:.1f} GiB needed for {numel} elements")
            return 0
    boundary = 2**31 // per_item  # the batch item holding element 2**31 (when the tensor has one)
    items = sorted({min(i, batch - 1) for i in (0, max(0, boundary - 1), boundary, batch - 1)})
    weight = (torch.randn(CHANNELS, 1, KERNEL, KERNEL, device=device) / KERNEL).to(dtype)
    failed = 0
    for name, fmt in LAYOUTS.items():
        x = torch.randn(batch, CHANNELS, SIZE, SIZE, device=device, dtype=dtype).to(memory_format=fmt)
        with torch.no_grad():
            y = XF.depthwise_conv2d(x, weight, None, 1, "same", backend=args.backend)
            errors = []
            for i in items:
                ref = XF.depthwise_conv2d(x[i:i + 1], weight, None, 1, "same", backend="torch")
                errors.append(rel_error(y[i:i + 1], ref))
            finite = all(bool(torch.isfinite(chunk).all()) for chunk in y.split(max(1, batch // 16)))
        ok = finite and max(errors) <= args.tolerance
        failed += not ok
        print(f"{'ok' if ok else 'WRONG'}: {args.backend} depthwise forward, {name}, {args.dtype}, "
              f"{numel} elements ({numel / 2**31:.3f} x 2^31), input {tuple(x.shape)}; rel. error vs torch on "
              f"items {items}: {', '.join(f'{e:.1e}' for e in errors)}; all outputs finite: {finite}", flush=True)
        del x, y
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
