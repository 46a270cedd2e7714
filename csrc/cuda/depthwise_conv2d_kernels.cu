// CUDA depthwise kernels (see depthwise_conv2d_kernels.h). Channels are the vector dimension: a
// thread owns VEC consecutive channels (16 bytes of data) of TW consecutive output pixels along W,
// so a warp reads contiguous, 16-byte aligned runs of each pixel's channels; for k = 3, 5, 7 at unit
// stride along W the input columns of a row are loaded once into registers and reused by the TW
// outputs and k taps (a sliding window), and at unit stride in both directions a block first stages
// its input tile plus halo in shared memory (forward_tiled_kernel). At unit stride the input
// gradient is a forward pass with the kernel turned by 180 degrees (see `transposed`), so it runs on
// the same kernels. Accumulation in float (double for double data).
#include <c10/cuda/CUDAException.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <initializer_list>
#include <type_traits>

#include "cuda/activation.cuh"
#include "cuda/depthwise_conv2d_kernels.h"
#include "cuda/kernel_types.cuh"
#include "cuda/vec.cuh"

namespace xsep::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int TW = 4;  // output pixels per thread along W

template <typename A, typename T, int VEC>
__device__ __forceinline__ void load(const T* p, A (&out)[VEC], bool relu) {
  const Vec<T, VEC> v = *reinterpret_cast<const Vec<T, VEC>*>(p);
#pragma unroll
  for (int i = 0; i < VEC; ++i) {
    const A a = static_cast<A>(v.v[i]);
    out[i] = relu && a < A(0) ? A(0) : a;
  }
}

// p: global memory. Stored as one word of the vector's width (nvcc writes a struct of 16-bit
// elements an element at a time, and may split a 16-byte word: see store_global_word).
template <typename A, typename T, int VEC>
__device__ __forceinline__ void store(T* p, const A (&in)[VEC]) {
  Vec<T, VEC> v;
#pragma unroll
  for (int i = 0; i < VEC; ++i) v.v[i] = static_cast<T>(in[i]);
  if constexpr (sizeof(v) >= 4) {
    using Bits = typename Word<sizeof(v)>::type;
    Bits bits;
    memcpy(&bits, &v, sizeof(v));
    store_global_word(p, bits);
  } else {
    p[0] = v.v[0];
  }
}

// A thread's TW outputs of channels c0 .. c0 + VEC start at their bias (0 without one).
template <typename A, int VEC>
__device__ __forceinline__ void start_with_bias(A (&acc)[TW][VEC], const A* bias, int64_t c0) {
#pragma unroll
  for (int v = 0; v < VEC; ++v) {
    const A b = bias != nullptr ? bias[c0 + v] : A(0);
#pragma unroll
    for (int t = 0; t < TW; ++t) acc[t][v] = b;
  }
}

// The forward's output activation (the fused backward's act(d)) on a thread's outputs, in the
// accumulation type before they are rounded.
template <typename A, int VEC>
__device__ __forceinline__ void activate_outputs(Activation act, A (&acc)[TW][VEC]) {
  if (act == Activation::none) return;
#pragma unroll
  for (int t = 0; t < TW; ++t)
#pragma unroll
    for (int v = 0; v < VEC; ++v) acc[t][v] = activate(act, acc[t][v]);
}

__device__ __forceinline__ int64_t global_thread() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t thread_stride() { return static_cast<int64_t>(gridDim.x) * blockDim.x; }

// The per-pixel kernels' work items: a thread owns VEC channels of TW consecutive pixels of one
// image row; items are numbered channel vectors fastest (a warp reads neighbouring channels), then
// the row's runs of TW pixels, rows, images.
struct RowRun {
  int64_t n, row, w0, c0;  // image, row, first pixel along W, first channel
};
template <int VEC>
__device__ __forceinline__ RowRun row_run(int64_t idx, int64_t rows, int64_t wtiles, int64_t cvecs) {
  const int64_t cv = idx % cvecs, rest = idx / cvecs;
  const int64_t wt = rest % wtiles, image_row = rest / wtiles;
  return {image_row / rows, image_row % rows, wt * TW, cv * VEC};
}

int blocks_for(int64_t work) {
  const int64_t b = (work + kThreads - 1) / kThreads;
  return static_cast<int>(b < 1 ? 1 : (b > (1 << 20) ? (1 << 20) : b));  // grid-stride beyond
}

