// CUDA fused depthwise-separable kernels (see separable_conv2d_kernels.h). The forward is a GEMM
// (gemm.cuh's warp tiles) whose A operand is a DepthwiseOperand: a tile of act(dw(x)) computed from x
// on chip, in the accumulation type, rounded to the data type only where the unfused pair would have
// rounded its intermediate tensor.
//
// Forward: when a block's pixels' whole depthwise rows fit in shared memory (128 pixels x C*M on
// tensor cores, 32 on FMA units), they are computed once and multiplied by every output channel's
// weights (a "resident" A operand; its cost is one depthwise pass). Otherwise (wider layers) act(d)
// is materialised in the data type, as the unfused pair's intermediate tensor, between the depthwise
// kernel and the pointwise GEMM: by the memory counters' model that costs less than a resident tile
// of 64 pixels (whose weights' traffic per pixel doubles) or a GEMM that recomputes the depthwise
// slice of each output-channel tile.
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
#include "cuda/depthwise_conv2d_kernels.h"
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
  // kPixels consecutive pixels, sharing each tap's weight load (the weights' loads per pixel fall as
  // 1 / kPixels): the resident tensor-core kernel takes 8 (244 registers on bf16, no spill: the
  // kernel runs one block of 4 warps per SM anyway), the FMA one 4. Consecutive threads take
  // consecutive channel groups, so x reads coalesce. Where the tile holds a pixel's channels
  // contiguously and aligned (row-major: the tensor-core kernel's A), the VEC values go to shared
  // memory as one vector.
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
// Forward with a resident depthwise operand: block = RES_TC pixels, all of their C*M depthwise
// values in dynamic shared memory, then every output-channel tile of RES_BN in turn.
//
// Sized by the SM's memory pipe (shared wavefronts and L1 sectors, 128 B/clk), which bounds
// mma.sync GEMMs before the tensor cores do. Per 32-deep k step of a block: the weights' tile
// (RES_BN x 32 bf16, read from L2 and written to shared memory: 2 x 8 KB) plus the warps' ldmatrix
// reads; 4 warps of 64 x 64 (128 pixels) read 4 KB each per 16 of k, for 32 mma.sync. That
// is 48 KB (384 clk) against 1 MFLOP of mma.sync (368 clk at 660 TFLOP/s over 132 SMs): about
// balanced; 64 pixels (warps of 64 x 32) would be 40 KB against half the work, 1.7x the mma time,
// and the previous design (64 pixels, 64-channel tiles, 32 x 32 warps) was 2.1x: the weights' traffic
// per pixel falls as 1 / RES_TC. The tile fits in shared memory up to about 800 channels in 16-bit
// types; wider layers materialise act(d) instead (separable_forward_nhwc).

constexpr int RES_TC = 128, RES_BN = 128, RES_THREADS = 128;
constexpr int RES_FMA = 32, RES_FMA_BN = 64;  // FMA units: 32 pixels x 64 output channels

__host__ __device__ inline int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// Shared-memory row length of the resident A tile: [RES_TC][lda], k contiguous, padded by 8 elements
// against bank conflicts (16-byte rows for ldmatrix).
__host__ __device__ inline int64_t resident_lda_tc(int64_t K) { return round_up(K, gemm::TC_BK) + 8; }

// An epilogue for launches whose every row of C is whole vectors of 2 (N even, `inner`'s matrices
// aligned for them: separable_forward_nhwc launches the resident kernel only then). Its element-wise
// path, which store_fragments would otherwise compile beside the vector one (about 100 scalar 16-bit
// stores in a 64 x 64 warp tile's epilogue, in the kernel's main loop), traps instead.
template <class Inner>
struct VectorRowsOnly {
  Inner inner;
  template <int W>
  __device__ __forceinline__ bool aligned_rows() const {
    return inner.template aligned_rows<W>();
  }
  template <bool VEC, int W>
  __device__ __forceinline__ auto columns(int64_t n, int count) const {
    return inner.template columns<true, W>(n, count);
  }
  template <bool VEC, int W, typename V, typename Columns>
  __device__ __forceinline__ void store(int64_t m, int64_t n, const V (&v)[W], int count, const Columns& c) const {
    if constexpr (VEC) {
      inner.template store<true>(m, n, v, count, c);
    } else {
      __trap();
    }
  }
};

