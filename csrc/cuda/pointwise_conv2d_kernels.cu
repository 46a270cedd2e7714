// The strided GEMM behind the CUDA pointwise convolution (see pointwise_conv2d_kernels.h).
//
// Tensor-core path (float16, bfloat16): a 128 x 64 C tile per block of 4 warps (each warp 64 x 32:
// 4 x 4 mma.sync m16n8k16 tiles), K in steps of 32. A and B tiles are staged in shared memory as
// As[m][k] and Bs[n][k] (k contiguous, rows padded by 8 elements against bank conflicts) from any
// strides, then read with ldmatrix. FMA path (float32, float64): a 64 x 64 tile per block of 256
// threads, each computing 4 x 4 outputs from shared-memory tiles.
#include <c10/cuda/CUDAException.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <type_traits>

#include "cuda/pointwise_conv2d_kernels.h"
#include "cuda/kernel_types.cuh"
#include "cuda/mma.cuh"

namespace xsep::cuda {
namespace {

// ---------------------------------------------------------------------------------------------
// Tensor cores (sm_80+: mma.sync, ldmatrix)

constexpr int TC_BM = 128, TC_BN = 64, TC_BK = 32, TC_PAD = 8, TC_THREADS = 128;

// One block: C tile [TC_BM, TC_BN] over k in [k_begin, k_end). OUT_PARTIAL: write float partials
// (no bias) to `out` as [M, N] at the given offset; else write T with the bias.
template <typename T, bool OUT_PARTIAL>
__global__ void __launch_bounds__(TC_THREADS)
gemm_tc_kernel(const GemmParams g, const T* __restrict__ a, const T* __restrict__ b,
               const float* __restrict__ bias, void* __restrict__ out, int64_t k_per_split) {
  __shared__ __align__(16) T As[TC_BM][TC_BK + TC_PAD];
  __shared__ __align__(16) T Bs[TC_BN][TC_BK + TC_PAD];
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * TC_BM, n0 = static_cast<int64_t>(blockIdx.y) * TC_BN;
  const int64_t k_begin = static_cast<int64_t>(blockIdx.z) * k_per_split;
  const int64_t k_end = k_begin + k_per_split < g.K ? k_begin + k_per_split : g.K;
  const int wm = (warp / 2) * 64, wn = (warp % 2) * 32;  // this warp's 64 x 32 sub-tile
  float acc[4][4][4] = {};
  for (int64_t k0 = k_begin; k0 < k_end; k0 += TC_BK) {
    // Stage the tiles (zero outside the matrices). Consecutive threads take consecutive k when A
    // is k-contiguous, else consecutive m, so that global reads coalesce either way.
    const bool a_k_fast = g.a_k == 1;
    for (int i = tid; i < TC_BM * TC_BK; i += TC_THREADS) {
      const int mm = a_k_fast ? i / TC_BK : i % TC_BM, kk = a_k_fast ? i % TC_BK : i / TC_BM;
      const int64_t m = m0 + mm, k = k0 + kk;
      As[mm][kk] = (m < g.M && k < k_end) ? a[m * g.a_m + k * g.a_k] : T(0.0f);
    }
    const bool b_k_fast = g.b_k == 1;
    for (int i = tid; i < TC_BN * TC_BK; i += TC_THREADS) {
      const int nn = b_k_fast ? i / TC_BK : i % TC_BN, kk = b_k_fast ? i % TC_BK : i / TC_BN;
      const int64_t n = n0 + nn, k = k0 + kk;
      Bs[nn][kk] = (n < g.N && k < k_end) ? b[k * g.b_k + n * g.b_n] : T(0.0f);
    }
    __syncthreads();
#pragma unroll
    for (int ks = 0; ks < TC_BK; ks += 16) {
      uint32_t af[4][4], bf[4][2];
#pragma unroll
      for (int i = 0; i < 4; ++i)  // rows lane % 16, k half lane / 16
        ldmatrix_x4(af[i], &As[wm + i * 16 + lane % 16][ks + (lane / 16) * 8]);
#pragma unroll
      for (int j = 0; j < 4; ++j)  // rows (n) lane % 8, k half (lane / 8) % 2
        ldmatrix_x2(bf[j], &Bs[wn + j * 8 + lane % 8][ks + ((lane / 8) % 2) * 8]);
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) mma_16816<MmaType<T>::bf16>(acc[i][j], af[i], bf[j]);
    }
    __syncthreads();
  }
  // C fragment: c0, c1 at row lane / 4, columns 2 * (lane % 4) + {0, 1}; c2, c3 eight rows down.
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int64_t m = m0 + wm + i * 16 + lane / 4 + h * 8;
        if (m >= g.M) continue;
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int64_t n = n0 + wn + j * 8 + 2 * (lane % 4) + e;
          if (n >= g.N) continue;
          const float v = acc[i][j][h * 2 + e];
          if constexpr (OUT_PARTIAL) {
            static_cast<float*>(out)[static_cast<int64_t>(blockIdx.z) * g.M * g.N + m * g.N + n] = v;
          } else {
            static_cast<T*>(out)[m * g.c_m + n] = static_cast<T>(bias != nullptr ? v + bias[n] : v);
          }
        }
      }
}

// ---------------------------------------------------------------------------------------------
// FMA units (float32, float64)

constexpr int F_BM = 64, F_BN = 64, F_BK = 16, F_THREADS = 256;

