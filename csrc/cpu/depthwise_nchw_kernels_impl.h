// The NCHW depthwise inner loops (depthwise_nchw_kernels.h), vectorised along W. isa_*.cpp include
// this file right after depthwise_kernels_impl.h, inside the same target region and namespace
// macros, and it reuses that file's vectors, conversions and tap geometry. Like it, it includes no
// headers (see the comment there).
//
// Every kernel first copies the input rows (or grad_output rows) it needs into a per-thread buffer
// of acc_t, with the input activation applied, the horizontal padding written as zeros, and, for a
// stride sw > 1, the columns split by phase (padded column pc at phase pc % sw, index pc / sw). The
// taps then read whole vectors at any offset without a border case, a tail mask or a gather: every
// output vector is a plain sum of taps x shifted loads. The copy is one pass through the caches
// against kh * kw reads per element, and each plane's buffer (a few rows to ~100 KB) stays in L2.
// At unit stride the rows are also padded vertically and laid end to end (see "the flattened
// padded plane" below): a whole plane is then one run of full vectors, whatever its width, which
// is what makes 10x10 and 19x19 planes cheap. Strides 2 to 4 split the padded plane into phase planes
// (one per row and column phase) that serve the same flat code; wider strides take rows one at a time.
// Each output element is summed in a fixed order (bias, then taps in (i, j) order; for the input
// gradient, the M output channels in order), so results do not depend on how the host splits work.

namespace XSEP_ISA_NS {

#define XSEP_INLINE inline __attribute__((always_inline))

using ::xsep::cpu::DepthwiseNchwKernels;

XSEP_INLINE i64 round_up(i64 v, i64 m) { return (v + m - 1) / m * m; }

// A per-thread buffer of at least `count` values of A, kept between calls: allocating one per call
// would page-fault fresh memory in every time for large planes (issue 14). Grows, never shrinks.
template <typename A>
A* scratch(i64 count) {
  static thread_local void* buffer = nullptr;
  static thread_local i64 capacity = 0;
  const i64 bytes = count * i64(sizeof(A));
  if (bytes > capacity) {
    __builtin_free(buffer);
    buffer = __builtin_malloc(bytes + 64);
    if (buffer == nullptr) __builtin_trap();  // no headers here to throw with; out of memory anyway
    capacity = bytes;
  }
  // On a cache line's start, so that rows of a multiple of 64 bytes start on one (AlignedRowTaps).
  using Address = __UINTPTR_TYPE__;
  return reinterpret_cast<A*>((reinterpret_cast<Address>(buffer) + 63) & ~Address{63});
}

// dst[k] = act(src[k]) in acc_t for k < n.
template <bool Relu, typename A, typename S>
XSEP_INLINE void load_act_n(A* dst, const S* src, i64 n) {
  for_vectors<kLanes<A>>(n, [&](auto partial, i64 k, int m) {
    constexpr bool P = decltype(partial)::value;
    Vec<A> v = ld<P>(src + k, m);
    if constexpr (Relu) v = relu(v);
    st<P>(dst + k, v, m);
  });
}

// A row of `width` source values placed at [left, left + width) of a zero row of n values.
template <bool Relu, typename A, typename S>
XSEP_INLINE void padded_row(A* dst, i64 n, const S* src, i64 left, i64 width) {
  const i64 lo = clamp_(left, 0, n), hi = clamp_(left + width, lo, n);
  for (i64 k = 0; k < lo; ++k) dst[k] = A(0);
  load_act_n<Relu>(dst + lo, src + (lo - left), hi - lo);
  for (i64 k = hi; k < n; ++k) dst[k] = A(0);
}

// The row geometry of the forward buffers (input rows as the taps read them): `len` values per
// phase, enough for every tap's shifted full vectors over the Wo outputs rounded up to a vector.
template <typename A>
XSEP_INLINE i64 input_row_len(const DepthwiseGeometry& s) {
  return round_up(s.Wo, kLanes<A>) + (s.kw - 1) * s.dil_w / s.sw + 1;
}

// One input row into the buffer: sw phases of len values. tmp holds len * sw values (sw > 1 only).
template <bool Relu, typename T, typename A>
void fill_input_row(const DepthwiseGeometry& s, const T* xrow, i64 len, A* tmp, A* dst) {
  if (s.sw == 1) {
    padded_row<Relu>(dst, len, xrow, s.pad_left, s.W);
    return;
  }
  padded_row<Relu>(tmp, len * s.sw, xrow, s.pad_left, s.W);
  for (i64 ph = 0; ph < s.sw; ++ph)
    for (i64 k = 0; k < len; ++k) dst[ph * len + k] = tmp[k * s.sw + ph];
}

// Where each tap column j reads in a buffer row (its phase's start plus its shift), computed once
// per call: the divisions cost more than a small plane's multiply-adds.
XSEP_INLINE const i64* tap_offsets(const DepthwiseGeometry& s, i64 len) {
  i64* offsets = scratch<i64>(s.kw);
  for (i64 j = 0; j < s.kw; ++j) offsets[j] = (j * s.dil_w) % s.sw * len + j * s.dil_w / s.sw;
  return offsets;
}

// NV output vectors: bias + sum over nrows tap rows (row_step apart in the buffer) and kw tap
// columns of w * the shifted input vectors; the last vector stores its first n lanes if Partial.
template <int NV, bool Partial, typename A, typename O>
XSEP_INLINE void fwd_vectors(const DepthwiseGeometry& s, const A* src, const i64* offsets, i64 row_step, i64 nrows,
                             const A* w, A bias, O* out, int n) {
  constexpr int L = kLanes<A>;
  Vec<A> acc[NV];
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) acc[v] = splat<Vec<A>>(bias);
  for (i64 a = 0; a < nrows; ++a) {
    for (i64 j = 0; j < s.kw; ++j) {
      const Vec<A> wv = splat<Vec<A>>(w[a * s.kw + j]);
      const A* p = src + a * row_step + offsets[j];
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[v] += load(p + v * L) * wv;
    }
  }
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) {
    if (Partial && v == NV - 1) store_n(out + v * L, acc[v], n);
    else store(out + v * L, acc[v]);
  }
}

// ---------------------------------------------------------------------------------------------
// Unit stride: the flattened padded plane
//
// For sh == sw == 1 the input rows the band reads are copied with all their padding into rows of
// len = Wo + (kw - 1) * dil_w values (or more, zeros: forward_flat), one after another (zero rows
// for the vertical padding). Output (ho, wo) then reads buf[(ho + i * dil_h) * len + wo + j * dil_w], so with
// out_flat[ho * len + wo] the band is one 1-D convolution over the flattened buffer, computed in
// full vectors: no per-row tap bookkeeping and no partial vector per row. The lanes at wo >= Wo mix
// two rows and are dropped when the rows are copied out. Small planes (10x10, 19x19) then waste
// (len - Wo) / len of the lanes instead of up to half a vector per row. Every element is still
// bias + taps in (i, j) order (a tap in the vertical padding adds 0 * w).

// Values [0, n) of dst from f(k) (a vector for dst + k), in full vectors: up to L - 1 values past
// n are written too, and the caller overwrites them (the next segment starts there) or ignores them.
template <typename A, typename F>
XSEP_INLINE void put_vectors(A* dst, i64 n, F&& f) {
  constexpr int L = kLanes<A>;
  for (i64 k = 0; k < n; k += L) store(dst + k, f(k));
}

// Padded rows [pr0, pr0 + rows) of an H x W plane placed at (top, left) (padded row pr is plane row
// pr - top; either offset may be negative), len values each, then `tail` zeros. Written in order
// with full vectors, each segment overwriting what the previous one wrote past its end; the source
// is read in full vectors while they stay in the plane.
template <bool Relu, typename S, typename A>
void fill_flat(const S* xp, i64 H, i64 W, i64 top, i64 left, i64 len, i64 pr0, i64 rows, i64 tail, A* buf) {
  constexpr int L = kLanes<A>;
  const i64 plane = H * W;
  const i64 lo = clamp_(left, 0, len), hi = clamp_(left + W, lo, len);
  const auto zeros = [](i64) { return Vec<A>{}; };
  for (i64 a = 0; a < rows; ++a) {
    A* d = buf + a * len;
    const i64 r = pr0 + a - top;
    if (r < 0 || r >= H) {
      put_vectors(d, len, zeros);
      continue;
    }
    put_vectors(d, lo, zeros);
    const i64 from = r * W + lo - left;  // plane index of the value at lo
    put_vectors(d + lo, hi - lo, [&](i64 k) {
      const i64 left = plane - (from + k);
      Vec<A> v = left >= L ? ld<false>(xp + from + k, L) : ld<true>(xp + from + k, int(left));
      if constexpr (Relu) v = relu(v);
      return v;
    });
    put_vectors(d + hi, len - hi, zeros);
  }
  put_vectors(buf + rows * len, tail, zeros);
}

// Where tap (i, j) reads in a flat buffer, relative to its output's position: i * rstep + j * cstep
// in one padded plane (unit stride), or a per-tap table over the phase planes (see forward_phases).
struct GridTaps {
  i64 rstep, cstep;
  XSEP_INLINE i64 operator()(i64 i, i64 j, i64) const { return i * rstep + j * cstep; }
};
struct TableTaps {
  const i64* offsets;  // offsets[i * kw + j]
  XSEP_INLINE i64 operator()(i64 i, i64 j, i64 kw) const { return offsets[i * kw + j]; }
};
// GridTaps at unit column step in a buffer whose rows start on cache lines (rows of a multiple of
// the vector, AVX-512): a tap row's K vectors are lane shifts of two loads from a line's start
// (flat_vectors), against K unaligned loads, most of them split across two lines. Flipped: the
// input gradient's taps, walking the buffer backwards (tap (i, j) at -i * rstep - j, outputs K - 1
// values into their row, so that row i's loads start on a line at -i * rstep - (K - 1)).
template <bool Flipped = false>
struct AlignedRowTaps {
  i64 rstep;
  // Where tap row i's loads start, relative to the output's position, and tap column J's lane shift
  // from there.
  template <int K>
  XSEP_INLINE i64 row(i64 i) const {
    return Flipped ? -i * rstep - (K - 1) : i * rstep;
  }
  template <int K, int J>
  static constexpr int kShift = Flipped ? K - 1 - J : J;
};
template <typename At>
inline constexpr bool kIsAlignedRowTaps = false;
template <bool Flipped>
inline constexpr bool kIsAlignedRowTaps<AlignedRowTaps<Flipped>> = true;

// Lanes First, First + Step, ..., First + (L - 1) * Step of the 2 * L values lo then hi: one
// shuffle (AVX-512: valignd at Step 1, vpermt2ps at Step 2).
template <int First, int Step, typename V>
XSEP_INLINE V lanes_of(V lo, V hi) {
  using Index = decltype(lo < hi);  // the integer vector of the same lanes
  Index index;
#pragma GCC unroll 16
  for (int l = 0; l < int(sizeof(V) / sizeof(lo[0])); ++l) index[l] = First + Step * l;
  return __builtin_shuffle(lo, hi, index);
}

