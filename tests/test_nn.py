"""xsep.SeparableConv2d and xsep.DepthwiseConv2d as drop-ins for their nn.Conv2d equivalents:
outputs, gradients, state_dicts, initialisation, repr, factory kwargs, torch.compile, backends."""

from __future__ import annotations

import copy
import math
from collections import OrderedDict

import pytest
import torch
from helpers import dispatched_ops, require_native
from torch import nn

import xsep
from xsep import functional as XF
from xsep.testing import FIXED_TOLERANCE, rel_error


def conv_pair(c, o, k, stride=1, padding=0, dilation=1, m=1, bias=True, **factory):
    """The module pair SeparableConv2d replaces, with the parameter names it promises."""
    return nn.Sequential(OrderedDict(
        depthwise=nn.Conv2d(c, c * m, k, stride, padding, dilation, groups=c, bias=False, **factory),
        pointwise=nn.Conv2d(c * m, o, 1, bias=bias, **factory),
    ))


def assert_same_outputs_and_grads(ours: nn.Module, theirs: nn.Module, x: torch.Tensor, tol: float):
    """Same output for x, same input gradient and same parameter gradients (matched by name; the
    modules must not share parameters)."""
    ours.zero_grad(set_to_none=True)
    theirs.zero_grad(set_to_none=True)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1, y2 = ours(x1), theirs(x2)
    assert y1.shape == y2.shape
    assert rel_error(y1, y2) <= tol
    g = torch.randn_like(y1)
    y1.backward(g)
    y2.backward(g)
    assert rel_error(x1.grad, x2.grad) <= tol
    theirs_params = dict(getattr(theirs, "_orig_mod", theirs).named_parameters())
    for name, p in getattr(ours, "_orig_mod", ours).named_parameters():
        assert rel_error(p.grad, theirs_params[name].grad) <= tol, name


SEPARABLE_CONFIGS = [
    # (in, out, kernel, stride, padding, dilation, depth_multiplier, bias)
    pytest.param(3, 8, 3, 1, 1, 1, 1, True, id="k3-pad1"),
    pytest.param(5, 7, (3, 5), 2, (1, 2), 1, 2, False, id="k3x5-s2-pad_pair-M2-nobias"),
    pytest.param(4, 6, 3, (2, 1), 2, 2, 1, True, id="k3-s2x1-d2"),
    pytest.param(6, 4, 1, 1, 0, 1, 3, True, id="k1-M3"),
]


@pytest.mark.parametrize("c, o, k, stride, padding, dilation, m, bias", SEPARABLE_CONFIGS)
def test_separable_equals_conv_pair(backend, c, o, k, stride, padding, dilation, m, bias):
    # The promise of the class: load the nn.Conv2d pair's state_dict (same keys, strict) and get
    # the pair's outputs and gradients; and the other way round, its state_dict loads into the pair.
    pair = conv_pair(c, o, k, stride, padding, dilation, m, bias, dtype=torch.float64)
    ours = xsep.SeparableConv2d(c, o, k, stride, padding, dilation, m, bias, backend=backend, dtype=torch.float64)
    assert list(ours.state_dict()) == list(pair.state_dict())
    ours.load_state_dict(pair.state_dict())
    x = torch.randn(2, c, 9, 8, dtype=torch.float64)
    assert_same_outputs_and_grads(ours, pair, x, FIXED_TOLERANCE[torch.float64])

    # Round trip the other way: a trained xsep module exported to plain PyTorch.
    other = xsep.SeparableConv2d(c, o, k, stride, padding, dilation, m, bias, dtype=torch.float64)
    back = conv_pair(c, o, k, stride, padding, dilation, m, bias, dtype=torch.float64)
    back.load_state_dict(other.state_dict())
    for name, t in other.state_dict().items():
        assert torch.equal(back.state_dict()[name], t)


