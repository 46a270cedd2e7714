// The depthwise convolution inner loops, written once with GCC vector extensions and compiled once
// per instruction set. isa_*.cpp include this file between `#pragma GCC push_options` + `target`
// and `pop_options`, after defining
//   XSEP_ISA_NS     the namespace everything goes in (one per instruction set), and
//   XSEP_VEC_BYTES  the vector width in bytes (64 for AVX-512, 32 for AVX2, 16 for the baseline).
// It includes no headers on purpose: an inline function first defined inside the target region
// would be compiled for that instruction set, and the linker could then pick that copy for every
// translation unit. Everything needed comes from cpu/depthwise_kernels.h, included before the region;
// c10::Half and c10::BFloat16 are only handled as raw 16-bit patterns, and the only calls are to
// compiler builtins and to the x86 intrinsics (<immintrin.h>, which the AVX2 and AVX-512 isa_*.cpp
// include before the region; their functions carry their own target attributes).
//
// Layout (see depthwise_kernels.h): NHWC activations, tap-major weights w[(i * kw + j) * OC + oc] in acc_t.
// The M == 1 kernels vectorise along channels: a tile of kP output pixels x kNV vectors of
// channels keeps its accumulators in registers over all taps, and a tile does all its channels
// before the next tile (reading NHWC memory in order). Every output element
// is summed in the same order (bias, then the taps in (i, j) order) whichever tile computes it, so
// results do not depend on how the host splits the work. M > 1 takes simpler, slower loops.

namespace XSEP_ISA_NS {

#define XSEP_INLINE inline __attribute__((always_inline))

using i64 = int64_t;
using ::xsep::Acc;
using ::xsep::Activation;
using ::xsep::DepthwiseGeometry;
using ::xsep::cpu::DepthwiseKernels;

// ---------------------------------------------------------------------------------------------
// Vectors and conversions

typedef float VF __attribute__((vector_size(XSEP_VEC_BYTES)));
typedef double VD __attribute__((vector_size(XSEP_VEC_BYTES)));
typedef unsigned int VU __attribute__((vector_size(XSEP_VEC_BYTES)));
// As many 16-bit lanes as VF has floats.
typedef unsigned short VH __attribute__((vector_size(XSEP_VEC_BYTES / 2)));

template <typename A> struct VecOf;
template <> struct VecOf<float> { using type = VF; };
template <> struct VecOf<double> { using type = VD; };
template <typename A> using Vec = typename VecOf<A>::type;
template <typename A> constexpr int kLanes = XSEP_VEC_BYTES / sizeof(A);

// Interior tiles: kP pixels x kNV vectors of channels; 2 x 4 accumulators fit the 16 AVX2
// registers with room for the weights and the loaded inputs.
constexpr int kNV = 2;
constexpr int kP = 4;
// Single pixels (image borders) take kNVWide vectors of channels at a time instead, so that
// enough independent accumulators hide the latency of the multiply-adds.
constexpr int kNVWide = 8;
// Local buffers of the general (M > 1) kernels, in elements.
constexpr i64 kChunk = 256;

template <bool B> struct BoolTag { static constexpr bool value = B; };

template <typename To, typename From>
XSEP_INLINE To bit_cast(const From& from) {
  static_assert(sizeof(To) == sizeof(From), "bit_cast between different sizes");
  To to;
  __builtin_memcpy(&to, &from, sizeof to);
  return to;
}

XSEP_INLINE i64 min_(i64 a, i64 b) { return a < b ? a : b; }
XSEP_INLINE i64 clamp_(i64 v, i64 lo, i64 hi) { return v < lo ? lo : v > hi ? hi : v; }
// Floor division for any sign of a, b > 0.
XSEP_INLINE i64 floor_div(i64 a, i64 b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
XSEP_INLINE i64 gcd_(i64 a, i64 b) {
  while (b != 0) {
    const i64 t = a % b;
    a = b;
    b = t;
  }
  return a;
}

// Unaligned loads and stores of one vector, converting the storage type to / from acc_t.
template <typename V, typename S>
XSEP_INLINE V load_raw(const S* p) {
  V v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}
XSEP_INLINE VF load(const float* p) { return load_raw<VF>(p); }
XSEP_INLINE VD load(const double* p) { return load_raw<VD>(p); }
XSEP_INLINE void store(float* p, VF v) { __builtin_memcpy(p, &v, sizeof v); }
XSEP_INLINE void store(double* p, VD v) { __builtin_memcpy(p, &v, sizeof v); }

XSEP_INLINE VU load_u16(const void* p) { return __builtin_convertvector(load_raw<VH>(p), VU); }
XSEP_INLINE void store_u16(void* p, VU bits) {
  const VH h = __builtin_convertvector(bits, VH);
  __builtin_memcpy(p, &h, sizeof h);
}

// bfloat16 is the top half of a float.
XSEP_INLINE VF load(const c10::BFloat16* p) { return bit_cast<VF>(load_u16(p) << 16); }
// Round to nearest even; NaN becomes the canonical 0x7FC0 (as c10::BFloat16 does).
XSEP_INLINE void store(c10::BFloat16* p, VF v) {
  const VU u = bit_cast<VU>(v);
  const VU rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  store_u16(p, v != v ? VU{} + 0x7FC0u : rounded);
}

// IEEE half -> float, exact. Normal numbers rebias the exponent (112 = 127 - 15); subnormals are
// m * 2^-24, computed exactly as (0.5 + m * 2^-24) - 0.5; infinities and NaNs get exponent 255.
XSEP_INLINE VF load(const c10::Half* p) {
  const VU h = load_u16(p);
  const VU exp = h & 0x7C00u, sign = (h & 0x8000u) << 16;
  VU normal = ((h & 0x7FFFu) << 13) + 0x38000000u;
  normal = exp == 0x7C00u ? normal + 0x38000000u : normal;
  const VU subnormal = bit_cast<VU>(bit_cast<VF>((h & 0x3FFu) | 0x3F000000u) - 0.5f);
  return bit_cast<VF>((exp == 0u ? subnormal : normal) | sign);
}
// float -> IEEE half, round to nearest even; overflow gives infinity, NaN gives 0x7E00 (as
// c10::Half does). Normal results round the rebiased bits; subnormal results are
// round(|v| * 2^24), obtained exactly from the float addition |v| + 0.5 (whose ulp is 2^-24).
XSEP_INLINE void store(c10::Half* p, VF v) {
  const VU u = bit_cast<VU>(v);
  const VU sign = (u >> 16) & 0x8000u, mag = u & 0x7FFFFFFFu;
  VU normal = ((mag - 0x38000000u) + 0xFFFu + ((mag >> 13) & 1u)) >> 13;
  normal = normal > 0x7C00u ? VU{} + 0x7C00u : normal;
  const VU subnormal = bit_cast<VU>(bit_cast<VF>(mag) + 0.5f) - 0x3F000000u;
  VU h = mag < 0x38800000u ? subnormal : normal;
  h = mag > 0x7F800000u ? VU{} + 0x7E00u : h;
  store_u16(p, h | sign);
}

// The first n < lanes elements of a vector (the rest zero), or store them: channel tails, plane
// ends, edge tiles. Masked loads and stores where the instruction set has them (AVX-512: every
// type; AVX2: 32- and 64-bit lanes), else lane by lane; never a variable-length memcpy, which
// compiles to a library call and a failed store-to-load forward per vector (12% of the NCHW
// forward's time at 10x10 planes, issue 14).
template <typename S>
inline constexpr bool kMaskedLanes = XSEP_VEC_BYTES == 64 || (XSEP_VEC_BYTES == 32 && sizeof(S) >= 4);

// The first n lanes of a vector of S, as the masked instructions take them: a bit per lane
// (AVX-512), or a lane whose sign bit is set (AVX2).
template <typename S>
XSEP_INLINE auto lane_mask(int n) {
#if XSEP_VEC_BYTES == 64
  return __mmask16((1u << n) - 1);
#elif XSEP_VEC_BYTES == 32
  if constexpr (sizeof(S) == 8) return _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3));
  else return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
#else
  return n;
#endif
}

// Lanes [a, b) of a vector read from p (0 <= a <= b <= lanes), the others zero; nothing outside
// p[a, b) is read (masked lanes do not fault), so p + a may be the start of an array.
template <typename S>
XSEP_INLINE Vec<Acc<S>> load_lanes(const S* p, int a, int b) {
  constexpr int L = kLanes<Acc<S>>;
  if constexpr (kMaskedLanes<S>) {
#if XSEP_VEC_BYTES == 64
    const auto m = __mmask16(lane_mask<S>(b) & ~lane_mask<S>(a));
    if constexpr (sizeof(S) == 4) return bit_cast<VF>(_mm512_maskz_loadu_ps(m, p));
    else if constexpr (sizeof(S) == 8) return bit_cast<VD>(_mm512_maskz_loadu_pd(__mmask8(m), p));
    else {
      S buf[L];
      const __m256i h = _mm256_maskz_loadu_epi16(m, p);
      __builtin_memcpy(buf, &h, sizeof h);
      return load(buf);
    }
#elif XSEP_VEC_BYTES == 32
    const auto m = _mm256_andnot_si256(lane_mask<S>(a), lane_mask<S>(b));
    if constexpr (sizeof(S) == 4) return bit_cast<VF>(_mm256_maskload_ps(reinterpret_cast<const float*>(p), m));
    else return bit_cast<VD>(_mm256_maskload_pd(reinterpret_cast<const double*>(p), m));
#endif
  } else {
    S buf[L];
#pragma GCC unroll 16
    for (int l = 0; l < L; ++l) {
      if (l >= a && l < b) __builtin_memcpy(buf + l, p + l, sizeof(S));
      else __builtin_memset(buf + l, 0, sizeof(S));
    }
    return load(buf);
  }
}
template <typename S>
XSEP_INLINE Vec<Acc<S>> load_n(const S* p, int n) {
  return load_lanes(p, 0, n);
}
// Lanes [a, b) of v stored to p[a, b) (0 <= a <= b <= lanes); nothing else is written.
template <typename S, typename V>
XSEP_INLINE void store_lanes(S* p, V v, int a, int b) {
  constexpr int L = kLanes<Acc<S>>;
  if constexpr (kMaskedLanes<S>) {
#if XSEP_VEC_BYTES == 64
    const auto m = __mmask16(lane_mask<S>(b) & ~lane_mask<S>(a));
    if constexpr (sizeof(S) == 4) _mm512_mask_storeu_ps(p, m, bit_cast<__m512>(v));
    else if constexpr (sizeof(S) == 8) _mm512_mask_storeu_pd(p, __mmask8(m), bit_cast<__m512d>(v));
    else {
      S buf[L];
      store(buf, v);
      _mm256_mask_storeu_epi16(p, m, load_raw<__m256i>(buf));
    }
#elif XSEP_VEC_BYTES == 32
    const auto m = _mm256_andnot_si256(lane_mask<S>(a), lane_mask<S>(b));
    if constexpr (sizeof(S) == 4) _mm256_maskstore_ps(reinterpret_cast<float*>(p), m, bit_cast<__m256>(v));
    else _mm256_maskstore_pd(reinterpret_cast<double*>(p), m, bit_cast<__m256d>(v));
#endif
  } else {
    S buf[L];
    store(buf, v);
#pragma GCC unroll 16
    for (int l = 0; l < L; ++l)
      if (l >= a && l < b) __builtin_memcpy(p + l, buf + l, sizeof(S));
  }
}
template <typename S, typename V>
XSEP_INLINE void store_n(S* p, V v, int n) {
  store_lanes(p, v, 0, n);
}

