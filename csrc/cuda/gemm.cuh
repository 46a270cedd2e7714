// The GEMM core shared by the pointwise and the fused separable kernels:
//   C[M, N] = A[M, K] . B[K, N]
// where A and B are *operands* that know how to stage a tile of themselves into shared memory
// (strided matrices here; the fused forward's resident kernels stage a depthwise convolution
// computed on the fly the same way and reuse the warp tiles below), and C goes through an
// *epilogue* functor (store with bias, store a split's partial sum, ...). The K reduction can be
// split in fixed chunks over gridDim.z (deterministic: the partials are summed in order after).
//
// Tensor cores (float16, bfloat16): a 256 x 128 C tile per block of 8 warps (each warp 64 x 64, as
// 4 x 8 mma.sync m16n8k16 tiles; TcTile), K in steps of 32, the tiles in dynamic shared memory. Each operand's tile is
// staged in the layout its memory has (tile_is_k_major): [row][k] (k contiguous, rows padded by 8 elements against bank
// conflicts) read with ldmatrix, or, for an operand whose k index is the outer, strided one
// (StridedKMajorOperand: a weight gradient's operands, W as the input gradient's B), [k][row] (rows
// contiguous, padded likewise) read with ldmatrix.trans; either way staged by 16-byte cp.async copies.
// FMA units (float32, float64; no TF32): a 64 x 64 tile per block of 256 threads, each computing
// 4 x 4 outputs from k-major shared-memory tiles.
#pragma once

#include <c10/cuda/CUDAException.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <type_traits>

#include "cuda/async_copy.cuh"
#include "cuda/kernel_types.cuh"
#include "cuda/mma.cuh"
#include "cuda/vec.cuh"

namespace xsep::cuda {

template <typename T>
constexpr bool uses_tensor_cores() {
  return std::is_same_v<T, c10::Half> || std::is_same_v<T, c10::BFloat16>;
}

namespace gemm {
constexpr int TC_BK = 32, TC_LD = TC_BK + 8, TC_THREADS = 128;
constexpr int F_BM = 64, F_BN = 64, F_BK = 16, F_THREADS = 256;

// About 4096 of K per split, at most 64 splits: enough blocks for a small M x N (a weight
// gradient's C is only out x in channels) and an order that depends on the shape only.
inline int64_t k_splits(int64_t K) {
  const int64_t splits = (K + 4095) / 4096;
  return splits < 1 ? 1 : (splits > 64 ? 64 : splits);
}
}  // namespace gemm

// ---------------------------------------------------------------------------------------------
// Warp and thread tiles

// acc[MI][NJ] (16 x 8 tiles) += A[MI*16 rows][KS] . B[NJ*8 rows][KS]^T on tensor cores, from shared
// memory: `a` points at the warp's first row of A at the current k, rows `lda` elements apart
// (likewise `b`, rows of B being C's columns). KS is a multiple of 16. A_KMAJOR: A's tile is [k][row]
// instead (`a` at the warp's first row of the current k, k `lda` apart), read with ldmatrix.trans,
// which hands out the same fragments (mma.cuh); likewise B_KMAJOR.
template <typename T, int MI, int NJ, int KS, bool A_KMAJOR = false, bool B_KMAJOR = false>
__device__ __forceinline__ void warp_mma(float (&acc)[MI][NJ][4], const T* a, int lda, const T* b, int ldb, int lane) {
#pragma unroll
  for (int ks = 0; ks < KS; ks += 16) {
    uint32_t af[MI][4], bf[NJ][2];
#pragma unroll
    for (int i = 0; i < MI; ++i) {
      if constexpr (A_KMAJOR) {  // matrix lane / 8: rows (m) half (lane / 8) % 2, k half lane / 16; k lane % 8
        ldmatrix_x4_trans(af[i], a + (ks + (lane / 16) * 8 + lane % 8) * lda + i * 16 + ((lane / 8) % 2) * 8);
      } else {  // rows lane % 16, k half lane / 16
        ldmatrix_x4(af[i], a + (i * 16 + lane % 16) * lda + ks + (lane / 16) * 8);
      }
    }
#pragma unroll
    for (int j = 0; j < NJ; ++j) {
      if constexpr (B_KMAJOR) {  // k lane % 16 (matrix (lane / 8) % 2: k half), rows (n) j * 8 ..
        ldmatrix_x2_trans(bf[j], b + (ks + lane % 16) * ldb + j * 8);
      } else {  // rows (n) lane % 8, k half (lane / 8) % 2
        ldmatrix_x2(bf[j], b + (j * 8 + lane % 8) * ldb + ks + ((lane / 8) % 2) * 8);
      }
    }
#pragma unroll
    for (int i = 0; i < MI; ++i)
#pragma unroll
      for (int j = 0; j < NJ; ++j) mma_16816<MmaType<T>::bf16>(acc[i][j], af[i], bf[j]);
  }
}

// Hands a thread's part of the C tile to the epilogue by rows of W consecutive columns: for each
// group of columns [n, n + W) (cut at N), its per-column values once (epilogue.columns), then every
// row m < M of it (epilogue.store). As W-wide vectors (VEC = true) when every group is whole
// (N % W == 0) and the epilogue's matrices are aligned for them (epilogue.aligned_rows), else element
// by element: `group` is called with std::true_type or std::false_type.
template <int W, class Epilogue, class Group>
__device__ __forceinline__ void store_group(bool vec, Group&& group) {
  if (vec) {
    group(std::true_type{});
  } else {
    group(std::false_type{});
  }
}

template <int W, class Epilogue>
__device__ __forceinline__ bool vector_rows(int64_t N, const Epilogue& epilogue) {
  return N % W == 0 && epilogue.template aligned_rows<W>();
}

// warp_mma's tile (W = 2): the C fragment holds c0, c1 at row lane / 4, columns 2 (lane % 4) + {0, 1},
// and c2, c3 eight rows down; m0, n0: the warp's first row and column.
template <int MI, int NJ, class Epilogue>
__device__ __forceinline__ void store_fragments(const float (&acc)[MI][NJ][4], int lane, int64_t m0, int64_t n0,
                                                int64_t M, int64_t N, const Epilogue& epilogue) {
  const bool vec = vector_rows<2>(N, epilogue);
#pragma unroll
  for (int j = 0; j < NJ; ++j) {
    const int64_t n = n0 + j * 8 + 2 * (lane % 4);
    if (n >= N) continue;
    const int count = n + 1 < N ? 2 : 1;
    store_group<2, Epilogue>(vec, [&](auto tag) {
      constexpr bool VEC = decltype(tag)::value;
      const auto columns = epilogue.template columns<VEC, 2>(n, count);
#pragma unroll
      for (int i = 0; i < MI; ++i)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int64_t m = m0 + i * 16 + lane / 4 + h * 8;
          const float v[2] = {acc[i][j][h * 2], acc[i][j][h * 2 + 1]};
          if (m < M) epilogue.template store<VEC>(m, n, v, count, columns);
        }
    });
  }
}

