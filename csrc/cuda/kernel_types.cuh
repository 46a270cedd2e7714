// For the .cu files: the switch from the host's Dtype tag to a C++ type, and dynamic shared memory
// (and, from common/acc_type.h, the accumulation type of each data type).
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <c10/cuda/CUDAException.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "common/acc_type.h"
#include "cuda/dtype.h"

namespace xsep::cuda {

// Calls f(T{}) for the C++ type T of `dt`.
template <typename F>
void dispatch_dtype(Dtype dt, F&& f) {
  switch (dt) {
    case Dtype::f32: f(float{}); break;
    case Dtype::f64: f(double{}); break;
    case Dtype::f16: f(c10::Half{}); break;
    case Dtype::bf16: f(c10::BFloat16{}); break;
  }
}

// A kernel's dynamic shared memory, as bytes (one declaration whatever the kernel's data type:
// nvcc rejects `extern __shared__ T name[]` declared with different T in one file). The CPU
// emulator used by the tests (tests/cuda_emu) provides its own.
#ifdef XSEP_CUDA_EMU
#define XSEP_DYNAMIC_SMEM(name) unsigned char* name = ::xsep_emu::dynamic_smem()
#else
#define XSEP_DYNAMIC_SMEM(name) extern __shared__ __align__(16) unsigned char name[]
#endif

// Lets `kernel` use `bytes` of dynamic shared memory (above the default 48 KB).
template <typename Kernel>
void allow_dynamic_smem(Kernel kernel, int64_t bytes) {
#ifndef XSEP_CUDA_EMU
  C10_CUDA_CHECK(cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel),
                                      cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
#else
  (void)kernel, (void)bytes;
#endif
}

}  // namespace xsep::cuda