// A tap row's shifted vectors from NV + 1 aligned loads x (from q, a line's start): f(IntTag<J>{}, v,
// the vector at q + v * L + At's shift of tap J) for J < K, then v < NV, in that order; one shuffle
// each. The forward and input gradient sum them into their outputs (flat_vectors), the weight
// gradient into its taps (aligned_tap_products).
template <typename At, int K, int NV, int J = 0, typename V, typename F>
XSEP_INLINE void for_shifted_row(const V (&x)[NV + 1], F&& f) {
  if constexpr (J < K) {
    constexpr int shift = At::template kShift<K, J>;
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) f(IntTag<J>{}, v, shift == 0 ? x[v] : lanes_of<shift, 1>(x[v], x[v + 1]));
    for_shifted_row<At, K, NV, J + 1>(x, f);
  }
}

// NV output vectors at p's flat position: bias + sum over the taps (i, j) of w[i][j] * the vector
// at(i, j) further. K: the kernel size (kh = kw = K), or 0 for any (kh, kw).
template <int K, int NV, typename A, typename At>
XSEP_INLINE void flat_vectors(const A* p, i64 kh, i64 kw, At at, const A* w, A bias, Vec<A>* acc) {
  constexpr int L = kLanes<A>;
  const i64 KH = K ? K : kh, KW = K ? K : kw;
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) acc[v] = splat<Vec<A>>(bias);
  if constexpr (kIsAlignedRowTaps<At>) {
    static_assert(K > 0 && K <= kLanes<A>, "AlignedRowTaps: a known kernel size");
#pragma GCC unroll 7
    for (int i = 0; i < K; ++i) {
      Vec<A> x[NV + 1], wv[K];
#pragma GCC unroll 8
      for (int v = 0; v <= NV; ++v) x[v] = load(p + at.template row<K>(i) + v * L);
#pragma GCC unroll 7
      for (int j = 0; j < K; ++j) wv[j] = splat<Vec<A>>(w[i * K + j]);
      // acc[v] += the tap row's products, taps in order.
      for_shifted_row<At, K, NV>(
          x, [&](auto j, int v, Vec<A> xs) __attribute__((always_inline)) { acc[v] += xs * wv[decltype(j)::value]; });
    }
  } else {
#pragma GCC unroll 7
    for (i64 i = 0; i < KH; ++i) {
#pragma GCC unroll 7
      for (i64 j = 0; j < KW; ++j) {
        const Vec<A> wv = splat<Vec<A>>(w[i * KW + j]);
        const A* q = p + at(i, j, KW);
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) acc[v] += load(q + v * L) * wv;
      }
    }
  }
}

// dst[at, at + width) = src[0, width) (acc_t, full vectors readable), zeroed where mask <= 0 with
// Mask, for a row of a plane of `total` values that rows fill in order: full vectors while they stay
// inside the plane (a row's overrun is overwritten by the next row), the plane's last one partial.
template <bool Mask, typename A, typename O, typename T>
XSEP_INLINE void store_plane_row(const A* src, i64 width, i64 at, i64 total, O* dst, const T* mask) {
  constexpr int L = kLanes<A>;
  for (i64 k = 0; k < width; k += L) {
    const i64 left = total - (at + k);
    const auto put = [&](auto partial, int m) {
      constexpr bool P = decltype(partial)::value;
      Vec<A> v = load(src + k);
      if constexpr (Mask) v = ld<P>(mask + at + k, m) > Vec<A>{} ? v : Vec<A>{};
      st<P>(dst + at + k, v, m);
    };
    if (left >= L) put(BoolTag<false>{}, L);
    else put(BoolTag<true>{}, int(left));
  }
}

// With AVX-512, flat_plane stores each output vector's lanes straight into their rows (one masked
// store per row the vector meets) instead of copying them out of obuf, on rows of at least
// kFlatRowsDirectLen values (a vector then meets one row, now and then two). Zen 4 EPYC, fp32,
// batch 8, 2 threads, 2026-12-05, NCHW 3x3 forward: 74x74 and 147x147 planes 7-15% faster; on
// 10x10 to 28x28 planes (a vector meets 2-3 rows) the masked stores took 5-25% longer than the
// copy, 7x7 even. Other builds always copy (not measured there: AVX2's masked stores are many
// micro-ops on AMD's processors).
inline constexpr bool kFlatRowsDirect = XSEP_VEC_BYTES == 64;
inline constexpr i64 kFlatRowsDirectLen = 64;

// The lanes of v, flat positions (h, col), (h, col + 1), ... of rows len apart, into the rows of
// `width` values of dst (zeroed where mask <= 0 with Mask); the lanes at columns >= width dropped.
template <bool Mask, typename A, typename O, typename T>
XSEP_INLINE void put_flat_vector(Vec<A> v, i64 h, i64 col, i64 len, i64 nout, i64 width, O* dst, const T* mask) {
  constexpr int L = kLanes<A>;
  for (i64 lane = 0; lane < L && h < nout; lane += len - col, col = 0, ++h) {
    const int a = int(lane), b = int(min_(L, lane + (width > col ? width - col : 0)));
    if (a >= b) continue;
    const i64 at = h * width + col - lane;  // lane l goes to dst[at + l]
    Vec<A> u = v;
    if constexpr (Mask) u = load_lanes(mask + at, a, b) > Vec<A>{} ? v : Vec<A>{};
    store_lanes(dst + at, u, a, b);
  }
}

// Rows [0, nout) of `width` values of one plane from a filled buffer: row h at flat position
// h * len of src, its taps at(i, j) further, each value init + the taps in (i, j)
// order; with Mask, zeroed where mask <= 0. Stored directly (kFlatRowsDirect), or `chunk` rows at
// a time go through obuf (small, so it stays in L1) and are copied to dst (rows `width` apart), in
// full vectors while they stay inside the nout * width values (a row's overrun is overwritten by
// the next row).
// The `count` flat output vectors from p on, in blocks of four then one: sink(k, vector) for each
// flat position k, in order.
template <int K, typename A, typename At, typename Sink>
XSEP_INLINE void flat_run(const A* p, i64 count, i64 kh, i64 kw, At at, const A* w, A init, Sink&& sink) {
  constexpr int L = kLanes<A>;
  // With K known, the weights are copied first: read from w, each tap's weight was loaded again after
  // every store of the sink's (the compiler cannot tell its buffer from w). One thread in cache, AMD
  // Zen 4, 2026-12-06: 147x147 planes 18.9 -> 18.2 us, 74x74 4.7 -> 4.6 us.
  A wk[K > 0 ? K * K : 1];
  if constexpr (K > 0) {
    for (int t = 0; t < K * K; ++t) wk[t] = w[t];
    w = wk;
  }
  i64 k = 0;
  for (; k + 4 * L <= count; k += 4 * L) {
    Vec<A> acc[4];
    flat_vectors<K, 4>(p + k, kh, kw, at, w, init, acc);
#pragma GCC unroll 4
    for (int v = 0; v < 4; ++v) sink(k + v * L, acc[v]);
  }
  for (; k < count; k += L) {
    Vec<A> acc[1];
    flat_vectors<K, 1>(p + k, kh, kw, at, w, init, acc);
    sink(k, acc[0]);
  }
}

// Whether flat_plane can stream O values (store_stream: float, AVX2 and AVX-512 builds).
template <typename O>
inline constexpr bool kStreamsFlat = std::is_same_v<O, float> && XSEP_VEC_BYTES >= 32;

// f(BoolTag<true>{}) where stream_out asks for streamed O values and this build streams them, then
// an sfence (the streamed stores are weakly ordered: complete them before the output is read);
// f(BoolTag<false>{}) elsewhere.
template <typename O, typename F>
XSEP_INLINE void streamed_or_not(bool stream_out, F&& f) {
#if XSEP_VEC_BYTES >= 32
  if constexpr (kStreamsFlat<O>) {
    if (stream_out) {
      f(BoolTag<true>{});
      _mm_sfence();
      return;
    }
  }
#endif
  (void)stream_out;
  f(BoolTag<false>{});
}

#if XSEP_VEC_BYTES >= 32
// dst[0, n) = src[0, n) (float; src in cache): the whole vector-aligned vectors of dst with
// non-temporal stores, the partial vectors at either end with plain masked stores (their cache
// lines may be shared with the values before and after, written by other calls or threads).
XSEP_INLINE void stream_values(const float* src, i64 n, float* dst) {
  constexpr int L = kLanes<float>;
  const i64 misaligned = i64(reinterpret_cast<unsigned long>(dst) / sizeof(float) % L);
  const i64 head = min_(n, (L - misaligned) % L);
  if (head > 0) store_n(dst, load_n(src, int(head)), int(head));
  i64 k = head;
  for (; k + L <= n; k += L) store_stream(dst + k, load(src + k));
  if (k < n) store_n(dst + k, load_n(src + k, int(n - k)), int(n - k));
}
#endif

