// Stands in for c10's header in the emulator build (its folder comes first on the include path):
// the CUDA host functions (csrc/cuda/*_cuda.cpp) take a device guard, which the real header sets
// through the CUDA runtime; the emulator runs their CPU tensors on one emulated device.
#pragma once

#include <c10/core/Device.h>

namespace c10::cuda {

class CUDAGuard {
 public:
  explicit CUDAGuard(c10::Device /*device*/) {}
  CUDAGuard(const CUDAGuard&) = delete;
  CUDAGuard& operator=(const CUDAGuard&) = delete;
};

}  // namespace c10::cuda