// ---------------------------------------------------------------------------------------------
// Forward. K > 0: a k x k kernel known at compile time; K == 0: any kh x kw.
// VEC > 1 needs M == 1 (then output channel == input channel); VEC == 1 handles any M. `act`: the
// output activation (Activation::none but for the fused backward's act(d)).
template <typename T, int VEC, int K>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(const DepthwiseGeometry p, const T* __restrict__ x, const Acc<T>* __restrict__ w,
                   const Acc<T>* __restrict__ bias, Activation act, T* __restrict__ y) {
  using A = Acc<T>;
  const int64_t cvecs = p.OC / VEC, wtiles = (p.Wo + TW - 1) / TW;
  const int64_t total = p.N * p.Ho * wtiles * cvecs;
  const int kh = K > 0 ? K : static_cast<int>(p.kh), kw = K > 0 ? K : static_cast<int>(p.kw);
  for (int64_t idx = global_thread(); idx < total; idx += thread_stride()) {
    const auto [n, ho, wo0, oc0] = row_run<VEC>(idx, p.Ho, wtiles, cvecs);
    const int64_t ic0 = VEC == 1 ? oc0 / p.M : oc0;
    A acc[TW][VEC];
    start_with_bias(acc, bias, oc0);
    for (int r = 0; r < kh; ++r) {
      const int64_t hi = ho * p.sh - p.pad_top + r * p.dil_h;
      if (hi < 0 || hi >= p.H) continue;
      const T* xrow = x + (n * p.H + hi) * p.W * p.C + ic0;
      const A* wrow = w + static_cast<int64_t>(r) * kw * p.OC + oc0;
      if constexpr (K > 0) {
        if (p.sw == 1 && p.dil_w == 1) {  // sliding window: each input column loaded once
          A xin[TW + K - 1][VEC];
#pragma unroll
          for (int j = 0; j < TW + K - 1; ++j) {
            const int64_t wi = wo0 - p.pad_left + j;
            if (wi >= 0 && wi < p.W) {
              load<A, T, VEC>(xrow + wi * p.C, xin[j], p.relu_input);
            } else {
#pragma unroll
              for (int v = 0; v < VEC; ++v) xin[j][v] = A(0);
            }
          }
#pragma unroll
          for (int s = 0; s < K; ++s) {
            A wv[VEC];
#pragma unroll
            for (int v = 0; v < VEC; ++v) wv[v] = wrow[s * p.OC + v];
#pragma unroll
            for (int t = 0; t < TW; ++t)
#pragma unroll
              for (int v = 0; v < VEC; ++v) acc[t][v] += xin[t + s][v] * wv[v];
          }
          continue;
        }
      }
      for (int s = 0; s < kw; ++s) {
        A wv[VEC];
#pragma unroll
        for (int v = 0; v < VEC; ++v) wv[v] = wrow[s * p.OC + v];
#pragma unroll
        for (int t = 0; t < TW; ++t) {
          const int64_t wi = (wo0 + t) * p.sw - p.pad_left + s * p.dil_w;
          if (wo0 + t < p.Wo && wi >= 0 && wi < p.W) {
            A xv[VEC];
            load<A, T, VEC>(xrow + wi * p.C, xv, p.relu_input);
#pragma unroll
            for (int v = 0; v < VEC; ++v) acc[t][v] += xv[v] * wv[v];
          }
        }
      }
    }
    activate_outputs(act, acc);
    T* yp = y + ((n * p.Ho + ho) * p.Wo + wo0) * p.OC + oc0;
#pragma unroll
    for (int t = 0; t < TW; ++t)
      if (wo0 + t < p.Wo) store<A, T, VEC>(yp + t * p.OC, acc[t]);
  }
}

// ---------------------------------------------------------------------------------------------
// Forward, channels-last, unit stride and dilation, k = 3, 5, 7 (most networks' depthwise layers,
// Xception's included): a block stages its input tile plus the halo in shared memory once, 16 bytes
// per access, then computes a TILE_H x TILE_W output tile of TILE_CV channel vectors from it (the
// same sliding window as above, read from shared memory): an input vector is fetched from global
// memory about (TILE + K - 1)^2 / TILE^2 times instead of once per output row that uses it.
// TRANSPOSED: the input gradient, which at unit stride is this correlation of grad_output with the
// kernel turned by 180 degrees (see launch_tiled_grad_input); `mask` (x, for relu on the input):
// the output is zero where it is not positive. `act`: the forward's output activation.
constexpr int TILE_H = 16, TILE_W = 16, TILE_CV = 4;  // output rows, columns and channel vectors
static_assert(TILE_H * (TILE_W / TW) * TILE_CV == kThreads, "one thread per TW outputs of a vector");
static_assert(TW == 4 && TILE_CV == 4, "tile_column's swizzle assumes these");

