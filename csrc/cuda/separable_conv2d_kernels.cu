// CUDA fused depthwise-separable kernels (see separable_conv2d_kernels.h). They are GEMMs (gemm.cuh)
// whose depthwise operand is a DepthwiseOperand: a tile of act(dw(x)) computed from x on the fly,
// in the accumulation type, rounded to the data type only where the unfused pair would have
// rounded its intermediate tensor.
//
// Forward: when a block's pixels' whole depthwise rows fit in shared memory (64 pixels x C*M on
// tensor cores, 32 on FMA units), they are computed once and multiplied by every output channel's
// weights (a "resident" A operand; its cost is one depthwise pass). Otherwise the general GEMM
// recomputes the depthwise slice of each tile (once per 64 output channels).
// Backward: one depthwise pass first (depthwise_forward_nhwc writing a = act(d) in the data type, as
// the unfused pair's intermediate tensor), then plain GEMMs on it: the pointwise weight gradient
// GY^T . a (both operands k-major: the pixel is their outer index), and the depthwise output's
// gradient GY . W, whose epilogue multiplies by the mid activation's derivative taken from a.
#include <c10/cuda/CUDAException.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "cuda/activation.cuh"
#include "cuda/gemm.cuh"
#include "cuda/kernel_types.cuh"
#include "cuda/pointwise_conv2d_kernels.h"
#include "cuda/separable_conv2d_kernels.h"
#include "cuda/vec.cuh"

namespace xsep::cuda {
namespace {

// act(dw(x)) as the forward's A operand: rows are output pixels and k runs over channels. VEC > 1
// (16-byte loads of VEC channels) needs M == 1 and C % VEC == 0.
template <typename T, int VEC>
struct DepthwiseOperand {
  using A = Acc<T>;
  DepthwiseGeometry p;
  const T* x;     // [N, H, W, C]
  const A* w;     // tap-major [kh * kw, OC]
  const A* bias;  // the depthwise bias [OC], or nullptr
  Activation act;

  // dw(x) + bias (before the activation) at the flat output pixels pix[j] (j < npix; pixels at
  // or past pix_end are 0), output channels oc0 .. oc0 + V; per pixel the bias first, then the taps in
  // order, as the CPU kernels sum. Each tap's weights are loaded once for the NP pixels. With V > 1
  // they are read as vectors (OC and oc0 are multiples of V, and w is 16-byte aligned: with_vec).
  template <int V, int NP>
  __device__ __forceinline__ void compute(const int64_t (&pix)[NP], int64_t pix_end, int64_t oc0, A (&d)[NP][V]) const {
    int64_t row0[NP], col0[NP], image[NP];  // per pixel: its first input row and column, its image
    bool live[NP];
    A b[V];
#pragma unroll
    for (int v = 0; v < V; ++v) b[v] = A(0);
    if (pix[0] < pix_end && bias != nullptr) {
#pragma unroll
      for (int v = 0; v < V; ++v) b[v] = bias[oc0 + v];
    }
#pragma unroll
    for (int j = 0; j < NP; ++j) {
      live[j] = pix[j] < pix_end;
      const int64_t wo = pix[j] % p.Wo, nh = pix[j] / p.Wo, ho = nh % p.Ho;
      image[j] = nh / p.Ho;
      row0[j] = ho * p.sh - p.pad_top;
      col0[j] = wo * p.sw - p.pad_left;
#pragma unroll
      for (int v = 0; v < V; ++v) d[j][v] = live[j] ? b[v] : A(0);
    }
    if (!live[0]) return;  // (pixels are consecutive: none live; the weights may lie past OC)
    for (int64_t r = 0; r < p.kh; ++r) {
      for (int64_t s = 0; s < p.kw; ++s) {
        const A* wp = w + (r * p.kw + s) * p.OC + oc0;
        A wv[V];
        if constexpr (V > 1) {
          load_row<true>(wp, V, wv);
        } else {
          wv[0] = wp[0];
        }
#pragma unroll
        for (int j = 0; j < NP; ++j) {
          const int64_t hi = row0[j] + r * p.dil_h, wi = col0[j] + s * p.dil_w;
          if (!live[j] || hi < 0 || hi >= p.H || wi < 0 || wi >= p.W) continue;
          const T* xp = x + ((image[j] * p.H + hi) * p.W + wi) * p.C;
          A xv[V];
          if constexpr (V > 1) {
            const Vec<T, V> raw = *reinterpret_cast<const Vec<T, V>*>(xp + oc0);
#pragma unroll
            for (int v = 0; v < V; ++v) xv[v] = static_cast<A>(raw.v[v]);
          } else {
            xv[0] = static_cast<A>(xp[oc0 / p.M]);
          }
#pragma unroll
          for (int v = 0; v < V; ++v) {
            const A xi = p.relu_input && xv[v] < A(0) ? A(0) : xv[v];
            d[j][v] += xi * wv[v];
          }
        }
      }
    }
  }

