// The xsep operator library: defines every op of xsep/ops/schemas.py (through the header the build
// generates from it, xsep_contract.h); each device registers its host functions in one place
// (TORCH_LIBRARY_IMPL in csrc/cpu/register.cpp, csrc/cuda/register_cuda.cpp). Loading this library
// (the Python extension module xsep._C, or the just-in-time build) is what makes torch.ops.xsep
// exist.
#include <Python.h>
#include <torch/library.h>

#include <string>

#include "cpu/depthwise_kernels.h"
#include "cpu/gemm.h"
#include "cpu/host.h"
#include "module_calls.h"
#include "xsep_contract.h"

#ifndef XSEP_WITH_CUDA
#define XSEP_WITH_CUDA 0
#endif
#define XSEP_STRINGIFY_(x) #x
#define XSEP_STRINGIFY(x) XSEP_STRINGIFY_(x)
#ifdef XSEP_CUDA_ARCHS  // the arch list as one token, '_' between archs (see xsep/_build.py)
#define XSEP_CUDA_ARCHS_STR XSEP_STRINGIFY(XSEP_CUDA_ARCHS)
#else
#define XSEP_CUDA_ARCHS_STR ""
#endif

// What this library was built with, as "key=value;..." (read by `python -m xsep info`).
static std::string build_info() {
  return std::string("cuda=") + (XSEP_WITH_CUDA ? "1" : "0") + ";cuda_archs=" + XSEP_CUDA_ARCHS_STR +
         ";cpu_isa=" + xsep::cpu::kernel_isa() + ";cpu_gemm=" + xsep::cpu::gemm_library() +
         ";cpu_weight_gemm=" + xsep::cpu::weight_gemm_library() + ";cpu_fused_gemm=" + xsep::cpu::fused_gemm_library() +
         ";cpu_stream_stores=" + xsep::cpu::stream_stores_setting() + ";cpu_prefetch=" + xsep::cpu::prefetch_setting() +
         ";cpu_run_vectors=" + xsep::cpu::run_vectors_setting() +
         ";cpu_depthwise_runs=" + xsep::cpu::depthwise_runs_setting() +
         ";cpu_weight_packing=" + xsep::cpu::weight_packing_setting() +
         ";cpu_nchw_depthwise=" + xsep::cpu::nchw_depthwise_setting() + ";compiler=" +
#if defined(__clang__)
         "clang " __clang_version__;
#elif defined(__GNUC__)
         "gcc " __VERSION__;
#else
         "unknown";
#endif
}

extern "C" {
// The Python module xsep._C: loading it loads the library; its functions are the modules' calls
// (csrc/module_calls.cpp).
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, xsep::module_call_methods()};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(xsep, m) {
  m.def("_build_info() -> str", &build_info);
  for (const char* schema : xsep::kSchemas) m.def(schema);
}
