"""ONNX export (xsep/onnx.py; xsep/ops/decompositions.py for the dynamo exporter): models with xsep
layers export to standard ONNX (no custom domain) with both exporters, the same graph whatever
backend the layers use, and onnxruntime reproduces PyTorch's outputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import xsep

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")  # the dynamo exporter's

EXPORTERS = ["torchscript", "dynamo"]


def export(model: nn.Module, x: torch.Tensor, exporter: str, path) -> onnx.ModelProto:
    model.eval()
    if exporter == "dynamo":
        torch.onnx.export(model, (x,), str(path), dynamo=True, verbose=False)
    else:
        torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    return proto


# Nodes that only compute constants: the TorchScript exporter builds F.pad's pads tensor from them
# (the torch backend's graph), xsep's symbolic functions write it as one constant.
_CONSTANT_OPS = {"Constant", "Identity", "ConstantOfShape", "Concat", "Reshape", "Slice", "Transpose", "Cast"}


def data_nodes(proto: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in proto.graph.node if n.op_type not in _CONSTANT_OPS]


def op_types(proto: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in data_nodes(proto)]


def assert_standard(proto: onnx.ModelProto) -> None:
    custom = {(n.domain, n.op_type) for n in proto.graph.node if n.domain not in ("", "ai.onnx")}
    assert not custom, f"nodes outside the standard ONNX domain: {custom}"
    assert {o.domain for o in proto.opset_import} <= {"", "ai.onnx"}, list(proto.opset_import)
    assert not proto.functions, [f.name for f in proto.functions]


def run_onnx(proto: onnx.ModelProto, x: torch.Tensor) -> torch.Tensor:
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    return torch.from_numpy(out)


def check_outputs(model: nn.Module, proto: onnx.ModelProto, x: torch.Tensor) -> None:
    with torch.no_grad():
        expected = model(x)
    got = run_onnx(proto, x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())


# Each layer with the ONNX nodes it must become: Pad appears only for asymmetric padding (the
# dynamo exporter's optimizer then folds it into the Conv's pads).
LAYERS = {
    "separable-asymmetric-relu6": (
        lambda b: xsep.SeparableConv2d(8, 16, 3, stride=2, padding=(0, 1, 0, 1), input_activation="relu",
                                       mid_activation="relu6", backend=b),
        ["Relu", "Pad", "Conv", "Clip", "Conv"]),
    "separable-same-elu": (
        lambda b: xsep.SeparableConv2d(8, 12, 5, padding="same", dilation=2, depth_multiplier=2, bias=False,
                                       mid_activation="elu", backend=b),
        ["Conv", "Elu", "Conv"]),
    "depthwise-same-stride2": (  # 'same' at stride 2 on an even size: the extra pixel bottom/right
        lambda b: xsep.DepthwiseConv2d(8, 3, stride=2, padding="same", bias=True, input_activation="relu",
                                       backend=b),
        ["Relu", "Pad", "Conv"]),
}


def expected_ops(expected: list[str], exporter: str) -> list[str]:
    return [t for t in expected if t != "Pad"] if exporter == "dynamo" else expected


def _layer_graph(name: str, backend: str, exporter: str, tmp_path, device="cpu"):
    factory, expected = LAYERS[name]
    torch.manual_seed(0)
    model = factory(backend).to(device)
    x = torch.randn(2, 8, 10, 10, device=device)
    proto = export(model, x, exporter, tmp_path / f"{name}-{backend}-{exporter}.onnx")
    return model, x, proto, expected


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_exports_standard_onnx_that_onnxruntime_runs(backend, exporter, name, tmp_path):
    model, x, proto, expected = _layer_graph(name, backend, exporter, tmp_path)
    assert_standard(proto)
    assert op_types(proto) == expected_ops(expected, exporter)
    check_outputs(model, proto, x)


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_graph_is_the_same_for_every_backend(native, exporter, tmp_path):
    # The compiled ops go through xsep's symbolic functions / decompositions, the torch backend
    # through PyTorch's own conv2d: both must give one graph, node for node, attributes included.
    for name in LAYERS:
        graphs = {}
        for backend in ("native", "torch"):
            _, _, proto, _ = _layer_graph(name, backend, exporter, tmp_path)
            graphs[backend] = [(n.op_type, sorted((a.name, onnx.helper.get_attribute_value(a)) for a in n.attribute))
                               for n in data_nodes(proto)]
        assert graphs["native"] == graphs["torch"], name


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_triton_layers_export_the_same_graph(triton_device, exporter, tmp_path):
    model, x, proto, expected = _layer_graph("separable-asymmetric-relu6", "triton", exporter, tmp_path,
                                             triton_device)
    assert_standard(proto)
    assert op_types(proto) == expected_ops(expected, exporter)
    check_outputs(model.cpu(), proto, x.cpu())


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_xception_tiny(exporter, tmp_path):
    torch.manual_seed(0)
    model = xsep.models.xception_tiny(num_classes=10)
    x = torch.randn(2, 3, 71, 71)
    proto = export(model, x, exporter, tmp_path / "xception.onnx")
    assert_standard(proto)
    types = op_types(proto)
    # every separable unit: a grouped Conv then a 1x1 Conv; the units' input ReLUs stay Relu nodes
    separable = sum(isinstance(m, xsep.SeparableConv2d) for m in model.modules())
    grouped = [n for n in proto.graph.node if n.op_type == "Conv"
               and onnx.helper.get_attribute_value(next(a for a in n.attribute if a.name == "group")) > 1]
    assert len(grouped) == separable
    assert {"Conv", "Relu", "Add", "Gemm"} <= set(types) or {"Conv", "Relu", "Add", "MatMul"} <= set(types)
    check_outputs(model, proto, x)


class _MobileBlock(nn.Module):
    """Depthwise conv feeding a 1x1 conv (fused by xsep.convert), then a BN'd depthwise one."""

    def __init__(self):
        super().__init__()
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
        self.pw = nn.Conv2d(8, 16, 1)
        self.dw2 = nn.Conv2d(16, 16, 3, stride=2, padding=1, groups=16)
        self.bn = nn.BatchNorm2d(16)

    def forward(self, x):
        return torch.relu(self.bn(self.dw2(self.pw(self.dw(x)))))


def _converted(model: nn.Module) -> nn.Module:
    model = xsep.convert(model.eval())
    assert any(isinstance(m, (xsep.SeparableConv2d, xsep.DepthwiseConv2d)) for m in model.modules())
    return model


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_converted_model(exporter, tmp_path):
    torch.manual_seed(0)
    model = _converted(_MobileBlock())
    assert isinstance(model.dw, xsep.SeparableConv2d)
    x = torch.randn(2, 8, 12, 12)
    proto = export(model, x, exporter, tmp_path / "block.onnx")
    assert_standard(proto)
    assert op_types(proto).count("Conv") == 3
    check_outputs(model, proto, x)


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_converted_torchvision_mobilenet(exporter, tmp_path):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = _converted(torchvision.models.mobilenet_v2(weights=None, num_classes=10))
    x = torch.randn(1, 3, 64, 64)
    proto = export(model, x, exporter, tmp_path / "mobilenet.onnx")
    assert_standard(proto)
    check_outputs(model, proto, x)
