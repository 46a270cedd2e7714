// out += a^T b, the weight gradients' product (a: [K, M] rows, b: [K, N] rows, K running over
// pixels), in a fixed summation order. Part of depthwise_kernels_impl.h (same instruction-set
// region, same helpers), kept in its own file.
//
// Order: k runs in blocks of kTnKBlock from k = 0; within a block every output element is one
// chain of multiply-adds over k ascending, from zero, and the block's sum is then added to the
// element. Register tiles, packing and the row ranges the host gives each thread only decide which
// chains run together, never an element's order: results are the same bits whatever the thread
// count. (BLAS splits a long reduction across its threads, so the host feeds it fixed blocks of 512
// rows instead: short products, which ran Xception's pointwise weight gradients at 0.67-1.06x of
// torch's own on the AMD EPYC (Zen 4, fp32, batch 8), against 0.80-1.22x for this kernel, the three
// interleaved in one process.) Blocks keep the rounding error of long sums near BLAS's (one chain
// over all 1000 k of a test had twice its error).
//
// Register tile: MR rows of out x kTnVectors vectors of columns; each k loads the vectors of b's
// row and broadcasts MR values of a's row (MR * kTnVectors accumulators: 24 of the 32 AVX-512
// registers, 12 of the 16 otherwise). Cache blocks: kTnKBlock values of k, and within them
// kTnNBlock columns, whose b block the thread packs once into panels of the tile's width (zero
// beyond N) that every row tile of its range then reads from L1/L2. a is read in place: packing its
// panels too ran 10-25% slower (AMD EPYC Zen 4, Xception's pointwise weight gradients), the copy
// costing more than a panel's reuse (one tile per b panel) saves.
//
// Prefetch: where the operands come from memory (channels-last weight gradients of large planes,
// 88 MB each at 147x147x128), each k of a tile also prefetches the next cache line of the b values
// packed next (TnNext, walked in their order), so that the next packing reads from cache, not
// memory. Zen 4 EPYC, fp32, batch 8, 2 threads, Xception's channels-last pointwise weight gradients
// (one process, interleaved, min of 6): 147x147 128 -> 128 160 -> 200 GFLOP/s, 64 -> 128 155 -> 195,
// 74x74 1.12x, 37x37 and smaller 1.00-1.04x (oneDNN's: 205, 190, ~210, ~205); the AVX2 build on the
// same machine 1.00-1.13x. A walk by columns of lines instead ran ~15% slower; prefetching a's
// rows further ahead, or both ends of a tile's values, gained nothing once b's were prefetched.
//
// b in place: where tn_b_in_place (depthwise_kernels.h) and b's rows are at most kTnInPlaceColumns
// values wide and whole panels, the tiles read b's rows where they lie (the same values in the same
// order: the same bits), and the prefetch above brings the next block's rows for them instead of
// for the packing. 2-core Intel Xeon, fp32, 2 threads, 2026-12-06, alternate processes, median of
// 3, channels-last pointwise weight gradients, packed -> in place (GFLOP/s): 8x147x147 128 -> 128
// 205 -> 220, 128 -> 64 186 -> 204, 64 -> 128 179 -> 197, 1x147x147 128 -> 128 270 -> 316, MobileNet's
// 112x112 16 -> 96 163 -> 237 and 32 -> 16 172 -> 221; in cache (XSEP_CPU_WEIGHT_GEMM=xsep) 1x40x40
// 128 -> 128 276 -> 316, 8x28x28 96 -> 64 209 -> 276; 74x74 128 -> 256 209 -> 217 (noise). Rows of
// 256 values (74x74 256 -> 256) ran 2-5% slower in place: wider rows stay packed.
//
// a's next block: the tiles read a strip of kTnRows values of each of a's rows, rows M apart, and
// the first tile to reach a line takes it from memory. Each k of a tile also prefetches, into L2,
// a line of the thread's a values of the next k block (TnNext::a). 2-core Intel Xeon, fp32, batch
// 8, 2 threads, 2026-12-06, channels-last pointwise weight gradients on this kernel
// (XSEP_CPU_WEIGHT_GEMM=xsep), alternate processes, without -> with (GFLOP/s): 37x37 128 -> 512
// 290 -> 296, 128 -> 640 235 -> 300, 128 -> 728 145 -> 283, 128 -> 1024 175 -> 270, 256 -> 728
// 241 -> 282, 19x19 728 -> 728 270 -> 290, 74x74 128 -> 256 224 -> 292-322, 147x147 128 -> 128
// 220 -> 240-255, 64 -> 128 168 -> 220, 56x56 24 -> 144 157 -> 185; products of at most 1600
// pixels, whose a stays in L2, 0.92-1.08x (median of 5). The fall without it past 512 rows (2 KiB
// apart) fits the hardware stride prefetchers' reach. Into L1 instead: 0-10% slower. The AVX2 build
// (XSEP_CPU_ISA=avx2, same machine, median of 3): 37x37 128 -> 728 141 -> 180, 74x74 128 -> 256 160
// -> 170, 19x19 728 -> 728 180 -> 185, 147x147 128 -> 128 and 10x10 1024 -> 1536 even.

