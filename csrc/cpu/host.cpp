#include "cpu/host.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/mm.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#include <sys/mman.h>
#include <unistd.h>

#include "cpu/depthwise_kernels.h"
#include "cpu/gemm.h"

namespace xsep::cpu {
namespace {

// The last-level cache's size in bytes, as Linux describes cpu0's caches (the highest level's
// size), or 32 MiB where it does not. Not sysconf(_SC_LEVEL3_CACHE_SIZE): on the AMD EPYC VM
// glibc reported 320 MiB for its 32 MiB L3. Read with C stdio, not iostreams: a toolchain that
// links libstdc++ statically into the library (the GPU machine's g++ wrapper did) leaves this
// library's iostream locale half set up inside a process that loaded the shared libstdc++ (torch
// did): `ifstream >> int` crashed there (gcc 13) or silently read nothing (gcc 12).
int64_t last_level_cache_bytes() {
  int64_t bytes = int64_t{32} << 20;
  int best_level = 0;
  for (int i = 0; i < 16; ++i) {
    const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i) + "/";
    int level = 0;
    long long size = 0;
    char unit = '\0';
    std::FILE* level_file = std::fopen((dir + "level").c_str(), "r");
    std::FILE* size_file = std::fopen((dir + "size").c_str(), "r");
    const bool read = level_file != nullptr && size_file != nullptr && std::fscanf(level_file, "%d", &level) == 1 &&
                      std::fscanf(size_file, "%lld%c", &size, &unit) >= 1;  // "32768K"
    if (level_file != nullptr) std::fclose(level_file);
    if (size_file != nullptr) std::fclose(size_file);
    if (!read) break;
    if (unit == 'K') size <<= 10;
    else if (unit == 'M') size <<= 20;
    if (level > best_level && size > 0) {
      best_level = level;
      bytes = size;
    }
  }
  return bytes;
}

// The most that an op's data may take and still be left to the caches: the last-level cache, at
// most 32 MiB, the largest measured to keep a layer's data from one call to the next (the AMD
// EPYC's). A virtual machine can report its host socket's whole L3, shared with the other guests:
// 480 MiB on the 2-core Intel Xeon, where caching outputs of 44 to 177 MB then cost 1.3-1.8x (see
// stream_output).
constexpr int64_t kMaxCachedBytes = int64_t{32} << 20;

// -1: always, 0: never, else the threshold in bytes (the cache), as `variable` (auto|always|never) says.
int64_t cache_threshold(const char* variable) {
  const auto name = env_choice(variable, {"auto", "always", "never"});
  if (name == "always") return int64_t{-1};
  if (name == "never") return int64_t{0};
  return std::min(last_level_cache_bytes(), kMaxCachedBytes);
}

// Each read once per process.
int64_t stream_threshold() {
  static const int64_t threshold = cache_threshold("XSEP_CPU_STREAM_STORES");
  return threshold;
}
int64_t prefetch_threshold() {
  static const int64_t threshold = cache_threshold("XSEP_CPU_PREFETCH");
  return threshold;
}

// A threshold in words: "always", "never" or "above N MiB" + tail.
std::string threshold_words(int64_t threshold, const std::string& tail) {
  if (threshold < 0) return "always";
  if (threshold == 0) return "never";
  return "above " + std::to_string(threshold >> 20) + " MiB" + tail;
}

}  // namespace

int amd_family() {
#if defined(__x86_64__) || defined(__i386__)
  unsigned a = 0, b = 0, c = 0, d = 0;
  // "AuthenticAMD" in ebx, edx, ecx.
  if (!__get_cpuid(0, &a, &b, &c, &d) || b != 0x68747541 || d != 0x69746e65 || c != 0x444d4163) return 0;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
  const int base = (a >> 8) & 0xf;
  return base == 0xf ? base + static_cast<int>((a >> 20) & 0xff) : base;
#else
  return 0;
#endif
}

std::optional<std::string_view> env_choice(const char* variable, std::initializer_list<std::string_view> allowed) {
  const char* env = std::getenv(variable);
  if (env == nullptr || *env == '\0') return std::nullopt;
  const std::string_view name(env);
  if (std::find(allowed.begin(), allowed.end(), name) != allowed.end()) return name;
  std::string choices;
  for (const std::string_view choice : allowed) choices += (choices.empty() ? "'" : ", '") + std::string(choice) + "'";
  TORCH_CHECK(false, variable, "='", name, "' is not one of ", choices);
}

