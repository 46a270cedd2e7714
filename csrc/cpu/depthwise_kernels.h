// Interface between the CPU host code (argument checks, layout, threading, GEMMs) and the
// vectorised inner loops, which are compiled once per instruction set (isa_*.cpp) and picked at
// run time. Everything here is channels-last (NHWC) with raw pointers: the host makes tensors
// contiguous in that layout before calling.
#pragma once

#include <cstdint>
#include <memory>

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "common/acc_type.h"
#include "common/geometry.h"

namespace xsep::cpu {

// Values of scratch memory add_tn_product takes (its packed block of b).
inline constexpr int64_t kTnWorkspace = 256 * 256;
// The rows of row_product's largest register tile (AVX-512; AVX2's and the baseline's are half):
// hosts split rows between threads in multiples of it, where packed tiles of a start.
inline constexpr int64_t kRowProductTileRows = 12;
// Values of row_product_streamed's stage per row: one AVX-512 vector.
inline constexpr int64_t kRowProductStageValues = 16;
// Values of scratch memory row_product takes for M rows of K values (a packed in tiles).
inline constexpr int64_t row_product_work(int64_t M, int64_t K) {
  return (M + kRowProductTileRows - 1) / kRowProductTileRows * kRowProductTileRows * K;
}
// Whether row_product packs a's rows (lda values of value_bytes apart) into that scratch memory:
// where the stride is a multiple of 2 KB, which would put a register tile's rows in at most two
// positions of the L1's 4 KB span of sets (1024 channels in float32: all in one). Elsewhere it reads
// them in place and takes no scratch memory (row_product_impl.h).
inline constexpr int64_t kRowProductPackedRowBytes = 2048;
inline constexpr bool row_product_packs(int64_t lda, int64_t value_bytes) {
  return (lda * value_bytes) % kRowProductPackedRowBytes == 0;
}
// row_product's scratch memory for up to M rows of K values of type A, lda apart: null where it
// reads them in place.
template <typename A>
std::unique_ptr<A[]> row_product_workspace(int64_t M, int64_t K, int64_t lda) {
  return std::unique_ptr<A[]>(row_product_packs(lda, int64_t(sizeof(A))) ? new A[row_product_work(M, K)] : nullptr);
}

// Weights are passed tap-major, already converted to acc_t: w[(i * kw + j) * OC + oc].
// Pixel p means (n * Ho + ho) * Wo + wo; output row r means n * Ho + ho; input row r means n * H + h.
template <typename T>
struct DepthwiseKernels {
  using acc_t = Acc<T>;

  // out[p - p0][oc] = sum_taps act_in(x) * w (+ bias[oc] when bias != nullptr), p in [p0, p1).
  // stream_out: write float outputs with non-temporal stores where every pixel's vectors are
  // aligned (stream_output, host.h); the call returns with them complete (sfence). prefetch: rows
  // taken in runs bring the next output row's newest input row into L2 (prefetch_rows, host.h).
  void (*forward)(const DepthwiseGeometry&, const T* x, const acc_t* w, const acc_t* bias, T* out, int64_t p0,
                  int64_t p1, bool stream_out, bool prefetch);
  // Same, written in acc_t: the fused kernel's tile buffer.
  void (*forward_acc)(const DepthwiseGeometry&, const T* x, const acc_t* w, const acc_t* bias, acc_t* out, int64_t p0,
                      int64_t p1, bool prefetch);

  // gi[n, h, :, :] for input rows r in [r0, r1) (overwrites); x is read only when relu_input
  // (gradient masked where x <= 0). go is [N, Ho, Wo, OC] of type T or acc_t. stream_out as in forward.
  void (*grad_input)(const DepthwiseGeometry&, const T* go, const acc_t* w, const T* x, T* gi, int64_t r0, int64_t r1,
                     bool stream_out);
  void (*grad_input_acc)(const DepthwiseGeometry&, const acc_t* go, const acc_t* w, const T* x, T* gi, int64_t r0,
                         int64_t r1, bool stream_out);

  // gw[(i * kw + j) * OC + oc] += sum over output rows r in [r0, r1) of go * act_in(x). prefetch:
  // bring each next output row's go and newest input row into L2 while a row computes (operands
  // larger than the caches: prefetch_rows, host.h); the same results either way.
  void (*grad_weight)(const DepthwiseGeometry&, const T* go, const T* x, acc_t* gw, int64_t r0, int64_t r1,
                      bool prefetch);
  void (*grad_weight_acc)(const DepthwiseGeometry&, const acc_t* go, const T* x, acc_t* gw, int64_t r0, int64_t r1,
                          bool prefetch);

