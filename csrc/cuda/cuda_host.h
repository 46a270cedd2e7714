// What the CUDA ops' host code shares on top of common/: the device type it serves, the kernels'
// dtype tag, the device's shared-memory limit and the current stream.
#pragma once

#include <ATen/core/Tensor.h>
#include <cuda_runtime_api.h>

#include "cuda/dtype.h"
#include "cuda/dtype_of.h"

namespace xsep::cuda {

// The tensors these host functions take: CUDA ones, or CPU ones when the CUDA emulator
// (tests/cuda_emu) runs the same host code and kernels on the CPU, registered as torch.ops.xsep_emu.
#ifdef XSEP_CUDA_EMU
inline constexpr c10::DeviceType kDevice = c10::DeviceType::CPU;
#else
inline constexpr c10::DeviceType kDevice = c10::DeviceType::CUDA;
#endif

Dtype dtype_of(const at::Tensor& t);

// The most shared memory one block may use on the current device (the opt-in limit).
int64_t smem_per_block_optin();

// The current CUDA stream of the current device (set by the caller's device guard).
cudaStream_t current_stream();

}  // namespace xsep::cuda
