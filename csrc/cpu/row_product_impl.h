// out = a w^T (+ bias), the fused op's pointwise product written straight into the output's rows
// (a: [M, K] rows, the depthwise output of a block of pixels; w: the pointwise weight [N, K],
// packed once per call into panels). Part of depthwise_kernels_impl.h (same instruction-set
// region, same helpers), kept in its own file.
//
// Why: oneDNN (torch's own GEMM on AMD) cannot write into memory it is given, so a tiled product
// through it pays a copy of every result (half the time of the depthwise itself at 147x147), and
// calling it per tile re-packs the weight. Here each thread runs depthwise then product on its own
// block of pixels, the block's depthwise output never leaving L2.
//
// Order: every output element is one chain, bias (or zero) then k ascending: the same bits whatever
// the threads and blocks.
//
// Register tile: MR rows x kRpVectors vectors of columns, as in tn_product_impl.h (each k loads the
// panel's vectors and broadcasts MR values of a). The host's block of rows (its depthwise output,
// in L2) is first packed into tiles of MR rows, k-major (MR values of one k side by side), then
// multiplied by each panel in turn, so a panel (K x W values) is read from L2 by every row tile of
// the block. Packing a: read in place, the MR rows of a tile lie lda apart, 4 KB apart in float32
// with 1024 channels, and share cache sets: 10x10 1024->1536 ran 10% slower than with half the
// block (Zen 5, fp32, batch 8), a cost packing does not have. Rows whose stride is not a multiple
// of 2 KB are read in place instead (row_product_packs, depthwise_kernels.h): packing a tile
// costs a pass over it for only N / W panels of products, a large share where the output is
// narrow. Zen 4 EPYC, fp32, batch 8, 2 threads, `retain`, one process switching it call by call
// (medians of 10, ratios in place / packed): the fused forward 147x147 64->128 1.06-1.08x, 128->128
// 1.08x, 74x74 128->256 1.04x, MobileNet's 112x112 32->16 1.19x, 56x56 144->24 1.16x, 96->24 1.22x,
// 28x28 192->32 1.24x, 14x14 576->96 1.11x; 37x37 256->728 and 728->728, 19x19 728->1024 and
// 10x10 1536->2048 0.99-1.03x. The same bits: each output's chain is unchanged.

#if XSEP_VEC_BYTES == 64
constexpr int kRpRows = 12;  // 24 accumulators of the 32 AVX-512 registers
#else
constexpr int kRpRows = 6;  // 12 of the 16 otherwise
#endif
static_assert(::xsep::cpu::kRowProductTileRows % kRpRows == 0, "hosts split rows in multiples of the tile");
constexpr int kRpVectors = 2;
static_assert(::xsep::cpu::kRowProductStageValues >= kLanes<float>, "row_product_streamed's stage: a vector a row");

// Pixel-contiguous operands (NCHW's weight gradients: sk == 1) are packed by in-register
// transposes (transpose) on AVX-512, element by element otherwise. AMD EPYC (Zen 4, fp32, batch
// 8, 2 threads), NCHW 19x19 728 -> 728: packing went from 14% to 7% of the product's samples
// (perf); interleaved timings of Xception's 37x37 728 -> 728, 19x19 and 10x10 weight gradients
// 1.04-1.07x in one run, 0.96-1.08x in two others (this machine's noise). With AVX2 0.93-1.01x:
// its masked stores (a tile's 6 of 8 lanes) are slow on AMD; whole-vector stores spilling into
// the next k's slots measured no better on either.
constexpr bool kRpTransposeRows = XSEP_VEC_BYTES == 64;

// w [N, K] (element (n, k) at w[n * sn + k * sk]) into panels of W = kRpVectors vectors of columns:
// panel p at packed + p * K * W, packed[p * K * W + k * W + j] = w[p * W + j][k], zero past N.
template <typename A>
void pack_row_product_weight(i64 K, i64 N, const A* w, i64 sn, i64 sk, A* packed) {
  constexpr int W = kRpVectors * kLanes<A>;
  for (i64 p = 0; p * W < N; ++p) {
    A* panel = packed + p * K * W;
    const int cols = int(min_(W, N - p * W));
    const A* src = w + p * W * sn;
    if (sk == 1 && kRpTransposeRows) {  // w's rows k-contiguous
      transpose(src, cols, K, sn, panel, i64(W));
      for (i64 k = 0; k < K && cols < W; ++k)
        for (int j = cols; j < W; ++j) panel[k * W + j] = A(0);
    } else {
      for (i64 k = 0; k < K; ++k)
        for (int j = 0; j < W; ++j) panel[k * W + j] = j < cols ? src[j * sn + k * sk] : A(0);
    }
  }
}

