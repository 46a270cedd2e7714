"""Builds xsep and, when torch is importable at build time, its compiled library xsep._C.

    pip install --no-build-isolation -e .   # builds xsep._C against the torch you have (CPU + CUDA)
    pip install -e .                        # pure-Python install; xsep._C is compiled on first use

Which sources and flags: xsep/_build.py (shared with the just-in-time build).
"""

import importlib.util
import os

from setuptools import find_packages, setup

_spec = importlib.util.spec_from_file_location(
    "xsep_build", os.path.join(os.path.dirname(os.path.abspath(__file__)), "xsep", "_build.py")
)
build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build)
# Where the headers generated from xsep/ops/schemas.py go (not committed).
GENERATED = os.path.join(build.ROOT, "build", "xsep-generated")


def extension_setup():
    """(ext_modules, cmdclass), or ([], {}) when torch is missing in the build environment."""
    try:
        import torch  # noqa: F401
    except ImportError:
        print("xsep: torch is not importable here; installing without xsep._C "
              "(it is compiled on first use; use --no-build-isolation to build it now)")
        return [], {}
    with_cuda, why = build.cuda_build_decision()
    if with_cuda:
        build.prepare_cuda_env()
    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

    what = f"CPU + CUDA ({build.cuda_arch_list()})" if with_cuda else "CPU only"
    print(f"xsep: building xsep._C with {what}: {why}")
    sources = build.sources(with_cuda)
    kwargs = dict(
        name="xsep._C",
        sources=sources,
        include_dirs=build.include_dirs(with_cuda, build.generate_headers(GENERATED)),
        extra_compile_args={"cxx": build.cxx_flags(with_cuda), "nvcc": build.nvcc_flags()},
        extra_link_args=build.link_flags(),
    )
    ext = CUDAExtension(**kwargs) if with_cuda else CppExtension(**kwargs)
    os.environ.setdefault("MAX_JOBS", str(build.max_jobs()))
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = extension_setup()
setup(
    packages=find_packages(include=["xsep", "xsep.*"]),
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