// With Stream (an output larger than the caches, host.h stream_output), flat_plane copies each
// chunk's rows side by side into cbuf (chunk * width values, in L1) and writes the chunk, contiguous
// in the plane, with stream_values: no read of the output's lines before they are written, and
// no output evicting the input the next planes read.
// `next` (NextPlane, depthwise_kernels_impl.h): the bytes the caller reads next (the next plane's
// rows), brought into L2 a cache line per output vector while flat_plane computes from its buffer:
// the copy that fills the next buffer then reads from L2, and the memory reads overlap the
// arithmetic instead of following it. With this and streamed outputs (above), 2-core Intel Xeon,
// fp32, batch 8, 2 threads, 3x3, `retain`, 2026-12-06, Xception's six NCHW depthwise layers from
// 147x147x64 to 37x37x728, bench against torch, two rounds of alternate processes: forward
// 1.69-1.73x -> 1.88-2.06x (147x147x64 58-64% -> 71-83% of the copy floor), forward+backward
// 1.76-1.77x -> 2.05-2.13x; default allocator (nothing streams: fresh memory), one round: 2.33x ->
// 2.90x and 2.21x -> 2.26x. Prefetching two planes ahead measured no better. What is left is
// arithmetic: one thread on 147x147 planes in cache takes ~12 us a plane (that VM runs ~1 512-bit
// FMA a cycle), and blocks of four output rows sharing their input loads (half the loads) ran no
// faster.
template <int K, bool Mask, bool Stream = false, typename A, typename O, typename T, typename At>
void flat_plane(const A* src, i64 len, i64 nout, i64 width, i64 kh, i64 kw, At at, const A* w, A init, i64 chunk,
                A* obuf, O* dst, const T* mask, A* cbuf = nullptr, NextPlane next = {}) {
  constexpr int L = kLanes<A>;
#if XSEP_VEC_BYTES >= 32
  if constexpr (Stream && kStreamsFlat<O>) {
    for (i64 h0 = 0; h0 < nout; h0 += chunk) {
      const i64 h1 = min_(h0 + chunk, nout), n = (h1 - h0) * width;
      flat_run<K>(src + h0 * len, (h1 - h0 - 1) * len + width, kh, kw, at, w, init, [&](i64 k, Vec<A> v) {
        store(obuf + k, v);
        next.prefetch_line();
      });
      for (i64 h = h0; h < h1; ++h)
        store_plane_row<Mask>(obuf + (h - h0) * len, width, (h - h0) * width, n, cbuf, Mask ? mask + h0 * width : mask);
      stream_values(cbuf, n, dst + h0 * width);
    }
    return;
  }
#endif
  if constexpr (kIsAlignedRowTaps<At>) {
    // Rows of a multiple of L: each vector lies in one row, and goes out in one store; the lanes past
    // a row's end land on the next row's first values, which that row's first vector overwrites
    // after (masked on the band's last row, and where they would reach past the next row). With
    // Mask, the mask's values at the same places (the next row's: inside the plane).
    const bool spill = len <= 2 * width;
    i64 h = 0, col = 0;  // the next vector's row and column
    flat_run<K>(src, (nout - 1) * len + width, kh, kw, at, w, init, [&](i64, Vec<A> v) {
      if (col < width) {
        const i64 at_out = h * width + col;
        const auto put = [&](auto partial, int m) {
          constexpr bool P = decltype(partial)::value;
          if constexpr (Mask) v = ld<P>(mask + at_out, m) > Vec<A>{} ? v : Vec<A>{};
          st<P>(dst + at_out, v, m);
        };
        if (col + L <= width || (spill && h + 1 < nout)) put(BoolTag<false>{}, L);
        else put(BoolTag<true>{}, int(width - col));
      }
      next.prefetch_line();
      if ((col += L) == len) col = 0, ++h;
    });
    return;
  }
  if (kFlatRowsDirect && len >= kFlatRowsDirectLen) {
    i64 h = 0, col = 0;  // the next vector's flat position is row h, column col
    flat_run<K>(src, (nout - 1) * len + width, kh, kw, at, w, init, [&](i64, Vec<A> v) {
      put_flat_vector<Mask, A>(v, h, col, len, nout, width, dst, mask);
      next.prefetch_line();
      for (col += L; col >= len; col -= len) ++h;
    });
    return;
  }
  const i64 total = nout * width;
  for (i64 h0 = 0; h0 < nout; h0 += chunk) {
    const i64 h1 = min_(h0 + chunk, nout);
    const i64 count = (h1 - h0 - 1) * len + width;  // flat outputs up to the last row's last
    flat_run<K>(src + h0 * len, count, kh, kw, at, w, init, [&](i64 k, Vec<A> v) {
      store(obuf + k, v);
      next.prefetch_line();
    });
    for (i64 h = h0; h < h1; ++h) store_plane_row<Mask>(obuf + (h - h0) * len, width, h * width, total, dst, mask);
  }
}

// The values a unit-stride kernel's padded plane of `rows` rows of len takes: the rows, then
// kPlaneSlack zeros (fill_flat's tail): the last flat vectors read up to L - 1 values past the rows,
// and AlignedRowTaps' last loads a vector further (lanes of outputs past the plane, dropped; zeros,
// so that no uninitialised value reaches them: in the weight gradient a NaN there would send a
// finite channel down grad_weight_any's redo).
template <typename A>
inline constexpr i64 kPlaneSlack = 2 * kLanes<A>;
template <typename A>
XSEP_INLINE i64 padded_plane_values(i64 rows, i64 len) {
  return rows * len + kPlaneSlack<A>;
}
// fill_flat into such a plane (padded_plane_values of buf): the rows, then the kPlaneSlack zeros.
template <bool Relu, typename S, typename A>
XSEP_INLINE void fill_padded_plane(const S* xp, i64 H, i64 W, i64 top, i64 left, i64 len, i64 pr0, i64 rows, A* buf) {
  fill_flat<Relu>(xp, H, W, top, left, len, pr0, rows, kPlaneSlack<A>, buf);
}

// The per-thread buffers of a unit-stride flat kernel, in one scratch: the padded plane
// (padded_plane_values); obuf, `chunk` rows of len (flat_plane); with Stream, cbuf, chunk rows of
// `width`.
template <typename A>
struct FlatBuffers {
  A *padded, *obuf, *cbuf;
  i64 chunk;
  FlatBuffers(i64 rows, i64 len, i64 nout, i64 width, bool stream) : chunk(clamp_(2048 / len, 1, nout)) {
    constexpr int L = kLanes<A>;
    const i64 padded_n = padded_plane_values<A>(rows, len), obuf_n = round_up(chunk * len, L) + L;
    padded = scratch<A>(padded_n + obuf_n + (stream ? chunk * width : 0));
    obuf = padded + padded_n;
    cbuf = obuf + obuf_n;
  }
};

// Whether a unit-stride flat kernel lays its rows out for AlignedRowTaps: 64-byte vectors of float
// (AVX-512: a lane shift across two vectors is one instruction) and a known kernel size
// (kAlignedRows), then unit dilation along W and rows widened to a multiple of the vector by at most
// a quarter of their values (aligned_rows: Xception's 147x147, 74x74 and 37x37 planes; not 19x19 or
// 10x10, which the blocks take anyway).
template <int K, typename A>
inline constexpr bool kAlignedRows = XSEP_VEC_BYTES == 64 && std::is_same_v<A, float> && K > 0;
template <typename A>
XSEP_INLINE bool aligned_rows(i64 len, i64 dil_w) {
  return dil_w == 1 && 4 * round_up(len, kLanes<A>) <= 5 * len;
}
// f(BoolTag<true>{}, len rounded up to whole vectors) where a unit-stride kernel's rows of len
// values are laid out for AlignedRowTaps (kAlignedRows, aligned_rows), else f(BoolTag<false>{}, len).
template <int K, typename A, typename F>
XSEP_INLINE void with_row_layout(i64 len, i64 dil_w, F&& f) {
  if constexpr (kAlignedRows<K, A>)
    if (aligned_rows<A>(len, dil_w)) return f(BoolTag<true>{}, round_up(len, kLanes<A>));
  f(BoolTag<false>{}, len);
}

// Output rows [ho0, ho1) of image n, input channels [c0, c1), unit stride (see above). Rows of len
// values; with Aligned, len a multiple of the vector and AlignedRowTaps.
template <int K, bool Relu, bool Stream, bool Aligned, typename T, typename O, typename A>
void forward_flat_rows(const DepthwiseGeometry& s, const T* x, const A* w, const A* bias, O* out, i64 out_plane, i64 n,
                       i64 c0, i64 c1, i64 ho0, i64 ho1, i64 len) {
  constexpr int L = kLanes<A>;
  const i64 taps = s.kh * s.kw;
  const i64 nout = ho1 - ho0, rows = nout + (s.kh - 1) * s.dil_h, rstep = s.dil_h * len;
  const FlatBuffers<A> b(rows, len, nout, s.Wo, Stream);
  A* const buf = b.padded;
  const auto at = [&] {
    if constexpr (Aligned) return AlignedRowTaps<>{rstep};
    else return GridTaps{rstep, s.dil_w};
  }();
  // The input rows the band reads, for the next plane's prefetch (planes are contiguous in NCHW:
  // the next channel's, or the next image's first: a thread's run of planes goes on there; past a
  // fused op's band, a plane it may not read, which a prefetch does not mind).
  const i64 r_lo = clamp_(ho0 - s.pad_top, 0, s.H), r_hi = clamp_(ho0 - s.pad_top + rows, r_lo, s.H);
  for (i64 c = c0; c < c1; ++c) {
    const T* xp = x + (n * s.C + c) * s.H * s.W;
    // Output row ho0 reads padded rows from ho0 (its first tap row).
    fill_padded_plane<Relu>(xp, s.H, s.W, s.pad_top, s.pad_left, len, ho0, rows, buf);
    const NextPlane next = NextPlane::of(xp + s.H * s.W + r_lo * s.W, (r_hi - r_lo) * s.W);
    for (i64 oc = c * s.M; oc < (c + 1) * s.M; ++oc)
      flat_plane<K, false, Stream>(buf, len, nout, s.Wo, s.kh, s.kw, at, w + oc * taps,
                                   bias != nullptr ? bias[oc] : A(0), b.chunk, b.obuf,
                                   out + (oc - c0 * s.M) * out_plane, static_cast<const T*>(nullptr), b.cbuf,
                                   oc == c * s.M ? next : NextPlane{});
  }
}

// forward_flat_rows, on rows widened to a multiple of the vector for AlignedRowTaps where
// aligned_rows says so. AMD Zen 4, one thread, planes in cache, 3x3, 2026-12-06: 147x147 12.2 -> 9.9
// us a plane, 74x74 3.7 -> 3.0, 37x37 1.18 -> 1.10 (the taps alone, a plane: 5.8 -> 4.1 us; the
// rest was put_flat_vector's bookkeeping on rows that vectors straddle).
template <int K, bool Relu, bool Stream, typename T, typename O, typename A>
void forward_flat(const DepthwiseGeometry& s, const T* x, const A* w, const A* bias, O* out, i64 out_plane, i64 n,
                  i64 c0, i64 c1, i64 ho0, i64 ho1) {
  with_row_layout<K, A>(s.Wo + (s.kw - 1) * s.dil_w, s.dil_w, [&](auto aligned, i64 len) {
    forward_flat_rows<K, Relu, Stream, decltype(aligned)::value>(s, x, w, bias, out, out_plane, n, c0, c1, ho0, ho1,
                                                                 len);
  });
}

// ---------------------------------------------------------------------------------------------
// Other strides: the flattened phase planes
//
// At stride (sh, sw) output (ho, wo) reads padded input (ho * sh + i * dil_h, wo * sw + j * dil_w).
// Split the padded input by row phase and column phase (the padded row modulo sh, the column
// modulo sw): in phase plane ((i * dil_h) % sh, (j * dil_w) % sw), tap (i, j) reads row
// ho + i * dil_h / sh and column wo + j * dil_w / sw, so with rows of len values every tap is
// again a fixed shift of the output's flat position ho * len + wo, and the unit-stride code above
// (flat_plane) runs unchanged with a table of the taps' shifts (TableTaps). The copy reads each
// input row once and splits it with shuffles at stride 2 (mobilenet's and efficientnet's
// downsampling layers), where a row at a time with a partial vector per row cost 3-4x more.

// Strides up to 4 take the phase planes (sh * sw of them); wider strides, the row path below.
XSEP_INLINE bool use_phases(const DepthwiseGeometry& s) { return s.sh <= 4 && s.sw <= 4; }

// The phase planes of one band: sh * sw planes of rows x len values, `stride` apart (the L values
// after each plane are zeros: the last vectors of a plane read up to L - 1 values past it). The
// unit-stride weight gradient describes its one padded plane with it too (grad_weight_any: `stride`
// = padded_plane_values, kPlaneSlack zeros after the rows).
struct PhasePlanes { i64 len, rows, stride; };

template <typename A>
XSEP_INLINE PhasePlanes phase_planes(const DepthwiseGeometry& s, i64 nout) {
  const i64 len = s.Wo + (s.kw - 1) * s.dil_w / s.sw, rows = nout + (s.kh - 1) * s.dil_h / s.sh;
  return {len, rows, rows * len + kLanes<A>};
}