// MR rows of out (ldo apart), the n <= W columns of one panel: the bias (a column's, bias[j], or a
// row's, row_bias[i], or zero) + a packed tile of a (ap[k * kRpRows + i] = a[i][k]; InPlace, a's
// own rows lda apart, ap[i * lda + k]) times the panel, over all K; with `add`, that sum (from
// zero) added to out instead. With `stream` (float32 only, no `add`, every vector of out aligned),
// whole vectors are written with non-temporal stores. row_product_sums: those sums, into acc
// (acc[i][v]: row i, the panel's columns [v * L, v * L + L)), for other ways of writing them.
template <int MR, bool InPlace, typename A>
XSEP_INLINE void row_product_sums(i64 K, const A* ap, i64 lda, const A* panel, const A* bias, const A* row_bias, int n,
                                  Vec<A> (&acc)[MR][kRpVectors]) {
  constexpr int L = kLanes<A>, NV = kRpVectors, W = NV * L;
  using V = Vec<A>;
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) {
    const int lanes = n - v * L;
    const V b = bias == nullptr ? V{} : lanes >= L ? load(bias + v * L) : lanes > 0 ? load_n(bias + v * L, lanes) : V{};
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) acc[i][v] = row_bias == nullptr ? b : splat<V>(row_bias[i]);
  }
  for (i64 k = 0; k < K; ++k) {
    V bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = load(panel + k * W + v * L);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const V av = splat<V>(InPlace ? ap[i * lda + k] : ap[k * kRpRows + i]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[i][v] += av * bv[v];
    }
  }
}

template <int MR, bool InPlace, typename A>
XSEP_INLINE void row_product_tile(i64 K, const A* ap, i64 lda, const A* panel, const A* bias, const A* row_bias, A* out,
                                  i64 ldo, int n, bool add, bool stream) {
  constexpr int L = kLanes<A>, NV = kRpVectors;
  Vec<A> acc[MR][NV];
  row_product_sums<MR, InPlace>(K, ap, lda, panel, bias, row_bias, n, acc);
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      const int lanes = n - v * L;
      A* o = out + i * ldo + v * L;
#if XSEP_VEC_BYTES >= 32
      if constexpr (std::is_same_v<A, float>) {
        if (stream && lanes >= L) {  // the caller checked: no `add`, aligned
          store_stream(o, acc[i][v]);
          continue;
        }
      }
#endif
      if (lanes >= L) store(o, add ? load(o) + acc[i][v] : acc[i][v]);
      else if (lanes > 0) store_n(o, add ? load_n(o, lanes) + acc[i][v] : acc[i][v], lanes);
    }
  }
}

// f(IntTag<rows>{}) for a row count 0 < rows <= MR known only at run time.
template <int MR, typename F>
XSEP_INLINE void with_tile_rows(int rows, F&& f) {
  if constexpr (MR > 0) {
    if (rows == MR) return f(IntTag<MR>{});
    with_tile_rows<MR - 1>(rows, f);
  }
}

// Rows [0, M) in register tiles: f(IntTag<kRpRows>{}, m) for each whole tile, then
// f(IntTag<M - m>{}, m) for the rows left.
template <typename F>
XSEP_INLINE void for_tile_rows(i64 M, F&& f) {
  i64 m = 0;
  for (; m + kRpRows <= M; m += kRpRows) f(IntTag<kRpRows>{}, m);
  if (m < M) with_tile_rows<kRpRows - 1>(int(M - m), [&](auto rows) __attribute__((always_inline)) { f(rows, m); });
}

