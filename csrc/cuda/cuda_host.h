// What the CUDA ops' host code shares: the device check, the kernels' dtype tag and depthwise
// parameters, channels-last layout helpers, the device's shared-memory limit and the current stream.
#pragma once

#include <ATen/core/Tensor.h>
#include <cuda_runtime_api.h>

#include "common/conv_args.h"
#include "cuda/depthwise_conv2d_kernels.h"
#include "cuda/dtype.h"
#include "cuda/dtype_of.h"

namespace xsep::cuda {

void check_cuda(const char* op, const at::Tensor& input);

Dtype dtype_of(const at::Tensor& t);

// `t` as a dense channels-last tensor (no copy when it already is one).
at::Tensor nhwc(const at::Tensor& t);

// An uninitialised [N, C, H, W] tensor laid out channels-last, with `like`'s dtype and device.
at::Tensor empty_nhwc(at::IntArrayRef sizes, const at::Tensor& like);

// The depthwise kernels' parameters for a checked geometry.
DwParams dw_params(const DepthwiseGeometry& g);

// The most shared memory one block may use on the current device (the opt-in limit).
int64_t smem_per_block_optin();

// The current CUDA stream of the current device (set by the caller's device guard).
cudaStream_t current_stream();

}  // namespace xsep::cuda
