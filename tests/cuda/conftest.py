"""tests/cuda checks the CUDA ops (csrc/cuda: the host functions' argument checks, kernel choice,
layouts, workspaces and launches, and the kernels) against the float64 reference, on two targets:

- `gpu`: torch.ops.xsep on CUDA tensors (the `cuda` marker: skipped without a GPU, a failure under
  XSEP_REQUIRE_CUDA=1; `-m cuda` selects these alone);
- `emulator`: the same host code and kernels built for the CPU emulator (tests/cuda_emu/emu_build.py)
  and registered for CPU tensors as torch.ops.xsep_emu, with the same schemas: no GPU needed, so CI
  runs them. Every at::empty is NaN-filled there (PyTorch's deterministic mode fills uninitialised
  memory), so an output element that no kernel writes shows up, and a launch error the host code did
  not check fails the test.

Tests take the `target` fixture (`target.ops`, `target.device`); checks that need GPU-sized tensors
take `gpu_target` and run on the GPU only. Shapes stay small enough for the emulator, which runs
every CUDA thread on the CPU (`target.on_gpu` scales the few that are larger on a GPU).
"""

from __future__ import annotations

import dataclasses
import os
import sys

import pytest
import torch
from helpers import require_cuda_kernels

from xsep.ops.schemas import SCHEMAS

_EMU = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "cuda_emu")


@dataclasses.dataclass(frozen=True)
class Target:
    name: str
    ops: object  # torch.ops.xsep or torch.ops.xsep_emu
    device: str

    @property
    def on_gpu(self) -> bool:
        return self.name == "gpu"


def _gpu() -> Target:
    require_cuda_kernels(*SCHEMAS)
    return Target("gpu", torch.ops.xsep, "cuda")


@pytest.fixture(params=[pytest.param("gpu", marks=pytest.mark.cuda), "emulator"])
def target(request):
    if request.param == "gpu":
        yield _gpu()
        return
    if _EMU not in sys.path:
        sys.path.append(_EMU)
    import emu_build

    ops = emu_build.require_ops(request.node.nodeid)
    ops.take_unchecked_launch_error()  # none left over from another test
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    assert torch.empty(4).isnan().all(), "this torch does not fill uninitialised memory in deterministic mode"
    try:
        yield Target("emulator", ops, "cpu")
    finally:
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.utils.deterministic.fill_uninitialized_memory = fill
    error = ops.take_unchecked_launch_error()
    assert not error, f"a launch error the host code did not check: {error}"


@pytest.fixture(params=[pytest.param("gpu", marks=pytest.mark.cuda)])
def gpu_target(request) -> Target:
    return _gpu()