// Tap (i, j)'s shift from an output's flat position, from the start of phase plane (0, 0).
XSEP_INLINE void phase_offsets(const DepthwiseGeometry& s, const PhasePlanes& g, i64* offsets) {
  for (i64 i = 0; i < s.kh; ++i)
    for (i64 j = 0; j < s.kw; ++j) {
      const i64 plane = (i * s.dil_h % s.sh) * s.sw + j * s.dil_w % s.sw;
      offsets[i * s.kw + j] = plane * g.stride + i * s.dil_h / s.sh * g.len + j * s.dil_w / s.sw;
    }
}

// The L values of a zero-padded row at padded columns [at, at + L): act(src[at + l]) where
// 0 <= at + l < width, else zero; a full vector where it lies inside the row, else a masked load
// (nothing outside the row is read). Built in registers: a row put in memory first and read
// back at once (a vector spanning two of the stores that wrote it) waits until those stores reach
// the cache, which cost 45% of the stride-2 fill (14x14x576 planes, Zen 4, issue 14).
template <bool Relu, typename A, typename S>
XSEP_INLINE Vec<A> row_window(const S* src, i64 at, i64 width) {
  constexpr int L = kLanes<A>;
  Vec<A> v;
  if (at >= 0 && at + L <= width) {
    v = load(src + at);
  } else {
    const int a = int(clamp_(-at, 0, L)), b = int(clamp_(width - at, 0, L));
    if (a >= b) return Vec<A>{};
    v = load_lanes(src + at, a, b);
  }
  if constexpr (Relu) v = relu(v);
  return v;
}

// The phase planes of output rows [ho0, ho0 + nout) of plane xp: plane (pr, pc) row r holds padded
// row (ho0 + r) * sh + pr, columns pc, pc + sw, ... with the input activation applied, in full
// vectors (up to L - 1 values past a row written too: the next row's, or the plane's zeros, written
// after). At sw == 2 each pair of row windows is split by two shuffles; wider strides go through
// tmp (one padded row, tmp_len values) lane by lane.
template <bool Relu, typename T, typename A>
void fill_phases(const DepthwiseGeometry& s, const PhasePlanes& g, const T* xp, i64 ho0, A* tmp, i64 tmp_len, A* buf) {
  constexpr int L = kLanes<A>;
  const auto zeros = [](i64) { return Vec<A>{}; };
  for (i64 pr = 0; pr < s.sh; ++pr) {
    for (i64 r = 0; r < g.rows; ++r) {
      const i64 h = (ho0 + r) * s.sh + pr - s.pad_top;
      A* dst = buf + pr * s.sw * g.stride + r * g.len;  // plane (pr, 0); plane (pr, pc) is pc * stride further
      const T* row = xp + clamp_(h, 0, s.H - 1) * s.W;  // read only when h is a row of the plane
      if (h < 0 || h >= s.H) {
        for (i64 pc = 0; pc < s.sw; ++pc) put_vectors(dst + pc * g.stride, g.len, zeros);
      } else if (s.sw == 1) {
        put_vectors(dst, g.len, [&](i64 c) { return row_window<Relu, A>(row, c - s.pad_left, s.W); });
      } else if (s.sw == 2) {
        for (i64 c = 0; c < g.len; c += L) {
          const Vec<A> a = row_window<Relu, A>(row, 2 * c - s.pad_left, s.W);
          const Vec<A> b = row_window<Relu, A>(row, 2 * c + L - s.pad_left, s.W);
          store(dst + c, lanes_of<0, 2>(a, b));
          store(dst + g.stride + c, lanes_of<1, 2>(a, b));
        }
      } else {
        put_vectors(tmp, tmp_len, [&](i64 c) { return row_window<Relu, A>(row, c - s.pad_left, s.W); });
        for (i64 pc = 0; pc < s.sw; ++pc)
          for (i64 c = 0; c < g.len; ++c) dst[pc * g.stride + c] = tmp[c * s.sw + pc];
      }
    }
  }
  for (i64 p = 0; p < s.sh * s.sw; ++p) put_vectors(buf + p * g.stride + g.rows * g.len, kLanes<A>, zeros);
}

// The values of one padded row the phases read through tmp (strides 3 and 4), rounded up to a vector.
template <typename A>
XSEP_INLINE i64 phase_row_len(const DepthwiseGeometry& s, const PhasePlanes& g) {
  return round_up(s.sw * g.len, kLanes<A>);
}

// Output rows [ho0, ho1) of image n, input channels [c0, c1), stride > 1 (see above).
template <int K, bool Relu, bool Stream, typename T, typename O, typename A>
void forward_phases(const DepthwiseGeometry& s, const T* x, const A* w, const A* bias, O* out, i64 out_plane, i64 n,
                    i64 c0, i64 c1, i64 ho0, i64 ho1) {
  constexpr int L = kLanes<A>;
  const i64 nout = ho1 - ho0, taps = s.kh * s.kw;
  const PhasePlanes g = phase_planes<A>(s, nout);
  const i64 chunk = clamp_(2048 / g.len, 1, nout), tmp_len = phase_row_len<A>(s, g);
  const i64 obuf_n = round_up(chunk * g.len, L) + L, buf_n = s.sh * s.sw * g.stride;
  A* buf = scratch<A>(buf_n + L + tmp_len + L + obuf_n + (Stream ? chunk * s.Wo : 0));
  A* tmp = buf + buf_n + L;
  A* obuf = tmp + tmp_len + L;
  i64* offsets = scratch<i64>(taps);
  phase_offsets(s, g, offsets);
  for (i64 c = c0; c < c1; ++c) {
    fill_phases<Relu>(s, g, x + (n * s.C + c) * s.H * s.W, ho0, tmp, tmp_len, buf);
    for (i64 oc = c * s.M; oc < (c + 1) * s.M; ++oc)
      flat_plane<K, false, Stream>(buf, g.len, nout, s.Wo, s.kh, s.kw, TableTaps{offsets}, w + oc * taps,
                                   bias != nullptr ? bias[oc] : A(0), chunk, obuf, out + (oc - c0 * s.M) * out_plane,
                                   static_cast<const T*>(nullptr), obuf + obuf_n);
  }
}

// Calls f(IntTag<K>{}) with K = 3, 5 or 7 for those square kernels, else K = 0 (any size).
template <typename F>
XSEP_INLINE void with_kernel_size(const DepthwiseGeometry& s, F&& f) {
  if (s.kh == 3 && s.kw == 3) f(IntTag<3>{});
  else if (s.kh == 5 && s.kw == 5) f(IntTag<5>{});
  else if (s.kh == 7 && s.kw == 7) f(IntTag<7>{});
  else f(IntTag<0>{});
}

// Output rows [ho0, ho1) of image n, input channels [c0, c1), all their M output channels; with
// Stream, the flat paths (strides up to 4) stream their output (flat_plane).
template <bool Relu, bool Stream, typename T, typename O, typename A>
void forward_rows(const DepthwiseGeometry& s, const T* x, const A* w, const A* bias, O* out, i64 out_plane, i64 n,
                  i64 c0, i64 c1, i64 ho0, i64 ho1) {
  constexpr int L = kLanes<A>;
  if (ho1 <= ho0 || s.Wo == 0) return;
  if (s.sh == 1 && s.sw == 1) {
    with_kernel_size(s, [&](auto k) {
      forward_flat<decltype(k)::value, Relu, Stream>(s, x, w, bias, out, out_plane, n, c0, c1, ho0, ho1);
    });
    return;
  }
  if (use_phases(s)) {
    with_kernel_size(s, [&](auto k) {
      forward_phases<decltype(k)::value, Relu, Stream>(s, x, w, bias, out, out_plane, n, c0, c1, ho0, ho1);
    });
    return;
  }
  const i64 len = input_row_len<A>(s), row = s.sw * len, taps = s.kh * s.kw;
  // The input rows the output rows read.
  const i64 r_lo = clamp_(ho0 * s.sh - s.pad_top, 0, s.H);
  const i64 r_hi = clamp_((ho1 - 1) * s.sh - s.pad_top + (s.kh - 1) * s.dil_h + 1, r_lo, s.H);
  A* buf = scratch<A>((r_hi - r_lo) * row + (s.sw > 1 ? row : 0));
  A* tmp = buf + (r_hi - r_lo) * row;
  const i64* offsets = tap_offsets(s, len);
  for (i64 c = c0; c < c1; ++c) {
    const T* xp = x + (n * s.C + c) * s.H * s.W;
    for (i64 r = r_lo; r < r_hi; ++r) fill_input_row<Relu>(s, xp + r * s.W, len, tmp, buf + (r - r_lo) * row);
    for (i64 oc = c * s.M; oc < (c + 1) * s.M; ++oc) {
      const A b = bias != nullptr ? bias[oc] : A(0);
      for (i64 ho = ho0; ho < ho1; ++ho) {
        O* o = out + (oc - c0 * s.M) * out_plane + (ho - ho0) * s.Wo;
        const Taps ti = fwd_taps(ho * s.sh - s.pad_top, s.kh, s.dil_h, s.H);
        const A* src = ti.count ? buf + (ho * s.sh - s.pad_top + ti.first * s.dil_h - r_lo) * row : buf;
        const A* wt = w + oc * taps + ti.first * s.kw;
        const i64 row_step = s.dil_h * row;
        i64 wo = 0;
        for (; wo + 4 * L <= s.Wo; wo += 4 * L)
          fwd_vectors<4, false>(s, src + wo, offsets, row_step, ti.count, wt, b, o + wo, 0);
        for (; wo + L <= s.Wo; wo += L)
          fwd_vectors<1, false>(s, src + wo, offsets, row_step, ti.count, wt, b, o + wo, 0);
        if (wo < s.Wo) fwd_vectors<1, true>(s, src + wo, offsets, row_step, ti.count, wt, b, o + wo, int(s.Wo - wo));
      }
    }
  }
}

template <bool Stream = false, typename T, typename O, typename A>
void forward_nchw_any(const DepthwiseGeometry& s, const T* x, const A* w, const A* bias, O* out, i64 out_plane, i64 n,
                      i64 c0, i64 c1, i64 ho0, i64 ho1) {
  if (s.relu_input) forward_rows<true, Stream>(s, x, w, bias, out, out_plane, n, c0, c1, ho0, ho1);
  else forward_rows<false, Stream>(s, x, w, bias, out, out_plane, n, c0, c1, ho0, ho1);
}

template <typename T>
void forward_nchw(const DepthwiseGeometry& s, const T* x, const Acc<T>* w, const Acc<T>* bias, T* out, i64 out_plane,
                  i64 n, i64 c0, i64 c1, i64 ho0, i64 ho1, bool stream_out) {
  streamed_or_not<T>(stream_out, [&](auto stream) {
    forward_nchw_any<decltype(stream)::value>(s, x, w, bias, out, out_plane, n, c0, c1, ho0, ho1);
  });
}

