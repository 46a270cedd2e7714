"""Compiles every xsep Triton kernel for a GPU architecture without a GPU (Triton's frontend,
TTGIR, LLVM, PTX and ptxas), so that a CPU-only CI catches what the interpreter cannot: code the
compiler rejects. Also checks that the 16-bit GEMM kernels use Hopper's tensor cores (wgmma) and
that every kernel vectorises its channels_last loads (for 728 channels, not a multiple of 16).

    python tests/triton/compile_for_gpu.py [--arch 90] [--dtypes bf16,f32,f16,f64] [--all-configs]

Run it without TRITON_INTERPRET (the kernels must be defined compiled). Exit status 1 on any failure.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time

if os.environ.get("TRITON_INTERPRET", "") not in ("", "0"):
    sys.exit("compile_for_gpu.py: unset TRITON_INTERPRET (the kernels must be defined for the compiler)")

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from xsep.triton import _common  # noqa: E402
from xsep.triton import depthwise_conv2d as D  # noqa: E402
from xsep.triton import pointwise_conv2d as PW  # noqa: E402
from xsep.triton import separable_conv2d as S  # noqa: E402

HOPPER_SHARED_PER_BLOCK = 227 * 1024  # the most shared memory one block may have on sm_90
DTYPES = {"bf16": torch.bfloat16, "f32": torch.float32, "f16": torch.float16, "f64": torch.float64}
POINTER = {torch.float32: "*fp32", torch.bfloat16: "*bf16", torch.float16: "*fp16", torch.float64: "*fp64"}


def _jobs(dtype):
    """(kernel, pointer arguments, pointers in the accumulation dtype (float32/float64: partial sums and
    the tap-major depthwise weights), constexprs, uses tl.dot)."""
    acc = _common.acc_dtype(dtype)
    dot = dict(ACC=acc, UPCAST=False, PREC=_common.dot_precision(dtype))
    conv = dict(KH=3, KW=3, M=1, RELU_IN=True, ALIGN=8)
    return [
        (D._forward_kernel, ("x_ptr", "b_ptr", "y_ptr"), ("w_ptr",), dict(conv, HAS_BIAS=True, MID_ACT=0, ACC=acc), False),
        (D._grad_input_kernel, ("g_ptr", "x_ptr", "gx_ptr"), ("w_ptr",), dict(conv, ACC=acc), False),
        (D._grad_weight_kernel, ("g_ptr", "x_ptr"), ("part_ptr",), dict(conv, ACC=acc), False),
        (PW._gemm_kernel, ("a_ptr", "b_ptr", "bias_ptr", "c_ptr"), (),
         dict(dot, HAS_BIAS=True, B_K_UNIT=True, ALIGN=8), True),
        (PW._grad_weight_kernel, ("g_ptr", "x_ptr"), ("part_ptr",), dict(dot, ALIGN=8), True),
        (S._forward_kernel, ("x_ptr", "db_ptr", "pw_ptr", "b_ptr", "y_ptr"), ("dw_ptr",),
         dict(**conv, **dot, HAS_BIAS=True, HAS_DW_BIAS=False, MID_ACT=3), True),
        (S._backward_mid_kernel, ("g_ptr", "x_ptr", "db_ptr", "pw_ptr", "gpre_ptr"), ("dw_ptr", "part_ptr"),
         dict(**conv, **dot, TAPS=16, HAS_DW_BIAS=False, MID_ACT=3), True),
        (S._backward_pw_kernel, ("g_ptr", "x_ptr", "db_ptr"), ("dw_ptr", "part_ptr"),
         dict(**conv, **dot, HAS_DW_BIAS=False, MID_ACT=3), True),
    ]


# A channels_last launch with 728 channels (Xception's middle flow): unit channel strides (Triton
# specialises an int argument equal to 1 into a constant), pointers 16-byte aligned, and no other
# divisibility Triton would know of (728 is not a multiple of 16): vectorised loads then come from
# the kernels' ALIGN hints (8 here).
VECTOR_LOAD = r"ld\.global(?:\.\w+)*\.v4\.b32|cp\.async\.c[ag]\.shared\.global.*, 0x10"
UNIT_STRIDES = {"sxc", "syc", "sgc", "sdc", "sak", "scc", "sbk", "spk"}


def _compile(kernel, pointers, partials, constexprs, config, dtype, arch):
    jit = kernel.xsep_plain
    signature, values, attrs = {}, {}, {}
    for i, p in enumerate(jit.params):
        if p.is_constexpr:
            values[(i,)] = constexprs[p.name] if p.name in constexprs else config[p.name]
            signature[p.name] = "constexpr"
        elif p.name in UNIT_STRIDES:
            values[(i,)] = 1
            signature[p.name] = "constexpr"
        elif p.name in partials:
            signature[p.name] = "*fp64" if dtype == torch.float64 else "*fp32"
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif p.name in pointers:
            signature[p.name] = POINTER[dtype]
            attrs[(i,)] = [["tt.divisibility", 16]]
        else:
            signature[p.name] = "i32"
    options = {k: config[k] for k in ("num_warps", "num_stages") if k in config}
    source = ASTSource(fn=jit, signature=signature, constexprs=values, attrs=attrs)
    return triton.compile(source, target=GPUTarget("cuda", arch, 32), options=options)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", type=int, default=90)
    parser.add_argument("--dtypes", default="bf16")
    parser.add_argument("--all-configs", action="store_true", help="every autotuning configuration, not just the first")
    args = parser.parse_args()
    failed = 0
    for name in args.dtypes.split(","):
        dtype = DTYPES[name]
        for kernel, pointers, partials, constexprs, uses_dot in _jobs(dtype):
            # the configuration launch() runs for this dtype (float64: small tiles)
            configs = [kernel.xsep_float64_config if dtype == torch.float64 else kernel.xsep_plain_config]
            if args.all_configs:
                configs = [dict(c.kwargs, num_warps=c.num_warps, num_stages=c.num_stages) for c in kernel.configs]
            for config in configs:
                fn = kernel.xsep_plain.fn
                label = f"{fn.__module__.rsplit('.', 1)[-1]}.{fn.__name__} {name} {config}"
                start = time.time()
                try:
                    compiled = _compile(kernel, pointers, partials, constexprs, config, dtype, args.arch)
                except Exception as e:  # report every failure, not just the first
                    failed += 1
                    print(f"FAIL {label}: {type(e).__name__}: {e}")
                    continue
                shared = getattr(compiled.metadata, "shared", 0)
                if args.arch >= 90 and shared > HOPPER_SHARED_PER_BLOCK:
                    failed += 1  # the launch fails on the GPU: float64's big tiles did, on an H200
                    print(f"FAIL {label}: {shared} bytes of shared memory (sm_90 allows {HOPPER_SHARED_PER_BLOCK})")
                    continue
                ptx = compiled.asm.get("ptx", "")
                tensor_cores = "wgmma" in ptx
                # 16-byte register loads, or 16-byte asynchronous copies to shared memory (tl.dot operands)
                vector_loads = len(re.findall(VECTOR_LOAD, ptx))
                if uses_dot and dtype in (torch.bfloat16, torch.float16) and args.arch >= 90 and not tensor_cores:
                    failed += 1
                    print(f"FAIL {label}: no wgmma instruction (tl.dot does not use tensor cores)")
                    continue
                if vector_loads == 0 and dtype != torch.float64:
                    failed += 1
                    print(f"FAIL {label}: no vectorised global load (channels_last loads are scalar)")
                    continue
                print(f"ok   {time.time() - start:5.1f}s {'wgmma ' if tensor_cores else '      '}"
                      f"{vector_loads:3d} vector loads  {label}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
