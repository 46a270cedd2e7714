"""The CUDA emulator's memory counters (counters.h, the xsep_emu_counters build) on kernels whose
accesses are known (counters_selftest.cu): 32-byte global sectors per warp-level request against the
fewest that could hold its bytes, shared-memory wavefronts per request (32 banks of 4 bytes; 64- and
128-bit accesses in half- and quarter-warp phases), ldmatrix and mma.sync instructions, cp.async, the
distinct bytes a launch reads and writes, and block sampling; and on a real GEMM, that nothing but
the kernel's own data is counted."""

from __future__ import annotations

import json
import math

import emu_build
import pytest
import torch

LANES = range(32)


@pytest.fixture
def emu(request):
    return emu_build.require_ops(request.node.nodeid, name=emu_build.COUNTERS)


def counted(emu, launch, runs=0, run_length=1):
    """What the counters saw of each launch `launch()` made (runs, run_length: the block sample)."""
    emu.counters_start(runs, run_length)
    try:
        launch()
    finally:
        launches = json.loads(emu.counters_stop())
    return launches


def counts_of_one(launches):
    assert len(launches) == 1
    return launches[0]["counts"]


def offsets(values):
    return torch.tensor(list(values), dtype=torch.int32)


@pytest.mark.parametrize("stride, sectors", [(1, 4), (2, 8), (8, 32), (32, 32)])
def test_global_sectors_per_request(emu, stride, sectors):
    x = torch.randn(31 * stride + 1)
    counts = counts_of_one(counted(emu, lambda: emu.counters_selftest_strided_load(x, stride)))
    # one load of 32 floats (128 bytes: 4 sectors at best), one coalesced store; nothing else (not
    # the emulator's own memory, nor the launch's arguments)
    assert counts["global_load"] == dict(requests=1, lanes=32, bytes=128, sectors=sectors, ideal_sectors=4,
                                         wavefronts=0, ideal_wavefronts=0)
    assert counts["global_store"]["sectors"] == counts["global_store"]["ideal_sectors"] == 4
    assert all(counts[kind]["requests"] == 0 for kind in ("shared_load", "shared_store", "ldmatrix", "cp_async"))


def test_distinct_bytes_count_each_byte_once(emu):
    x = torch.randn(32)
    (launch,) = counted(emu, lambda: emu.counters_selftest_repeated_load(x, 3))
    load = launch["counts"]["global_load"]
    assert (load["requests"], load["bytes"], load["sectors"]) == (3, 3 * 128, 3 * 4)
    assert launch["distinct"] == dict(read_bytes=128, read_sectors=4, write_bytes=128, write_sectors=4)


