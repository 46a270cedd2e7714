"""Triton fused depthwise separable convolution, forward and backward.

y = mid_act(depthwise(in_act(x)) + depthwise_bias) @ pw^T + bias, with mid channels K = C*M (mid
channel k reads input channel k // M). Rows are flat output pixels addressed through each tensor's strides (any memory
format in place; channels_last is the coalesced one).

Forward: fused, or the depthwise output materialised, by a rule fixed by the shape (materialises_mid).
- Fused, one kernel. A 1-D grid of (output-pixel tile, output-channel tile) programs, the channel
  tiles of a pixel tile side by side (gemm_tile: the x tile then comes from DRAM once and from L2 for
  the others). For each block of BLOCK_K mid channels a program computes the depthwise tile
  [BLOCK_M pixels, BLOCK_K] in registers (float32), applies the mid activation, rounds it to the
  input dtype and feeds it to tl.dot with the pointwise weight tile [BLOCK_K, BLOCK_N]; the bias is
  added in the epilogue. The intermediate never touches global memory, but it is recomputed once per
  output-channel tile: cdiv(O, BLOCK_N) passes.
- Materialised, two kernels: the depthwise forward kernel writes d = mid_act(depthwise(x) + dw_bias)
  once, in the input dtype (the value the fused kernel rounds for tl.dot, so both give the same
  products), channels_last; then the pointwise GEMM (pointwise_conv2d.gemm) with the bias.

The rule, by counting (H100: HBM 3.35 TB/s; L1 128 B/clk/SM x 132 SMs x 1.83 GHz = 31 TB/s; bf16
tensor cores ~990 TFLOP/s dense; L2 50 MB). Per element of d (one pixel, one mid channel, e bytes):
a recompute pass reads KH*KW taps of e bytes from L1 (every tap is a load of the x tile: L1 hits
after the first), at least KH*KW * e / 31 TB/s, plus KH*KW FMAs and the operand staging, which this
leaves out (so the count favours fusing); materialising writes d and reads it back, 2e bytes of
DRAM (d is larger than L2 on the layers where it matters), 2e / 3.35 TB/s. Materialise when the
passes beyond the first cost more: (passes - 1) * KH*KW * e / 31 > 2e / 3.35, i.e.
(passes - 1) * KH*KW > 2 * 31 / 3.35 = 18.5 (MATERIALISE_ABOVE = 18), whatever the dtype, with
passes = cdiv(O, 128) (RULE_BLOCK_N: the tuned configurations' most common BLOCK_N). For 3x3:
O <= 384 fused (at most 2 extra passes, 18 <= 18), O > 384 materialised. Two Xception layers, bf16,
batch 128 (P = pixels):
- 19x19 728->728, P = 46,208: x, d, y 67.3 MB each, pw 1.1 MB; GEMM 49.0 GFLOP = 49.5 us of tensor
  cores; HBM floor (x, y, pw) 40.5 us. Fused: 6 passes of 605.5 MB of L1 tap loads = 117.5 us
  (FMA 9 us per pass besides), against which the GEMM's 49.5 us can at best overlap: >= 117.5 us;
  with the old pixel-fastest grid x (67 MB > L2) was also re-read from DRAM per channel tile,
  404 MB = 120 us. Materialised: depthwise 134.6 MB of DRAM = 40.2 us, GEMM max(135.6 MB = 40.5 us,
  49.5 us) = 49.5 us: ~90 us. Materialise.
- 10x10 1536->2048, P = 12,800: x 39.3 MB, d 39.3 MB, y 52.4 MB, pw 6.3 MB; GEMM 80.5 GFLOP = 81.3 us.
  Fused: 16 passes of 353.9 MB of L1 = 183 us. Materialised: depthwise 78.6 MB = 23.5 us, GEMM
  max(98 MB = 29.3 us, 81.3 us) = 81.3 us: ~105 us. Materialise.
- 147x147 64->128 (1 pass): fused; materialising would add 708 MB of DRAM (211 us) to a layer whose
  floor is 317 us.
Rejected: one program covering every output channel of its pixel tile (the depthwise tile reused
across the channel tiles) needs the [BLOCK_M, CM] tile held on chip (64 x 728 x 2 B = 93 KB):
Triton has no explicit shared memory, and a register tensor of a power-of-2 shape ([64, 1024]
bf16, 128 KB per program) spills; the accumulators of all O columns would not fit either. The CUDA
backend's resident kernel does that in shared memory. The counts are estimates: only a GPU run can
confirm which path is faster and where the threshold should sit (MATERIALISE_ABOVE is the knob).

Backward, three kernels, nothing of the forward stored (the depthwise output is recomputed):
1. grid (pixel groups, mid-channel tiles): per pixel tile, recompute the depthwise pre-activation,
   g_mid = grad_out @ pw (tl.dot over the output channels), g_pre = g_mid * mid_act'(pre); store g_pre
   (the gradient of the depthwise output, the input dtype) and accumulate the depthwise weight
   gradient sum_p g_pre * in_act(x_tap) in registers ([taps, BLOCK_K]) over the group's pixels; one
   float32 partial per group, summed by one torch reduction (deterministic, no atomics).
2. grad input = the depthwise grad-input kernel applied to g_pre (times relu'(x) for input relu).
3. grid (output-channel tiles, mid-channel tiles, pixel splits): grad pw[o, k] = sum_p grad_out[p, o] *
   mid[p, k], the mid tile recomputed in registers and fed to tl.dot; float32 partials per split,
   summed by one torch reduction.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from xsep.triton import depthwise_conv2d as dw
from xsep.triton import pointwise_conv2d as pw_kernels
from xsep.triton._common import (
    acc_dtype,
    aligned,
    alignment,
    channel_mask,
    conv_args,
    depthwise_tile,
    dot_operand,
    dot_precision,
    dot_upcast,
    empty,
    gemm_grid,
    gemm_tile,
    geometry,
    input_channel,
    launch,
    mid_act,
    mid_act_grad,
    new_like_format,
    pixel_coords,
    pixel_offsets,
    row_offsets,
    splits,
    taps_major,
    tuned,
)

# The forward's rule (materialises_mid; the module docstring has the arithmetic).
RULE_BLOCK_N = 128
MATERIALISE_ABOVE = 18

_FWD_CONFIGS = [
    {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64},
    {"BLOCK_M": 128, "BLOCK_N": 256, "BLOCK_K": 64},
    {"BLOCK_M": 64, "BLOCK_N": 256, "BLOCK_K": 32},
    {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 32},
    {"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 64},
]
_WARPS = [(8, 3), (4, 3)]
_INTERPRET = {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16}


@tuned(_FWD_CONFIGS, key=["P", "CM", "O", "KH", "KW", "STR_H"], interpret_config=_INTERPRET, warps=_WARPS)
def _forward_kernel(x_ptr, dw_ptr, db_ptr, pw_ptr, b_ptr, y_ptr, P, CM, M: tl.constexpr, O, H, W, Ho, Wo,
                    sxn, sxc, sxh, sxw, spo, spk, syn, syc, syh, syw,
                    STR_H, STR_W, PAD_T, PAD_L, DIL_H, DIL_W,
                    KH: tl.constexpr, KW: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_DW_BIAS: tl.constexpr,
                    RELU_IN: tl.constexpr, MID_ACT: tl.constexpr, ACC: tl.constexpr, UPCAST: tl.constexpr,
                    PREC: tl.constexpr,
                    ALIGN: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    p, o = gemm_tile(O, BLOCK_M, BLOCK_N)
    p_mask = p < P
    o_mask = channel_mask(o, O, ALIGN)
    w_cols = aligned(o * spo, ALIGN)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    for k0 in range(0, CM, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        k_mask = channel_mask(k, CM, ALIGN)
        mid = depthwise_tile(x_ptr, dw_ptr, p, p_mask, k, k_mask, M, CM, H, W, Ho * Wo, Wo, sxn, sxc, sxh, sxw,
                             STR_H, STR_W, PAD_T, PAD_L, DIL_H, DIL_W, KH, KW, RELU_IN, ACC, ALIGN)
        if HAS_DW_BIAS:
            mid += tl.load(db_ptr + k, mask=k_mask, other=0.0).to(ACC)[None, :]
        mid = mid_act(mid, MID_ACT)
        wt = tl.load(pw_ptr + (k * spk)[:, None] + w_cols[None, :],
                     mask=k_mask[:, None] & o_mask[None, :], other=0.0)
        acc = tl.dot(dot_operand(mid, wt, UPCAST), dot_operand(wt, wt, UPCAST), acc,
                     input_precision=PREC, out_dtype=ACC)
    if HAS_BIAS:
        acc += tl.load(b_ptr + o, mask=o_mask, other=0.0).to(ACC)[None, :]
    rows = aligned(pixel_offsets(p, Ho * Wo, Wo, syn, syh, syw), ALIGN)
    tl.store(y_ptr + rows[:, None] + o.to(tl.int64)[None, :] * syc, acc.to(y_ptr.dtype.element_ty),
             mask=p_mask[:, None] & o_mask[None, :])


@tuned([{"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 64}, {"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 64},
        {"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 64}, {"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 32}],
       key=["P", "CM", "O", "KH", "KW", "STR_H"], interpret_config=_INTERPRET, warps=[(4, 3), (8, 3)])
def _backward_mid_kernel(g_ptr, x_ptr, dw_ptr, db_ptr, pw_ptr, gpre_ptr, part_ptr, P, CM, M: tl.constexpr, O, H, W,
                         Ho, Wo,
                         ROWS_PER_GROUP,
                         sgn, sgc, sgh, sgw, sxn, sxc, sxh, sxw, spo, spk,
                         STR_H, STR_W, PAD_T, PAD_L, DIL_H, DIL_W,
                         KH: tl.constexpr, KW: tl.constexpr, TAPS: tl.constexpr, HAS_DW_BIAS: tl.constexpr,
                         RELU_IN: tl.constexpr, MID_ACT: tl.constexpr, ACC: tl.constexpr, UPCAST: tl.constexpr,
                         PREC: tl.constexpr,
                         ALIGN: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    group = tl.program_id(0)
    k = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    k_mask = channel_mask(k, CM, ALIGN)
    w_rows = k * spk
    k64 = k.to(tl.int64)
    c_off = input_channel(k, M).to(tl.int64) * sxc
    HWo = Ho * Wo
    start = group * ROWS_PER_GROUP
    end = tl.minimum(start + ROWS_PER_GROUP, P)
    tap_ids = tl.arange(0, TAPS)
    gdw = tl.zeros((TAPS, BLOCK_K), dtype=ACC)
    if HAS_DW_BIAS:
        dw_bias = tl.load(db_ptr + k, mask=k_mask, other=0.0).to(ACC)
    for p0 in range(start, end, BLOCK_M):
        p = p0 + tl.arange(0, BLOCK_M)
        p_mask = p < end
        pre = depthwise_tile(x_ptr, dw_ptr, p, p_mask, k, k_mask, M, CM, H, W, HWo, Wo, sxn, sxc, sxh, sxw,
                             STR_H, STR_W, PAD_T, PAD_L, DIL_H, DIL_W, KH, KW, RELU_IN, ACC, ALIGN)
        if HAS_DW_BIAS:
            pre += dw_bias[None, :]
        g_rows = g_ptr + aligned(pixel_offsets(p, HWo, Wo, sgn, sgh, sgw), ALIGN)
        gmid = tl.zeros((BLOCK_M, BLOCK_K), dtype=ACC)
        for o0 in range(0, O, BLOCK_N):
            o = o0 + tl.arange(0, BLOCK_N)
            o_mask = channel_mask(o, O, ALIGN)
            gv = tl.load(g_rows[:, None] + o.to(tl.int64)[None, :] * sgc, mask=p_mask[:, None] & o_mask[None, :],
                         other=0.0)
            wv = tl.load(pw_ptr + aligned(o * spo, ALIGN)[:, None] + w_rows[None, :],
                         mask=o_mask[:, None] & k_mask[None, :], other=0.0)
            gmid = tl.dot(dot_operand(gv, gv, UPCAST), dot_operand(wv, wv, UPCAST), gmid,
                          input_precision=PREC, out_dtype=ACC)
        gpre = mid_act_grad(gmid, pre, MID_ACT)
        gpre = tl.where(p_mask[:, None] & k_mask[None, :], gpre, 0.0)
        # g_pre is stored channels_last-contiguous: [P, CM].
        tl.store(gpre_ptr + aligned(p.to(tl.int64) * CM, ALIGN)[:, None] + k64[None, :],
                 gpre.to(gpre_ptr.dtype.element_ty),
                 mask=p_mask[:, None] & k_mask[None, :])
        # Depthwise weight gradient: each tap's input tile against g_pre, reduced over the pixels.
        n, ho, wo = pixel_coords(p, HWo, Wo)
        for i in range(KH):
            hi = ho * STR_H - PAD_T + i * DIL_H
            h_ok = p_mask & (hi >= 0) & (hi < H)
            for j in range(KW):
                wi = wo * STR_W - PAD_L + j * DIL_W
                ok = h_ok & (wi >= 0) & (wi < W)
                x_rows = aligned(row_offsets(n, hi, wi, sxn, sxh, sxw), ALIGN)
                xv = tl.load(x_ptr + x_rows[:, None] + c_off[None, :], mask=ok[:, None] & k_mask[None, :],
                             other=0.0).to(ACC)
                if RELU_IN:
                    xv = tl.maximum(xv, 0.0)
                s = tl.sum(xv * gpre, axis=0)
                gdw += tl.where(tap_ids[:, None] == i * KW + j, s[None, :], 0.0)
    taps_mask = tap_ids < KH * KW
    tl.store(part_ptr + (group * CM + k64)[None, :] * (KH * KW) + tap_ids[:, None], gdw,
             mask=taps_mask[:, None] & k_mask[None, :])


@tuned([{"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 64}, {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 64},
        {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64}, {"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 32}],
       key=["P", "CM", "O", "KH", "KW", "STR_H"], interpret_config=_INTERPRET, warps=[(4, 3), (8, 3)])
def _backward_pw_kernel(g_ptr, x_ptr, dw_ptr, db_ptr, part_ptr, P, CM, M: tl.constexpr, O, H, W, Ho, Wo,
                        ROWS_PER_SPLIT,
                        sgn, sgc, sgh, sgw, sxn, sxc, sxh, sxw,
                        STR_H, STR_W, PAD_T, PAD_L, DIL_H, DIL_W,
                        KH: tl.constexpr, KW: tl.constexpr, HAS_DW_BIAS: tl.constexpr, RELU_IN: tl.constexpr,
                        MID_ACT: tl.constexpr, ACC: tl.constexpr, UPCAST: tl.constexpr, PREC: tl.constexpr,
                        ALIGN: tl.constexpr,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """part[split, o, k] = sum over the split's pixels of grad_out[p, o] * mid[p, k] (BLOCK_M: o, BLOCK_N: k,
    BLOCK_K: the pixel step)."""
    o = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    k = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    split = tl.program_id(2)
    o_mask = channel_mask(o, O, ALIGN)
    k_mask = channel_mask(k, CM, ALIGN)
    HWo = Ho * Wo
    start = split * ROWS_PER_SPLIT
    end = tl.minimum(start + ROWS_PER_SPLIT, P)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    for p0 in range(start, end, BLOCK_K):
        p = p0 + tl.arange(0, BLOCK_K)
        p_mask = p < end
        g_rows = aligned(pixel_offsets(p, HWo, Wo, sgn, sgh, sgw), ALIGN)
        gt = tl.load(g_ptr + g_rows[None, :] + o.to(tl.int64)[:, None] * sgc, mask=o_mask[:, None] & p_mask[None, :],
                     other=0.0)
        mid = depthwise_tile(x_ptr, dw_ptr, p, p_mask, k, k_mask, M, CM, H, W, HWo, Wo, sxn, sxc, sxh, sxw,
                             STR_H, STR_W, PAD_T, PAD_L, DIL_H, DIL_W, KH, KW, RELU_IN, ACC, ALIGN)
        if HAS_DW_BIAS:
            mid += tl.load(db_ptr + k, mask=k_mask, other=0.0).to(ACC)[None, :]
        mid = mid_act(mid, MID_ACT)
        acc = tl.dot(dot_operand(gt, gt, UPCAST), dot_operand(mid, gt, UPCAST), acc,
                     input_precision=PREC, out_dtype=ACC)
    rows = aligned((split * O + o).to(tl.int64) * CM, ALIGN)
    tl.store(part_ptr + rows[:, None] + k[None, :], acc, mask=o_mask[:, None] & k_mask[None, :])


def _or(bias, placeholder):
    """A bias as a kernel's pointer (contiguous), or a placeholder tensor when there is none (the
    kernel's HAS_*BIAS flag then keeps it from being read)."""
    return bias.contiguous() if bias is not None else placeholder