// RES_TC pixels x RES_BN output channels per pass, warps 2 x 2 of 64 x 64.
template <typename T, int VEC>
__global__ void __launch_bounds__(RES_THREADS, 1)
    forward_resident_tc_kernel(int64_t O, const DepthwiseOperand<T, VEC> dw, const T* __restrict__ w_pw,
                               const float* __restrict__ bias, T* __restrict__ y) {
  using namespace gemm;
  XSEP_DYNAMIC_SMEM(smem);
  T* As = reinterpret_cast<T*>(smem);
  __shared__ __align__(16) T Bs[2][RES_BN][TC_LD];  // the weights' tile, double-buffered
  const int64_t K = dw.p.OC, P = dw.p.N * dw.p.Ho * dw.p.Wo;
  const int kpad = static_cast<int>(round_up(K, TC_BK)), lda = static_cast<int>(resident_lda_tc(K));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int wm = (warp / 2) * 64, wn = (warp % 2) * 64;  // this warp's 64 x 64 sub-tile
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * RES_TC;
  const StridedOperand<T> wop{w_pw, O, K, 1};  // B(k, n) = w_pw[n, k]
  const VectorRowsOnly<StoreOutput<T>> out{{y, O, bias}};
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
  dw.template stage<false, 8>(As, lda, RES_TC, kpad, m0, 0, K);  // the resident A tile, once
  float acc[4][8][4] = {};
  for (int64_t step = 0; step < steps; ++step) {
    if (step + 1 < steps) {
      stage(step + 1);
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();  // (the first also publishes the resident A tile)
    const int k0 = static_cast<int>(step % k_steps) * TC_BK;
    warp_mma<T, 4, 8, TC_BK>(acc, As + wm * lda + k0, lda, &Bs[step % 2][wn][0], TC_LD, lane);
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
  __shared__ T Bs[F_BK][RES_FMA_BN + 1];
  const int64_t K = dw.p.OC, P = dw.p.N * dw.p.Ho * dw.p.Wo;
  const int kpad = static_cast<int>(round_up(K, F_BK));
  const int tm = (threadIdx.x / 16) * 4, tn = (threadIdx.x % 16) * 4;
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * RES_FMA;
  dw.template stage<true, 4>(As, RES_FMA, RES_FMA, kpad, m0, 0, K);
  const StridedOperand<T> wop{w_pw, O, K, 1};
  const StoreOutput<T> out{y, O, bias};
  for (int64_t n0 = 0; n0 < O; n0 += RES_FMA_BN) {
    T acc[4][4] = {};
    for (int k0 = 0; k0 < kpad; k0 += F_BK) {
      wop.template stage<true>(&Bs[0][0], RES_FMA_BN + 1, RES_FMA_BN, F_BK, n0, k0, K);
      __syncthreads();
      thread_fma<T, 4, 4>(acc, As + k0 * RES_FMA + tm, RES_FMA, &Bs[0][tn], RES_FMA_BN + 1, F_BK);
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

namespace {

// Pixels per block of the resident kernel on this layer, or 0 where it does not run: its tile does not
// fit in `smem_per_block` bytes beside the kernel's static B tile, or (tensor cores) the output's rows
// are not whole pairs of channels (VectorRowsOnly).
template <typename T>
int64_t resident_rows(const SeparableGeometry& sp, int64_t smem_per_block) {
  const int64_t K = sp.dw.OC, size = static_cast<int64_t>(sizeof(T));
  if constexpr (uses_tensor_cores<T>()) {
    const int64_t bytes = (RES_TC * resident_lda_tc(K) + 2 * RES_BN * gemm::TC_LD) * size;
    return sp.O % 2 == 0 && bytes <= smem_per_block ? RES_TC : 0;
  } else {
    const int64_t bytes = (RES_FMA * round_up(K, gemm::F_BK) + gemm::F_BK * (RES_FMA_BN + 1)) * size;
    return bytes <= smem_per_block ? RES_FMA : 0;
  }
}

// The resident tile's dynamic shared memory.
template <typename T>
int64_t resident_smem(const SeparableGeometry& sp, int64_t rows) {
  const int64_t K = sp.dw.OC;
  return rows * (uses_tensor_cores<T>() ? resident_lda_tc(K) : round_up(K, gemm::F_BK)) *
         static_cast<int64_t>(sizeof(T));
}

}  // namespace

int64_t separable_forward_workspace(const SeparableGeometry& sp, Dtype dt, int64_t smem_per_block) {
  int64_t bytes = 0;
  dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    if (resident_rows<T>(sp, smem_per_block) == 0)
      bytes = sp.dw.N * sp.dw.Ho * sp.dw.Wo * sp.dw.OC * static_cast<int64_t>(sizeof(T));
  });
  return bytes;
}

void separable_forward_nhwc(const SeparableGeometry& sp, Dtype dt, const void* x, const void* w_taps,
                            const void* dw_bias, const void* w_pw, const void* bias, void* y, void* workspace,
                            int64_t smem_per_block, cudaStream_t stream) {
  const int64_t P = sp.dw.N * sp.dw.Ho * sp.dw.Wo, K = sp.dw.OC, O = sp.O;
  dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    using A = Acc<T>;
    const int64_t rows = resident_rows<T>(sp, smem_per_block);
    if (rows == 0) {  // act(d) [P, K] materialised, then y = act(d) . w_pw^T (+ bias)
      TORCH_CHECK(workspace != nullptr, "xsep: separable_forward_nhwc needs a workspace of ",
                  separable_forward_workspace(sp, dt, smem_per_block), " bytes on this layer");
      depthwise_forward_nhwc(sp.dw, dt, x, w_taps, dw_bias, workspace, stream, sp.mid_activation);
      const GemmParams g{P, O, K, /*a_m=*/K, /*a_k=*/1, /*b_k=*/1, /*b_n=*/K, /*c_m=*/O};
      pointwise_gemm(g, dt, workspace, w_pw, bias, y, stream);
      return;
    }
    // whole pairs of output channels (VectorRowsOnly): y and the bias aligned for them
    TORCH_CHECK(reinterpret_cast<uintptr_t>(y) % (2 * sizeof(T)) == 0 &&
                    reinterpret_cast<uintptr_t>(bias) % (2 * sizeof(A)) == 0,
                "xsep: separable_forward_nhwc needs the output and the bias aligned to pairs of elements");
    with_vec<T>(sp.dw, x, w_taps, [&](auto vec) {
      constexpr int VEC = decltype(vec)::value;
      const auto dw = depthwise_operand<T, VEC>(sp, x, w_taps, dw_bias);
      const auto launch = [&](auto kernel) {
        const int64_t smem = resident_smem<T>(sp, rows);
        const dim3 grid = grid_of((P + rows - 1) / rows, 1, 1, "forward_resident_kernel");
        allow_dynamic_smem(kernel, smem);
        kernel<<<grid, RES_THREADS, smem, stream>>>(O, dw, static_cast<const T*>(w_pw), static_cast<const A*>(bias),
                                                    static_cast<T*>(y));
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      };
      if constexpr (uses_tensor_cores<T>()) {
        launch(forward_resident_tc_kernel<T, VEC>);
      } else {
        launch(forward_resident_fma_kernel<T, VEC>);
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
