// Host-side helpers shared by the CPU ops: layouts, weight packing, deterministic reductions.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include <algorithm>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <vector>

#include "common/geometry.h"
#include "common/layout.h"
#include "cpu/depthwise_kernels.h"
#include "cpu/depthwise_nchw_kernels.h"

namespace xsep::cpu {

// at::parallel_for grain: items per task so that each task does enough multiply-adds (about
// 32K) to amortise handing it out.
inline int64_t grain(int64_t work_per_item) {
  constexpr int64_t kTaskWork = 32768;
  return std::max<int64_t>(1, kTaskWork / std::max<int64_t>(1, work_per_item));
}

// The value of the environment variable `variable` when it is set and not empty, checked to be one
// of `allowed` (else an error naming the variable and the choices); nullopt when unset or empty.
// The settings that override a choice xsep makes per machine (XSEP_CPU_ISA, XSEP_CPU_GEMM, ...).
std::optional<std::string_view> env_choice(const char* variable, std::initializer_list<std::string_view> allowed);

// AMD's CPU family number (CPUID leaf 1: the base family, plus the extended family when the base
// is 15: Zen 4 is 25, Zen 5 26), 0 on other vendors and architectures. Per-machine choices key on it.
int amd_family();

// Whether an op writes its output with non-temporal stores, past the caches: when the bytes it
// reads and writes exceed the last-level cache, so the output would be evicted before its reader
// gets to it and caching it costs a read of every line first. On the AMD EPYC (Zen 4, 32 MiB L3),
// fp32, batch 8, the channels-last depthwise forward ran 1.18-1.27x faster with them at 147x147x64
// and 74x74x128 (88 and 44 MB), and 1.5-1.7x slower at 10x10x1536 (10 MB, which stays in cache
// from one call to the next); its input gradient 1.7-1.8x faster at those two shapes. On the 2-core
// Intel Xeon (2026-12-05, alternate processes, min of 9), at 147x147 and 74x74 the forward 1.3-1.8x
// and the backward (both gradients) 1.35-1.6x faster; 37x37x728 (64 MB) within noise. The threshold is
// the last-level cache, at most 32 MiB (host.cpp: kMaxCachedBytes). And only into memory touched
// before (`out`'s pages resident, host.cpp: touched_before): a fresh allocation's pages (glibc maps
// large blocks anew and unmaps them on free, the default) are zeroed through the caches on first
// touch, and streaming over those cached lines costs a second write of each: with the default
// allocator the forward at 147x147 and 74x74 ran 0.74-0.79x of torch streaming, 1.0-1.1x not (2-core
// Xeon, 2026-12-06), the fused forward 12-25% slower. The NCHW depthwise forward and unit-stride
// input gradient on the plane kernels stream too (depthwise_nchw_kernels_impl.h: flat_plane).
// XSEP_CPU_STREAM_STORES=auto|always|never overrides (tests, benchmarks; `always` whatever the memory).
bool stream_output(int64_t bytes, const at::Tensor& out);
// That rule in words: "above N MiB, into memory touched before" (N: the last-level cache), "always" or
// "never".
std::string stream_stores_setting();

// Whether a kernel whose operands take `bytes` brings the rows it reads next into L2 while it
// computes on the present ones (the channels-last depthwise weight gradient: each next output row's
// grad_output and newest input row, in even shares over the present row's pixels; the forward's
// runs: the newest input row, on pixels of at most 1 KB, depthwise_kernels_impl.h:
// kNextRowPixelBytes): when they exceed the last-level cache, as for stream_output. Without it each
// row began by waiting on memory: the hardware's prefetchers follow a row's pixels C values apart
// only a few lines ahead. Zen 4 EPYC, fp32, batch 8, 2 threads, 3x3, `retain`, 2026-12-07, one
// process switching it call by call (median of 21, two runs): the weight gradient alone 1.47-1.71x
// at 147x147x64, 1.24-1.93x 147x147x128, 1.28-1.32x 74x74x256, 1.70x 37x37x728, 5x5 56x56x144
// 1.18-1.28x; both gradients (one pass) 1.08-1.32x; 19x19x728 and smaller, whose data stays in
// cache, 0.93-0.95x (not prefetched). In alternate processes (three each, XSEP_CPU_PREFETCH=never,
// then auto), both gradients 147x147x64 6.3-6.8 -> 5.2-5.7 ms, 147x147x128 13.2-13.9 -> 8.5-10.0,
// 74x74x256 7.1-7.7 -> 5.0-5.3, 37x37x728 6.9-7.1 -> 5.3-5.5; the fused op's forward+backward 1-3%
// faster (its products dominate). The fused op's depthwise tiles (its forward, and the backward's
// recompute) by its input and output / grad_output; Zen 4 EPYC, fp32, batch 8, 2 threads, `retain`,
// 2026-12-07, six pairs of alternate processes, medians: 147x147 128->128 forward 1.04x, backward
// 1.03x; 74x74 256->256 1.045x / 1.03x; 147x147 64->128 1.00-1.02x.
// XSEP_CPU_PREFETCH=auto|always|never overrides (tests, benchmarks).
bool prefetch_rows(int64_t bytes);
// That rule in words: "above N MiB", "always" or "never".
std::string prefetch_setting();

// Whether an op runs on the NCHW kernels (depthwise_nchw_kernels.h): inputs whose memory format
// is NCHW (contiguous_format), read in place; channels-last inputs take the NHWC kernels. Other
// strides (slices, transposes) are made dense in the format they are closest to, which is also the
// format the output is returned in (in_format_of), so neither path converts its output back.
inline bool runs_nchw(const at::Tensor& input) { return input.suggest_memory_format() == at::MemoryFormat::Contiguous; }

// What runs the NCHW depthwise op (depthwise_conv2d.cpp: nchw_depthwise_path),
// XSEP_CPU_NCHW_DEPTHWISE, read once per process: auto (the default): channel blocks on small
// planes, the plane kernels elsewhere; planes, blocks: that path everywhere (tests, benchmarks);
// narrow: oneDNN's depthwise convolution (torch's own call) for the forward and input gradient
// on narrow float32 planes, the plane kernels elsewhere (the default until 2026-12-05).
enum class NchwDepthwiseSetting { kAuto, kPlanes, kBlocks, kOneDnnOnNarrowPlanes };
NchwDepthwiseSetting nchw_depthwise_setting_choice();
// That setting in words, e.g. "planes".
std::string nchw_depthwise_setting();
// Whether an NCHW depthwise (the op, or the fused op's depthwise half) runs in channel blocks
// (DepthwiseNchwKernels::forward_blocked) rather than on the plane kernels, by that setting and,
// for auto, the plane size and dtype (depthwise_conv2d.cpp); in the fused op, for bands of whole
// planes only (separable_conv2d.cpp: DepthwiseBandNchw).
bool nchw_in_blocks(const DepthwiseGeometry& g, at::ScalarType dtype);
// Whether an NCHW depthwise forward (the op's, or the fused op's depthwise half on bands of whole
// planes) runs on DepthwiseNchwKernels::forward_shifted, ahead of blocks or the plane kernels: the
// automatic setting, a table that has it, its geometry, and planes up to kShiftedMaxWidth wide.
inline constexpr int64_t kShiftedMaxWidth = 56;
inline constexpr int64_t kShiftedMinPixels = 100;
bool nchw_shifted(const DepthwiseGeometry& g, at::ScalarType dtype);
// Channels a block for `images` images: the most of 64, 48, 32, 16 (whole AVX-512 vectors of
// floats; 64 channels are 4) that still gives each thread 4 (image, block) items to balance, in
// blocks of even size. Each value is summed in the same order whatever the block (the NHWC
// kernels' order per channel), so the thread count still does not change the bits.
int64_t nchw_block_channels(int64_t C, int64_t images);

// Depthwise weight [C*M, 1, kh, kw] -> channel-major [C*M, kh*kw] in the accumulation dtype (the
// NCHW kernels' weights).
inline at::Tensor channel_major(const at::Tensor& weight) {
  return weight.reshape({weight.size(0), -1}).to(acc_dtype(weight.scalar_type())).contiguous();
}

// Depthwise backward from grad_output `go` (NHWC, type T or acc_t) and the channels-last input `x`:
// returns the weight gradient, tap-major [kh*kw, C*M] in acc_t, and, when `gi` is not null, writes
// the input gradient there (NHWC; `w` = tap_major(weight); stream_gi as the kernels' stream_out;
// prefetch as grad_weight's, prefetch_rows). The output rows are cut into chunks whose size depends
// only on the shape; each chunk's weight gradient sums into its own buffer, and the buffers are
// added in chunk order, so the result is the same bit for bit whatever the number of threads. With
// `gi`, each chunk also computes the input gradient of the input rows its output rows start
// (input_row_start), right after reading those rows of go for the weight gradient: go crosses
// memory once, not twice (the input gradient's halo rows are the neighbouring chunks', read just
// before or after). Zen 4 EPYC, fp32, batch 8, 2 threads, 3x3, 2026-12-04, against the two
// gradients' separate passes (in one process, interleaved, min of 11, two runs): 1.15-1.25x from
// 147x147x64 to 74x74x256, 1.40-1.45x at 37x37x256, 1.00-1.08x on 37x37x728, 19x19x728 and
// 10x10x1536.
template <typename T, typename GT>
at::Tensor depthwise_backward_taps(const DepthwiseGeometry& s, const GT* go, const T* x, const Acc<T>* w, T* gi,
                                   bool stream_gi, bool prefetch) {
  using acc_t = Acc<T>;
  static_assert(std::is_same_v<GT, T> || std::is_same_v<GT, acc_t>);
  const auto& k = depthwise_kernels<T>();
  const int64_t rows = s.N * s.Ho, size = s.kh * s.kw * s.OC;
  const auto options = at::TensorOptions().dtype(c10::CppTypeToScalarType<acc_t>::value);
  if (rows == 0 || s.Wo == 0) {
    // No output pixel reads any input: a zero input gradient.
    if (gi != nullptr) std::fill(gi, gi + s.N * s.H * s.W * s.C, T(0));
    return at::zeros({s.kh * s.kw, s.OC}, options);
  }
  // A chunk of at least 32 output pixels makes the per-chunk zeroing and summing (~2 * size)
  // cheap next to its multiply-adds (pixels * size); at most kMaxChunks bounds the buffers.
  constexpr int64_t kMinChunkPixels = 32, kMaxChunks = 256;
  const int64_t chunk_rows = std::max((kMinChunkPixels + s.Wo - 1) / s.Wo, (rows + kMaxChunks - 1) / kMaxChunks);
  const int64_t chunks = (rows + chunk_rows - 1) / chunk_rows;
  // The first input row "of" output row r (n * Ho + ho): n * H + ho * sh, clamped to the image;
  // the chunks' input rows [start(r0), start(r1)) tile all N * H rows.
  const auto input_row_start = [&](int64_t r) {
    return r >= rows ? s.N * s.H : r / s.Ho * s.H + std::min(s.H, r % s.Ho * s.sh);
  };
  auto partial = at::empty({chunks, size}, options);
  auto total = at::empty({s.kh * s.kw, s.OC}, options);
  acc_t* part = partial.template mutable_data_ptr<acc_t>();
  acc_t* tot = total.template mutable_data_ptr<acc_t>();
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      acc_t* buf = part + c * size;
      std::fill(buf, buf + size, acc_t(0));
      const int64_t r0 = c * chunk_rows, r1 = std::min(rows, (c + 1) * chunk_rows);
      if constexpr (std::is_same_v<GT, T>) {
        k.grad_weight(s, go, x, buf, r0, r1, prefetch);
      } else {
        k.grad_weight_acc(s, go, x, buf, r0, r1, prefetch);
      }
      const int64_t i0 = input_row_start(r0), i1 = input_row_start(r1);
      if (gi == nullptr || i0 == i1) continue;
      if constexpr (std::is_same_v<GT, T>) {
        k.grad_input(s, go, w, x, gi, i0, i1, stream_gi);
      } else {
        k.grad_input_acc(s, go, w, x, gi, i0, i1, stream_gi);
      }
    }
  });
  // Threads take disjoint slices of the result; each element is summed in chunk order.
  at::parallel_for(0, size, 4096, [&](int64_t e0, int64_t e1) {
    std::copy(part + e0, part + e1, tot + e0);
    for (int64_t c = 1; c < chunks; ++c) k.add_into(part + c * size + e0, tot + e0, e1 - e0);
  });
  return total;
}

