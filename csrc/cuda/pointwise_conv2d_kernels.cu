// The strided GEMM behind the CUDA pointwise convolution (see pointwise_conv2d_kernels.h): the GEMM
// core of gemm.cuh with two strided operands (tensor cores for float16/bfloat16, FMA units for
// float32/float64).
#include "cuda/gemm.cuh"
#include "cuda/kernel_types.cuh"
#include "cuda/pointwise_conv2d_kernels.h"

namespace xsep::cuda {
namespace {

// A(m, k) = a[m * a_m + k * a_k]; B(k, n) = b[k * b_k + n * b_n], as an operand whose rows are n.
template <typename T>
StridedOperand<T> operand_a(const GemmParams& g, const void* a) {
  return {static_cast<const T*>(a), g.M, g.a_m, g.a_k};
}
template <typename T>
StridedOperand<T> operand_b(const GemmParams& g, const void* b) {
  return {static_cast<const T*>(b), g.N, g.b_n, g.b_k};
}

}  // namespace

void pointwise_gemm(const GemmParams& g, Dtype dt, const void* a, const void* b, const void* bias, void* c,
                    cudaStream_t stream) {
  dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    using A = Acc<T>;
    const StoreOutput<T> out{static_cast<T*>(c), g.c_m, static_cast<const A*>(bias)};
    launch_gemm<T>(g.M, g.N, g.K, 1, operand_a<T>(g, a), operand_b<T>(g, b), out, stream);
  });
}

int64_t gemm_k_splits(const GemmParams& g) { return gemm::k_splits(g.K); }

void pointwise_gemm_split_k(const GemmParams& g, Dtype dt, const void* a, const void* b, void* partials, void* c,
                            cudaStream_t stream) {
  const int64_t splits = gemm_k_splits(g);
  dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    using A = Acc<T>;
    launch_gemm<T>(g.M, g.N, g.K, splits, operand_a<T>(g, a), operand_b<T>(g, b),
                   StorePartial<A>{static_cast<A*>(partials), g.M, g.N}, stream);
    launch_ordered_sum<A>(splits, g.M * g.N, static_cast<const A*>(partials), static_cast<A*>(c), stream);
  });
}

}  // namespace xsep::cuda
