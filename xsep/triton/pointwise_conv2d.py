"""Triton pointwise (1x1) convolution: forward, grad input, grad weight (the bias gradient is a torch sum).

All three are GEMMs over pixels (rows: flat pixel index (n*H + h)*W + w, addressed through the
tensor's own strides, so any memory format works in place; channels_last makes each row contiguous):
- forward       y[p, o]  = sum_c x[p, c] * w[o, c] (+ bias[o] in the epilogue)
- grad input    gx[p, c] = sum_o g[p, o] * w[o, c]   (the forward kernel with the weight transposed)
- grad weight   gw[o, c] = sum_p g[p, o] * x[p, c]   split over pixel ranges into float32 partials,
                 summed by one torch reduction (deterministic, no atomics).
tl.dot with float32 accumulation (float64 for float64); float32 operands use IEEE precision (no TF32).
The forward/grad-input GEMM runs on a 1-D grid with the output-channel tiles of a pixel tile side by
side (gemm_tile), so an input larger than L2 is read from DRAM once, not once per column tile.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from xsep.triton._common import (
    acc_dtype,
    aligned,
    alignment,
    channel_mask,
    dot_operand,
    dot_precision,
    dot_upcast,
    empty,
    gemm_grid,
    gemm_tile,
    launch,
    new_like_format,
    pixel_offsets,
    split_rows,
    splits,
    tuned,
)

_GEMM_CONFIGS = [{"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k}
                 for m, n, k in ((128, 128, 64), (128, 256, 64), (64, 128, 64), (128, 64, 32))]
_WARPS = [(8, 3), (4, 4)]
_INTERPRET = {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16}


@tuned(_GEMM_CONFIGS, key=["P", "K", "N"], interpret_config=_INTERPRET, warps=_WARPS)
def _gemm_kernel(a_ptr, b_ptr, bias_ptr, c_ptr, P, K, N, HW, W,
                 san, sak, sah, saw, sbk, sbn, scn_, scc, sch, scw,
                 HAS_BIAS: tl.constexpr, ACC: tl.constexpr, UPCAST: tl.constexpr, PREC: tl.constexpr,
                 B_K_UNIT: tl.constexpr, ALIGN: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """c[p, n] = sum_k a[p, k] * b[k, n] (+ bias[n]); a and c are pixel tensors, b a matrix with one
    unit stride (along k when B_K_UNIT) and the other a multiple of ALIGN."""
    p, cols = gemm_tile(N, BLOCK_M, BLOCK_N)
    p_mask = p < P
    n_mask = channel_mask(cols, N, ALIGN)
    a_rows = a_ptr + aligned(pixel_offsets(p, HW, W, san, sah, saw), ALIGN)
    if B_K_UNIT:
        b_cols = aligned(cols * sbn, ALIGN)
    else:
        b_cols = cols * sbn
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        k_mask = channel_mask(k, K, ALIGN)
        a = tl.load(a_rows[:, None] + k.to(tl.int64)[None, :] * sak, mask=p_mask[:, None] & k_mask[None, :], other=0.0)
        if B_K_UNIT:
            b_rows = k * sbk
        else:
            b_rows = aligned(k * sbk, ALIGN)
        b = tl.load(b_ptr + b_rows[:, None] + b_cols[None, :], mask=k_mask[:, None] & n_mask[None, :], other=0.0)
        acc = tl.dot(dot_operand(a, a, UPCAST), dot_operand(b, b, UPCAST), acc,
                     input_precision=PREC, out_dtype=ACC)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + cols, mask=n_mask, other=0.0).to(ACC)[None, :]
    c_rows = aligned(pixel_offsets(p, HW, W, scn_, sch, scw), ALIGN)
    tl.store(c_ptr + c_rows[:, None] + cols.to(tl.int64)[None, :] * scc, acc.to(c_ptr.dtype.element_ty),
             mask=p_mask[:, None] & n_mask[None, :])


@tuned([{"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": 64} for m, n in ((128, 128), (64, 128), (128, 64), (64, 64))],
       key=["P", "O", "C"], interpret_config=_INTERPRET, warps=_WARPS)
def _grad_weight_kernel(g_ptr, x_ptr, part_ptr, P, O, C, HW, W, ROWS_PER_SPLIT,
                        sgn, sgc, sgh, sgw, sxn, sxc, sxh, sxw,
                        ACC: tl.constexpr, UPCAST: tl.constexpr, PREC: tl.constexpr, ALIGN: tl.constexpr,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """part[split, o, c] = sum over the split's pixels p of g[p, o] * x[p, c]."""
    o = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    c = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    split = tl.program_id(2)
    o_mask = channel_mask(o, O, ALIGN)
    c_mask = channel_mask(c, C, ALIGN)
    start, end = split_rows(split, ROWS_PER_SPLIT, P)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    for p0 in range(start, end, BLOCK_K):
        p = p0 + tl.arange(0, BLOCK_K)
        p_mask = p < end
        g_rows = aligned(pixel_offsets(p, HW, W, sgn, sgh, sgw), ALIGN)
        x_rows = aligned(pixel_offsets(p, HW, W, sxn, sxh, sxw), ALIGN)
        gt = tl.load(g_ptr + g_rows[None, :] + o.to(tl.int64)[:, None] * sgc, mask=o_mask[:, None] & p_mask[None, :],
                     other=0.0)
        xv = tl.load(x_ptr + x_rows[:, None] + c.to(tl.int64)[None, :] * sxc, mask=p_mask[:, None] & c_mask[None, :],
                     other=0.0)
        acc = tl.dot(dot_operand(gt, gt, UPCAST), dot_operand(xv, xv, UPCAST), acc,
                     input_precision=PREC, out_dtype=ACC)
    rows = aligned((split * O + o).to(tl.int64) * C, ALIGN)
    tl.store(part_ptr + rows[:, None] + c[None, :], acc, mask=o_mask[:, None] & c_mask[None, :])