// thread_fma's outputs (W = TN): rows m0 + i, columns n0 + j.
template <typename T, int TM, int TN, class Epilogue>
__device__ __forceinline__ void store_outputs(const T (&acc)[TM][TN], int64_t m0, int64_t n0, int64_t M, int64_t N,
                                              const Epilogue& epilogue) {
  if (n0 >= N) return;
  const int count = N - n0 < TN ? static_cast<int>(N - n0) : TN;
  store_group<TN, Epilogue>(vector_rows<TN>(N, epilogue), [&](auto tag) {
    constexpr bool VEC = decltype(tag)::value;
    const auto columns = epilogue.template columns<VEC, TN>(n0, count);
#pragma unroll
    for (int i = 0; i < TM; ++i)
      if (m0 + i < M) epilogue.template store<VEC>(m0 + i, n0, acc[i], count, columns);
  });
}

// acc[TM][TN] += A[k][TM] . B[k][TN] over k < ks, from k-major shared-memory tiles (`a` at this
// thread's first row, rows of k `lda` apart; likewise `b`).
template <typename T, int TM, int TN>
__device__ __forceinline__ void thread_fma(T (&acc)[TM][TN], const T* a, int lda, const T* b, int ldb, int ks) {
#pragma unroll 4
  for (int k = 0; k < ks; ++k) {
    T av[TM], bv[TN];
#pragma unroll
    for (int i = 0; i < TM; ++i) av[i] = a[k * lda + i];
#pragma unroll
    for (int j = 0; j < TN; ++j) bv[j] = b[k * ldb + j];
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
      for (int j = 0; j < TN; ++j) acc[i][j] = fma(av[i], bv[j], acc[i][j]);
  }
}

