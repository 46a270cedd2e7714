"""pytest-benchmark suite: `pytest benchmarks/` (not part of `pytest tests`).

Options:
  --bench-device cuda|cpu   default: cuda when a GPU is visible
  --bench-dtype NAME        default: bfloat16 on GPU, float32 on CPU
  --bench-layout NAME       channels_last (default) or nchw
  --bench-batch N           default: 128 on GPU, 8 on CPU
  --bench-quick             a smoke run: one small layer at batch 2 (CI runs this, so the suite cannot rot)

Every case records in `extra_info` the device, dtype, layout, batch, FLOPs, minimum bytes, and the
`torch` baseline's time measured in the same test with the same timer, so that ratios can be
computed from the saved JSON (`--benchmark-json`) alone.
"""

from __future__ import annotations

import pytest
import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}


def pytest_addoption(parser):
    group = parser.getgroup("xsep benchmarks")
    group.addoption("--bench-device", choices=["cuda", "cpu"], default=None)
    group.addoption("--bench-dtype", choices=list(DTYPES), default=None)
    group.addoption("--bench-layout", choices=["channels_last", "nchw"], default="channels_last")
    group.addoption("--bench-batch", type=int, default=None)
    group.addoption("--bench-quick", action="store_true")


class BenchConfig:
    def __init__(self, config):
        name = config.getoption("--bench-device") or ("cuda" if torch.cuda.is_available() else "cpu")
        self.device = torch.device(name)
        on_gpu = self.device.type == "cuda"
        self.dtype = DTYPES[config.getoption("--bench-dtype") or ("bfloat16" if on_gpu else "float32")]
        self.layout = config.getoption("--bench-layout")
        self.quick = config.getoption("--bench-quick")
        self.batch = config.getoption("--bench-batch") or (2 if self.quick else 128 if on_gpu else 8)


def pytest_generate_tests(metafunc):
    if "layer" in metafunc.fixturenames:
        from xsep.bench.shapes import unique_layers, xception_separable_layers

        layers = unique_layers(xception_separable_layers())
        if metafunc.config.getoption("--bench-quick"):
            layers = [min(layers, key=lambda lc: lc[0].size * lc[0].size * lc[0].in_channels * lc[0].out_channels)]
        metafunc.parametrize("layer", [layer for layer, _ in layers],
                             ids=[f"{l.size}x{l.size}-{l.in_channels}-{l.out_channels}" for l, _ in layers])


@pytest.fixture(scope="session")
def bench_config(request) -> BenchConfig:
    config = BenchConfig(request.config)
    if config.device.type == "cuda":
        if not torch.cuda.is_available():
            pytest.skip("--bench-device cuda but no CUDA GPU is visible")
        torch.backends.cudnn.benchmark = True
    return config
