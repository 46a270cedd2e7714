"""How much work each timed case does, and the fastest it could possibly run.

FLOPs count a multiply-add as 2. Minimum bytes count every tensor the op must read or write once:
for the fused op the intermediate never reaches memory, so it counts nothing; for forward+backward
the forward's input is read again by the backward. The floor is max(bytes / copy bandwidth,
pointwise FLOPs / matmul rate): the depthwise half's FLOPs (2*k*k per 2 to 4 bytes) are far below
any GPU's or this CPU's ridge point, so it is treated as memory-bound (true for k <= 5).

Output bytes count the tensors the op returns, which must be freshly allocated on every call: the
output for the forward, plus the input and weight gradients for forward+backward. Their cost in page
faults (ceilings.fresh_memory) is reported beside the floor, not in it.
"""

from __future__ import annotations

from dataclasses import dataclass

OPS = ("depthwise", "pointwise", "separable")
MODES = ("forward", "forward+backward")


@dataclass(frozen=True)
class Work:
    flops: float          # all FLOPs (depthwise + pointwise)
    gemm_flops: float     # the pointwise (matmul) part
    bytes: float          # minimum global-memory traffic
    output_bytes: float = 0.0  # the tensors returned (fresh memory on every call)

    def floor_seconds(self, copy_bytes_per_s: float, matmul_flops_per_s: float) -> float:
        return max(self.bytes / copy_bytes_per_s, self.gemm_flops / matmul_flops_per_s)


def work(op: str, mode: str, *, batch: int, in_channels: int, out_channels: int, size: int,
         kernel_size: int = 3, stride: int = 1, depth_multiplier: int = 1, element_size: int = 4) -> Work:
    """The work of `op` ('depthwise', 'pointwise', 'separable') in `mode` on a square layer
    (input `size` x `size`, 'same' padding, so the output side is ceil(size / stride))."""
    if op not in OPS:
        raise ValueError(f"op must be one of {OPS}, got {op!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    out_size = -(-size // stride)
    mid = in_channels * depth_multiplier
    in_px, out_px = batch * size * size, batch * out_size * out_size
    dw_flops = 2.0 * out_px * mid * kernel_size * kernel_size
    pw_flops = 2.0 * out_px * mid * out_channels
    dw_weight, pw_weight = mid * kernel_size * kernel_size, mid * out_channels
    if op == "depthwise":
        flops, gemm, x, y, weights = dw_flops, 0.0, in_px * in_channels, out_px * mid, dw_weight
    elif op == "pointwise":
        # the pointwise op alone runs on the depthwise output's shape
        flops, gemm, x, y, weights = pw_flops, pw_flops, out_px * mid, out_px * out_channels, pw_weight
    else:
        flops, gemm, x, y = dw_flops + pw_flops, pw_flops, in_px * in_channels, out_px * out_channels
        weights = dw_weight + pw_weight
    if mode == "forward":
        elements, outputs = x + y + weights, y
    else:
        # forward (read x, write y), backward: the input gradient and the weight gradient each cost
        # as much as the forward; read grad_output and x again, write grad_input and the weight grads
        flops, gemm = 3 * flops, 3 * gemm
        elements = (x + y + weights) + (y + x + x + 2 * weights)
        outputs = y + x + weights
    return Work(flops=flops, gemm_flops=gemm, bytes=float(elements * element_size),
                output_bytes=float(outputs * element_size))
