"""Shared pieces of the Triton kernels: activations and their derivatives, the depthwise tile that
the fused kernels compute in registers, launch helpers (dtypes, autotuning, grid sizes).

Imported only when a Triton kernel is about to run (see xsep/triton/__init__.py).
"""

from __future__ import annotations

import functools
import os

import torch
import triton
import triton.language as tl

from xsep.ops.checks import depthwise_output_shape
from xsep.ops.schemas import activation_code
from xsep.triton import interpreting

# The mid activations' codes (the MID_ACT constexpr), from the one table of names and codes.
RELU = tl.constexpr(activation_code("relu"))
RELU6 = tl.constexpr(activation_code("relu6"))
ELU = tl.constexpr(activation_code("elu"))

def geometry(input, weight, stride, padding, dilation):
    """(N, C, C*M, M, Ho, Wo) of a depthwise convolution whose arguments were checked."""
    n, cm, ho, wo = depthwise_output_shape(input, weight, stride, padding, dilation)
    return n, input.shape[1], cm, cm // input.shape[1], ho, wo


def conv_args(stride, padding, dilation):
    """The kernels' (STR_H, STR_W, PAD_T, PAD_L, DIL_H, DIL_W): bottom/right padding only shows in Ho, Wo."""
    return (int(stride[0]), int(stride[1]), int(padding[0]), int(padding[2]), int(dilation[0]), int(dilation[1]))


def acc_dtype(dtype: torch.dtype):
    """The accumulator: float32, or float64 for float64 tensors."""
    return tl.float64 if dtype == torch.float64 else tl.float32


def dot_upcast(dtype: torch.dtype) -> bool:
    """Triton's interpreter computes tl.dot on bfloat16 operands wrongly (Triton 3.8): there the
    operands go to float32 first (products of bfloat16 values are exact in float32, so only the
    summation order differs from a bfloat16 tensor-core dot with float32 accumulation)."""
    return dtype == torch.bfloat16 and interpreting()


def dot_precision(dtype: torch.dtype) -> str:
    """tl.dot's input precision: IEEE for float32 (no TF32: results match float32 convolutions
    within the tests' float32 tolerance) and float64; the default (tensor cores) for 16-bit types."""
    return "ieee" if dtype in (torch.float32, torch.float64) else "tf32"