@pytest.mark.parametrize("c, k, stride, padding, dilation, m, bias", [
    pytest.param(3, 3, 1, 1, 1, 1, False, id="k3-pad1"),
    pytest.param(4, (5, 3), (1, 2), (2, 0), (1, 2), 2, True, id="k5x3-s1x2-d1x2-M2-bias"),
    pytest.param(13, 7, 2, 3, 1, 1, True, id="k7-s2-c13"),
])
def test_depthwise_equals_grouped_conv(backend, c, k, stride, padding, dilation, m, bias):
    # DepthwiseConv2d is nn.Conv2d(c, c * m, ..., groups=c): same state_dict, outputs and gradients.
    conv = nn.Conv2d(c, c * m, k, stride, padding, dilation, groups=c, bias=bias, dtype=torch.float64)
    ours = xsep.DepthwiseConv2d(c, k, stride, padding, dilation, m, bias, backend=backend, dtype=torch.float64)
    assert list(ours.state_dict()) == list(conv.state_dict())
    ours.load_state_dict(conv.state_dict())
    assert_same_outputs_and_grads(ours, conv, torch.randn(2, c, 10, 9, dtype=torch.float64),
                                  FIXED_TOLERANCE[torch.float64])
    back = nn.Conv2d(c, c * m, k, stride, padding, dilation, groups=c, bias=bias, dtype=torch.float64)
    back.load_state_dict(ours.state_dict())


@pytest.mark.parametrize("padding", ["same", (1, 0, 2, 1)], ids=["same", "4-tuple"])
def test_padding_modes_equal_explicit_zero_padding(backend, padding):
    # padding='same' at stride 2 on an even input (TF semantics: the extra pixel at the bottom/
    # right, which PyTorch's own 'same' refuses at stride 2) and a (top, bottom, left, right)
    # tuple equal nn.ZeroPad2d followed by the unpadded pair.
    h, w, k, stride = 8, 10, 3, 2
    if padding == "same":
        top, bottom = XF.same_padding(h, k, stride, 1)
        left, right = XF.same_padding(w, k, stride, 1)
        assert (top, bottom, left, right) == (0, 1, 0, 1)
    else:
        top, bottom, left, right = padding
    pair = conv_pair(4, 6, k, stride, 0, dtype=torch.float64)
    ours = xsep.SeparableConv2d(4, 6, k, stride, padding, backend=backend, dtype=torch.float64)
    ours.load_state_dict(pair.state_dict())
    padded = nn.Sequential(nn.ZeroPad2d((left, right, top, bottom)), pair)
    x = torch.randn(2, 4, h, w, dtype=torch.float64)
    y = ours(x)
    if padding == "same":
        assert y.shape[2:] == (math.ceil(h / stride), math.ceil(w / stride))
    assert rel_error(y, padded(x)) <= FIXED_TOLERANCE[torch.float64]

    dw = xsep.DepthwiseConv2d(4, k, stride, padding, backend=backend, dtype=torch.float64)
    dw.load_state_dict(pair.depthwise.state_dict())
    want = pair.depthwise(nn.functional.pad(x, (left, right, top, bottom)))
    assert rel_error(dw(x), want) <= FIXED_TOLERANCE[torch.float64]


def test_activations_equal_activation_modules(backend):
    # input_activation / mid_activation are nn.ReLU before the pair and the activation module
    # between its halves, without modifying the input.
    ours = xsep.SeparableConv2d(3, 5, 3, padding=1, input_activation="relu", mid_activation="relu6",
                                backend=backend, dtype=torch.float64)
    pair = conv_pair(3, 5, 3, padding=1, dtype=torch.float64)
    pair.load_state_dict(ours.state_dict())
    # Scale the depthwise weights so that some depthwise outputs exceed 6 and relu6 clips them.
    with torch.no_grad():
        ours.depthwise.weight.mul_(8)
        pair.depthwise.weight.mul_(8)
    unfused = nn.Sequential(nn.ReLU(), pair.depthwise, nn.ReLU6(), pair.pointwise)
    x = torch.randn(2, 3, 7, 7, dtype=torch.float64)
    assert (pair.depthwise(x.relu()) > 6).any()
    assert rel_error(ours(x), unfused(x)) <= FIXED_TOLERANCE[torch.float64]


def test_depthwise_bias_equals_conv_pair_with_bias_before_activation(backend):
    # depthwise_bias=True: the pair's depthwise conv has a bias, added before the mid activation; the
    # state_dicts load both ways and outputs and gradients (the bias's included) match the modules.
    ours = xsep.SeparableConv2d(4, 6, 3, padding=1, depth_multiplier=2, mid_activation="relu6", backend=backend,
                                dtype=torch.float64, depthwise_bias=True)
    pair = nn.Sequential(OrderedDict(
        depthwise=nn.Conv2d(4, 8, 3, padding=1, groups=4, dtype=torch.float64),
        relu6=nn.ReLU6(),
        pointwise=nn.Conv2d(8, 6, 1, dtype=torch.float64),
    ))
    assert list(ours.state_dict()) == list(pair.state_dict())
    assert "depthwise_bias=True" in repr(ours)
    with torch.no_grad():
        pair.depthwise.weight.mul_(8)
        pair.depthwise.bias.mul_(8)  # both kinks of relu6 crossed
    ours.load_state_dict(pair.state_dict())
    x = torch.randn(2, 4, 7, 7, dtype=torch.float64)
    assert (pair.depthwise(x) > 6).any() and (pair.depthwise(x) < 0).any()
    assert_same_outputs_and_grads(ours, pair, x, FIXED_TOLERANCE[torch.float64])
    pair.load_state_dict(ours.state_dict())


