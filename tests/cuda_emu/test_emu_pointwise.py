"""The CUDA pointwise GEMM (csrc/cuda/pointwise_conv2d_kernels.cu) run on the CPU by the emulator
(tests/cuda_emu, no GPU needed) against a float64 matmul: the tensor-core path (float16, bfloat16:
ldmatrix and mma.sync, emulated from the PTX ISA's fragment layouts) and the FMA path (float32,
float64), over the operand layouts the pointwise ops use, with shapes past a tile edge in every
dimension, and the split-K reduction of the weight gradient. Outputs start NaN-filled."""

from __future__ import annotations

import pytest
import torch

from xsep.testing import assert_matches_reference, reference_results

f32, f64, bf16, f16 = torch.float32, torch.float64, torch.bfloat16, torch.float16


def _operands(layout: str, m: int, n: int, k: int, dtype: torch.dtype, row_pad: int = 0):
    """A [M, K] and B [K, N] laid out as the pointwise ops pass them (see pointwise_conv2d_cuda.cpp):
    forward X . W^T (A and B k-contiguous), grad input GY . W (B n-contiguous), grad weight
    GY^T . X (A m-contiguous)."""
    def randn(*shape):  # row_pad: rows longer than the matrix (a view), as for a sliced tensor
        return torch.randn(shape[0], shape[1] + row_pad).to(dtype)[:, :shape[1]]

    if layout == "forward":
        return randn(m, k), randn(n, k).t()
    if layout == "grad_input":
        return randn(m, k), randn(k, n)
    if layout == "grad_weight":
        return randn(k, m).t(), randn(k, n)
    raise ValueError(layout)


def _check(got, dtype, a, b, bias=None):
    """`got` against a . b + bias in float64 (PyTorch's own error: the same at dtype)."""
    want, torch_at_dtype = reference_results(lambda a, b, bias: a @ b + (0 if bias is None else bias),
                                             [a, b, bias], dtype, ["a", "b", "bias"])
    assert_matches_reference({"output": got}, want, dtype, torch_at_dtype)


# (M, N, K). Tensor-core blocks are 128 x 64 with K steps of 32, FMA blocks 64 x 64 with K steps
# of 16: "edges" crosses a tile edge in every dimension, "short" has K within one step (so a tile
# part a kernel does not stage would keep the poison shared memory starts with).
# "vectors": K a multiple of 16 bytes, so the k-contiguous operands are staged 16 bytes at a time;
# "padded": rows of 56 elements (16-byte aligned) holding K = 45, so the last vector of a row is cut.
# The epilogue stores rows of 2 (tensor cores) or 4 (FMA) outputs as one vector when N is a multiple
# of that, else element by element: "odd" has an odd N (rows alternately aligned), "rows" an N that
# is a multiple of 4 but not of a tile, with M past a tile edge.
TC_SHAPES = {"edges": (130, 72, 37), "short": (17, 9, 20), "vectors": (130, 72, 48), "padded": (70, 9, 45),
             "odd": (131, 67, 40), "rows": (131, 68, 40)}
FMA_SHAPES = {"edges": (70, 66, 37), "short": (17, 9, 7), "vectors": (70, 66, 48), "padded": (70, 9, 45),
              "odd": (67, 67, 20), "rows": (67, 68, 20)}
SHAPES = {f16: TC_SHAPES, bf16: TC_SHAPES, f32: FMA_SHAPES, f64: FMA_SHAPES}


@pytest.mark.parametrize("shape", ["edges", "short", "vectors", "padded", "odd", "rows"])
@pytest.mark.parametrize("layout", ["forward", "grad_input", "grad_weight"])
@pytest.mark.parametrize("dtype", [bf16, f16, f32, f64], ids=lambda d: str(d).removeprefix("torch."))
def test_gemm_matches_reference(emu, dtype, layout, shape):
    m, n, k = SHAPES[dtype][shape]
    a, b = _operands(layout, m, n, k, dtype, row_pad=11 if shape == "padded" else 0)
    bias = torch.randn(n, dtype=f64) if layout == "forward" else None  # only the forward has one
    acc = f64 if dtype == f64 else f32
    got = emu.pointwise_gemm(a, b, None if bias is None else bias.to(acc))
    assert got.dtype == dtype
    _check(got, dtype, a, b, bias)


# (M, N): the weight gradient's out x in channels; N = 70 spans two FMA tiles.
SPLIT_SHAPES = {f16: (20, 24), bf16: (20, 24), f32: (20, 70), f64: (20, 70)}


@pytest.mark.parametrize("dtype", [bf16, f16, f32, f64], ids=lambda d: str(d).removeprefix("torch."))
def test_split_k_matches_reference(emu, dtype):
    m, n = SPLIT_SHAPES[dtype]
    k = 4100  # pixels: just past one split's 4096
    assert emu.gemm_k_splits(m, n, k) == 2
    a, b = _operands("grad_weight", m, n, k, dtype)
    got = emu.pointwise_gemm_split_k(a, b)
    assert got.dtype == (f64 if dtype == f64 else f32)
    _check(got, dtype, a, b)
