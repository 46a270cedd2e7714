"""xsep.kernels (`python -m xsep kernels`): the SASS parser, the occupancy rules, the ratchet and the
naming, on small known inputs (the full report runs in CI's quick start: it needs nvcc)."""

from __future__ import annotations

import json

import pytest

from xsep.kernels import cuda, ratchet, sass
from xsep.kernels.occupancy import occupancy

# cuobjdump -sass style: a loop from 0x0040 back-branched at 0x00c0, a subroutine call, the exit trap.
CUOBJDUMP = """
	code for sm_90
		Function : _Z6kernelP6__halfS0_
	.headerflags	@"EF_CUDA_SM90 EF_CUDA_VIRTUAL_SM(EF_CUDA_SM90)"
        /*0000*/                   LDC R1, c[0x0][0x28] ;                       /* 0x00000a00ff017b82 */
        /*0010*/                   LDG.E.128.CONSTANT R4, desc[UR4][R2.64] ;    /* 0x0000000402047981 */
        /*0020*/                   CALL.REL.NOINC 0x100 ;                       /* 0x0000000000347944 */
        /*0030*/                   STS.128 [R0], R4 ;                           /* 0x0000000400007388 */
        /*0040*/                   LDG.E.U16 R8, desc[UR4][R2.64] ;             /* 0x0000000402087981 */
        /*0050*/                   LDS.U16 R9, [R0+0x2] ;                       /* 0x0000020000097984 */
        /*0060*/                   LDSM.16.M88.4 R12, [R0] ;                    /* 0x000000000c0c783b */
        /*0070*/                   HMMA.16816.F32.BF16 R16, R12, R14, R16 ;     /* 0x0000000e0c10723c */
        /*0080*/                   LDGSTS.E.BYPASS.LTC128B.128 [R0], desc[UR4][R2.64] ;
        /*0090*/              @!P0 STG.E.U16 desc[UR4][R6.64], R8 ;             /* 0x0000000806008986 */
        /*00a0*/                   STL.64 [R1], R10 ;                           /* 0x0000000a01007387 */
        /*00b0*/                   LDG.E.64 R10, desc[UR4][R2.64] ;             /* 0x00000004020a7981 */
        /*00c0*/               @P1 BRA 0x40 ;                                   /* 0xfffffffc00e41947 */
        /*00d0*/                   STG.E desc[UR4][R6.64], R8 ;                 /* 0x0000000806007986 */
        /*00e0*/                   EXIT ;                                       /* 0x000000000000794d */
        /*00f0*/                   BRA 0xf0;                                    /* 0xfffffffc00fc7947 */
        /*0100*/                   RET.REL.NODEC R20 0x0 ;                      /* 0xffffff4c14147950 */
		Function : _Z5otherv
        /*0000*/                   STG.E.U16 desc[UR4][R6.64], R8 ;
        /*0010*/                   EXIT ;
"""

# nvdisasm style: labels and branches to them.
NVDISASM = """
        .text._Z4loopv:
        /*0000*/                   MOV R0, RZ ;
.L_x_0:
        /*0010*/                   LDG.E.U16 R2, desc[UR4][R4.64] ;
        /*0020*/                   STG.E.U16 desc[UR4][R6.64], R2 ;
        /*0030*/               @P0 BRA `(.L_x_0) ;
        /*0040*/                   STG.E.U16 desc[UR4][R6.64], R2 ;
        /*0050*/                   EXIT ;
"""


def test_classify_widths():
    assert sass.classify("LDG.E.128.CONSTANT") == "LDG.128"
    assert sass.classify("LDG.E.U16") == "LDG.16"
    assert sass.classify("STG.E.U16") == "STG.16"
    assert sass.classify("LDG.E") == "LDG.32"
    assert sass.classify("LDG.E.64.CONSTANT") == "LDG.64"
    assert sass.classify("LDGSTS.E.BYPASS.LTC128B.128") == "LDGSTS.128"
    assert sass.classify("LDGSTS.E.BYPASS.LTC128B") == "LDGSTS.32"  # a cache hint is not a width
    assert sass.classify("LDS.U8") == "LDS.8"
    assert sass.classify("LDSM.16.M88.4") == "LDSM"
    assert sass.classify("HMMA.16816.F32.BF16") == "HMMA"
    assert sass.classify("CALL.REL.NOINC") == "CALL"
    assert sass.classify("FFMA") is None and sass.classify("LDC.64") is None


def test_sass_counts_and_loop():
    fns = sass.parse(CUOBJDUMP)
    assert set(fns) == {"_Z6kernelP6__halfS0_", "_Z5otherv"}
    k = fns["_Z6kernelP6__halfS0_"]
    assert k.loops == [(0x40, 0xC0)]  # the exit trap (a branch to itself) is no loop
    assert k.counts == {"LDG.128": 1, "CALL": 1, "STS.128": 1, "LDG.16": 1, "LDS.16": 1, "LDSM": 1, "HMMA": 1,
                        "LDGSTS.128": 1, "STG.16": 1, "STL.64": 1, "LDG.64": 1, "STG.32": 1}
    assert k.in_loops == {"LDG.16": 1, "LDS.16": 1, "LDSM": 1, "HMMA": 1, "LDGSTS.128": 1, "STG.16": 1,
                          "STL.64": 1, "LDG.64": 1}
    assert k.global16_in_loops == 2
    other = fns["_Z5otherv"]
    assert other.counts == {"STG.16": 1} and other.global16_in_loops == 0  # not in a loop


