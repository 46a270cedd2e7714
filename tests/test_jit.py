"""TorchScript: torch.jit.script refuses xsep's modules with a message naming what works instead
(their forward picks a backend at run time); torch.jit.trace records the ops and round-trips."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import xsep

MODULES = {
    "separable": lambda b: xsep.SeparableConv2d(4, 8, 3, stride=2, padding="same", input_activation="relu",
                                                mid_activation="relu6", backend=b),
    "depthwise": lambda b: xsep.DepthwiseConv2d(4, 3, padding=(0, 1, 1, 0), depth_multiplier=2, bias=True,
                                                backend=b),
}


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation and tracer warnings
        yield


@pytest.mark.parametrize("name", sorted(MODULES))
def test_script_says_to_trace_or_compile(name):
    with pytest.raises(RuntimeError, match=r"cannot be compiled by torch\.jit\.script.*torch\.jit\.trace.*"
                                           r"torch\.compile"):
        torch.jit.script(MODULES[name]("torch"))


def test_script_of_a_model_holding_xsep_layers_names_the_layer():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), MODULES["separable"]("torch"))
    with pytest.raises(RuntimeError, match=r"xsep\.SeparableConv2d cannot be compiled by torch\.jit\.script"):
        torch.jit.script(model)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_trace_matches_eager_and_round_trips(backend, name, tmp_path):
    model = MODULES[name](backend)
    x = torch.randn(2, 4, 10, 9)
    traced = torch.jit.trace(model, (x,))
    if backend == "native":  # the trace holds the compiled op itself
        assert f"xsep::{name}_conv2d" in str(traced.graph)
    x2 = torch.randn(2, 4, 10, 9)
    expected = model(x2)
    torch.testing.assert_close(traced(x2), expected)
    path = tmp_path / "traced.pt"
    torch.jit.save(traced, str(path))
    torch.testing.assert_close(torch.jit.load(str(path))(x2), expected)