# --------------------------------------------------------------------------------------------------
# Initialisation


def test_initialisation_matches_conv2d_under_same_seed():
    # reset_parameters draws exactly what nn.Conv2d draws (Kaiming-uniform weights, then bias),
    # in the same order: with one seed, identical parameters to the pair / grouped conv.
    torch.manual_seed(1)
    ours = xsep.SeparableConv2d(6, 10, 3, depth_multiplier=2)
    torch.manual_seed(1)
    pair = conv_pair(6, 10, 3, m=2)
    for (name, a), (_, b) in zip(ours.state_dict().items(), pair.state_dict().items()):
        assert torch.equal(a, b), name
    torch.manual_seed(2)
    dw = xsep.DepthwiseConv2d(6, 5, bias=True)
    torch.manual_seed(2)
    conv = nn.Conv2d(6, 6, 5, groups=6, bias=True)
    assert torch.equal(dw.weight, conv.weight) and torch.equal(dw.bias, conv.bias)


def test_initialisation_statistics():
    # The distributions themselves: uniform in +-1/sqrt(fan_in) (fan_in = kh*kw for the depthwise
    # weight, C*M for the pointwise weight and the bias), filling the interval, mean ~0, and the
    # uniform's standard deviation bound/sqrt(3). Independent of the seed-matching test above.
    # Sample-size-aware limits: 6 standard errors (a uniform's kurtosis is 1.8, hence the 0.8).
    m = xsep.SeparableConv2d(64, 256, 3, depth_multiplier=2)
    for name, t, fan_in in [("depthwise.weight", m.depthwise.weight, 9),
                            ("pointwise.weight", m.pointwise.weight, 128),
                            ("pointwise.bias", m.pointwise.bias, 128)]:
        bound, n = 1 / math.sqrt(fan_in), t.numel()
        t = t.detach().double()
        assert t.abs().max() <= bound, name
        assert t.abs().max() >= 0.95 * bound, name
        assert abs(t.mean()) <= 6 * bound / math.sqrt(3 * n), name
        assert abs(t.std() / (bound / math.sqrt(3)) - 1) <= 6 * math.sqrt(0.8 / (4 * n)), name
    dw = xsep.DepthwiseConv2d(512, 3, depth_multiplier=2, bias=True)
    assert dw.weight.abs().max() <= 1 / 3 and dw.bias.abs().max() <= 1 / 3


def test_reset_parameters_redraws():
    # reset_parameters re-initialises in place (as after nn.Module.to_empty()).
    m = xsep.SeparableConv2d(4, 4, 3)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    m.reset_parameters()
    assert all(not torch.equal(before[k], v) for k, v in m.state_dict().items())


# --------------------------------------------------------------------------------------------------
# repr and factory kwargs


@pytest.mark.parametrize("args, kwargs", [
    ((3, 16, 3), {}),
    ((3, 16, 3), dict(padding=1, bias=False)),
    ((8, 4, (3, 5)), dict(stride=2, padding=(1, 2), dilation=2)),
    ((8, 4, 5), dict(stride=(2, 1), padding=0)),
], ids=["default", "pad-nobias", "stride-pad_pair-dilation", "zero_padding"])
def test_separable_repr_like_conv2d(args, kwargs):
    # Printed like nn.Conv2d (one line, the non-default arguments): for what the two share, the
    # very same text.
    ours = xsep.SeparableConv2d(*args, **kwargs)
    assert repr(ours) == repr(nn.Conv2d(*args, **kwargs)).replace("Conv2d(", "SeparableConv2d(", 1)


