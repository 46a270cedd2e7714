"""The registered operators torch.ops.xsep.* of the compiled library, called directly: numerical
gradients, torch.library.opcheck (schemas, fake kernels, autograd registration, AOT dispatch),
fake/real agreement, determinism and empty batches. Native only: every test skips, saying why, when
the library does not load (or fails under XSEP_REQUIRE_NATIVE=1)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import torch
from helpers import at_one_and_two_threads, fused_products_on_xsep, intra_op_threads, memory_format_of, require_native

from xsep.ops import reference
from xsep.testing import assert_matches_reference, check_against_reference, reference_results, rel_error

pytestmark = pytest.mark.usefixtures("native")

# Normalised geometry used throughout: stride 2 x 1, asymmetric padding, dilation 1 x 2.
STRIDE, PADDING, DILATION = (2, 1), (1, 0, 2, 1), (1, 2)


def ops():
    return torch.ops.xsep


def away_from_zero(*size, margin=0.1, dtype=torch.float64):
    """Random values with |v| >= margin: relu's kink at 0 is out of reach of gradcheck's
    perturbations (eps = 1e-6)."""
    v = torch.randn(*size, dtype=dtype)
    return torch.where(v < 0, v - margin, v + margin)


def separable_inputs(n=2, c=3, h=6, w=5, m=2, o=4, *, input_activation="none", mid_activation="none",
                     dtype=torch.float64, requires_grad=False, depthwise_bias=False):
    """(input, depthwise_weight, pointwise_weight, bias[, depthwise_bias]) for the fused op, with the
    depthwise output (where the mid activation applies) at least 1e-3 away from the activation's
    kinks (0, and 6 for relu6) and spread across them (relu6: values below 0, in (0, 6) and above 6)."""
    for _ in range(100):
        x = away_from_zero(n, c, h, w, dtype=dtype)
        dw = torch.randn(c * m, 1, 3, 3, dtype=dtype) * (2.5 if mid_activation == "relu6" else 1.0)
        pw = torch.randn(o, c * m, 1, 1, dtype=dtype)
        bias = torch.randn(o, dtype=dtype)
        dw_bias = 2 * torch.randn(c * m, dtype=dtype) if depthwise_bias else None
        mid = reference.depthwise_conv2d(x, dw, dw_bias, STRIDE, PADDING, DILATION, input_activation)
        kinks = {"none": [], "relu": [0.0], "relu6": [0.0, 6.0], "elu": []}[mid_activation]
        if all((mid - k).abs().min() > 1e-3 for k in kinks) and (
                mid_activation != "relu6" or ((mid < 0).any() and (mid > 6).any())):
            break
    else:
        raise AssertionError("could not draw inputs away from the activation's kinks")
    return [t.requires_grad_(requires_grad) for t in (x, dw, pw, bias, dw_bias) if t is not None]


def depthwise_inputs(n=2, c=3, h=6, w=5, m=2, dtype=torch.float64, requires_grad=False):
    x = away_from_zero(n, c, h, w, dtype=dtype)
    weight = torch.randn(c * m, 1, 3, 3, dtype=dtype)
    bias = torch.randn(c * m, dtype=dtype)
    return [t.requires_grad_(requires_grad) for t in (x, weight, bias)]


def pointwise_inputs(n=2, c=3, h=4, w=5, o=4, dtype=torch.float64, requires_grad=False):
    return [torch.randn(*s, dtype=dtype).requires_grad_(requires_grad) for s in ((n, c, h, w), (o, c, 1, 1), (o,))]


def _depthwise_out_shape(x, weight):
    n, c, h, w = x.shape
    kh, kw = weight.shape[2:]
    ho = (h + PADDING[0] + PADDING[1] - DILATION[0] * (kh - 1) - 1) // STRIDE[0] + 1
    wo = (w + PADDING[2] + PADDING[3] - DILATION[1] * (kw - 1) - 1) // STRIDE[1] + 1
    return n, weight.shape[0], ho, wo


# --------------------------------------------------------------------------------------------------
# Numerical gradients


@pytest.mark.parametrize("input_activation", ["none", "relu"])
def test_gradcheck_depthwise(input_activation):
    # Autograd of depthwise_conv2d (its backward op for both gradients, and the bias sum) against
    # finite differences, with and without the input relu (inputs kept away from 0).
    x, weight, bias = depthwise_inputs(requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, w, b: ops().depthwise_conv2d(x, w, b, STRIDE, PADDING, DILATION, input_activation),
        (x, weight, bias))


def test_gradcheck_pointwise():
    # Autograd of pointwise_conv2d (grad_input / grad_weight ops, bias sum) against finite differences.
    assert torch.autograd.gradcheck(ops().pointwise_conv2d, tuple(pointwise_inputs(requires_grad=True)))


@pytest.mark.parametrize("input_activation, mid_activation",
                         [("none", "none"), ("relu", "relu"), ("none", "relu6"), ("relu", "elu"), ("relu", "none")])
def test_gradcheck_separable(input_activation, mid_activation):
    # Autograd of the fused op (its one-pass separable_conv2d_backward) against finite differences,
    # for each mid activation (inputs drawn away from its kinks) and the input relu.
    tensors = separable_inputs(input_activation=input_activation, mid_activation=mid_activation,
                               requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, dw, pw, b: ops().separable_conv2d(x, dw, pw, b, STRIDE, PADDING, DILATION,
                                                    input_activation, mid_activation),
        tuple(tensors))


@pytest.mark.parametrize("mid_activation", ["none", "relu6", "elu"])
def test_gradcheck_separable_depthwise_bias(mid_activation):
    # The depthwise bias (before the mid activation): its gradient comes from the same fused backward.
    tensors = separable_inputs(input_activation="relu", mid_activation=mid_activation, requires_grad=True,
                               depthwise_bias=True)
    assert torch.autograd.gradcheck(
        lambda x, dw, pw, b, db: ops().separable_conv2d(x, dw, pw, b, STRIDE, PADDING, DILATION, "relu",
                                                        mid_activation, db),
        tuple(tensors))


def test_gradcheck_channels_last():
    # The same through channels_last inputs (the kernels' native layout; gradients come back in it).
    x, dw, pw, b = separable_inputs(mid_activation="elu")
    x = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x, dw, pw, b: ops().separable_conv2d(x, dw, pw, b, STRIDE, PADDING, DILATION, "relu", "elu"),
        (x, dw.requires_grad_(), pw.requires_grad_(), b.requires_grad_()))


# --------------------------------------------------------------------------------------------------
# opcheck: every op, backward ops included


def _opcheck_cases():
    """(op name, args builder) for every op in the library; builders run inside the test (seeded)."""
    def dw_fwd(act):
        def build():
            x, w, b = depthwise_inputs(requires_grad=True)
            return (x, w, b, STRIDE, PADDING, DILATION, act)
        return build

    def dw_bwd():
        x, w, _ = depthwise_inputs(requires_grad=True)
        go = torch.randn(_depthwise_out_shape(x, w), dtype=x.dtype, requires_grad=True)
        return (go, x, w, STRIDE, PADDING, DILATION, "relu")

    def pw_fwd():
        return tuple(pointwise_inputs(requires_grad=True))

    def pw_bwd():
        x, w, _ = pointwise_inputs(requires_grad=True)
        return (torch.randn(x.shape[0], w.shape[0], *x.shape[2:], dtype=x.dtype, requires_grad=True), x, w)

    def sep_fwd(in_act, mid_act):
        def build():
            x, dw, pw, b = separable_inputs(input_activation=in_act, mid_activation=mid_act, requires_grad=True)
            return (x, dw, pw, b, STRIDE, PADDING, DILATION, in_act, mid_act)
        return build

    def sep_bwd():
        x, dw, pw, _ = separable_inputs(input_activation="relu", mid_activation="relu6", requires_grad=True)
        n, _, ho, wo = _depthwise_out_shape(x, dw)
        go = torch.randn(n, pw.shape[0], ho, wo, dtype=x.dtype, requires_grad=True)
        return (go, x, dw, pw, STRIDE, PADDING, DILATION, "relu", "relu6")

    def sep_fwd_dw_bias():
        x, dw, pw, b, db = separable_inputs(mid_activation="relu6", requires_grad=True, depthwise_bias=True)
        return (x, dw, pw, b, STRIDE, PADDING, DILATION, "none", "relu6", db)

    def sep_bwd_dw_bias():
        go, x, dw, pw, *rest = sep_bwd()
        return (go, x, dw, pw, *rest, torch.randn(dw.shape[0], dtype=x.dtype, requires_grad=True))

    return [
        ("depthwise_conv2d", "relu", dw_fwd("relu")),
        ("depthwise_conv2d", "none", dw_fwd("none")),
        ("depthwise_conv2d_grad_input", "relu", dw_bwd),
        ("depthwise_conv2d_grad_weight", "relu", dw_bwd),
        ("depthwise_conv2d_backward", "relu", dw_bwd),
        ("pointwise_conv2d", "", pw_fwd),
        ("pointwise_conv2d_grad_input", "", pw_bwd),
        ("pointwise_conv2d_grad_weight", "", pw_bwd),
        ("separable_conv2d", "relu-relu6", sep_fwd("relu", "relu6")),
        ("separable_conv2d", "none-elu", sep_fwd("none", "elu")),
        ("separable_conv2d_backward", "relu-relu6", sep_bwd),
        ("separable_conv2d", "depthwise-bias", sep_fwd_dw_bias),
        ("separable_conv2d_backward", "depthwise-bias", sep_bwd_dw_bias),
    ]


OPCHECK_CASES = _opcheck_cases()


def _is_backward_op(name: str) -> bool:
    return "grad" in name or "backward" in name


@pytest.mark.parametrize("name, build", [pytest.param(n, b, id=f"{n}-{v}" if v else n) for n, v, b in OPCHECK_CASES])
def test_opcheck(name, build):
    # torch.library.opcheck with its default checks: the schema matches what the kernel does (no
    # hidden mutation or aliasing), the fake kernel agrees with the real one, autograd is
    # registered at the autograd key (not in the CPU kernel), and AOT autograd can trace the op
    # with dynamic shapes (what torch.compile relies on). The backward ops have no derivative
    # (their autograd formula raises, see below), so they are checked with inputs that do not
    # require grad.
    args = build()
    if _is_backward_op(name):
        args = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)
    torch.library.opcheck(getattr(ops(), name).default, args)


@pytest.mark.parametrize("name, build", [pytest.param(n, b, id=f"{n}-{v}" if v else n) for n, v, b in OPCHECK_CASES
                                          if _is_backward_op(n)])
def test_backward_ops_run_below_autograd(name, build):
    # The backward ops get inputs that require grad whenever a user asks for create_graph=True
    # (gradient penalties) or calls them directly. Their kernels must then neither fail inside
    # (ATen's out= ops refuse inputs that require grad) nor record autograd history of their
    # internal steps (a silently wrong second derivative): a C++ kernel that calls ATen ops needs
    # an at::AutoDispatchBelowADInplaceOrView guard. Backpropagating through them must raise a
    # clear error (xsep has no double backward), never yield missing or wrong gradients.
    outputs = getattr(ops(), name)(*build())
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    for i, t in enumerate(outputs):
        assert t.grad_fn is not None, f"output {i} is detached from its inputs"
        assert not any(word in t.grad_fn.name() for word in ("Mm", "Addmm", "Clone", "View", "Copy")), (
            f"output {i} records autograd through the kernel's internals ({t.grad_fn.name()})")
    with pytest.raises(RuntimeError, match="double backward"):
        sum(t.sum() for t in outputs).backward()


FAKE_CHECK_CASES = {n: b for n, v, b in OPCHECK_CASES if v in ("relu", "", "relu-relu6")}  # one per op


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("name", list(FAKE_CHECK_CASES))
def test_fake_kernel_strides_match(name, layout):
    # The fake (meta) kernels promise the real kernels' memory formats (outputs and input
    # gradients follow the input, weight gradients are contiguous): compiled graphs rely on it.
    args = [a.detach() if isinstance(a, torch.Tensor) else a for a in FAKE_CHECK_CASES[name]()]
    if layout == "channels_last":  # the input, and grad_output for the backward ops
        for i in (0, 1) if ("grad" in name or "backward" in name) else (0,):
            args[i] = args[i].contiguous(memory_format=torch.channels_last)
    real = getattr(ops(), name)(*args)
    fake = getattr(ops(), name)(*[a.to("meta") if isinstance(a, torch.Tensor) else a for a in args])
    real, fake = (t if isinstance(t, tuple) else (t,) for t in (real, fake))
    for r, f in zip(real, fake):
        assert (r.shape, r.dtype, _strides(r)) == (f.shape, f.dtype, _strides(f))


def _strides(t):
    """Strides of the dimensions that have more than one element (the others' are arbitrary)."""
    return tuple(s if n > 1 else None for s, n in zip(t.stride(), t.shape))


# --------------------------------------------------------------------------------------------------
# Determinism


def _all_results(dtype=torch.float32, n=4, c=16, h=33, w=30, m=2, o=24):
    """Every op's output (forward and backward ops) on one fixed, largish problem: enough rows and
    pixels that the work is split into many chunks and tiles."""
    x = torch.randn(n, c, h, w, dtype=dtype)
    dw = torch.randn(c * m, 1, 3, 3, dtype=dtype)
    pw = torch.randn(o, c * m, 1, 1, dtype=dtype)
    pw1 = torch.randn(o, c, 1, 1, dtype=dtype)
    b = torch.randn(c * m, dtype=dtype)
    geometry = ((1, 1), (1, 1, 1, 1), (1, 1))
    y_dw = ops().depthwise_conv2d(x, dw, b, *geometry, "relu")
    y_sep = ops().separable_conv2d(x, dw, pw, None, *geometry, "relu", "relu6")
    y_pw = ops().pointwise_conv2d(x, pw1, None)
    g_dw, g_sep, g_pw = (torch.randn_like(y) for y in (y_dw, y_sep, y_pw))
    sep_grads = ops().separable_conv2d_backward(g_sep, x, dw, pw, *geometry, "relu", "relu6", b)
    dw_grads = ops().depthwise_conv2d_backward(g_dw, x, dw, *geometry, "relu")
    # Channels-last weight gradients go through another product (csrc/cpu/host.h, addmm_tn_fixed_order).
    x_cl, g_pw_cl, g_sep_cl, g_dw_cl = (t.to(memory_format=torch.channels_last) for t in (x, g_pw, g_sep, g_dw))
    sep_grads_cl = ops().separable_conv2d_backward(g_sep_cl, x_cl, dw, pw, *geometry, "relu", "relu6", b)
    # Channels-last depthwise gradients come from one pass over its chunks (csrc/cpu/host.h).
    dw_grads_cl = ops().depthwise_conv2d_backward(g_dw_cl, x_cl, dw, *geometry, "relu")
    return {
        "depthwise_conv2d": y_dw,
        "separable_conv2d": y_sep,
        "pointwise_conv2d": y_pw,
        "depthwise_conv2d_grad_input": ops().depthwise_conv2d_grad_input(g_dw, x, dw, *geometry, "relu"),
        "pointwise_conv2d_grad_input": ops().pointwise_conv2d_grad_input(g_pw, x, pw1),
        "separable_conv2d_backward[grad_input]": sep_grads[0],
        "depthwise_conv2d_grad_weight": ops().depthwise_conv2d_grad_weight(g_dw, x, dw, *geometry, "relu"),
        "depthwise_conv2d_backward[grad_input]": dw_grads[0],
        "depthwise_conv2d_backward[grad_weight]": dw_grads[1],
        "pointwise_conv2d_grad_weight": ops().pointwise_conv2d_grad_weight(g_pw, x, pw1),
        "separable_conv2d_backward[grad_depthwise_weight]": sep_grads[1],
        "separable_conv2d_backward[grad_pointwise_weight]": sep_grads[2],
        "separable_conv2d_backward[grad_depthwise_bias]": sep_grads[3],
        "pointwise_conv2d_grad_weight[channels_last]": ops().pointwise_conv2d_grad_weight(g_pw_cl, x_cl, pw1),
        "separable_conv2d_backward[channels_last grad_pointwise_weight]": sep_grads_cl[2],
        "depthwise_conv2d_backward[channels_last grad_input]": dw_grads_cl[0],
        "depthwise_conv2d_backward[channels_last grad_weight]": dw_grads_cl[1],
    }


def _seeded_results(**kwargs):
    torch.manual_seed(0)
    return _all_results(**kwargs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
def test_deterministic_across_runs(dtype):
    # The same inputs twice give bitwise-identical outputs and gradients (no atomics, no
    # order-dependent reductions): training runs reproduce.
    first, second = _seeded_results(dtype=dtype), _seeded_results(dtype=dtype)
    different = [k for k in first if not torch.equal(first[k], second[k])]
    assert not different, f"not bitwise reproducible: {different}"


def test_weight_gradients_independent_of_thread_count():
    # Weight gradients are reductions over every pixel; xsep splits them into chunks fixed by the
    # problem, not by the thread count, so 1 and 2 threads give bitwise-identical results. The other
    # results must agree too (to rounding): this is also where the multi-threaded paths of every
    # kernel are checked against the single-threaded ones the rest of the suite uses.
    one, two = at_one_and_two_threads(_seeded_results)
    weight_grads = [k for k in one if "weight" in k]
    assert len(weight_grads) == 8
    different = [k for k in weight_grads if not torch.equal(one[k], two[k])]
    assert not different, f"depend on the thread count: {different}"
    for k in one:
        assert rel_error(two[k], one[k]) <= 1e-6, k


# (N, C, H, O): short fused products, one block of rows or a few (csrc/cpu/separable_conv2d.cpp:
# RowBlocks): 49 rows of 96 channels (one 336-row block: 24 + 25 rows at 2 threads, 24 + 24 + 1 at
# 3) and of 960 (three 24-row blocks: the same), 162 rows of 200 (two 156-row blocks: 84 + 78;
# 60 + 60 + 42); 4096 rows of 64: eight 504-row blocks and a tail, the usual blocks at 2 threads
# (4 or more a thread), one block a thread at 3.
_SHORT_FUSED_PRODUCTS = [(1, 96, 7, 32), (1, 960, 7, 40), (2, 200, 9, 24), (4, 64, 32, 16)]


@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("shape", _SHORT_FUSED_PRODUCTS, ids=lambda s: "x".join(map(str, s)))
def test_short_fused_products_split_evenly_thread_count(shape, threads):
    # Few blocks of rows are shared evenly by the threads (one block each) instead of whole blocks
    # of the usual size: the fused op's output and gradients then match the float64 reference and
    # one thread's; on xsep's products to the bit (blocks start at multiples of the register tile
    # whatever the thread count), on the library's to rounding.
    require_native()
    import xsep.functional as F

    n, c, h, o = shape
    torch.manual_seed(0)
    x = torch.randn(n, c, h, h).to(memory_format=torch.channels_last)
    dw, pw, gy = torch.randn(c, 1, 3, 3), torch.randn(o, c, 1, 1), torch.randn(n, o, h, h)

    def run():
        inputs = [t.clone().requires_grad_() for t in (x, dw, pw)]
        y = F.separable_conv2d(*inputs, padding=1, mid_activation="relu", backend="native")
        return [y, *torch.autograd.grad(y, inputs, gy)]

    with intra_op_threads(1):
        one = run()
    with intra_op_threads(threads):
        many = run()
    inputs = [t.double().requires_grad_() for t in (x, dw, pw)]
    y = reference.separable_conv2d(*inputs, None, (1, 1), (1, 1, 1, 1), (1, 1), "none", "relu")
    expected = [y, *torch.autograd.grad(y, inputs, gy.double())]
    on_xsep = fused_products_on_xsep()
    for got, single, want in zip(many, one, expected):
        assert torch.equal(got, single) if on_xsep else rel_error(got, single) <= 1e-6
        assert rel_error(got, want) <= 1e-5


def _fused_at_one_and(threads, inputs, geometry):
    """The fused op's results (check_against_reference's, the same output gradient each time) for
    `inputs` (input, depthwise weight, pointwise weight, bias, depthwise bias) at 1 thread and at
    `threads`, each checked against the float64 reference."""
    names = ["input", "depthwise_weight", "pointwise_weight", "bias", "depthwise_bias"]

    def run():
        torch.manual_seed(1)
        return check_against_reference(lambda x, dw, pw, b, db: ops().separable_conv2d(x, dw, pw, b, *geometry, db),
                                       lambda x, dw, pw, b, db: reference.separable_conv2d(x, dw, pw, b, *geometry, db),
                                       inputs, names)

    with intra_op_threads(1):
        one = run()
    with intra_op_threads(threads):
        return one, run()


# (N, C, H, O): the NCHW fused op on xsep's products, where each thread takes whole bands of output
# rows in the forward (csrc/cpu/separable_conv2d.cpp: thread_band_rows) and whole images in the
# backward where there are as many as threads: 1024 channels on a 33x33 plane are 3 bands of 11
# rows (512-pixel bands), cut into 4 (9, 9, 9, 6 rows) at 2 threads, and one image (all threads on
# it in the backward); 64 channels on 2 planes of 40x40 are a band each, cut into 3 a plane at 3
# threads, and an image a thread in the backward at 2 threads (all threads on each at 3). 12x12
# planes are small (one group of 4 images side by side, a small weight: still xsep's products):
# a band an image forward (cut into 3 at 3 threads), the group's side-by-side bands backward.
_NCHW_BANDS = [(1, 1024, 33, 8), (2, 64, 40, 16), (4, 32, 12, 16)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("shape", _NCHW_BANDS, ids=lambda s: "x".join(map(str, s)))
def test_nchw_fused_bands_per_thread_thread_count(shape, threads, dtype):
    # Whatever bands and images the thread count gives each thread, the fused op's NCHW output (bias,
    # depthwise bias, relu6 between the halves; bfloat16 through each thread's buffers) and
    # gradients match the float64 reference, and one thread's: on xsep's products to the bit (each
    # output element is one chain over the channels whatever the band; the weight gradients are
    # sums per image, added in image order), on the library's to rounding.
    require_native()
    n, c, h, o = shape
    torch.manual_seed(0)
    inputs = [t.to(dtype) for t in (torch.randn(n, c, h, h), torch.randn(c, 1, 3, 3), torch.randn(o, c, 1, 1),
                                    torch.randn(o), torch.randn(c))]
    geometry = ((1, 1), (1, 1, 1, 1), (1, 1), "none", "relu6")
    one, many = _fused_at_one_and(threads, inputs, geometry)
    on_xsep = fused_products_on_xsep()
    for name in one:
        if on_xsep:
            assert torch.equal(many[name], one[name]), name
        else:  # the library's products may round differently
            assert rel_error(many[name].double(), one[name].double()) <= (1e-6 if dtype == torch.float32 else 1e-2), name


# (N, C, H, W, kernel, stride, padding, input activation, mid activation, O): small NCHW planes
# with a pointwise weight past 128K values, where the float32 fused op on oneDNN runs its halves
# apart (csrc/cpu/separable_conv2d.cpp: nchw_halves_apart): 7x7 planes (a group of 3 images side by
# side for the weight gradient), 10x9 at stride 2 with a 5x5 kernel (5x5 planes), 12x12 planes
# (groups of 2 and 1 images), each activation.
_NCHW_HALVES_APART = [(3, 384, 7, 7, 3, 1, 1, "relu", "none", 400), (4, 512, 10, 9, 5, 2, 2, "none", "relu6", 272),
                      (3, 400, 12, 12, 3, 1, 1, "none", "relu", 384)]


@pytest.mark.parametrize("case", _NCHW_HALVES_APART, ids=lambda c: f"{c[0]}x{c[1]}x{c[2]}x{c[3]}_to{c[9]}")
def test_native_nchw_fused_halves_apart_matches_reference(case):
    # Output and every gradient (bias, depthwise bias) against the float64 reference and at 1 and 3
    # threads; and the path taken: torch's 1x1 convolution and its backward where float32 products
    # run on oneDNN, none elsewhere (XSEP_CPU_GEMM=blas). Named for test_every_cpu_isa's selection,
    # which reruns it under each instruction set.
    require_native()
    n, c, h, w, k, stride, padding, act, mid, o = case
    torch.manual_seed(0)
    inputs = [torch.randn(n, c, h, w), torch.randn(c, 1, k, k), torch.randn(o, c, 1, 1) / c ** 0.5, torch.randn(o),
              torch.randn(c)]
    geometry = ((stride, stride), (padding,) * 4, (1, 1), act, mid)
    one, many = _fused_at_one_and(3, inputs, geometry)
    # The pointwise weight gradient is xsep's fixed-order product; the others follow the depthwise
    # output's gradient, oneDNN's product there (as on the fused bands' library products before).
    assert torch.equal(many["grad_pointwise_weight"], one["grad_pointwise_weight"])
    for name in one:
        assert rel_error(many[name].double(), one[name].double()) <= 1e-6, name
    assert one["output"].is_contiguous()
    x, dw, pw, b, db = (t.clone().requires_grad_() for t in inputs)
    with torch.profiler.profile() as forward:
        y = ops().separable_conv2d(x, dw, pw, b, *geometry, db)
    with torch.profiler.profile() as backward:
        y.backward(torch.randn_like(y))
    apart = "cpu_gemm=onednn" in torch.ops.xsep._build_info()
    assert ("aten::convolution" in {e.name for e in forward.events()}) == apart
    assert ("aten::convolution_backward" in {e.name for e in backward.events()}) == apart


# (N, C, H, W, M, kernel, stride, padding (top, bottom, left, right), dilation, input activation):
# one or many chunks of output rows (csrc/cpu/host.h: depthwise_backward_taps, at least 32 output
# pixels a chunk), stride 2 and 3 (input rows a chunk starts between its output rows), a depth
# multiplier, dilation, asymmetric padding, and padding so tall that the last output rows start
# below the image (their chunks own no input row); in NCHW, blocks of channels (csrc/cpu/
# depthwise_conv2d.cpp: backward_in_nchw): one, or (64x64 planes) several a thread.
_DEPTHWISE_BACKWARD_CASES = [
    (2, 16, 13, 11, 1, 3, 1, (1, 1, 1, 1), 1, "none"),
    (2, 8, 12, 9, 2, 3, 2, (1, 1, 1, 1), 1, "relu"),
    (1, 24, 9, 14, 1, 5, 1, (4, 4, 4, 4), 2, "none"),
    (3, 8, 7, 7, 1, 3, 2, (0, 3, 1, 0), 1, "relu"),
    (1, 5, 7, 20, 1, 3, 3, (0, 0, 1, 1), 1, "none"),
    (4, 32, 33, 30, 1, 3, 1, (1, 1, 1, 1), 1, "relu"),
    (2, 8, 5, 6, 1, 3, 1, (4, 4, 1, 1), 1, "none"),
    (2, 32, 64, 64, 1, 3, 1, (1, 1, 1, 1), 1, "relu"),
]


@pytest.mark.parametrize("layout", ["channels_last", "nchw"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", _DEPTHWISE_BACKWARD_CASES, ids=lambda c: "-".join(map(str, c[:7])))
def test_native_depthwise_backward_matches_reference(case, dtype, layout):
    # depthwise_conv2d_backward (both gradients in one call: what autograd runs when the input and
    # the weight need them; channels-last in one pass over grad_output) against the float64
    # reference, and equal to the bit to what grad_input and grad_weight compute alone.
    n, c, h, w, m, k, stride, padding, dilation, act = case
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x64, wt64 = torch.randn(n, c, h, w, dtype=torch.float64), torch.randn(c * m, 1, k, k, dtype=torch.float64)
    geometry = ((stride, stride), padding, (dilation, dilation), act)
    x = x64.to(dtype).contiguous(memory_format=fmt)
    wt = wt64.to(dtype)
    y = reference.depthwise_conv2d(x64, wt64, None, *geometry)
    go64 = torch.randn_like(y)
    go = go64.to(dtype).contiguous(memory_format=fmt)
    got = dict(zip(("grad_input", "grad_weight"), ops().depthwise_conv2d_backward(go, x, wt, *geometry)))
    want, torch_at_dtype = reference_results(lambda x, wt: reference.depthwise_conv2d(x, wt, None, *geometry),
                                             [x64, wt64], dtype, ["input", "weight"], go64)
    assert_matches_reference(got, want, dtype, torch_at_dtype)
    assert memory_format_of(got["grad_input"]) == memory_format_of(x)
    assert torch.equal(got["grad_input"], ops().depthwise_conv2d_grad_input(go, x, wt, *geometry))
    assert torch.equal(got["grad_weight"], ops().depthwise_conv2d_grad_weight(go, x, wt, *geometry))


# Channels-last float32 pointwise forwards on both sides of the input-channel counts that run as
# oneDNN's 1x1 convolution (gemm.h: kBlasShortForwardK where products run on BLAS, kShortProductK
# and kConvProductMinRows on oneDNN): (N, C, O, H).
_POINTWISE_FORWARD_SHAPES = [(1, 128, 24, 9), (1, 129, 24, 9), (2, 300, 40, 33), (1, 257, 16, 5)]


@pytest.mark.parametrize("shape", _POINTWISE_FORWARD_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_native_pointwise_forward_channels_last_matches_reference(shape):
    n, c, o, h = shape
    x = torch.randn(n, c, h, h).to(memory_format=torch.channels_last)
    weight, bias = torch.randn(o, c, 1, 1), torch.randn(o)
    got = ops().pointwise_conv2d(x, weight, bias)
    expected = torch.nn.functional.conv2d(x.double(), weight.double(), bias.double())
    assert got.is_contiguous(memory_format=torch.channels_last)
    assert rel_error(got, expected) <= 1e-6


@pytest.mark.parametrize("pixels", [16383, 16384], ids=lambda p: f"{p}px")
def test_native_pointwise_grad_input_channels_last_matches_reference(pixels):
    # Float32 channels-last input gradients on both sides of gemm.h's kBlasLongGradInputRows (oneDNN's
    # backward-data primitive from 16384 pixels where products otherwise run on BLAS, Intel; oneDNN
    # throughout where they run on it): the float64 reference's values, in channels_last.
    require_native()
    h, w = (43, 381) if pixels == 16383 else (128, 128)
    gy = torch.randn(1, 24, h, w).to(memory_format=torch.channels_last)
    x = torch.randn(1, 40, h, w).to(memory_format=torch.channels_last)
    weight = torch.randn(24, 40, 1, 1)
    got = ops().pointwise_conv2d_grad_input(gy, x, weight)
    expected = torch.nn.functional.conv_transpose2d(gy.double(), weight.double())
    assert got.is_contiguous(memory_format=torch.channels_last)
    assert rel_error(got, expected) <= 1e-6


def test_native_large_channels_last_outputs_match_reference():
    # Outputs past the stream threshold (32 MiB read and written, csrc/cpu/host.h: stream_output),
    # three calls each: fresh memory (written with ordinary stores) or memory touched before
    # (non-temporal stores), whichever the allocator hands out; the depthwise forward and the fused
    # forward, against float64 references.
    require_native()
    x = torch.randn(1, 64, 260, 260).to(memory_format=torch.channels_last)  # 17.3 MB
    dw, pw = torch.randn(64, 1, 3, 3), torch.randn(64, 64, 1, 1)
    geometry = ([1, 1], [1, 1, 1, 1], [1, 1])
    mid = torch.nn.functional.conv2d(x.double(), dw.double(), None, 1, 1, 1, 64)
    expected = torch.nn.functional.conv2d(mid, pw.double())
    for _ in range(3):
        assert rel_error(ops().depthwise_conv2d(x, dw, None, *geometry, "none"), mid) <= 1e-6
        assert rel_error(ops().separable_conv2d(x, dw, pw, None, *geometry, "none", "none"), expected) <= 1e-6


@pytest.mark.parametrize("plane", [(20, 20), (1, 401)], ids=lambda p: "x".join(map(str, p)))
def test_native_pointwise_grad_input_nchw_matches_reference(plane):
    # Float32 NCHW input gradients on both sides of gemm.h's kOneDnnNchwGradInputMaxPlane (oneDNN's
    # backward-data primitive on planes of at most 400 pixels where products otherwise run on BLAS,
    # Intel; one MKL product per image above; oneDNN throughout where products run on it): the
    # float64 reference's values, contiguous.
    require_native()
    h, w = plane
    gy, x = torch.randn(3, 24, h, w), torch.randn(3, 40, h, w)
    weight = torch.randn(24, 40, 1, 1)
    got = ops().pointwise_conv2d_grad_input(gy, x, weight)
    expected = torch.nn.functional.conv_transpose2d(gy.double(), weight.double())
    assert got.is_contiguous()
    assert rel_error(got, expected) <= 1e-6


# (N, C, O, H, W): pixels K = N*H*W below, at and across the weight product's blocks of 256; output
# rows O in a register tile or several, with tails of every size across the threads' row ranges;
# columns C below a vector, with a partial vector, and across blocks of 256 (csrc/cpu/tn_product_impl.h).
# The last two are wide enough (O * C >= 128 * (O + C), host.h: kTnCopyMinRatio) for NCHW's
# pixel-contiguous operands to be copied into rows for xsep's kernel; the others take BLAS in NCHW.
_WEIGHT_PRODUCT_SHAPES = [(1, 3, 5, 7, 7), (2, 20, 37, 16, 17), (1, 300, 29, 9, 9), (1, 64, 128, 4, 4),
                          (3, 17, 13, 11, 8), (2, 260, 300, 5, 5), (1, 256, 256, 16, 17)]


@pytest.mark.parametrize("layout", ["channels_last", "nchw"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("shape", _WEIGHT_PRODUCT_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_native_pointwise_grad_weight_matches_reference(shape, dtype, layout):
    n, c, o, h, w = shape
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x = torch.randn(n, c, h, w, dtype=dtype).to(memory_format=fmt)
    gy = torch.randn(n, o, h, w, dtype=dtype).to(memory_format=fmt)
    weight = torch.randn(o, c, 1, 1, dtype=dtype)
    expected = torch.einsum("nohw,nchw->oc", gy.double(), x.double()).view(o, c, 1, 1)
    results = []
    for threads in (1, 2):
        with intra_op_threads(threads):
            got = ops().pointwise_conv2d_grad_weight(gy, x, weight)
        assert got.dtype == dtype and got.shape == weight.shape
        assert rel_error(got, expected) <= (1e-6 if dtype == torch.float32 else 1e-14), threads
        results.append(got)
    # On xsep's product the same bits at any thread count; BLAS (XSEP_CPU_WEIGHT_GEMM=blas) is held
    # to that in float32 only: MKL's float64 blocks gave other bits on the AMD EPYC (host.h).
    if _weight_gemm_library() == "xsep" or dtype == torch.float32:
        assert torch.equal(results[0], results[1]), "depends on the thread count"


def _weight_gemm_library():
    """What runs the weight gradients' products in this process: "xsep" or "blas" (XSEP_CPU_WEIGHT_GEMM)."""
    return ops()._build_info().split("cpu_weight_gemm=")[1].split(";")[0]


def _grad_weight_at_thread_counts(shape, dtype, threads=(1, 3), memory_format=torch.contiguous_format):
    """(the pointwise weight gradient at each of `threads`, checked against the float64 reference;
    the operands, for more calls). shape: (N, C, O, H, W)."""
    n, c, o, h, w = shape
    x = torch.randn(n, c, h, w, dtype=dtype).to(memory_format=memory_format)
    gy = torch.randn(n, o, h, w, dtype=dtype).to(memory_format=memory_format)
    weight = torch.randn(o, c, 1, 1, dtype=dtype)
    expected = torch.einsum("nohw,nchw->oc", gy.double(), x.double()).view(o, c, 1, 1)
    on_blas = _weight_gemm_library() == "blas"
    results = []
    for count in threads:
        with intra_op_threads(count):
            got = ops().pointwise_conv2d_grad_weight(gy, x, weight)
            # On BLAS, at most twice torch's own error for the product on BLAS at this thread count:
            # MKL on the 2-core AMD EPYC Zen 4 at 3 threads, 16640 pixels, 1.4e-6 (3e-7 at 1 and 2).
            own = rel_error(torch.einsum("nohw,nchw->oc", gy, x), expected.view(o, c)) if on_blas else 0.0
        assert got.dtype == dtype and got.shape == weight.shape
        bound = max(1e-6 if dtype == torch.float32 else 1e-14, 2 * own)
        assert rel_error(got, expected) <= bound, count
        results.append(got)
    return results, (gy, x, weight)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_native_pointwise_nchw_grad_weight_in_row_chunks_matches_reference(dtype):
    # An NCHW weight gradient whose result outgrows L2 (520 x 600 values, past host.h's
    # kTnChunkedOutBytes) over three k blocks (578 pixels, the images side by side; two could be
    # added in either order with the same bits): on xsep's products each thread runs its rows in
    # chunks through the blocks, which must add the blocks' sums in the order channels_last's
    # kernel does (tn_product_impl.h): the same bits, at 1 and 3 threads (row ranges of other
    # sizes, chunk tails), and the float64 reference to rounding. Named for test_every_cpu_isa's
    # selection (the row product's tiles differ per instruction set).
    require_native()
    results, (gy, x, weight) = _grad_weight_at_thread_counts((2, 600, 520, 17, 17), dtype)
    with intra_op_threads(2):
        rows = ops().pointwise_conv2d_grad_weight(gy.to(memory_format=torch.channels_last),
                                                  x.to(memory_format=torch.channels_last), weight)
    if _weight_gemm_library() == "xsep" and fused_products_on_xsep():
        assert torch.equal(results[0], results[1]), "depends on the thread count"
        assert torch.equal(results[0], rows), "another summation order than channels_last's"


# (N, C, O, H, W): NCHW weight gradients with few channels over reductions of 1024 pixels or more,
# which xsep's products take as dot products of rows (host.h: kNtMinPixels; nt_product_impl.h):
# one image's plane (1155 pixels), planes side by side (6 x 195), two and three k blocks (4270
# pixels: float32 and float64 block lengths differ), rows and columns that fill no register tile.
_DOT_PRODUCT_SHAPES = [(1, 37, 19, 33, 35), (6, 20, 13, 13, 15), (1, 9, 7, 70, 61), (2, 64, 128, 32, 33)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("shape", _DOT_PRODUCT_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_native_pointwise_nchw_grad_weight_dot_products_matches_reference(shape, dtype):
    require_native()
    results, _ = _grad_weight_at_thread_counts(shape, dtype)
    # The same bits at 1 and 3 threads where xsep's products run them (the dot products need both
    # settings); elsewhere (BLAS, e.g. XSEP_CPU_WEIGHT_GEMM=blas: MKL splits these narrow products
    # at 3 threads) the reference check above only.
    if _weight_gemm_library() == "xsep" and fused_products_on_xsep():
        assert torch.equal(results[0], results[1]), "depends on the thread count"


@pytest.mark.parametrize("shape", [(1, 24, 20, 128, 130), (1, 16, 96, 128, 130), (1, 80, 72, 128, 130)],
                         ids=lambda s: "x".join(map(str, s)))
def test_native_pointwise_grad_weight_long_channels_last_matches_reference(shape):
    # A float32 channels-last weight gradient over 16640 pixels, past gemm.h's kTnLongPixels: on
    # xsep's kernel where the weight products otherwise run on BLAS with AVX-512 kernels (Intel),
    # on whichever library runs them elsewhere; there, few channels in spans of pixels (host.h
    # kTnSpanPixels: 8 whole spans and part of one), out as it is or with a and b swapped (16 -> 96);
    # 80 -> 72, wider than kTnSpanNarrowSide, by rows. The float64 reference's values and, on xsep's
    # kernel, the same bits at 1 and 3 threads (by construction). Not on BLAS: fed fixed blocks
    # (host.h kBlasReductionRows), MKL kept its bits at 1 and 2 threads, but on the 2-core AMD EPYC
    # Zen 4 split them at 3 (other bits, as torch.mm's own).
    require_native()
    results, _ = _grad_weight_at_thread_counts(shape, torch.float32, memory_format=torch.channels_last)
    if _weight_gemm_library() == "xsep":
        assert torch.equal(results[0], results[1]), "depends on the thread count"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_native_pointwise_grad_weight_few_rows_thread_count(dtype):
    # 16 output channels, channels_last (MobileNet's 112x112 32 -> 16): fewer rows of the weight
    # gradient than two threads' minimum share (host.h kTnRowGrain), which one thread used to run
    # alone; now each thread takes part of them (host.cpp tn_row_grain: 8 + 8, 6 + 5 + 5). Which
    # thread sums an element must not change its bits; and the float64 reference's values.
    require_native()
    results, _ = _grad_weight_at_thread_counts((2, 32, 16, 23, 25), dtype, threads=(1, 2, 3),
                                               memory_format=torch.channels_last)
    if _weight_gemm_library() == "xsep":
        assert torch.equal(results[0], results[1]) and torch.equal(results[0], results[2]), "depends on the thread count"


def test_native_separable_nchw_wide_weight_gradients_match_reference():
    # The fused NCHW backward's pointwise weight gradient on bands wide enough for the copy into rows
    # (see _WEIGHT_PRODUCT_SHAPES), and its other gradients, against the float64 reference.
    x = torch.randn(2, 260, 6, 5, dtype=torch.float64)
    dw, pw = torch.randn(260, 1, 3, 3, dtype=torch.float64), torch.randn(300, 260, 1, 1, dtype=torch.float64)
    geometry = ([1, 1], [1, 1, 1, 1], [1, 1], "relu", "relu6")
    g = torch.randn(2, 300, 6, 5, dtype=torch.float64)
    got = ops().separable_conv2d_backward(g.float(), x.float(), dw.float(), pw.float(), *geometry)
    leaves = [t.clone().requires_grad_() for t in (x, dw, pw)]
    reference.separable_conv2d(leaves[0], leaves[1], leaves[2], None, *geometry).backward(g)
    for name, value, leaf in zip(("input", "depthwise", "pointwise"), got[:3], leaves):
        assert rel_error(value, leaf.grad) <= 1e-5, name


# Channels-last shapes for xsep's fused products (csrc/cpu/separable_conv2d.cpp: row blocks of about
# 32K values of the product's left operand, register tiles of up to 12 rows, panels of up to 32
# columns): the forward over several blocks and a partial last one (300 and 1024 channels), the
# backward's over several blocks (1100 outputs), the backward in several tiles (70x70, 256 channels),
# partial panels (37, 65, 1100 and 3 outputs; 16 channels) and partial register tiles. The left
# operand's rows are read in place unless their stride is a multiple of 2 KB (row_product_impl.h):
# packed in the forward of 1024 channels and the backward of 512 outputs: (n, c, o, h, w).
_ROW_BLOCK_SHAPES = [(2, 300, 37, 9, 7), (1, 1024, 65, 5, 7), (1, 16, 1100, 5, 7), (1, 256, 8, 70, 70),
                     (3, 24, 3, 11, 13), (1, 8, 512, 5, 7)]
# NCHW shapes whose bands (one image each: planes of at least 256 pixels) go through xsep's product:
# two bands of a 30x30 plane with 512 channels (partial register tiles of 37 output rows), one band of
# 17x16 with 13 outputs and 24 channels (a partial panel of 272 pixels), and an odd plane (23x21, 29
# outputs) that puts the output's rows at every alignment, which the forward's streamed stores
# shift into whole cache lines (row_product_impl.h: row_product_streamed; test_cpu_stream_stores).
_NCHW_BAND_SHAPES = [(2, 512, 37, 30, 30), (2, 24, 13, 17, 16), (2, 40, 29, 23, 21)]


@pytest.mark.parametrize("shape, layout", [(s, "channels_last") for s in _ROW_BLOCK_SHAPES] +
                         [(s, "nchw") for s in _NCHW_BAND_SHAPES])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_native_separable_row_blocks_match_reference(shape, layout, dtype):
    # The fused op, forward and backward, on shapes that exercise its products' blocks, tiles and
    # panels, against the float64 reference; on xsep's products the same bits at 1 and 2 threads (on
    # the library's, oneDNN's products may round differently by thread count: there to rounding).
    _check_fused_against_reference(shape, layout, dtype, 3, ([1, 1], [1, 1, 1, 1], [1, 1]))


# (kernel, stride, padding, dilation): the channels-last backward in several tiles (csrc/cpu/
# separable_conv2d.cpp: 256K values of depthwise output, 1024 pixels of 256 channels; 3600 pixels
# here, with the strides' extra images: two waves of a tile a thread on two threads) on geometries
# other than the 3x3 above: more padding, dilation, strides, asymmetric padding, 5x5 and 7x7.
_TILED_BACKWARD_GEOMETRIES = [(5, [1, 1], [2, 2, 2, 2], [1, 1]), (3, [1, 1], [2, 2, 2, 2], [2, 2]),
                              (3, [2, 2], [1, 1, 1, 1], [1, 1]), (3, [1, 2], [0, 2, 1, 0], [1, 1]),
                              (7, [1, 1], [3, 3, 3, 3], [1, 1])]


@pytest.mark.parametrize("kernel, stride, padding, dilation", _TILED_BACKWARD_GEOMETRIES)
def test_native_separable_tiled_backward_matches_reference(kernel, stride, padding, dilation):
    images = 4 if stride == [2, 2] else 2 if stride != [1, 1] else 1
    _check_fused_against_reference((images, 256, 16, 60, 60), "channels_last", torch.float32, kernel,
                                   (stride, padding, dilation))


def _check_fused_against_reference(shape, layout, dtype, kernel, geometry):
    """The fused op (bias, depthwise bias, relu6 between the halves) forward and backward against the
    float64 reference; on xsep's products the same bits at 1 and 2 threads."""
    n, c, o, h, w = shape
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x = torch.randn(n, c, h, w, dtype=torch.float64).to(memory_format=fmt)
    dw = torch.randn(c, 1, kernel, kernel, dtype=torch.float64)
    pw = torch.randn(o, c, 1, 1, dtype=torch.float64)
    b, dw_b = torch.randn(o, dtype=torch.float64), torch.randn(c, dtype=torch.float64)
    geometry = (*geometry, "none", "relu6")
    leaves = [t.clone().requires_grad_() for t in (x, dw, pw, dw_b)]
    expected = reference.separable_conv2d(leaves[0], leaves[1], leaves[2], b, *geometry, leaves[3])
    g = torch.randn(expected.shape, dtype=torch.float64).to(memory_format=fmt)

    def run():
        args = [t.to(dtype) for t in (x, dw, pw)]
        out = ops().separable_conv2d(*args, b.to(dtype), *geometry, dw_b.to(dtype))
        grads = ops().separable_conv2d_backward(g.to(dtype), *args, *geometry, dw_b.to(dtype))
        return (out, *grads)

    one, two = at_one_and_two_threads(run)
    expected.backward(g)
    tolerance = 1e-5 if dtype == torch.float32 else 1e-12
    names = ("output", "input", "depthwise", "pointwise", "depthwise bias")
    for name, got, want in zip(names, one, (expected, *(leaf.grad for leaf in leaves))):
        assert got.dtype == dtype, name
        assert rel_error(got, want) <= tolerance, name
    on_xsep = fused_products_on_xsep()
    for name, a, b_ in zip(names, one, two):
        if on_xsep:
            assert torch.equal(a, b_), f"{name} depends on the thread count"
        else:
            assert rel_error(a, b_) <= tolerance / 10, f"{name} depends on the thread count"


# (C, O): the fused channels-last forward on both sides of each bound of gemm.h's rule for xsep's
# product where the others run on the library (Intel, AVX-512: float32, at most 256 mid channels,
# 64 to 256 output channels): in (64, 64), (256, 256); out (64, 63), (257, 256), (256, 257).
_SHORT_FORWARD_BOUNDS = [(64, 64), (64, 63), (256, 256), (257, 256), (256, 257)]


def _short_forward_on_xsep(c, o):
    """Whether this process runs the float32 fused channels-last forward of c -> o on xsep's product."""
    library = torch.ops.xsep._build_info().split("cpu_fused_gemm=")[1].split(";")[0]
    return library == "xsep" or (library.startswith("library (xsep") and c <= 256 and 64 <= o <= 256)


@pytest.mark.parametrize("channels", _SHORT_FORWARD_BOUNDS, ids=lambda s: "x".join(map(str, s)))
def test_native_separable_short_forward_matches_reference(channels):
    # The float32 fused forward (bias, depthwise bias, relu6 between the halves) on either side of
    # the rule: the float64 reference's values; on xsep's product the same bits at 1 and 3 threads
    # (each output element one chain over the channels, whatever the blocks).
    require_native()
    c, o = channels
    x = torch.randn(2, c, 20, 19).to(memory_format=torch.channels_last)
    dw, pw, b, dw_b = torch.randn(c, 1, 3, 3), torch.randn(o, c, 1, 1), torch.randn(o), torch.randn(c)
    geometry = ([1, 1], [1, 1, 1, 1], [1, 1], "none", "relu6")
    with intra_op_threads(1):
        one = ops().separable_conv2d(x, dw, pw, b, *geometry, dw_b)
    with intra_op_threads(3):
        three = ops().separable_conv2d(x, dw, pw, b, *geometry, dw_b)
    expected = reference.separable_conv2d(*(t.double() for t in (x, dw, pw, b)), *geometry, dw_b.double())
    assert one.is_contiguous(memory_format=torch.channels_last)
    assert rel_error(one, expected) <= 1e-6
    assert rel_error(three, expected) <= 1e-6
    if _short_forward_on_xsep(c, o):
        assert torch.equal(one, three)


# (N, C, O, H, W): the float32 channels-last fused backward on both sides of gemm.h's
# kBlasLongGradInputRows (16383 and 16384 pixels), where, on Intel, the depthwise output's gradient
# comes from oneDNN's backward-data primitive over the whole tensor and the weight gradient's tiles
# hold at least kTnLongPixels pixels; the last in two such tiles (33024 pixels of 72 channels).
_LONG_FUSED_BACKWARDS = [(1, 24, 20, 43, 381), (1, 24, 20, 128, 128), (2, 72, 16, 128, 129)]


@pytest.mark.parametrize("shape", _LONG_FUSED_BACKWARDS, ids=lambda s: "x".join(map(str, s)))
def test_native_separable_long_backward_channels_last_matches_reference(shape):
    # Gradients (relu6 between the halves, a depthwise bias) against the float64 reference. The
    # depthwise half's values are exact in float32 (quarters times small integers, plus a bias of
    # an integer and an eighth: never 0 or 6), so that among millions of them none falls on the
    # other side of relu6's bounds in float32 than in float64 (a flipped mask would be an error of
    # ~1e-3 that is no fault of the kernels).
    require_native()
    n, c, o, h, w = shape
    x = (torch.randint(-4, 5, (n, c, h, w)) / 4).to(memory_format=torch.channels_last)
    dw, dw_b = torch.randint(-2, 3, (c, 1, 3, 3)).float(), torch.randint(-3, 4, (c,)) + 0.125
    pw = torch.randn(o, c, 1, 1)
    g = torch.randn(n, o, h, w).to(memory_format=torch.channels_last)
    geometry = ([1, 1], [1, 1, 1, 1], [1, 1], "none", "relu6")
    got = ops().separable_conv2d_backward(g, x, dw, pw, *geometry, dw_b)
    leaves = [t.double().requires_grad_() for t in (x, dw, pw, dw_b)]
    reference.separable_conv2d(leaves[0], leaves[1], leaves[2], None, *geometry, leaves[3]).backward(g.double())
    assert got[0].is_contiguous(memory_format=torch.channels_last)
    for name, value, leaf in zip(("input", "depthwise", "pointwise", "depthwise bias"), got, leaves):
        assert rel_error(value, leaf.grad) <= 1e-5, name


# --------------------------------------------------------------------------------------------------
# Empty batches


def test_empty_batch():
    # N = 0 is legal (e.g. an empty last batch): every op returns correctly shaped empty outputs,
    # and zero weight gradients, rather than failing or reading garbage.
    results = _all_results(n=0, c=5, h=7, w=6, o=3)
    for name, t in results.items():
        if "weight" in name or "bias" in name:
            assert t.numel() > 0 and torch.equal(t, torch.zeros_like(t)), name
        else:
            assert t.shape[0] == 0 and t.dim() == 4, name
    assert results["depthwise_conv2d"].shape == (0, 10, 7, 6)
    assert results["separable_conv2d"].shape == (0, 3, 7, 6)
    assert results["pointwise_conv2d"].shape == (0, 3, 7, 6)
    assert results["separable_conv2d_backward[grad_input]"].shape == (0, 5, 7, 6)


def test_empty_batch_autograd():
    # The same through autograd: backward of an empty batch gives zero weight and bias gradients.
    x = torch.randn(0, 3, 5, 5)
    dw, pw, b = (torch.randn(*s, requires_grad=True) for s in ((6, 1, 3, 3), (4, 6, 1, 1), (4,)))
    y = ops().separable_conv2d(x, dw, pw, b, (2, 2), (1, 1, 1, 1), (1, 1), "relu", "elu")
    assert y.shape == (0, 4, 3, 3)
    y.sum().backward()
    for t in (dw, pw, b):
        assert torch.equal(t.grad, torch.zeros_like(t))


def test_output_memory_format_follows_input():
    # The ops' own memory-format rule (see xsep/ops/_register.py), on unambiguous inputs.
    x, dw, pw, b = separable_inputs(dtype=torch.float32)
    for fmt in (torch.contiguous_format, torch.channels_last):
        xf = x.contiguous(memory_format=fmt)
        assert memory_format_of(xf) == fmt
        y = ops().separable_conv2d(xf, dw, pw, b, STRIDE, PADDING, DILATION, "none", "none")
        gi, gdw, gpw, gdb = ops().separable_conv2d_backward(torch.randn_like(y), xf, dw, pw, STRIDE, PADDING,
                                                            DILATION, "none", "none")
        assert y.is_contiguous(memory_format=fmt) and gi.is_contiguous(memory_format=fmt)
        assert gdw.is_contiguous() and gpw.is_contiguous() and gdb.shape == (0,)  # no depthwise bias


# --------------------------------------------------------------------------------------------------
# NCHW, unit stride: the flattened padded plane
#
# At stride 1 the NCHW kernels (forward, input and weight gradients) copy the plane with its padding
# into rows of len = Wo + (kw - 1) * dil_w values (with AVX-512, float and 3x3, 5x5 or 7x7 taps at unit
# column step, widened to whole vectors where that adds at most a quarter) and convolve the flattened
# buffer in full vectors; the lanes between rows are dropped. These cases hit its edges. Named "native ... matches_reference" so that test_every_cpu_isa reruns them.

# (N, C, H, W, M, (kh, kw), padding (top, bottom, left, right), dilation, input activation, why)
_FLAT_CASES = [
    (2, 3, 5, 3, 1, (3, 3), (1, 1, 1, 1), (1, 1), "none", "W smaller than one vector"),
    (2, 2, 6, 1, 1, (3, 3), (1, 1, 1, 1), (1, 1), "relu", "W = 1"),
    (1, 3, 9, 10, 1, (3, 3), (2, 2, 2, 2), (2, 2), "none", "dilation 2"),
    (1, 2, 11, 13, 1, (3, 3), (1, 2, 2, 1), (2, 1), "none", "dilation 2 x 1, asymmetric padding"),
    (2, 3, 10, 10, 1, (5, 5), (2, 2, 2, 2), (1, 1), "relu", "5x5"),
    (1, 2, 19, 19, 1, (7, 7), (3, 3, 3, 3), (1, 1), "none", "7x7"),
    (2, 3, 7, 11, 1, (3, 3), (0, 2, 2, 1), (1, 1), "none", "asymmetric padding"),
    (1, 2, 2, 3, 1, (3, 3), (4, 3, 5, 4), (1, 1), "relu", "padding larger than the plane"),
    (2, 3, 10, 10, 2, (3, 3), (1, 1, 1, 1), (1, 1), "relu", "M = 2"),
    (1, 2, 6, 7, 2, (5, 5), (2, 2, 2, 2), (1, 1), "relu", "N = 1, M = 2: one input plane for both weight gradients"),
    (2, 4, 19, 19, 1, (3, 3), (1, 1, 1, 1), (1, 1), "none", "Xception's 19x19: four-vector blocks"),
    (1, 2, 8, 9, 1, (2, 4), (0, 1, 1, 2), (1, 1), "none", "a kernel size without its own instantiation"),
    (1, 2, 5, 6, 1, (1, 1), (0, 0, 0, 0), (1, 1), "none", "1x1: len = Wo, no dropped lanes"),
    (1, 1, 20, 300, 1, (3, 3), (1, 1, 1, 1), (1, 1), "relu", "rows wider than the output chunk (6 rows)"),
    (2, 3, 9, 37, 1, (3, 3), (1, 1, 1, 1), (1, 1), "relu", "rows widened to whole vectors: 39 -> 48 values"),
    (1, 2, 11, 74, 2, (5, 5), (2, 2, 2, 2), (1, 1), "none", "widened rows, 5x5, M = 2: 78 -> 80 values"),
    (1, 2, 12, 21, 1, (7, 7), (3, 3, 3, 3), (1, 1), "none", "widened rows, 7x7: 27 -> 32 values"),
    (1, 1, 7, 12, 1, (3, 3), (1, 1, 1, 1), (1, 1), "none", "widened rows narrower than a vector: 14 -> 16 values"),
    (1, 2, 11, 60, 1, (5, 5), (2, 2, 2, 2), (1, 1), "relu", "aligned rows, 5x5: 64 values, none added"),
    (2, 2, 9, 37, 1, (3, 3), (0, 2, 2, 1), (1, 1), "relu", "widened rows, asymmetric padding: 39 -> 48 values"),
]
_DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]


@pytest.mark.parametrize("dtype", _DTYPES, ids=lambda d: str(d).split(".")[1])
@pytest.mark.parametrize("case", _FLAT_CASES, ids=[c[-1] for c in _FLAT_CASES])
def test_nchw_unit_stride_native_matches_reference(case, dtype):
    n, c, h, w, m, (kh, kw), padding, dilation, act, _ = case
    torch.manual_seed(0)
    x = away_from_zero(n, c, h, w).to(dtype)
    weight = torch.randn(c * m, 1, kh, kw, dtype=torch.float64).to(dtype)
    bias = torch.randn(c * m, dtype=torch.float64).to(dtype)
    geometry = ((1, 1), padding, dilation, act)
    check_against_reference(lambda *t: ops().depthwise_conv2d(*t, *geometry),
                            lambda *t: reference.depthwise_conv2d(*t, *geometry),
                            [x, weight, bias], ["input", "weight", "bias"])


# NCHW, strides 2 to 4: the phase planes. The padded input is split by row and column phase (modulo the stride) into
# planes where every tap is again a fixed shift of a flat position; the input gradient convolves grad_output once
# per input phase and interleaves the phases' rows. These cases hit its edges (odd and even sizes, phases no tap
# reads, strides along one axis, sizes below a vector).
# (N, C, H, W, M, (kh, kw), stride, padding (top, bottom, left, right), dilation, input activation, why)
_PHASE_CASES = [
    (2, 3, 14, 14, 1, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), "none", "mobilenet's 14x14 stride 2"),
    (2, 3, 15, 13, 1, (3, 3), (2, 2), (0, 1, 0, 1), (1, 1), "relu", "odd sizes, TF 'same' padding"),
    (1, 2, 9, 40, 1, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), "none", "rows of several vectors"),
    (2, 3, 12, 11, 1, (5, 5), (2, 2), (2, 2, 2, 2), (1, 1), "relu", "5x5 stride 2 (efficientnet)"),
    (1, 2, 17, 16, 1, (7, 7), (2, 2), (3, 3, 3, 3), (1, 1), "none", "7x7 stride 2"),
    (1, 3, 13, 12, 1, (3, 3), (2, 2), (2, 2, 2, 2), (2, 2), "none", "dilation 2: phases no tap reads"),
    (2, 2, 11, 9, 1, (3, 3), (2, 1), (1, 1, 1, 1), (1, 1), "relu", "stride 2 x 1"),
    (2, 2, 9, 11, 1, (3, 3), (1, 2), (1, 0, 2, 1), (1, 1), "none", "stride 1 x 2, asymmetric padding"),
    (1, 2, 16, 17, 1, (3, 3), (3, 3), (1, 1, 1, 1), (1, 1), "none", "stride 3"),
    (1, 2, 18, 19, 1, (5, 5), (4, 4), (2, 2, 2, 2), (1, 1), "relu", "stride 4"),
    (2, 3, 10, 10, 2, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), "relu", "M = 2 (its input gradient: the class path)"),
    (1, 2, 3, 2, 1, (3, 3), (2, 2), (2, 2, 3, 3), (1, 1), "relu", "padding larger than the plane"),
    (2, 2, 7, 1, 1, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), "none", "W = 1"),
    (1, 1, 12, 300, 1, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), "relu", "rows wider than the output chunk"),
    (1, 2, 12, 12, 1, (3, 3), (5, 5), (1, 1, 1, 1), (1, 1), "none", "stride 5: the row path"),
]


@pytest.mark.parametrize("dtype", _DTYPES, ids=lambda d: str(d).split(".")[1])
@pytest.mark.parametrize("case", _PHASE_CASES, ids=[c[-1] for c in _PHASE_CASES])
def test_nchw_strided_phases_native_matches_reference(case, dtype):
    n, c, h, w, m, (kh, kw), stride, padding, dilation, act, _ = case
    torch.manual_seed(0)
    x = away_from_zero(n, c, h, w).to(dtype)
    weight = torch.randn(c * m, 1, kh, kw, dtype=torch.float64).to(dtype)
    bias = torch.randn(c * m, dtype=torch.float64).to(dtype)
    geometry = (stride, padding, dilation, act)
    check_against_reference(lambda *t: ops().depthwise_conv2d(*t, *geometry),
                            lambda *t: reference.depthwise_conv2d(*t, *geometry),
                            [x, weight, bias], ["input", "weight", "bias"])


@pytest.mark.parametrize("stride, width", [(1, 10), (2, 10), (1, 13)],
                         ids=["unit stride", "stride 2", "rows widened to whole vectors: 15 -> 16 values"])
def test_nchw_weight_gradient_with_an_infinite_input(stride, width):
    # An inf in the input's first column: the taps of the kernel's last column never read it, so their
    # weight gradient is finite; the flat path's dropped lanes would multiply it by a zero of
    # grad_output (NaN), and the channel is redone by the row path. The taps that read it: inf or NaN.
    torch.manual_seed(0)
    x = torch.randn(2, 3, 9, width)
    x[1, 2, 4, 0] = float("inf")
    weight = torch.randn(3, 1, 3, 3)
    geometry = ([stride, stride], [1, 1, 1, 1], [1, 1], "none")
    ho, wo = (9 - 1) // stride + 1, (width - 1) // stride + 1
    go = torch.randn(2, 3, ho, wo)
    got = ops().depthwise_conv2d_grad_weight(go, x, weight, *geometry)
    xp = torch.nn.functional.pad(x.double(), (1, 1, 1, 1))
    want = torch.stack([torch.stack([(go.double() * xp[:, :, i:i + 9:stride, j:j + width:stride]).sum((0, 2, 3))
                                     for j in range(3)], -1) for i in range(3)], -2).unsqueeze(1)
    assert torch.isfinite(got[:2]).all() and torch.isfinite(got[2, :, :, 2]).all()
    finite = torch.isfinite(want)
    assert torch.equal(finite, torch.isfinite(got))
    assert rel_error(got[finite].double(), want[finite]) < 1e-5


# --------------------------------------------------------------------------------------------------
# Channels-last, unit stride along W: the unit tiles
#
# With sw = dil_w = 1 and 3, 5 or 7 tap columns the channels-last forward runs each row segment in tiles
# of 4-8 pixels that load each input vector once; a tile with tap columns in the padding, or with fewer
# pixels left in the segment, is an edge tile that skips those columns and stores only its pixels; and
# a channel tail shorter than a vector (when C is at least one vector) is redone as the whole vector
# ending at C. With three tap rows and 3 tap columns, the tiles whose taps all lie inside a row go in
# runs (weights held in registers) and the rest in unit tiles; rows whose pixels are a multiple of
# 4 KiB apart go wholly in unit tiles. At stride 2 along W (unit dilation, 3, 5 or 7 tap columns) the tiles
# are strided: pixel p's tap j reads the tile's source column 2 p + j. These cases hit those edges; named
# "native ... matches_reference" so that test_every_cpu_isa reruns them (the tiles and vectors differ per
# instruction set).

# (N, C, H, W, (kh, kw), stride, padding (top, bottom, left, right), dilation, input activation, why)
_UNIT_CASES = [
    (2, 41, 5, 21, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), "none", "3x3: whole tiles, a rest, a channel tail"),
    (1, 7, 4, 12, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), "relu", "fewer channels than one vector"),
    (1, 33, 6, 23, (5, 5), (1, 1), (2, 2, 2, 2), (1, 1), "relu", "5x5"),
    (1, 17, 8, 31, (7, 7), (1, 1), (3, 3, 3, 3), (1, 1), "none", "7x7"),
    (2, 24, 9, 19, (3, 3), (2, 1), (1, 1, 1, 1), (2, 1), "none", "row stride and dilation only"),
    (1, 64, 3, 10, (3, 3), (1, 1), (0, 0, 1, 1), (1, 1), "none", "a 10-pixel row: one 8-pixel tile"),
    (2, 41, 4, 10, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), "relu", "a short row: runs of two vectors, a channel tail"),
    (2, 19, 7, 7, (7, 7), (1, 1), (3, 3, 3, 3), (1, 1), "none", "7x7 on a 7x7 plane: one edge tile a row"),
    (1, 20, 7, 7, (5, 5), (1, 1), (2, 2, 2, 2), (1, 1), "relu", "5x5 on a 7x7 plane"),
    (1, 9, 3, 2, (3, 3), (1, 1), (4, 3, 5, 4), (1, 1), "none", "padding larger than the plane"),
    (2, 16, 6, 9, (3, 3), (1, 1), (0, 1, 0, 1), (1, 1), "none", "TF-same padding: none left, one right"),
    (1, 33, 5, 12, (5, 5), (1, 1), (1, 3, 3, 1), (1, 1), "relu", "asymmetric 5x5 padding"),
    (1, 8, 4, 1, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), "none", "W = 1"),
    (1, 20, 7, 26, (5, 3), (1, 1), (2, 2, 1, 1), (1, 1), "relu", "5x3: runs on the rows with three tap rows"),
    (1, 1024, 4, 11, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), "relu",
     "pixels 4 KiB apart in float32 and float64 (unit tiles, not runs), 2 KiB in 16-bit types (runs)"),
    (2, 41, 9, 37, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), "none", "stride 2, 3x3: strided tiles, a rest, a channel tail"),
    (1, 33, 8, 30, (5, 5), (2, 2), (2, 2, 2, 2), (1, 1), "relu", "stride 2, 5x5, an even row"),
    (1, 17, 9, 40, (7, 7), (2, 2), (3, 3, 3, 3), (1, 1), "none", "stride 2, 7x7"),
    (2, 16, 7, 11, (3, 3), (2, 2), (0, 1, 0, 1), (1, 1), "none", "stride 2, TF-same padding: none left, one right"),
    (1, 20, 5, 5, (5, 5), (2, 2), (2, 2, 2, 2), (1, 1), "relu", "stride 2, 5x5 on a 5x5 plane: one edge tile a row"),
    (1, 7, 6, 17, (3, 3), (1, 2), (1, 1, 1, 1), (1, 1), "relu", "stride 2 along W only, fewer channels than a vector"),
    (1, 1024, 4, 11, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), "none", "stride 2, pixels 4 KiB apart"),
]


