"""The CUDA emulator's own checks (tests/cuda_emu/selftest.cu: kernels that break CUDA's rules on
purpose): what a GPU would hang on or leave undefined must fail loudly, and a missing
__syncthreads must change the results."""

from __future__ import annotations

import math

import emu_build
import pytest
import torch


@pytest.fixture
def emu(request):  # the emulator's own tests: no guard pages (see conftest.py), except where asked
    return emu_build.require_ops(request.node.nodeid)


def test_threads_that_exit_before_a_barrier_are_a_deadlock(emu):
    emu.selftest_early_exit(64)  # all 64 threads reach it: fine
    with pytest.raises(RuntimeError, match=r"deadlock: 24 of 64 threads exited; 40 wait at __syncthreads"):
        emu.selftest_early_exit(40)


def test_threads_at_different_barriers_are_reported(emu):
    with pytest.raises(RuntimeError, match="threads wait at different __syncthreads"):
        emu.selftest_divergent_barriers()


def test_a_warp_operation_needs_every_lane(emu):
    emu.selftest_partial_warp_mma(32)
    with pytest.raises(RuntimeError, match=r"warp 0: 16 lanes wait at mma\.m16n8k16\.f16"):
        emu.selftest_partial_warp_mma(16)


def test_invalid_launches_are_reported_by_the_launch_check(emu):
    with pytest.raises(RuntimeError, match=r"CUDA launch error \(checked at .*selftest\.cu.*more than 1024 threads"):
        emu.selftest_oversized_launch(True)
    with pytest.raises(RuntimeError, match="a launch error the launcher did not check"):
        emu.selftest_oversized_launch(False)


def test_a_missing_syncthreads_changes_the_results(emu):
    want = [100 + (t + 1) % 64 for t in range(64)]
    assert emu.selftest_neighbour_exchange(True, 100).tolist() == want
    # Without the barrier, threads that run before their neighbour has written (the thread order
    # is shuffled) read the poison shared memory starts with: -1 in every byte.
    assert -1 in emu.selftest_neighbour_exchange(False, 200).tolist()


def test_dynamic_shared_memory_starts_poisoned_in_every_block(emu):
    before, after = emu.selftest_dynamic_shared_memory()
    assert all(math.isnan(v) for v in before.tolist())
    assert after.tolist() == [float(63 - t) for t in range(64)]
    before, _ = emu.selftest_dynamic_shared_memory()
    assert torch.isnan(before).all()


def test_memcheck_faults_on_a_read_past_a_tensor(emu):
    # a depthwise forward told the input has 3 more rows than it has: with the input's end against a
    # guard page, the kernel's first read past it is reported as a memory fault
    emu.set_fence(2)
    x = torch.randn(1, 8, 8, 8)  # [N, H, W, C]
    taps = torch.randn(9, 8)
    params = [1, 8, 11, 8, 1, 8, 3, 3, 1, 1, 1, 1, 1, 1, 11, 8]
    with pytest.raises(RuntimeError, match="memory fault"):
        emu.depthwise_forward_nhwc(x, taps, None, params, False)
    emu.set_fence(0)
    emu.depthwise_forward_nhwc(x, taps, None, params, False)  # unguarded, the same read goes unnoticed