// ---------------------------------------------------------------------------------------------
// Operands and epilogues

// A matrix in memory: element (row, k) at p[row * s_row + k * s_k], rows in [0, rows). Stages rows
// [r0, r0 + nr) x k [k0, k0 + nk) into s, element (r, k) at s[r * ld + k] (or at s[k * ld + r] when
// KMAJOR: the tile's layout, which the kernel chooses), zero beyond `rows` or `k_end`. Where the tile
// holds runs of memory's contiguous index (k in a row-major tile, rows in a k-major one), 16-byte
// aligned in both (the caller's tile rows of 16-byte multiples; ld odd on FMA units), as 16-byte
// cp.async copies: the caller commits and waits for them. Otherwise 16 bytes at a time from memory
// where k is contiguous and aligned, else element by element with consecutive threads on
// consecutive addresses of whichever index is contiguous in memory (reads coalesce): odd channel
// counts, misaligned views, the tiles' edges.
// (The element-by-element loops are not unrolled: they serve the tiles' edges and odd shapes, and
// each unrolled copy of a scalar 16-bit load is one more in the kernel's SASS.)
template <typename T, bool KMAJOR>
__device__ void stage_strided(const T* p, int64_t rows, int64_t s_row, int64_t s_k, T* s, int ld, int nr, int nk,
                              int64_t r0, int64_t k0, int64_t k_end) {
  constexpr int V = kVec16<T>;
  // element (r, k), 0 beyond the matrix or the K chunk
  const auto at = [&](int64_t r, int64_t k) { return r < rows && k < k_end ? p[r * s_row + k * s_k] : T(0.0f); };
  const bool p_aligned = reinterpret_cast<uintptr_t>(p) % 16 == 0 && ld % V == 0;
  if (KMAJOR && s_row == 1 && s_k % V == 0 && r0 % V == 0 && nr % V == 0 && p_aligned) {
    // runs of V rows at one k: consecutive threads take consecutive runs, then the next k
    const int rv = nr / V;
    for (int i = threadIdx.x; i < nk * rv; i += blockDim.x) {
      const int kk = i / rv, rr = (i % rv) * V;
      const int64_t r = r0 + rr, k = k0 + kk;
      T* dst = s + kk * ld + rr;
      if (k < k_end && r + V <= rows) {
        cp_async_16(dst, p + r + k * s_k);
      } else if (k >= k_end || r >= rows) {  // past the matrix: zeros, as one 16-byte store
        *reinterpret_cast<uint4*>(dst) = uint4{0, 0, 0, 0};
      } else {  // the matrix's last rows
#pragma unroll 1
        for (int e = 0; e < V; ++e) dst[e] = at(r + e, k);
      }
    }
    return;
  }
  if (s_k == 1 && s_row % V == 0 && k0 % V == 0 && nk % V == 0 && reinterpret_cast<uintptr_t>(p) % 16 == 0) {
    // Row-major tiles: each 8 consecutive threads (one phase of a 16-byte shared access) take one
    // 16-byte chunk of 8 consecutive rows, which the padded rows (TC_LD: 80 bytes) put on distinct
    // banks, where row by row two rows' chunks would share banks (2 wavefronts per phase). A warp
    // still reads 8 rows x 4 chunks: the same sectors of memory.
    const int kv = nk / V, nr8 = KMAJOR ? nr : (nr + 7) / 8 * 8;
    for (int i = threadIdx.x; i < nr8 * kv; i += blockDim.x) {
      const int rr = KMAJOR ? i / kv : i / (8 * kv) * 8 + i % 8, kk = (KMAJOR ? i % kv : i / 8 % kv) * V;
      if (rr >= nr) continue;
      const int64_t r = r0 + rr, k = k0 + kk;
      if (r < rows && k + V <= k_end) {
        if (!KMAJOR && ld % V == 0) {
          cp_async_16(s + rr * ld + kk, p + r * s_row + k);
          continue;
        }
        const Vec<T, V> v = *reinterpret_cast<const Vec<T, V>*>(p + r * s_row + k);
#pragma unroll
        for (int e = 0; e < V; ++e) s[KMAJOR ? (kk + e) * ld + rr : rr * ld + kk + e] = v.v[e];
      } else if (!KMAJOR && ld % V == 0 && (r >= rows || k >= k_end)) {  // past the matrix: zeros
        *reinterpret_cast<uint4*>(s + rr * ld + kk) = uint4{0, 0, 0, 0};
      } else {  // the tile's edge
#pragma unroll 1
        for (int e = 0; e < V; ++e) s[KMAJOR ? (kk + e) * ld + rr : rr * ld + kk + e] = at(r, k + e);
      }
    }
    return;
  }
  const bool k_fast = s_k == 1;
#pragma unroll 1
  for (int i = threadIdx.x; i < nr * nk; i += blockDim.x) {
    const int rr = k_fast ? i / nk : i % nr, kk = k_fast ? i % nk : i / nr;
    s[KMAJOR ? kk * ld + rr : rr * ld + kk] = at(r0 + rr, k0 + kk);
  }
}

