// The strided GEMM behind the CUDA pointwise convolution (see pointwise_conv2d_kernels.h): the GEMM
// core of gemm.cuh with two strided operands (tensor cores for float16/bfloat16, FMA units for
// float32/float64). On tensor cores an operand whose rows are memory's contiguous index (k the
// outer one: the input gradient's W, both operands of the weight gradient) is staged k-major
// (StridedKMajorOperand), the others row-major (StridedOperand); either way by 16-byte copies where
// the strides and the alignment allow, element by element otherwise.
#include "cuda/gemm.cuh"
#include "cuda/kernel_types.cuh"
#include "cuda/pointwise_conv2d_kernels.h"

namespace xsep::cuda {
namespace {

// A(m, k) = a[m * a_m + k * a_k], staged row-major (its callers' A has k contiguous: pixels x
// channels).
template <typename T>
StridedOperand<T> operand_a(const GemmParams& g, const void* a) {
  return {static_cast<const T*>(a), g.M, g.a_m, g.a_k};
}

// f(operand) with B(k, n) = b[k * b_k + n * b_n] as an operand whose rows are n: k-major when n is
// the contiguous index (b_n == 1) on tensor cores, else row-major.
template <typename T, typename F>
void with_operand_b(const GemmParams& g, const void* b, F&& f) {
  const T* p = static_cast<const T*>(b);
  if constexpr (uses_tensor_cores<T>()) {
    if (g.b_n == 1 && g.b_k != 1) {
      f(StridedKMajorOperand<T>{p, g.N, g.b_n, g.b_k});
      return;
    }
  }
  f(StridedOperand<T>{p, g.N, g.b_n, g.b_k});
}

}  // namespace

void pointwise_gemm(const GemmParams& g, Dtype dt, const void* a, const void* b, const void* bias, void* c,
                    cudaStream_t stream) {
  dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    using A = Acc<T>;
    const StoreOutput<T> out{static_cast<T*>(c), g.c_m, static_cast<const A*>(bias)};
    with_operand_b<T>(
        g, b, [&](const auto& op_b) { launch_gemm<T>(g.M, g.N, g.K, 1, operand_a<T>(g, a), op_b, out, stream); });
  });
}

int64_t gemm_k_splits(const GemmParams& g) { return gemm::k_splits(g.K); }

// Its one caller, the weight gradient (GY^T . X over NHWC pixels), has k (the pixel) outer in both
// operands: both k-major on tensor cores (other strides stage element by element).
void pointwise_gemm_split_k(const GemmParams& g, Dtype dt, const void* a, const void* b, void* partials, void* c,
                            cudaStream_t stream) {
  const int64_t splits = gemm_k_splits(g);
  dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    using A = Acc<T>;
    using Op = std::conditional_t<uses_tensor_cores<T>(), StridedKMajorOperand<T>, StridedOperand<T>>;
    const Op op_a{static_cast<const T*>(a), g.M, g.a_m, g.a_k}, op_b{static_cast<const T*>(b), g.N, g.b_n, g.b_k};
    launch_gemm<T>(g.M, g.N, g.K, splits, op_a, op_b, StorePartial<A>{static_cast<A*>(partials), g.M, g.N}, stream);
    launch_ordered_sum<A>(splits, g.M * g.N, static_cast<const A*>(partials), static_cast<A*>(c), stream);
  });
}

}  // namespace xsep::cuda