// Where input column `col` of the tile lives: its 16-byte vectors are 64 bytes per column, so the
// two column groups a quarter-warp reads (columns TW = 4 apart, 256 bytes) would fall on the same
// banks: 2 wavefronts per request where 1 suffices. Swapping the columns of each pair whose bit 2 is
// set puts the two groups on opposite halves of the banks (a tile width IW is even, so the swap
// stays in the tile).
__device__ __forceinline__ int tile_column(int col) { return col ^ ((col >> 2) & 1); }

template <typename T, int VEC, int K, bool TRANSPOSED>
__global__ void __launch_bounds__(kThreads)
    forward_tiled_kernel(const DepthwiseGeometry p, const T* __restrict__ x, const Acc<T>* __restrict__ w,
                         const Acc<T>* __restrict__ bias, const T* __restrict__ mask, Activation act,
                         T* __restrict__ y) {
  using A = Acc<T>;
  constexpr int IH = TILE_H + K - 1, IW = TILE_W + K - 1;
  static_assert(IW % 2 == 0, "tile_column swaps column pairs");
  __shared__ Vec<T, VEC> tile[IH][IW][TILE_CV];
  const int64_t wtiles = (p.Wo + TILE_W - 1) / TILE_W, cvecs = p.C / VEC;
  const int64_t ho0 = blockIdx.x / wtiles * TILE_H, wo0 = blockIdx.x % wtiles * TILE_W;
  const int64_t cv0 = static_cast<int64_t>(blockIdx.y) * TILE_CV, n = blockIdx.z;
  // The input tile: zero outside the image (the padding) and beyond the channels; relu applied.
  for (int i = threadIdx.x; i < IH * IW * TILE_CV; i += kThreads) {
    const int cv = i % TILE_CV, col = i / TILE_CV % IW, row = i / (TILE_CV * IW);
    const int64_t hi = ho0 - p.pad_top + row, wi = wo0 - p.pad_left + col;
    Vec<T, VEC> v;
    if (hi >= 0 && hi < p.H && wi >= 0 && wi < p.W && cv0 + cv < cvecs) {
      v = *reinterpret_cast<const Vec<T, VEC>*>(x + ((n * p.H + hi) * p.W + wi) * p.C + (cv0 + cv) * VEC);
      if (p.relu_input) {
#pragma unroll
        for (int e = 0; e < VEC; ++e)
          if (static_cast<A>(v.v[e]) < A(0)) v.v[e] = T(0.0f);
      }
    } else {
#pragma unroll
      for (int e = 0; e < VEC; ++e) v.v[e] = T(0.0f);
    }
    tile[row][tile_column(col)][cv] = v;
  }
  __syncthreads();
  // This thread: channel vector cv of TW consecutive outputs of one output row.
  const int cv = threadIdx.x % TILE_CV, col0 = threadIdx.x / TILE_CV % (TILE_W / TW) * TW;
  const int row0 = threadIdx.x / (TILE_CV * (TILE_W / TW));
  const int64_t c0 = (cv0 + cv) * VEC, ho = ho0 + row0, wo = wo0 + col0;
  if (cv0 + cv >= cvecs || ho >= p.Ho || wo >= p.Wo) return;  // (after the block's only barrier)
  A acc[TW][VEC];
  start_with_bias(acc, bias, c0);
#pragma unroll
  for (int r = 0; r < K; ++r) {
    A xin[TW + K - 1][VEC];
#pragma unroll
    for (int j = 0; j < TW + K - 1; ++j) {
      const Vec<T, VEC> v = tile[row0 + r][tile_column(col0 + j)][cv];
#pragma unroll
      for (int e = 0; e < VEC; ++e) xin[j][e] = static_cast<A>(v.v[e]);
    }
#pragma unroll
    for (int s = 0; s < K; ++s) {
      A wv[VEC];
      const int tap = TRANSPOSED ? (K - 1 - r) * K + (K - 1 - s) : r * K + s;
      load_row<true>(w + tap * p.OC + c0, VEC, wv);  // 16-byte loads: OC == C, a multiple of VEC
#pragma unroll
      for (int t = 0; t < TW; ++t)
#pragma unroll
        for (int v = 0; v < VEC; ++v) acc[t][v] += xin[t + s][v] * wv[v];
    }
  }
  activate_outputs(act, acc);
  const int64_t at = ((n * p.Ho + ho) * p.Wo + wo) * p.OC + c0;
#pragma unroll
  for (int t = 0; t < TW; ++t) {
    if (wo + t >= p.Wo) break;
    if (mask != nullptr) {
      A m[VEC];
      load<A, T, VEC>(mask + at + t * p.OC, m, false);
#pragma unroll
      for (int v = 0; v < VEC; ++v)
        if (!(m[v] > A(0))) acc[t][v] = A(0);
    }
    store<A, T, VEC>(y + at + t * p.OC, acc[t]);
  }
}