namespace {

// Whether t's memory has been touched before: the pages holding its middle and last bytes are
// resident (mincore). A fresh block from glibc is mapped anew, its pages untouched except the
// first (the block's header); memory it reuses has been written. Where the call fails: true.
bool touched_before(const at::Tensor& t) {
  if (t.nbytes() == 0) return true;
  const auto page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const auto begin = reinterpret_cast<uintptr_t>(t.const_data_ptr());
  for (const uintptr_t byte : {begin + t.nbytes() / 2, begin + t.nbytes() - 1}) {
    unsigned char resident = 0;
    if (mincore(reinterpret_cast<void*>(byte & ~(page - 1)), page, &resident) == 0 && (resident & 1) == 0) return false;
  }
  return true;
}

}  // namespace

bool stream_output(int64_t bytes, const at::Tensor& out) {
  const int64_t threshold = stream_threshold();
  return threshold < 0 || (threshold > 0 && bytes > threshold && touched_before(out));
}

NchwDepthwiseSetting nchw_depthwise_setting_choice() {
  static const NchwDepthwiseSetting setting = [] {
    const std::string_view v =
        env_choice("XSEP_CPU_NCHW_DEPTHWISE", {"auto", "planes", "blocks", "narrow"}).value_or("auto");
    return v == "planes"   ? NchwDepthwiseSetting::kPlanes
           : v == "blocks" ? NchwDepthwiseSetting::kBlocks
           : v == "narrow" ? NchwDepthwiseSetting::kOneDnnOnNarrowPlanes
                           : NchwDepthwiseSetting::kAuto;
  }();
  return setting;
}

std::string nchw_depthwise_setting() {
  switch (nchw_depthwise_setting_choice()) {
    case NchwDepthwiseSetting::kPlanes: return "planes";
    case NchwDepthwiseSetting::kBlocks: return "blocks";
    case NchwDepthwiseSetting::kOneDnnOnNarrowPlanes: return "onednn on narrow float32 planes";
    default: return "blocks on small planes";
  }
}

std::string stream_stores_setting() { return threshold_words(stream_threshold(), ", into memory touched before"); }

bool prefetch_rows(int64_t bytes) {
  const int64_t threshold = prefetch_threshold();
  return threshold < 0 || (threshold > 0 && bytes > threshold);
}

std::string prefetch_setting() { return threshold_words(prefetch_threshold(), ""); }

namespace {

// Rows of out a thread takes at least: kTnRowGrain, or fewer where that would leave threads idle
// (out of 16 rows, MobileNet's 112x112 32 -> 16, on one of two threads: 87 GFLOP/s against
// oneDNN's 192, Zen 4, channels_last). Which thread sums an element never changes its order.
int64_t tn_row_grain(int64_t M) {
  const int64_t threads = at::get_num_threads();
  return std::clamp<int64_t>((M + threads - 1) / threads, 1, kTnRowGrain);
}

}  // namespace

