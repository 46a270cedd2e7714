// out += a b^T for a [M, K] and b [N, K] whose rows run over k (pixel-contiguous NCHW planes: the
// weight gradients' product with few channels), in a fixed summation order, without packing. Part
// of depthwise_kernels_impl.h (same instruction-set region, same helpers), kept in its own file.
//
// Why: the row product (row_product_impl.h) packs both operands, a transposing copy of every value
// per k block; with few channels its multiply-adds per packed value are few (M x N / (M + N)), and
// at 147x147 64 -> 128 (Xception's first pointwise layer, NCHW, Zen 4) the packing took longer than
// the product. Here each output element is a dot product of two contiguous rows, vectorised along k.
//
// Order: k in blocks of kNtKBlock from k = 0; within a block, lane l of an element's accumulator
// sums k = l, l + L, ... ascending (chains of kNtKBlock / L, as long as tn_product_impl.h's), the
// lanes are then added in a fixed tree (halves, pairwise), and the block's sum is added to the
// element. Tiles and the rows the host gives each thread only decide which elements run together:
// the same bits whatever the thread count (not those of tn_product_impl.h's order).
//
// Register tile: MR rows of a x NR rows of b, MR x NR accumulators; each k vector loads MR + NR
// vectors for MR x NR multiply-adds.
#if XSEP_VEC_BYTES == 64
constexpr int kNtRows = 4, kNtCols = 6;  // 24 accumulators + 4 + 1 of the 32 registers
#else
constexpr int kNtRows = 3, kNtCols = 3;  // 9 + 3 + 1 of the 16
#endif
constexpr i64 kNtKBlock = 256 * kLanes<float>;

// The sum of v's lanes: halves added pairwise, lane i + h to lane i.
template <typename V>
XSEP_INLINE auto lane_sum(V v) {
  constexpr int L = sizeof(V) / sizeof(v[0]);
  using A = std::remove_reference_t<decltype(v[0])>;
  A t[L];
  __builtin_memcpy(t, &v, sizeof v);
#pragma GCC unroll 8
  for (int h = L / 2; h > 0; h /= 2)
#pragma GCC unroll 16
    for (int i = 0; i < h; ++i) t[i] += t[i + h];
  return t[0];
}

// out[i][j] (ldo apart) += the block's sum over k < kc of a[i][k] b[j][k], for i < rows, j < cols
// (all of MR, NR when Full).
template <bool Full, int MR, int NR, typename A>
XSEP_INLINE void nt_tile(i64 kc, const A* a, i64 lda, const A* b, i64 ldb, A* out, i64 ldo, int rows, int cols) {
  constexpr int L = kLanes<A>;
  using V = Vec<A>;
  V acc[MR][NR] = {};
  auto step = [&](i64 k, int n) __attribute__((always_inline)) {  // k vector at k, n lanes (L: whole)
    V av[MR];
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i)
      av[i] = Full || i < rows ? (n == L ? load(a + i * lda + k) : load_n(a + i * lda + k, n)) : V{};
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) {
      if (!Full && j >= cols) break;
      const V bv = n == L ? load(b + j * ldb + k) : load_n(b + j * ldb + k, n);
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i) acc[i][j] += av[i] * bv;
    }
  };
  i64 k = 0;
  for (; k + L <= kc; k += L) step(k, L);
  if (k < kc) step(k, int(kc - k));
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    if (!Full && i >= rows) break;
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) {
      if (!Full && j >= cols) break;
      out[i * ldo + j] += lane_sum(acc[i][j]);
    }
  }
}

// Rows [m0, m1) of out [M, N] (row stride ldo) += a b^T over k < K (see the top of this file): a's
// row m at a + m * lda, b's row n at b + n * ldb, both contiguous over k.
template <typename A>
void add_nt_product(i64 K, i64 N, const A* a, i64 lda, const A* b, i64 ldb, A* out, i64 ldo, i64 m0, i64 m1) {
  constexpr i64 KB = kNtKBlock * 4 / i64(sizeof(A));  // the same chain length in float64
  for (i64 k0 = 0; k0 < K; k0 += KB) {
    const i64 kc = min_(KB, K - k0);
    // b's tile of NR rows outer, stays in L1/L2 while the thread's rows of a pass it.
    for (i64 n = 0; n < N; n += kNtCols) {
      const int cols = int(min_(kNtCols, N - n));
      for (i64 m = m0; m < m1; m += kNtRows) {
        const int rows = int(min_(kNtRows, m1 - m));
        const A* ap = a + m * lda + k0;
        const A* bp = b + n * ldb + k0;
        A* o = out + m * ldo + n;
        if (rows == kNtRows && cols == kNtCols)
          nt_tile<true, kNtRows, kNtCols>(kc, ap, lda, bp, ldb, o, ldo, rows, cols);
        else nt_tile<false, kNtRows, kNtCols>(kc, ap, lda, bp, ldb, o, ldo, rows, cols);
      }
    }
  }
}