// A whole vector, or its first n lanes.
template <bool Partial, typename S>
XSEP_INLINE Vec<Acc<S>> ld(const S* p, int n) {
  if constexpr (Partial) return load_n(p, n);
  else return load(p);
}
template <bool Partial, typename S, typename V>
XSEP_INLINE void st(S* p, V v, int n) {
  if constexpr (Partial) store_n(p, v, n);
  else store(p, v);
}

// Non-temporal stores of whole float vectors to vector-aligned addresses, bypassing the caches (an
// output too large to stay there for its reader; no read for ownership), in the AVX2 and AVX-512
// builds. Weakly ordered: the writer ends with _mm_sfence().
#if XSEP_VEC_BYTES >= 32
XSEP_INLINE void store_stream(float* p, VF v) {
#if XSEP_VEC_BYTES == 64
  _mm512_stream_ps(p, bit_cast<__m512>(v));
#else
  _mm256_stream_ps(p, bit_cast<__m256>(v));
#endif
}
// Whether every pixel of an NHWC float array with C channels starts at a multiple of Granule bytes
// (the array does, and a pixel is a whole number of granules): whole vectors for store_stream
// (row_product), 32-byte halves of an AVX-512 vector for store_stream_pixel.
// The depthwise kernels' stores (store_streamable_tile) stream pixels of 32-byte halves (728
// channels: 45.5 vectors; every other pixel starts half a line in), a vector at a 32-byte boundary
// as its two halves. Zen 4 EPYC, fp32, batch 8, 2 threads, `retain`, 3x3 at 37x37x728, six rounds
// of alternate processes streamed / through the caches (what it ran before), median of 30, ratios
// to torch: the forward 0.84-1.32x (median 1.18x) against 0.88-0.98x (0.96x), one round slower,
// when torch and the rest ran slow too; the input gradient 2.2-2.4 against 3.3-3.5 ms in two of
// three rounds, 5.3 against 3.7 in the third.
template <int Granule = XSEP_VEC_BYTES>
XSEP_INLINE bool streamable(const float* p, i64 C) {
  return (C * sizeof(float)) % Granule == 0 && reinterpret_cast<unsigned long>(p) % Granule == 0;
}
inline constexpr int kPixelGranule = 32;
// store_stream to a 32-byte aligned address (see streamable<kPixelGranule>).
XSEP_INLINE void store_stream_pixel(float* p, VF v) {
#if XSEP_VEC_BYTES == 64
  if (reinterpret_cast<unsigned long>(p) % 64 != 0) {
    const __m512 x = bit_cast<__m512>(v);
    _mm256_stream_ps(p, _mm512_castps512_ps256(x));
    _mm256_stream_ps(p + 8, _mm512_extractf32x8_ps(x, 1));
    return;
  }
#endif
  store_stream(p, v);
}
#endif

// s in every lane, as one broadcast: s - 0 is s for every s, -0 and NaN included, so GCC drops
// the subtraction (V{} + s compiles to a scalar addition before the broadcast: -0 + 0 is +0).
template <typename V, typename A>
XSEP_INLINE V splat(A s) {
  return s - V{};
}

// max(v, 0), keeping NaN.
template <typename V>
XSEP_INLINE V relu(V v) {
  return v < V{} ? V{} : v;
}

XSEP_INLINE float expm1_(float v) { return __builtin_expm1f(v); }
XSEP_INLINE double expm1_(double v) { return __builtin_expm1(v); }
XSEP_INLINE float exp_(float v) { return __builtin_expf(v); }
XSEP_INLINE double exp_(double v) { return __builtin_exp(v); }

// Calls f(BoolTag<partial>{}, k, m) on [0, n) in whole vectors of L, then one partial vector.
template <int L, typename F>
XSEP_INLINE void for_vectors(i64 n, F&& f) {
  i64 k = 0;
  for (; k + L <= n; k += L) f(BoolTag<false>{}, k, L);
  if (k < n) f(BoolTag<true>{}, k, int(n - k));
}

// Channel blocks: calls f(Block<NV, partial>{}, c0, nc) on [0, C) in blocks of NVmax vectors,
// then of kNV vectors (if fewer), then single vectors, then one partial vector. With Overwrite
// (loops that only store their results, never add to them) a tail of fewer than L channels is
// instead the whole vector ending at C when C >= L: it overlaps the vector before, whose channels
// are computed again in the same order and stored with the same values, and it avoids a partial
// vector's buffer (a stalled store-to-load forward on every load; 728 = 45.5 x 16 channels).
template <int NV_, bool Partial_> struct Block {
  static constexpr int NV = NV_;
  static constexpr bool partial = Partial_;
};
template <typename A, int NVmax, bool Overwrite = false, typename F>
XSEP_INLINE void for_channel_blocks(i64 C, F&& f) {
  constexpr int L = kLanes<A>;
  i64 c = 0;
  for (; c + NVmax * L <= C; c += NVmax * L) f(Block<NVmax, false>{}, c, NVmax * L);
  if constexpr (NVmax > kNV)
    for (; c + kNV * L <= C; c += kNV * L) f(Block<kNV, false>{}, c, kNV * L);
  for (; c + L <= C; c += L) f(Block<1, false>{}, c, L);
  if (c < C) {
    if (Overwrite && C >= L) f(Block<1, false>{}, C - L, L);
    else f(Block<1, true>{}, c, int(C - c));
  }
}

template <int P> struct IntTag { static constexpr int value = P; };

// A row of npix pixels in tiles: calls f(IntTag<kP>{}, q) for q = 0, kP, ..., then
// f(IntTag<1>{}, q) for each of the pixels left.
template <typename F>
XSEP_INLINE void for_tiles(i64 npix, F&& f) {
  i64 q = 0;
  for (; q + kP <= npix; q += kP) f(IntTag<kP>{}, q);
  for (; q < npix; ++q) f(IntTag<1>{}, q);
}

// ---------------------------------------------------------------------------------------------
// Array loops

// dst[k] = src[k] for k < n, converting; with Mask, zero where mask[k] <= 0 (or NaN).
template <bool Mask, typename D, typename S, typename T>
XSEP_INLINE void convert_n(D* dst, const S* src, i64 n, const T* mask) {
  using A = Acc<S>;
  for_vectors<kLanes<A>>(n, [&](auto partial, i64 k, int m) {
    constexpr bool P = decltype(partial)::value;
    Vec<A> v = ld<P>(src + k, m);
    if constexpr (Mask) v = ld<P>(mask + k, m) > Vec<A>{} ? v : Vec<A>{};
    st<P>(dst + k, v, m);
  });
}

// acc[k] += act(a[k]) * b[k] for k < n.
template <bool Relu, typename Sa, typename Sb, typename A>
XSEP_INLINE void fma_n(A* acc, const Sa* a, const Sb* b, i64 n) {
  for_vectors<kLanes<A>>(n, [&](auto partial, i64 k, int m) {
    constexpr bool P = decltype(partial)::value;
    Vec<A> av = ld<P>(a + k, m);
    if constexpr (Relu) av = relu(av);
    st<P>(acc + k, ld<P>(acc + k, m) + av * ld<P>(b + k, m), m);
  });
}

