"""Derivatives beyond the first backward (xsep/ops/autograd.py): forward mode (torch.func.jvp,
torch.autograd.forward_ad), double backward (gradgradcheck, a gradient penalty) and torch.func's
transforms (grad, vjp, jacrev, vmap: per-sample gradients), on every CPU backend, compared with
finite differences in float64 and with the `torch` backend (PyTorch's own convolutions). The
Triton backend's are in tests/triton/test_triton_registration.py."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.autograd.forward_ad as fwAD
from torch.func import functional_call, grad, jacrev, jvp, vjp, vmap

import xsep
from xsep import functional as XF
from xsep.testing import rel_error

F64 = torch.float64

# (op, the functional call on tensors (x, *params), parameter shapes for input [2, 3, 7, 6]).
# Asymmetric padding, stride, dilation and every activation, so each formula's every term matters;
# the input activation's relu and the mid activations' kinks are crossed by the random values.
CASES = {
    "depthwise": (lambda x, w, b, backend: XF.depthwise_conv2d(
        x, w, b, stride=(2, 1), padding=(1, 0, 2, 1), dilation=(1, 2), input_activation="relu", backend=backend),
        [(6, 1, 3, 3), (6,)]),
    "pointwise": (lambda x, w, b, backend: XF.pointwise_conv2d(x, w, b, backend=backend), [(4, 3, 1, 1), (4,)]),
    "separable-relu6": (lambda x, dw, pw, b, backend: XF.separable_conv2d(
        x, dw, pw, b, padding="same", input_activation="relu", mid_activation="relu6", backend=backend),
        [(6, 1, 3, 3), (5, 6, 1, 1), (5,)]),
    "separable-elu": (lambda x, dw, pw, b, backend: XF.separable_conv2d(
        x, dw, pw, b, stride=2, padding=1, mid_activation="elu", backend=backend),
        [(3, 1, 3, 3), (5, 3, 1, 1), (5,)]),
}


def _case(name, backend, dtype=F64, scale=3.0):
    """(f(x, *params), [x, *params]) with fresh random values; scaled so that relu6 reaches 6."""
    fn, shapes = CASES[name]
    tensors = [scale * torch.randn(2, 3, 7, 6, dtype=dtype)] + [torch.randn(s, dtype=dtype) for s in shapes]
    return functools.partial(fn, backend=backend), tensors


@pytest.mark.parametrize("name", list(CASES))
def test_jvp_matches_finite_differences_and_torch(backend, name):
    # The silent wrong answer this replaces: torch.func.jvp gave an all-zero tangent. Every input
    # gets a tangent; the result must match the torch backend and a central finite difference.
    f, primals = _case(name, backend)
    tangents = [torch.randn_like(t) for t in primals]
    out, t = jvp(f, tuple(primals), tuple(tangents))
    _, t_torch = jvp(functools.partial(f.func, backend="torch"), tuple(primals), tuple(tangents))
    eps = 1e-6
    fd = (f(*[p + eps * d for p, d in zip(primals, tangents)]) - f(*[p - eps * d for p, d in zip(primals, tangents)]))
    fd = fd / (2 * eps)
    assert t.abs().max() > 0.1  # a real tangent, not zeros
    assert rel_error(t, t_torch) <= 1e-12
    assert rel_error(t, fd) <= 1e-6
    assert rel_error(out, f(*primals)) <= 1e-12


@pytest.mark.parametrize("name", ["depthwise", "separable-elu"])
def test_forward_ad_dual_numbers(backend, name):
    # torch.autograd.forward_ad (dual tensors) through a module-free call, one input's tangent only.
    f, primals = _case(name, backend)
    tangent = torch.randn_like(primals[1])
    with fwAD.dual_level():
        out = f(primals[0], fwAD.make_dual(primals[1], tangent), *primals[2:])
        got = fwAD.unpack_dual(out).tangent
    _, want = jvp(lambda w: f.func(primals[0], w, *primals[2:], backend="torch"), (primals[1],), (tangent,))
    assert got is not None and rel_error(got, want) <= 1e-12


def test_raw_op_under_torch_func_raises():
    # A raw op's Autograd kernel cannot join torch.func's transforms: a clear error naming the op
    # and saying what to call instead, never a zero tangent.
    from helpers import require_native

    require_native()
    x, w = torch.randn(1, 2, 5, 5, dtype=F64), torch.randn(2, 1, 3, 3, dtype=F64)
    raw = lambda x: torch.ops.xsep.depthwise_conv2d(x, w, None, [1, 1], [1, 1, 1, 1], [1, 1], "none")  # noqa: E731
    with pytest.raises(RuntimeError, match=r"xsep\.depthwise_conv2d called directly under a torch\.func "
                                           r"transform: call it through xsep\.functional\.depthwise_conv2d"):
        jvp(raw, (x,), (torch.ones_like(x),))


@pytest.mark.parametrize("name", ["depthwise", "separable-elu"])
def test_calls_without_derivatives_skip_the_function(backend, name, monkeypatch):
    # Nothing to record (no_grad, or no tensor that requires grad): the kernel runs directly, without the
    # autograd.Function's per-call binding and context; with a tensor that requires grad, the Function.
    # Same values either way.
    from xsep.ops import autograd

    applied = []
    real = autograd.function
    monkeypatch.setattr(autograd, "function", lambda *key: applied.append(key) or real(*key))
    f, (x, *params) = _case(name, backend)
    with torch.no_grad():
        inference = f(x, *[p.requires_grad_() for p in params])
    assert applied == [] and inference.grad_fn is None
    plain = f(x, *[p.detach() for p in params])
    assert applied == [] and plain.grad_fn is None and torch.equal(plain, inference)
    trained = f(x, *params)
    functions = 0 if backend == "torch" else 1  # the torch backend runs PyTorch's own ops, no xsep Function
    assert len(applied) == functions and trained.grad_fn is not None and torch.equal(trained, inference)


@pytest.mark.parametrize("name", list(CASES))
def test_gradgradcheck(backend, name):
    # Second derivatives (create_graph=True), checked numerically in float64.
    f, tensors = _case(name, backend, scale=1.0)
    tensors = [t.requires_grad_() for t in tensors]
    assert torch.autograd.gradgradcheck(f, tensors, atol=1e-6, rtol=1e-5)


def test_gradient_penalty_matches_torch(backend):
    # A WGAN-GP-style penalty, ||d out / d x||^2, backpropagated to every parameter: the same
    # gradients as with PyTorch's own convolutions.
    def penalty_grads(be):
        torch.manual_seed(1)
        m = xsep.SeparableConv2d(3, 5, 3, padding=1, input_activation="relu", mid_activation="elu", backend=be,
                                 dtype=F64)
        x = torch.randn(2, 3, 6, 6, dtype=F64, requires_grad=True)
        (gx,) = torch.autograd.grad(m(x).square().sum(), x, create_graph=True)
        gx.square().sum().backward()
        return [p.grad for p in m.parameters()] + [x.grad]

    for got, want in zip(penalty_grads(backend), penalty_grads("torch")):
        assert got.abs().max() > 0 and rel_error(got, want) <= 1e-10


def test_torch_func_transforms_on_a_module(backend):
    # grad, vjp and jacrev of a module's functional form, against the torch backend.
    torch.manual_seed(2)
    model = torch.nn.Sequential(xsep.SeparableConv2d(3, 4, 3, padding=1, backend=backend, dtype=F64), torch.nn.ELU(),
                                xsep.DepthwiseConv2d(4, 3, padding="same", bias=True, backend=backend, dtype=F64))
    reference = torch.nn.Sequential(xsep.SeparableConv2d(3, 4, 3, padding=1, backend="torch", dtype=F64),
                                    torch.nn.ELU(), xsep.DepthwiseConv2d(4, 3, padding="same", bias=True,
                                                                         backend="torch", dtype=F64))
    reference.load_state_dict(model.state_dict())
    params = dict(model.named_parameters())
    x = torch.randn(2, 3, 5, 5, dtype=F64)

    def loss(m):
        return lambda p, x: functional_call(m, p, (x,)).square().sum()

    for got, want in zip(grad(loss(model))(params, x).values(), grad(loss(reference))(params, x).values()):
        assert rel_error(got, want) <= 1e-12
    out, pullback = vjp(lambda x: functional_call(model, params, (x,)), x)
    (gx,) = pullback(torch.ones_like(out))
    _, pullback_ref = vjp(lambda x: functional_call(reference, params, (x,)), x)
    assert rel_error(gx, pullback_ref(torch.ones_like(out))[0]) <= 1e-12
    jac = jacrev(lambda x: functional_call(model, params, (x,)))(x[:1])
    jac_ref = jacrev(lambda x: functional_call(reference, params, (x,)))(x[:1])
    assert jac.shape == (1, 4, 5, 5, 1, 3, 5, 5) and rel_error(jac, jac_ref) <= 1e-12


def test_per_sample_gradients_match_a_loop(backend):
    # vmap(grad(...)): per-sample gradients (differentially private training) equal a loop of
    # ordinary backward passes, one sample at a time.
    torch.manual_seed(3)
    model = xsep.SeparableConv2d(3, 4, 3, padding=1, mid_activation="relu", backend=backend, dtype=F64)
    params = {k: v.detach() for k, v in model.named_parameters()}
    x, target = torch.randn(4, 3, 6, 6, dtype=F64), torch.randn(4, 4, 6, 6, dtype=F64)

    def loss(p, xi, ti):
        return (functional_call(model, p, (xi[None],)) - ti[None]).square().mean()

    per_sample = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, target)
    for i in range(4):
        model.zero_grad()
        loss(dict(model.named_parameters()), x[i], target[i]).backward()
        for name, p in model.named_parameters():
            assert rel_error(per_sample[name][i], p.grad) <= 1e-12, name