template <typename T>
void forward_nchw_acc(const DepthwiseGeometry& s, const T* x, const Acc<T>* w, const Acc<T>* bias, Acc<T>* out,
                      i64 out_plane, i64 n, i64 c0, i64 c1, i64 ho0, i64 ho1) {
  forward_nchw_any(s, x, w, bias, out, out_plane, n, c0, c1, ho0, ho1);
}

// ---------------------------------------------------------------------------------------------
// Gradient of the input
//
// gi[h][col] = sum over m, and taps (i, j) whose output pixel exists, of w * go[ho][wo] with
// ho * sh = h + pad_top - i * dil_h and wo * sw = col + pad_left - j * dil_w. The columns of one
// residue class modulo sw (col = rho + sw * t) share their taps, and tap j then reads
// wo = t + e_j with e_j = (rho + pad_left - j * dil_w) / sw: consecutive go values for consecutive
// t. Each class is computed as vectors over t from zero-padded go rows, then put in place.

// A tap column in phase with a residue class, and its shift e_j.
struct PhaseTap { i64 j, shift; };

// NV vectors over t of one residue class: sum over the M output channels, the tap rows and the
// class's tap columns; written to out (acc_t, full vectors).
template <int NV, typename A>
XSEP_INLINE void gi_vectors(const DepthwiseGeometry& s, const A* gobuf, i64 glen, i64 go_left, const Taps& ti,
                            i64 ho_first, const A* w, const PhaseTap* cols, i64 ncols, i64 t0, A* out) {
  constexpr int L = kLanes<A>;
  Vec<A> acc[NV] = {};
  const i64 ho_step = ti.step * s.dil_h / s.sh;  // between consecutive tap rows' outputs (a whole number)
  for (i64 m = 0; m < s.M; ++m) {
    for (i64 a = 0; a < ti.count; ++a) {
      const i64 i = ti.first + a * ti.step, ho = ho_first - a * ho_step;
      const A* gr = gobuf + (m * s.Ho + ho) * glen + go_left + t0;
      const A* wr = w + m * s.kh * s.kw + i * s.kw;
      for (i64 b = 0; b < ncols; ++b) {
        const Vec<A> wv = splat<Vec<A>>(wr[cols[b].j]);
        const A* p = gr + cols[b].shift;
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) acc[v] += load(p + v * L) * wv;
      }
    }
  }
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) store(out + v * L, acc[v]);
}

template <bool Mask, typename S, typename T, typename A>
void grad_input_planes(const DepthwiseGeometry& s, const S* go, const A* w, const T* x, T* gi, i64 q0, i64 q1) {
  constexpr int L = kLanes<A>;
  const i64 classes = min_(s.sw, s.W), per_class = (s.W + s.sw - 1) / s.sw;  // most columns in a class
  const i64 tv = round_up(per_class, L);
  // go rows padded so that every shift reads inside: e_j >= -go_left, e_j <= (sw - 1 + pad_left) / sw.
  const i64 go_left = ((s.kw - 1) * s.dil_w + s.sw - 1) / s.sw;
  const i64 glen = go_left + tv + (s.sw - 1 + s.pad_left) / s.sw + 1;
  const i64 gobuf_n = s.M * s.Ho * glen;
  // The class's tap columns first (kw of them at most), then the go rows, one input row's
  // gradient (tv * sw values) and one class's vectors before they go in place (sw > 1).
  constexpr i64 kTapValues = (sizeof(PhaseTap) + sizeof(A) - 1) / sizeof(A);
  A* base = scratch<A>(classes * s.kw * kTapValues + gobuf_n + tv * s.sw + 4 * L);
  PhaseTap* all_cols = reinterpret_cast<PhaseTap*>(base);  // class rho's at rho * kw
  A* gobuf = base + classes * s.kw * kTapValues;
  A* row = gobuf + gobuf_n;
  A* vecs = row + tv * s.sw;
  i64* ncols_of = scratch<i64>(classes);
  for (i64 rho = 0; rho < classes; ++rho) {
    i64 ncols = 0;
    for (i64 j = 0; j < s.kw; ++j) {
      const i64 d = rho + s.pad_left - j * s.dil_w;
      if (d % s.sw == 0) all_cols[rho * s.kw + ncols++] = {j, floor_div(d, s.sw)};
    }
    ncols_of[rho] = ncols;
  }
  for (i64 q = q0; q < q1; ++q) {
    const i64 n = q / s.C, c = q % s.C;
    for (i64 m = 0; m < s.M; ++m)
      for (i64 ho = 0; ho < s.Ho; ++ho)
        padded_row<false>(gobuf + (m * s.Ho + ho) * glen, glen, go + ((n * s.OC + c * s.M + m) * s.Ho + ho) * s.Wo,
                          go_left, s.Wo);
    const A* wc = w + c * s.M * s.kh * s.kw;
    for (i64 h = 0; h < s.H; ++h) {
      const Taps ti = back_taps(h + s.pad_top, s.kh, s.dil_h, s.sh, s.Ho);
      const i64 ho_first = ti.count ? (h + s.pad_top - ti.first * s.dil_h) / s.sh : 0;
      for (i64 rho = 0; rho < classes; ++rho) {
        const PhaseTap* cols = all_cols + rho * s.kw;
        const i64 ncols = ncols_of[rho];
        const i64 count = (s.W - rho + s.sw - 1) / s.sw;
        for (i64 t = 0; t < count;) {
          const bool wide = t + 4 * L <= count;
          A* dst = s.sw == 1 ? row + t : vecs;
          if (wide) gi_vectors<4>(s, gobuf, glen, go_left, ti, ho_first, wc, cols, ncols, t, dst);
          else gi_vectors<1>(s, gobuf, glen, go_left, ti, ho_first, wc, cols, ncols, t, dst);
          const i64 done = wide ? 4 * L : L;
          if (s.sw > 1)
            for (i64 k = 0; k < min_(done, count - t); ++k) row[rho + (t + k) * s.sw] = vecs[k];
          t += done;
        }
      }
      const i64 pix = (q * s.H + h) * s.W;
      convert_n<Mask>(gi + pix, row, s.W, Mask ? x + pix : static_cast<const T*>(nullptr));
    }
  }
}

// Unit stride and M == 1: the input gradient is a forward convolution of grad_output, padded by
// (k - 1) * dil - pad above and to the left, with the kernel flipped; the flattened padded plane
// then serves as in the forward (the taps walk the buffer backwards, in (i, j) order). Rows of len
// values; with Aligned, len a multiple of the vector and AlignedRowTaps<true>.
template <int K, bool Mask, bool Stream, bool Aligned, typename S, typename T, typename A>
void grad_input_flat_rows(const DepthwiseGeometry& s, const S* go, const A* w, const T* x, T* gi, i64 q0, i64 q1,
                          i64 len) {
  constexpr int L = kLanes<A>;
  const i64 rows = s.H + (s.kh - 1) * s.dil_h, taps = s.kh * s.kw;
  const i64 top = (s.kh - 1) * s.dil_h, left = (s.kw - 1) * s.dil_w;  // tap (0, 0)'s reach
  const FlatBuffers<A> b(rows, len, s.H, s.W, Stream);
  const auto at = [&] {
    if constexpr (Aligned) return AlignedRowTaps<true>{s.dil_h * len};
    else return GridTaps{-s.dil_h * len, -s.dil_w};
  }();
  for (i64 q = q0; q < q1; ++q) {
    fill_padded_plane<false>(go + q * s.Ho * s.Wo, s.Ho, s.Wo, top - s.pad_top, left - s.pad_left, len, 0, rows,
                             b.padded);
    const i64 pix = q * s.H * s.W;
    // The next plane's grad_output (see forward_flat), also past q1: the backward's channel blocks
    // (depthwise_conv2d.cpp: nchw_backward_blocks) call this for one image's planes of a block, and
    // the thread's next block reads those next. Prefetching only below q1 measured no faster (2-core
    // Xeon, 2026-12-06, one run). The input it masks with is read in order.
    flat_plane<K, Mask, Stream>(b.padded + top * len + left, len, s.H, s.W, s.kh, s.kw, at, w + q % s.C * taps, A(0),
                                b.chunk, b.obuf, gi + pix, Mask ? x + pix : static_cast<const T*>(nullptr), b.cbuf,
                                NextPlane::of(go + (q + 1) * s.Ho * s.Wo, s.Ho * s.Wo));
  }
}

// grad_input_flat_rows, on rows widened as the forward's (forward_flat). AMD Zen 4, one thread,
// planes in cache, 3x3, 2026-12-06, three rounds of alternate processes: 147x147 10.9 -> 8.6 us a
// plane (12.2 -> 9.4 with a relu input's mask), 74x74 3.0 -> 2.5 (3.3 -> 2.6), 37x37 0.88 -> 0.82.
template <int K, bool Mask, bool Stream, typename S, typename T, typename A>
void grad_input_flat(const DepthwiseGeometry& s, const S* go, const A* w, const T* x, T* gi, i64 q0, i64 q1) {
  with_row_layout<K, A>(s.W + (s.kw - 1) * s.dil_w, s.dil_w, [&](auto aligned, i64 len) {
    grad_input_flat_rows<K, Mask, Stream, decltype(aligned)::value>(s, go, w, x, gi, q0, q1, len);
  });
}

// Strides up to 4, M == 1: the phase planes again, for the gradient. Input pixel
// (rh + sh * a, rw + sw * b) of input phase (rh, rw) receives tap (i, j) exactly when
// rh + pad_top - i * dil_h and rw + pad_left - j * dil_w are multiples of sh and sw, from
// grad_output (a + e_i, b + e_j) with e_i, e_j those multiples' quotients: each input phase is a
// small convolution of the zero-padded grad_output plane (its taps are fixed shifts of a flat
// position again), computed with flat_plane into a dense phase plane; the phases' rows are then
// interleaved (with shuffles at sw == 2) into the gradient's rows. Each value is the sum of its
// taps in (i, j) order.
template <typename A>
XSEP_INLINE Vec<A> interleave(Vec<A> a, Vec<A> b, bool high) {
  constexpr int L = kLanes<A>;
  using Index = decltype(a < b);
  Index lo, hi;
#pragma GCC unroll 16
  for (int l = 0; l < L / 2; ++l) {
    lo[2 * l] = l, lo[2 * l + 1] = L + l;
    hi[2 * l] = L / 2 + l, hi[2 * l + 1] = L + L / 2 + l;
  }
  return high ? __builtin_shuffle(a, b, hi) : __builtin_shuffle(a, b, lo);
}