  // Stages act(dw(x)) for rows [r0, r0 + nr) x k [k0, k0 + nk) (zero beyond the pixels, the
  // channels or k_end), like StridedOperand::stage. A thread computes VEC consecutive channels of
  // kPixels consecutive pixels, sharing each tap's weight load. The resident forward's tile, staged
  // once, takes 4 (80 -> 149 registers on bf16: occupancy 38% -> 19% where registers bind, on narrow
  // layers, but 4 independent loads per thread; from about 400 channels its shared memory binds at
  // 2 blocks per SM anyway); the GEMMs' per-tile stages take 1, as 4 costs them 50 registers and a
  // third of their occupancy. Consecutive threads take consecutive channel groups, so x reads
  // coalesce. Where the
  // tile holds a pixel's channels contiguously and aligned (row-major: the tensor-core forward's A),
  // the VEC values go to shared memory as one vector.
  template <bool KMAJOR, int kPixels = 1>
  __device__ void stage(T* s, int ld, int nr, int nk, int64_t r0, int64_t k0, int64_t k_end) const {
    const int64_t pix0 = r0, ch0 = k0;  // rows: pixels; k: channels
    const int npix = nr, cvecs = nk / VEC;
    const int groups = (npix + kPixels - 1) / kPixels;
    const int64_t pix_end = p.N * p.Ho * p.Wo, ch_end = k_end;
    const bool s_vec = !KMAJOR && rows_aligned<T, VEC>(s, ld);
    for (int u = threadIdx.x; u < groups * cvecs; u += blockDim.x) {
      const int pp0 = u / cvecs * kPixels, cv = u % cvecs;
      const int64_t c = ch0 + static_cast<int64_t>(cv) * VEC;
      int64_t pix[kPixels];
#pragma unroll
      for (int j = 0; j < kPixels; ++j) pix[j] = pix0 + pp0 + j;
      A d[kPixels][VEC];
      compute<VEC>(pix, c < ch_end ? pix_end : pix0, c, d);  // (no pixel is live beyond the channels)
#pragma unroll
      for (int j = 0; j < kPixels; ++j) {
        const int pp = pp0 + j;
        if (pp >= npix) break;
        T t[VEC];
#pragma unroll
        for (int v = 0; v < VEC; ++v) t[v] = static_cast<T>(activate(act, d[j][v]));
        if constexpr (VEC > 1) {
          if (s_vec) {  // row pp, channels from cv * VEC
            store_row<true>(s + pp * ld + cv * VEC, VEC, t);
            continue;
          }
        }
#pragma unroll
        for (int v = 0; v < VEC; ++v) {
          const int ch = cv * VEC + v;
          s[KMAJOR ? ch * ld + pp : pp * ld + ch] = t[v];
        }
      }
    }
  }
};

// grad_d[m, n] = C[m, n] * act'(d[m, n]) (m: pixel, n: channel), the derivative taken from
// a[m, n] = act(d[m, n]) (activation_grad_from_output); both [P, ld] in the data type.
template <typename T>
struct StoreGradMid {
  T* out;
  const T* a;
  int64_t ld;
  Activation act;
  template <int W>
  __device__ __forceinline__ bool aligned_rows() const {
    return rows_aligned<T, W>(out, ld) && rows_aligned<T, W>(a, ld);
  }
  template <bool VEC, int W>
  __device__ __forceinline__ NoColumns columns(int64_t, int) const {
    return {};
  }
  template <bool VEC, int W, typename V>
  __device__ __forceinline__ void store(int64_t m, int64_t n, const V (&v)[W], int count, NoColumns) const {
    using A = Acc<T>;
    const int64_t i = m * ld + n;
    T act_d[W], r[W];
    load_row<VEC>(a + i, count, act_d);
#pragma unroll
    for (int e = 0; e < W; ++e)
      r[e] = static_cast<T>(activation_grad_from_output(act, static_cast<A>(act_d[e]), static_cast<A>(v[e])));
    store_row<VEC>(out + i, count, r);
  }
};

// ---------------------------------------------------------------------------------------------
// Forward with a resident depthwise operand: block = RES pixels, all of their C*M depthwise
// values in dynamic shared memory, then every output-channel tile of 64 in turn.

constexpr int RES_TC = 64, RES_FMA = 32, RES_BN = 64, RES_THREADS = 128;

__host__ __device__ inline int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// Shared-memory row length of the resident A tile: [RES_TC][lda], k contiguous, padded by 8
// elements against bank conflicts (16-byte rows for ldmatrix).
__host__ __device__ inline int64_t resident_lda_tc(int64_t K) { return round_up(K, gemm::TC_BK) + 8; }

template <typename T, int VEC>
__global__ void __launch_bounds__(RES_THREADS)
    forward_resident_tc_kernel(int64_t O, const DepthwiseOperand<T, VEC> dw, const T* __restrict__ w_pw,
                               const float* __restrict__ bias, T* __restrict__ y) {
  using namespace gemm;
  XSEP_DYNAMIC_SMEM(smem);
  T* As = reinterpret_cast<T*>(smem);
  __shared__ __align__(16) T Bs[2][RES_BN][TC_LD];  // the weights' tile, double-buffered
  const int64_t K = dw.p.OC, P = dw.p.N * dw.p.Ho * dw.p.Wo;
  const int kpad = static_cast<int>(round_up(K, TC_BK)), lda = static_cast<int>(resident_lda_tc(K));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int wm = (warp / 2) * 32, wn = (warp % 2) * 32;  // this warp's 32 x 32 sub-tile
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * RES_TC;
  const StridedOperand<T> wop{w_pw, O, K, 1};  // B(k, n) = w_pw[n, k]
  const StoreOutput<T> out{y, O, bias};
  // B steps run over every (output-channel tile, k step) pair, the next one staged (by cp.async)
  // while the current one is multiplied.
  const int k_steps = kpad / TC_BK;
  const int64_t steps = (O + RES_BN - 1) / RES_BN * k_steps;
  const auto stage = [&](int64_t step) {
    const int64_t n0 = step / k_steps * RES_BN, k0 = step % k_steps * TC_BK;
    wop.template stage<false>(&Bs[step % 2][0][0], TC_LD, RES_BN, TC_BK, n0, k0, K);
    cp_async_commit();
  };
  stage(0);
  dw.template stage<false, 4>(As, lda, RES_TC, kpad, m0, 0, K);  // the resident A tile, once
  float acc[2][4][4] = {};
  for (int64_t step = 0; step < steps; ++step) {
    if (step + 1 < steps) {
      stage(step + 1);
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();  // (the first also publishes the resident A tile)
    const int k0 = static_cast<int>(step % k_steps) * TC_BK;
    warp_mma<T, 2, 4, TC_BK>(acc, As + wm * lda + k0, lda, &Bs[step % 2][wn][0], TC_LD, lane);
    __syncthreads();
    if (step % k_steps == k_steps - 1) {  // this output-channel tile is complete
      const int64_t n0 = step / k_steps * RES_BN;
      store_fragments(acc, lane, m0 + wm, n0 + wn, P, O, out);
      for (auto& tile : acc)
        for (auto& fragment : tile)
          for (float& v : fragment) v = 0.0f;
    }
  }
}

// The same on FMA units: the resident tile k-major [kpad][RES_FMA]; each thread 4 pixels x 4
// output channels of the 32 x 64 tile.
template <typename T, int VEC>
__global__ void __launch_bounds__(RES_THREADS)
    forward_resident_fma_kernel(int64_t O, const DepthwiseOperand<T, VEC> dw, const T* __restrict__ w_pw,
                                const T* __restrict__ bias, T* __restrict__ y) {
  using namespace gemm;
  XSEP_DYNAMIC_SMEM(smem);
  T* As = reinterpret_cast<T*>(smem);
  __shared__ T Bs[F_BK][RES_BN + 1];
  const int64_t K = dw.p.OC, P = dw.p.N * dw.p.Ho * dw.p.Wo;
  const int kpad = static_cast<int>(round_up(K, F_BK));
  const int tm = (threadIdx.x / 16) * 4, tn = (threadIdx.x % 16) * 4;
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * RES_FMA;
  dw.template stage<true, 4>(As, RES_FMA, RES_FMA, kpad, m0, 0, K);
  const StridedOperand<T> wop{w_pw, O, K, 1};
  const StoreOutput<T> out{y, O, bias};
  for (int64_t n0 = 0; n0 < O; n0 += RES_BN) {
    T acc[4][4] = {};
    for (int k0 = 0; k0 < kpad; k0 += F_BK) {
      wop.template stage<true>(&Bs[0][0], RES_BN + 1, RES_BN, F_BK, n0, k0, K);
      __syncthreads();
      thread_fma<T, 4, 4>(acc, As + k0 * RES_FMA + tm, RES_FMA, &Bs[0][tn], RES_BN + 1, F_BK);
      __syncthreads();
    }
    store_outputs(acc, m0 + tm, n0 + tn, P, O, out);
  }
}

// The widest channel vector the depthwise operand can load: 16 bytes of x when M == 1, the channels
// come in whole vectors and x and the tap-major weights (VEC per tap, in the accumulation type) are
// 16-byte aligned (then every pixel row and every tap's row is).
template <typename T>
bool vectorizable(const DepthwiseGeometry& p, const void* x, const void* w_taps) {
  return p.M == 1 && p.C % kVec16<T> == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
         reinterpret_cast<uintptr_t>(w_taps) % 16 == 0;
}

// f(std::integral_constant<int, VEC>) with the widest usable VEC.
template <typename T, typename F>
void with_vec(const DepthwiseGeometry& p, const void* x, const void* w_taps, F&& f) {
  if (vectorizable<T>(p, x, w_taps)) {
    f(std::integral_constant<int, kVec16<T>>{});
  } else {
    f(std::integral_constant<int, 1>{});
  }
}

template <typename T, int VEC>
DepthwiseOperand<T, VEC> depthwise_operand(const SeparableGeometry& sp, const void* x, const void* w_taps,
                                           const void* dw_bias) {
  using A = Acc<T>;
  return DepthwiseOperand<T, VEC>{sp.dw, static_cast<const T*>(x), static_cast<const A*>(w_taps),
                                  static_cast<const A*>(dw_bias), sp.mid_activation};
}

}  // namespace

void separable_forward_nhwc(const SeparableGeometry& sp, Dtype dt, const void* x, const void* w_taps,
                            const void* dw_bias, const void* w_pw, const void* bias, void* y, int64_t smem_per_block,
                            cudaStream_t stream) {
  const int64_t P = sp.dw.N * sp.dw.Ho * sp.dw.Wo, K = sp.dw.OC, O = sp.O;
  dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    using A = Acc<T>;
    with_vec<T>(sp.dw, x, w_taps, [&](auto vec) {
      constexpr int VEC = decltype(vec)::value;
      const auto dw = depthwise_operand<T, VEC>(sp, x, w_taps, dw_bias);
      const T* wp = static_cast<const T*>(w_pw);
      const A* b = static_cast<const A*>(bias);
      T* out = static_cast<T*>(y);
      constexpr bool tc = uses_tensor_cores<T>();
      const int64_t rows = tc ? RES_TC : RES_FMA;
      // the resident tile (dynamic) plus the kernel's static B tile
      const int64_t smem = tc ? rows * resident_lda_tc(K) * static_cast<int64_t>(sizeof(T))
                              : rows * round_up(K, gemm::F_BK) * static_cast<int64_t>(sizeof(T));
      const int64_t b_tile = tc ? 2 * RES_BN * gemm::TC_LD * static_cast<int64_t>(sizeof(T))
                                : gemm::F_BK * (RES_BN + 1) * static_cast<int64_t>(sizeof(T));
      if (smem + b_tile <= smem_per_block) {
        const unsigned blocks = static_cast<unsigned>((P + rows - 1) / rows);
        if constexpr (tc) {
          auto kernel = forward_resident_tc_kernel<T, VEC>;
          allow_dynamic_smem(kernel, smem);
          kernel<<<blocks, RES_THREADS, smem, stream>>>(O, dw, wp, b, out);
        } else {
          auto kernel = forward_resident_fma_kernel<T, VEC>;
          allow_dynamic_smem(kernel, smem);
          kernel<<<blocks, RES_THREADS, smem, stream>>>(O, dw, wp, b, out);
        }
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      } else {
        launch_gemm<T>(P, O, K, 1, dw, StridedOperand<T>{wp, O, K, 1}, StoreOutput<T>{out, O, b}, stream);
      }
    });
  });
}