// A strided matrix whose k index is the contiguous one (s_k == 1: pixels x channels, a weight as the
// forward's B): staged row-major on tensor cores.
template <typename T>
struct StridedOperand {
  const T* p;
  int64_t rows, s_row, s_k;
  template <bool KMAJOR>
  __device__ void stage(T* s, int ld, int nr, int nk, int64_t r0, int64_t k0, int64_t k_end) const {
    stage_strided<T, KMAJOR>(p, rows, s_row, s_k, s, ld, nr, nk, r0, k0, k_end);
  }
};

// The same for a matrix whose rows are the contiguous index (s_row == 1) and k the outer, strided
// one (a weight gradient's GY^T and X, the input gradient's W): staged k-major on tensor cores.
template <typename T>
struct StridedKMajorOperand {
  const T* p;
  int64_t rows, s_row, s_k;
  template <bool KMAJOR>
  __device__ void stage(T* s, int ld, int nr, int nk, int64_t r0, int64_t k0, int64_t k_end) const {
    stage_strided<T, KMAJOR>(p, rows, s_row, s_k, s, ld, nr, nk, r0, k0, k_end);
  }
};

// Whether gemm_tc_kernel stages an operand's tiles k-major ([k][row]) rather than row-major.
template <class Op>
constexpr bool tile_is_k_major = false;
template <typename T>
constexpr bool tile_is_k_major<StridedKMajorOperand<T>> = true;

// The epilogues, called by store_groups: aligned_rows<W>(), whether rows of W columns starting at
// multiples of W are aligned for vectors in every matrix the epilogue touches; columns<VEC, W>(n,
// count), the values that columns [n, n + count) need in every row (an empty struct when none);
// store<VEC>(m, n, v, count, columns): C[m, n + e] = v[e] for e < count, as one row (load_row and
// store_row in vec.cuh).

struct NoColumns {};

// C[m, n] + bias[n] (0 without a bias) into out[m * ld + n], in the data type.
template <typename T>
struct StoreOutput {
  using A = Acc<T>;
  T* out;
  int64_t ld;
  const A* bias;  // may be null
  template <int W>
  __device__ __forceinline__ bool aligned_rows() const {
    return rows_aligned<T, W>(out, ld) && (bias == nullptr || rows_aligned<A, W>(bias, 0));
  }
  template <bool VEC, int W>
  __device__ __forceinline__ Vec<A, W> columns(int64_t n, int count) const {
    Vec<A, W> b;
    if (bias != nullptr) {
      load_row<VEC>(bias + n, count, b.v);
    } else {
#pragma unroll
      for (int e = 0; e < W; ++e) b.v[e] = A(0);
    }
    return b;
  }
  template <bool VEC, int W, typename V>
  __device__ __forceinline__ void store(int64_t m, int64_t n, const V (&v)[W], int count, const Vec<A, W>& b) const {
    T r[W];
#pragma unroll
    for (int e = 0; e < W; ++e) r[e] = static_cast<T>(v[e] + b.v[e]);
    store_row<VEC>(out + m * ld + n, count, r);
  }
};

// This split's partial C into partials[split, M, N], in the accumulation type.
template <typename A>
struct StorePartial {
  A* partials;
  int64_t M, N;
  template <int W>
  __device__ __forceinline__ bool aligned_rows() const {
    return rows_aligned<A, W>(partials, N);
  }
  template <bool VEC, int W>
  __device__ __forceinline__ NoColumns columns(int64_t, int) const {
    return {};
  }
  template <bool VEC, int W, typename V>
  __device__ __forceinline__ void store(int64_t m, int64_t n, const V (&v)[W], int count, NoColumns) const {
    A r[W];
#pragma unroll
    for (int e = 0; e < W; ++e) r[e] = static_cast<A>(v[e]);
    store_row<VEC>(partials + (static_cast<int64_t>(blockIdx.z) * M + m) * N + n, count, r);
  }
};