// Values of pack_panels' output for N columns of K values (whole panels of row_product_width).
template <typename T>
int64_t panel_values(const DepthwiseKernels<T>& k, int64_t K, int64_t N) {
  const int64_t W = k.row_product_width;
  return (N + W - 1) / W * W * K;
}

// b [N, K] (element (n, k) at b[n * sn + k * sk]) packed by all threads, panel by panel, into
// `panels` as row_product's packed operand (pack_row_product_weight, depthwise_kernels.h).
template <typename T>
void pack_panels(const DepthwiseKernels<T>& k, int64_t K, int64_t N, const Acc<T>* b, int64_t sn, int64_t sk,
                 Acc<T>* panels) {
  const int64_t W = k.row_product_width;
  at::parallel_for(0, (N + W - 1) / W, 1, [&](int64_t p0, int64_t p1) {
    k.pack_row_product_weight(K, std::min(N, p1 * W) - p0 * W, b + p0 * W * sn, sn, sk, panels + p0 * W * K);
  });
}

// fn(m0, m1) for rows [0, M) split between threads in whole register tiles (kRowProductTileRows).
template <typename F>
void for_row_tiles(int64_t M, const F& fn) {
  constexpr int64_t R = kRowProductTileRows;
  at::parallel_for(0, (M + R - 1) / R, 1, [&](int64_t t0, int64_t t1) { fn(t0 * R, std::min(M, t1 * R)); });
}