SHARED_CASES = {  # bytes per lane, each lane's byte offset, wavefronts, the ideal
    "32bit-consecutive": (4, [4 * t for t in LANES], 1, 1),
    "32bit-same-bank": (4, [128 * t for t in LANES], 32, 1),
    "32bit-stride-2-words": (4, [8 * t for t in LANES], 2, 1),  # lanes t and t + 16 share a bank
    "32bit-broadcast": (4, [0] * 32, 1, 1),
    "64bit-consecutive": (8, [8 * t for t in LANES], 2, 2),  # two half-warp phases
    "128bit-consecutive": (16, [16 * t for t in LANES], 4, 4),  # four quarter-warp phases
    # the tiled depthwise kernel's reads: 4 lanes of consecutive vectors, 256 bytes to the next 4, so
    # the two groups in a quarter warp hit the same 16 banks (2-way)
    "128bit-tiled-depthwise": (16, [16 * (t % 4) + 256 * (t // 4) for t in LANES], 8, 4),
    "128bit-256-bytes-apart": (16, [256 * t for t in LANES], 32, 4),
    "128bit-broadcast": (16, [0] * 32, 1, 1),
}


@pytest.mark.parametrize("store", [False, True], ids=["load", "store"])
@pytest.mark.parametrize("case", SHARED_CASES)
def test_shared_wavefronts_per_request(emu, case, store):
    width, lane_offsets, wavefronts, ideal = SHARED_CASES[case]
    counts = counts_of_one(counted(emu, lambda: emu.counters_selftest_shared_access(offsets(lane_offsets), width,
                                                                                      store)))
    kind, other = ("shared_store", "shared_load") if store else ("shared_load", "shared_store")
    assert (counts[kind]["requests"], counts[kind]["lanes"], counts[kind]["bytes"]) == (1, 32, 32 * width)
    assert (counts[kind]["wavefronts"], counts[kind]["ideal_wavefronts"]) == (wavefronts, ideal)
    assert counts[other]["requests"] == 0
    assert counts["global_load"]["requests"] == 1  # the offsets


@pytest.mark.parametrize("row_bytes, wavefronts", [(80, 4), (64, 16), (16, 4)])
def test_ldmatrix_wavefronts_and_mma_count(emu, row_bytes, wavefronts):
    # rows 80 bytes apart (the GEMM tiles' 32 + 8 padded bf16) miss each other's banks; 64 bytes apart
    # every other row of a matrix hits the same 4 banks (4-way); 16 apart: rows back to back
    (launch,) = counted(emu, lambda: emu.counters_selftest_ldmatrix_rows(offsets(row_bytes * t for t in LANES), 3))
    ldsm = launch["counts"]["ldmatrix"]
    assert (ldsm["requests"], ldsm["bytes"], ldsm["wavefronts"], ldsm["ideal_wavefronts"]) == (1, 512, wavefronts, 4)
    assert launch["mma"] == 3


def test_cp_async_counts_both_sides(emu):
    src = torch.randn(128)
    (launch,) = counted(emu, lambda: emu.counters_selftest_async_copy(src))
    counts = launch["counts"]
    assert counts["cp_async"] == dict(requests=1, lanes=32, bytes=512, sectors=16, ideal_sectors=16, wavefronts=4,
                                      ideal_wavefronts=4)
    # the copy back: float e of each lane's 16 bytes, lanes 16 bytes apart: 4-way conflicts in shared
    # memory, 4 times the sectors in global memory
    assert counts["shared_load"] == dict(requests=4, lanes=128, bytes=512, sectors=0, ideal_sectors=0, wavefronts=16,
                                         ideal_wavefronts=4)
    assert (counts["global_store"]["sectors"], counts["global_store"]["ideal_sectors"]) == (64, 16)
    assert launch["distinct"] == dict(read_bytes=512, read_sectors=16, write_bytes=512, write_sectors=16)


def test_block_sampling_runs_one_run_per_share_of_the_grid(emu):
    (launch,) = counted(emu, lambda: emu.counters_selftest_grid_of_blocks(100), runs=4, run_length=2)
    assert (launch["blocks"], launch["blocks_run"], launch["runs"]) == (100, 8, 4)
    assert launch["counts"]["global_store"]["requests"] == 8
    out = emu.counters_selftest_grid_of_blocks(100)  # after counters_stop: every block again
    assert out.tolist() == [float(b) for b in range(100) for _ in LANES]

    def blocks_run(blocks, runs, run_length):
        emu.counters_start(runs, run_length)
        try:
            out = emu.counters_selftest_grid_of_blocks(blocks).view(blocks, 32)
        finally:
            emu.counters_stop()
        return [b for b in range(blocks) if not math.isnan(out[b, 0].item())]

    ran = blocks_run(100, 4, 2)
    assert len(ran) == 8 and [b // 25 for b in ran] == [0, 0, 1, 1, 2, 2, 3, 3]  # a run in each quarter
    assert all(ran[i + 1] == ran[i] + 1 for i in range(0, 8, 2))
    # 16 samples of 256 blocks: evenly spaced ones would all fall on one column of a grid 4 blocks wide
    # (as they did on the tiled depthwise kernel's: always its corner tile)
    ran = blocks_run(256, 16, 1)
    assert len(ran) == 16 and {b // 16 for b in ran} == set(range(16)) and len({b % 4 for b in ran}) == 4


def test_a_gemm_reads_its_operands_once_and_runs_every_mma(emu):
    # bf16 C[256, 128] = A[256, 64] . B[64, 128] on tensor cores: every element of A and B read, C
    # written, nothing else; M N K / (16 * 8 * 16) mma.sync whatever the tiles (they divide the sizes)
    m, n, k = 256, 128, 64
    a, b = torch.randn(m, k, dtype=torch.bfloat16), torch.randn(k, n, dtype=torch.bfloat16)
    launches = counted(emu, lambda: emu.pointwise_gemm(a, b, None))
    assert sum(launch["mma"] for launch in launches) == m * n * k // (16 * 8 * 16)
    distinct = launches[0]["distinct"]
    assert (distinct["read_bytes"], distinct["write_bytes"]) == (2 * (m * k + k * n), 2 * m * n)
    for launch in launches:
        for kind, c in launch["counts"].items():
            assert c["sectors"] >= c["ideal_sectors"] and c["wavefronts"] >= c["ideal_wavefronts"], kind