// dst[k] = src[(o0 + k) / M] for k < n: input channels repeated for their M output channels.
template <typename T>
XSEP_INLINE void expand(T* dst, const T* src, i64 o0, i64 M, i64 n) {
  i64 c = o0 / M, m = o0 % M;
  for (i64 k = 0; k < n; ++k) {
    dst[k] = src[c];
    if (++m == M) {
      m = 0;
      ++c;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Tap geometry

// Taps first, first + step, ..., count of them.
struct Taps { i64 first, count, step; };

// Forward direction: the taps t < k whose input coordinate base + t * d lies in [0, n).
XSEP_INLINE Taps fwd_taps(i64 base, i64 k, i64 d, i64 n) {
  const i64 lo = base >= 0 ? 0 : (-base + d - 1) / d;
  const i64 hi = min_(k - 1, floor_div(n - 1 - base, d));
  return {lo, hi >= lo ? hi - lo + 1 : 0, 1};
}

// Backward direction: the taps t < k that reach an output, i.e. base - t * d = o * s with
// 0 <= o < n (base = input coordinate + padding). They form a progression of step s / gcd(s, d).
XSEP_INLINE Taps back_taps(i64 base, i64 k, i64 d, i64 s, i64 n) {
  const i64 top = base - (n - 1) * s;  // o <= n - 1  <=>  t * d >= top
  const i64 lo = top <= 0 ? 0 : (top + d - 1) / d;
  const i64 hi = min_(k - 1, floor_div(base, d));
  const i64 step = s / gcd_(s, d);
  for (i64 t = lo; t < lo + step && t <= hi; ++t)
    if ((base - t * d) % s == 0) return {t, (hi - t) / step + 1, step};
  return {0, 0, step};
}

// A grid of taps for the conv tiles: ni rows x nj columns, with the element offsets of the source
// and of the weights between consecutive tap rows / columns.
struct Walk {
  i64 ni, nj;
  i64 src_di, src_dj;
  i64 w_di, w_dj;
};

// acc[p][v] += act(src[p * src_ps + tap offset + v * L]) * w[tap offset + v * L] over the walk.
template <int P, int NV, bool Partial, bool Relu, typename S, typename A>
XSEP_INLINE void accumulate(Vec<A> (&acc)[P][NV], const S* src, i64 src_ps, const A* w, const Walk& k, int n) {
  constexpr int L = kLanes<A>;
  for (i64 a = 0; a < k.ni; ++a) {
    for (i64 b = 0; b < k.nj; ++b) {
      const S* s = src + a * k.src_di + b * k.src_dj;
      const A* wt = w + a * k.w_di + b * k.w_dj;
      Vec<A> wv[NV];
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) wv[v] = ld<Partial>(wt + v * L, n);
#pragma GCC unroll 8
      for (int p = 0; p < P; ++p) {
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) {
          Vec<A> xv = ld<Partial>(s + p * src_ps + v * L, n);
          if constexpr (Relu) xv = relu(xv);
          acc[p][v] += xv * wv[v];
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Forward

// A forward tile's accumulators start at the bias (or zero) ...
template <int P, int NV, bool Partial, typename A>
XSEP_INLINE void init_with_bias(Vec<A> (&acc)[P][NV], const A* bias, int n) {
  constexpr int L = kLanes<A>;
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) {
    const Vec<A> b = bias != nullptr ? ld<Partial>(bias + v * L, n) : Vec<A>{};
#pragma GCC unroll 8
    for (int p = 0; p < P; ++p) acc[p][v] = b;
  }
}
// ... and are stored pixel by pixel (out_ps apart), the first np of them.
template <int P, int NV, bool Partial, typename A, typename O>
XSEP_INLINE void store_tile(O* out, i64 out_ps, const Vec<A> (&acc)[P][NV], int n, int np = P) {
  constexpr int L = kLanes<A>;
#pragma GCC unroll 8
  for (int p = 0; p < P; ++p) {
    if (p >= np) break;
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) st<Partial>(out + p * out_ps + v * L, acc[p][v], n);
  }
}

// Stores a tile's P pixels (ps apart), with non-temporal stores when Stream (whole, aligned
// vectors only: see forward).
template <bool Stream, int P, int NV, bool Partial, typename A, typename O>
XSEP_INLINE void store_streamable_tile(O* out, i64 ps, const Vec<A> (&acc)[P][NV], int n) {
  if constexpr (Stream && !Partial) {
    constexpr int L = kLanes<A>;
#pragma GCC unroll 16
    for (int p = 0; p < P; ++p)
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) store_stream_pixel(out + p * ps + v * L, acc[p][v]);
  } else {
    store_tile<P, NV, Partial, A>(out, ps, acc, n);
  }
}

// P output pixels (out_ps apart) x NV vectors of channels: bias + sum over the walk.
template <int P, int NV, bool Partial, bool Relu, typename S, typename O, typename A>
inline void fwd_tile(const S* src, i64 src_ps, const A* w, const Walk& k, const A* bias, O* out, i64 out_ps, int n) {
  Vec<A> acc[P][NV];
  init_with_bias<P, NV, Partial>(acc, bias, n);
  accumulate<P, NV, Partial, Relu>(acc, src, src_ps, w, k, n);
  store_tile<P, NV, Partial, A>(out, out_ps, acc, n);
}

// Unit stride and dilation along W, KW tap columns known at compile time: a tile of P pixels loads
// each source vector of a tap row once (P + KW - 1 of them, against P * KW in accumulate) and holds
// the row's weights in registers. Loads, not multiply-adds, bound these loops (the AVX2 build ran
// as many elements per second as the AVX-512 one), so this roughly halves the loads per
// multiply-add: on the 2-core Xeon, one thread, data in cache, the forward ran 1.3-1.5x faster
// (AVX-512 and AVX2); in the 2-thread bench the layers moved within that machine's noise. Tile shapes: P x NV
// accumulators plus KW x NV weights within the register file (32 vector registers with AVX-512, 16 otherwise).
// 5x5 with two vectors (27 registers) ran EfficientNet's 5x5 layers' forward about 8% faster than with one.
#if XSEP_VEC_BYTES == 64
template <int KW> constexpr int kUnitNV = KW <= 5 ? 2 : 1;
template <int KW> constexpr int kUnitP = 8;
#else
template <int KW> constexpr int kUnitNV = 1;
template <int KW> constexpr int kUnitP = KW == 7 ? 4 : 6;
#endif

// GCC folds a vector loaded once and used KW times back into KW memory operands (loads again);
// an empty asm that may change the register keeps it loaded once.
template <typename V>
XSEP_INLINE void keep_in_register(V& v) {
#if defined(__x86_64__)
  __asm__("" : "+v"(v));
#else
  (void)v;
#endif
}

// Weights for run_accumulate: w's R tap rows (w_di apart) of KW taps, NV vectors of channels each.
template <int R, int NV, int KW, bool Partial, typename A>
XSEP_INLINE void load_run_weights(Vec<A> (&wv)[R][KW][NV], const A* w, i64 w_di, i64 C, int n) {
  constexpr int L = kLanes<A>;
#pragma GCC unroll 4
  for (int a = 0; a < R; ++a)
#pragma GCC unroll 8
    for (int j = 0; j < KW; ++j)
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) wv[a][j][v] = ld<Partial>(w + a * w_di + j * C + v * L, n);
}

// acc[p][v] += act(src column) * wv[tap row][j] over R tap rows (src_di apart), in accumulate's
// order (tap rows, then j ascending) for every pixel; each source vector of a tap row is loaded once
// (P + KW - 1 of them, against P * KW in accumulate). Forward (Flip false): pixel p, tap j reads
// source column p + j. Input gradient (Flip true, the flipped kernel): it reads column
// p - j + KW - 1, so the columns go in descending order for j to ascend.
// With Edge, only the source columns in [c_lo, c_hi) are read: the others lie in the padding
// (a tile at a row's edge), and their products, zero, are left out.
// With a column stride SW > 1 (forward only: the output pixels SW source columns apart), pixel p,
// tap j reads source column p * SW + j: (P - 1) * SW + KW columns, each loaded once.
template <int P, int NV, int KW, int R, bool Flip, bool Partial, bool Relu, bool Edge = false, int SW = 1, typename S,
          typename V>
XSEP_INLINE void run_accumulate(V (&acc)[P][NV], const S* src, i64 src_di, i64 C, const V (&wv)[R][KW][NV], int n,
                                int c_lo = 0, int c_hi = 0) {
  static_assert(SW == 1 || !Flip, "strided tiles: forward only");
  constexpr int L = kLanes<Acc<S>>;
  constexpr int N = (P - 1) * SW + KW;  // source columns
#pragma GCC unroll 4
  for (int a = 0; a < R; ++a) {
#pragma GCC unroll 32
    for (int i = 0; i < N; ++i) {
      const int c = Flip ? N - 1 - i : i;  // the source column
      if (Edge && (c < c_lo || c >= c_hi)) continue;
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) {
        V xv = ld<Partial>(src + a * src_di + c * C + v * L, n);
        if constexpr (Relu) xv = relu(xv);
        keep_in_register(xv);
#pragma GCC unroll 8
        for (int j = 0; j < KW; ++j) {
          if (!Flip && (c - j) % SW != 0) continue;
          const int p = Flip ? c + j - (KW - 1) : (c - j) / SW;
          if (p >= 0 && p < P) acc[p][v] += xv * wv[a][j][v];
        }
      }
    }
  }
}

// run_accumulate over `rows` tap rows (w_di apart in w), each row's weights loaded for this tile.
template <int P, int NV, int KW, bool Flip, bool Partial, bool Relu, bool Edge = false, int SW = 1, typename S,
          typename A>
XSEP_INLINE void accumulate_unit(Vec<A> (&acc)[P][NV], const S* src, const A* w, i64 rows, i64 src_di, i64 w_di, i64 C,
                                 int n, int c_lo = 0, int c_hi = 0) {
  for (i64 a = 0; a < rows; ++a) {  // one tap row at a time, its weights loaded for this tile only
    Vec<A> wv[1][KW][NV];
    load_run_weights<1, NV, KW, Partial>(wv, w + a * w_di, 0, C, n);
    run_accumulate<P, NV, KW, 1, Flip, Partial, Relu, Edge, SW>(acc, src + a * src_di, 0, C, wv, n, c_lo, c_hi);
  }
}

// Where a unit tile of P pixels and its (P - 1) * SW + KW source columns (first: the first one's
// index in a row of `cols`; SW: the column stride) meet the row: the source columns [c_lo, c_hi) inside it, the np
// pixels before the segment ends (pixels_left further), and whether that is all of them. A tile that is not interior is
// an edge tile: its other source columns lie in the padding and are skipped, and only its first np pixels are stored.
struct UnitTile {
  int c_lo, c_hi, np;
  bool interior;
};
template <int P, int KW, int SW = 1>
XSEP_INLINE UnitTile unit_tile(i64 first, i64 cols, i64 pixels_left) {
  constexpr int N = (P - 1) * SW + KW;
  const int c_lo = static_cast<int>(clamp_(-first, 0, N));
  const int c_hi = static_cast<int>(clamp_(cols - first, c_lo, N));
  const int np = static_cast<int>(min_(P, pixels_left));
  return {c_lo, c_hi, np, c_lo == 0 && c_hi == N && np == P};
}

// A forward unit tile; with Edge, an edge tile (see unit_tile): the same sums in the same order.
// Interior tiles store with non-temporal stores when Stream (see forward).
template <int P, int NV, int KW, bool Partial, bool Relu, bool Edge, bool Stream, int SW = 1, typename S, typename O,
          typename A>
inline void fwd_tile_unit(const S* src, const A* w, i64 rows, i64 src_di, i64 w_di, i64 C, const A* bias, O* out, int n,
                          const UnitTile& t) {
  Vec<A> acc[P][NV];
  init_with_bias<P, NV, Partial>(acc, bias, n);
  accumulate_unit<P, NV, KW, false, Partial, Relu, Edge, SW>(acc, src, w, rows, src_di, w_di, C, n, t.c_lo, t.c_hi);
  if constexpr (Edge) store_tile<P, NV, Partial, A>(out, C, acc, n, t.np);
  else store_streamable_tile<Stream, P, NV, Partial, A>(out, C, acc, n);
}

// Whether runs suit rows whose pixels are C values of S apart. A run reads one block of channels
// from every pixel of its rows; when the pixels are a multiple of 4 KiB apart (1024 float channels,
// 2048, ...) those reads all fall in the same few L1 cache sets (the address bits below 4 KiB pick
// the set), and unit tiles, which read all of a pixel's channels in turn, ran faster. Zen 4 EPYC,
// fp32, batch 8, 2 threads, 3x3, 2026-12-04, separate processes alternating (min of two), runs ->
// unit tiles, forward / input gradient in us: AVX-512 7x7x1024 121 -> 98 / 130 -> 91, 10x10x1024
// 214 -> 197 / 233 -> 207, 10x10x2048 419 -> 389 / 441 -> 341, 19x19x1024 1017 -> 775 / 1049 -> 737,
// 37x37x1024 4401 -> 4361 / 4612 -> 4432; the AVX2 build (XSEP_CPU_ISA=avx2) 1.3-1.9x: 10x10x1024
// 479 -> 263 / 504 -> 273, 19x19x1024 2039 -> 1194 / 2167 -> 1165, 37x37x1024 9075 -> 5212 / 9644
// -> 4968. Other channel counts stay in runs: within 10% of unit tiles on short rows (AVX-512
// forward, 19x19x728 310 against 284 us, 10x10x1536 193 against 182) and 1.8x faster on long ones
// (74x74x256 2780 against 5096). Even in unit tiles, 1024 channels cost about twice as much per
// channel as 1008 or 1040 (10x10: 197 us against 105-107).
template <typename S>
XSEP_INLINE bool runs_suit_pixel_stride(i64 C) {
  return (C * i64(sizeof(S))) % 4096 != 0;
}

// The tap-column counts that have unit tiles.
XSEP_INLINE bool has_unit_tiles(i64 kw) { return kw == 3 || kw == 5 || kw == 7; }

// f(IntTag<kw>{}) for a tap-column count that has unit tiles (3, 5, 7; see has_unit_tiles).
template <typename F>
XSEP_INLINE void with_unit_kw(i64 kw, F&& f) {
  switch (kw) {
    case 3: return f(IntTag<3>{});
    case 5: return f(IntTag<5>{});
    case 7: return f(IntTag<7>{});
    default: break;
  }
}

// Runs: a row segment with R = 2 or 3 tap rows (a plane's first and last rows have 2 at 3x3), for
// one block of channels at a time, keeping the block's R x KW weights and its bias in registers:
// the pixels whose taps all lie inside the row in tiles of P pixels (then 4, 2, 1 for the rest),
// those at the row's edges one by one, skipping their taps in the padding. A unit tile reloads the
// weights and takes a call each, with its accumulators set up again: at 147x147x64, one thread,
// data in cache, that overhead was as large as the multiply-adds. The same sums in the same order
// as fwd_tile_unit and gi_tile_unit.
#if XSEP_VEC_BYTES == 64
constexpr int kRunP = 8;
#else
constexpr int kRunP = 4;
#endif
// Tap-column counts with runs: 3 x KW weights, P accumulators, the bias and an input vector
// within the register file.
template <int KW> constexpr bool kHasRuns = KW == 3;

// f(IntTag<rows>{}) for the tap-row counts runs take (2, 3); false for the others.
template <typename F>
XSEP_INLINE bool with_run_rows(i64 rows, F&& f) {
  switch (rows) {
    case 2: f(IntTag<2>{}); return true;
    case 3: f(IntTag<3>{}); return true;
    default: return false;
  }
}

// Runs take one vector of channels at a time, or two in the AVX-512 build on rows with fewer than
// 2 * kRunP pixels in the run (Xception's 10x10 planes), or on every row where two_vector_runs()
// (depthwise_kernels.h: all but AMD Zen 4): the pixels at the row's edges then have two independent chains
// of multiply-adds, and a run's setup serves twice the channels. On the AMD EPYC Zen 4, forward,
// interleaved against one vector: 1.1-1.35x at 10x10x1024 and 10x10x1536 (input gradient
// 1.15-1.4x); at 37x37x728 two vectors ran 5-9% slower, at 19x19x728 within noise. Calls
// f(Block, c0, nc) as for_channel_blocks.
template <typename A, typename F>
XSEP_INLINE void for_run_blocks(i64 C, i64 run_pixels, F&& f) {
#if XSEP_VEC_BYTES == 64
  if (run_pixels < 2 * kRunP || two_vector_runs()) return for_channel_blocks<A, 2, true>(C, f);
#endif
  for_channel_blocks<A, 1, true>(C, f);
}

// Whether this build takes rows in runs (see depthwise_runs): plain_forward for the depthwise op's
// own forward writing its output through the caches (not streamed, not a fused op's band), whose
// rows are row_pixels output pixels long.
XSEP_INLINE bool runs_chosen(bool plain_forward, i64 row_pixels = 0) {
  switch (depthwise_runs()) {
    case DepthwiseRuns::kEverywhere: return true;
    case DepthwiseRuns::kNowhere: return false;
    case DepthwiseRuns::kLongRows: return !plain_forward || row_pixels >= kMinForwardRunPixels;
    case DepthwiseRuns::kAvx512Rule: break;
  }
  return XSEP_VEC_BYTES == 64 && !plain_forward;
}

// A row segment's runs: f(IntTag<R>{}, Block, c0, nc) for each block of channels (for_run_blocks),
// R = rows, the tap-row count; false, calling nothing, for a count runs do not take (with_run_rows)
// or rows of S whose pixels runs do not suit (runs_suit_pixel_stride).
template <typename A, typename S, typename F>
XSEP_INLINE bool for_runs(i64 rows, i64 C, i64 run_pixels, F&& f) {
  if (!runs_suit_pixel_stride<S>(C)) return false;
  return with_run_rows(
      rows, [&](auto r) { for_run_blocks<A>(C, run_pixels, [&](auto blk, i64 c0, int nc) { f(r, blk, c0, nc); }); });
}

// A run stores one vector of channels of each pixel along the row, the row's next vector a sweep
// later. Where that vector is narrower than a cache line (AVX2: 32 bytes) and the stores are
// non-temporal, each line is written in halves a whole row apart, and the write-combining buffers
// send the halves to memory apart. There runs take the row in segments of kStreamRunSegment pixels,
// every block of channels of a segment before the next: a line's halves then follow within 8
// pixels. Zen 4 EPYC, AVX2 build (XSEP_CPU_ISA=avx2), fp32, batch 8, 2 threads, `retain`, alternate
// processes: the forward 147x147x64 8.3-8.5 -> 4.5-4.7 ms, 147x147x128 16.2-16.4 -> 8.1-8.9,
// 74x74x256 7.8-8.1 -> 4.3-4.4, 37x37x728 5.7-5.8 -> 2.4-2.6 (through the caches, not streamed:
// 4.9-5.4, 9.5-10.4, 4.8-4.9, 2.7-3.3); in one process, segments of 12 or 16 pixels ran as slowly as
// whole rows, those of 4 faster than whole rows but 1.1-1.3x slower than 8.
// The AVX-512 build's runs over pixels of 32-byte halves (streamable<kPixelGranule>), whose
// vectors at odd pixels are two such halves, take segments the same way.
constexpr i64 kStreamRunSegment = 8;
template <bool Stream>
XSEP_INLINE bool stream_run_segments(i64 C) {
  return Stream && (XSEP_VEC_BYTES < 64 || (C * 4) % XSEP_VEC_BYTES != 0);
}

// The pixels [p0, p1) of a row of C channels, those in [a, b) a run's interior, segment by segment
// where stream_run_segments (else the whole range at once): f(s0, s1, sa, sb) for each, [sa, sb)
// the part of [a, b) in [s0, s1), while it returns true; whether they all did.
template <bool Stream, typename F>
XSEP_INLINE bool for_run_segments(i64 p0, i64 p1, i64 a, i64 b, i64 C, F&& f) {
  auto segment = [&](i64 s0, i64 s1) {
    const i64 sa = clamp_(a, s0, s1);
    return f(s0, s1, sa, clamp_(b, sa, s1));
  };
  if (!stream_run_segments<Stream>(C)) return segment(p0, p1);
  for (i64 s0 = p0; s0 < p1; s0 += kStreamRunSegment)
    if (!segment(s0, min_(p1, s0 + kStreamRunSegment))) return false;
  return true;
}

// A run of npix pixels in tiles: f(IntTag<Pmax>{}, q) for q = 0, Pmax, ..., then tiles of 4, 2
// and 1 pixel for the rest. Pmax: kRunP / NV (the accumulators of NV vectors of channels).
template <int Pmax = kRunP, typename F>
XSEP_INLINE void for_run_tiles(i64 npix, F&& f) {
  i64 q = 0;
  for (; q + Pmax <= npix; q += Pmax) f(IntTag<Pmax>{}, q);
  if constexpr (Pmax > 4)
    if (q + 4 <= npix) {
      f(IntTag<4>{}, q);
      q += 4;
    }
  if (q + 2 <= npix) {
    f(IntTag<2>{}, q);
    q += 2;
  }
  if (q < npix) f(IntTag<1>{}, q);
}

// Bytes a kernel reads next, brought into L2 a cache line at a time while it computes on what it
// has: the memory reads overlap the arithmetic instead of following it.
struct NextPlane {
  const char* p = nullptr;
  i64 bytes = 0;
  XSEP_INLINE void prefetch_line() {
    if (bytes <= 0) return;
    __builtin_prefetch(p, 0, 2);
    p += 64, bytes -= 64;
  }
  // Values [from, from + count) of type S.
  template <typename S>
  static NextPlane of(const S* from, i64 count) {
    return {reinterpret_cast<const char*>(from), count * i64(sizeof(S))};
  }
};

// Two such ranges in even shares: per[k] lines of plane[k] a step.
struct NextRanges {
  NextPlane plane[2];
  i64 per[2] = {0, 0};
  // Shares such that `steps` steps bring in every line of both planes.
  void spread_over(i64 steps) {
    for (int k = 0; k < 2; ++k) per[k] = ((plane[k].bytes + 63) / 64 + steps - 1) / steps;
  }
  XSEP_INLINE void step() {
    for (int k = 0; k < 2; ++k)
      for (i64 l = 0; l < per[k]; ++l) plane[k].prefetch_line();
  }
};

// A run reads one vector of channels of every pixel of its rows, C apart: with a few hundred
// channels or more, no two in the same page, where the hardware prefetchers do not follow
// (AMD EPYC, Zen 4). So a run prefetches, into L2, the pixels of its tap row that is new to the
// caches (the others were read by the row before), kPrefetchAhead values further on in memory: the
// vectors a later run reads. Measured at 2 threads, batch 8, interleaved against no prefetch: the
// forward 1.05-1.5x faster on Xception's 3x3 layers (64x147x147 to 1536x10x10); 8 vectors ahead
// ran faster than 1, 2 or 4, and the L2 hints faster than into L1.
template <typename S>
constexpr i64 kPrefetchAhead = 8 * kLanes<Acc<S>>;
// Pixels [c0, c1) of a row (C apart), kPrefetchAhead values on.
template <int NV = 1, typename S>
XSEP_INLINE void prefetch_ahead(const S* row, i64 c0, i64 c1, i64 C) {
  for (i64 c = c0; c < c1; ++c)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) __builtin_prefetch(row + c * C + kPrefetchAhead<S> + v * kLanes<Acc<S>>, 0, 1);
}