def test_sass_label_loops():
    fn = sass.parse(NVDISASM)["_Z4loopv"]
    assert fn.loops == [(0x10, 0x30)]
    assert fn.counts["STG.16"] == 2 and fn.in_loops == {"LDG.16": 1, "STG.16": 1}
    assert fn.to_dict()["global16_in_loops"] == 2


@pytest.mark.parametrize(
    "threads, regs, smem, blocks, warps, limiter",
    [
        (256, 32, 0, 8, 64, "warps"),          # 1024 registers per warp: 64 warps; 8 warps per block
        (256, 64, 0, 4, 32, "registers"),      # 2048 per warp: 32 warps = 4 blocks
        (128, 125, 30720, 4, 16, "registers"),  # 125 * 32 = 4000 -> 4096 per warp: 16 warps
        (128, 40, 100 * 1024, 2, 8, "shared"),  # 228 KB / (100 + 1) KB = 2 blocks
        (32, 16, 0, 32, 32, "blocks"),         # 1 warp per block, at most 32 blocks
        (256, 255, 0, 1, 8, "registers"),      # 255 * 32 = 8160 -> 8192: 8 warps
        (1024, 80, 0, 0, 0, "too large"),      # 32 warps x 2560 registers > 65,536
    ],
)
def test_occupancy(threads, regs, smem, blocks, warps, limiter):
    o = occupancy(threads, regs, smem)
    assert (o.blocks, o.warps, o.limiter) == (blocks, warps, limiter)
    assert o.fraction == warps / 64


def test_occupancy_rejects_oversized():
    assert occupancy(256, 32, 228 * 1024).limiter == "too large"  # above 227 KB per block


def _record(name, spill=0, g16=0, dtype="bf16", serves=None):
    return {"backend": "cuda", "source": "csrc/cuda/x.cu", "name": name, "dtype": dtype,
            "serves": serves or [dtype], "spill_stores": spill, "spill_loads": 0,
            "sass": {"global16_in_loops": g16}}


def test_ratchet(tmp_path):
    records = [_record("a<bf16>", spill=16), _record("b<bf16>", g16=4), _record("c<f32>", spill=99, dtype="f32"),
               _record("sum<f32>", spill=8, dtype="f32", serves=["bf16", "f16", "f32"])]
    current = ratchet.violations(records)
    assert current == {"spill_bytes": {"cuda:x.cu:a<bf16>": 16, "cuda:x.cu:sum<f32>": 8},
                       "global16_in_loops": {"cuda:x.cu:b<bf16>": 4}}  # f32-only kernels are not checked
    path = tmp_path / "baseline.json"
    ratchet.save(current, str(path))
    assert "only shrink" in json.loads(path.read_text())["_comment"]
    baseline = ratchet.load(str(path))
    same = ratchet.compare(current, baseline)
    assert not same.failed and len(same.known) == 3
    # a new violation fails
    new = ratchet.compare(ratchet.violations(records + [_record("d<bf16>", g16=1)]), baseline)
    assert new.failed and new.new == [("global16_in_loops", "cuda:x.cu:d<bf16>", 1)]
    # a worse one fails
    worse = ratchet.compare(ratchet.violations([_record("a<bf16>", spill=20), _record("b<bf16>", g16=4)]), baseline)
    assert worse.failed and worse.worse == [("spill_bytes", "cuda:x.cu:a<bf16>", 20, 16)]
    # fewer (or smaller) passes, and asks for the baseline to be lowered
    fewer = ratchet.compare(ratchet.violations([_record("b<bf16>", g16=2)]), baseline)
    assert not fewer.failed and len(fewer.improved) == 3
    assert any("update-baseline" in line for line in ratchet.format_comparison(fewer))


def test_committed_baseline_loads():
    baseline = ratchet.load()
    assert set(baseline) == set(ratchet.KINDS)


def test_names():
    demangled = ("void xsep::cuda::(anonymous namespace)::gemm_tc_kernel<c10::BFloat16, "
                 "xsep::cuda::StridedOperand<c10::BFloat16>, xsep::cuda::(anonymous namespace)::DepthwiseOperand"
                 "<c10::BFloat16, 8>, xsep::cuda::StorePartial<float> >(long, long, long, long, "
                 "xsep::cuda::StridedOperand<c10::BFloat16>)")
    assert cuda.short_name(demangled) == "gemm_tc_kernel<bf16, Strided, Depthwise<8>, StorePartial<f32>>"
    assert cuda.dtype_of(demangled) == "bf16"
    assert cuda.dtype_of("void xsep::cuda::ordered_sum_kernel<double>(long, long, double const*, double*)") == "f64"


def test_parse_ptxas():
    log = """ptxas info    : Compiling entry function '_Z1kv' for 'sm_90'
ptxas info    : Function properties for _Z1kv
    16 bytes stack frame, 20 bytes spill stores, 24 bytes spill loads
ptxas info    : Used 48 registers, used 1 barriers, 20736 bytes smem, 400 bytes cmem[0]
ptxas info    : Compiling entry function '_Z1jv' for 'sm_90'
ptxas info    : Function properties for _Z1jv
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 26 registers, used 0 barriers
"""
    r = cuda.parse_ptxas(log)
    assert r["_Z1kv"] == cuda.Resources(48, 20, 24, 16, 20736)
    assert r["_Z1jv"] == cuda.Resources(26, 0, 0, 0, 0)


def test_subcommand_registered(capsys):
    from xsep.__main__ import main

    with pytest.raises(SystemExit) as exc:
        main(["kernels", "--help"])
    assert exc.value.code == 0
    assert "--check" in capsys.readouterr().out