template <typename T, bool OUT_PARTIAL>
__global__ void __launch_bounds__(F_THREADS)
gemm_fma_kernel(const GemmParams g, const T* __restrict__ a, const T* __restrict__ b,
                const T* __restrict__ bias, void* __restrict__ out, int64_t k_per_split) {
  __shared__ T As[F_BK][F_BM + 1];
  __shared__ T Bs[F_BK][F_BN + 1];
  const int tid = threadIdx.x, tm = (tid / 16) * 4, tn = (tid % 16) * 4;
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * F_BM, n0 = static_cast<int64_t>(blockIdx.y) * F_BN;
  const int64_t k_begin = static_cast<int64_t>(blockIdx.z) * k_per_split;
  const int64_t k_end = k_begin + k_per_split < g.K ? k_begin + k_per_split : g.K;
  T acc[4][4] = {};
  for (int64_t k0 = k_begin; k0 < k_end; k0 += F_BK) {
    const bool a_k_fast = g.a_k == 1, b_k_fast = g.b_k == 1;
    for (int i = tid; i < F_BM * F_BK; i += F_THREADS) {
      const int mm = a_k_fast ? i / F_BK : i % F_BM, kk = a_k_fast ? i % F_BK : i / F_BM;
      const int64_t m = m0 + mm, k = k0 + kk;
      As[kk][mm] = (m < g.M && k < k_end) ? a[m * g.a_m + k * g.a_k] : T(0);
    }
    for (int i = tid; i < F_BN * F_BK; i += F_THREADS) {
      const int nn = b_k_fast ? i / F_BK : i % F_BN, kk = b_k_fast ? i % F_BK : i / F_BN;
      const int64_t n = n0 + nn, k = k0 + kk;
      Bs[kk][nn] = (n < g.N && k < k_end) ? b[k * g.b_k + n * g.b_n] : T(0);
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < F_BK; ++kk) {
      T av[4], bv[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) av[i] = As[kk][tm + i];
#pragma unroll
      for (int j = 0; j < 4; ++j) bv[j] = Bs[kk][tn + j];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fma(av[i], bv[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t m = m0 + tm + i;
    if (m >= g.M) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t n = n0 + tn + j;
      if (n >= g.N) continue;
      if constexpr (OUT_PARTIAL) {
        static_cast<T*>(out)[static_cast<int64_t>(blockIdx.z) * g.M * g.N + m * g.N + n] = acc[i][j];
      } else {
        static_cast<T*>(out)[m * g.c_m + n] = bias != nullptr ? acc[i][j] + bias[n] : acc[i][j];
      }
    }
  }
}

// Sum of the splits, in order (deterministic).
template <typename A>
__global__ void sum_splits_kernel(int64_t splits, int64_t width, const A* __restrict__ partials,
                                  A* __restrict__ out) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < width;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    A acc = A(0);
    for (int64_t s = 0; s < splits; ++s) acc += partials[s * width + i];
    out[i] = acc;
  }
}

template <typename T>
constexpr bool tensor_cores() {
  return std::is_same_v<T, c10::Half> || std::is_same_v<T, c10::BFloat16>;
}

template <bool PARTIAL, typename T>
void launch(const GemmParams& g, const T* a, const T* b, const void* bias, void* out, int64_t splits,
            cudaStream_t stream) {
  const int64_t k_per_split = (g.K + splits - 1) / splits;
  using A = typename Acc<T>::type;
  if constexpr (tensor_cores<T>()) {
    const dim3 grid((g.M + TC_BM - 1) / TC_BM, (g.N + TC_BN - 1) / TC_BN, splits);
    gemm_tc_kernel<T, PARTIAL><<<grid, TC_THREADS, 0, stream>>>(g, a, b, static_cast<const A*>(bias), out,
                                                               k_per_split);
  } else {
    const dim3 grid((g.M + F_BM - 1) / F_BM, (g.N + F_BN - 1) / F_BN, splits);
    gemm_fma_kernel<T, PARTIAL><<<grid, F_THREADS, 0, stream>>>(g, a, b, static_cast<const A*>(bias), out,
                                                               k_per_split);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

void pointwise_gemm(const GemmParams& g, Dtype dt, const void* a, const void* b, const void* bias, void* c,
                    cudaStream_t stream) {
  dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    launch<false, T>(g, static_cast<const T*>(a), static_cast<const T*>(b), bias, c, 1, stream);
  });
}

int64_t gemm_k_splits(const GemmParams& g) {
  // About 4096 of K per split, at most 64 splits: enough blocks for a small M x N (the weight
  // gradient's C is only out x in channels) and a fixed order, whatever the GPU.
  const int64_t splits = (g.K + 4095) / 4096;
  return splits < 1 ? 1 : (splits > 64 ? 64 : splits);
}

void pointwise_gemm_split_k(const GemmParams& g, Dtype dt, const void* a, const void* b, void* partials,
                            void* c, cudaStream_t stream) {
  const int64_t splits = gemm_k_splits(g);
  dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    using A = typename Acc<T>::type;
    launch<true, T>(g, static_cast<const T*>(a), static_cast<const T*>(b), nullptr, partials, splits, stream);
    const int64_t width = g.M * g.N;
    const int64_t blocks = (width + 255) / 256;
    sum_splits_kernel<A><<<static_cast<unsigned>(blocks < 65535 ? blocks : 65535), 256, 0, stream>>>(
        splits, width, static_cast<const A*>(partials), static_cast<A*>(c));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace xsep::cuda
