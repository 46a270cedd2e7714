"""What nn.Conv2d users rely on beyond forward and backward, for xsep's modules: `import xsep` stays
light with xsep.models on demand, whole-module torch.save/torch.load, copy.deepcopy, torch.vmap over
the functional ops, inference mode and concurrent forwards from several threads."""

from __future__ import annotations

import copy
import subprocess
import sys
import threading

import pytest
import torch

import xsep
from xsep import functional as XF


def _layer(backend):
    return xsep.SeparableConv2d(4, 8, 3, stride=2, padding="same", input_activation="relu", mid_activation="elu",
                                backend=backend)


def test_import_does_not_load_optional_dependencies_and_models_are_lazy():
    code = ("import sys, xsep\n"
            "heavy = [m for m in ('timm', 'torchvision', 'sklearn', 'matplotlib', 'onnx', 'onnxscript', 'onnxruntime',"
            " 'xsep.models') if m in sys.modules]\n"
            "assert not heavy, heavy\n"
            "model = xsep.models.xception_tiny(num_classes=10)\n"
            "assert 'xsep.models' in sys.modules and type(model).__name__ == 'Xception'\n"
            "assert not [m for m in ('timm', 'torchvision') if m in sys.modules]\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr


def test_models_attribute_and_unknown_attributes():
    model = xsep.models.xception_tiny(num_classes=10).eval()
    assert model(torch.randn(1, 3, 71, 71)).shape == (1, 10)
    with pytest.raises(AttributeError, match="no attribute 'no_such_thing'"):
        xsep.no_such_thing  # noqa: B018


def test_whole_module_save_load_and_deepcopy(backend, tmp_path):
    layer = _layer(backend)
    x = torch.randn(2, 4, 9, 9)
    expected = layer(x)
    torch.save(layer, tmp_path / "layer.pt")
    loaded = torch.load(tmp_path / "layer.pt", weights_only=False)
    clone = copy.deepcopy(layer)
    for other in (loaded, clone):
        assert type(other) is xsep.SeparableConv2d and other.backend == backend
        torch.testing.assert_close(other(x), expected)
    with torch.no_grad():
        clone.depthwise.weight.add_(1.0)  # a deep copy: the original is untouched
    torch.testing.assert_close(layer(x), expected)


def test_vmap_over_the_functional_ops(backend):
    xs = torch.randn(3, 2, 4, 9, 9)
    dw, pw, bias = torch.randn(4, 1, 3, 3), torch.randn(8, 4, 1, 1), torch.randn(8)

    def f(x):
        return XF.separable_conv2d(x, dw, pw, bias, padding=(0, 1, 1, 0), mid_activation="relu6", backend=backend)

    batched = torch.vmap(f)(xs)
    torch.testing.assert_close(batched, torch.stack([f(x) for x in xs]))


def test_inference_mode(backend):
    layer = _layer(backend)
    x = torch.randn(2, 4, 9, 9)
    expected = layer(x).detach()
    with torch.inference_mode():
        out = layer(x)
    assert out.is_inference() and not out.requires_grad
    torch.testing.assert_close(out, expected)


def test_concurrent_forwards(backend):
    layer = _layer(backend)
    inputs = [torch.randn(2, 4, 9, 9) for _ in range(8)]
    expected = [layer(x) for x in inputs]
    results, errors = [None] * len(inputs), []

    def run(i):
        try:
            for _ in range(5):
                results[i] = layer(inputs[i])
        except Exception as e:  # reported below: an assertion in a thread would be lost
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for got, want in zip(results, expected):
        torch.testing.assert_close(got, want)