// a [M, K] (element (m, k) at a[m * sm + k * sk]) packed into tiles of kRpRows rows, k-major:
// tile t at ap + t * kRpRows * K, ap[t * kRpRows * K + k * kRpRows + i] = a[t * kRpRows + i][k]
// (a last tile's missing rows unset, never read).
template <typename A>
void pack_row_product_rows(i64 M, i64 K, const A* a, i64 sm, i64 sk, A* ap) {
  for (i64 m = 0; m < M; m += kRpRows) {
    A* tile = ap + m * K;
    const int rows = int(min_(kRpRows, M - m));
    if (sk == 1 && kRpTransposeRows) {  // k-contiguous rows
      transpose(a + m * sm, i64(rows), K, sm, tile, i64(kRpRows));
      continue;
    }
    for (int i = 0; i < rows; ++i) {
      const A* src = a + (m + i) * sm;
      for (i64 k = 0; k < K; ++k) tile[k * kRpRows + i] = src[k * sk];
    }
  }
}

// out[i][0, N) = the bias (bias[j] per column, or row_bias[i] per row, or zero) + sum_k a[i][k]
// w[.][k] for i < M (out rows ldo apart), a packed by pack_row_product_rows, w by
// pack_row_product_weight; with `add` (no bias), out[i][j] += that sum, summed from zero. One
// thread: the host gives each its own rows. `stream` as in row_product_tile (the caller fences).
template <bool InPlace = false, typename A>
void row_product_panels(i64 M, i64 K, i64 N, const A* ap, const A* packed, const A* bias, const A* row_bias, A* out,
                        i64 ldo, bool add, bool stream, i64 lda = 0) {
  constexpr int W = kRpVectors * kLanes<A>;
  // A tile's rows: packed, kRpRows * K values on; in place, kRpRows rows of a.
  const i64 tile_step = InPlace ? lda : K;
  for (i64 p = 0; p * W < N; ++p) {
    const A* panel = packed + p * K * W;
    const A* b = bias == nullptr ? nullptr : bias + p * W;
    const int n = int(min_(W, N - p * W));
    for_tile_rows(M, [&](auto rows, i64 m) __attribute__((always_inline)) {
      constexpr int MR = decltype(rows)::value;
      const A* rb = row_bias == nullptr ? nullptr : row_bias + m;
      row_product_tile<MR, InPlace>(K, ap + m * tile_step, lda, panel, b, rb, out + m * ldo + p * W, ldo, n, add,
                                    stream);
    });
  }
}

#if XSEP_VEC_BYTES == 64
// Rows [m, m + MR) of row_product_streamed's panel p (columns [col, col + n)). A row starting r
// values into an output vector (64 bytes: a cache line) writes lines of its values shifted by r
// in registers: line l = columns [col - r + 16 l, + 16), from the last vector of the previous
// panel (staged, stage + i * 16) and this panel's two. Whole lines go out with non-temporal stores;
// partial ones (a row's first, whose start others write, and its last) with masked plain stores;
// a non-last panel's partial third line waits in the stage (its vector) for the next panel.
template <int MR>
XSEP_INLINE void row_product_streamed_tile(i64 K, const float* ap, const float* panel, const float* row_bias,
                                           float* out, i64 ldo, i64 col, int n, bool first, bool last, float* stage) {
  constexpr int L = kLanes<float>, NV = kRpVectors;
  static_assert(NV == 2, "three lines a panel");
  VF acc[MR][NV];
  row_product_sums<MR, false>(K, ap, i64(0), panel, static_cast<const float*>(nullptr), row_bias, n, acc);
  const __m512i lanes = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
    float* row = out + i * ldo + col;
    float* s = stage + i * ::xsep::cpu::kRowProductStageValues;
    const int r = int(reinterpret_cast<unsigned long>(row) / sizeof(float) % L);
    const __m512i idx = _mm512_add_epi32(lanes, _mm512_set1_epi32(L - r));  // [a, b]'s values L - r on
    const __m512 v0 = bit_cast<__m512>(acc[i][0]), v1 = bit_cast<__m512>(acc[i][1]);
    const __m512 prev = first ? _mm512_setzero_ps() : _mm512_loadu_ps(s);
    const __m512 line[3] = {_mm512_permutex2var_ps(prev, idx, v0), _mm512_permutex2var_ps(v0, idx, v1),
                            _mm512_permutex2var_ps(v1, idx, _mm512_setzero_ps())};
    float* at = row - r;  // line-aligned
    const int valid = r + n;
#pragma GCC unroll 3
    for (int l = 0; l < 3; ++l) {
      const int lo = first && l == 0 ? r : 0, hi = int(min_(i64(L), i64(valid - l * L)));
      if (lo == 0 && hi == L) store_stream(at + l * L, bit_cast<VF>(line[l]));
      else if (hi > lo && (l == 0 || last))
        _mm512_mask_storeu_ps(at + l * L, __mmask16(((1u << hi) - 1) & ~((1u << lo) - 1)), line[l]);
    }
    if (!last) _mm512_storeu_ps(s, v1);  // the next panel's prev
  }
}

