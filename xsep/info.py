"""`python -m xsep info`: versions, what the library was built with, and which backend runs where."""

from __future__ import annotations

import platform

import torch

import xsep
from xsep import _extension, backends


def _devices() -> list[str]:
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def collect() -> dict:
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    info = {
        "xsep": xsep.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "triton": triton_version,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "build": _extension.build_info(),
        "backends": {},
    }
    for device in ("cpu", "cuda"):
        for name in backends.BACKENDS:
            if device == "cuda" and not torch.cuda.is_available():
                reason = "no CUDA device is visible"
            else:
                reasons = {op: backends.unavailable_reason(name, device, op) for op in backends.OPS}
                missing = [op for op, r in reasons.items() if r is not None]
                if len(missing) == len(reasons):
                    reason = reasons["separable_conv2d"]
                elif missing:
                    reason = f"only partly: no kernels for {', '.join(missing)} yet"
                else:
                    reason = None
            info["backends"][f"{name}/{device}"] = reason
    info["not_yet_verified_on_gpu"] = sorted(backends.NOT_YET_VERIFIED_ON_GPU)
    return info


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("info", help="versions, build, and which backend is available on which device")
    parser.set_defaults(func=lambda args: main())


def main() -> int:
    info = collect()
    print(f"xsep {info['xsep']}  python {info['python']}  torch {info['torch']} (CUDA {info['torch_cuda']})  "
          f"triton {info['triton']}")
    print(f"GPU: {info['gpu'] or 'none visible'}")
    build = info["build"]
    if build.get("loaded"):
        cuda = f"CPU + CUDA (archs {build['cuda_archs']})" if build["cuda"] == "1" else "CPU only"
        print(f"library: {cuda}; CPU kernels use {build['cpu_isa']}, products {build['cpu_gemm']}, "
              f"weight products {build.get('cpu_weight_gemm', '?')}, "
              f"fused products {build.get('cpu_fused_gemm', '?')}, "
              f"non-temporal stores {build.get('cpu_stream_stores', '?')}, "
              f"prefetching next rows {build.get('cpu_prefetch', '?')}, "
              f"two-vector runs on {build.get('cpu_run_vectors', '?')}, "
              f"depthwise runs {build.get('cpu_depthwise_runs', '?')}, "
              f"weight-product packing {build.get('cpu_weight_packing', '?')}, "
              f"NCHW depthwise {build.get('cpu_nchw_depthwise', '?')}; "
              f"{build['compiler']}; {build['how']} at {build['path']}")
    else:
        print(f"library: not loaded: {build['error']}")
    print("backends:")
    for key, reason in info["backends"].items():
        note = ""
        if key.endswith("/cuda") and key.split("/")[0] in info["not_yet_verified_on_gpu"] and (
                reason is None or reason.startswith("only partly")):
            note = " (used only when asked for by name: not yet verified on a GPU)"
        print(f"  {key:<12} {'available' if reason is None else 'unavailable: ' + reason}{note}")
    for device in _devices():
        print(f"automatic choice on {device}: {backends.select(None, device)}")
    # On CPU it differs per op, layout and allocator setting (the committed results it follows).
    per_op = ", ".join(f"{op} {backends.select(None, 'cpu', op, 'channels_last')} / "
                       f"{backends.select(None, 'cpu', op, 'nchw')}" for op in backends.OPS)
    kind = backends.measured_cpu_kind()
    source = f"results of {kind}" if kind else "this CPU never measured: the worst of every CPU's results"
    print(f"automatic choice per op on cpu (channels_last / nchw; {source}; allocator {backends.allocator_setting()}): "
          f"{per_op}")
    return 0