  // Elementwise helpers on contiguous runs of n values.
  void (*to_acc)(const T* src, acc_t* dst, int64_t n);
  void (*from_acc)(const acc_t* src, T* dst, int64_t n);
  // dst = act(src); dst == src allowed.
  void (*activation)(Activation act, const acc_t* src, acc_t* dst, int64_t n);
  // grad *= act'(pre), pre being the value before the activation.
  void (*activation_grad)(Activation act, const acc_t* pre, acc_t* grad, int64_t n);
  // dst[c] += src[c] for c < n (the deterministic reduction of per-chunk partial sums).
  void (*add_into)(const acc_t* src, acc_t* dst, int64_t n);
  // Rows [m0, m1) of out [M, N] (row stride ldo) += a^T b, a [K, M] and b [K, N] (row strides lda,
  // ldb): the weight gradients' product in an order fixed by K alone (tn_product_impl.h); work:
  // kTnWorkspace values for the caller's thread.
  void (*add_tn_product)(int64_t K, int64_t N, const acc_t* a, int64_t lda, const acc_t* b, int64_t ldb, acc_t* out,
                         int64_t ldo, int64_t m0, int64_t m1, acc_t* work);
  // Whether add_tn_product reads b's rows in place for a product N columns wide (tn_b_in_place).
  bool (*tn_reads_b_in_place)(int64_t N);
  // Rows [m0, m1) of out [M, N] (row stride ldo) += a b^T, a [M, K] and b [N, K] rows contiguous over
  // k (row strides lda, ldb): the same product for pixel-contiguous operands, unpacked, in an order
  // fixed by K alone (nt_product_impl.h).
  void (*add_nt_product)(int64_t K, int64_t N, const acc_t* a, int64_t lda, const acc_t* b, int64_t ldb, acc_t* out,
                         int64_t ldo, int64_t m0, int64_t m1);
  // The fused op's pointwise product (row_product_impl.h), one thread's rows: out[i][0, N) = bias (or
  // zero when nullptr) + sum_k a[i][k] w[.][k] for i < M, each element summed in k order; a [M, K],
  // rows lda apart; out rows ldo apart; work: row_product_workspace(M, K, lda) (null where the rows
  // are read in place); stream_out as in forward (float32 outputs whose rows are whole
  // aligned vectors). w packed by
  // pack_row_product_weight: w [N, K] (element (n, k) at w[n * sn + k * sk]) into
  // ceil(N / row_product_width) panels of K * row_product_width values (zero past N), panel after
  // panel (panels can be packed separately).
  void (*pack_row_product_weight)(int64_t K, int64_t N, const acc_t* w, int64_t sn, int64_t sk, acc_t* packed);
  void (*row_product)(int64_t M, int64_t K, int64_t N, const acc_t* a, int64_t lda, const acc_t* packed,
                      const acc_t* bias, acc_t* out, int64_t ldo, acc_t* work, bool stream_out);
  int64_t row_product_width;
  // row_product in two steps, for an a used many times: a [M, K] (element (m, k) at a[m * sm + k *
  // sk]) packed into row_product_work(M, K) values, and the product from there, with a column bias
  // (bias[j]) or a row bias (row_bias[i]) or none (nullptr); with `add` (no bias), added to out
  // (each element's sum from zero, then added).
  void (*pack_row_product_rows)(int64_t M, int64_t K, const acc_t* a, int64_t sm, int64_t sk, acc_t* packed_rows);
  void (*row_product_packed)(int64_t M, int64_t K, int64_t N, const acc_t* packed_rows, const acc_t* packed,
                             const acc_t* bias, const acc_t* row_bias, acc_t* out, int64_t ldo, bool add);
  // row_product_packed with a row bias (or none) into rows at any alignment (NCHW planes), with
  // non-temporal stores on every whole cache line of out, complete on return, each row's last
  // vector of a panel kept in `stage` (kRowProductStageValues per row, the calling thread's) for
  // the next. float32 on AVX-512 only: nullptr in the other tables (use row_product_packed).
  void (*row_product_streamed)(int64_t M, int64_t K, int64_t N, const acc_t* packed_rows, const acc_t* packed,
                               const acc_t* row_bias, acc_t* out, int64_t ldo, acc_t* stage) = nullptr;
};

// The table for the best instruction set this CPU supports (AVX-512, AVX2+FMA, or baseline x86-64),
// chosen once; XSEP_CPU_ISA=avx512|avx2|default overrides it (for tests and benchmarks).
template <typename T> const DepthwiseKernels<T>& depthwise_kernels();
// Name of the instruction set those tables use.
const char* kernel_isa();

// Whether the AVX-512 build's channels-last depthwise runs take two vectors of channels on every
// row, or only on rows of fewer than 2 * kRunP pixels (for_run_blocks): every row except on AMD's
// Zen 4 (family 25), where short rows only measured faster. Chosen once, with the tables;
// XSEP_CPU_RUN_VECTORS=auto|short-rows|every-row overrides (tests, benchmarks).
bool two_vector_runs();
// That choice in words: "short rows" or "every row".
const char* run_vectors_setting();

// Which channels-last depthwise rows (3x3 taps, unit stride along W) the kernels take in runs, one
// block of channels along a row segment at a time, rather than in unit tiles, all of a tile's
// channels before the next tile (depthwise_kernels_impl.h: for_runs). kEverywhere on AMD's Zen 5
// (and AMD's other families; runs measured faster on Zen 5 and Zen 4); kLongRows on Zen 4 (below);
// elsewhere kAvx512Rule: only the AVX-512 build's input
// gradients, fused-op bands and forwards whose outputs stream (host.h stream_output). On the 2-core
// Intel Xeon (fp32, batch 8, 2 threads, `retain`, 2026-12-06; alternate processes, median of 3-5,
// ratios to torch's), unit tiles against runs: the forward through the caches 112x112x32 0.87 ->
// 1.02x, 56x56x144 0.78 -> 0.99, 37x37x256 0.76 -> 0.99, 19x19x728 0.95 -> 1.07, 7x7x960 1.08 -> 1.39;
// streamed, 147x147x128 1.43 -> 1.15; the input gradient 0.9-1.0x of runs' speed; the fused
// forward's bands 147x147 128 -> 128 1.30 -> 1.22x. The AVX2 build's runs there ran 0.3-0.7x of
// torch where its unit tiles ran 0.84-1.12x (forward) and 0.86-1.54x (backward), measured before
// streamed runs took their rows in segments (kStreamRunSegment, depthwise_kernels_impl.h: on the
// Zen 4 that made the AVX2 build's streamed forwards 1.7-2.3x faster); not measured there since.
// On AMD's Zen 4 (family 25) kLongRows: everywhere except the depthwise op's forward through the
// caches (not streamed) on rows of fewer than kMinForwardRunPixels output pixels, which take unit
// tiles. There (fp32, batch 8, 2 threads, `retain`, 2026-12-07; alternate processes, median of 40,
// two to three rounds, ratios to torch's), runs against unit tiles: 19x19x728 0.78-0.94x ->
// 0.98-1.13x, 19x19x256 0.96-1.01x -> 1.13-1.20x, 28x28x576 0.85-1.01x -> 1.00-1.03x, 28x28x240
// 0.97-0.99x -> 1.04-1.05x, 28x28x192 1.01-1.06x -> 1.02-1.12x, 7x7x960 1.14-1.27x -> 1.24-1.39x,
// 10x10 and 14x14 within noise either way; on rows of 37 pixels and more runs were faster
// (37x37x256 1.03-1.08x against 0.93-1.01x, 56x56x144 1.05-1.07x against 0.94-0.97x; streamed or
// not). The NCHW op's small planes, whose channel blocks run these forwards, took the same time or
// less with the rule (19x19x728 1.46-1.50 -> 1.31-1.50 ms, 28x28x576 2.30-2.33 -> 2.04-2.20,
// 28x28x192 0.54-0.70 -> 0.42-0.52).
// Chosen once, with the tables; XSEP_CPU_DEPTHWISE_RUNS=auto|always|never overrides (tests, benchmarks).
enum class DepthwiseRuns { kEverywhere, kNowhere, kAvx512Rule, kLongRows };
inline constexpr int64_t kMinForwardRunPixels = 32;
DepthwiseRuns depthwise_runs();
// That choice in words.
const char* depthwise_runs_setting();

// Whether add_tn_product (the weight gradients' product) reads b's rows in place where they are at
// most kTnInPlaceColumns values wide and whole panels (tn_product_impl.h), rather than packing them
// into panels: on CPUs other than AMD, measured on the Intel Xeon only. Chosen once, with the
// tables; XSEP_CPU_WEIGHT_PACKING=auto|pack|in-place overrides (tests, benchmarks).
bool tn_b_in_place();
// That choice in words.
const char* weight_packing_setting();

}  // namespace xsep::cpu