#if XSEP_VEC_BYTES == 64
constexpr int kTnRows = 12;
#else
constexpr int kTnRows = 6;
#endif
constexpr int kTnVectors = 2;
constexpr i64 kTnKBlock = 256, kTnNBlock = 256, kTnPrefetch = 16, kTnInPlaceColumns = 128;
static_assert(kTnKBlock * kTnNBlock <= kTnWorkspace, "tn_product's packing buffer");

// Lines add_tn_product reads after the current block, rows ld apart of `cols` values each, walked
// in order, one cache line a k of each tile until none is left, into L1 (Locality 3) or L2 (2).
template <typename A, int Locality>
struct TnLines {
  static constexpr i64 kLine = 64 / i64(sizeof(A));
  const A* row = nullptr;
  i64 ld = 0, cols = 0, rows = 0, col = 0;
  XSEP_INLINE void prefetch_line() {
    if (rows == 0) return;
    __builtin_prefetch(row + col, 0, Locality);
    col += kLine;
    if (col >= cols) col = 0, row += ld, --rows;
  }
};

// What the tiles prefetch: the b values packed (or read in place) next, and the thread's a values
// of the next k block.
template <typename A>
struct TnNext {
  TnLines<A, 3> b;
  TnLines<A, 2> a;
  XSEP_INLINE void prefetch_line() {
    b.prefetch_line();
    a.prefetch_line();
  }
};

// out[i][0, n) (ldo apart, i < MR) += the sum over k < kc of ap[k * as + i] * bp[k * bs + 0, n), W =
// kTnVectors vectors: a b panel (packed, bs = W, or b's rows in place, bs = ldb; see above), a's
// rows `as` apart; the first n <= W columns are stored. Each k prefetches the next line of `next`.
template <int MR, typename A>
XSEP_INLINE void tn_tile(i64 kc, const A* ap, i64 as, const A* bp, i64 bs, A* out, i64 ldo, int n, TnNext<A>& next) {
  constexpr int L = kLanes<A>, NV = kTnVectors, W = NV * L;
  using V = Vec<A>;
  V acc[MR][NV] = {};
  TnNext<A> nx = next;  // in registers for the loop
  for (i64 k = 0; k < kc; ++k) {
    const A* ak = ap + k * as;
    // a's rows, kTnPrefetch ahead: the tiles read them a row apart, from memory (2-5% on Xception's
    // pointwise weight gradients, Zen 4, in one process).
    __builtin_prefetch(ak + kTnPrefetch * as);
    nx.prefetch_line();
    V bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = load(bp + k * bs + v * L);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const V av = splat<V>(ak[i]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[i][v] += av * bv[v];
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
    A* o = out + i * ldo;
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      const int lanes = n - v * L;
      if (lanes >= L) store(o + v * L, load(o + v * L) + acc[i][v]);
      else if (lanes > 0) store_n(o + v * L, load_n(o + v * L, lanes) + acc[i][v], lanes);
    }
  }
  next = nx;
}

// A column block's b panels: column c's panel at p + c * col_step, its rows bs apart (packed:
// col_step = kc, bs = W; in place: col_step = 1, bs = ldb).
template <typename A>
struct TnPanels {
  const A* p;
  i64 col_step, bs;
};

// MR rows of out, all the panels of a column block of nc columns.
template <int MR, typename A>
XSEP_INLINE void tn_rows(i64 kc, const A* ap, i64 as, const TnPanels<A>& b, A* out, i64 ldo, i64 nc, TnNext<A>& next) {
  constexpr int W = kTnVectors * kLanes<A>;
  for (i64 c = 0; c < nc; c += W)
    tn_tile<MR>(kc, ap, as, b.p + c * b.col_step, b.bs, out + c, ldo, int(min_(W, nc - c)), next);
}