// The forward's run: output columns [wo0, wo1) of a row (xr: the input row of the first tap row;
// out: output pixel wo0), those in [a, b) with all their taps inside the row.
template <int R, int NV, int KW, bool Partial, bool Relu, bool Stream, typename S, typename O, typename A>
inline void fwd_run(const S* xr, const A* w, i64 src_di, i64 w_di, i64 C, const A* bias, O* out, int n, i64 wo0,
                    i64 wo1, i64 a, i64 b, i64 pad_left, i64 W, NextRanges* next) {
  constexpr int L = kLanes<A>;
  Vec<A> wv[R][KW][NV], bv[NV];
  load_run_weights<R, NV, KW, Partial>(wv, w, w_di, C, n);
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) bv[v] = bias != nullptr ? ld<Partial>(bias + v * L, n) : Vec<A>{};
  auto edge = [&](i64 q) {  // one pixel with taps in the padding
    const i64 sc0 = q - pad_left;
    const UnitTile t = unit_tile<1, KW>(sc0, W, 1);
    Vec<A> acc[1][NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[0][v] = bv[v];
    run_accumulate<1, NV, KW, R, false, Partial, Relu, true>(acc, xr + sc0 * C, src_di, C, wv, n, t.c_lo, t.c_hi);
    store_tile<1, NV, Partial, A>(out + (q - wo0) * C, C, acc, n);
  };
  // The last tap row is the one the rows above did not read.
  prefetch_ahead<NV>(xr + (R - 1) * src_di, clamp_(wo0 - pad_left, 0, W), clamp_(wo1 - pad_left + KW - 1, 0, W), C);
  for (i64 q = wo0; q < a; ++q) edge(q);
  const S* src = xr + (a - pad_left) * C;
  O* o = out + (a - wo0) * C;
  for_run_tiles<kRunP / NV>(b - a, [&](auto tile, i64 q) __attribute__((always_inline)) {
    constexpr int P = decltype(tile)::value;
    Vec<A> acc[P][NV];
#pragma GCC unroll 16
    for (int p = 0; p < P; ++p)
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[p][v] = bv[v];
    if (next != nullptr) next->step();
    run_accumulate<P, NV, KW, R, false, Partial, Relu>(acc, src + q * C, src_di, C, wv, n);
    store_streamable_tile<Stream, P, NV, Partial, A>(o + q * C, C, acc, n);
  });
  for (i64 q = b; q < wo1; ++q) edge(q);
}

// Output columns [q0, q1) of a row at stride SW (1 or 2) and unit dilation along W (xr: the input
// row of the first tap row; out: output pixel q0), all in unit tiles of P pixels: those with a tap
// column in the padding, or fewer than P pixels left, as edge tiles. Tiles start at q0, so a row's
// first tile covers its left border, and a plane narrower than a tile is one edge tile.
template <int KW, bool Relu, bool Stream, int SW = 1, typename T, typename O, typename A>
void fwd_unit_tiles(const T* xr, const A* w, i64 rows, i64 src_di, i64 w_di, i64 C, const A* bias, O* out, i64 q0,
                    i64 q1, i64 pad_left, i64 W) {
  constexpr int P = kUnitP<KW>, NVmax = kUnitNV<KW>;
  for (i64 q = q0; q < q1; q += P) {
    const i64 sc0 = q * SW - pad_left;  // the input column of the tile's first pixel's first tap
    const UnitTile t = unit_tile<P, KW, SW>(sc0, W, q1 - q);
    const T* src = xr + sc0 * C;
    O* o = out + (q - q0) * C;
    for_channel_blocks<A, NVmax, true>(C, [&](auto blk, i64 c0, int nc) {
      constexpr int NV = decltype(blk)::NV;
      constexpr bool Pa = decltype(blk)::partial;
      const A* b = bias ? bias + c0 : nullptr;
      if (t.interior)
        fwd_tile_unit<P, NV, KW, Pa, Relu, false, Stream, SW>(src + c0, w + c0, rows, src_di, w_di, C, b, o + c0, nc,
                                                              t);
      else
        fwd_tile_unit<P, NV, KW, Pa, Relu, true, false, SW>(src + c0, w + c0, rows, src_di, w_di, C, b, o + c0, nc, t);
    });
  }
}