template <bool Mask, typename S, typename T, typename A>
void grad_input_phases(const DepthwiseGeometry& s, const S* go, const A* w, const T* x, T* gi, i64 q0, i64 q1) {
  constexpr int L = kLanes<A>;
  const i64 taps = s.kh * s.kw, phases = s.sh * s.sw;
  // The shifts e over every phase's taps, and the grad_output buffer that keeps all reads inside.
  // [min, max] of the shifts e along one axis (k taps, dilation, padding, stride), 0 included.
  const auto shifts = [](i64 k, i64 dil, i64 pad, i64 stride, i64& lo, i64& hi) {
    lo = hi = 0;
    for (i64 t = 0; t < k; ++t)
      for (i64 r = 0; r < stride; ++r)
        if ((r + pad - t * dil) % stride == 0) {
          const i64 e = floor_div(r + pad - t * dil, stride);
          lo = min_(lo, e), hi = e > hi ? e : hi;
        }
  };
  i64 eh_min, eh_max, ew_min, ew_max;
  shifts(s.kh, s.dil_h, s.pad_top, s.sh, eh_min, eh_max);
  shifts(s.kw, s.dil_w, s.pad_left, s.sw, ew_min, ew_max);
  const i64 top = -eh_min, left = -ew_min;
  const i64 ha = (s.H + s.sh - 1) / s.sh, wb = (s.W + s.sw - 1) / s.sw;  // the largest phase plane
  const i64 rows = (s.Ho > ha + eh_max ? s.Ho : ha + eh_max) + top;
  const i64 glen = (s.Wo > wb + ew_max ? s.Wo : wb + ew_max) + left;
  const i64 chunk = clamp_(2048 / glen, 1, ha), pout_n = ha * wb + L;
  const i64 row_n = round_up(wb, L) * s.sw + 2 * L;
  A* buf = scratch<A>(rows * glen + L + phases * pout_n + round_up(chunk * glen, L) + L + row_n + taps);
  A* pout = buf + rows * glen + L;  // phase (rh, rw) at (rh * sw + rw) * pout_n, dense Ha x Wb
  A* obuf = pout + phases * pout_n;
  A* row = obuf + round_up(chunk * glen, L) + L;
  A* wl = row + row_n;  // a phase's weights, in (i, j) order
  // Each phase's taps (i * kw + j) and their shifts, found once per call: the divisions cost more
  // than a small plane's multiply-adds (72 of them a plane at 3x3, stride 2).
  i64* tap_of = scratch<i64>(2 * phases * taps + 3 * phases);
  i64* offsets = tap_of + phases * taps;  // phase p's at p * taps
  i64* ntaps = offsets + phases * taps;
  i64* rows_of = ntaps + phases;  // phase p's plane: rows_of[p] x cols_of[p] input pixels
  i64* cols_of = rows_of + phases;
  for (i64 rh = 0; rh < s.sh; ++rh)
    for (i64 rw = 0; rw < s.sw; ++rw) {
      const i64 ph = rh * s.sw + rw;
      rows_of[ph] = (s.H - rh + s.sh - 1) / s.sh, cols_of[ph] = (s.W - rw + s.sw - 1) / s.sw;
      i64 nt = 0;
      for (i64 i = 0; i < s.kh; ++i) {
        const i64 dh = rh + s.pad_top - i * s.dil_h;
        if (dh % s.sh != 0) continue;
        for (i64 j = 0; j < s.kw; ++j) {
          const i64 dw = rw + s.pad_left - j * s.dil_w;
          if (dw % s.sw != 0) continue;
          tap_of[ph * taps + nt] = i * s.kw + j;
          offsets[ph * taps + nt++] = (floor_div(dh, s.sh) + top) * glen + floor_div(dw, s.sw) + left;
        }
      }
      ntaps[ph] = nt;
    }
  for (i64 q = q0; q < q1; ++q) {
    const A* wc = w + q % s.C * taps;
    fill_flat<false>(go + q * s.Ho * s.Wo, s.Ho, s.Wo, top, left, glen, 0, rows, L, buf);
    for (i64 ph = 0; ph < phases; ++ph) {
      const i64 h_n = rows_of[ph], w_n = cols_of[ph], nt = ntaps[ph];
      if (h_n <= 0 || w_n <= 0) continue;
      for (i64 t = 0; t < nt; ++t) wl[t] = wc[tap_of[ph * taps + t]];
      A* dst = pout + ph * pout_n;
      if (nt == 0) put_vectors(dst, h_n * w_n, [](i64) { return Vec<A>{}; });
      else
        flat_plane<0, false>(buf, glen, h_n, w_n, 1, nt, TableTaps{offsets + ph * taps}, wl, A(0), chunk, obuf, dst,
                             static_cast<const T*>(nullptr));
    }
    // Interleave each input row's column phases, then store it (full vectors while inside the plane).
    const i64 plane = s.H * s.W;
    T* gq = gi + q * plane;
    const T* xq = Mask ? x + q * plane : nullptr;
    for (i64 h = 0, rh = 0, a = 0; h < s.H; ++h, rh = rh + 1 == s.sh ? 0 : rh + 1, a += rh == 0) {
      const A* src;  // row h = a * sh + rh
      if (s.sw == 1) {
        src = pout + rh * pout_n + a * s.W;
      } else {
        const A* p0 = pout + rh * s.sw * pout_n;
        if (s.sw == 2) {
          const A* e = p0 + a * ((s.W + 1) / 2);
          const A* o = p0 + pout_n + a * (s.W / 2);
          for (i64 b = 0; 2 * b < s.W; b += L) {
            const Vec<A> ev = load(e + b), ov = load(o + b);
            store(row + 2 * b, interleave<A>(ev, ov, false));
            store(row + 2 * b + L, interleave<A>(ev, ov, true));
          }
        } else {
          for (i64 rw = 0; rw < s.sw; ++rw) {
            const i64 w_n = (s.W - rw + s.sw - 1) / s.sw;
            const A* pr = p0 + rw * pout_n + a * w_n;
            for (i64 b = 0; b < w_n; ++b) row[rw + b * s.sw] = pr[b];
          }
        }
        src = row;
      }
      store_plane_row<Mask>(src, s.W, h * s.W, plane, gq, xq);
    }
  }
}

// With Stream, the unit-stride path streams the gradient (flat_plane); the others write it through
// the caches.
template <bool Mask, bool Stream, typename S, typename T, typename A>
void grad_input_any(const DepthwiseGeometry& s, const S* go, const A* w, const T* x, T* gi, i64 q0, i64 q1) {
  if (s.sh == 1 && s.sw == 1 && s.M == 1)
    with_kernel_size(s, [&](auto k) { grad_input_flat<decltype(k)::value, Mask, Stream>(s, go, w, x, gi, q0, q1); });
  else if (s.M == 1 && use_phases(s)) grad_input_phases<Mask>(s, go, w, x, gi, q0, q1);
  else grad_input_planes<Mask>(s, go, w, x, gi, q0, q1);
}

template <typename S, typename T>
void grad_input_nchw(const DepthwiseGeometry& s, const S* go, const Acc<T>* w, const T* x, T* gi, i64 q0, i64 q1,
                     bool stream_out) {
  streamed_or_not<T>(stream_out, [&](auto stream) {
    constexpr bool Stream = decltype(stream)::value;
    if (s.relu_input) grad_input_any<true, Stream>(s, go, w, x, gi, q0, q1);
    else grad_input_any<false, Stream>(s, go, w, x, gi, q0, q1);
  });
}

// ---------------------------------------------------------------------------------------------
// Gradient of the weights
//
// gw[oc][i][j] = sum over images, output rows and columns of go * act(x) at the tap's input pixel:
// per tap, a dot product of each go row with the input buffer row the tap reads, shifted.

// acc2 (2 vectors: two chains hide the multiply-add latency) += go row . buffer row over Wo values.
template <typename S, typename A>
XSEP_INLINE void gw_row(const S* g, const A* xb, i64 Wo, A* acc2) {
  constexpr int L = kLanes<A>;
  Vec<A> a0 = load(acc2), a1 = load(acc2 + L);
  i64 wo = 0;
  for (; wo + 2 * L <= Wo; wo += 2 * L) {
    a0 += ld<false>(g + wo, L) * load(xb + wo);
    a1 += ld<false>(g + wo + L, L) * load(xb + wo + L);
  }
  if (wo + L <= Wo) {
    a0 += ld<false>(g + wo, L) * load(xb + wo);
    wo += L;
  }
  // The tail: both sides zero-filled, so values past the row (finite or not) never enter.
  if (wo < Wo) a1 += ld<true>(g + wo, int(Wo - wo)) * ld<true>(xb + wo, int(Wo - wo));
  store(acc2, a0);
  store(acc2 + L, a1);
}

template <bool Relu, typename S, typename T, typename A>
void grad_weight_channels(const DepthwiseGeometry& s, const S* go, const T* x, A* gw, i64 c0, i64 c1) {
  constexpr int L = kLanes<A>;
  const i64 len = input_row_len<A>(s), row = s.sw * len, taps = s.kh * s.kw;
  const i64 accs = s.M * taps * 2 * L;  // two vector accumulators per output channel and tap
  A* buf = scratch<A>(s.H * row + (s.sw > 1 ? row : 0) + accs);
  A* tmp = buf + s.H * row;
  A* acc = tmp + (s.sw > 1 ? row : 0);
  const i64* offsets = tap_offsets(s, len);
  for (i64 c = c0; c < c1; ++c) {
    for (i64 k = 0; k < accs; ++k) acc[k] = A(0);
    for (i64 n = 0; n < s.N; ++n) {
      const T* xp = x + (n * s.C + c) * s.H * s.W;
      for (i64 r = 0; r < s.H; ++r) fill_input_row<Relu>(s, xp + r * s.W, len, tmp, buf + r * row);
      for (i64 m = 0; m < s.M; ++m) {
        const S* gp = go + (n * s.OC + c * s.M + m) * s.Ho * s.Wo;
        for (i64 i = 0; i < s.kh; ++i) {
          // Output rows whose tap row i lies inside the input.
          const i64 first = i * s.dil_h - s.pad_top;  // input row of output row 0
          const i64 ho_lo = clamp_(first >= 0 ? 0 : (-first + s.sh - 1) / s.sh, 0, s.Ho);
          const i64 ho_hi = clamp_(floor_div(s.H - 1 - first, s.sh) + 1, ho_lo, s.Ho);
          for (i64 j = 0; j < s.kw; ++j) {
            A* a = acc + (m * taps + i * s.kw + j) * 2 * L;
            const i64 off = offsets[j];
            for (i64 ho = ho_lo; ho < ho_hi; ++ho)
              gw_row(gp + ho * s.Wo, buf + (ho * s.sh + first) * row + off, s.Wo, a);
          }
        }
      }
    }
    // Lanes summed in a fixed order.
    for (i64 k = 0; k < s.M * taps; ++k) {
      A sum = 0;
      for (int l = 0; l < 2 * L; ++l) sum += acc[k * 2 * L + l];
      gw[c * s.M * taps + k] = sum;
    }
  }
}