// out += a^T b for a [K, M] and b [K, N] (weight gradients: K runs over pixels), with the same bits
// whatever the number of threads. Where tn_product_on_xsep (gemm.h), xsep's own kernel
// (tn_product_impl.h: each element one chain over k, each thread its own rows of out, at least
// kTnRowGrain of them where there are enough) on the operands as rows (unit column stride).
// Pixel-contiguous operands (NCHW's planes), where xsep's row product runs (fused_products_on_xsep,
// gemm.h), go to it in the same order, packed from their own rows. Elsewhere operands that are not
// rows are copied into rows when the product is wide enough to pay for the copies, M * N >=
// kTnCopyMinRatio * (M + N), or is float64 (MKL's float64 products on
// the AMD EPYC split even fixed blocks across threads: other bits at 1 and 2 threads). On the AMD
// EPYC Zen 5, 2 threads, MKL's blocks ran Xception's NCHW pointwise weight gradients at 160-185
// GFLOP/s, this kernel on rows at about 400, and torch's transposing copy moved 11-18 GB/s: the
// copies cost 4 (M + N) bytes per M * N multiply-adds, which pays where M * N / (M + N) is above
// about 100 (728 -> 728: 12 ms against 17; 128 -> 256, ratio 85: 27 ms against 18). Otherwise
// BLAS, which splits a long reduction across its threads (the order of the sums then changes with
// the thread count), so the rows are fed to it in fixed blocks of kBlasReductionRows, one after
// another, each too short for BLAS to split (MKL, measured on Intel Xeon: bitwise equal at 1 and 2
// threads for every Xception layer; 1.0-1.3x the time of one call). Not at 3 threads on the 2-core
// AMD EPYC Zen 4, where MKL split them all the same (torch.mm's own bits and error changed too).
inline constexpr int64_t kBlasReductionRows = 512;
inline constexpr int64_t kTnRowGrain = 16;
inline constexpr int64_t kTnCopyMinRatio = 128;
// Long products of few channels on xsep's kernel where weight products otherwise run on BLAS
// (gemm.h tn_rows_product_on_xsep: Intel, from kTnLongPixels pixels), with a side of at most
// kTnSpanNarrowSide channels and at most kTnSpanMaxOutValues values of out: the threads take spans
// of kTnSpanPixels pixels instead of rows of out, each span summed into its own partial, the
// partials added in span order (the same bits whatever the thread count), and the longer side of
// out along the kernel's vectors. Split by rows, each thread read all of the other operand, and a
// side of 16 or 24 channels filled half a register tile (32 columns). 2-core Intel Xeon, fp32,
// batch 8, `retain`, 2026-12-05, alternate processes, two runs, against the row split: MobileNet's
// 112x112 16 -> 96 67-101 -> 139-145 GFLOP/s (oneDNN's 185-217), 32 -> 16 123-129 -> 137-146,
// 56x56 24 -> 96 128-141 -> 151-165, 96 -> 24 and 144 -> 24 even, 24 -> 144 145-149 -> 137-156;
// Xception's 147x147 64 -> 128 135-152 -> 162-179 (oneDNN's 166-176), 128 -> 64 161-171 ->
// 170-190; 74x74 64 -> 128 even. Spans of 8192 pixels ran 0-15% slower than 2048 (two threads
// sharing 21.1 or 5.3 spans unevenly). Wider products keep the row split: in spans 147x147 128 ->
// 128 ran 4-8% slower, 74x74 128 -> 128 12-15%, 256 -> 256 (spans of 8192) 15%.
inline constexpr int64_t kTnSpanPixels = 2048;
inline constexpr int64_t kTnSpanNarrowSide = 64;
inline constexpr int64_t kTnSpanMaxOutValues = 128 * 128;
// tn_product_impl.h's k block (kTnKBlock), for the host's row-product path of the same order.
inline constexpr int64_t kTnKBlockPixels = 256;
// addmm_tn_fixed_order's row-product path: out in chunks of rows above kTnChunkedOutBytes (an L2),
// the rows of out a thread keeps in L2 while it runs them through the k blocks, and the most packed
// b it holds for that (blocks at a time).
inline constexpr int64_t kTnChunkedOutBytes = int64_t(1) << 20;
inline constexpr int64_t kTnOutChunkBytes = int64_t(256) << 10;
inline constexpr int64_t kTnPackedBBytes = int64_t(16) << 20;
// Its unpacked path (add_nt_product): reductions of at least kNtMinPixels pixels where the product
// has at most kNtMaxProductsPerValue multiply-adds per value packing would copy (M N / (M + N)).
inline constexpr int64_t kNtMinPixels = 1024;
inline constexpr int64_t kNtMaxProductsPerValue = 128;
at::Tensor& addmm_tn_fixed_order(at::Tensor& out, const at::Tensor& a, const at::Tensor& b);

