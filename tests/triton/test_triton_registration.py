"""The Triton backend as torch ops (torch.ops.xsep_triton.*): opcheck, torch.compile(fullgraph=True),
double backward and forward mode, the public API and backend selection, dtype errors."""

from __future__ import annotations

import pytest
import torch
from triton_cases import random

import xsep
from xsep import backends
from xsep import functional as XF
from xsep.ops import reference
from xsep.testing import rel_error

ARGS = ((2, 1), (1, 0, 2, 1), (1, 2), "relu")


def _inputs(device, dtype=torch.float32):
    x = random(2, 3, 6, 5).to(dtype).to(device).requires_grad_()
    dw = random(6, 1, 3, 3).to(dtype).to(device).requires_grad_()
    pw = random(4, 6, 1, 1).to(dtype).to(device).requires_grad_()
    b = random(4).to(dtype).to(device).requires_grad_()
    return x, dw, pw, b


def _calls(device):
    x, dw, pw, b = _inputs(device)
    xp = random(2, 6, 3, 4).to(device).float().requires_grad_()
    return {
        "depthwise_conv2d": (x, dw, random(6).float().to(device), *ARGS),
        "pointwise_conv2d": (xp, pw, b),
        "separable_conv2d": (x, dw, pw, b, *ARGS, "elu"),
    }


@pytest.mark.parametrize("op", ["depthwise_conv2d", "pointwise_conv2d", "separable_conv2d"])
def test_opcheck(triton_device, op):
    from xsep.triton import _ops  # noqa: F401  (registers torch.ops.xsep_triton)

    args = _calls(triton_device)[op]
    torch.library.opcheck(getattr(torch.ops.xsep_triton, op), args)


@pytest.mark.parametrize("compile_backend", ["aot_eager", "inductor"])
def test_compile_fullgraph(triton_device, compile_backend):
    """The whole public path (functional API, backend='triton') traces without graph breaks and
    matches eager, forward and backward."""
    x, dw, pw, b = _inputs(triton_device)
    torch._dynamo.reset()

    def f(x, dw, pw, b):
        y = XF.separable_conv2d(x, dw, pw, b, stride=(2, 1), padding=(1, 0, 2, 1), dilation=(1, 2),
                                input_activation="relu", mid_activation="relu6", backend="triton")
        z = XF.depthwise_conv2d(y, dw[:4], None, padding=1, backend="triton")
        return XF.pointwise_conv2d(z, pw[:, :4], None, backend="triton")

    compiled = torch.compile(f, backend=compile_backend, fullgraph=True)
    outs = []
    for fn in (f, compiled):
        for t in (x, dw, pw, b):
            t.grad = None
        y = fn(x, dw, pw, b)
        y.square().sum().backward()
        outs.append([y.detach()] + [t.grad.clone() for t in (x, dw, pw, b)])
    for eager, comp in zip(*outs):
        assert rel_error(comp.cpu(), eager.cpu()) <= 1e-6


def test_double_backward_and_jvp(triton_device):
    """create_graph=True gives a differentiable gradient (a gradient penalty backpropagates) and
    torch.func.jvp a real tangent, both equal to the torch backend's (xsep/ops/autograd.py)."""
    x, dw, pw, b = _inputs(triton_device, torch.float64)

    def f(x, dw, pw, b, backend="triton"):
        return XF.separable_conv2d(x, dw, pw, b, padding=1, input_activation="relu", mid_activation="elu",
                                   backend=backend)

    results = {}
    for backend in ("triton", "torch"):
        (gx,) = torch.autograd.grad(f(x, dw, pw, b, backend).square().sum(), x, create_graph=True)
        penalty = torch.autograd.grad(gx.square().sum(), (dw, pw))
        tangents = tuple(torch.ones_like(t) for t in (x, dw, pw, b))
        _, tangent = torch.func.jvp(lambda *a: f(*a, backend=backend), (x, dw, pw, b), tangents)
        results[backend] = (*penalty, tangent)
    for got, want in zip(results["triton"], results["torch"]):
        assert want.abs().max() > 0 and rel_error(got.cpu(), want.cpu()) <= 1e-10


def test_modules_run_on_triton(triton_device):
    """SeparableConv2d(backend='triton') matches the reference with the same parameters."""
    m = xsep.SeparableConv2d(3, 5, 3, padding="same", depth_multiplier=2, input_activation="relu",
                             mid_activation="elu", backend="triton").to(triton_device)
    x = random(2, 3, 7, 7).float().to(triton_device).to(memory_format=torch.channels_last)
    y = m(x)
    assert y.is_contiguous(memory_format=torch.channels_last)
    ref = reference.separable_conv2d(x.double().cpu(), m.depthwise.weight.double().cpu(),
                                     m.pointwise.weight.double().cpu(), m.pointwise.bias.double().cpu(), (1, 1),
                                     (1, 1, 1, 1), (1, 1), "relu", "elu")
    assert rel_error(y.cpu(), ref) <= 1e-5


def test_unsupported_dtype_raises(triton_device):
    x = torch.ones(1, 2, 3, 3, dtype=torch.int32, device=triton_device)
    w = torch.ones(2, 1, 3, 3, dtype=torch.int32, device=triton_device)
    with pytest.raises((TypeError, RuntimeError), match="dtype"):
        XF.depthwise_conv2d(x, w, backend="triton")