// ---------------------------------------------------------------------------------------------
// Kernels

// gemm_tc_kernel's block: a 256 x 128 C tile on 8 warps of 64 x 64. Per 32-deep k step it moves
// 24 KB by cp.async and 64 KB by ldmatrix for 256 mma.sync (a 128 x 64 tile on warps of 64 x 32:
// 12 + 24 KB for 64), and its blocks read each A row N / 128 times and each B column M / 256 times
// (each block reads its rows of A and columns of B whole): the GEMMs are bound by the SM's memory
// pipe and by L2 (tests/cuda_emu/memory_counters.py). 164-206 registers on sm_90, one block per SM.
// Tiles [row][TC_LD] or, k-major (tile_is_k_major), [TC_BK][rows + 8]: 16-byte rows whose 8-row
// groups (one ldmatrix matrix) fall on distinct banks either way; two of each: 51-60 KB of dynamic
// shared memory.
template <typename T, class OpA, class OpB>
struct TcTile {
  static constexpr int BM = 256, BN = 128, threads = 256;
  static constexpr int warps_m = BM / 64, warps_n = threads / 32 / warps_m, NJ = BN / warps_n / 8;
  static constexpr bool a_km = tile_is_k_major<OpA>, b_km = tile_is_k_major<OpB>;
  static constexpr int lda = a_km ? BM + 8 : gemm::TC_LD, ldb = b_km ? BN + 8 : gemm::TC_LD;
  static constexpr int a_tile = a_km ? gemm::TC_BK * lda : BM * lda, b_tile = b_km ? gemm::TC_BK * ldb : BN * ldb;
  static constexpr int smem_bytes = 2 * (a_tile + b_tile) * static_cast<int>(sizeof(T));
};

// One block: the C tile at (blockIdx.x, blockIdx.y) over the K chunk blockIdx.z. Two tile buffers:
// the next K step is staged (its strided parts by cp.async) while the current one is multiplied.
template <typename T, class OpA, class OpB, class Epilogue>
__global__ void __launch_bounds__((TcTile<T, OpA, OpB>::threads))
    gemm_tc_kernel(int64_t M, int64_t N, int64_t K, int64_t k_per_split, const OpA a, const OpB b,
                   const Epilogue epilogue) {
  using namespace gemm;
  using S = TcTile<T, OpA, OpB>;
  constexpr int BM = S::BM, BN = S::BN, NJ = S::NJ, LDA = S::lda, LDB = S::ldb;
  constexpr bool A_KM = S::a_km, B_KM = S::b_km;
  XSEP_DYNAMIC_SMEM(smem);
  T* const As = reinterpret_cast<T*>(smem);  // [2][a_tile], then Bs: [2][b_tile]
  T* const Bs = As + 2 * S::a_tile;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * BM, n0 = static_cast<int64_t>(blockIdx.y) * BN;
  const int64_t k_begin = static_cast<int64_t>(blockIdx.z) * k_per_split;
  const int64_t k_end = k_begin + k_per_split < K ? k_begin + k_per_split : K;
  const int wm = (warp / S::warps_n) * 64, wn = (warp % S::warps_n) * (NJ * 8);  // this warp's sub-tile
  const auto stage = [&](int buf, int64_t k0) {
    a.template stage<A_KM>(As + buf * S::a_tile, LDA, BM, TC_BK, m0, k0, k_end);
    b.template stage<B_KM>(Bs + buf * S::b_tile, LDB, BN, TC_BK, n0, k0, k_end);
    cp_async_commit();
  };
  float acc[4][NJ][4] = {};
  if (k_begin < k_end) stage(0, k_begin);
  for (int64_t k0 = k_begin; k0 < k_end; k0 += TC_BK) {
    const int cur = static_cast<int>((k0 - k_begin) / TC_BK) % 2;
    if (k0 + TC_BK < k_end) {
      stage(cur ^ 1, k0 + TC_BK);  // the buffer the previous step read (released by its barrier)
      cp_async_wait<1>();          // this step's copies landed; the next step's may be in flight
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    // the warp's first row: a column of a k-major tile, a row of a row-major one
    warp_mma<T, 4, NJ, TC_BK, A_KM, B_KM>(acc, As + cur * S::a_tile + (A_KM ? wm : wm * LDA), LDA,
                                          Bs + cur * S::b_tile + (B_KM ? wn : wn * LDB), LDB, lane);
    __syncthreads();
  }
  store_fragments(acc, lane, m0 + wm, n0 + wn, M, N, epilogue);
}

// FMA units: k-major tiles (rows of F_BM + 1: never cp.async).
template <typename T, class OpA, class OpB, class Epilogue>
__global__ void __launch_bounds__(gemm::F_THREADS) gemm_fma_kernel(int64_t M, int64_t N, int64_t K, int64_t k_per_split,
                                                                   const OpA a, const OpB b, const Epilogue epilogue) {
  using namespace gemm;
  __shared__ T As[F_BK][F_BM + 1];
  __shared__ T Bs[F_BK][F_BN + 1];
  const int tm = (threadIdx.x / 16) * 4, tn = (threadIdx.x % 16) * 4;
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * F_BM, n0 = static_cast<int64_t>(blockIdx.y) * F_BN;
  const int64_t k_begin = static_cast<int64_t>(blockIdx.z) * k_per_split;
  const int64_t k_end = k_begin + k_per_split < K ? k_begin + k_per_split : K;
  T acc[4][4] = {};
  for (int64_t k0 = k_begin; k0 < k_end; k0 += F_BK) {
    a.template stage<true>(&As[0][0], F_BM + 1, F_BM, F_BK, m0, k0, k_end);
    b.template stage<true>(&Bs[0][0], F_BN + 1, F_BN, F_BK, n0, k0, k_end);
    __syncthreads();
    thread_fma<T, 4, 4>(acc, &As[0][tm], F_BM + 1, &Bs[0][tn], F_BN + 1, F_BK);
    __syncthreads();
  }
  store_outputs(acc, m0 + tm, n0 + tn, M, N, epilogue);
}

// out[i] = sum over s of partials[s, i], in order (deterministic).
template <typename A>
__global__ void ordered_sum_kernel(int64_t splits, int64_t width, const A* __restrict__ partials, A* __restrict__ out) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < width;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    A acc = A(0);
    for (int64_t s = 0; s < splits; ++s) acc += partials[s * width + i];
    out[i] = acc;
  }
}

