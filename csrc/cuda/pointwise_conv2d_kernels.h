// The CUDA pointwise (1x1) convolution as one strided GEMM, behind plain launch functions (see
// depthwise_conv2d_kernels.h for why): C[M, N] = A[M, K] . B[K, N] (+ bias[N]), where A(m, k) =
// a[m * a_m + k * a_k] and B(k, n) = b[k * b_k + n * b_n], so that the forward (X . W^T), the input
// gradient (GY . W) and the weight gradient (GY^T . X) are the same kernel over NHWC pixels.
// 16-bit data runs on tensor cores (mma.sync m16n8k16, fp32 accumulation); float32 and float64 on
// FMA units in full precision (no TF32).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "cuda/dtype.h"

namespace xsep::cuda {

struct GemmParams {
  int64_t M, N, K;
  int64_t a_m, a_k, b_k, b_n;  // element strides of A and B
  int64_t c_m;                 // row stride of C (columns are contiguous)
};

// C = A . B (+ bias, in the accumulation type, when not null), C in the data type.
void pointwise_gemm(const GemmParams& g, Dtype dt, const void* a, const void* b, const void* bias, void* c,
                    cudaStream_t stream);

// The K reduction split into gemm_k_splits(g) fixed chunks (depending on the shape only), each
// writing a partial C in the accumulation type into `partials` [splits, M, N], then summed in order
// into `c` (accumulation type): deterministic, for the weight gradient's long reduction over pixels
// (the pointwise op's, and the fused op's GY^T . act(d)). Both operands are staged k-major on tensor
// cores (16-byte copies where a_m == b_n == 1 and the strides and pointers allow them).
int64_t gemm_k_splits(const GemmParams& g);
void pointwise_gemm_split_k(const GemmParams& g, Dtype dt, const void* a, const void* b, void* partials, void* c,
                            cudaStream_t stream);

}  // namespace xsep::cuda