@functools.cache
def num_sms(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def splits(total_rows: int, block: int, other_programs: int, device: torch.device) -> tuple[int, int]:
    """Split a reduction over `total_rows` rows into (count, rows_per_split), rows_per_split a
    multiple of `block`, so that count * other_programs is about 4 programs per SM on a GPU. Under
    the interpreter (CPU tensors) blocks of 16 rows and up to 3 splits: tests then see several."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        want = triton.cdiv(4 * num_sms(index), max(1, other_programs))
    else:
        block, want = 16, 3
    blocks = max(1, triton.cdiv(total_rows, block))
    per = triton.cdiv(blocks, max(1, min(blocks, want)))
    return triton.cdiv(blocks, per), per * block


def autotune_enabled() -> bool:
    """XSEP_TRITON_AUTOTUNE=0 runs every kernel with one fixed configuration (its first) instead of
    autotuning: the GPU tests use it (each autotuned shape would compile and time every configuration)."""
    return os.environ.get("XSEP_TRITON_AUTOTUNE", "1").strip().lower() not in ("0", "false", "no", "off")


def tuned(configs: list[dict], key: list[str], interpret_config: dict, warps: list[tuple[int, int]] | None = None):
    """@triton.jit, plus @triton.autotune over `configs` (each a dict of block sizes, crossed with
    `warps`, a list of (num_warps, num_stages)) when compiling for a GPU. Under the interpreter the
    kernel is never autotuned: it runs `interpret_config` (autotuning would time every configuration
    in the slow interpreter). Launch with `launch(kernel, grid, *args, **constexprs)`."""
    warps = warps or [(4, 3)]

    def decorate(fn):
        kernel = triton.jit(fn)
        if interpreting():
            kernel.xsep_plain, kernel.xsep_plain_config = kernel, dict(interpret_config)
            return kernel
        full = [triton.Config(dict(c), num_warps=w, num_stages=s) for c in configs for w, s in warps]
        tuned_kernel = triton.autotune(configs=full, key=key)(kernel)
        tuned_kernel.xsep_plain = kernel
        tuned_kernel.xsep_plain_config = dict(configs[0], num_warps=warps[0][0], num_stages=warps[0][1])
        # float64 runs the interpreter's small tiles, untuned: in float64 the first configuration's
        # GEMM tiles need 256 KiB of shared memory, past sm_90's 227 KiB a block (the likely cause
        # of the float64 GEMM tests' failures on an H200), and float64 is for exactness, not speed.
        tuned_kernel.xsep_float64_config = dict(interpret_config)
        return tuned_kernel

    return decorate


def launch(kernel, grid, *args, **kwargs) -> None:
    """Runs `kernel`: autotuned on a GPU, else (interpreter, XSEP_TRITON_AUTOTUNE=0) with its fixed
    configuration. `grid` is a function of the chosen meta-parameters."""
    if kernel.xsep_plain is not kernel and autotune_enabled() and kwargs.get("ACC") != tl.float64:
        kernel[grid](*args, **kwargs)
        return
    float64 = kwargs.get("ACC") == tl.float64 and kernel.xsep_plain is not kernel
    config = kernel.xsep_float64_config if float64 else kernel.xsep_plain_config
    kernel.xsep_plain[lambda meta: grid(config)](*args, **kwargs, **config)


def alignment(counts=(), tensors=(), strides=()) -> int:
    """The ALIGN constexpr of a launch: the largest of 8, 4, 2, 1 that divides every channel count in
    `counts`, every batch and spatial stride of the 4-D `tensors` (of dimensions longer than 1) and
    every stride in `strides` other than 1 (a unit stride is a contiguous dimension). The kernels then
    tell the compiler that pixel row offsets are multiples of ALIGN and that channel masks are
    constant over aligned groups of ALIGN channels, which lets it vectorise channels_last loads
    (Triton's own specialisation only knows multiples of 16, and 728 channels are not one)."""
    values = list(counts) + [s for s in strides if s != 1]
    for t in tensors:
        values += [t.stride(d) for d in (0, 2, 3) if t.shape[d] > 1]
    for a in (8, 4, 2):
        if all(v % a == 0 for v in values):
            return a
    return 1


def taps_major(weight: torch.Tensor) -> torch.Tensor:
    """A depthwise weight [CM, 1, KH, KW] as the kernels read it: [KH*KW, CM] contiguous, in the
    accumulation dtype (float32; float64 for float64), so that a tap's weights for a block of
    channels are one contiguous, aligned vector (see tap_weights). Exact: the kernels converted each
    weight to the accumulation dtype anyway. A few KB, made once per call."""
    acc = torch.float64 if weight.dtype == torch.float64 else torch.float32
    w = weight.reshape(weight.shape[0], -1)
    return torch.empty((w.shape[1], w.shape[0]), dtype=acc, device=w.device).copy_(w.t())


# Tests set this: every buffer the launchers allocate (outputs, partial sums) starts NaN-filled, so
# an element a kernel fails to write shows up.
poison_buffers = False


def empty(shape, dtype: torch.dtype, device: torch.device, memory_format=torch.contiguous_format) -> torch.Tensor:
    t = torch.empty(shape, dtype=dtype, device=device, memory_format=memory_format)
    if poison_buffers:
        t.fill_(float("nan"))
    return t


def new_like_format(like: torch.Tensor, shape, dtype=None) -> torch.Tensor:
    """An output in `like`'s suggested memory format (channels_last in, channels_last out)."""
    from torch._prims_common import suggest_memory_format

    return empty(shape, dtype or like.dtype, like.device, suggest_memory_format(like))


# --------------------------------------------------------------------------------------------------
# Device functions


@triton.jit
def mid_act(x, ACT: tl.constexpr):
    if ACT == RELU:
        x = tl.maximum(x, 0.0)
    elif ACT == RELU6:
        x = tl.minimum(tl.maximum(x, 0.0), 6.0)
    elif ACT == ELU:
        x = tl.where(x > 0, x, tl.exp(tl.minimum(x, 0.0)) - 1.0)
    return x


@triton.jit
def mid_act_grad(g, x, ACT: tl.constexpr):
    """g * act'(x), with PyTorch's choices at the kinks (relu: 0 at 0; relu6: 0 at 0 and 6; elu: 1 at 0)."""
    if ACT == RELU:
        g = tl.where(x > 0, g, 0.0)
    elif ACT == RELU6:
        g = tl.where((x > 0) & (x < 6.0), g, 0.0)
    elif ACT == ELU:
        g = tl.where(x > 0, g, g * tl.exp(tl.minimum(x, 0.0)))
    return g


@triton.jit
def aligned(offsets, ALIGN: tl.constexpr):
    """Offsets that are each a multiple of ALIGN (the launcher checked the strides they come from:
    see alignment()), rewritten as (offsets // ALIGN) * ALIGN so that the compiler can prove it and
    vectorise the channel loads beside them. (tl.multiple_of hints are lost across the inlining of
    helper functions; this arithmetic is not.) Never for contiguous index vectors."""
    if ALIGN > 1:
        offsets = (offsets // ALIGN) * ALIGN
    return offsets


@triton.jit
def channel_mask(k, count, ALIGN: tl.constexpr):
    """k < count, hinted constant over groups of ALIGN channels (count is a multiple of ALIGN)."""
    mask = k < count
    if ALIGN > 1:
        mask = tl.max_constancy(mask, [ALIGN])
    return mask


@triton.jit
def gemm_tile(N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """(row indices [BLOCK_M], column indices [BLOCK_N]) of this program's output tile in a 1-D grid
    of cdiv(rows, BLOCK_M) * cdiv(N, BLOCK_N) programs whose column tiles vary fastest: the programs
    that read the same row tile of A (the input's pixels) run side by side, so that tile comes from
    DRAM once and from L2 for the other column tiles. (With row tiles fastest, an A larger than L2,
    67 MB for 19x19x728 bf16 at batch 128 against H100's 50 MB, is read from DRAM once per column
    tile.) Row-tile counts stay within the 2^31 - 1 programs of grid axis 0."""
    n_tiles = tl.cdiv(N, BLOCK_N)
    pid = tl.program_id(0)
    row_tile = pid // n_tiles
    col_tile = pid - row_tile * n_tiles
    return row_tile * BLOCK_M + tl.arange(0, BLOCK_M), col_tile * BLOCK_N + tl.arange(0, BLOCK_N)


def gemm_grid(rows: int, cols: int):
    """The launch grid of kernels that place their tiles with gemm_tile."""
    return lambda meta: (triton.cdiv(rows, meta["BLOCK_M"]) * triton.cdiv(cols, meta["BLOCK_N"]),)


@triton.jit
def pixel_coords(p, HW, W):
    """(n, h, w) of flat pixel indices p = (n * H + h) * W + w, in 32 bits like p (the grid's pixel
    indices are int32): 32-bit division by a run-time divisor is inline code, where 64-bit division
    is a subroutine call per element (the CALLs the report counted in the kernels' pixel loops)."""
    n = p // HW
    r = p - n * HW
    h = r // W
    return n, h, r - h * W


@triton.jit
def row_offsets(n, h, w, sn, sh, sw):
    """Offsets (int64) of pixels (n, h, w) in a tensor with strides sn, sh, sw."""
    return n.to(tl.int64) * sn + h.to(tl.int64) * sh + w.to(tl.int64) * sw


@triton.jit
def pixel_offsets(p, HW, W, sn, sh, sw):
    """Row offsets (int64) of flat pixel indices p = (n * H + h) * W + w in a tensor with strides sn, sh, sw."""
    n, h, w = pixel_coords(p, HW, W)
    return row_offsets(n, h, w, sn, sh, sw)


@triton.jit
def split_rows(split, ROWS_PER_SPLIT, P):
    """The rows [start, end) of reduction split `split` out of P rows (the launcher sized the splits:
    see splits())."""
    start = split * ROWS_PER_SPLIT
    return start, tl.minimum(start + ROWS_PER_SPLIT, P)


@triton.jit
def input_channel(k, M: tl.constexpr):
    """The input channel of depthwise output channel k (k // M), written so that for M == 1 the
    compiler still sees k's contiguity (vectorised channels_last loads)."""
    if M == 1:
        c = k
    else:
        c = k // M
    return c


@triton.jit
def tap_weights(w_ptr, tap, CM, k, k_mask, ALIGN: tl.constexpr):
    """The weights of depthwise output channels k at one tap, from the tap-major weights
    (taps_major()): contiguous along k, the row offset a multiple of ALIGN (CM is), so one vector
    load per group of channels instead of a scalar load per channel (the [CM, 1, KH, KW] weights
    put consecutive channels KH*KW elements apart: scalar 16-bit loads in every tap of the hot loop)."""
    return tl.load(w_ptr + aligned(tap * CM, ALIGN) + k, mask=k_mask, other=0.0)


@triton.jit
def depthwise_tile(x_ptr, w_ptr, p, p_mask, k, k_mask, M: tl.constexpr, CM, H, W, HWo, Wo,
                   sxn, sxc, sxh, sxw,
                   STR_H, STR_W, PAD_T, PAD_L, DIL_H, DIL_W,
                   KH: tl.constexpr, KW: tl.constexpr, RELU_IN: tl.constexpr, ACC: tl.constexpr,
                   ALIGN: tl.constexpr):
    """The depthwise output (pre-bias, pre-activation) for output pixels p [BP] and output channels
    k [BK] (channel k reads input channel k // M), accumulated in ACC: a [BP, BK] tile. w_ptr: the
    weights tap-major (taps_major(): [KH*KW, CM])."""
    n, ho, wo = pixel_coords(p, HWo, Wo)
    h0 = ho * STR_H - PAD_T
    w0 = wo * STR_W - PAD_L
    c_off = input_channel(k, M).to(tl.int64) * sxc
    acc = tl.zeros((p.shape[0], k.shape[0]), dtype=ACC)
    for i in range(KH):
        hi = h0 + i * DIL_H
        h_ok = p_mask & (hi >= 0) & (hi < H)
        for j in range(KW):
            wi = w0 + j * DIL_W
            ok = h_ok & (wi >= 0) & (wi < W)
            rows = aligned(row_offsets(n, hi, wi, sxn, sxh, sxw), ALIGN)
            xv = tl.load(x_ptr + rows[:, None] + c_off[None, :], mask=ok[:, None] & k_mask[None, :],
                         other=0.0).to(ACC)
            if RELU_IN:
                xv = tl.maximum(xv, 0.0)
            acc += xv * tap_weights(w_ptr, i * KW + j, CM, k, k_mask, ALIGN).to(ACC)[None, :]
    return acc


@triton.jit
def dot_operand(x, like, UPCAST: tl.constexpr):
    """x in the dtype of `like` (a tensor of the input dtype), the operand of a tensor-core tl.dot."""
    x = x.to(like.dtype)
    if UPCAST:
        x = x.to(tl.float32)
    return x
