import pytest
import torch

from xsep import testing
from xsep.bench import cases, verify
from xsep.bench.shapes import SeparableLayer

LAYER = SeparableLayer("t", 9, 6, 10)


def test_tolerance_rule_matches_the_tests():
    # The benchmark judges backends with the tests' own rule (xsep.testing), not a copy of it.
    assert verify.tolerance is testing.tolerance and verify.rel_error is testing.rel_error
    assert verify.tolerance(torch.float32, 0.5) == 1e-5
    assert verify.tolerance(torch.bfloat16, 1e-3) == pytest.approx(2e-3 + torch.finfo(torch.bfloat16).eps / 8)


@pytest.mark.parametrize("mode", ["forward", "forward+backward"])
@pytest.mark.parametrize("op", ["depthwise", "pointwise", "separable"])
def test_correct_backend_passes(native, op, mode):
    result = verify.verify(op, mode, LAYER, ["native", "torch"], batch=2, dtype=torch.float32,
                           layout="channels_last", device=torch.device("cpu"))
    assert result["native"]["ok"], result
    assert result["native"]["error"] < 1e-5


@pytest.mark.parametrize("mode", ["forward", "forward+backward"])
def test_wrong_backend_is_caught(native, monkeypatch, mode):
    real_run = cases.run

    def off_by_a_little(op, backend, layer, inputs):
        y = real_run(op, backend, layer, inputs)
        return y * (1 + 1e-4) if backend == "native" else y

    monkeypatch.setattr(cases, "run", off_by_a_little)
    result = verify.verify("separable", mode, LAYER, ["native"], batch=1, dtype=torch.float32,
                           layout="nchw", device=torch.device("cpu"))
    assert not result["native"]["ok"]
    assert result["native"]["error"] == pytest.approx(1e-4, rel=0.05)


def test_low_precision_is_judged_against_torchs_own_error(native):
    result = verify.verify("separable", "forward+backward", LAYER, ["native", "torch"], batch=2,
                           dtype=torch.bfloat16, layout="channels_last", device=torch.device("cpu"))
    assert result["native"]["ok"], result
    assert result["torch"]["error"] > 0 and result["native"]["tolerance"] > 2 * result["torch"]["error"]