// acc[i * K + j] += sum over the nv flat vectors k of gbuf[k] * xbuf[k + i * rstep + j], lane by
// lane in k's order (xbuf, gbuf and rstep in whole vectors: grad_weight_flat with Aligned).
template <int K, typename A>
XSEP_INLINE void aligned_tap_products(const A* gbuf, const A* xbuf, i64 nv, i64 rstep, Vec<A>* acc) {
  constexpr int L = kLanes<A>;
  const auto vectors = [&](auto nvec, i64 k) __attribute__((always_inline)) {
    constexpr int NV = decltype(nvec)::value;
    Vec<A> gv[NV];
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) gv[v] = load(gbuf + k + v * L);
#pragma GCC unroll 7
    for (int i = 0; i < K; ++i) {
      Vec<A> xv[NV + 1];
#pragma GCC unroll 3
      for (int v = 0; v <= NV; ++v) xv[v] = load(xbuf + k + i * rstep + v * L);
      // acc[i * K + j] += gv[v] * input tap (i, j) of output vector v, v in order.
      for_shifted_row<AlignedRowTaps<>, K, NV>(xv, [&](auto j, int v, Vec<A> xs) __attribute__((always_inline)) {
        acc[i * K + decltype(j)::value] += gv[v] * xs;
      });
    }
  };
  i64 k = 0;
  for (; k + 2 * L <= nv * L; k += 2 * L) vectors(IntTag<2>{}, k);
  if (k < nv * L) vectors(IntTag<1>{}, k);
}

// K x K kernels (K = 3, 5, 7) at unit stride, or at strides up to 4 through the phase planes
// (Phased): the flattened padded planes again. Each image's input plane is filled as for the forward, its grad_output
// plane into rows of the same len (zeros in the lanes past Wo), and every tap is a dot product of the two flat buffers,
// the input shifted by the tap's offset: one grad_output vector serves all K * K taps, whose accumulators stay in
// registers over the images. A dropped lane multiplies a zero of grad_output by an input value
// (0 * inf would reach a tap that never reads that value: grad_weight_any redoes such channels by
// the row path, which reads only its own pixels).
// g: the input's layout, phase_planes' (Phased), or at unit stride the padded plane's, rows as the
// forward's (with_row_layout: widened with Aligned) and `stride` its padded_plane_values.
// With Aligned, a tap row's K input vectors are lane shifts of aligned loads (as AlignedRowTaps),
// two grad_output vectors at a time.
// AMD Zen 4, one thread, planes in cache, 3x3, 2026-12-06, three rounds of alternate processes:
// 147x147 12.1 -> 11.1 us a plane, 74x74 3.3 -> 3.1, 37x37 unchanged (1.0).
template <int K, bool Phased, bool Relu, bool Aligned, typename S, typename T, typename A>
void grad_weight_flat(const DepthwiseGeometry& s, const S* go, const T* x, A* gw, i64 c0, i64 c1,
                      const PhasePlanes& g) {
  constexpr int L = kLanes<A>;
  constexpr int taps = K * K;
  static_assert(!(Aligned && Phased), "aligned rows: unit stride");
  const i64 len = g.len, rstep = s.dil_h * len, cstep = s.dil_w;
  const i64 nv = ((s.Ho - 1) * len + s.Wo + L - 1) / L;  // vectors over the flat outputs
  const i64 xbuf_n = s.sh * s.sw * g.stride;
  const i64 tmp_len = Phased ? phase_row_len<A>(s, g) : 0;
  A* xbuf = scratch<A>(xbuf_n + s.Ho * len + L + tmp_len + L);
  A* gbuf = xbuf + xbuf_n;
  A* tmp = gbuf + s.Ho * len + L;
  i64* offsets = scratch<i64>(taps);
  if constexpr (Phased) phase_offsets(s, g, offsets);
  for (i64 c = c0; c < c1; ++c) {
    for (i64 oc = c * s.M; oc < (c + 1) * s.M; ++oc) {
      Vec<A> acc[taps];
#pragma GCC unroll 49
      for (int t = 0; t < taps; ++t) acc[t] = Vec<A>{};
      for (i64 n = 0; n < s.N; ++n) {
        const T* xp = x + (n * s.C + c) * s.H * s.W;
        if (oc == c * s.M || s.N > 1) {  // the input plane, unless still in place (N = 1, M > 1)
          if constexpr (Phased) fill_phases<Relu>(s, g, xp, 0, tmp, tmp_len, xbuf);
          else fill_padded_plane<Relu>(xp, s.H, s.W, s.pad_top, s.pad_left, len, 0, g.rows, xbuf);
        }
        fill_flat<false>(go + (n * s.OC + oc) * s.Ho * s.Wo, s.Ho, s.Wo, 0, 0, len, 0, s.Ho, L, gbuf);
        if constexpr (Aligned) {
          aligned_tap_products<K>(gbuf, xbuf, nv, rstep, acc);
          continue;
        }
        for (i64 k = 0; k < nv * L; k += L) {
          const Vec<A> gv = load(gbuf + k);
          const A* p = xbuf + k;
#pragma GCC unroll 7
          for (int i = 0; i < K; ++i)
#pragma GCC unroll 7
            for (int j = 0; j < K; ++j)
              acc[i * K + j] += gv * load(p + (Phased ? offsets[i * K + j] : i * rstep + j * cstep));
        }
      }
      // Lanes summed in a fixed order.
#pragma GCC unroll 49
      for (int t = 0; t < taps; ++t) {
        A sum = 0;
        for (int l = 0; l < L; ++l) sum += acc[t][l];
        gw[oc * taps + t] = sum;
      }
    }
  }
}

template <bool Relu, typename S, typename T, typename A>
void grad_weight_any(const DepthwiseGeometry& s, const S* go, const T* x, A* gw, i64 c0, i64 c1) {
  const bool unit = s.sh == 1 && s.sw == 1;
  if (s.kh == s.kw && (s.kh == 3 || s.kh == 5 || s.kh == 7) && (unit || use_phases(s)))
    with_kernel_size(s, [&](auto k) {
      constexpr int K = decltype(k)::value;
      if constexpr (K > 0) {
        const PhasePlanes g = phase_planes<A>(s, s.Ho);
        if (!unit) return grad_weight_flat<K, true, Relu, false>(s, go, x, gw, c0, c1, g);
        with_row_layout<K, A>(g.len, s.dil_w, [&](auto aligned, i64 len) {
          const PhasePlanes plane{len, g.rows, padded_plane_values<A>(g.rows, len)};
          grad_weight_flat<K, false, Relu, decltype(aligned)::value>(s, go, x, gw, c0, c1, plane);
        });
      }
    });
  else return grad_weight_channels<Relu>(s, go, x, gw, c0, c1);
  // The flat paths' dropped lanes multiply zeros of grad_output by input values no tap of theirs
  // reads: an inf there gives NaN where the answer is finite. A channel with a NaN is recomputed by
  // the row path, which reads only its own pixels (NaN then stands; finite channels cost nothing).
  const i64 taps = s.M * s.kh * s.kw;
  for (i64 c = c0; c < c1; ++c) {
    bool nan = false;
    for (i64 k = c * taps; k < (c + 1) * taps; ++k) nan |= gw[k] != gw[k];
    if (nan) grad_weight_channels<Relu>(s, go, x, gw, c, c + 1);
  }
}

template <typename S, typename T>
void grad_weight_nchw(const DepthwiseGeometry& s, const S* go, const T* x, Acc<T>* gw, i64 c0, i64 c1) {
  if (s.relu_input) grad_weight_any<true>(s, go, x, gw, c0, c1);
  else grad_weight_any<false>(s, go, x, gw, c0, c1);
}

// ---------------------------------------------------------------------------------------------
// Small planes: channel blocks through the NHWC kernels
//
// The plane kernels above hold a plane's pixels in their vector lanes; on a small plane (7x7,
// 14x14 at stride 2: a few vectors) its fill, tap table and row stores cost more than its
// multiply-adds. There a block of channels of one image is transposed into an NHWC buffer (a
// few KB to ~100 KB: it stays in L1/L2), the NHWC kernels (depthwise_kernels_impl.h: channels in
// the lanes, as oneDNN does) run on it as a one-image layer of those channels, and the result is
// transposed back (transpose, depthwise_kernels_impl.h). Per output value the same sums in the
// same order as those kernels.

// The geometry of input channels [c0, c1) of one image as an NHWC layer of their own.
XSEP_INLINE DepthwiseGeometry block_geometry(const DepthwiseGeometry& s, i64 c0, i64 c1) {
  DepthwiseGeometry b = s;
  b.N = 1;
  b.C = c1 - c0;
  b.OC = (c1 - c0) * s.M;
  return b;
}

// A thread's buffers for one block (from `bytes` of scratch), each on a 64-byte boundary: malloc
// aligns to 16 bytes, and where its block started 16, 32 or 48 bytes into a cache line (by chance,
// per process) every 64-byte vector load and store spanned two lines (the backward measured 10-25%
// slower in such processes, Zen 4).
struct BlockBuffers {
  unsigned char* base;
  i64 used = 0;
  explicit BlockBuffers(i64 bytes) {
    unsigned char* p = scratch<unsigned char>(bytes + 63);
    base = p + (64 - reinterpret_cast<unsigned long>(p) % 64) % 64;
  }
  template <typename X>
  X* take(i64 count) {
    X* p = reinterpret_cast<X*>(base + used);
    used += round_up(count * i64(sizeof(X)), 64);
    return p;
  }
};
XSEP_INLINE i64 block_buffer_bytes(const DepthwiseGeometry& b, i64 acc_size, i64 value_size) {
  const i64 in = b.H * b.W * b.C, out = b.Ho * b.Wo * b.OC, taps = b.kh * b.kw * b.OC;
  return 2 * round_up(in * value_size, 64) + round_up(out * acc_size, 64) + 2 * round_up(taps * acc_size, 64);
}

// The block's weights, tap-major: wb[t * b.OC + oc] = w_taps[t * s.OC + c0 * M + oc].
template <typename A>
XSEP_INLINE void block_weights(const DepthwiseGeometry& s, const DepthwiseGeometry& b, const A* w_taps, i64 c0, A* wb) {
  for (i64 t = 0; t < s.kh * s.kw; ++t)
    for (i64 oc = 0; oc < b.OC; ++oc) wb[t * b.OC + oc] = w_taps[t * s.OC + c0 * s.M + oc];
}

// transpose (depthwise_kernels_impl.h), a vector's worth of src rows at a time, bringing the lines
// of both of next's ranges into L2 in even shares (NextRanges). backward_blocked writes a block's input
// gradient back this way while the next block's grad_output and input are read in: its planes come
// from L3 or memory, and without the prefetch each block began by waiting on its first loads. Zen 4
// EPYC, fp32, batch 8, 2 threads, `retain`, depthwise forward+backward, one process switching the
// prefetch on and off call by call (median of 40, three runs): 19x19x728 1.03-1.13x, 10x10x1024
// 1.03-1.09x, 10x10x1536 1.10-1.15x, 14x14x576 1.04-1.10x, 28x28x192 0.98-1.03x, 5x5 kernels at
// 14x14x480 0.99-1.06x and 7x7x960 1.01-1.02x. The forward, the same way (the next block's input
// while its output goes back), ran within the noise of those runs (0.88-1.12x for the same code).
template <typename T>
void transpose_prefetching(const T* src, i64 rows, i64 cols, i64 lds, T* dst, i64 ldd, NextRanges next) {
  constexpr i64 L = kLanes<Acc<T>>;
  next.spread_over((rows + L - 1) / L);
  for (i64 r0 = 0; r0 < rows; r0 += L) {
    transpose(src + r0 * lds, min_(L, rows - r0), cols, lds, dst + r0, ldd);
    next.step();
  }
}