// ---------------------------------------------------------------------------------------------
// Launchers (on `stream`, each followed by a launch check)

// C = A . B over K split in `splits` chunks (gridDim.z), each block's result to the epilogue.
template <typename T, class OpA, class OpB, class Epilogue>
void launch_gemm(int64_t M, int64_t N, int64_t K, int64_t splits, const OpA& a, const OpB& b, const Epilogue& epilogue,
                 cudaStream_t stream) {
  using namespace gemm;
  // whole K steps per split, so that every tile starts at a multiple of the step (16-byte loads)
  const int64_t step = uses_tensor_cores<T>() ? TC_BK : F_BK;
  const int64_t k_per_split = ((K + splits - 1) / splits + step - 1) / step * step;
  if constexpr (uses_tensor_cores<T>()) {
    using S = TcTile<T, OpA, OpB>;
    const dim3 grid = grid_of((M + S::BM - 1) / S::BM, (N + S::BN - 1) / S::BN, splits, "gemm_tc_kernel");
    const auto kernel = gemm_tc_kernel<T, OpA, OpB, Epilogue>;
    allow_dynamic_smem(kernel, S::smem_bytes);
    kernel<<<grid, S::threads, S::smem_bytes, stream>>>(M, N, K, k_per_split, a, b, epilogue);
  } else {
    const dim3 grid = grid_of((M + F_BM - 1) / F_BM, (N + F_BN - 1) / F_BN, splits, "gemm_fma_kernel");
    gemm_fma_kernel<T, OpA, OpB, Epilogue><<<grid, F_THREADS, 0, stream>>>(M, N, K, k_per_split, a, b, epilogue);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// out[width] = the in-order sum of partials[splits, width].
template <typename A>
void launch_ordered_sum(int64_t splits, int64_t width, const A* partials, A* out, cudaStream_t stream) {
  if (width == 0) return;
  const int64_t blocks = (width + 255) / 256;
  ordered_sum_kernel<A>
      <<<static_cast<unsigned>(blocks < 65535 ? blocks : 65535), 256, 0, stream>>>(splits, width, partials, out);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace xsep::cuda
