"""Small cases of every op, forward and backward, on every xsep backend that runs on the device:
the workload the GPU check runs under compute-sanitizer (memcheck, racecheck, synccheck,
initcheck). Small so that the sanitizer's slowdown stays affordable; odd sizes, stride 2, dilation,
a depth multiplier and asymmetric padding so that edge tiles and masks are exercised.

    python scripts/sanitizer_cases.py --device cuda [--backends native]   (exit 1 if none of them runs there)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout, installed or not

from xsep import backends  # noqa: E402
from xsep import functional as XF  # noqa: E402

CASES = [  # (batch, in, out, size, kernel, stride, dilation, multiplier, padding)
    (2, 8, 16, 9, 3, 1, 1, 1, "same"),
    (1, 5, 7, 11, 3, 2, 1, 1, (0, 1, 1, 0)),
    (3, 4, 6, 8, 5, 1, 2, 2, 3),
    (1, 24, 40, 7, 7, 1, 1, 1, "same"),
]


def run(device: torch.device, backend: str, dtype: torch.dtype, ops: set[str]) -> None:
    for n, cin, cout, size, k, stride, dilation, m, padding in CASES:
        for layout in (torch.channels_last, torch.contiguous_format):
            x = torch.randn(n, cin, size, size, device=device, dtype=dtype).to(memory_format=layout).requires_grad_()
            dw = torch.randn(cin * m, 1, k, k, device=device, dtype=dtype, requires_grad=True)
            pw = torch.randn(cout, cin * m, 1, 1, device=device, dtype=dtype, requires_grad=True)
            bias = torch.randn(cout, device=device, dtype=dtype, requires_grad=True)
            loss = 0
            if "depthwise_conv2d" in ops:
                mid = XF.depthwise_conv2d(x, dw, None, stride, padding, dilation, input_activation="relu",
                                          backend=backend)
                loss = loss + mid.float().square().sum()
            if "pointwise_conv2d" in ops:
                out = XF.pointwise_conv2d(x, pw[:, :cin].contiguous(), bias, backend=backend)
                loss = loss + out.float().square().sum()
            if "separable_conv2d" in ops:
                fused = XF.separable_conv2d(x, dw, pw, bias, stride, padding, dilation, input_activation="relu",
                                            mid_activation="relu6", backend=backend)
                loss = loss + fused.float().square().sum()
            loss.backward()
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--backends", default="native,triton", help="comma-separated (default native,triton)")
    args = p.parse_args()
    device = torch.device(args.device)
    ran = []
    for backend in args.backends.split(","):
        ops = {op for op in backends.OPS if backends.unavailable_reason(backend, device, op) is None}
        if not ops:
            print(f"{backend}: not run on {device}: {backends.unavailable_reason(backend, device)}")
            continue
        for dtype in (torch.float32, torch.bfloat16):
            run(device, backend, dtype, ops)
            ran.append(f"{backend}/{str(dtype).removeprefix('torch.')} ({', '.join(sorted(ops))})")
    print(f"ran {len(CASES)} cases x 2 layouts, forward+backward, on: {'; '.join(ran) or 'nothing'}")
    return 0 if ran else 1


if __name__ == "__main__":
    sys.exit(main())