// out[i][0, N) = row_bias[i] (or zero) + the packed rows times the panels, as row_product_packed,
// into rows at any alignment (the NCHW forward's planes), with non-temporal stores on every whole
// cache line (row_product_streamed_tile; `stage`: kRowProductStageValues values a row, one
// thread's), complete on return. Panels in chunks of about kRpStreamChunkBytes (4 to 16 panels, in
// L2), each row tile taking a chunk's panels in turn, so that a row's stores run along it 0.5-2 KB
// at a time: against panel after panel over all rows (128 B a row at a time, row_product_packed's
// order), Zen 4, fp32, batch 8, `retain`, 74x74 128 -> 256 1.03-1.04x, 147x147 64 -> 128 within
// noise. The shift in registers is what pays: lines assembled in the stage instead (unaligned
// stores, then aligned loads that straddle them) ran 0.90-0.96x of plain stores there.
inline constexpr i64 kRpStreamChunkBytes = 256 * 1024;
inline void row_product_streamed(i64 M, i64 K, i64 N, const float* ap, const float* packed, const float* row_bias,
                                 float* out, i64 ldo, float* stage) {
  constexpr int W = kRpVectors * kLanes<float>;
  const i64 panels = (N + W - 1) / W;
  const i64 chunk = clamp_(kRpStreamChunkBytes / (K * W * i64(sizeof(float))), i64(4), i64(16));
  for (i64 p0 = 0; p0 < panels; p0 += chunk) {
    const i64 p1 = min_(panels, p0 + chunk);
    for_tile_rows(M, [&](auto rows, i64 m) __attribute__((always_inline)) {
      constexpr int MR = decltype(rows)::value;
      const float* rb = row_bias == nullptr ? nullptr : row_bias + m;
      for (i64 p = p0; p < p1; ++p)
        row_product_streamed_tile<MR>(K, ap + m * K, packed + p * K * W, rb, out + m * ldo, ldo, p * W,
                                      int(min_(W, N - p * W)), p == 0, p + 1 == panels,
                                      stage + m * ::xsep::cpu::kRowProductStageValues);
    });
  }
  _mm_sfence();  // weakly ordered: complete them before the output is read
}
#endif

// The table's row_product_packed: ordinary stores.
template <typename A>
void row_product_packed(i64 M, i64 K, i64 N, const A* ap, const A* packed, const A* bias, const A* row_bias, A* out,
                        i64 ldo, bool add) {
  row_product_panels(M, K, N, ap, packed, bias, row_bias, out, ldo, add, false);
}

// The same with a [M, K] rows lda apart, packed first into work (row_product_work(M, K) values)
// where row_product_packs, else read in place;
// with stream_out, float32 rows whose vectors are aligned (streamable) are written with
// non-temporal stores (complete on return).
template <typename A>
void row_product(i64 M, i64 K, i64 N, const A* a, i64 lda, const A* packed, const A* bias, A* out, i64 ldo, A* work,
                 bool stream_out) {
  bool stream = false;
#if XSEP_VEC_BYTES >= 32
  if constexpr (std::is_same_v<A, float>) stream = stream_out && streamable(out, ldo);
#endif
  if (::xsep::cpu::row_product_packs(lda, i64(sizeof(A)))) {
    pack_row_product_rows(M, K, a, lda, i64(1), work);
    row_product_panels(M, K, N, work, packed, bias, static_cast<const A*>(nullptr), out, ldo, false, stream);
  } else {
    row_product_panels<true>(M, K, N, a, packed, bias, static_cast<const A*>(nullptr), out, ldo, false, stream, lda);
  }
#if XSEP_VEC_BYTES >= 32
  if (stream) _mm_sfence();  // weakly ordered: complete them before the output is read
#endif
  (void)stream_out;
}