// Output columns [wo0, wo1) of a row at unit stride and dilation along W (xr, out as in
// fwd_unit_tiles): in a run (fwd_run; streamed from an AVX2 build in segments, for_run_segments)
// where runs (runs_chosen), with 2 or 3 tap rows, a tap-column count that has runs and some pixels
// with all their taps inside the row; otherwise in unit tiles.
// Runs prefetch (see prefetch_ahead); unit tiles do not: they read the rows in order, which the
// hardware prefetchers follow (on the AMD EPYC, Zen 4, prefetching the next tile's columns made the
// 147x147x64 forward 15-20% slower).
template <int KW, bool Relu, bool Stream, typename T, typename O, typename A>
void fwd_row_unit(const T* xr, const A* w, i64 rows, i64 src_di, i64 w_di, i64 C, const A* bias, O* out, i64 wo0,
                  i64 wo1, i64 pad_left, i64 W, bool runs, NextRanges* next = nullptr) {
  // The pixels with all their taps inside the row: from the first with none in the left padding
  // to the last with none in the right.
  const i64 a = clamp_(pad_left, wo0, wo1), b = clamp_(W + pad_left - (KW - 1), a, wo1);
  if constexpr (kHasRuns<KW>) {
    if (a < b && runs &&
        for_run_segments<Stream>(
            wo0, wo1, a, b, C,
            [&](i64 s0, i64 s1, i64 sa, i64 sb) {
              return for_runs<A, T>(rows, C, b - a, [&](auto r, auto blk, i64 c0, int nc) {
                fwd_run<decltype(r)::value, decltype(blk)::NV, KW, decltype(blk)::partial, Relu, Stream>(
                    xr + c0, w + c0, src_di, w_di, C, bias ? bias + c0 : nullptr, out + (s0 - wo0) * C + c0, nc, s0, s1,
                    sa, sb, pad_left, W, next);
              });
            }))
      return;
  }
  fwd_unit_tiles<KW, Relu, Stream>(xr, w, rows, src_di, w_di, C, bias, out, wo0, wo1, pad_left, W);
}

// The widest pixel (C values) for which the forward's runs bring the next output row's newest input
// row into L2 while a row computes (where the host asks: prefetch_rows, host.h). Zen 4 EPYC, fp32,
// batch 8, 2 threads, `retain`, 3x3, one process switching it call by call (median of 20, two
// runs): 147x147x64 1.19-1.22x, 147x147x128 1.25-1.30x, 74x74x256 1.19-1.34x, 74x74x128 1.04-1.08x,
// but 37x37x728 0.90x (rows of many channels, where prefetch_ahead, the same pixel's lines 8
// vectors on, already brings the new row in time; the next row's lines with it or instead of it
// cost). The AVX2 build on that machine: within 2% either way (its forward there is arithmetic-bound).
constexpr i64 kNextRowPixelBytes = 1024;

// M == 1: output pixels [p0, p1), one output row segment at a time. At unit dilation along W with 3,
// 5 or 7 tap columns: at unit stride in unit tiles and runs of tiles (fwd_row_unit), at stride 2 in
// strided unit tiles (fwd_unit_tiles: a tile's (P - 1) * 2 + KW source columns of a tap row each
// loaded once, against P * KW loads in fwd_tile, and its weights in registers; AMD Zen 4, fp32,
// one image in cache, one thread, alternate processes, ratio to torch's before -> after, medians of
// three: MobileNet's and EfficientNet's stride-2 layers 3x3 112x112x96 1.08 -> 1.14x, 56x56x144
// 1.21 -> 1.25x, 28x28x192 1.60 -> 1.73x, 14x14x576 1.60 -> 1.86x, 28x28x240 1.45 -> 1.63x, 5x5
// 56x56x144 0.99 -> 1.35x, 56x56x72 1.21 -> 1.44x, 14x14x672 1.12 -> 1.50x; planes of 14x14 and
// less even); otherwise border pixels (some tap columns in the padding) go one by one, the interior
// in tiles of kP pixels.
// Either way all the channels of a pixel (or tile) are done before the next: that reads NHWC
// memory in order.
template <bool Relu, bool Stream, typename T, typename O, typename A>
void forward_m1(const DepthwiseGeometry& s, const T* x, const A* w, const A* bias, O* out, i64 p0, i64 p1, bool runs,
                bool prefetch) {
  const i64 C = s.C;
  // Output columns whose taps all lie inside the input.
  const i64 in_lo = clamp_((s.pad_left + s.sw - 1) / s.sw, 0, s.Wo);
  const i64 in_hi = clamp_(floor_div(s.W - 1 + s.pad_left - (s.kw - 1) * s.dil_w, s.sw) + 1, in_lo, s.Wo);
  for (i64 p = p0; p < p1;) {
    const i64 r = p / s.Wo, wo0 = p % s.Wo, wo1 = min_(s.Wo, wo0 + (p1 - p));
    const i64 n = r / s.Ho, ho = r % s.Ho;
    const Taps ti = fwd_taps(ho * s.sh - s.pad_top, s.kh, s.dil_h, s.H);
    // Runs bring the next output row's newest input row into L2, a share at each tile (NextPlane),
    // where its pixels are at most kNextRowPixelBytes.
    NextRanges next;
    if (prefetch && s.sw == 1 && C * i64(sizeof(T)) <= kNextRowPixelBytes && r + 1 < s.N * s.Ho) {
      const i64 n1 = (r + 1) / s.Ho, h1 = (r + 1) % s.Ho * s.sh - s.pad_top + (s.kh - 1) * s.dil_h;
      const i64 steps = (C + kLanes<A> - 1) / kLanes<A> * ((wo1 - wo0 + kRunP - 1) / kRunP);
      if (h1 >= 0 && h1 < s.H) next.plane[0] = NextPlane::of(x + (n1 * s.H + h1) * s.W * C, s.W * C);
      next.spread_over(steps);
    }
    // The input row of the first valid tap row.
    const T* xr = x + (n * s.H + (ti.count ? ho * s.sh - s.pad_top + ti.first * s.dil_h : 0)) * s.W * C;
    O* o = out + (p - p0) * C;  // output pixel wo0
    auto border = [&](i64 wo) {
      const Taps tj = fwd_taps(wo * s.sw - s.pad_left, s.kw, s.dil_w, s.W);
      const Walk k{ti.count, tj.count, s.dil_h * s.W * C, s.dil_w * C, s.kw * C, C};
      const T* src = xr + (tj.count ? wo * s.sw - s.pad_left + tj.first * s.dil_w : 0) * C;
      const A* wt = w + (ti.first * s.kw + tj.first) * C;
      for_channel_blocks<A, kNVWide, true>(C, [&](auto blk, i64 c0, int nc) {
        constexpr int NV = decltype(blk)::NV;
        constexpr bool Pa = decltype(blk)::partial;
        fwd_tile<1, NV, Pa, Relu>(src + c0, 0, wt + c0, k, bias ? bias + c0 : nullptr, o + (wo - wo0) * C + c0, 0, nc);
      });
    };
    p += wo1 - wo0;
    if (s.sw <= 2 && s.dil_w == 1 && has_unit_tiles(s.kw)) {  // the whole segment in unit tiles
      const A* wt = w + ti.first * s.kw * C;
      const i64 rows = ti.count, src_di = s.dil_h * s.W * C, w_di = s.kw * C;
      with_unit_kw(s.kw, [&](auto kw) {
        constexpr int KW = decltype(kw)::value;
        if (s.sw == 1)
          fwd_row_unit<KW, Relu, Stream>(xr, wt, rows, src_di, w_di, C, bias, o, wo0, wo1, s.pad_left, s.W, runs,
                                         &next);
        else fwd_unit_tiles<KW, Relu, Stream, 2>(xr, wt, rows, src_di, w_di, C, bias, o, wo0, wo1, s.pad_left, s.W);
      });
      continue;
    }
    const i64 lo = clamp_(in_lo, wo0, wo1), hi = clamp_(in_hi, lo, wo1);
    for (i64 wo = wo0; wo < lo; ++wo) border(wo);
    if (lo < hi) {
      const T* src = xr + (lo * s.sw - s.pad_left) * C;
      const Walk k{ti.count, s.kw, s.dil_h * s.W * C, s.dil_w * C, s.kw * C, C};
      const A* wt = w + ti.first * s.kw * C;
      for_tiles(hi - lo, [&](auto tile, i64 q) {
        constexpr int P = decltype(tile)::value;
        for_channel_blocks<A, kNV, true>(C, [&](auto blk, i64 c0, int nc) {
          constexpr int NV = decltype(blk)::NV;
          constexpr bool Pa = decltype(blk)::partial;
          if constexpr (P == kP) {
            // This block of the next tile's new input columns and of its outputs (a pixel is a
            // separate stream for the hardware prefetchers; prefetching past the end is harmless).
            const T* nx = src + ((q + kP) * s.sw + (s.kw - 1) * s.dil_w) * C + c0;
            for (i64 a = 0; a < ti.count; ++a)
              for (i64 pp = 0; pp < kP * s.sw; ++pp) __builtin_prefetch(nx + a * k.src_di + pp * C);
            for (int pp = 0; pp < kP; ++pp) __builtin_prefetch(o + (lo - wo0 + q + kP + pp) * C + c0, 1);
          }
          fwd_tile<P, NV, Pa, Relu>(src + q * s.sw * C + c0, s.sw * C, wt + c0, k, bias ? bias + c0 : nullptr,
                                    o + (lo - wo0 + q) * C + c0, C, nc);
        });
      });
    }
    for (i64 wo = hi; wo < wo1; ++wo) border(wo);
  }
}

// M > 1: one output pixel at a time, output channels in chunks; the input channels are first
// repeated M times so that the multiply-adds run on contiguous vectors.
template <bool Relu, typename T, typename O, typename A>
void forward_general(const DepthwiseGeometry& s, const T* x, const A* w, const A* bias, O* out, i64 p0, i64 p1) {
  const i64 OC = s.OC;
  A acc[kChunk];
  T xe[kChunk];
  for (i64 p = p0; p < p1; ++p) {
    const i64 wo = p % s.Wo, r = p / s.Wo, ho = r % s.Ho, n = r / s.Ho;
    const Taps ti = fwd_taps(ho * s.sh - s.pad_top, s.kh, s.dil_h, s.H);
    const Taps tj = fwd_taps(wo * s.sw - s.pad_left, s.kw, s.dil_w, s.W);
    for (i64 o0 = 0; o0 < OC; o0 += kChunk) {
      const i64 nb = min_(kChunk, OC - o0);
      for (i64 k = 0; k < nb; ++k) acc[k] = bias ? bias[o0 + k] : A(0);
      for (i64 i = ti.first; i < ti.first + ti.count; ++i) {
        const i64 h = ho * s.sh - s.pad_top + i * s.dil_h;
        for (i64 j = tj.first; j < tj.first + tj.count; ++j) {
          const i64 col = wo * s.sw - s.pad_left + j * s.dil_w;
          expand(xe, x + ((n * s.H + h) * s.W + col) * s.C, o0, s.M, nb);
          fma_n<Relu>(acc, xe, w + (i * s.kw + j) * OC + o0, nb);
        }
      }
      convert_n<false>(out + (p - p0) * OC + o0, acc, nb, static_cast<const T*>(nullptr));
    }
  }
}

// runs: whether rows take runs where they can (runs_chosen).
template <bool Stream = false, typename T, typename O, typename A>
void forward_any(const DepthwiseGeometry& s, const T* x, const A* w, const A* bias, O* out, i64 p0, i64 p1, bool runs,
                 bool prefetch = false) {
  if (s.M == 1) {
    if (s.relu_input) forward_m1<true, Stream>(s, x, w, bias, out, p0, p1, runs, prefetch);
    else forward_m1<false, Stream>(s, x, w, bias, out, p0, p1, runs, prefetch);
  } else {
    if (s.relu_input) forward_general<true>(s, x, w, bias, out, p0, p1);
    else forward_general<false>(s, x, w, bias, out, p0, p1);
  }
}

