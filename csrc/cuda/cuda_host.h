// What the CUDA ops' host code shares: the device check, the kernels' dtype tag, channels-last
// layout helpers and the current stream.
#pragma once

#include <ATen/core/Tensor.h>
#include <cuda_runtime_api.h>

#include "cuda/dtype.h"

namespace xsep::cuda {

void check_cuda(const char* op, const at::Tensor& input);

Dtype dtype_of(const at::Tensor& t);

// `t` as a dense channels-last tensor (no copy when it already is one).
at::Tensor nhwc(const at::Tensor& t);

// An uninitialised [N, C, H, W] tensor laid out channels-last, with `like`'s dtype and device.
at::Tensor empty_nhwc(at::IntArrayRef sizes, const at::Tensor& like);

// The current CUDA stream of the current device (set by the caller's device guard).
cudaStream_t current_stream();

}  // namespace xsep::cuda
