"""xsep.testing, the rule every backend is judged by: the tolerance numbers, NaN handling, and that
the harness catches a wrong, a NaN-producing and an input-modifying implementation (a harness
that passes everything would make every comparison test meaningless)."""

from __future__ import annotations

import math

import pytest
import torch

from xsep.ops import reference
from xsep.testing import (
    FIXED_TOLERANCE,
    LOW_PRECISION_FLOOR,
    TENSOR_NAMES,
    assert_matches_reference,
    check_against_reference,
    reference_results,
    rel_error,
    tolerance,
)


def test_tolerance_numbers():
    # The project's standard: fixed for float32/float64, twice PyTorch's own error plus an eighth
    # of epsilon at low precision.
    assert FIXED_TOLERANCE == {torch.float64: 1e-12, torch.float32: 1e-5}
    assert tolerance(torch.float32) == tolerance(torch.float32, 0.5) == 1e-5
    assert tolerance(torch.float64) == 1e-12
    for dtype in (torch.bfloat16, torch.float16):
        assert LOW_PRECISION_FLOOR[dtype] == torch.finfo(dtype).eps / 8
        assert tolerance(dtype, 1e-3) == 2e-3 + torch.finfo(dtype).eps / 8


@pytest.mark.parametrize("torch_error", [None, math.inf, math.nan])
def test_low_precision_needs_a_finite_torch_error(torch_error):
    # Without PyTorch's own error there is no low-precision tolerance; an infinite one would let
    # anything pass.
    with pytest.raises(ValueError, match="PyTorch's own"):
        tolerance(torch.bfloat16, torch_error)


def test_rel_error():
    r = torch.tensor([3.0, 4.0], dtype=torch.float64)
    assert rel_error(torch.tensor([3.0, 4.5]), r) == pytest.approx(0.1)
    assert rel_error(torch.tensor([0.5, 0.0]), torch.zeros(2)) == 0.5  # the absolute error for a zero reference
    with pytest.raises(ValueError, match="shapes"):
        rel_error(torch.zeros(3), r)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_results_never_pass(bad):
    # A NaN or an infinity anywhere is the worst error there is: inf, above every tolerance and
    # the maximum of any list of errors (a NaN would silently lose a max()).
    r = torch.ones(4, dtype=torch.float64)
    a = r.clone()
    a[2] = bad
    assert rel_error(a, r) == math.inf
    assert max([rel_error(r, r), rel_error(a, r)]) == math.inf
    with pytest.raises(AssertionError, match="relative error inf"):
        assert_matches_reference({"output": a}, {"output": r}, torch.float64)
    with pytest.raises(ValueError, match="reference"):
        rel_error(r, a)


def _depthwise_case(dtype):
    x = torch.randn(2, 3, 6, 5, dtype=torch.float64).to(dtype)
    w = torch.randn(3, 1, 3, 3, dtype=torch.float64).to(dtype)
    b = torch.randn(3, dtype=torch.float64).to(dtype)

    def ref(x, w, b):
        return reference.depthwise_conv2d(x, w, b, (1, 1), (1, 1, 1, 1), (1, 1), "relu")
    return ref, [x, w, b]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
def test_reference_passes_its_own_check(dtype):
    # The torch backend at any dtype is within tolerance (at low precision it *is* PyTorch's own
    # error), and every result is returned.
    ref, inputs = _depthwise_case(dtype)
    got = check_against_reference(ref, ref, inputs, TENSOR_NAMES["depthwise_conv2d"])
    assert set(got) == {"output", "grad_input", "grad_weight", "grad_bias"}
    assert got["output"].dtype == dtype


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_wrong_gradient_is_caught(dtype):
    # A weight gradient 3x PyTorch's own error off (bf16) or 1e-4 off (float32) fails, naming it.
    ref, inputs = _depthwise_case(dtype)
    scale = 1 + (1e-4 if dtype == torch.float32 else 0.05)

    class Scaled(torch.autograd.Function):  # the forward exact, the gradient reaching w scaled
        @staticmethod
        def forward(ctx, w):
            return w.clone()

        @staticmethod
        def backward(ctx, g):
            return g * scale

    with pytest.raises(AssertionError, match="grad_weight: relative error") as failure:
        check_against_reference(lambda x, w, b: ref(x, Scaled.apply(w), b), ref, inputs, TENSOR_NAMES["depthwise_conv2d"])
    assert "output" not in str(failure.value) and "grad_input" not in str(failure.value)


def test_a_nan_output_is_caught():
    ref, inputs = _depthwise_case(torch.float32)

    def with_a_nan(x, w, b):
        y = ref(x, w, b)
        return torch.where(torch.arange(y.numel()).view(y.shape) == 7, torch.nan, y)

    with pytest.raises(AssertionError, match="output: relative error inf"):
        check_against_reference(with_a_nan, ref, inputs, TENSOR_NAMES["depthwise_conv2d"])


def test_a_modified_input_is_caught():
    ref, inputs = _depthwise_case(torch.float32)

    def relu_in_place(x, w, b):
        y = ref(x, w, b)
        with torch.no_grad():
            x.clamp_(min=0)
        return y

    with pytest.raises(AssertionError, match="input was modified"):
        check_against_reference(relu_in_place, ref, inputs, TENSOR_NAMES["depthwise_conv2d"])


def test_reference_results_at_low_precision():
    # The expected results in float64, PyTorch's own at the dtype, from the same values.
    ref, inputs = _depthwise_case(torch.bfloat16)
    go = torch.randn(2, 3, 6, 5, dtype=torch.float64)
    want, torch_at_dtype = reference_results(ref, inputs, torch.bfloat16, TENSOR_NAMES["depthwise_conv2d"], go)
    assert all(t.dtype == torch.float64 for t in want.values())
    assert all(t.dtype == torch.bfloat16 for t in torch_at_dtype.values())
    assert 0 < rel_error(torch_at_dtype["output"], want["output"]) < 0.05
    assert reference_results(ref, inputs, torch.float32, TENSOR_NAMES["depthwise_conv2d"])[1] is None