// out = a . b, plus `bias` (broadcast: a column [rows, 1] or a row [cols]) when defined, as one GEMM.
void mm_with_bias_out(at::Tensor& out, const at::Tensor& bias, const at::Tensor& a, const at::Tensor& b);

// NCHW GEMMs on small planes. In NCHW the pointwise step is W [O, C] x X_n [C, H*W] per image; on a
// 10x10 plane that GEMM is 100 columns wide, too narrow for BLAS's micro-kernel, and each image
// repacks the whole weight (up to 12 MB at 1536 -> 2048). Planes under kMinGemmPixels / 2 pixels
// are grouped: a group's planes are laid side by side, [C, images * H*W], and go through one GEMM
// at least kMinGemmPixels wide where the batch allows (its result copied back per image). The
// groups split the batch evenly (sizes differ by at most one), so no small last group runs a
// narrow GEMM. Measured on the 2-core Intel Xeon (AVX-512), fp32, batch 8, against torch's NCHW
// path (CPU time of both threads, the machine being shared): 10x10 fused separable forward /
// forward+backward 0.65-0.74x / 0.71x -> 0.98-1.06x / 1.00-1.03x (one thread: about 1.0x ->
// 1.04-1.09x / 1.17-1.22x), pointwise 0.94-1.09x / 0.91-0.97x -> 1.01-1.18x / 1.05-1.09x; MKL's
// GEMM at one thread 134 -> 162 GFLOP/s from 100 to 800 columns (1024 -> 1536). At 19x19 (361
// pixels) a GEMM is already near its best (130 -> 139 GFLOP/s at 722 columns) and the copies cost
// more than that (grouped: 0.96-1.01x where one image a GEMM gave 1.04-1.12x): not grouped.
inline constexpr int64_t kMinGemmPixels = 512;
struct ImageGroups {
  int64_t images, count;  // the batch, and how many groups it is cut into
  int64_t begin(int64_t k) const { return k * images / count; }
  int64_t end(int64_t k) const { return begin(k + 1); }
  int64_t most() const { return (images + count - 1) / count; }  // the largest group
};
inline ImageGroups image_groups(int64_t images, int64_t plane) {
  if (images <= 1 || plane <= 0 || plane >= kMinGemmPixels / 2) return {images, std::max<int64_t>(images, 1)};
  const int64_t per_group = (kMinGemmPixels + plane - 1) / plane;
  return {images, std::max<int64_t>(1, images / per_group)};
}

