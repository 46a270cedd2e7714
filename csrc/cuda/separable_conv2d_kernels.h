// CUDA fused depthwise-separable convolution kernels (channels-last), behind plain launch
// functions (see depthwise_conv2d_kernels.h for why). The forward never writes the depthwise output
// `d` (the intermediate [N, Ho, Wo, C*M] tensor of the unfused pair) to memory: it is computed on
// chip where the pointwise GEMM needs it. The backward makes one depthwise pass that writes
// act(d) (depthwise_forward_nhwc with the mid activation), then plain GEMMs: the pointwise weight
// gradient grad_output^T . act(d) (pointwise_gemm_split_k) and the mid gradient below.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "common/geometry.h"
#include "cuda/dtype.h"

namespace xsep::cuda {

// y[P, O] = act(dw(x))[P, C*M] . w_pw[O, C*M]^T (+ bias[O]) over the P = N * Ho * Wo output pixels,
// dw(x) including the optional depthwise bias dw_bias[C*M] (nullptr: none). w_taps, dw_bias and
// bias are in the accumulation type (w_taps tap-major, as for the depthwise kernels), w_pw in the
// data type; y and bias aligned to pairs of elements. A block keeps its pixels' whole depthwise rows in
// shared memory and runs them against every output channel when they fit in `smem_per_block` bytes
// (the device's opt-in limit per block); otherwise act(dw(x)) is written to `workspace` (in the data
// type) and multiplied by the pointwise GEMM. separable_forward_workspace: the bytes `workspace`
// must hold on this layer (0: it may be null).
int64_t separable_forward_workspace(const SeparableGeometry& p, Dtype dt, int64_t smem_per_block);
void separable_forward_nhwc(const SeparableGeometry& p, Dtype dt, const void* x, const void* w_taps,
                            const void* dw_bias, const void* w_pw, const void* bias, void* y, void* workspace,
                            int64_t smem_per_block, cudaStream_t stream);

// The gradient of the depthwise output, grad_d[P, C*M] = (grad_output . w_pw) * act'(d), in the data
// type, ready for the depthwise backward kernels. act_d [P, C*M]: act(d), the depthwise output (with
// its bias) after the mid activation, in the data type (depthwise_forward_nhwc with the mid
// activation), from which the derivative is taken; not read, and may be null, when there is no mid
// activation (then this is the pointwise input gradient's GEMM).
void separable_grad_mid_nhwc(const SeparableGeometry& p, Dtype dt, const void* grad_output, const void* act_d,
                             const void* w_pw, void* grad_mid, cudaStream_t stream);

}  // namespace xsep::cuda