// b's rows [0, kc), columns [0, nc) packed into panels of W columns: panel p at bp + p * W * kc,
// bp[p * W * kc + k * W + j] = b[k][p * W + j], zero past nc.
template <typename A>
void tn_pack_b(i64 kc, i64 nc, const A* b, i64 ldb, A* bp) {
  constexpr int L = kLanes<A>, W = kTnVectors * L;
  for (i64 c = 0; c < nc; c += W) {
    A* panel = bp + c * kc;
    const int w = int(min_(W, nc - c));
    for (i64 k = 0; k < kc; ++k) {
      const A* src = b + k * ldb + c;
#pragma GCC unroll 4
      for (int v = 0; v < kTnVectors; ++v) {
        const int lanes = w - v * L;
        store(panel + k * W + v * L, lanes >= L  ? load(src + v * L)
                                     : lanes > 0 ? load_n(src + v * L, lanes)
                                                 : Vec<A>{});
      }
    }
  }
}

// tn_rows for a row tile of `rows` < kTnRows rows (MR fixed at compile time).
template <int MR, typename A>
XSEP_INLINE void tn_rows_tail(int rows, i64 kc, const A* ap, i64 as, const TnPanels<A>& b, A* out, i64 ldo, i64 nc,
                              TnNext<A>& next) {
  if constexpr (MR > 0) {
    if (rows == MR) return tn_rows<MR>(kc, ap, as, b, out, ldo, nc, next);
    tn_rows_tail<MR - 1>(rows, kc, ap, as, b, out, ldo, nc, next);
  }
}

// Whether add_tn_product reads b's rows in place for a product N columns wide (see above).
template <typename A>
bool tn_reads_b_in_place(i64 N) {
  return tn_b_in_place() && N <= kTnInPlaceColumns && N % (kTnVectors * kLanes<A>) == 0;
}

// Rows [m0, m1) of out [M, N] (row stride ldo) += a^T b over k < K (see the top of this file);
// work: kTnWorkspace values of the caller's, for the packed blocks.
template <typename A>
void add_tn_product(i64 K, i64 N, const A* a, i64 lda, const A* b, i64 ldb, A* out, i64 ldo, i64 m0, i64 m1, A* work) {
  constexpr int W = kTnVectors * kLanes<A>;
  A* bpack = work;
  const bool in_place = tn_reads_b_in_place<A>(N);
  for (i64 k0 = 0; k0 < K; k0 += kTnKBlock) {
    const i64 kc = min_(kTnKBlock, K - k0);
    for (i64 n0 = 0; n0 < N; n0 += kTnNBlock) {
      const i64 nc = min_(kTnNBlock, N - n0);
      if (!in_place) tn_pack_b(kc, nc, b + k0 * ldb + n0, ldb, bpack);
      const TnPanels<A> panels = in_place ? TnPanels<A>{b + k0 * ldb + n0, 1, ldb} : TnPanels<A>{bpack, kc, W};
      // What tn_pack_b (or, in place, the tiles) reads next: this k block's next columns, else the
      // next k block's first.
      TnNext<A> next;
      next.b.ld = ldb;
      if (n0 + nc < N) {
        next.b.row = b + k0 * ldb + n0 + nc, next.b.rows = kc, next.b.cols = min_(kTnNBlock, N - n0 - nc);
      } else if (k0 + kc < K) {
        next.b.row = b + (k0 + kc) * ldb, next.b.rows = min_(kTnKBlock, K - k0 - kc), next.b.cols = min_(kTnNBlock, N);
      }
      if (n0 == 0 && k0 + kc < K) {  // a's next block: once, during the first column block
        next.a.ld = lda;
        next.a.row = a + (k0 + kc) * lda + m0, next.a.rows = min_(kTnKBlock, K - k0 - kc), next.a.cols = m1 - m0;
      }
      for (i64 m = m0; m < m1; m += kTnRows) {
        const int rows = int(min_(kTnRows, m1 - m));
        const A* ap = a + k0 * lda + m;
        A* o = out + m * ldo + n0;
        if (rows == kTnRows) tn_rows<kTnRows>(kc, ap, lda, panels, o, ldo, nc, next);
        else tn_rows_tail<kTnRows - 1>(rows, kc, ap, lda, panels, o, ldo, nc, next);
      }
    }
  }
}