def gemm(a, b_matrix, bias, out) -> torch.Tensor:
    """out[n, :, h, w] = b_matrix^T-style product: out[p, j] = sum_k a[p, k] * b_matrix[k, j] (+ bias)."""
    n, k, h, w = a.shape
    cols = out.shape[1]
    p = n * h * w
    if out.numel() == 0:
        return out
    grid = gemm_grid(p, cols)
    bias_arg = bias.contiguous() if bias is not None else b_matrix
    launch(_gemm_kernel, grid, a, b_matrix, bias_arg, out, p, k, cols, h * w, w, *a.stride(),
           b_matrix.stride(0), b_matrix.stride(1), *out.stride(),
           HAS_BIAS=bias is not None, ACC=acc_dtype(a.dtype), UPCAST=dot_upcast(a.dtype),
           PREC=dot_precision(a.dtype), B_K_UNIT=b_matrix.stride(0) == 1,
           ALIGN=alignment((k, cols), (a, out), b_matrix.stride()))
    return out


def _matrix(weight: torch.Tensor) -> torch.Tensor:
    return weight.reshape(weight.shape[0], weight.shape[1]) if weight.dim() == 4 else weight


def forward(input, weight, bias) -> torch.Tensor:
    w = _matrix(weight)
    out = new_like_format(input, (input.shape[0], w.shape[0], input.shape[2], input.shape[3]))
    return gemm(input, w.contiguous().t(), bias, out)


def grad_input(grad_output, input, weight) -> torch.Tensor:
    gx = new_like_format(input, input.shape)
    return gemm(grad_output, _matrix(weight).contiguous(), None, gx)


def grad_weight(grad_output, input, weight) -> torch.Tensor:
    n, c, h, w = input.shape
    o = weight.shape[0]
    p = n * h * w
    if p == 0 or weight.numel() == 0:
        return torch.zeros(weight.shape, dtype=weight.dtype, device=weight.device)
    acc = torch.float64 if input.dtype == torch.float64 else torch.float32
    count, rows = splits(p, 128, triton.cdiv(o, 128) * triton.cdiv(c, 128), input.device)
    part = empty((count, o, c), acc, input.device)
    grid = lambda meta: (triton.cdiv(o, meta["BLOCK_M"]), triton.cdiv(c, meta["BLOCK_N"]), count)  # noqa: E731
    launch(_grad_weight_kernel, grid, grad_output, input, part, p, o, c, h * w, w, rows,
           *grad_output.stride(), *input.stride(), ACC=acc_dtype(input.dtype), UPCAST=dot_upcast(input.dtype),
           PREC=dot_precision(input.dtype), ALIGN=alignment((o, c), (grad_output, input)))
    return part.sum(dim=0).reshape(weight.shape).to(weight.dtype)
