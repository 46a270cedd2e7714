// For the .cu files: the switch from the host's Dtype tag to a C++ type, and dynamic shared memory
// (and, from common/acc_type.h, the accumulation type of each data type).
#pragma once

#include <c10/cuda/CUDAException.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <utility>

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

// Lets `kernel` use `bytes` of dynamic shared memory (above the default 48 KB). The attribute is a
// per-function, per-device setting that lasts for the process: it is set only when a launch needs
// more than was already allowed on the current device, not on every launch.
template <typename Kernel>
void allow_dynamic_smem(Kernel kernel, int64_t bytes) {
#ifndef XSEP_CUDA_EMU
  static std::mutex mutex;
  static std::map<std::pair<const void*, int>, int64_t> allowed;  // (kernel, device) -> bytes
  int device = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  const auto key = std::make_pair(reinterpret_cast<const void*>(kernel), device);
  const std::lock_guard<std::mutex> lock(mutex);
  auto it = allowed.find(key);
  if (it != allowed.end() && it->second >= bytes) return;
  C10_CUDA_CHECK(cudaFuncSetAttribute(key.first, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
  allowed[key] = bytes;
#else
  (void)kernel, (void)bytes;
#endif
}

// A launch grid of x * y * z blocks, refused with a clear error beyond CUDA's limits (2^31 - 1 blocks
// along x, 65535 along y and z) rather than silently truncated to 32 bits.
inline dim3 grid_of(int64_t x, int64_t y, int64_t z, const char* kernel) {
  TORCH_CHECK(x >= 1 && x <= 2147483647 && y >= 1 && y <= 65535 && z >= 1 && z <= 65535, "xsep: ", kernel,
              " needs a grid of ", x, " x ", y, " x ", z, " blocks, beyond CUDA's limits (2^31 - 1 x 65535 x 65535)");
  return dim3(static_cast<unsigned>(x), static_cast<unsigned>(y), static_cast<unsigned>(z));
}

}  // namespace xsep::cuda
