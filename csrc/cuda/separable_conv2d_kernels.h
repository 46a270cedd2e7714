// CUDA fused depthwise-separable convolution kernels (channels-last), behind plain launch
// functions (see depthwise_conv2d_kernels.h for why). The depthwise output `d` (the intermediate
// [N, Ho, Wo, C*M] tensor of the unfused pair) is never written to memory: it is computed on chip
// where the pointwise GEMM needs it.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "common/geometry.h"
#include "cuda/dtype.h"

namespace xsep::cuda {

// y[P, O] = act(dw(x))[P, C*M] . w_pw[O, C*M]^T (+ bias[O]) over the P = N * Ho * Wo output pixels,
// dw(x) including the optional depthwise bias dw_bias[C*M] (nullptr: none). w_taps, dw_bias and
// bias are in the accumulation type (w_taps tap-major, as for the depthwise kernels), w_pw in the
// data type. A block keeps its pixels' whole depthwise rows in shared memory and runs
// them against every output channel when they fit in `smem_per_block` bytes (the device's opt-in
// limit per block); otherwise each GEMM tile recomputes its depthwise slice.
void separable_forward_nhwc(const SeparableGeometry& p, Dtype dt, const void* x, const void* w_taps,
                            const void* dw_bias, const void* w_pw, const void* bias, void* y, int64_t smem_per_block,
                            cudaStream_t stream);

// The pointwise weight gradient grad_pw[O, C*M] = grad_output[P, O]^T . act(dw(x))[P, C*M], with
// act(dw(x)) recomputed on chip; the reduction over pixels is split in separable_grad_pw_splits(p)
// fixed chunks whose partials ([splits, O, C*M] accumulators) are summed in order (deterministic).
// grad_pw is in the accumulation type.
int64_t separable_grad_pw_splits(const SeparableGeometry& p);
void separable_grad_pointwise_weight_nhwc(const SeparableGeometry& p, Dtype dt, const void* grad_output, const void* x,
                                          const void* w_taps, const void* dw_bias, void* partials, void* grad_pw,
                                          cudaStream_t stream);

// The gradient of the depthwise output, grad_d[P, C*M] = (grad_output . w_pw) * act'(d), in the data
// type, ready for the depthwise backward kernels. d [P, C*M]: the depthwise output before the mid
// activation (with its bias), in the data type as the unfused pair keeps it (depthwise_forward_nhwc);
// not read, and may be null, when there is no mid activation.
void separable_grad_mid_nhwc(const SeparableGeometry& p, Dtype dt, const void* grad_output, const void* d,
                             const void* w_pw, void* grad_mid, cudaStream_t stream);

}  // namespace xsep::cuda