// ---------------------------------------------------------------------------------------------
// Forward on NCHW data: a thread owns TW consecutive outputs along W of one (n, oc) plane row, so
// a warp covers a contiguous run of the row; the same sliding window as above for k = 3, 5, 7 at
// unit stride along W. Scalar accesses (channels are not contiguous here); L1 serves the overlap
// between neighbouring threads and rows. TRANSPOSED and `mask`: as for forward_tiled_kernel (the
// NCHW input gradient at unit stride).
template <typename T, int K, bool TRANSPOSED>
__global__ void __launch_bounds__(kThreads)
    forward_nchw_kernel(const DepthwiseGeometry p, const T* __restrict__ x, const Acc<T>* __restrict__ w,
                        const Acc<T>* __restrict__ bias, const T* __restrict__ mask, T* __restrict__ y) {
  using A = Acc<T>;
  const int64_t wtiles = (p.Wo + TW - 1) / TW;
  const int64_t total = p.N * p.OC * p.Ho * wtiles;
  const int kh = K > 0 ? K : static_cast<int>(p.kh), kw = K > 0 ? K : static_cast<int>(p.kw);
  for (int64_t idx = global_thread(); idx < total; idx += thread_stride()) {
    const int64_t wt = idx % wtiles;
    int64_t rest = idx / wtiles;
    const int64_t ho = rest % p.Ho;
    rest /= p.Ho;
    const int64_t oc = rest % p.OC, n = rest / p.OC;
    const int64_t wo0 = wt * TW;
    const T* plane = x + (n * p.C + oc / p.M) * p.H * p.W;
    A acc[TW];
    const A b = bias != nullptr ? bias[oc] : A(0);
#pragma unroll
    for (int t = 0; t < TW; ++t) acc[t] = b;
    const auto weight = [&](int r, int s) {  // tap (r, s), turned by 180 degrees when TRANSPOSED
      const int tap = TRANSPOSED ? (kh - 1 - r) * kw + (kw - 1 - s) : r * kw + s;
      return w[static_cast<int64_t>(tap) * p.OC + oc];
    };
    for (int r = 0; r < kh; ++r) {
      const int64_t hi = ho * p.sh - p.pad_top + r * p.dil_h;
      if (hi < 0 || hi >= p.H) continue;
      const T* xrow = plane + hi * p.W;
      if constexpr (K > 0) {
        if (p.sw == 1 && p.dil_w == 1) {
          A xin[TW + K - 1];
#pragma unroll
          for (int j = 0; j < TW + K - 1; ++j) {
            const int64_t wi = wo0 - p.pad_left + j;
            A v = wi >= 0 && wi < p.W ? static_cast<A>(xrow[wi]) : A(0);
            xin[j] = p.relu_input && v < A(0) ? A(0) : v;
          }
#pragma unroll
          for (int s = 0; s < K; ++s) {
            const A wv = weight(r, s);
#pragma unroll
            for (int t = 0; t < TW; ++t) acc[t] += xin[t + s] * wv;
          }
          continue;
        }
      }
      for (int s = 0; s < kw; ++s) {
        const A wv = weight(r, s);
#pragma unroll
        for (int t = 0; t < TW; ++t) {
          const int64_t wi = (wo0 + t) * p.sw - p.pad_left + s * p.dil_w;
          if (wo0 + t < p.Wo && wi >= 0 && wi < p.W) {
            const A v = static_cast<A>(xrow[wi]);
            acc[t] += (p.relu_input && v < A(0) ? A(0) : v) * wv;
          }
        }
      }
    }
    const int64_t row = ((n * p.OC + oc) * p.Ho + ho) * p.Wo;
#pragma unroll
    for (int t = 0; t < TW; ++t) {
      if (wo0 + t >= p.Wo) break;
      if (mask != nullptr && !(static_cast<A>(mask[row + wo0 + t]) > A(0))) acc[t] = A(0);
      y[row + wo0 + t] = static_cast<T>(acc[t]);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Grad input: the transposed stencil. A thread owns VEC input channels of TW input pixels along W
// and gathers, for each tap, the output pixel that read it (if the strides line up), summing over
// the channel's M outputs.
template <typename T, int VEC>
__global__ void __launch_bounds__(kThreads)
    grad_input_kernel(const DepthwiseGeometry p, const T* __restrict__ go, const Acc<T>* __restrict__ w,
                      const T* __restrict__ x, T* __restrict__ gi) {
  using A = Acc<T>;
  const int64_t cvecs = p.C / VEC, wtiles = (p.W + TW - 1) / TW;
  const int64_t total = p.N * p.H * wtiles * cvecs;
  for (int64_t idx = global_thread(); idx < total; idx += thread_stride()) {
    const auto [n, hi, wi0, c0] = row_run<VEC>(idx, p.H, wtiles, cvecs);
    A acc[TW][VEC];
#pragma unroll
    for (int t = 0; t < TW; ++t)
#pragma unroll
      for (int v = 0; v < VEC; ++v) acc[t][v] = A(0);
    for (int64_t r = 0; r < p.kh; ++r) {
      const int64_t num_h = hi + p.pad_top - r * p.dil_h;
      if (num_h < 0 || num_h % p.sh != 0) continue;
      const int64_t ho = num_h / p.sh;
      if (ho >= p.Ho) continue;
      for (int64_t s = 0; s < p.kw; ++s) {
#pragma unroll
        for (int t = 0; t < TW; ++t) {
          const int64_t num_w = wi0 + t + p.pad_left - s * p.dil_w;
          if (wi0 + t >= p.W || num_w < 0 || num_w % p.sw != 0) continue;
          const int64_t wo = num_w / p.sw;
          if (wo >= p.Wo) continue;
          const T* gop = go + ((n * p.Ho + ho) * p.Wo + wo) * p.OC;
          const A* wp = w + (r * p.kw + s) * p.OC;
          if constexpr (VEC > 1) {  // M == 1
            A gv[VEC];
            load<A, T, VEC>(gop + c0, gv, false);
#pragma unroll
            for (int v = 0; v < VEC; ++v) acc[t][v] += gv[v] * wp[c0 + v];
          } else {
            for (int64_t m = 0; m < p.M; ++m) {
              const int64_t oc = c0 * p.M + m;
              acc[t][0] += static_cast<A>(gop[oc]) * wp[oc];
            }
          }
        }
      }
    }
    const int64_t base = ((n * p.H + hi) * p.W + wi0) * p.C + c0;
#pragma unroll
    for (int t = 0; t < TW; ++t) {
      if (wi0 + t >= p.W) continue;
      if (p.relu_input) {  // d relu(x) / dx = (x > 0)
        A xv[VEC];
        load<A, T, VEC>(x + base + t * p.C, xv, false);
#pragma unroll
        for (int v = 0; v < VEC; ++v) acc[t][v] = xv[v] > A(0) ? acc[t][v] : A(0);
      }
      store<A, T, VEC>(gi + base + t * p.C, acc[t]);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Grad weight, pass 1: a thread owns VEC output channels of one kernel row's KW taps (KW = 3, 5, 7
// for those square kernels; KW = 0: of one tap, any kernel) over one chunk of output pixels, and
// writes their partial sums (no atomics). A row's taps share each pixel's grad_output load, which
// one thread per tap would repeat KW times.
template <typename T, int VEC, int KW>
__global__ void __launch_bounds__(kThreads)
    grad_weight_partials_kernel(const DepthwiseGeometry p, int64_t chunks, const T* __restrict__ go,
                                const T* __restrict__ x, Acc<T>* __restrict__ partials) {
  using A = Acc<T>;
  constexpr int NS = KW > 0 ? KW : 1;  // taps per thread
  const int64_t cvecs = p.OC / VEC, taps = p.kh * p.kw, pixels = p.N * p.Ho * p.Wo;
  const int64_t groups = KW > 0 ? p.kh : taps;  // a thread's taps: a kernel row, or one tap
  const int64_t per_chunk = (pixels + chunks - 1) / chunks;
  const int64_t total = chunks * groups * cvecs;
  for (int64_t idx = global_thread(); idx < total; idx += thread_stride()) {
    const int64_t cv = idx % cvecs;
    int64_t rest = idx / cvecs;
    const int64_t group = rest % groups, chunk = rest / groups;
    const int64_t r = KW > 0 ? group : group / p.kw, s0 = KW > 0 ? 0 : group % p.kw;
    const int64_t oc0 = cv * VEC, ic0 = VEC == 1 ? oc0 / p.M : oc0;
    A acc[NS][VEC];
#pragma unroll
    for (int j = 0; j < NS; ++j)
#pragma unroll
      for (int v = 0; v < VEC; ++v) acc[j][v] = A(0);
    const int64_t end = (chunk + 1) * per_chunk < pixels ? (chunk + 1) * per_chunk : pixels;
    for (int64_t px = chunk * per_chunk; px < end; ++px) {
      const int64_t wo = px % p.Wo, nho = px / p.Wo;
      const int64_t ho = nho % p.Ho, n = nho / p.Ho;
      const int64_t hi = ho * p.sh - p.pad_top + r * p.dil_h;
      if (hi < 0 || hi >= p.H) continue;
      const T* xrow = x + (n * p.H + hi) * p.W * p.C + ic0;
      A gv[VEC];
      load<A, T, VEC>(go + px * p.OC + oc0, gv, false);
#pragma unroll
      for (int j = 0; j < NS; ++j) {
        const int64_t wi = wo * p.sw - p.pad_left + (s0 + j) * p.dil_w;
        if (wi < 0 || wi >= p.W) continue;
        A xv[VEC];
        load<A, T, VEC>(xrow + wi * p.C, xv, p.relu_input);
#pragma unroll
        for (int v = 0; v < VEC; ++v) acc[j][v] += gv[v] * xv[v];
      }
    }
#pragma unroll
    for (int j = 0; j < NS; ++j) {
      A* out = partials + (chunk * taps + r * p.kw + s0 + j) * p.OC + oc0;
      if constexpr (VEC > 1) {
        store_row<true>(out, VEC, acc[j]);  // 16-byte stores: OC a multiple of VEC when vectorised
      } else {
        out[0] = acc[j][0];
      }
    }
  }
}

// Grad weight, pass 2: each (tap, channel) sums its chunks in order.
template <typename A>
__global__ void __launch_bounds__(kThreads)
    sum_chunks_kernel(int64_t chunks, int64_t width, const A* __restrict__ partials, A* __restrict__ out) {
  for (int64_t i = global_thread(); i < width; i += thread_stride()) {
    A acc = A(0);
    for (int64_t c = 0; c < chunks; ++c) acc += partials[c * width + i];
    out[i] = acc;
  }
}

// ---------------------------------------------------------------------------------------------
// Dispatch: data type, vector width, kernel size.

bool aligned16(const void* ptr) { return ptr == nullptr || reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

// The widest vector every access of a launch can use: channel counts and base pointers must allow
// 16-byte accesses, and output channel == input channel (M == 1).
template <typename T>
bool can_vectorize(const DepthwiseGeometry& p, std::initializer_list<const void*> ptrs) {
  if (p.M != 1 || p.C % kVec16<T> != 0) return false;
  for (const void* ptr : ptrs)
    if (!aligned16(ptr)) return false;
  return true;
}

// Calls f(std::integral_constant<int, K>) with K = 3, 5 or 7 for those square kernels (compiled
// with the kernel size fixed), else K = 0 (any kh x kw, read at run time).
template <typename F>
void with_kernel_size(const DepthwiseGeometry& p, F&& f) {
  const int64_t k = p.kh == p.kw ? p.kh : 0;
  if (k == 3) {
    f(std::integral_constant<int, 3>{});
  } else if (k == 5) {
    f(std::integral_constant<int, 5>{});
  } else if (k == 7) {
    f(std::integral_constant<int, 7>{});
  } else {
    f(std::integral_constant<int, 0>{});
  }
}

// Whether the shared-memory tiled kernel takes p (16-byte vectors, unit stride and dilation, a
// square k = 3, 5, 7), and its grid: output tiles, channel-vector groups, images.
template <int VEC>
bool tiled_kernel_applies(const DepthwiseGeometry& p) {
  const int64_t channel_groups = (p.C / VEC + TILE_CV - 1) / TILE_CV;
  return VEC > 1 && p.kh == p.kw && (p.kh == 3 || p.kh == 5 || p.kh == 7) && p.sh == 1 && p.sw == 1 && p.dil_h == 1 &&
         p.dil_w == 1 && p.N <= 65535 && channel_groups <= 65535;
}
template <int VEC>
dim3 tiled_grid(const DepthwiseGeometry& p) {
  return dim3(static_cast<unsigned>((p.Ho + TILE_H - 1) / TILE_H * ((p.Wo + TILE_W - 1) / TILE_W)),
              static_cast<unsigned>((p.C / VEC + TILE_CV - 1) / TILE_CV), static_cast<unsigned>(p.N));
}

template <typename T, int VEC>
void launch_forward_at_width(const DepthwiseGeometry& p, const T* x, const Acc<T>* w, const Acc<T>* b, Activation act,
                             T* y, cudaStream_t stream) {
  with_kernel_size(p, [&](auto k) {
    constexpr int K = decltype(k)::value;
    if constexpr (VEC > 1 && K > 0) {
      if (tiled_kernel_applies<VEC>(p)) {
        forward_tiled_kernel<T, VEC, K, false>
            <<<tiled_grid<VEC>(p), kThreads, 0, stream>>>(p, x, w, b, nullptr, act, y);
        return;
      }
    }
    const int blocks = blocks_for(p.N * p.Ho * ((p.Wo + TW - 1) / TW) * (p.OC / VEC));
    forward_kernel<T, VEC, K><<<blocks, kThreads, 0, stream>>>(p, x, w, b, act, y);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// The channels-last forward, 16-byte vectors wherever every access allows them.
template <typename T>
void launch_forward(const DepthwiseGeometry& p, const T* x, const Acc<T>* w, const Acc<T>* b, Activation act, T* y,
                    cudaStream_t stream) {
  if (can_vectorize<T>(p, {x, w, y})) {
    launch_forward_at_width<T, kVec16<T>>(p, x, w, b, act, y, stream);
  } else {
    launch_forward_at_width<T, 1>(p, x, w, b, act, y, stream);
  }
}

template <typename T, bool TRANSPOSED>
void launch_forward_nchw(const DepthwiseGeometry& p, const T* x, const Acc<T>* w, const Acc<T>* b, const T* mask, T* y,
                         cudaStream_t stream) {
  const int blocks = blocks_for(p.N * p.OC * p.Ho * ((p.Wo + TW - 1) / TW));
  with_kernel_size(p, [&](auto k) {
    forward_nchw_kernel<T, decltype(k)::value, TRANSPOSED><<<blocks, kThreads, 0, stream>>>(p, x, w, b, mask, y);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// At unit stride, grad_input[h, w] = sum over (r, s) of grad_output[h + pad_top - r, w + pad_left - s]
// w[r, s]: a forward pass over grad_output with these parameters (sizes swapped, padding K - 1 - pad),
// the kernel turned by 180 degrees (TRANSPOSED) and the relu mask applied to its output.
DepthwiseGeometry transposed(const DepthwiseGeometry& p) {
  DepthwiseGeometry q = p;
  q.H = p.Ho, q.W = p.Wo, q.Ho = p.H, q.Wo = p.W;
  q.pad_top = p.kh - 1 - p.pad_top, q.pad_left = p.kw - 1 - p.pad_left;
  q.relu_input = false;
  return q;
}

// The input gradient on the tiled kernel (see transposed); false when that kernel does not take p.
template <typename T, int VEC>
bool launch_tiled_grad_input(const DepthwiseGeometry& p, const T* go, const Acc<T>* w, const T* x, T* gi,
                             cudaStream_t stream) {
  if (!tiled_kernel_applies<VEC>(p)) return false;
  const DepthwiseGeometry q = transposed(p);
  with_kernel_size(p, [&](auto k) {
    constexpr int K = decltype(k)::value;
    if constexpr (K > 0) {
      forward_tiled_kernel<T, VEC, K, true><<<tiled_grid<VEC>(q), kThreads, 0, stream>>>(
          q, go, w, nullptr, p.relu_input ? x : nullptr, Activation::none, gi);
    }
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return true;
}

// The channels-last input gradient: the tiled kernel where it applies, else the per-pixel one, with
// 16-byte vectors wherever every access allows them.
template <typename T>
void launch_grad_input(const DepthwiseGeometry& p, const T* go, const Acc<T>* w, const T* x, T* gi,
                       cudaStream_t stream) {
  constexpr int V = kVec16<T>;
  if (can_vectorize<T>(p, {go, x, w, gi})) {
    if (launch_tiled_grad_input<T, V>(p, go, w, x, gi, stream)) return;
    const int64_t work = p.N * p.H * ((p.W + TW - 1) / TW) * (p.C / V);
    grad_input_kernel<T, V><<<blocks_for(work), kThreads, 0, stream>>>(p, go, w, x, gi);
  } else {
    const int64_t work = p.N * p.H * ((p.W + TW - 1) / TW) * p.C;
    grad_input_kernel<T, 1><<<blocks_for(work), kThreads, 0, stream>>>(p, go, w, x, gi);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// The weight gradient's two passes (see depthwise_conv2d_kernels.h): partial sums per chunk, then
// their ordered sum into grad_taps.
template <typename T>
void launch_grad_weight(const DepthwiseGeometry& p, int64_t chunks, const T* go, const T* x, Acc<T>* partials,
                        Acc<T>* grad_taps, cudaStream_t stream) {
  constexpr int V = kVec16<T>;
  if (can_vectorize<T>(p, {go, x, partials})) {
    with_kernel_size(p, [&](auto k) {
      constexpr int K = decltype(k)::value;
      const int64_t groups = K > 0 ? p.kh : p.kh * p.kw;  // see grad_weight_partials_kernel
      const int64_t work = chunks * groups * (p.OC / V);
      grad_weight_partials_kernel<T, V, K><<<blocks_for(work), kThreads, 0, stream>>>(p, chunks, go, x, partials);
    });
  } else {  // (element by element: odd channel counts, M > 1; a thread per tap)
    const int64_t work = chunks * p.kh * p.kw * p.OC;
    grad_weight_partials_kernel<T, 1, 0><<<blocks_for(work), kThreads, 0, stream>>>(p, chunks, go, x, partials);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  const int64_t width = p.kh * p.kw * p.OC;
  sum_chunks_kernel<Acc<T>><<<blocks_for(width), kThreads, 0, stream>>>(chunks, width, partials, grad_taps);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

void depthwise_forward_nhwc(const DepthwiseGeometry& p, Dtype dt, const void* x, const void* w_taps, const void* bias,
                            void* y, cudaStream_t stream, Activation act) {
  dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    using A = Acc<T>;
    launch_forward<T>(p, static_cast<const T*>(x), static_cast<const A*>(w_taps), static_cast<const A*>(bias), act,
                      static_cast<T*>(y), stream);
  });
}

void depthwise_forward_nchw(const DepthwiseGeometry& p, Dtype dt, const void* x, const void* w_taps, const void* bias,
                            void* y, cudaStream_t stream) {
  dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    using A = Acc<T>;
    launch_forward_nchw<T, false>(p, static_cast<const T*>(x), static_cast<const A*>(w_taps),
                                  static_cast<const A*>(bias), nullptr, static_cast<T*>(y), stream);
  });
}

void depthwise_grad_input_nhwc(const DepthwiseGeometry& p, Dtype dt, const void* grad_output, const void* w_taps,
                               const void* x, void* grad_input, cudaStream_t stream) {
  dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    using A = Acc<T>;
    launch_grad_input<T>(p, static_cast<const T*>(grad_output), static_cast<const A*>(w_taps), static_cast<const T*>(x),
                         static_cast<T*>(grad_input), stream);
  });
}

bool depthwise_grad_input_nchw(const DepthwiseGeometry& p, Dtype dt, const void* grad_output, const void* w_taps,
                               const void* x, void* grad_input, cudaStream_t stream) {
  if (p.M != 1 || p.sh != 1 || p.sw != 1 || p.dil_h != 1 || p.dil_w != 1) return false;
  // the forward kernel over grad_output, as for launch_tiled_grad_input
  const DepthwiseGeometry q = transposed(p);
  dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    using A = Acc<T>;
    launch_forward_nchw<T, true>(q, static_cast<const T*>(grad_output), static_cast<const A*>(w_taps), nullptr,
                                 p.relu_input ? static_cast<const T*>(x) : nullptr, static_cast<T*>(grad_input),
                                 stream);
  });
  return true;
}

int64_t depthwise_grad_weight_chunks(const DepthwiseGeometry& p) {
  // A split fixed by the shape alone (never by the GPU), so results are bitwise reproducible
  // everywhere: about 128 output pixels per chunk (enough threads for 132 SMs on 19 x 19 x 728 at
  // batch 128 with a kernel row per thread), at most 1024 chunks.
  const int64_t pixels = p.N * p.Ho * p.Wo;
  const int64_t chunks = (pixels + 127) / 128;
  return chunks < 1 ? 1 : (chunks > 1024 ? 1024 : chunks);
}

void depthwise_grad_weight_nhwc(const DepthwiseGeometry& p, Dtype dt, const void* grad_output, const void* x,
                                void* partials, void* grad_taps, cudaStream_t stream) {
  dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    using A = Acc<T>;
    launch_grad_weight<T>(p, depthwise_grad_weight_chunks(p), static_cast<const T*>(grad_output),
                          static_cast<const T*>(x), static_cast<A*>(partials), static_cast<A*>(grad_taps), stream);
  });
}

}  // namespace xsep::cuda
