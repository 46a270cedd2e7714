"""torch.export (xsep/ops/decompositions.py): every xsep op is kept by torch.export.export, lowered to
core ATen convolutions by `run_decompositions()` with no table passed (numerics checked against the
eager kernels), kept when the user deletes it from the table, never decomposed by torch.compile, and
an exported program survives save and load."""

from __future__ import annotations

import io
import operator
import subprocess
import sys

import pytest
import torch
from torch import nn

import xsep
from xsep.ops import decompositions

# (op, args) cases: asymmetric padding, stride 2, dilation, depth multiplier 2, every activation.
DEPTHWISE_ARGS = [([2, 1], [0, 1, 2, 1], [1, 1], "relu"), ([1, 1], [1, 1, 1, 1], [2, 1], "none")]
MID_ACTIVATIONS = ["none", "relu", "relu6", "elu"]


def _depthwise_cases():
    for i, (stride, padding, dilation, act) in enumerate(DEPTHWISE_ARGS):
        x = torch.randn(2, 4, 9, 8)
        w = torch.randn(8, 1, 3, 3)  # depth multiplier 2
        out = torch.ops.xsep.depthwise_conv2d(x, w, None, stride, padding, dilation, act)
        g = torch.randn_like(out)
        rest = (stride, padding, dilation, act)
        yield f"depthwise-{i}", "depthwise_conv2d", (x, w, torch.randn(8), *rest)
        yield f"depthwise_grad_input-{i}", "depthwise_conv2d_grad_input", (g, x, w, *rest)
        yield f"depthwise_grad_weight-{i}", "depthwise_conv2d_grad_weight", (g, x, w, *rest)
        yield f"depthwise_backward-{i}", "depthwise_conv2d_backward", (g, x, w, *rest)


def _pointwise_cases():
    x, w = torch.randn(2, 6, 5, 4), torch.randn(10, 6, 1, 1)
    g = torch.randn(2, 10, 5, 4)
    yield "pointwise", "pointwise_conv2d", (x, w, torch.randn(10))
    yield "pointwise_grad_input", "pointwise_conv2d_grad_input", (g, x, w)
    yield "pointwise_grad_weight", "pointwise_conv2d_grad_weight", (g, x, w)


def _separable_cases():
    for i, mid in enumerate(MID_ACTIVATIONS):
        stride, padding, dilation, act = DEPTHWISE_ARGS[i % len(DEPTHWISE_ARGS)]
        x = torch.randn(2, 4, 9, 8)
        dw, pw = torch.randn(8, 1, 3, 3), torch.randn(6, 8, 1, 1)
        rest = (stride, padding, dilation, act, mid)
        out = torch.ops.xsep.separable_conv2d(x, dw, pw, None, *rest)
        yield f"separable-{mid}", "separable_conv2d", (x, dw, pw, torch.randn(6), *rest)
        # with a depthwise bias on alternate cases: its gradient is the backward's 4th output (empty without)
        dw_bias = (torch.randn(8),) if i % 2 else ()
        yield (f"separable_backward-{mid}", "separable_conv2d_backward",
               (torch.randn_like(out), x, dw, pw, *rest, *dw_bias))


def _cases():
    torch.manual_seed(0)
    return [*_depthwise_cases(), *_pointwise_cases(), *_separable_cases()]


class _Call(nn.Module):
    """A module calling one op with its non-tensor arguments fixed."""

    def __init__(self, op, args):
        super().__init__()
        self.op = op
        self.tensor_positions = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]
        self.args = args

    def forward(self, *tensors):
        args = list(self.args)
        for i, t in zip(self.tensor_positions, tensors):
            args[i] = t
        return self.op(*args)


def _non_core_ops(ep) -> set[str]:
    """Targets outside the Core ATen opset (tuple indexing aside)."""
    return {str(n.target) for n in ep.graph.nodes if n.op == "call_function" and n.target is not operator.getitem
            and not (isinstance(n.target, torch._ops.OpOverload) and torch.Tag.core in n.target.tags)}


def _targets(ep) -> set[str]:
    return {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}


def _xsep_targets(ep) -> set[str]:
    return {t for t in _targets(ep) if t.startswith("xsep")}


@pytest.fixture(scope="module")
def cases():
    from helpers import require_native

    require_native()
    return _cases()


def test_every_op_has_a_decomposition(native):
    ops = {name.split("::")[1] for name in torch._C._dispatch_get_all_op_names() if name.startswith("xsep::")}
    assert set(decompositions.DECOMPOSITIONS) == {name for name in ops if not name.startswith("_")}


@pytest.mark.parametrize("index", range(19))
def test_run_decompositions_lowers_each_op_to_core_aten(cases, index):
    assert len(cases) == 19
    name, op_name, args = cases[index]
    op = getattr(torch.ops.xsep, op_name).default
    module = _Call(op, args)
    tensors = tuple(a for a in args if isinstance(a, torch.Tensor))
    ep = torch.export.export(module, tensors)
    assert _xsep_targets(ep) == {f"xsep.{op_name}.default"}  # export keeps the op
    lowered = ep.run_decompositions()
    targets = _targets(lowered)
    assert not _xsep_targets(lowered), targets
    assert not _non_core_ops(lowered), targets
    assert targets & {"aten.convolution.default", "aten.convolution_backward.default"}, targets
    expected = op(*args)
    got = lowered.module()(*tensors)
    for e, g in zip(*(o if isinstance(o, tuple) else (o,) for o in (expected, got))):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-4 * e.abs().amax().item() if e.numel() else 0.0)