def test_repr_shows_xsep_arguments():
    # xsep's own arguments appear when not at their defaults, still on one line.
    m = xsep.SeparableConv2d(3, 16, 3, padding="same", depth_multiplier=2, input_activation="relu",
                             mid_activation="elu", backend="torch")
    assert repr(m) == ("SeparableConv2d(3, 16, kernel_size=(3, 3), stride=(1, 1), padding='same', "
                       "depth_multiplier=2, input_activation='relu', mid_activation='elu', backend='torch')")
    assert repr(xsep.SeparableConv2d(3, 4, 3, padding=(0, 1, 0, 1))) == (
        "SeparableConv2d(3, 4, kernel_size=(3, 3), stride=(1, 1), padding=(0, 1, 0, 1))")


@pytest.mark.parametrize("kwargs", [{}, dict(stride=2, padding=(1, 2), dilation=2)], ids=["default", "args"])
def test_depthwise_repr_like_conv2d(kwargs):
    # DepthwiseConv2d prints like the grouped nn.Conv2d it replaces, minus what it implies
    # (out_channels = in_channels * depth_multiplier, groups = in_channels).
    conv = repr(nn.Conv2d(5, 5, 3, groups=5, bias=False, **kwargs))
    expected = conv.replace("Conv2d(5, 5, ", "DepthwiseConv2d(5, ").replace(", groups=5, bias=False", "")
    assert repr(xsep.DepthwiseConv2d(5, 3, **kwargs)) == expected
    assert repr(xsep.DepthwiseConv2d(5, 3, depth_multiplier=2, bias=True)) == (
        "DepthwiseConv2d(5, kernel_size=(3, 3), stride=(1, 1), depth_multiplier=2, bias=True)")


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16], ids=["f64", "bf16"])
def test_factory_kwargs(dtype):
    # device= and dtype= create the parameters there, as for nn.Conv2d.
    for m in (xsep.SeparableConv2d(4, 6, 3, dtype=dtype, device="cpu"),
              xsep.DepthwiseConv2d(4, 3, bias=True, dtype=dtype, device="cpu")):
        assert {(p.dtype, p.device.type) for p in m.parameters()} == {(dtype, "cpu")}
        assert m(torch.randn(1, 4, 5, 5, dtype=dtype)).dtype == dtype


def test_meta_device_shape_inference():
    # device='meta' builds the module without memory (large-model initialisation); it runs on meta
    # inputs (through the torch backend, the automatic choice for meta tensors), giving shapes.
    m = xsep.SeparableConv2d(4, 6, 3, stride=2, padding="same", device="meta", dtype=torch.float64)
    assert {(p.device.type, p.dtype) for p in m.parameters()} == {("meta", torch.float64)}
    y = m(torch.empty(2, 4, 9, 8, device="meta", dtype=torch.float64))
    assert y.device.type == "meta" and y.shape == (2, 6, 5, 4)
    d = xsep.DepthwiseConv2d(4, 3, device="meta")
    assert d.weight.device.type == "meta"


# --------------------------------------------------------------------------------------------------
# Backends and torch.compile


@pytest.mark.parametrize("module", ["separable", "depthwise"])
def test_backend_argument_honoured(backend, module, monkeypatch):
    # backend= picks the implementation that actually runs (seen at the dispatcher), whatever
    # XSEP_BACKEND says.
    monkeypatch.setenv("XSEP_BACKEND", "torch" if backend != "torch" else "native")
    m = (xsep.SeparableConv2d(3, 4, 3, backend=backend) if module == "separable"
         else xsep.DepthwiseConv2d(3, 3, backend=backend))
    ran = dispatched_ops(m, torch.randn(1, 3, 6, 6))
    xsep_ops = {op for op in ran if op.startswith("xsep::")}
    if backend == "native":
        assert xsep_ops == {f"xsep::{module}_conv2d"}
        assert "aten::convolution" not in ran
    else:
        assert not xsep_ops and "aten::convolution" in ran


def test_unavailable_backend_argument_raises():
    # An explicit backend that cannot run says so at forward time (the device is known only then).
    m = xsep.SeparableConv2d(3, 4, 3, backend="triton")
    with pytest.raises(RuntimeError, match="xsep backend 'triton' .*cannot run on cpu: .+"):
        m(torch.randn(1, 3, 6, 6))


def public_call(module: str, m: nn.Module):
    """(xsep.functional's function, its arguments but the input) for module m's call."""
    if module == "separable":
        return XF.separable_conv2d, (m.depthwise.weight, m.pointwise.weight, m.pointwise.bias, m.stride, m.padding,
                                     m.dilation, m.input_activation, m.mid_activation, None, m.depthwise.bias)
    return XF.depthwise_conv2d, (m.weight, m.bias, m.stride, m.padding, m.dilation, m.input_activation)