@pytest.mark.parametrize("dtype", _DTYPES, ids=lambda d: str(d).split(".")[1])
@pytest.mark.parametrize("case", _UNIT_CASES, ids=[c[-1] for c in _UNIT_CASES])
def test_channels_last_unit_tiles_native_matches_reference(case, dtype):
    n, c, h, w, (kh, kw), stride, padding, dilation, act, _ = case
    torch.manual_seed(0)
    x = away_from_zero(n, c, h, w).to(dtype).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(c, 1, kh, kw, dtype=torch.float64).to(dtype)
    bias = torch.randn(c, dtype=torch.float64).to(dtype)
    geometry = (stride, padding, dilation, act)
    check_against_reference(lambda *t: ops().depthwise_conv2d(*t, *geometry),
                            lambda *t: reference.depthwise_conv2d(*t, *geometry),
                            [x, weight, bias], ["input", "weight", "bias"])


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("kernel", [3, 5, 7])
def test_channels_last_unit_tiles_split_mid_row_native_matches_reference(kernel, stride):
    # With 3 threads at::parallel_for splits the forward's 53 x 29 = 1537 pixels into tasks of
    # ceil(1537 / tasks) (grain: 32768 multiply-adds, so 1213 pixels at 3 channels x 3x3, 436 at 5x5,
    # 222 at 7x7): 2 tasks of 769 = 26 x 29 + 15 at 3x3, 3 of 513 = 17 x 29 + 20 at 5x5 and 7x7. Each
    # later task starts mid-row, so its first tile does not start at the row's edge (at stride 2 too:
    # a 105 x 57 input).
    torch.manual_seed(0)
    x = away_from_zero(1, 3, 52 * stride + 1, 28 * stride + 1).float().contiguous(memory_format=torch.channels_last)
    weight, bias = torch.randn(3, 1, kernel, kernel), torch.randn(3)
    geometry = ((stride, stride), [kernel // 2] * 4, (1, 1), "none")
    with intra_op_threads(3):
        check_against_reference(lambda *t: ops().depthwise_conv2d(*t, *geometry),
                                lambda *t: reference.depthwise_conv2d(*t, *geometry),
                                [x, weight, bias], ["input", "weight", "bias"])


# How the fused op cuts its work, per layout: separable_inputs' sizes, channels-last or not, the input
# and mid activations.
_SEPARABLE_TILING = [
    # Channels-last: the depthwise half (written in float into the tile buffer) through the unit
    # tiles, with a channel tail: 41 channels, rows of 21 pixels.
    pytest.param(dict(n=2, c=41, h=5, w=21, m=1, o=8), True, "relu", "relu6", id="channels_last-unit_tiles"),
    # Channels-last, 1024 depthwise channels over 2 x 48 x 48 pixels: several pixel tiles forward and
    # backward (BLAS: 1M values a tile, 5 tiles; oneDNN: 4M, 2 tiles), each tile's GEMM writing its
    # rows of the output (and of grad_mid) with the same packed weight.
    pytest.param(dict(n=2, c=1024, h=48, w=48, m=1, o=8), True, "none", "relu", id="channels_last-several_tiles"),
    # Channels-last, a short product (64 depthwise channels -> 192): the forward on oneDNN takes 1M
    # values of depthwise output and result a tile (4096 pixels: 2 tiles here); BLAS, 1 tile.
    pytest.param(dict(n=2, c=64, h=48, w=48, m=1, o=192), True, "relu", "none", id="channels_last-short_product"),
    # NCHW, 520 depthwise channels: the forward cuts the 120 output rows into bands (tiles of 512
    # pixels: 52 rows of 10), each band's depthwise half filling its own padded rows.
    pytest.param(dict(n=1, c=260, h=120, w=10, m=2, o=8), False, "relu", "none", id="nchw-row_bands"),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("sizes, channels_last, input_activation, mid_activation", _SEPARABLE_TILING)
def test_separable_tiling_native_matches_reference(dtype, sizes, channels_last, input_activation, mid_activation):
    torch.manual_seed(0)
    x, dw, pw, b = (t.to(dtype) for t in separable_inputs(**sizes))
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    geometry = ((1, 1), (1, 1, 1, 1), (1, 1), input_activation, mid_activation)
    check_against_reference(lambda *t: ops().separable_conv2d(*t, *geometry),
                            lambda *t: reference.separable_conv2d(*t, *geometry),
                            [x, dw, pw, b], ["input", "depthwise_weight", "pointwise_weight", "bias"])


# --------------------------------------------------------------------------------------------------
# Every instruction set


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            return next((set(line.split(":", 1)[1].split()) for line in f if line.startswith("flags")), set())
    except OSError:
        return set()


_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _subprocess_env() -> dict[str, str]:
    return {**os.environ, "XSEP_REQUIRE_NATIVE": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [_ROOT, os.environ.get("PYTHONPATH")]))}


def _assert_suite_passes(env: dict[str, str], select: str) -> None:
    """The reference tests and gradchecks that `select` picks, in a fresh process with `env` set:
    they ran (none skipped) and passed."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "tests/test_functional.py",
         "tests/test_ops.py", "-k", select],
        cwd=_ROOT, env={**_subprocess_env(), **env}, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout, result.stdout[-3000:]


_ISA_FLAGS = {"default": set(), "avx2": {"avx2", "fma", "f16c"},
              "avx512": {"avx512f", "avx512bw", "avx512vl", "avx512dq"}}


def _skip_unless_cpu_has(isa: str) -> None:
    flags = _cpu_flags()
    if not flags:
        pytest.skip("cannot read the CPU's flags (/proc/cpuinfo)")
    if not _ISA_FLAGS[isa] <= flags:
        pytest.skip(f"this CPU lacks {sorted(_ISA_FLAGS[isa] - flags)}")


@pytest.mark.slow
@pytest.mark.parametrize("isa", list(_ISA_FLAGS))
def test_every_cpu_isa(isa):
    # The depthwise kernels are compiled once per instruction set and the best one the CPU has is
    # used, so the rest of the suite tests only that one. XSEP_CPU_ISA forces another: rerun the
    # reference sweep and the gradchecks under each other one this CPU can run (a fresh process,
    # as the choice is made once per process).
    active = torch.ops.xsep._build_info().split("cpu_isa=")[1].split(";")[0]
    if isa == active:
        pytest.skip(f"{isa} is the active instruction set, tested by the rest of the suite")
    _skip_unless_cpu_has(isa)
    # xsep's weight-gradient and fused products and its NCHW plane kernels on every plane (compiled
    # per instruction set too) forced on, whatever this processor's default; the channel blocks
    # under each set: test_cpu_nchw_depthwise_in_blocks_everywhere.
    _assert_suite_passes({"XSEP_CPU_ISA": isa, "XSEP_CPU_WEIGHT_GEMM": "xsep", "XSEP_CPU_FUSED_GEMM": "xsep",
                          "XSEP_CPU_NCHW_DEPTHWISE": "planes"},
                         "(native and matches_reference) or gradcheck or thread_count")


@pytest.mark.slow
@pytest.mark.parametrize("isa", ["avx2", "avx512"])
def test_cpu_stream_stores(isa):
    # Outputs larger than the last-level cache, into memory touched before, are written with
    # non-temporal stores (the channels-last depthwise forward and input gradient, the NCHW
    # depthwise forward and unit-stride input gradient on the plane kernels, and the fused forward
    # on xsep's product, channels-last and NCHW: csrc/cpu/host.h: stream_output), which this suite's
    # small shapes never reach.
    # XSEP_CPU_STREAM_STORES=always forces them: rerun the depthwise, NCHW and fused reference
    # sweeps, gradchecks and thread-count test with it, under each instruction set that has them,
    # with the fused op's products on xsep's (XSEP_CPU_FUSED_GEMM=xsep: its forward on the row product).
    _skip_unless_cpu_has(isa)
    _assert_suite_passes({"XSEP_CPU_ISA": isa, "XSEP_CPU_STREAM_STORES": "always", "XSEP_CPU_FUSED_GEMM": "xsep"},
                         "((depthwise or separable or nchw) and native and matches_reference) or unit_tiles "
                         "or row_blocks_match or gradcheck_depthwise or gradcheck_separable or thread_count")


@pytest.mark.slow
@pytest.mark.parametrize("isa", ["avx512", "avx2", "default"])
def test_cpu_prefetch(isa):
    # The channels-last depthwise forward runs (the op's and the fused op's tiles) and weight
    # gradient bring their next rows into L2 ahead where the op's operands exceed the last-level
    # cache (csrc/cpu/host.h: prefetch_rows), which this suite's small shapes never reach. XSEP_CPU_PREFETCH=always forces it: rerun the
    # depthwise and fused reference sweeps, gradchecks and thread-count test with it, under each
    # instruction set.
    _skip_unless_cpu_has(isa)
    _assert_suite_passes({"XSEP_CPU_ISA": isa, "XSEP_CPU_PREFETCH": "always"},
                         "((depthwise or separable) and native and matches_reference) "
                         "or gradcheck_depthwise or gradcheck_separable or thread_count")


@pytest.mark.slow
def test_cpu_run_vectors():
    # The AVX-512 build's channels-last depthwise runs take two vectors of channels on short rows,
    # or on every row where that measured faster (csrc/cpu/depthwise_kernels.h: two_vector_runs);
    # the suite runs this CPU's choice. XSEP_CPU_RUN_VECTORS forces the other one: rerun the
    # depthwise reference sweep, unit-tile cases and gradchecks with it.
    _skip_unless_cpu_has("avx512")
    active = torch.ops.xsep._build_info().split("cpu_run_vectors=")[1].split(";")[0]
    other = {"short rows": "every-row", "every row": "short-rows"}[active]
    _assert_suite_passes({"XSEP_CPU_ISA": "avx512", "XSEP_CPU_RUN_VECTORS": other},
                         "(depthwise and native and matches_reference) or unit_tiles or gradcheck_depthwise "
                         "or separable and native and matches_reference")


@pytest.mark.slow
@pytest.mark.parametrize("isa", ["avx512", "avx2"])
@pytest.mark.parametrize("runs, streams", [("always", "auto"), ("never", "auto"), ("never", "always")])
def test_cpu_depthwise_runs(isa, runs, streams):
    # Which channels-last depthwise rows take runs rather than unit tiles depends on the CPU and
    # on the call (csrc/cpu/depthwise_kernels.h: depthwise_runs): the suite runs this CPU's choice.
    # XSEP_CPU_DEPTHWISE_RUNS forces runs wherever they apply, or unit tiles everywhere (also with
    # their non-temporal stores): rerun the depthwise and fused reference sweeps, unit-tile cases and
    # gradchecks with each, under each instruction set that has runs.
    _skip_unless_cpu_has(isa)
    _assert_suite_passes({"XSEP_CPU_ISA": isa, "XSEP_CPU_DEPTHWISE_RUNS": runs, "XSEP_CPU_STREAM_STORES": streams},
                         "((depthwise or separable) and native and matches_reference) or unit_tiles "
                         "or gradcheck_depthwise or gradcheck_separable")


@pytest.mark.slow
@pytest.mark.parametrize("isa", ["avx512", "avx2", "default"])
def test_cpu_depthwise_runs_setting_names_the_build(isa):
    # The build info's cpu_depthwise_runs says what the kernels of the active instruction set do:
    # the automatic rule takes runs only in the AVX-512 build, or on every row on AMD except the
    # forward's short rows through the caches on Zen 4 (family 25).
    _skip_unless_cpu_has(isa)
    code = "from xsep import _extension; print(_extension.build_info()['cpu_depthwise_runs'])"
    env = {**_subprocess_env(), "XSEP_CPU_ISA": isa, "XSEP_CPU_DEPTHWISE_RUNS": "auto"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    setting = out.stdout.strip().splitlines()[-1]
    cpuinfo = open("/proc/cpuinfo").read()
    family = re.search(r"^cpu family\s*:\s*(\d+)", cpuinfo, re.MULTILINE)
    if "AuthenticAMD" in cpuinfo and family is not None and family.group(1) == "25":
        expected = "always, except forwards through the caches on rows under 32 pixels"
    elif "AuthenticAMD" in cpuinfo:
        expected = "always"
    else:
        expected = "avx512 input gradients, fused bands and streamed forwards" if isa == "avx512" else "never"
    assert setting == expected


_WEIGHT_GRADIENT_BITS = """
import sys, torch
from xsep import _extension
assert _extension.load(), _extension.load_error()
torch.manual_seed(0)
grads = []
for n, h, c, o in [(2, 20, 32, 12), (1, 40, 64, 128), (3, 17, 96, 40), (1, 50, 128, 64), (1, 30, 24, 16)]:
    x = torch.randn(n, c, h, h, dtype=torch.float64 if c == 96 else torch.float32).to(memory_format=torch.channels_last)
    gy = torch.randn(n, o, h, h, dtype=x.dtype).to(memory_format=torch.channels_last)
    grads.append(torch.ops.xsep.pointwise_conv2d_grad_weight(gy, x, torch.empty(o, c, 1, 1, dtype=x.dtype)))
torch.save(grads, sys.argv[1])
"""


@pytest.mark.slow
@pytest.mark.parametrize("isa", ["avx512", "avx2", "default"])
def test_cpu_weight_packing_gives_the_same_bits(isa, tmp_path):
    # The weight gradients' product reads narrow operand rows in place or packs them into panels
    # (csrc/cpu/tn_product_impl.h), by CPU; XSEP_CPU_WEIGHT_PACKING forces either. The same sums in
    # the same order: the same bits, on xsep's own product (XSEP_CPU_WEIGHT_GEMM=xsep), channels-last
    # inputs of 24 to 128 channels (in place where a whole number of panels), float32 and float64.
    _skip_unless_cpu_has(isa)
    grads = {}
    for packing in ("pack", "in-place"):
        out = tmp_path / f"{packing}.pt"
        env = {**_subprocess_env(), "XSEP_CPU_ISA": isa, "XSEP_CPU_WEIGHT_GEMM": "xsep",
               "XSEP_CPU_WEIGHT_PACKING": packing}
        result = subprocess.run([sys.executable, "-c", _WEIGHT_GRADIENT_BITS, str(out)], env=env, capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        grads[packing] = torch.load(out)
    for packed, in_place in zip(grads["pack"], grads["in-place"], strict=True):
        assert torch.isfinite(packed).all() and packed.abs().sum() > 0
        assert torch.equal(packed, in_place)


@pytest.mark.slow
@pytest.mark.parametrize("packing", ["pack", "in-place"])
def test_cpu_weight_packing(packing):
    # The pointwise and fused ops' reference sweeps, gradchecks and thread-count tests on xsep's own
    # weight product with its narrow operand rows packed or read in place (see above).
    _assert_suite_passes({"XSEP_CPU_WEIGHT_GEMM": "xsep", "XSEP_CPU_WEIGHT_PACKING": packing},
                         "((pointwise or separable) and ((native and matches_reference) or gradcheck)) or thread_count")


@pytest.mark.slow
def test_cpu_nchw_depthwise_on_planes_everywhere():
    # Small NCHW planes run the depthwise op in channel blocks through the NHWC kernels
    # (csrc/cpu/depthwise_conv2d.cpp: nchw_depthwise_path), which covers many of this suite's small
    # NCHW cases. XSEP_CPU_NCHW_DEPTHWISE=planes keeps every one on the plane kernels: rerun the
    # depthwise reference sweeps, gradchecks and thread-count tests with it.
    _assert_suite_passes({"XSEP_CPU_NCHW_DEPTHWISE": "planes"},
                         "(depthwise and native and matches_reference) or gradcheck_depthwise or thread_count")


@pytest.mark.slow
@pytest.mark.parametrize("isa", ["avx512", "avx2", "default"])
def test_cpu_nchw_depthwise_in_blocks_everywhere(isa):
    # The channel blocks (their transposes compiled per instruction set) take only small float32
    # planes of layers with 128 or more planes by default: XSEP_CPU_NCHW_DEPTHWISE=blocks puts every
    # NCHW depthwise case of the reference sweeps, gradchecks and thread-count tests there, and the
    # fused op's whole-plane bands of the channel-block cases, under each instruction set this CPU
    # can run.
    _skip_unless_cpu_has(isa)
    _assert_suite_passes({"XSEP_CPU_ISA": isa, "XSEP_CPU_NCHW_DEPTHWISE": "blocks"},
                         "(depthwise and native and matches_reference) or gradcheck_depthwise or thread_count "
                         "or channel_blocks")


@pytest.mark.slow
def test_cpu_nchw_depthwise_on_onednn_for_every_narrow_plane():
    # No plane goes to oneDNN by default (channel blocks measured faster on narrow planes);
    # XSEP_CPU_NCHW_DEPTHWISE=narrow hands every narrow float32 plane to it, as the default did
    # until 2026-12-05: rerun the depthwise reference sweeps, gradchecks and thread-count tests with it.
    _assert_suite_passes({"XSEP_CPU_NCHW_DEPTHWISE": "narrow"},
                         "(depthwise and native and matches_reference) or gradcheck_depthwise or thread_count "
                         "or narrow_nchw")


# (C, H, W, M, kernel, stride, padding): planes narrower than the `narrow` setting's bound for their kernel.
_NARROW_NCHW_PLANES = [(5, 10, 10, 1, 3, 1, 1), (4, 7, 13, 2, 3, 2, 1), (3, 20, 20, 1, 5, 1, 2),
                       (2, 28, 28, 1, 7, 1, 3), (2, 39, 17, 1, 7, 2, 3)]


def _narrow_plane_paths(case, channels):
    """(whether the forward and the input gradient ran torch's own calls, whether both equal torch's
    to the bit) for `case` with `channels` input channels, batch 2."""
    import xsep.functional as F

    _, h, w, m, k, stride, pad = case
    torch.manual_seed(0)
    x = torch.randn(2, channels, h, w, requires_grad=True)
    weight = torch.randn(channels * m, 1, k, k, requires_grad=True)
    bias = torch.randn(channels * m)
    with torch.profiler.profile() as forward:
        y = F.depthwise_conv2d(x, weight, bias, stride=stride, padding=pad, backend="native")
    g = torch.randn_like(y)
    with torch.profiler.profile() as backward:
        (gi,) = torch.autograd.grad(y, [x], g)
    # xsep's kernels often sum in oneDNN's order too: the calls themselves tell the paths apart.
    ran = ("aten::convolution" in {e.name for e in forward.events()},
           "aten::convolution_backward" in {e.name for e in backward.events()})
    expected = torch.nn.functional.conv2d(x, weight, bias, stride, pad, groups=channels)
    (expected_gi,) = torch.autograd.grad(expected, [x], g)
    return ran, torch.equal(y, expected) and torch.equal(gi, expected_gi)


@pytest.mark.parametrize("case", _NARROW_NCHW_PLANES, ids=lambda c: f"{c[2]}wide_k{c[4]}_s{c[5]}_m{c[3]}")
def test_narrow_nchw_float32_planes_on_onednn_only_when_asked(case):
    # XSEP_CPU_NCHW_DEPTHWISE=narrow runs torch's own depthwise convolution for the forward and the
    # input gradient of narrow float32 planes, small layers and large (its forward and input gradient
    # are then torch's to the bit); every other setting, the default included, runs xsep's kernels
    # (checked against float64 by the reference sweeps).
    if not torch.backends.mkldnn.is_available():
        pytest.skip("this torch was built without oneDNN")
    on_onednn = "cpu_nchw_depthwise=onednn on narrow float32 planes" in torch.ops.xsep._build_info()
    for channels in (case[0], 160):
        ran, same = _narrow_plane_paths(case, channels)
        assert ran == (on_onednn, on_onednn)
        assert same or not on_onednn


# (N, C, H, W, M, kernel, stride, padding, activation, O): small NCHW planes of 128 or more planes,
# which run in channel blocks by default in float32 (the other types there under
# XSEP_CPU_NCHW_DEPTHWISE=blocks, test_cpu_nchw_depthwise_in_blocks_everywhere). The depthwise op
# (O None; the activation on its input): 7x7 and 10x12 planes, output rows of 7 at stride 2, 5x5 on
# 20-wide planes, 7x7 kernels; channels not a multiple of 16, a depth multiplier, odd padding. The
# fused op's depthwise half (the activation between the halves; csrc/cpu/separable_conv2d.cpp:
# DepthwiseBandNchw, which its backward runs again): 7x7 and 10x10 planes (several images side by
# side in a band), stride 2, a depth multiplier, 5x5 and 7x7 kernels, asymmetric padding.
_CHANNEL_BLOCK_CASES = [
    (2, 70, 7, 7, 1, 3, 1, 1, "none", None), (1, 130, 10, 12, 2, 3, 1, 1, "relu", None),
    (2, 96, 14, 13, 1, 3, 2, 1, "none", None), (3, 50, 20, 20, 1, 5, 1, 2, "relu", None),
    (2, 80, 12, 12, 1, 7, 1, (3, 2, 1, 3), "none", None),
    (2, 70, 7, 7, 1, 3, 1, 1, "relu6", 24), (3, 64, 10, 10, 2, 3, 1, 1, "none", 40),
    (2, 96, 14, 14, 1, 3, 2, 1, "relu", 16), (2, 80, 12, 12, 1, 5, 1, 2, "none", 32),
    (2, 72, 9, 9, 1, 7, 1, (3, 2, 1, 3), "relu6", 8),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", _CHANNEL_BLOCK_CASES, ids=lambda c: ("separable" if c[9] else "depthwise")
                         + f"_{c[0]}x{c[1]}x{c[2]}x{c[3]}_k{c[5]}_s{c[6]}")
def test_native_nchw_channel_blocks_matches_reference(case, dtype):
    # The NCHW output and every gradient against the float64 reference.
    require_native()
    n, c, h, w, m, k, stride, padding, act, o = case
    padding = padding if isinstance(padding, tuple) else (padding,) * 4
    inputs = [torch.randn(n, c, h, w, dtype=dtype), torch.randn(c * m, 1, k, k, dtype=dtype)]
    if o is None:  # depthwise_conv2d(x, weight, bias, *geometry)
        op, geometry, names = "depthwise_conv2d", ((stride, stride), padding, (1, 1), act), ["input", "weight", "bias"]
        inputs.append(torch.randn(c * m, dtype=dtype))
    else:  # separable_conv2d(x, dw, pw, bias, *geometry, dw_bias)
        op, geometry = "separable_conv2d", ((stride, stride), padding, (1, 1), "none", act)
        names = ["input", "depthwise_weight", "pointwise_weight", "bias", "depthwise_bias"]
        inputs += [torch.randn(o, c * m, 1, 1, dtype=dtype), torch.randn(o, dtype=dtype), torch.randn(c * m, dtype=dtype)]

    def call(fn, *args):
        return fn(*args, *geometry) if o is None else fn(*args[:4], *geometry, args[4])

    got = check_against_reference(lambda *args: call(getattr(ops(), op), *args),
                                  lambda *args: call(getattr(reference, op), *args), inputs, names)
    assert got["output"].is_contiguous()


# (N, C, H, W, activation, O): float32 NCHW 3x3 layers at unit stride with padding 1 whose planes
# are 10 to 56 wide and hold at least 100 values, which the AVX-512 build runs on the shifted-rows
# kernel (csrc/cpu/depthwise_nchw_kernels_impl.h: forward_shifted; depthwise_conv2d.cpp:
# nchw_shifted): the depthwise op's forward (O None; the activation on its input) and the fused op's
# depthwise half (the activation between the halves), which its backward runs again. Their edges:
# the smallest plane it takes (10x10, and 4 rows of 25), the widest (56), rows of a vector plus a few
# values (19, 17) and odd ones (13x11, 37), a plane that ends a vector early, tall planes one and two
# values wide (every lane's left and right taps off the row), channels not a multiple of 16, several
# images side by side in a band (the fused op's 10x10, 11x13 and 100x1 planes). Other builds run the
# same cases on their own paths.
_SHIFTED_CASES = [
    (2, 5, 10, 10, "none", None), (1, 3, 4, 25, "relu", None), (3, 7, 19, 19, "relu", None),
    (1, 2, 56, 56, "none", None), (2, 3, 13, 11, "none", None), (1, 4, 17, 37, "relu", None),
    (2, 2, 120, 1, "none", None), (1, 3, 60, 2, "none", None), (2, 4, 100, 1, "none", 6),
    (3, 6, 10, 10, "relu6", 8), (2, 5, 19, 19, "none", 12), (2, 3, 11, 13, "relu", 7), (1, 18, 37, 29, "relu6", 16),
]


@pytest.mark.parametrize("case", _SHIFTED_CASES, ids=lambda c: ("separable" if c[5] else "depthwise")
                         + f"_{c[0]}x{c[1]}x{c[2]}x{c[3]}_{c[4]}")
def test_native_nchw_shifted_rows_match_reference(case):
    # The NCHW output and every gradient against the float64 reference.
    require_native()
    n, c, h, w, act, o = case
    torch.manual_seed(0)
    inputs = [away_from_zero(n, c, h, w).float(), torch.randn(c, 1, 3, 3)]
    if o is None:  # depthwise_conv2d(x, weight, bias, *geometry)
        op, geometry, names = "depthwise_conv2d", ((1, 1), (1, 1, 1, 1), (1, 1), act), ["input", "weight", "bias"]
        inputs.append(torch.randn(c))
    else:  # separable_conv2d(x, dw, pw, bias, *geometry, dw_bias)
        op, geometry = "separable_conv2d", ((1, 1), (1, 1, 1, 1), (1, 1), "none", act)
        names = ["input", "depthwise_weight", "pointwise_weight", "bias", "depthwise_bias"]
        inputs += [torch.randn(o, c, 1, 1), torch.randn(o), torch.randn(c)]

    def call(fn, *args):
        return fn(*args, *geometry) if o is None else fn(*args[:4], *geometry, args[4])

    got = check_against_reference(lambda *args: call(getattr(ops(), op), *args),
                                  lambda *args: call(getattr(reference, op), *args), inputs, names)
    assert got["output"].is_contiguous()


@pytest.mark.parametrize("variable, value, choices", [
    ("XSEP_CPU_STREAM_STORES", "sometimes", "'auto', 'always', 'never'"),
    ("XSEP_CPU_PREFETCH", "maybe", "'auto', 'always', 'never'"),
    ("XSEP_CPU_RUN_VECTORS", "two", "'auto', 'short-rows', 'every-row'"),
    ("XSEP_CPU_DEPTHWISE_RUNS", "some", "'auto', 'always', 'never'"),
    ("XSEP_CPU_WEIGHT_PACKING", "both", "'auto', 'pack', 'in-place'"),
    ("XSEP_CPU_NCHW_DEPTHWISE", "xsep", "'auto', 'planes', 'blocks', 'narrow'"),
])
def test_cpu_setting_bad_name(variable, value, choices):
    result = subprocess.run([sys.executable, "-c", "import torch, xsep.functional as F; "
                             "x = torch.randn(1, 2, 3, 3).to(memory_format=torch.channels_last); "
                             "w = torch.randn(2, 1, 3, 3, requires_grad=True); "
                             "F.depthwise_conv2d(x, w, padding=1, backend='native').sum().backward(); "
                             "F.depthwise_conv2d(x.contiguous(), torch.randn(2, 1, 3, 3), padding=1, backend='native')"],
                            env={**_subprocess_env(), variable: value}, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert f"{variable}='{value}' is not one of {choices}" in result.stderr


# Every GEMM library


# The libraries of the products: XSEP_CPU_GEMM (the pointwise forward and input-gradient products),
# XSEP_CPU_WEIGHT_GEMM (the weight gradients') and XSEP_CPU_FUSED_GEMM (the fused op's forward and
# depthwise-output gradient), with the key _build_info reports each under.
_PRODUCT_LIBRARIES = {"XSEP_CPU_GEMM": ("cpu_gemm", ["blas", "onednn"]),
                      "XSEP_CPU_WEIGHT_GEMM": ("cpu_weight_gemm", ["blas", "xsep"]),
                      "XSEP_CPU_FUSED_GEMM": ("cpu_fused_gemm", ["library", "xsep"])}


@pytest.mark.slow
@pytest.mark.parametrize("variable,library", [(v, lib) for v, (_, libs) in _PRODUCT_LIBRARIES.items() for lib in libs])
def test_every_cpu_gemm_library(variable, library):
    # The products run on whichever library is faster on this kind of processor (csrc/cpu/gemm.h),
    # so the rest of the suite tests only that one. The variable forces the other: rerun the
    # pointwise and fused ops' reference sweep, gradchecks and thread-count tests with it (a fresh
    # process, as the choice is made once per process).
    key = _PRODUCT_LIBRARIES[variable][0]
    active = torch.ops.xsep._build_info().split(f"{key}=")[1].split(";")[0]
    if library == active:
        pytest.skip(f"{library} is the active library ({variable}), tested by the rest of the suite")
    if library == "onednn" and not torch.backends.mkldnn.is_available():
        pytest.skip("this torch was built without oneDNN")
    _assert_suite_passes({variable: library},
                         "((pointwise or separable) and ((native and matches_reference) or gradcheck)) or thread_count")


@pytest.mark.parametrize("variable", list(_PRODUCT_LIBRARIES))
def test_cpu_gemm_library_bad_name(variable):
    result = subprocess.run([sys.executable, "-c", "import torch, xsep.functional as F; "
                             "x = torch.randn(1, 2, 3, 3).to(memory_format=torch.channels_last).requires_grad_(); "
                             "F.pointwise_conv2d(x, torch.randn(4, 2, 1, 1, requires_grad=True), backend='native').sum().backward(); "
                             "F.separable_conv2d(x, torch.randn(2, 1, 3, 3), torch.randn(4, 2, 1, 1), padding=1, backend='native')"],
                            env={**_subprocess_env(), variable: "mkl-please"}, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode != 0
    libraries = ", ".join(f"'{lib}'" for lib in _PRODUCT_LIBRARIES[variable][1])
    assert f"{variable}='mkl-please' is not one of {libraries}" in result.stderr