def _pw_matrix(pw_weight):
    return pw_weight.reshape(pw_weight.shape[0], pw_weight.shape[1]) if pw_weight.dim() == 4 else pw_weight


def materialises_mid(out_channels: int, kh: int, kw: int) -> bool:
    """The forward's rule (see the module docstring): materialise the depthwise output when the fused
    kernel would recompute it so often that the recomputation costs more than d's round trip through
    DRAM: (passes - 1) * taps > MATERIALISE_ABOVE, passes = cdiv(O, RULE_BLOCK_N)."""
    passes = triton.cdiv(out_channels, RULE_BLOCK_N)
    return (passes - 1) * kh * kw > MATERIALISE_ABOVE


def forward(input, dw_weight, pw_weight, bias, stride, padding, dilation, relu_in: bool, mid: int,
            dw_bias=None) -> torch.Tensor:
    n, _, cm, m, ho, wo = geometry(input, dw_weight, stride, padding, dilation)
    pw = _pw_matrix(pw_weight).contiguous()  # row stride CM: a multiple of ALIGN
    o = pw.shape[0]
    out = new_like_format(input, (n, o, ho, wo))
    if out.numel() == 0:
        return out
    if materialises_mid(o, dw_weight.shape[2], dw_weight.shape[3]):
        # d = mid_act(depthwise(x) + dw_bias) in the input dtype (the value the fused kernel rounds
        # for tl.dot), channels_last, then the pointwise GEMM with the bias in its epilogue.
        d = empty((n, ho, wo, cm), input.dtype, input.device).permute(0, 3, 1, 2)
        dw.forward_into(d, input, dw_weight, dw_bias, stride, padding, dilation, relu_in, mid)
        return pw_kernels.gemm(d, pw.t(), bias, out)
    p = n * ho * wo
    launch(_forward_kernel, gemm_grid(p, o), input, taps_major(dw_weight), _or(dw_bias, pw), pw, _or(bias, pw), out,
           p, cm, m, o, input.shape[2], input.shape[3], ho, wo, *input.stride(), pw.stride(0), pw.stride(1),
           *out.stride(), *conv_args(stride, padding, dilation),
           KH=dw_weight.shape[2], KW=dw_weight.shape[3], HAS_BIAS=bias is not None, HAS_DW_BIAS=dw_bias is not None,
           RELU_IN=relu_in, MID_ACT=mid,
           ACC=acc_dtype(input.dtype), UPCAST=dot_upcast(input.dtype), PREC=dot_precision(input.dtype),
           ALIGN=alignment((cm, o), (input, out), pw.stride()))
    return out