@pytest.fixture
def native_is_automatic(monkeypatch):
    """The automatic choice is the native backend for every op and layout, as on the CPUs whose
    committed results show it faster (not all do: xsep/_measured.py), its remembered choices
    forgotten before and after."""
    from xsep import backends

    monkeypatch.setattr(backends, "measured_faster_on_cpu", lambda *args, **kwargs: True)
    monkeypatch.setattr(XF, "_AUTOMATIC", {})
    monkeypatch.setattr(XF, "_NATIVE_LAYOUTS", {})


@pytest.mark.parametrize("module", ["separable", "depthwise"])
@pytest.mark.usefixtures("native_is_automatic")
def test_module_calls_skip_the_public_function(module, monkeypatch):
    # Calls on the native backend skip the public function (XF.module_call): inference calls take
    # the kernel directly, training calls autograd.plain_function, and both give the public path's
    # results and gradients to the bit; 'same' padding, autocast, a torch.func transform and a call
    # the op refuses take the public path (for the refusal: the public checks' message, not the op's).
    require_native()
    kwargs = {"padding": 1, "input_activation": "relu", "bias": True}
    m = (xsep.SeparableConv2d(4, 6, 3, mid_activation="relu6", depthwise_bias=True, **kwargs) if module == "separable"
         else xsep.DepthwiseConv2d(4, 3, depth_multiplier=2, **kwargs))
    same = copy.deepcopy(m)
    same.padding = "same"
    x = torch.randn(2, 4, 7, 7)
    public, args = public_call(module, m)
    xg = x.clone().requires_grad_()
    expected = public(xg, *args)
    grad = torch.randn_like(expected)
    expected_grads = torch.autograd.grad(expected, [xg, *m.parameters()], grad)

    def second_derivatives(f):  # of a gradient penalty (create_graph=True)
        (gx,) = torch.autograd.grad(f(xg).square().sum(), xg, create_graph=True)
        return torch.autograd.grad(gx.square().sum(), list(m.parameters()))

    expected_second = second_derivatives(lambda t: public(t, *args))
    calls = []
    monkeypatch.setattr(XF, f"{module}_conv2d", lambda *a, **k: calls.append(1) or public(*a, **k))
    with torch.no_grad():
        assert torch.equal(m(x), expected) and not calls
    out = m(xg)
    assert out.grad_fn is not None and not calls
    assert torch.equal(out, expected)
    for got, want in zip(torch.autograd.grad(out, [xg, *m.parameters()], grad), expected_grads):
        assert torch.equal(got, want)
    for got, want in zip(second_derivatives(m), expected_second):
        assert torch.equal(got, want)
    assert not calls
    with torch.no_grad():
        same(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            m(x)
    assert len(calls) == 2
    torch.func.grad(lambda t: m(t).sum())(x)
    assert len(calls) == 3
    for mode in (torch.no_grad(), torch.enable_grad()):
        with mode, pytest.raises(ValueError, match=r"^(depthwise_)?weight must have shape .* C = 5"):
            m(torch.randn(2, 5, 7, 7, requires_grad=True))


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("module", ["separable", "depthwise"])
@pytest.mark.usefixtures("native_is_automatic")
def test_module_calls_go_from_the_library_to_the_kernel(module, monkeypatch):
    # Inference calls on the native backend go through xsep._C's function for the op
    # (csrc/module_calls.cpp), in both layouts, under no_grad and inference_mode, to the public
    # path's bits, and the profiler still sees the op; it declines (None, the module then takes the
    # Python path: same results) under a dispatch mode, autocast, tracing, forward-mode AD, for a
    # tensor subclass and where the automatic choice is not native; training calls go through it too.
    require_native()
    from torch.utils._python_dispatch import TorchDispatchMode

    from xsep import _extension

    m = (xsep.SeparableConv2d(4, 6, 3, padding=1, input_activation="relu", mid_activation="relu6",
                              depthwise_bias=True) if module == "separable"
         else xsep.DepthwiseConv2d(4, 3, padding=(1, 2), stride=(1, 2), depth_multiplier=2, bias=True))
    public, args = public_call(module, m)
    native = _extension.MODULE_CALLS[f"{module}_conv2d"]
    returned = []
    monkeypatch.setitem(_extension.MODULE_CALLS, f"{module}_conv2d",
                        lambda *a: returned.append(native(*a)) or returned[-1])

    class Passthrough(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            return func(*args, **(kwargs or {}))

    class Subclass(torch.Tensor):
        pass

    x = torch.randn(2, 4, 7, 9)
    for layout in (torch.contiguous_format, torch.channels_last):
        xl = x.contiguous(memory_format=layout)
        with torch.no_grad():
            expected = public(xl, *args)
            returned.clear()
            assert torch.equal(m(xl), expected)
            assert len(returned) == 1 and torch.equal(returned[0], expected)
            with torch.profiler.profile() as prof:
                m(xl)
            assert f"xsep::{module}_conv2d" in {e.name for e in prof.events()}
        with torch.inference_mode():
            returned.clear()
            assert torch.equal(m(xl), expected) and len(returned) == 1 and returned[0] is not None
    declined = {}
    with torch.no_grad():
        for name, context in (("dispatch mode", Passthrough()), ("autocast", torch.autocast("cpu", torch.bfloat16))):
            returned.clear()
            with context:
                m(x)
            declined[name] = returned[:]
        returned.clear()
        assert torch.equal(m(x.as_subclass(Subclass)), public(x, *args))
        declined["subclass"] = returned[:]
        returned.clear()
        torch.jit.trace(m, x, check_trace=False)
        declined["tracing"] = returned[:]
        monkeypatch.setenv("XSEP_BACKEND", "torch")
        returned.clear()
        assert torch.allclose(m(x), public(x, *args), atol=1e-5)
        declined["XSEP_BACKEND"] = returned[:]
        monkeypatch.delenv("XSEP_BACKEND")
        m.backend = "torch"
        returned.clear()
        assert torch.allclose(m(x), public(x, *args), atol=1e-5)
        declined["backend torch"] = returned[:]
        m.backend = None
        with torch.autograd.forward_ad.dual_level():
            returned.clear()
            assert torch.equal(m(x), public(x, *args))
            declined["forward AD"] = returned[:]
    assert declined == {name: [None] for name in declined}
    # With gradients to record it answers False, and the autograd Function it then applies runs the
    # kernel through it in its forward (grad mode off).
    returned.clear()
    assert torch.equal(m(x.clone().requires_grad_()), public(x, *args))
    assert len(returned) == 2 and returned[0] is False and torch.equal(returned[1], public(x, *args))


def test_module_call_functions_decline_what_they_cannot_take():
    # xsep._C's functions answer None (the module then takes the Python path) for arguments not in
    # the form they read and where a check throws in C++ (autocast knows no meta device), rather
    # than raising or letting the exception reach the interpreter.
    require_native()
    from xsep import _extension

    f = _extension.MODULE_CALLS["depthwise_conv2d"]
    x, w = torch.randn(2, 8, 5, 5), torch.randn(8, 1, 3, 3)
    args = (None, (1, 1), (1, 1, 1, 1), (1, 1), "none")
    with torch.no_grad():
        assert f(3, x, w, *args) is not None
        assert f(3, x.to("meta"), w.to("meta"), *args) is None
        assert f(3, x, w, None, [1, 1], (1, 1, 1, 1), (1, 1), "none") is None  # a list, not a tuple
        assert f(3, x, w, None, (1, 1), (1, 1), (1, 1), "none") is None  # padding of 2
        assert f(2 ** 70, x, w, *args) is None  # a mask out of range
        assert f(3, x, w) is None
        assert f(3, x, w, None, (1, 1), (1, 1, 1, 1), (1, 1), "gelu") is None  # the op refuses it


def test_torch_compile_fullgraph():
    # torch.compile(fullgraph=True) (Inductor, CPU) traces the module without a graph break (the
    # op is opaque, its fake kernel gives shapes) and gives eager's outputs and gradients, also
    # after a recompile for a second input size (TF 'same' padding depends on it).
    require_native()
    torch._dynamo.reset()
    m = xsep.SeparableConv2d(4, 8, 3, stride=2, padding="same", input_activation="relu",
                             mid_activation="relu6", backend="native")
    compiled = torch.compile(copy.deepcopy(m), fullgraph=True)
    for shape in ((2, 4, 9, 8), (1, 4, 12, 11)):
        x = torch.randn(shape)
        assert_same_outputs_and_grads(compiled, m, x, FIXED_TOLERANCE[torch.float32])
    torch._dynamo.reset()