at::Tensor& addmm_tn_fixed_order(at::Tensor& out, const at::Tensor& a, const at::Tensor& b) {
  const auto dtype = out.scalar_type();
  const int64_t M = a.size(1), N = b.size(1);
  const bool rows = a.stride(1) == 1 && b.stride(1) == 1;
  if (a.scalar_type() == dtype && b.scalar_type() == dtype && out.stride(1) == 1 && tn_product_on_xsep(dtype) &&
      fused_products_on_xsep() && a.stride(0) == 1 && b.stride(0) == 1) {
    // Pixel-contiguous operands (NCHW planes: a = gY^T, b = X^T): out[m][n] += sum_k a^T[m][k]
    // b^T[n][k], with few channels over many pixels as dot products of rows (add_nt_product, its
    // own fixed order), else on xsep's row product, which packs them from their own rows
    // (contiguous reads) in blocks of kTnKBlockPixels pixels, each block's sum from zero then added
    // in block order: the order of tn_product_impl.h. Either way the same bits whatever the thread
    // count. The transposing copies the row product replaces cost 3.5 of the 11.7 ms of 19x19 728 ->
    // 728's weight gradient (Zen 5, batch 8).
    AT_DISPATCH_FLOATING_TYPES(dtype, "addmm_tn_fixed_order", [&] {
      const auto& k = depthwise_kernels<scalar_t>();
      const int64_t K = a.size(0), sa = a.stride(1), sb = b.stride(1), ldo = out.stride(0);
      const scalar_t* ap = a.const_data_ptr<scalar_t>();
      const scalar_t* bp = b.const_data_ptr<scalar_t>();
      scalar_t* op = out.mutable_data_ptr<scalar_t>();
      if (K >= kNtMinPixels && M * N <= kNtMaxProductsPerValue * (M + N)) {
        // Few channels over many pixels: each element a dot product of two rows, unpacked (packing
        // both operands took longer than the product there). Zen 4 EPYC, fp32, batch 8, 2 threads,
        // NCHW pointwise weight gradients, against the packed row product (one process,
        // interleaved, min of 4): 147x147 64 -> 128 and 128 -> 128 1.7-1.9x, 74x74 128 -> 256 and
        // 256 -> 256 1.4-1.5x, MobileNet's 56x56 144 -> 24 2.6x, 28x28 192 -> 32 2.2x, 14x14 576 ->
        // 96 1.24x; but 37x37 728 -> 728 0.91x, 10x10 728 -> 1024 0.86x, 7x7 960 -> 320 0.67x
        // (short reductions: the lanes' sums cost more per block). Since the row product packs by
        // transposes (row_product_impl.h), 37x37 256 -> 728 (M N / (M + N) = 189; 0.99-1.05x
        // before) runs 0.87x of it (171 against 197 GFLOP/s), 74x74 256 -> 256 (128) 1.00x,
        // 14x14 576 -> 96 (82) 1.11x: hence at most 128.
        const int64_t grain = tn_row_grain(M);
        at::parallel_for(0, (M + grain - 1) / grain, 1, [&](int64_t t0, int64_t t1) {
          k.add_nt_product(K, N, ap, sa, bp, sb, op, ldo, t0 * grain, std::min(M, t1 * grain));
        });
        return;
      }
      // Two loop orders, the same sums in the same order (each block's sums added in block order):
      // every block through all of out, or, where out outgrows L2 (kTnChunkedOutBytes), each
      // thread's rows of out a chunk at a time (kTnOutChunkBytes, kept in L2) through every
      // block, b packed for several blocks at once (up to kTnPackedBBytes), so that out crosses
      // memory once, not once per block. Zen 4 EPYC, fp32, batch 8, 2 threads, NCHW pointwise
      // weight gradients, chunks against blocks (one process, interleaved, min of 6, two runs):
      // 10x10 1536 -> 2048 1.05-1.07x (K = 800 pixels: blocks of 256, 256, 256 and 32, each
      // pass over its 12.6 MB out ~1 ms, not hidden behind the multiply-adds), 10x10 1024 -> 1536
      // 1.02-1.03x, 19x19 728 -> 1024 and 728 -> 728 1.02-1.05x, 14x14 728 -> 728 1.00-1.01x,
      // 10x10 728 -> 1024 0.98-1.00x; where out fits L2, 147x147 128 -> 128 0.96x.
      const int64_t block_values = panel_values(k, kTnKBlockPixels, N);
      const int64_t blocks = (K + kTnKBlockPixels - 1) / kTnKBlockPixels;
      const int64_t bytes = int64_t(sizeof(scalar_t)), R = kRowProductTileRows;
      // Block order: one block's b at a time (in L2 for every row tile), each thread's rows in one
      // chunk; chunked: blocks in groups, rows in chunks of kTnOutChunkBytes.
      const bool chunked = blocks > 1 && M * N * bytes > kTnChunkedOutBytes;
      const int64_t group =
          chunked ? std::clamp<int64_t>(kTnPackedBBytes / (block_values * bytes), 1, blocks) : int64_t(1);
      const int64_t chunk_rows = chunked ? std::max(R, kTnOutChunkBytes / (N * bytes) / R * R) : M;
      const std::unique_ptr<scalar_t[]> bpack(new scalar_t[group * block_values]);
      // A thread's tiles of a start at m0 * kTnKBlockPixels, m0 a whole number of register tiles.
      const std::unique_ptr<scalar_t[]> apack(new scalar_t[row_product_work(M, kTnKBlockPixels)]);
      for (int64_t b0 = 0; b0 < blocks; b0 += group) {
        const int64_t b1 = std::min(blocks, b0 + group);
        for (int64_t blk = b0; blk < b1; ++blk) {
          const int64_t k0 = blk * kTnKBlockPixels, kc = std::min(kTnKBlockPixels, K - k0);
          pack_panels(k, kc, N, bp + k0, sb, 1, bpack.get() + (blk - b0) * block_values);
        }
        for_row_tiles(M, [&](int64_t m0, int64_t m1) {
          scalar_t* tiles = apack.get() + m0 * kTnKBlockPixels;
          for (int64_t r0 = m0; r0 < m1; r0 += chunk_rows) {
            const int64_t rows = std::min(chunk_rows, m1 - r0);
            for (int64_t blk = b0; blk < b1; ++blk) {
              const int64_t k0 = blk * kTnKBlockPixels, kc = std::min(kTnKBlockPixels, K - k0);
              k.pack_row_product_rows(rows, kc, ap + r0 * sa + k0, sa, 1, tiles);
              k.row_product_packed(rows, kc, N, tiles, bpack.get() + (blk - b0) * block_values, nullptr, nullptr,
                                   op + r0 * ldo, ldo, true);
            }
          }
        });
      }
    });
    return out;
  }
  if (a.scalar_type() == dtype && b.scalar_type() == dtype && out.stride(1) == 1 &&
      ((tn_product_on_xsep(dtype) && (rows || dtype == at::kDouble || M * N >= kTnCopyMinRatio * (M + N))) ||
       (rows && tn_rows_product_on_xsep(dtype, a.size(0), M, N)))) {
    // Operands that are not rows (NCHW: pixels contiguous) are copied into rows first.
    const auto a_rows = a.stride(1) == 1 ? a : a.contiguous();
    const auto b_rows = b.stride(1) == 1 ? b : b.contiguous();
    AT_DISPATCH_FLOATING_TYPES(dtype, "addmm_tn_fixed_order", [&] {
      const auto& k = depthwise_kernels<scalar_t>();
      const int64_t K = a_rows.size(0);
      const scalar_t* ap = a_rows.const_data_ptr<scalar_t>();
      const scalar_t* bp = b_rows.const_data_ptr<scalar_t>();
      scalar_t* op = out.mutable_data_ptr<scalar_t>();
      if (!tn_product_on_xsep(dtype) && std::min(M, N) <= kTnSpanNarrowSide && M * N <= kTnSpanMaxOutValues &&
          K >= std::max(2 * kTnSpanPixels, kTnLongPixels)) {
        // The long products of few channels (gemm.h's route from kTnLongPixels pixels): spans, each
        // its own sums from zero (tn_product_impl.h's order from the span's first pixel) into a
        // partial of out, the partials then added to out in span order. The roles of a and b are
        // swapped where N < M, so that the longer side runs along the register tile's vectors:
        // every multiply-add keeps its value, and the sums their order.
        const bool swap = N < M;
        const int64_t spans = (K + kTnSpanPixels - 1) / kTnSpanPixels, values = M * N;
        const std::unique_ptr<scalar_t[]> partials(new scalar_t[spans * values]);
        at::parallel_for(0, spans, 1, [&](int64_t s0, int64_t s1) {
          const std::unique_ptr<scalar_t[]> work(new scalar_t[kTnWorkspace]);
          for (int64_t s = s0; s < s1; ++s) {
            const int64_t k0 = s * kTnSpanPixels, kc = std::min(kTnSpanPixels, K - k0);
            scalar_t* part = partials.get() + s * values;
            std::fill(part, part + values, scalar_t(0));
            const scalar_t *sa = ap + k0 * a_rows.stride(0), *sb = bp + k0 * b_rows.stride(0);
            if (swap) {
              k.add_tn_product(kc, M, sb, b_rows.stride(0), sa, a_rows.stride(0), part, M, 0, N, work.get());
            } else {
              k.add_tn_product(kc, N, sa, a_rows.stride(0), sb, b_rows.stride(0), part, N, 0, M, work.get());
            }
          }
        });
        const int64_t ldo = out.stride(0);
        at::parallel_for(0, M, 16, [&](int64_t m0, int64_t m1) {
          for (int64_t s = 0; s < spans; ++s) {
            const scalar_t* part = partials.get() + s * values;
            for (int64_t m = m0; m < m1; ++m) {
              scalar_t* o = op + m * ldo;
              if (swap) {
                for (int64_t n = 0; n < N; ++n) o[n] += part[n * M + m];
              } else {
                for (int64_t n = 0; n < N; ++n) o[n] += part[m * N + n];
              }
            }
          }
        });
        return;
      }
      // Each thread its own rows of out, all of k: no element is split across threads.
      at::parallel_for(0, out.size(0), tn_row_grain(M), [&](int64_t m0, int64_t m1) {
        const std::unique_ptr<scalar_t[]> work(new scalar_t[kTnWorkspace]);  // uninitialised: packed before use
        k.add_tn_product(K, N, ap, a_rows.stride(0), bp, b_rows.stride(0), op, out.stride(0), m0, m1, work.get());
      });
    });
    return out;
  }
  for (int64_t k0 = 0; k0 < a.size(0); k0 += kBlasReductionRows) {
    const int64_t k = std::min(kBlasReductionRows, a.size(0) - k0);
    out.addmm_(a.narrow(0, k0, k).t(), b.narrow(0, k0, k));
  }
  return out;
}