def _model():
    # backend="native" by name: the automatic choice may take torch for NCHW CPU tensors (xsep.backends)
    torch.manual_seed(0)
    return nn.Sequential(
        xsep.SeparableConv2d(4, 8, 3, stride=2, padding="same", input_activation="relu", mid_activation="elu",
                             backend="native"),
        nn.BatchNorm2d(8),
        xsep.DepthwiseConv2d(8, 5, padding=(1, 3, 2, 2), depth_multiplier=2, bias=True, backend="native"),
    ).eval()


def test_model_round_trip_with_and_without_decompositions(native, tmp_path):
    model, x = _model(), torch.randn(2, 4, 11, 10)
    ep = torch.export.export(model, (x,))
    assert _xsep_targets(ep) == {"xsep.separable_conv2d.default", "xsep.depthwise_conv2d.default"}
    for program in (ep, ep.run_decompositions()):
        path = tmp_path / "model.pt2"
        torch.export.save(program, path)
        loaded = torch.export.load(path)
        assert _targets(loaded) == _targets(program)
        x2 = torch.randn(2, 4, 11, 10)
        torch.testing.assert_close(loaded.module()(x2), model(x2), rtol=1e-4, atol=1e-5)


def test_xception_tiny_lowers_to_convolutions(native):
    torch.manual_seed(0)
    model = xsep.models.xception_tiny(num_classes=10).eval()
    x = torch.randn(1, 3, 71, 71)
    lowered = torch.export.export(model, (x,)).run_decompositions()
    assert not _xsep_targets(lowered) and not _non_core_ops(lowered)
    torch.testing.assert_close(lowered.module()(x), model(x), rtol=1e-4, atol=1e-4)


def test_deleting_the_op_from_the_table_keeps_it(native):
    model, x = _model(), torch.randn(2, 4, 11, 10)
    table = torch.export.default_decompositions()
    del table[torch.ops.xsep.separable_conv2d.default]
    kept = torch.export.export(model, (x,)).run_decompositions(table)
    assert _xsep_targets(kept) == {"xsep.separable_conv2d.default"}
    torch.testing.assert_close(kept.module()(x), model(x), rtol=1e-4, atol=1e-5)


class _RawOps(nn.Module):
    """The compiled ops called directly (their torch.library autograd), without xsep.functional."""

    def __init__(self):
        super().__init__()
        self.dw, self.pw = nn.Parameter(torch.randn(8, 1, 3, 3)), nn.Parameter(torch.randn(6, 8, 1, 1))
        self.dw2 = nn.Parameter(torch.randn(6, 1, 3, 3))

    def forward(self, x):
        y = torch.ops.xsep.separable_conv2d(x, self.dw, self.pw, None, [2, 2], [0, 1, 0, 1], [1, 1], "relu", "elu")
        return torch.ops.xsep.depthwise_conv2d(y, self.dw2, None, [1, 1], [1, 1, 1, 1], [1, 1], "none")


def test_torch_compile_keeps_the_ops(native):
    # The decompositions apply only while exporting: torch.compile still calls xsep's kernels,
    # forward and backward.
    from torch._functorch.aot_autograd import aot_module_simplified

    graphs = []

    def backend(gm, example_inputs):
        def record(g, _):
            graphs.append(str(g.graph))
            return g
        return aot_module_simplified(gm, example_inputs, fw_compiler=record, bw_compiler=record)

    model = _RawOps()
    x = torch.randn(2, 4, 11, 10, requires_grad=True)
    out = torch.compile(model, backend=backend, fullgraph=True)(x)
    out.sum().backward()
    forward, backward = graphs
    assert "xsep.separable_conv2d" in forward and "xsep.depthwise_conv2d" in forward
    assert "xsep.separable_conv2d_backward" in backward and "xsep.depthwise_conv2d_backward" in backward
    assert "aten.convolution" not in forward + backward
    torch.testing.assert_close(out, model(x), rtol=1e-4, atol=1e-5)


def test_inductor_compiles_models_with_xsep_ops(native):
    # In a fresh process: Inductor is imported after xsep, the order in which its decomposition table
    # could list xsep's ops (and then refuse them as fallbacks).
    # The library as the suite loads it (tests/helpers.py: prebuilt, else built just in time), before Inductor.
    code = ("import torch, xsep\n"
            "from xsep import _extension\n"
            "assert _extension.load(), (xsep.__file__, _extension.load_error())\n"
            "from torch._inductor.decomposition import select_decomp_table\n"
            "assert torch.ops.xsep.separable_conv2d.default not in select_decomp_table()\n"
            "layer = xsep.SeparableConv2d(4, 8, 3, padding=(0, 1, 0, 1), mid_activation='relu', backend='native')\n"
            "x = torch.randn(2, 4, 9, 9)\n"
            "f = lambda x: torch.ops.xsep.separable_conv2d(x, layer.depthwise.weight, layer.pointwise.weight, None,"
            " [1, 1], [0, 1, 0, 1], [1, 1], 'none', 'relu').relu()\n"
            "torch.testing.assert_close(torch.compile(f, fullgraph=True)(x), f(x))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


def test_eager_autograd_unchanged(native):
    # The kernels on the Python dispatcher must not reroute eager autograd: still the ops' own formula.
    x = torch.randn(2, 4, 11, 10, requires_grad=True)
    out = _RawOps()(x)
    name = type(out.grad_fn).__name__.lower()  # the op's Function, not a convolution's backward
    assert "depthwise" in name and "convolution" not in name, name
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_exported_program_serialises_to_bytes(native):
    ep = torch.export.export(_model(), (torch.randn(1, 4, 11, 10),))
    buffer = io.BytesIO()
    torch.export.save(ep, buffer)
    buffer.seek(0)
    assert _xsep_targets(torch.export.load(buffer)) == _xsep_targets(ep)