def test_never_chosen_automatically_on_cpu(triton_device, no_backend_env):
    """Under the interpreter the triton backend can run CPU tensors when asked for, but automatic
    selection never picks it there."""
    assert backends.select(None, "cpu") != "triton"
    if triton_device == "cpu":
        assert backends.unavailable_reason("triton", "cpu") is None
        assert backends.select("triton", "cpu") == "triton"


def test_reason_on_cpu_without_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    reason = backends.unavailable_reason("triton", "cpu")
    from xsep.triton import _import_error

    if _import_error() is not None:
        assert reason.startswith("Triton is not importable")
    else:
        assert reason == "Triton runs CPU tensors only under TRITON_INTERPRET=1 (the interpreter, for tests)"


def test_expanded_grad_output(triton_device):
    """y.sum().backward() hands the backward ops a grad_output with zero strides: read in place."""
    x, dw, pw, b = _inputs(triton_device)
    XF.separable_conv2d(x, dw, pw, b, padding=1, mid_activation="relu", backend="triton").sum().backward()
    grads = [t.grad for t in (x, dw, pw, b)]
    leaves = [t.detach().cpu().double().requires_grad_() for t in (x, dw, pw, b)]
    reference.separable_conv2d(*leaves, (1, 1), (1, 1, 1, 1), (1, 1), "none", "relu").sum().backward()
    for g, r in zip(grads, leaves):
        assert rel_error(g.cpu(), r.grad) <= 1e-5


def test_alignment():
    """ALIGN (the vectorisation claim) divides every channel count and every batch/spatial stride of
    dimensions longer than 1, and ignores unit weight strides."""
    from xsep.triton import _common

    cl = torch.empty(2, 728, 19, 19).to(memory_format=torch.channels_last)
    assert _common.alignment((728,), (cl,)) == 8
    assert _common.alignment((728, 24), (cl,), (1, 728)) == 8
    assert _common.alignment((3,), (cl,)) == 1
    assert _common.alignment((728,), (torch.empty(2, 728, 19, 19),)) == 1  # NCHW: unit W stride
    assert _common.alignment((12,), (torch.empty(1, 12, 1, 1),)) == 4


BAD_CALLS = {
    "weight shape": ("depthwise_conv2d", lambda x: (x, torch.ones(5, 1, 3, 3), None, (1, 1), (1, 1, 1, 1), (1, 1),
                                                     "none")),
    "stride": ("depthwise_conv2d", lambda x: (x, torch.ones(6, 1, 3, 3), None, (0, 1), (1, 1, 1, 1), (1, 1), "none")),
    "kernel too large": ("depthwise_conv2d", lambda x: (x, torch.ones(3, 1, 9, 3), None, (1, 1), (0, 0, 0, 0),
                                                         (1, 1), "none")),
    "input activation": ("depthwise_conv2d", lambda x: (x, torch.ones(3, 1, 3, 3), None, (1, 1), (1, 1, 1, 1),
                                                         (1, 1), "elu")),
    "bias shape": ("pointwise_conv2d", lambda x: (x, torch.ones(4, 3, 1, 1), torch.ones(5))),
    "mid activation": ("separable_conv2d", lambda x: (x, torch.ones(3, 1, 3, 3), torch.ones(4, 3, 1, 1), None,
                                                       (1, 1), (1, 1, 1, 1), (1, 1), "none", "gelu")),
    "grad_output shape": ("separable_conv2d_backward", lambda x: (torch.ones(2, 4, 5, 5), x, torch.ones(3, 1, 3, 3),
                                                                  torch.ones(4, 3, 1, 1), (1, 1), (1, 1, 1, 1),
                                                                  (1, 1), "none", "none")),
    "dtype": ("pointwise_conv2d", lambda x: (x, torch.ones(4, 3, 1, 1, dtype=torch.float64), None)),
}


@pytest.mark.parametrize("case", list(BAD_CALLS))
def test_errors_match_native(triton_device, case):
    """The Triton ops refuse what the compiled ops refuse, with the same error type and message."""
    from helpers import native_available

    from xsep.triton import _ops  # noqa: F401

    op, make = BAD_CALLS[case]
    args = make(torch.ones(2, 3, 6, 6))
    with pytest.raises((ValueError, TypeError, RuntimeError)) as triton_error:
        getattr(torch.ops.xsep_triton, op)(*args)
    if not native_available():
        pytest.skip("the compiled library (the reference for the messages) did not load")
    with pytest.raises(type(triton_error.value)) as native_error:
        getattr(torch.ops.xsep, op)(*args)
    assert str(native_error.value).split("\n")[0] == str(triton_error.value)


def test_registers_exactly_the_schemas():
    """torch.ops.xsep_triton defines the nine ops with xsep/ops/schemas.py's schemas, and nothing else
    (the compiled namespace's twin of this test is in tests/test_schemas.py)."""
    from xsep.ops.schemas import SCHEMAS
    from xsep.triton import _ops

    registered = {name for name in dir(torch.ops.xsep_triton) if name in SCHEMAS or not name.startswith("_")}
    registered.discard("name")  # the namespace object's own attribute
    assert registered == set(SCHEMAS)
    for name, schema in SCHEMAS.items():
        assert str(getattr(torch.ops.xsep_triton, name).default._schema) == f"{_ops.NS}::{name}{schema}"
