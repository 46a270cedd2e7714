// VEC consecutive elements moved as one aligned access (16 bytes for the kernels' vectors).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <cstring>

namespace xsep::cuda {

template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Vec {
  T v[VEC];
};

// The elements per 16-byte vector of T.
template <typename T>
constexpr int kVec16 = 16 / static_cast<int>(sizeof(T));

// Rows of W consecutive elements moved as vectors of at most 16 bytes: as W-wide vectors when VEC
// (then p must be aligned to them, W * sizeof(T) or 16 bytes, and the row whole: count == W), else
// element by element, p[0, count) (1 <= count <= W; a row cut by a matrix's edge, or not aligned).
template <typename T, int W>
constexpr int kRowVec = W * static_cast<int>(sizeof(T)) <= 16 ? W : kVec16<T>;

// The CUDA type of a BYTES-wide global access, which the compiler keeps one access (a struct of
// 16-bit elements may be stored an element at a time).
template <int BYTES>
struct Word;
template <>
struct Word<4> {
  using type = uint32_t;
};
template <>
struct Word<8> {
  using type = uint2;
};
template <>
struct Word<16> {
  using type = uint4;
};

// *p = bits in global memory (never shared: st.global), as one access. A 16-byte one goes through
// st.global.v4 (__stwb: the default write-back policy) because nvcc splits a plain uint4 store into
// four 32-bit ones when the four words come from unrelated registers (it did in
// forward_tiled_kernel's epilogue); the PTX vector store is one STG.128 by definition.
template <typename Bits>
__device__ __forceinline__ void store_global_word(void* p, Bits bits) {
#ifndef XSEP_CUDA_EMU
  if constexpr (sizeof(Bits) == 16) {
    __stwb(static_cast<uint4*>(p), bits);
    return;
  }
#endif
  *static_cast<Bits*>(p) = bits;
}

// v[0, W) = p[0, count), zero beyond.
template <bool VEC, typename T, int W>
__device__ __forceinline__ void load_row(const T* p, int count, T (&v)[W]) {
  constexpr int V = kRowVec<T, W>;
  if constexpr (VEC) {
#pragma unroll
    for (int c = 0; c < W; c += V) {
      using Bits = typename Word<sizeof(Vec<T, V>)>::type;
      const Bits bits = *reinterpret_cast<const Bits*>(p + c);
      Vec<T, V> x;
      memcpy(&x, &bits, sizeof(x));
#pragma unroll
      for (int e = 0; e < V; ++e) v[c + e] = x.v[e];
    }
  } else {
#pragma unroll
    for (int e = 0; e < W; ++e) v[e] = e < count ? p[e] : T(0.0f);
  }
}

// p[0, count) = v[0, count).
template <bool VEC, typename T, int W>
__device__ __forceinline__ void store_row(T* p, int count, const T (&v)[W]) {
  constexpr int V = kRowVec<T, W>;
  if constexpr (VEC) {
#pragma unroll
    for (int c = 0; c < W; c += V) {
      Vec<T, V> x;
#pragma unroll
      for (int e = 0; e < V; ++e) x.v[e] = v[c + e];
      using Bits = typename Word<sizeof(Vec<T, V>)>::type;
      Bits bits;
      memcpy(&bits, &x, sizeof(x));
      *reinterpret_cast<Bits*>(p + c) = bits;
    }
  } else {
#pragma unroll
    for (int e = 0; e < W; ++e)
      if (e < count) p[e] = v[e];
  }
}

// Whether every row of W elements of T that starts at a multiple of W in a matrix at p, rows ld
// elements apart, is aligned for store_row<true> / load_row<true>.
template <typename T, int W>
__device__ __forceinline__ bool rows_aligned(const T* p, int64_t ld) {
  constexpr int V = kRowVec<T, W>;
  return reinterpret_cast<uintptr_t>(p) % (sizeof(T) * V) == 0 && ld % V == 0;
}

}  // namespace xsep::cuda