// The sums of a contiguous [R, C] float/double matrix's columns, each summed in row order: the same
// bits whatever the number of threads (a bias gradient; at::sum's split depends on the threads).
at::Tensor column_sums_fixed_order(const at::Tensor& rows);

// Depthwise backward given the gradient of its output as an accumulation-dtype NHWC buffer
// [N*Ho*Wo, C*M] (the fused backward's intermediate): (grad_input in input's dtype and memory
// format, grad_weight [C*M, 1, kh, kw]). `x` is input made channels-last; `w_taps` = tap_major(weight).
std::tuple<at::Tensor, at::Tensor> depthwise_backward_from_acc(const DepthwiseGeometry& shape, const at::Tensor& input,
                                                               const at::Tensor& x, const at::Tensor& grad_out_acc,
                                                               const at::Tensor& weight, const at::Tensor& w_taps);

// fn(n, c0, c1) for the planes q = n * C + c of `images` images of C channels, split between
// threads in runs of one image's channels (one kernel call a run: its setup paid once a run).
template <typename F>
void for_plane_runs(int64_t images, int64_t C, int64_t grain_size, const F& fn) {
  at::parallel_for(0, images * C, grain_size, [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1;) {
      const int64_t n = q / C, c0 = q % C, c1 = std::min(C, c0 + (q1 - q));
      fn(n, c0, c1);
      q += c1 - c0;
    }
  });
}