void mm_with_bias_out(at::Tensor& out, const at::Tensor& bias, const at::Tensor& a, const at::Tensor& b) {
  if (bias.defined()) {
    at::addmm_out(out, bias, a, b);
  } else {
    at::mm_out(out, a, b);
  }
}

at::Tensor column_sums_fixed_order(const at::Tensor& rows) {
  TORCH_CHECK(rows.dim() == 2 && rows.is_contiguous(), "column_sums_fixed_order: a contiguous matrix expected");
  const int64_t R = rows.size(0), C = rows.size(1);
  auto sums = at::zeros({C}, rows.options());
  AT_DISPATCH_FLOATING_TYPES(rows.scalar_type(), "column_sums_fixed_order", [&] {
    const scalar_t* src = rows.const_data_ptr<scalar_t>();
    scalar_t* dst = sums.mutable_data_ptr<scalar_t>();
    // Threads take disjoint column slices; each runs down every row, so the inner loop is contiguous.
    at::parallel_for(0, C, 256, [&](int64_t c0, int64_t c1) {
      for (int64_t r = 0; r < R; ++r) {
        const scalar_t* row = src + r * C;
        for (int64_t c = c0; c < c1; ++c) dst[c] += row[c];
      }
    });
  });
  return sums;
}

std::tuple<at::Tensor, at::Tensor> depthwise_backward_from_acc(const DepthwiseGeometry& shape, const at::Tensor& input,
                                                               const at::Tensor& x, const at::Tensor& grad_out_acc,
                                                               const at::Tensor& weight, const at::Tensor& w_taps) {
  auto grad_input = empty_nhwc(input.sizes(), input);
  at::Tensor grad_taps;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "depthwise_backward_from_acc", [&] {
    using acc_t = Acc<scalar_t>;
    const acc_t* go = grad_out_acc.const_data_ptr<acc_t>();
    const scalar_t* x_ptr = x.const_data_ptr<scalar_t>();
    const acc_t* w = w_taps.const_data_ptr<acc_t>();
    scalar_t* gi = grad_input.mutable_data_ptr<scalar_t>();
    const bool stream = stream_output(grad_out_acc.nbytes() + grad_input.nbytes(), grad_input);
    const bool prefetch = prefetch_rows(grad_out_acc.nbytes() + x.nbytes() + grad_input.nbytes());
    grad_taps = depthwise_backward_taps<scalar_t, acc_t>(shape, go, x_ptr, w, gi, stream, prefetch);
  });
  return {in_format_of(grad_input, input), from_tap_major(grad_taps, weight)};
}

}  // namespace xsep::cpu