template <typename T>
void forward(const DepthwiseGeometry& s, const T* x, const Acc<T>* w, const Acc<T>* bias, T* out, i64 p0, i64 p1,
             bool stream_out, bool prefetch) {
#if XSEP_VEC_BYTES >= 32
  if constexpr (std::is_same_v<T, float>) {
    if (stream_out && streamable<kPixelGranule>(out, s.OC)) {
      forward_any<true>(s, x, w, bias, out, p0, p1, runs_chosen(false), prefetch);
      _mm_sfence();  // the streamed stores are weakly ordered: complete them before the output is read
      return;
    }
  }
#else
  (void)stream_out;
#endif
  forward_any(s, x, w, bias, out, p0, p1, runs_chosen(true, s.Wo), prefetch);
}

template <typename T>
void forward_acc(const DepthwiseGeometry& s, const T* x, const Acc<T>* w, const Acc<T>* bias, Acc<T>* out, i64 p0,
                 i64 p1, bool prefetch) {
  forward_any(s, x, w, bias, out, p0, p1, runs_chosen(false), prefetch);
}

// ---------------------------------------------------------------------------------------------
// Gradient of the input

// Stores the first np pixels of an input-gradient tile pixel by pixel (gi_ps apart, x laid out
// alike), zeroed where x <= 0 unless x is null (the gradient of an input relu).
template <int P, int NV, bool Partial, typename A, typename T>
XSEP_INLINE void store_masked_tile(T* gi, i64 gi_ps, const T* x, const Vec<A> (&acc)[P][NV], int n, int np = P) {
  constexpr int L = kLanes<A>;
#pragma GCC unroll 8
  for (int p = 0; p < P; ++p) {
    if (p >= np) break;
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      Vec<A> g = acc[p][v];
      if (x != nullptr) g = ld<Partial>(x + p * gi_ps + v * L, n) > Vec<A>{} ? g : Vec<A>{};
      st<Partial>(gi + p * gi_ps + v * L, g, n);
    }
  }
}

// Zeroes a tile's gradients (pixels ps apart) where x <= 0, unless x is null (an input relu's).
template <int P, int NV, bool Partial, typename A, typename T>
XSEP_INLINE void mask_tile(Vec<A> (&acc)[P][NV], const T* x, i64 ps, int n) {
  constexpr int L = kLanes<A>;
  if (x == nullptr) return;
#pragma GCC unroll 16
  for (int p = 0; p < P; ++p)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[p][v] = ld<Partial>(x + p * ps + v * L, n) > Vec<A>{} ? acc[p][v] : Vec<A>{};
}

// P input pixels (gi_ps apart) x NV vectors of channels: sum over the walk of go * w, zeroed
// where x <= 0 unless x is null.
template <int P, int NV, bool Partial, typename S, typename T, typename A>
inline void gi_tile(const S* go, i64 go_ps, const A* w, const Walk& k, const T* x, T* gi, i64 gi_ps, int n) {
  Vec<A> acc[P][NV] = {};
  accumulate<P, NV, Partial, false>(acc, go, go_ps, w, k, n);
  store_masked_tile<P, NV, Partial, A>(gi, gi_ps, x, acc, n);
}

// The unit tiles of the input gradient (see accumulate_unit): P input pixels, their gradient zeroed
// where x <= 0 unless x is null. src: go's column read by the first pixel's last tap. With Edge, an
// edge tile (see unit_tile): go columns outside [c_lo, c_hi) lie outside the output.
// Interior tiles store with non-temporal stores when Stream (see forward).
template <int P, int NV, int KW, bool Partial, bool Edge, bool Stream, typename S, typename T, typename A>
inline void gi_tile_unit(const S* src, const A* w, i64 rows, i64 src_di, i64 w_di, i64 C, const T* x, T* gi, int n,
                         const UnitTile& t) {
  Vec<A> acc[P][NV] = {};
  accumulate_unit<P, NV, KW, true, Partial, false, Edge>(acc, src, w, rows, src_di, w_di, C, n, t.c_lo, t.c_hi);
  if constexpr (Stream && !Edge && !Partial) {
    mask_tile<P, NV, Partial, A>(acc, x, C, n);
    store_streamable_tile<true, P, NV, Partial, A>(gi, C, acc, n);
  } else {
    store_masked_tile<P, NV, Partial, A>(gi, C, x, acc, n, Edge ? t.np : P);
  }
}

// A whole input row of W columns at unit stride and dilation along W (gor: the go row of the first
// tap row; x: the row's relu mask or null; gi: the row) in unit tiles of P pixels, those at the
// row's edges as edge tiles. Input column q + p reads go column q + p + pad_left - j with tap column j.
template <int KW, bool Stream, typename S, typename T, typename A>
void gi_unit_tiles(const S* gor, const A* w, i64 rows, i64 go_di, i64 w_di, i64 C, const T* x, T* gi, i64 W, i64 Wo,
                   i64 pad_left) {
  constexpr int P = kUnitP<KW>, NVmax = kUnitNV<KW>;
  for (i64 q = 0; q < W; q += P) {
    const i64 g0 = q + pad_left - (KW - 1);  // the go column of the tile's first pixel's last tap
    const UnitTile t = unit_tile<P, KW>(g0, Wo, W - q);
    const S* src = gor + g0 * C;
    for_channel_blocks<A, NVmax, true>(C, [&](auto blk, i64 c0, int nc) {
      constexpr int NV = decltype(blk)::NV;
      constexpr bool Pa = decltype(blk)::partial;
      const T* xq = x ? x + q * C + c0 : nullptr;
      if (t.interior)
        gi_tile_unit<P, NV, KW, Pa, false, Stream>(src + c0, w + c0, rows, go_di, w_di, C, xq, gi + q * C + c0, nc, t);
      else gi_tile_unit<P, NV, KW, Pa, true, false>(src + c0, w + c0, rows, go_di, w_di, C, xq, gi + q * C + c0, nc, t);
    });
  }
}

// The input gradient's run: columns [q0, q1) of an input row (gor: the go row of the first tap
// row; x: the row's relu mask or null; gi: the row), those in [a, b) with all their go columns
// inside the output; zeroed where x <= 0 unless x is null.
template <int R, int NV, int KW, bool Partial, bool Stream, typename S, typename T, typename A>
inline void gi_run(const S* gor, const A* w, i64 go_di, i64 w_di, i64 C, const T* x, T* gi, int n, i64 q0, i64 q1,
                   i64 a, i64 b, i64 Wo, i64 pad_left) {
  Vec<A> wv[R][KW][NV];
  load_run_weights<R, NV, KW, Partial>(wv, w, w_di, C, n);
  auto mask = [&](auto& acc, i64 q) __attribute__((always_inline)) {  // acc: pixels q, q + 1, ...
    mask_tile<sizeof(acc) / sizeof(acc[0]), NV, Partial, A>(acc, x ? x + q * C : nullptr, C, n);
  };
  // As in fwd_run: the first tap row is the output-gradient row new to the caches (the input rows
  // go up, the tap rows' output rows down), and the relu mask's row is new (1.05-1.4x, and 1.15-1.3x
  // more with a mask).
  prefetch_ahead<NV>(gor, clamp_(q0 + pad_left - (KW - 1), 0, Wo), clamp_(q1 + pad_left, 0, Wo), C);
  if (x != nullptr) prefetch_ahead<NV>(x, q0, q1, C);
  auto edge = [&](i64 q) {                   // one pixel with go columns outside the output
    const i64 g0 = q + pad_left - (KW - 1);  // the go column of its last tap
    const UnitTile t = unit_tile<1, KW>(g0, Wo, 1);
    Vec<A> acc[1][NV] = {};
    run_accumulate<1, NV, KW, R, true, Partial, false, true>(acc, gor + g0 * C, go_di, C, wv, n, t.c_lo, t.c_hi);
    mask(acc, q);
    store_tile<1, NV, Partial, A>(gi + q * C, C, acc, n);
  };
  for (i64 q = q0; q < a; ++q) edge(q);
  const S* src = gor + (a + pad_left - (KW - 1)) * C;
  for_run_tiles<kRunP / NV>(b - a, [&](auto tile, i64 q) __attribute__((always_inline)) {
    constexpr int P = decltype(tile)::value;
    Vec<A> acc[P][NV] = {};
    run_accumulate<P, NV, KW, R, true, Partial, false>(acc, src + q * C, go_di, C, wv, n);
    mask(acc, a + q);
    store_streamable_tile<Stream, P, NV, Partial, A>(gi + (a + q) * C, C, acc, n);
  });
  for (i64 q = b; q < q1; ++q) edge(q);
}

// A whole input row at unit stride and dilation along W (arguments as in gi_unit_tiles): in a run
// (gi_run; streamed from an AVX2 build in segments, for_run_segments) where runs_chosen, with 2 or
// 3 tap rows, a tap-column count that has runs and some columns with all their go columns inside
// the output; otherwise in unit tiles. Prefetch as in
// fwd_row_unit: in runs only (in unit tiles it measured no faster here).
template <int KW, bool Stream, typename S, typename T, typename A>
void gi_row_unit(const S* gor, const A* w, i64 rows, i64 go_di, i64 w_di, i64 C, const T* x, T* gi, i64 W, i64 Wo,
                 i64 pad_left) {
  const i64 a = clamp_(KW - 1 - pad_left, 0, W), b = clamp_(Wo - pad_left, a, W);
  if constexpr (kHasRuns<KW>) {
    if (a < b && runs_chosen(false) &&
        for_run_segments<Stream>(
            0, W, a, b, C,
            [&](i64 s0, i64 s1, i64 sa, i64 sb) {
              return for_runs<A, S>(rows, C, b - a, [&](auto r, auto blk, i64 c0, int nc) {
                gi_run<decltype(r)::value, decltype(blk)::NV, KW, decltype(blk)::partial, Stream>(
                    gor + c0, w + c0, go_di, w_di, C, x ? x + c0 : nullptr, gi + c0, nc, s0, s1, sa, sb, Wo, pad_left);
              });
            }))
      return;
  }
  gi_unit_tiles<KW, Stream>(gor, w, rows, go_di, w_di, C, x, gi, W, Wo, pad_left);
}