// The NCHW depthwise input gradient (overwrites gi, dense NCHW like x) from an NCHW grad_output
// of type T or acc_t; `w` = channel_major(weight); x is read only for the input relu; stream_gi as
// the kernels' stream_out.
template <typename T, typename GT>
void depthwise_grad_input_nchw(const DepthwiseGeometry& s, const GT* go, const Acc<T>* w, const T* x, T* gi,
                               bool stream_gi) {
  const auto& k = depthwise_nchw_kernels<T>();
  if constexpr (std::is_same_v<T, float> && std::is_same_v<GT, float>) {
    if (!s.relu_input && nchw_shifted(s, at::kFloat)) {
      // At unit stride with the output the input's size, the input gradient is the forward of
      // grad_output with each 3x3 kernel turned half a turn (its nine taps reversed): on the
      // shifted-rows kernel where the forward runs there (nchw_shifted; no relu mask to apply).
      std::vector<float> flipped(s.C * 9);
      for (int64_t c = 0; c < s.C; ++c)
        for (int64_t t = 0; t < 9; ++t) flipped[c * 9 + t] = w[c * 9 + 8 - t];
      const int64_t plane = s.H * s.W;
      for_plane_runs(s.N, s.C, grain(plane * 9), [&](int64_t n, int64_t c0, int64_t c1) {
        k.forward_shifted(s, go, flipped.data(), nullptr, gi + (n * s.C + c0) * plane, plane, n, c0, c1);
      });
      return;
    }
  }
  at::parallel_for(0, s.N * s.C, grain(s.H * s.W * s.M * s.kh * s.kw), [&](int64_t q0, int64_t q1) {
    if constexpr (std::is_same_v<GT, T>) k.grad_input(s, go, w, x, gi, q0, q1, stream_gi);
    else k.grad_input_acc(s, go, w, x, gi, q0, q1, stream_gi);
  });
}

// The NCHW depthwise weight gradient, channel-major [C*M, kh*kw] in acc_t. Each channel's sums
// are made by one task in an order fixed by the shape: the same bits for any thread count.
template <typename T, typename GT>
at::Tensor depthwise_grad_weight_nchw(const DepthwiseGeometry& s, const GT* go, const T* x) {
  using acc_t = Acc<T>;
  const auto& k = depthwise_nchw_kernels<T>();
  auto gw = at::zeros({s.OC, s.kh * s.kw}, at::TensorOptions().dtype(c10::CppTypeToScalarType<acc_t>::value));
  acc_t* gwp = gw.template mutable_data_ptr<acc_t>();
  if (s.N == 0 || s.Ho == 0 || s.Wo == 0) return gw;
  at::parallel_for(0, s.C, grain(s.N * s.Ho * s.Wo * s.M * s.kh * s.kw), [&](int64_t c0, int64_t c1) {
    if constexpr (std::is_same_v<GT, T>) k.grad_weight(s, go, x, gwp, c0, c1);
    else k.grad_weight_acc(s, go, x, gwp, c0, c1);
  });
  return gw;
}

}  // namespace xsep::cpu
