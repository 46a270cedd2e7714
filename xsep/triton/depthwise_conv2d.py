"""Triton depthwise convolution: forward, grad input, grad weight (the bias gradient is a torch sum).

Layout: every kernel takes the four strides of each 4-D tensor, so any memory format is read in
place; channels_last (channels contiguous) gives coalesced loads along the channel block. Tiles are
[BLOCK_P pixels, BLOCK_C channels]; accumulation in float32 (float64 for float64 tensors).

- forward: grid (pixel tiles, channel tiles); each program sums KH*KW taps of input tiles times the
  weight vector of its channels; output channel c*M+m reads input channel c.
- grad input: grid (input-pixel tiles, input-channel tiles); gathers grad_output over the taps whose
  stride arithmetic lands on the pixel, for each of the M channels c*M+m; times relu'(x) if the
  input activation is relu.
- grad weight: grid (reduction splits, channel tiles, taps); each program reduces grad_output *
  act(input) over its own contiguous range of pixels into a float32 partial; the partials are summed
  by one torch reduction. No atomics: bitwise reproducible.
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
    conv_args,
    depthwise_tile,
    empty,
    geometry,
    input_channel,
    launch,
    mid_act,
    new_like_format,
    pixel_coords,
    pixel_offsets,
    row_offsets,
    split_rows,
    splits,
    tap_weights,
    taps_major,
    tuned,
)

_TILE_CONFIGS = [{"BLOCK_P": p, "BLOCK_C": c} for p, c in ((64, 64), (128, 32), (32, 128), (128, 64))]
_WARPS = [(4, 2), (8, 2)]
_INTERPRET = {"BLOCK_P": 16, "BLOCK_C": 8}


@tuned(_TILE_CONFIGS, key=["C", "CM", "Ho", "Wo", "KH", "KW", "STR_H"], interpret_config=_INTERPRET, warps=_WARPS)
def _forward_kernel(x_ptr, w_ptr, b_ptr, y_ptr, P, C, CM, M: tl.constexpr, H, W, Ho, Wo,
                    sxn, sxc, sxh, sxw, syn, syc, syh, syw,
                    STR_H, STR_W, PAD_T, PAD_L, DIL_H, DIL_W,
                    KH: tl.constexpr, KW: tl.constexpr, HAS_BIAS: tl.constexpr, RELU_IN: tl.constexpr,
                    MID_ACT: tl.constexpr,
                    ACC: tl.constexpr, ALIGN: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """y = mid_act(depthwise(in_act(x)) + bias); MID_ACT is 0 (none) but for the fused op's
    materialised depthwise output (separable_conv2d.py)."""
    p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    k = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    p_mask = p < P
    k_mask = channel_mask(k, CM, ALIGN)
    acc = depthwise_tile(x_ptr, w_ptr, p, p_mask, k, k_mask, M, CM, H, W, Ho * Wo, Wo, sxn, sxc, sxh, sxw,
                         STR_H, STR_W, PAD_T, PAD_L, DIL_H, DIL_W, KH, KW, RELU_IN, ACC, ALIGN)
    if HAS_BIAS:
        acc += tl.load(b_ptr + k, mask=k_mask, other=0.0).to(ACC)[None, :]
    acc = mid_act(acc, MID_ACT)
    rows = aligned(pixel_offsets(p, Ho * Wo, Wo, syn, syh, syw), ALIGN)
    tl.store(y_ptr + rows[:, None] + k.to(tl.int64)[None, :] * syc, acc.to(y_ptr.dtype.element_ty),
             mask=p_mask[:, None] & k_mask[None, :])


@tuned(_TILE_CONFIGS, key=["C", "CM", "H", "W", "KH", "KW", "STR_H"], interpret_config=_INTERPRET, warps=_WARPS)
def _grad_input_kernel(g_ptr, x_ptr, w_ptr, gx_ptr, P, C, M: tl.constexpr, H, W, Ho, Wo,
                       sgn, sgc, sgh, sgw, sxn, sxc, sxh, sxw, sdn, sdc, sdh, sdw,
                       STR_H, STR_W, PAD_T, PAD_L, DIL_H, DIL_W,
                       KH: tl.constexpr, KW: tl.constexpr, RELU_IN: tl.constexpr,
                       ACC: tl.constexpr, ALIGN: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    p_mask = p < P
    c_mask = channel_mask(c, C, ALIGN)
    HW = H * W
    n, h, w = pixel_coords(p, HW, W)
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=ACC)
    for i in range(KH):
        th = h + PAD_T - i * DIL_H
        th_c = tl.maximum(th, 0)
        ho = th_c // STR_H
        h_ok = p_mask & (th >= 0) & (th_c - ho * STR_H == 0) & (ho < Ho)
        for j in range(KW):
            tw = w + PAD_L - j * DIL_W
            tw_c = tl.maximum(tw, 0)
            wo = tw_c // STR_W
            ok = h_ok & (tw >= 0) & (tw_c - wo * STR_W == 0) & (wo < Wo)
            row = aligned(row_offsets(n, ho, wo, sgn, sgh, sgw), ALIGN)[:, None]
            for m in range(M):
                k = c * M + m
                gv = tl.load(g_ptr + row + k.to(tl.int64)[None, :] * sgc,
                             mask=ok[:, None] & c_mask[None, :], other=0.0).to(ACC)
                wv = tap_weights(w_ptr, i * KW + j, C * M, k, c_mask, ALIGN).to(ACC)
                acc += gv * wv[None, :]
    if RELU_IN:
        x_rows = aligned(pixel_offsets(p, HW, W, sxn, sxh, sxw), ALIGN)
        xv = tl.load(x_ptr + x_rows[:, None] + c.to(tl.int64)[None, :] * sxc,
                     mask=p_mask[:, None] & c_mask[None, :], other=0.0)
        acc = tl.where(xv > 0, acc, 0.0)
    rows = aligned(pixel_offsets(p, HW, W, sdn, sdh, sdw), ALIGN)
    tl.store(gx_ptr + rows[:, None] + c.to(tl.int64)[None, :] * sdc, acc.to(gx_ptr.dtype.element_ty),
             mask=p_mask[:, None] & c_mask[None, :])


# The grad-weight kernel's reduction split is chosen by the launcher (it sizes the partials buffer),
# so only BLOCK_C and the pixel step are tuned.
@tuned([{"BLOCK_P": p, "BLOCK_C": c} for p, c in ((64, 64), (128, 32), (128, 64))],
       key=["CM", "Ho", "Wo", "KH", "KW"], interpret_config=_INTERPRET, warps=_WARPS)
def _grad_weight_kernel(g_ptr, x_ptr, part_ptr, P, CM, M: tl.constexpr, H, W, Ho, Wo, ROWS_PER_SPLIT,
                        sgn, sgc, sgh, sgw, sxn, sxc, sxh, sxw,
                        STR_H, STR_W, PAD_T, PAD_L, DIL_H, DIL_W,
                        KH: tl.constexpr, KW: tl.constexpr, RELU_IN: tl.constexpr,
                        ACC: tl.constexpr, ALIGN: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    split = tl.program_id(0)
    k = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    tap = tl.program_id(2)
    i = tap // KW
    j = tap - i * KW
    k_mask = channel_mask(k, CM, ALIGN)
    c_off = input_channel(k, M).to(tl.int64) * sxc
    k_off = k.to(tl.int64) * sgc
    HWo = Ho * Wo
    start, end = split_rows(split, ROWS_PER_SPLIT, P)
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=ACC)
    for p0 in range(start, end, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P)
        p_mask = p < end
        n, ho, wo = pixel_coords(p, HWo, Wo)
        hi = ho * STR_H - PAD_T + i * DIL_H
        wi = wo * STR_W - PAD_L + j * DIL_W
        ok = p_mask & (hi >= 0) & (hi < H) & (wi >= 0) & (wi < W)
        x_rows = aligned(row_offsets(n, hi, wi, sxn, sxh, sxw), ALIGN)
        xv = tl.load(x_ptr + x_rows[:, None] + c_off[None, :],
                     mask=ok[:, None] & k_mask[None, :], other=0.0).to(ACC)
        if RELU_IN:
            xv = tl.maximum(xv, 0.0)
        g_rows = aligned(row_offsets(n, ho, wo, sgn, sgh, sgw), ALIGN)
        gv = tl.load(g_ptr + g_rows[:, None] + k_off[None, :],
                     mask=p_mask[:, None] & k_mask[None, :], other=0.0).to(ACC)
        acc += xv * gv
    total = tl.sum(acc, axis=0)
    tl.store(part_ptr + (split * CM + k) * (KH * KW) + tap, total, mask=k_mask)


def forward(input, weight, bias, stride, padding, dilation, relu_in: bool) -> torch.Tensor:
    n, _, cm, _, ho, wo = geometry(input, weight, stride, padding, dilation)
    return forward_into(new_like_format(input, (n, cm, ho, wo)), input, weight, bias, stride, padding, dilation,
                        relu_in)


def forward_into(out, input, weight, bias, stride, padding, dilation, relu_in: bool, mid: int = 0) -> torch.Tensor:
    """The forward into `out` (any strides), with the mid activation `mid` (an activation code)
    after the bias: the fused op's materialised depthwise output."""
    _, c, cm, m, ho, wo = geometry(input, weight, stride, padding, dilation)
    if out.numel() == 0:
        return out
    kh, kw = weight.shape[2], weight.shape[3]
    p = out.shape[0] * ho * wo
    grid = lambda meta: (triton.cdiv(p, meta["BLOCK_P"]), triton.cdiv(cm, meta["BLOCK_C"]))  # noqa: E731
    w = taps_major(weight)
    launch(_forward_kernel, grid, input, w, bias.contiguous() if bias is not None else w, out, p, c, cm, m,
           input.shape[2], input.shape[3], ho, wo, *input.stride(), *out.stride(),
           *conv_args(stride, padding, dilation),
           KH=kh, KW=kw, HAS_BIAS=bias is not None, RELU_IN=relu_in, MID_ACT=mid, ACC=acc_dtype(input.dtype),
           ALIGN=alignment((c, cm), (input, out)))
    return out