// M == 1: input rows [r0, r1). A correlation of go with the flipped kernel, restricted to the taps
// whose stride phase matches. At unit stride and dilation along W with 3, 5 or 7 tap columns, each
// row in unit tiles and runs (gi_row_unit). Otherwise columns where some tap column misses the output
// go one by one; the others come in residue classes modulo the stride (columns col0, col0 + sw,
// ...), which share their taps and read consecutive output pixels, in tiles of kP.
template <bool Stream, typename S, typename T, typename A>
void grad_input_m1(const DepthwiseGeometry& s, const S* go, const A* w, const T* x, T* gi, i64 r0, i64 r1) {
  const i64 C = s.C, WoC = s.Wo * C;
  // Input columns all of whose tap columns land inside the output's columns (if in phase).
  const i64 in_lo = clamp_((s.kw - 1) * s.dil_w - s.pad_left, 0, s.W);
  const i64 in_hi = clamp_(s.Wo * s.sw - s.pad_left, in_lo, s.W);
  for (i64 r = r0; r < r1; ++r) {
    const i64 n = r / s.H, h = r % s.H;
    T* gr = gi + r * s.W * C;
    const T* xr = s.relu_input ? x + r * s.W * C : nullptr;  // the relu mask
    const Taps ti = back_taps(h + s.pad_top, s.kh, s.dil_h, s.sh, s.Ho);
    if (ti.count == 0) {
      __builtin_memset(gr, 0, s.W * C * sizeof(T));
      continue;
    }
    // Output row of the first tap row; the next tap row reads go_di elements further.
    const S* gor = go + (n * s.Ho + (h + s.pad_top - ti.first * s.dil_h) / s.sh) * WoC;
    const i64 go_di = -(ti.step * s.dil_h / s.sh) * WoC;
    // Tap columns of input column col: the taps, and the go pixel its first tap reads.
    struct Cols {
      Taps tj;
      const S* src;
    };
    auto cols = [&](i64 col) {
      const Taps tj = back_taps(col + s.pad_left, s.kw, s.dil_w, s.sw, s.Wo);
      const i64 wo = tj.count ? (col + s.pad_left - tj.first * s.dil_w) / s.sw : 0;
      return Cols{tj, gor + wo * C};
    };
    auto walk = [&](const Taps& tj) {
      return Walk{ti.count, tj.count, go_di, -(tj.step * s.dil_w / s.sw) * C, ti.step * s.kw * C, tj.step * C};
    };
    if (s.sw == 1 && s.dil_w == 1 && has_unit_tiles(s.kw)) {  // the whole row in unit tiles
      const A* wt = w + ti.first * s.kw * C;
      const i64 rows = ti.count, w_di = ti.step * s.kw * C;
      with_unit_kw(s.kw, [&](auto kw) {
        gi_row_unit<decltype(kw)::value, Stream>(gor, wt, rows, go_di, w_di, C, xr, gr, s.W, s.Wo, s.pad_left);
      });
      continue;
    }
    auto first_tap = [&](const Taps& tj) { return ti.first * s.kw + tj.first; };
    auto border = [&](i64 col) {
      const Cols t = cols(col);
      const Walk k = walk(t.tj);
      const A* wt = w + first_tap(t.tj) * C;
      for_channel_blocks<A, kNVWide, true>(C, [&](auto blk, i64 c0, int nc) {
        constexpr int NV = decltype(blk)::NV;
        constexpr bool Pa = decltype(blk)::partial;
        gi_tile<1, NV, Pa>(t.src + c0, 0, wt + c0, k, xr ? xr + col * C + c0 : nullptr, gr + col * C + c0, 0, nc);
      });
    };
    for (i64 col = 0; col < in_lo; ++col) border(col);
    // The columns of each residue class modulo the stride (col0, col0 + sw, ...) share their taps
    // and read consecutive output pixels: tiles of kP.
    for (i64 col0 = in_lo; col0 < min_(in_hi, in_lo + s.sw); ++col0) {
      const Cols t = cols(col0);
      const Walk k = walk(t.tj);
      const A* wt = w + first_tap(t.tj) * C;
      const i64 npix = (in_hi - col0 + s.sw - 1) / s.sw;
      const i64 gi_ps = s.sw * C;
      for_tiles(npix, [&](auto tile, i64 q) {
        constexpr int P = decltype(tile)::value;
        const i64 off = col0 * C + q * gi_ps;
        for_channel_blocks<A, kNV, true>(C, [&](auto blk, i64 c0, int nc) {
          constexpr int NV = decltype(blk)::NV;
          constexpr bool Pa = decltype(blk)::partial;
          if constexpr (P == kP) {
            // The next tile's new output-gradient columns (the highest it reads), and its pixels.
            for (i64 a = 0; a < ti.count; ++a)
              for (int pp = 0; pp < kP; ++pp) __builtin_prefetch(t.src + a * go_di + (q + kP + pp) * C + c0);
            for (int pp = 0; pp < kP; ++pp) {
              __builtin_prefetch(gr + off + (kP + pp) * gi_ps + c0, 1);
              if (xr) __builtin_prefetch(xr + off + (kP + pp) * gi_ps + c0);
            }
          }
          gi_tile<P, NV, Pa>(t.src + q * C + c0, C, wt + c0, k, xr ? xr + off + c0 : nullptr, gr + off + c0, gi_ps, nc);
        });
      });
    }
    for (i64 col = in_hi; col < s.W; ++col) border(col);
  }
}

// M > 1: one input pixel at a time. Per chunk of input channels, the products go * w are summed
// over the taps for each output channel, then over the M output channels of each input channel.
template <bool Mask, typename S, typename T, typename A>
void grad_input_general(const DepthwiseGeometry& s, const S* go, const A* w, const T* x, T* gi, i64 r0, i64 r1) {
  const i64 C = s.C, M = s.M, OC = s.OC;
  const i64 c_chunk = M >= kChunk ? 1 : kChunk / M;
  A acc[kChunk], gacc[kChunk];
  for (i64 r = r0; r < r1; ++r) {
    const i64 n = r / s.H, h = r % s.H;
    const Taps ti = back_taps(h + s.pad_top, s.kh, s.dil_h, s.sh, s.Ho);
    for (i64 col = 0; col < s.W; ++col) {
      const Taps tj = back_taps(col + s.pad_left, s.kw, s.dil_w, s.sw, s.Wo);
      const i64 pix = (r * s.W + col) * C;
      for (i64 c0 = 0; c0 < C; c0 += c_chunk) {
        const i64 cn = min_(c_chunk, C - c0);
        for (i64 k = 0; k < cn; ++k) gacc[k] = 0;
        for (i64 o0 = c0 * M; o0 < (c0 + cn) * M; o0 += kChunk) {
          const i64 nb = min_(kChunk, (c0 + cn) * M - o0);
          for (i64 k = 0; k < nb; ++k) acc[k] = 0;
          for (i64 a = 0; a < ti.count; ++a) {
            const i64 i = ti.first + a * ti.step, ho = (h + s.pad_top - i * s.dil_h) / s.sh;
            for (i64 b = 0; b < tj.count; ++b) {
              const i64 j = tj.first + b * tj.step, wo = (col + s.pad_left - j * s.dil_w) / s.sw;
              fma_n<false>(acc, go + ((n * s.Ho + ho) * s.Wo + wo) * OC + o0, w + (i * s.kw + j) * OC + o0, nb);
            }
          }
          i64 c = o0 / M - c0, m = o0 % M;
          for (i64 k = 0; k < nb; ++k) {
            gacc[c] += acc[k];
            if (++m == M) {
              m = 0;
              ++c;
            }
          }
        }
        convert_n<Mask>(gi + pix + c0, gacc, cn, Mask ? x + pix + c0 : nullptr);
      }
    }
  }
}

template <typename S, typename T>
void grad_input(const DepthwiseGeometry& s, const S* go, const Acc<T>* w, const T* x, T* gi, i64 r0, i64 r1,
                bool stream_out) {
  if (s.M == 1) {
#if XSEP_VEC_BYTES >= 32
    if constexpr (std::is_same_v<T, float>) {
      if (stream_out && streamable<kPixelGranule>(gi, s.C)) {
        grad_input_m1<true>(s, go, w, x, gi, r0, r1);
        _mm_sfence();  // see forward
        return;
      }
    }
#endif
    grad_input_m1<false>(s, go, w, x, gi, r0, r1);
  } else {
    if (s.relu_input) grad_input_general<true>(s, go, w, x, gi, r0, r1);
    else grad_input_general<false>(s, go, w, x, gi, r0, r1);
  }
}

// ---------------------------------------------------------------------------------------------
// Gradient of the weights

// Pixels per group of gw_tile's unit-stride loop: U x kNV go vectors, J x kNV sums and an input
// vector within the register file (32 vector registers with AVX-512, 16 otherwise).
constexpr int kGwUnroll = XSEP_VEC_BYTES == 64 ? 4 : 2;

// For J consecutive tap columns and NV vectors of channels:
// gw[j * gw_dj + c] += sum_{p < npix} go[p * go_ps + c] * act(x[p * x_ps + j * x_dj + c]).
template <int J, int NV, bool Partial, bool Relu, typename S, typename T, typename A>
inline void gw_tile(const S* go, i64 go_ps, const T* x, i64 x_ps, i64 x_dj, i64 npix, A* gw, i64 gw_dj, int n,
                    NextRanges* next) {
  constexpr int L = kLanes<A>;
  Vec<A> acc[J][NV] = {};
  i64 p = 0;
  if (x_dj == x_ps) {
    // Unit stride and dilation: pixel p's tap column j is pixel p + j's column 0, so a group of U
    // pixels loads U + J - 1 input columns instead of U * J (as accumulate_unit does for the
    // forward). Each acc[j] still sums the pixels in ascending order: the same bits.
    constexpr int U = kGwUnroll;
    for (; p + U <= npix; p += U) {
      __builtin_prefetch(go + (p + 4 + U) * go_ps);
      __builtin_prefetch(x + (p + 4 + U + J - 1) * x_ps);
      if (next != nullptr) next->step();
      Vec<A> g[U][NV];
#pragma GCC unroll 8
      for (int q = 0; q < U; ++q)
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) g[q][v] = ld<Partial>(go + (p + q) * go_ps + v * L, n);
#pragma GCC unroll 16
      for (int c = 0; c < U + J - 1; ++c) {
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) {
          Vec<A> xv = ld<Partial>(x + (p + c) * x_ps + v * L, n);
          if constexpr (Relu) xv = relu(xv);
          keep_in_register(xv);
#pragma GCC unroll 8
          for (int j = 0; j < J; ++j)
            if (c - j >= 0 && c - j < U) acc[j][v] += g[c - j][v] * xv;
        }
      }
    }
  }
  for (; p < npix; ++p) {
    // Pixels are C elements or more apart: prefetch this block's lines a few pixels ahead.
    __builtin_prefetch(go + (p + 4) * go_ps);
    __builtin_prefetch(x + (p + 4) * x_ps + (J - 1) * x_dj);
    Vec<A> g[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) g[v] = ld<Partial>(go + p * go_ps + v * L, n);
#pragma GCC unroll 8
    for (int j = 0; j < J; ++j) {
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) {
        Vec<A> xv = ld<Partial>(x + p * x_ps + j * x_dj + v * L, n);
        if constexpr (Relu) xv = relu(xv);
        acc[j][v] += g[v] * xv;
      }
    }
  }
#pragma GCC unroll 8
  for (int j = 0; j < J; ++j) {
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      A* d = gw + j * gw_dj + v * L;
      st<Partial>(d, ld<Partial>(d, n) + acc[j][v], n);
    }
  }
}

// One tap row, nj tap columns (x_dj apart in x, C apart in gw), npix pixels, all C channels;
// columns go three at a time.
template <bool Relu, typename S, typename T, typename A>
void gw_columns(const S* go, i64 go_ps, const T* x, i64 x_ps, i64 x_dj, i64 nj, i64 npix, A* gw, i64 C,
                NextRanges* next = nullptr) {
  for_channel_blocks<A, kNV>(C, [&](auto blk, i64 c0, int nc) {
    constexpr int NV = decltype(blk)::NV;
    constexpr bool Pa = decltype(blk)::partial;
    for (i64 j = 0; j < nj; j += 3) {
      const T* xj = x + j * x_dj + c0;
      A* gj = gw + j * C + c0;
      const S* g = go + c0;
      if (nj - j >= 3) gw_tile<3, NV, Pa, Relu>(g, go_ps, xj, x_ps, x_dj, npix, gj, C, nc, next);
      else if (nj - j == 2) gw_tile<2, NV, Pa, Relu>(g, go_ps, xj, x_ps, x_dj, npix, gj, C, nc, next);
      else gw_tile<1, NV, Pa, Relu>(g, go_ps, xj, x_ps, x_dj, npix, gj, C, nc, next);
    }
  });
}