void separable_grad_mid_nhwc(const SeparableGeometry& sp, Dtype dt, const void* grad_output, const void* act_d,
                             const void* w_pw, void* grad_mid, cudaStream_t stream) {
  const int64_t P = sp.dw.N * sp.dw.Ho * sp.dw.Wo, K = sp.dw.OC, O = sp.O;
  // GD[p, c] = sum_o GY[p, o] W[o, c]: B(o, c) = W[o * K + c], its rows (c) contiguous (k-major).
  const GemmParams g{P, K, O, /*a_m=*/O, /*a_k=*/1, /*b_k=*/K, /*b_n=*/1, /*c_m=*/K};
  if (sp.mid_activation == Activation::none) {  // the pointwise input gradient's GEMM
    pointwise_gemm(g, dt, grad_output, w_pw, nullptr, grad_mid, stream);
    return;
  }
  dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    using B = std::conditional_t<uses_tensor_cores<T>(), StridedKMajorOperand<T>, StridedOperand<T>>;
    const StridedOperand<T> gy{static_cast<const T*>(grad_output), P, O, 1};
    const B w{static_cast<const T*>(w_pw), K, 1, K};
    const StoreGradMid<T> epilogue{static_cast<T*>(grad_mid), static_cast<const T*>(act_d), K, sp.mid_activation};
    launch_gemm<T>(P, K, O, 1, gy, w, epilogue, stream);
  });
}

}  // namespace xsep::cuda
