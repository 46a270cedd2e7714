// CUDA depthwise convolution kernels (channels-last, and NCHW ones for the forward and the input
// gradient at unit stride), behind plain launch functions, so that the host code
// (depthwise_conv2d_cuda.cpp, compiled by the C++ compiler) and the kernels
// (depthwise_conv2d_kernels.cu, compiled by nvcc with only the light c10 headers) meet at raw pointers.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "common/geometry.h"
#include "cuda/dtype.h"

namespace xsep::cuda {

// Weights and biases are in the accumulation type (float; double for f64 data), weights tap-major:
// w_taps[(r * kw + s) * OC + oc].

// y[N, Ho, Wo, OC] = act(depthwise(x[N, H, W, C]) (+ bias[OC] when not null)), the activation applied
// in the accumulation type before the rounding (act: the fused backward's act(d); none otherwise).
void depthwise_forward_nhwc(const DepthwiseGeometry& p, Dtype dt, const void* x, const void* w_taps, const void* bias,
                            void* y, cudaStream_t stream, Activation act = Activation::none);

// The same on NCHW data: y[N, OC, Ho, Wo] from x[N, C, H, W].
void depthwise_forward_nchw(const DepthwiseGeometry& p, Dtype dt, const void* x, const void* w_taps, const void* bias,
                            void* y, cudaStream_t stream);

// grad_input[N, H, W, C] from grad_output[N, Ho, Wo, OC]; x (the input, for the relu mask) may be
// null when !p.relu_input.
void depthwise_grad_input_nhwc(const DepthwiseGeometry& p, Dtype dt, const void* grad_output, const void* w_taps,
                               const void* x, void* grad_input, cudaStream_t stream);

// The same on NCHW data (grad_output [N, OC, Ho, Wo], x [N, C, H, W] -> grad_input [N, C, H, W]),
// for unit stride and dilation and M == 1 only: returns false, launching nothing, otherwise.
bool depthwise_grad_input_nchw(const DepthwiseGeometry& p, Dtype dt, const void* grad_output, const void* w_taps,
                               const void* x, void* grad_input, cudaStream_t stream);

// The weight gradient in two deterministic passes, no atomics: per-chunk partial sums over a fixed
// split of the output pixels (the split depends on the shape only), then a sum over the chunks in
// order. `partials` holds depthwise_grad_weight_chunks(p) * kh * kw * OC accumulators; the result,
// grad_taps[kh * kw, OC], is in the accumulation type.
int64_t depthwise_grad_weight_chunks(const DepthwiseGeometry& p);
void depthwise_grad_weight_nhwc(const DepthwiseGeometry& p, Dtype dt, const void* grad_output, const void* x,
                                void* partials, void* grad_taps, cudaStream_t stream);

}  // namespace xsep::cuda