// M == 1: output rows [r0, r1); per tap row, the interior columns (all tap columns inside the
// input) run as one stretch of pixels, the border columns one by one.
template <bool Relu, typename S, typename T, typename A>
void grad_weight_m1(const DepthwiseGeometry& s, const S* go, const T* x, A* gw, i64 r0, i64 r1, bool prefetch) {
  const i64 C = s.C;
  const i64 in_lo = clamp_((s.pad_left + s.sw - 1) / s.sw, 0, s.Wo);
  const i64 in_hi = clamp_(floor_div(s.W - 1 + s.pad_left - (s.kw - 1) * s.dil_w, s.sw) + 1, in_lo, s.Wo);
  constexpr i64 kBlock = kNV * kLanes<A>;
  // gw_tile's unit-stride groups of one output row: tap rows x channel blocks x column groups x groups.
  const i64 groups_per_tap_row = (C + kBlock - 1) / kBlock * ((s.kw + 2) / 3) * ((in_hi - in_lo) / kGwUnroll);
  for (i64 r = r0; r < r1; ++r) {
    const i64 n = r / s.Ho, ho = r % s.Ho;
    const S* gor = go + r * s.Wo * C;
    const Taps ti = fwd_taps(ho * s.sh - s.pad_top, s.kh, s.dil_h, s.H);
    // The next output row's go and its last tap row's x (the rows the next row reads first from
    // memory), a share at each group of this row's pixels.
    NextRanges next;
    if (prefetch && s.sw == 1 && s.dil_w == 1 && r + 1 < s.N * s.Ho && groups_per_tap_row > 0 && ti.count > 0) {
      const i64 n1 = (r + 1) / s.Ho, h1 = (r + 1) % s.Ho * s.sh - s.pad_top + (s.kh - 1) * s.dil_h;
      const i64 steps = groups_per_tap_row * ti.count;
      next.plane[0] = NextPlane::of(go + (r + 1) * s.Wo * C, s.Wo * C);
      if (h1 >= 0 && h1 < s.H) next.plane[1] = NextPlane::of(x + (n1 * s.H + h1) * s.W * C, s.W * C);
      next.spread_over(steps);
    }
    for (i64 i = ti.first; i < ti.first + ti.count; ++i) {
      const T* xr = x + (n * s.H + ho * s.sh - s.pad_top + i * s.dil_h) * s.W * C;
      A* gwr = gw + i * s.kw * C;
      auto border = [&](i64 wo) {
        const Taps tj = fwd_taps(wo * s.sw - s.pad_left, s.kw, s.dil_w, s.W);
        if (tj.count == 0) return;
        gw_columns<Relu>(gor + wo * C, 0, xr + (wo * s.sw - s.pad_left + tj.first * s.dil_w) * C, 0, s.dil_w * C,
                         tj.count, 1, gwr + tj.first * C, C);
      };
      for (i64 wo = 0; wo < in_lo; ++wo) border(wo);
      if (in_lo < in_hi)
        gw_columns<Relu>(gor + in_lo * C, C, xr + (in_lo * s.sw - s.pad_left) * C, s.sw * C, s.dil_w * C, s.kw,
                         in_hi - in_lo, gwr, C, &next);
      for (i64 wo = in_hi; wo < s.Wo; ++wo) border(wo);
    }
  }
}

// M > 1: per output pixel and tap, the input channels repeated M times times go, added to gw.
template <bool Relu, typename S, typename T, typename A>
void grad_weight_general(const DepthwiseGeometry& s, const S* go, const T* x, A* gw, i64 r0, i64 r1) {
  const i64 OC = s.OC;
  T xe[kChunk];
  for (i64 r = r0; r < r1; ++r) {
    const i64 n = r / s.Ho, ho = r % s.Ho;
    const Taps ti = fwd_taps(ho * s.sh - s.pad_top, s.kh, s.dil_h, s.H);
    for (i64 wo = 0; wo < s.Wo; ++wo) {
      const Taps tj = fwd_taps(wo * s.sw - s.pad_left, s.kw, s.dil_w, s.W);
      const S* g = go + (r * s.Wo + wo) * OC;
      for (i64 i = ti.first; i < ti.first + ti.count; ++i) {
        const i64 h = ho * s.sh - s.pad_top + i * s.dil_h;
        for (i64 j = tj.first; j < tj.first + tj.count; ++j) {
          const T* xp = x + ((n * s.H + h) * s.W + wo * s.sw - s.pad_left + j * s.dil_w) * s.C;
          A* gt = gw + (i * s.kw + j) * OC;
          for (i64 o0 = 0; o0 < OC; o0 += kChunk) {
            const i64 nb = min_(kChunk, OC - o0);
            expand(xe, xp, o0, s.M, nb);
            fma_n<Relu>(gt + o0, xe, g + o0, nb);
          }
        }
      }
    }
  }
}

template <typename S, typename T>
void grad_weight(const DepthwiseGeometry& s, const S* go, const T* x, Acc<T>* gw, i64 r0, i64 r1, bool prefetch) {
  if (s.M == 1) {
    if (s.relu_input) grad_weight_m1<true>(s, go, x, gw, r0, r1, prefetch);
    else grad_weight_m1<false>(s, go, x, gw, r0, r1, prefetch);
  } else {
    if (s.relu_input) grad_weight_general<true>(s, go, x, gw, r0, r1);
    else grad_weight_general<false>(s, go, x, gw, r0, r1);
  }
}

// ---------------------------------------------------------------------------------------------
// Elementwise helpers

template <typename T>
void to_acc(const T* src, Acc<T>* dst, i64 n) {
  convert_n<false>(dst, src, n, static_cast<const T*>(nullptr));
}

template <typename T>
void from_acc(const Acc<T>* src, T* dst, i64 n) {
  convert_n<false>(dst, src, n, static_cast<const T*>(nullptr));
}

template <typename A>
void activation(Activation act, const A* src, A* dst, i64 n) {
  using V = Vec<A>;
  switch (act) {
    case Activation::none:
      if (dst != src) convert_n<false>(dst, src, n, static_cast<const A*>(nullptr));
      break;
    case Activation::relu:
      for_vectors<kLanes<A>>(n, [&](auto partial, i64 k, int m) {
        constexpr bool P = decltype(partial)::value;
        st<P>(dst + k, relu(ld<P>(src + k, m)), m);
      });
      break;
    case Activation::relu6:
      for_vectors<kLanes<A>>(n, [&](auto partial, i64 k, int m) {
        constexpr bool P = decltype(partial)::value;
        const V v = relu(ld<P>(src + k, m));
        st<P>(dst + k, v > A(6) ? V{} + A(6) : v, m);
      });
      break;
    case Activation::elu:
      for (i64 k = 0; k < n; ++k) dst[k] = src[k] > 0 ? src[k] : expm1_(src[k]);
      break;
  }
}

template <typename A>
void activation_grad(Activation act, const A* pre, A* grad, i64 n) {
  using V = Vec<A>;
  switch (act) {
    case Activation::none: break;
    case Activation::relu:
      for_vectors<kLanes<A>>(n, [&](auto partial, i64 k, int m) {
        constexpr bool P = decltype(partial)::value;
        st<P>(grad + k, ld<P>(pre + k, m) > V{} ? ld<P>(grad + k, m) : V{}, m);
      });
      break;
    case Activation::relu6:
      for_vectors<kLanes<A>>(n, [&](auto partial, i64 k, int m) {
        constexpr bool P = decltype(partial)::value;
        const V x = ld<P>(pre + k, m);
        st<P>(grad + k, (x > V{}) & (x < A(6)) ? ld<P>(grad + k, m) : V{}, m);
      });
      break;
    case Activation::elu:
      for (i64 k = 0; k < n; ++k)
        if (!(pre[k] > 0)) grad[k] *= exp_(pre[k]);
      break;
  }
}

template <typename A>
void add_into(const A* src, A* dst, i64 n) {
  for_vectors<kLanes<A>>(n, [&](auto partial, i64 k, int m) {
    constexpr bool P = decltype(partial)::value;
    st<P>(dst + k, ld<P>(dst + k, m) + ld<P>(src + k, m), m);
  });
}

// ---------------------------------------------------------------------------------------------
// Transposes in registers: the NCHW small-plane kernels' channel blocks and the row products'
// packing of pixel-contiguous operands.

// Swaps, in every 2H x 2H block of the tile rows a and b (H rows apart), the two H x H blocks off
// its diagonal: a's upper-right with b's lower-left.
template <int H, typename V>
XSEP_INLINE void swap_off_diagonal(V& a, V& b) {
  using Index = decltype(a < b);
  constexpr int L = sizeof(V) / sizeof(a[0]);
  Index lo, hi;
#pragma GCC unroll 16
  for (int l = 0; l < L; ++l) {
    const int g = l / (2 * H) * (2 * H), q = l % (2 * H);
    lo[l] = q < H ? g + q : L + g + q - H;
    hi[l] = q < H ? g + H + q : L + g + q;
  }
  const V a2 = __builtin_shuffle(a, b, lo), b2 = __builtin_shuffle(a, b, hi);
  a = a2;
  b = b2;
}

// The L x L tile t (row i = t[i]) transposed in registers: one swap per bit of the index.
template <int H, typename V>
XSEP_INLINE void transpose_tile(V* t) {
  if constexpr (H >= 1) {
    constexpr int L = sizeof(V) / sizeof(t[0][0]);
#pragma GCC unroll 16
    for (int i = 0; i < L; ++i)
      if ((i & H) == 0) swap_off_diagonal<H>(t[i], t[i + H]);
    transpose_tile<H / 2>(t);
  }
}

// dst[c * ldd + r] = src[r * lds + c] for r < rows, c < cols: L x L tiles in registers (partial
// tiles by masked loads and stores), or element by element for 16-bit types.
template <typename T>
void transpose(const T* src, i64 rows, i64 cols, i64 lds, T* dst, i64 ldd) {
  if constexpr (std::is_same_v<T, Acc<T>>) {
    constexpr int L = kLanes<T>;
    for (i64 r0 = 0; r0 < rows; r0 += L) {
      const int nr = int(min_(L, rows - r0));
      for (i64 c0 = 0; c0 < cols; c0 += L) {
        const int nc = int(min_(L, cols - c0));
        Vec<T> t[L];
#pragma GCC unroll 16
        for (int i = 0; i < L; ++i) {
          const T* p = src + (r0 + i) * lds + c0;
          t[i] = i >= nr ? Vec<T>{} : nc == L ? load(p) : load_lanes(p, 0, nc);
        }
        transpose_tile<L / 2>(t);
        for (int j = 0; j < nc; ++j) {
          T* q = dst + (c0 + j) * ldd + r0;
          if (nr == L) store(q, t[j]);
          else store_lanes(q, t[j], 0, nr);
        }
      }
    }
  } else {
    for (i64 r = 0; r < rows; ++r)
      for (i64 c = 0; c < cols; ++c) dst[c * ldd + r] = src[r * lds + c];
  }
}

#include "cpu/nt_product_impl.h"
#include "cpu/row_product_impl.h"
#include "cpu/tn_product_impl.h"

template <typename T>
DepthwiseKernels<T> make_table() {
  using A = Acc<T>;
  DepthwiseKernels<T> t;
  t.forward = &forward<T>;
  t.forward_acc = &forward_acc<T>;
  t.grad_input = &grad_input<T, T>;
  t.grad_input_acc = &grad_input<A, T>;
  t.grad_weight = &grad_weight<T, T>;
  t.grad_weight_acc = &grad_weight<A, T>;
  t.to_acc = &to_acc<T>;
  t.from_acc = &from_acc<T>;
  t.activation = &activation<A>;
  t.activation_grad = &activation_grad<A>;
  t.add_into = &add_into<A>;
  t.add_tn_product = &add_tn_product<A>;
  t.tn_reads_b_in_place = &tn_reads_b_in_place<A>;
  t.add_nt_product = &add_nt_product<A>;
  t.pack_row_product_weight = &pack_row_product_weight<A>;
  t.row_product = &row_product<A>;
  t.pack_row_product_rows = &pack_row_product_rows<A>;
  t.row_product_packed = &row_product_packed<A>;
#if XSEP_VEC_BYTES == 64
  if constexpr (std::is_same_v<A, float>) t.row_product_streamed = &row_product_streamed;
#endif
  t.row_product_width = kRpVectors * kLanes<A>;
  return t;
}

#undef XSEP_INLINE

}  // namespace XSEP_ISA_NS