def backward(grad_output, input, dw_weight, pw_weight, stride, padding, dilation, relu_in: bool, mid: int,
             dw_bias=None):
    """(grad_input, grad_dw_weight, grad_pw_weight, grad_dw_bias); the last is the depthwise output's
    gradient summed over the pixels, empty without a depthwise bias."""
    n, _, cm, m, ho, wo = geometry(input, dw_weight, stride, padding, dilation)
    pw = _pw_matrix(pw_weight).contiguous()
    o = pw.shape[0]
    kh, kw = dw_weight.shape[2], dw_weight.shape[3]
    p = n * ho * wo
    acc = torch.float64 if input.dtype == torch.float64 else torch.float32
    if p == 0:
        return (new_like_format(input, input.shape).zero_(),
                torch.zeros_like(dw_weight, memory_format=torch.contiguous_format),
                torch.zeros_like(pw_weight, memory_format=torch.contiguous_format),
                input.new_zeros(cm if dw_bias is not None else 0))
    conv = conv_args(stride, padding, dilation)
    w_taps = taps_major(dw_weight)
    common = dict(KH=kh, KW=kw, HAS_DW_BIAS=dw_bias is not None, RELU_IN=relu_in, MID_ACT=mid,
                  ACC=acc_dtype(input.dtype),
                  UPCAST=dot_upcast(input.dtype), PREC=dot_precision(input.dtype),
                  ALIGN=alignment((cm, o), (grad_output, input), pw.stride()))

    # 1. g_pre (the gradient of the depthwise output) and the depthwise weight gradient.
    gpre = empty((n, ho, wo, cm), input.dtype, input.device)
    groups, rows = splits(p, 128, triton.cdiv(cm, 64), input.device)
    part_dw = empty((groups, cm, kh * kw), acc, input.device)
    grid = lambda meta: (groups, triton.cdiv(cm, meta["BLOCK_K"]))  # noqa: E731
    launch(_backward_mid_kernel, grid, grad_output, input, w_taps, _or(dw_bias, pw), pw, gpre, part_dw, p, cm, m, o,
           input.shape[2], input.shape[3], ho, wo, rows, *grad_output.stride(), *input.stride(),
           pw.stride(0), pw.stride(1), *conv,
           TAPS=triton.next_power_of_2(kh * kw), **common)
    grad_dw = part_dw.sum(dim=0).reshape(dw_weight.shape).to(dw_weight.dtype)
    grad_dw_bias = gpre.sum(dim=(0, 1, 2), dtype=acc).to(input.dtype) if dw_bias is not None else input.new_empty(0)

    # 2. grad input: the depthwise grad-input kernel on g_pre (an NCHW view of the NHWC buffer).
    grad_input = dw.grad_input(gpre.permute(0, 3, 1, 2), input, dw_weight, stride, padding, dilation, relu_in)

    # 3. grad pointwise weight, the depthwise output recomputed.
    count, rows = splits(p, 128, triton.cdiv(o, 128) * triton.cdiv(cm, 64), input.device)
    part_pw = empty((count, o, cm), acc, input.device)
    grid = lambda meta: (triton.cdiv(o, meta["BLOCK_M"]), triton.cdiv(cm, meta["BLOCK_N"]), count)  # noqa: E731
    launch(_backward_pw_kernel, grid, grad_output, input, w_taps, _or(dw_bias, pw), part_pw, p, cm, m, o,
           input.shape[2], input.shape[3], ho, wo, rows, *grad_output.stride(), *input.stride(), *conv, **common)
    grad_pw = part_pw.sum(dim=0).reshape(pw_weight.shape).to(pw_weight.dtype)
    return grad_input, grad_dw, grad_pw, grad_dw_bias