// The output planes of image n, input channels [c0, c1) (w_taps: the layer's tap-major weights),
// into out (the block's first plane; planes out_plane apart), in T or acc_t (O).
template <typename T, typename O>
void forward_blocked(const DepthwiseGeometry& s, const T* x, const Acc<T>* w_taps, const Acc<T>* bias, O* out,
                     i64 out_plane, i64 n, i64 c0, i64 c1) {
  using A = Acc<T>;
  const DepthwiseGeometry b = block_geometry(s, c0, c1);
  BlockBuffers buf(block_buffer_bytes(b, sizeof(A), sizeof(T)));
  T* xb = buf.take<T>(b.H * b.W * b.C);
  O* yb = buf.take<O>(b.Ho * b.Wo * b.OC);
  A* wb = buf.take<A>(b.kh * b.kw * b.OC);
  transpose(x + (n * s.C + c0) * s.H * s.W, b.C, s.H * s.W, s.H * s.W, xb, b.C);
  block_weights(s, b, w_taps, c0, wb);
  const A* bb = bias != nullptr ? bias + c0 * s.M : nullptr;
  if constexpr (std::is_same_v<O, T>) forward<T>(b, xb, wb, bb, yb, 0, b.Ho * b.Wo, false, false);
  else forward_acc<T>(b, xb, wb, bb, yb, 0, b.Ho * b.Wo, false);
  transpose(yb, b.Ho * b.Wo, b.OC, b.OC, out, out_plane);
}

// Image n, input channels [c0, c1): the input-gradient planes into gi (when not null) and this
// image's weight gradient into gw_taps (tap-major [kh * kw, C * M], the block's columns
// overwritten; when not null).
template <typename T>
void backward_blocked(const DepthwiseGeometry& s, const T* go, const T* x, const Acc<T>* w_taps, T* gi, Acc<T>* gw_taps,
                      i64 n, i64 c0, i64 c1) {
  using A = Acc<T>;
  const DepthwiseGeometry b = block_geometry(s, c0, c1);
  const i64 taps = b.kh * b.kw;
  BlockBuffers buf(block_buffer_bytes(b, sizeof(A), sizeof(T)));
  T* xb = buf.take<T>(b.H * b.W * b.C);
  T* gib = buf.take<T>(b.H * b.W * b.C);
  T* gob = buf.take<T>(b.Ho * b.Wo * b.OC);
  A* wb = buf.take<A>(taps * b.OC);
  A* gwb = buf.take<A>(taps * b.OC);
  transpose(go + (n * s.OC + c0 * s.M) * s.Ho * s.Wo, b.OC, s.Ho * s.Wo, s.Ho * s.Wo, gob, b.OC);
  const bool need_x = gw_taps != nullptr || s.relu_input;
  if (need_x) transpose(x + (n * s.C + c0) * s.H * s.W, b.C, s.H * s.W, s.H * s.W, xb, b.C);
  if (gw_taps != nullptr) {
    for (i64 k = 0; k < taps * b.OC; ++k) gwb[k] = A(0);
    grad_weight<T, T>(b, gob, xb, gwb, 0, b.Ho, /*prefetch=*/false);  // a block in cache
    for (i64 t = 0; t < taps; ++t)
      for (i64 oc = 0; oc < b.OC; ++oc) gw_taps[t * s.OC + c0 * s.M + oc] = gwb[t * b.OC + oc];
  }
  if (gi != nullptr) {
    block_weights(s, b, w_taps, c0, wb);
    grad_input<T, T>(b, gob, wb, need_x ? xb : nullptr, gib, 0, b.H, false);
    // The next block's grad_output and input: the next channels' planes, or the next image's first
    // (the host walks (image, block) items in order; past a thread's last item, planes it does not
    // read, which a prefetch does not mind).
    NextRanges next;
    next.plane[0] = NextPlane::of(go + (n * s.OC + c1 * s.M) * s.Ho * s.Wo, b.OC * s.Ho * s.Wo);
    if (need_x) next.plane[1] = NextPlane::of(x + (n * s.C + c1) * s.H * s.W, b.C * s.H * s.W);
    transpose_prefetching(gib, b.H * b.W, b.C, b.C, gi + (n * s.C + c0) * s.H * s.W, s.H * s.W, next);
  }
}

#if XSEP_VEC_BYTES == 64
// ---------------------------------------------------------------------------------------------
// Shifted rows: float32 planes at unit stride whose output is the input's size (3 x 3, padded 1 on
// each side), computed in place from the plane's own values, no padded copy (see forward_shifted
// in depthwise_nchw_kernels.h). Written for K x K with K / 2 padding; only K = 3 is instantiated.

// The lanes of [s, s + 16) inside [0, n), as a mask.
XSEP_INLINE __mmask16 lanes_inside(i64 s, i64 n) {
  const i64 lo = clamp_(-s, 0, 16), hi = clamp_(n - s, lo, 16);
  return __mmask16(((1u << hi) - 1) & ~((1u << lo) - 1));
}

// The vector D values on (-16 < D < 16) from the start of cur, of the consecutive vectors prev,
// cur, next.
template <int D>
XSEP_INLINE __m512 shifted_by(__m512 prev, __m512 cur, __m512 next) {
  if constexpr (D == 0) return cur;
  else if constexpr (D < 0)
    return _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_castps_si512(cur), _mm512_castps_si512(prev), 16 + D));
  else return _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_castps_si512(next), _mm512_castps_si512(cur), D));
}

// acc += one tap row's products, taps j = J.. in order: tap j reads the row's values j - K / 2 on,
// its lanes whose column that takes outside the row (cols[j] clear) left out.
template <int K, int J = 0>
XSEP_INLINE void shifted_tap_row(__m512& acc, const __m512 (&win)[3], const float* w, const __mmask16* cols) {
  if constexpr (J < K) {
    constexpr int D = J - K / 2;
    const __m512 xs = shifted_by<D>(win[0], win[1], win[2]);
    if constexpr (D == 0) acc = _mm512_fmadd_ps(xs, _mm512_set1_ps(w[J]), acc);
    else acc = _mm512_mask3_fmadd_ps(xs, _mm512_set1_ps(w[J]), acc, cols[J]);
    shifted_tap_row<K, J + 1>(acc, win, w, cols);
  }
}

// One plane of n = H * W values (rows W long) into out: bias + the taps in (i, j) order, each output
// vector at flat position p reading, for tap row i, the vectors at p + (i - K / 2) * W - 16, + 0 and
// + 16 (kept in a window that slides a vector a step: one load a tap row), lanes outside the plane
// loaded as zeros (the rows above and below, never read), those whose tap column falls off their
// row masked out of that tap (cols[v * K + j], see forward_shifted).
template <int K, bool Relu>
void shifted_plane(const float* x, i64 n, i64 W, const float* w, float bias, float* out, const __mmask16* cols) {
  constexpr int R = K / 2;
  float wk[K * K];  // a copy: out may not alias it, so the broadcasts need not be reloaded after stores
  for (int t = 0; t < K * K; ++t) wk[t] = w[t];
  auto load = [&](i64 at) __attribute__((always_inline)) {
    const __m512 v = _mm512_maskz_loadu_ps(lanes_inside(at, n), x + at);
    return Relu ? bit_cast<__m512>(relu(bit_cast<VF>(v))) : v;
  };
  __m512 win[K][3];
#pragma GCC unroll 7
  for (int i = 0; i < K; ++i)
#pragma GCC unroll 3
    for (int u = 0; u < 3; ++u) win[i][u] = load((i - R) * W + 16 * (u - 1));
  const i64 nv = (n + 15) / 16;
  for (i64 v = 0; v < nv; ++v) {
    __m512 acc = _mm512_set1_ps(bias);
#pragma GCC unroll 7
    for (int i = 0; i < K; ++i) shifted_tap_row<K>(acc, win[i], wk + i * K, cols + v * K);
    const i64 p = v * 16;
    if (p + 16 <= n) _mm512_storeu_ps(out + p, acc);
    else _mm512_mask_storeu_ps(out + p, lanes_inside(0, n - p), acc);
#pragma GCC unroll 7
    for (int i = 0; i < K; ++i) {
      win[i][0] = win[i][1];
      win[i][1] = win[i][2];
      win[i][2] = load(p + 32 + (i - R) * W);
    }
  }
}

// The table's forward_shifted: the planes of image n, channels [c0, c1), plane c - c0 at out +
// (c - c0) * out_plane.
void forward_shifted(const DepthwiseGeometry& s, const float* x, const float* w, const float* bias, float* out,
                     i64 out_plane, i64 n, i64 c0, i64 c1) {
  constexpr int K = 3, R = K / 2;
  const i64 plane = s.H * s.W, nv = (plane + 15) / 16;
  // cols[v * K + j]: the lanes of output vector v whose column c has c + j - R inside [0, W).
  // Each lane's column stepped along (16 on, wrapped), no division a lane.
  __mmask16* cols = scratch<__mmask16>(nv * K);
  i64 col[16];
  for (int l = 0; l < 16; ++l) col[l] = l % s.W;
  for (i64 v = 0; v < nv; ++v) {
    for (i64 j = 0; j < K; ++j) {
      unsigned m = 0;
      for (int l = 0; l < 16; ++l) m |= unsigned(col[l] + j - R >= 0 && col[l] + j - R < s.W) << l;
      cols[v * K + j] = __mmask16(m);
    }
    for (int l = 0; l < 16; ++l)
      for (col[l] += 16; col[l] >= s.W;) col[l] -= s.W;
  }
  for (i64 c = c0; c < c1; ++c) {
    const float* xc = x + (n * s.C + c) * plane;
    const float b = bias != nullptr ? bias[c] : 0.0f;
    float* oc = out + (c - c0) * out_plane;
    if (s.relu_input) shifted_plane<K, true>(xc, plane, s.W, w + c * K * K, b, oc, cols);
    else shifted_plane<K, false>(xc, plane, s.W, w + c * K * K, b, oc, cols);
  }
}
#endif

template <typename T>
DepthwiseNchwKernels<T> make_nchw_table() {
  using A = Acc<T>;
  DepthwiseNchwKernels<T> t;
  t.forward = &forward_nchw<T>;
  t.forward_acc = &forward_nchw_acc<T>;
  t.grad_input = &grad_input_nchw<T, T>;
  t.grad_input_acc = &grad_input_nchw<A, T>;
  t.grad_weight = &grad_weight_nchw<T, T>;
  t.grad_weight_acc = &grad_weight_nchw<A, T>;
  t.forward_blocked = &forward_blocked<T, T>;
  t.forward_blocked_acc = &forward_blocked<T, A>;
  t.backward_blocked = &backward_blocked<T>;
#if XSEP_VEC_BYTES == 64
  if constexpr (std::is_same_v<T, float>) t.forward_shifted = &forward_shifted;
#endif
  return t;
}

#undef XSEP_INLINE

}  // namespace XSEP_ISA_NS