def grad_input(grad_output, input, weight, stride, padding, dilation, relu_in: bool) -> torch.Tensor:
    n, c, cm, m, ho, wo = geometry(input, weight, stride, padding, dilation)
    gx = new_like_format(input, input.shape)
    if gx.numel() == 0:
        return gx
    h, w = input.shape[2], input.shape[3]
    p = n * h * w
    grid = lambda meta: (triton.cdiv(p, meta["BLOCK_P"]), triton.cdiv(c, meta["BLOCK_C"]))  # noqa: E731
    launch(_grad_input_kernel, grid, grad_output, input, taps_major(weight), gx, p, c, m, h, w, ho, wo,
           *grad_output.stride(), *input.stride(), *gx.stride(),
           *conv_args(stride, padding, dilation), KH=weight.shape[2], KW=weight.shape[3], RELU_IN=relu_in,
           ACC=acc_dtype(input.dtype), ALIGN=alignment((c, cm), (grad_output, input, gx)))
    return gx


def grad_weight(grad_output, input, weight, stride, padding, dilation, relu_in: bool) -> torch.Tensor:
    n, c, cm, m, ho, wo = geometry(input, weight, stride, padding, dilation)
    kh, kw = weight.shape[2], weight.shape[3]
    p = n * ho * wo
    acc = torch.float64 if input.dtype == torch.float64 else torch.float32
    if p == 0:
        return torch.zeros(weight.shape, dtype=weight.dtype, device=weight.device)
    channel_tiles = triton.cdiv(cm, 64)
    count, rows = splits(p, 128, channel_tiles * kh * kw, input.device)
    part = empty((count, cm, kh * kw), acc, input.device)
    grid = lambda meta: (count, triton.cdiv(cm, meta["BLOCK_C"]), kh * kw)  # noqa: E731
    launch(_grad_weight_kernel, grid, grad_output, input, part, p, cm, m, input.shape[2], input.shape[3], ho, wo,
           rows, *grad_output.stride(), *input.stride(), *conv_args(stride, padding, dilation),
           KH=kh, KW=kw, RELU_IN=relu_in, ACC=acc_dtype(input.dtype),
           ALIGN=alignment((c, cm), (grad_output, input)))
    # The second, deterministic reduction over the splits.
    return part.sum(dim=0).reshape(weight.shape).to(weight.dtype)
