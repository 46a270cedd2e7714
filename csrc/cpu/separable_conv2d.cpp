// Fused depthwise-separable convolution on CPU, channels-last (NCHW inputs: see separable_forward_nchw
// and separable_backward_nchw; small NCHW planes with a large pointwise weight: nchw_halves_apart).
//
// Forward, where xsep's own product runs the pointwise step (fused_forward_on_xsep, gemm.h): each
// thread takes blocks of output pixels, computes their depthwise result (plus the mid activation)
// into a block buffer in L2 and multiplies it straight into the output's rows
// (separable_forward_rows). Elsewhere the output pixels are cut into tiles; for each tile the
// depthwise result is computed by all threads into a cache-sized float buffer, which goes into the
// library's pointwise GEMM (itself multi-threaded). Tiles run one after another: calling BLAS from
// inside a parallel region made the GEMM 40x slower here (nested thread pools; the first machine,
// 2026-11-27), and a tile is large enough to use every core. (On the Intel Xeon with torch 2.14.1,
// MKL called inside one ran single-threaded at full speed: the NCHW forward's bands on BLAS take
// that way, separable_forward_nchw.) Either way the [N, C*M, Ho, Wo] intermediate never exists in memory.
// Backward: tiles recompute the depthwise output, giving the pointwise weight gradient (each tile's
// share its own sum, added tile after tile: a fixed order) and the gradient of the depthwise output
// (xsep's product per thread, or the library's per tile; on Intel's long float32 ones oneDNN's
// backward-data primitive over the whole tensor, before the tiles), which then goes through the
// depthwise backward kernels. On xsep's product a thread takes whole tiles where there are enough
// of them (NCHW: whole images), so that a tile's data stays with the thread that made it.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/convolution.h>
#include <ATen/ops/convolution_backward.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/zeros.h>

#include <algorithm>
#include <memory>
#include <optional>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <vector>

#include "common/conv_args.h"
#include "common/layout.h"
#include "cpu/depthwise_kernels.h"
#include "cpu/depthwise_nchw_kernels.h"
#include "cpu/gemm.h"
#include "cpu/host.h"
#include "cpu/ops.h"

namespace xsep::cpu {
namespace {

// Pixels per tile: about tile_floats of depthwise output (tile x C*M floats), which stays in the
// caches between being written and being read by the GEMM, and at least min_rows pixels, which keep
// the GEMM efficient on wide layers. Tiles are then evened out so that no small last tile runs a
// poorly shaped GEMM.
int64_t tile_pixels(int64_t mid_channels, int64_t pixels, int64_t tile_floats, int64_t min_rows) {
  const int64_t target = std::max(min_rows, tile_floats / mid_channels);
  const int64_t tiles = std::max<int64_t>(1, (pixels + target - 1) / target);
  return std::max<int64_t>(1, (pixels + tiles - 1) / tiles);
}
// Channels-last tiles: 1M values (4 MB in float32, in L2 or L3), at least 1024 pixels. On the 2-core
// Xeon (fp32, batch 8) 512-pixel tiles ran the 728-wide layers' fused forward 10-12% slower than 1024
// or 1536, as separate GEMMs of those sizes did. oneDNN's inner product (gemm.h) gains from taller
// tiles still: 4M values (16 MB, in the AMD EPYC's 32 MB L3) ran 37x37 728 -> 728 at 0.97-1.01x of
// torch against 0.86-0.89x with 1M (Zen 4, fp32, batch 8, two alternations).
int64_t nhwc_tile_pixels(int64_t mid_channels, int64_t pixels, at::ScalarType acc) {
  const int64_t values = int64_t(1) << (linear_uses_onednn(acc) ? 22 : 20);
  return tile_pixels(mid_channels, pixels, values, 1024);
}
// The forward's tiles on oneDNN with short products (mid channels <= kShortProductK): 1M values of the tile's
// depthwise output and GEMM result together. oneDNN's inner product writes a new tensor, copied into
// the output tile by tile, and a short product leaves that copy a large share of the time unless
// the result is still in cache: on the AMD EPYC (Zen 4, fp32, batch 8, `retain`, in one process)
// 147x147 64->128 went from 0.82-0.84x of torch to 1.04-1.05x, 74x74 128->256 from 0.89-0.90x to
// 1.02-1.07x, 37x37 256->728 from 0.91-0.98x to 0.98-1.02x; the 728-wide layers moved within noise
// (0.94-0.97x either way, where taller tiles had measured better before), so they keep
// nhwc_tile_pixels, as the backward does (the same change moved its forward+backward within noise).
int64_t nhwc_forward_tile_pixels(int64_t mid_channels, int64_t out_channels, int64_t pixels, at::ScalarType acc) {
  if (!linear_uses_onednn(acc) || mid_channels > kShortProductK) return nhwc_tile_pixels(mid_channels, pixels, acc);
  return tile_pixels(mid_channels + out_channels, pixels, int64_t(1) << 20, 1024);
}

// The depthwise half of the fused op for output pixels [p0 + q0, p0 + q1) of a tile starting at p0,
// in acc_t, rows q0.. of the tile buffers: pre = dw(x) + bias, post = mid(pre) (post may be pre;
// untouched without a mid activation). Forward and backward compute it the same way.
template <typename T>
struct DepthwiseTile {
  using acc_t = Acc<T>;
  const DepthwiseGeometry& g;
  Activation mid;
  const DepthwiseKernels<T>& k;
  const T* x;         // channels-last input
  const acc_t* w;     // tap-major weights
  const acc_t* bias;  // the depthwise bias, or nullptr
  int64_t grain;      // pixels per parallel task
  bool prefetch;      // forward_acc's: where the op's operands exceed the caches (prefetch_rows)

  DepthwiseTile(const DepthwiseGeometry& g, Activation mid, const at::Tensor& x, const at::Tensor& w_taps,
                const at::Tensor& bias, bool prefetch)
      : g(g),
        mid(mid),
        k(depthwise_kernels<T>()),
        x(x.const_data_ptr<T>()),
        w(w_taps.const_data_ptr<acc_t>()),
        bias(bias.defined() ? bias.const_data_ptr<acc_t>() : nullptr),
        grain(xsep::cpu::grain(g.OC * g.kh * g.kw)),
        prefetch(prefetch) {}

  void operator()(int64_t p0, int64_t q0, int64_t q1, acc_t* pre, acc_t* post) const {
    k.forward_acc(g, x, w, bias, pre + q0 * g.OC, p0 + q0, p0 + q1, prefetch);
    if (mid != Activation::none) k.activation(mid, pre + q0 * g.OC, post + q0 * g.OC, (q1 - q0) * g.OC);
  }
};

// The channels-last forward on xsep's own product (row_product_impl.h): each thread takes blocks
// of about kRowBlockValues values of depthwise output (128 KB in float32, in L2 with a weight panel),
// runs the depthwise into its block buffer and the product from there straight into the output's
// rows. The pointwise weight [O, C*M] is packed once per call, by all threads.
// On Zen 5 (fp32, batch 8), 128 KB blocks ran 10x10 1024->1536 and 1536->2048 5-10% faster than
// 256 KB, the other layers within noise; 64 KB and 32 KB were no faster anywhere.
inline constexpr int64_t kRowBlockValues = int64_t(1) << 15;

// w (a contiguous [R, S] matrix in acc_t) packed for row_product as its [N, K] operand: w itself
// (K = S) or, transposed, w^T (K = R); all threads, panel by panel.
template <typename acc_t, typename T>
at::Tensor row_product_weight(const DepthwiseKernels<T>& k, const at::Tensor& w, bool transposed) {
  const int64_t R = w.size(0), S = w.size(1), N = transposed ? S : R, K = transposed ? R : S;
  const int64_t sn = transposed ? 1 : S, sk = transposed ? S : 1;
  at::Tensor packed = at::empty({panel_values(k, K, N)}, w.options());
  pack_panels(k, K, N, w.const_data_ptr<acc_t>(), sn, sk, packed.mutable_data_ptr<acc_t>());
  return packed;
}

// The blocks of a row product over `rows` rows of K values, which the threads share block by block
// (at::parallel_for, grain 1: each thread a run of whole blocks). Usually blocks of about
// kRowBlockValues values (in L2 beside a weight panel), a multiple of 12 rows (the AVX-512 register
// tile's, twice AVX2's). A short product (a small batch: 49 rows for one 7x7 image) would then be a
// few blocks shared unevenly, 49 rows as 24 + 24 + 1, two blocks on one thread and a row on the
// other: with fewer than 4 blocks a thread, each thread takes one block instead, the last one the
// rest (49 rows on 2 threads: 24 + 25). Blocks start at multiples of 12 rows either way, so each row
// is computed by the same register tile whatever the thread count: the same bits.
struct RowBlocks {
  int64_t rows, size, count;
  RowBlocks(int64_t rows, int64_t K) : rows(rows) {
    constexpr int64_t R = kRowProductTileRows;
    size = std::max<int64_t>(R, kRowBlockValues / K / R * R);
    count = (rows + size - 1) / size;
    const int64_t threads = at::get_num_threads();
    if (threads <= 1 || count >= 4 * threads) return;
    // The multiple of R just below or just above rows / threads, whichever leaves the longest block shorter.
    const auto longest = [&](int64_t s) { return std::max(s, rows - (std::min(threads, (rows + s - 1) / s) - 1) * s); };
    const int64_t below = std::max<int64_t>(R, rows / threads / R * R), above = below + R;
    size = longest(below) <= longest(above) ? below : above;
    count = std::min(threads, (rows + size - 1) / size);
  }
  int64_t begin(int64_t i) const { return i * size; }
  int64_t end(int64_t i) const { return i == count - 1 ? rows : (i + 1) * size; }
  int64_t longest() const { return std::max(size, rows - (count - 1) * size); }
};

template <typename T>
void separable_forward_rows(const DepthwiseTile<T>& tile, int64_t O, const at::Tensor& w_pw, const at::Tensor& bias,
                            at::Tensor& out) {
  using acc_t = Acc<T>;
  const auto& k = tile.k;
  const DepthwiseGeometry& g = tile.g;
  const int64_t C = g.OC, P = g.N * g.Ho * g.Wo;
  const at::Tensor packed = row_product_weight<acc_t>(k, w_pw, false);
  const acc_t* pk = packed.const_data_ptr<acc_t>();
  const RowBlocks blocks(P, C);
  const int64_t block = blocks.longest();
  const acc_t* b = bias.defined() ? bias.const_data_ptr<acc_t>() : nullptr;
  T* out_ptr = out.mutable_data_ptr<T>();
  // An output past the caches, into memory touched before, goes straight to memory (host.h:
  // stream_output): Xception's 147x147 and 74x74 forwards 3-16% faster (2-core Intel Xeon, fp32,
  // batch 8, `retain`, 2026-12-06).
  const bool stream = stream_output(g.N * g.H * g.W * g.C * int64_t(sizeof(T)) + out.nbytes(), out);
  at::parallel_for(0, blocks.count, 1, [&](int64_t b0, int64_t b1) {
    constexpr bool out_is_acc = std::is_same_v<T, acc_t>;
    const std::unique_ptr<acc_t[]> d(new acc_t[block * C]);  // uninitialised: written before read
    const std::unique_ptr<acc_t[]> work = row_product_workspace<acc_t>(block, C, C);
    const std::unique_ptr<acc_t[]> y(out_is_acc ? nullptr : new acc_t[block * O]);
    for (int64_t i = b0; i < b1; ++i) {
      const int64_t p0 = blocks.begin(i), n = blocks.end(i) - p0;
      tile(p0, 0, n, d.get(), d.get());
      if constexpr (out_is_acc) {
        k.row_product(n, C, O, d.get(), C, pk, b, out_ptr + p0 * O, O, work.get(), stream);
      } else {
        k.row_product(n, C, O, d.get(), C, pk, b, y.get(), O, work.get(), false);
        k.from_acc(y.get(), out_ptr + p0 * O, n * O);
      }
    }
  });
}

// NCHW: the output rows of one image in bands of about 1 MB of depthwise output, at least 512
// pixels (measured with these NCHW paths; the channels-last tiles' larger size was not). In NCHW the pointwise
// step needs no transposition: out[n][:, band] = W [O, C*M] x D [C*M, band pixels] (+ bias), D
// being the band's depthwise output, so the GEMM writes its [O, band] slice of the output in place.
// Planes under kMinGemmPixels are one band each; under half that (10x10) too narrow a GEMM: there
// a band holds a group of images side by side (image_groups, host.h), D [C*M, images * Ho*Wo],
// and the GEMM's result is copied back per image (except in the forward on xsep's product, whose
// threads take a band an image: thread_band_rows).
int64_t band_rows(int64_t mid_channels, int64_t Ho, int64_t Wo) {
  const int64_t rows = std::clamp<int64_t>(
      (tile_pixels(mid_channels, int64_t(1) << 40, int64_t(1) << 18, kMinGemmPixels) + Wo - 1) / Wo, 1, Ho);
  const int64_t bands = (Ho + rows - 1) / rows;
  return (Ho + bands - 1) / bands;
}

// The NCHW band geometry: the images grouped per GEMM, the output rows per band (all of them when
// several images share a band: tile_pixels is at least kMinGemmPixels), and T, the band buffers'
// row length (pixels of one band, times the largest group).
struct NchwBands {
  ImageGroups groups;
  int64_t rows, T;
  explicit NchwBands(const DepthwiseGeometry& g)
      : groups(image_groups(g.N, g.Ho * g.Wo)), rows(band_rows(g.OC, g.Ho, g.Wo)), T(groups.most() * rows * g.Wo) {
    TORCH_INTERNAL_ASSERT(groups.most() <= 1 || rows == g.Ho, "a band of several images covers their whole planes");
  }
};

// The depthwise half in NCHW for output rows [ho0, ho1) of images [n0, n1), into a [C*M, T] tile
// (T pixels per row of the tile, T >= (n1 - n0) * (ho1 - ho0) * Wo; image n0 + j at column
// j * (ho1 - ho0) * Wo): pre = dw(x) + bias, post = mid(pre) (post may be pre; untouched without a
// mid activation). All threads: whole planes in channel blocks where the depthwise op would run
// them so (nchw_in_blocks; w_taps given), (image, block) items split between threads; else the
// plane kernels, channels split between threads.
template <typename T>
struct DepthwiseBandNchw {
  using acc_t = Acc<T>;
  const DepthwiseGeometry& g;
  Activation mid;
  const DepthwiseNchwKernels<T>& k;
  const DepthwiseKernels<T>& elementwise;
  const T* x;           // NCHW input
  const acc_t* w;       // channel-major weights
  const acc_t* w_taps;  // tap-major weights (channel blocks), or nullptr
  const acc_t* bias;    // the depthwise bias, or nullptr
  int64_t T_;           // tile row length
  bool shifted;         // whole planes on forward_shifted (nchw_shifted)

  // w_taps: tap_major(dw weight) where nchw_in_blocks, else undefined (see nchw_band_taps).
  DepthwiseBandNchw(const DepthwiseGeometry& g, Activation mid, const at::Tensor& x, const at::Tensor& w_cm,
                    const at::Tensor& w_taps, const at::Tensor& bias, int64_t tile)
      : g(g),
        mid(mid),
        k(depthwise_nchw_kernels<T>()),
        elementwise(depthwise_kernels<T>()),
        x(x.const_data_ptr<T>()),
        w(w_cm.const_data_ptr<acc_t>()),
        w_taps(w_taps.defined() ? w_taps.const_data_ptr<acc_t>() : nullptr),
        bias(bias.defined() ? bias.const_data_ptr<acc_t>() : nullptr),
        T_(tile),
        shifted(nchw_shifted(g, x.scalar_type())) {}

  void operator()(int64_t n0, int64_t n1, int64_t ho0, int64_t ho1, acc_t* pre, acc_t* post) const {
    const int64_t pixels = (ho1 - ho0) * g.Wo;
    // Output channels of input channels [c0, c1), image n: the mid activation.
    const auto activate = [&](int64_t n, int64_t c0, int64_t c1) {
      if (mid == Activation::none) return;
      const int64_t at = (n - n0) * pixels;
      for (int64_t oc = c0 * g.M; oc < c1 * g.M; ++oc)
        elementwise.activation(mid, pre + oc * T_ + at, post + oc * T_ + at, pixels);
    };
    if (shifted && ho0 == 0 && ho1 == g.Ho) {
      for_plane_runs(n1 - n0, g.C, grain(pixels * g.kh * g.kw), [&](int64_t j, int64_t c0, int64_t c1) {
        k.forward_shifted(g, x, w, bias, pre + c0 * T_ + j * pixels, T_, n0 + j, c0, c1);
        activate(n0 + j, c0, c1);
      });
      return;
    }
    if (w_taps != nullptr && ho0 == 0 && ho1 == g.Ho) {
      const int64_t cb = nchw_block_channels(g.C, n1 - n0), blocks = (g.C + cb - 1) / cb;
      at::parallel_for(0, (n1 - n0) * blocks, 1, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) {
          const int64_t n = n0 + i / blocks, c0 = i % blocks * cb, c1 = std::min(g.C, c0 + cb);
          k.forward_blocked_acc(g, x, w_taps, bias, pre + c0 * g.M * T_ + (n - n0) * pixels, T_, n, c0, c1);
          activate(n, c0, c1);
        }
      });
      return;
    }
    at::parallel_for(0, g.C, grain((n1 - n0) * pixels * g.M * g.kh * g.kw), [&](int64_t c0, int64_t c1) {
      for (int64_t n = n0; n < n1; ++n) {
        k.forward_acc(g, x, w, bias, pre + c0 * g.M * T_ + (n - n0) * pixels, T_, n, c0, c1, ho0, ho1);
        activate(n, c0, c1);
      }
    });
  }
};

// The tap-major depthwise weight DepthwiseBandNchw takes where whole planes run in channel blocks.
at::Tensor nchw_band_taps(const DepthwiseGeometry& g, const at::Tensor& input, const at::Tensor& dw_weight) {
  const auto dtype = input.scalar_type();
  return nchw_in_blocks(g, dtype) && !nchw_shifted(g, dtype) ? tap_major(dw_weight) : at::Tensor();
}

// NCHW products on xsep's product (fused_products_on_xsep): out [M, N] (rows ldo apart) = a [M, K]
// (packed once per call by pack_row_product_rows: the pointwise weight or its transpose) x b [K, N]
// (element (k, j) at b[k * ldb + j]: a band of planes) (+ row_bias [M]). b is packed into `panels`
// (all threads, panel by panel), then each thread multiplies its register tiles of rows straight
// into out (called in a parallel region, as the forward does, all of it on the calling thread): no
// result copied, no weight re-packed per band as oneDNN's convolution does. Zen 5
// (fp32, batch 8, `retain`, interleaved): forward 1.10-2.05x of torch from 147x147 to 19x19 against
// 0.91-1.39x through oneDNN, backward 1.27-1.96x against 1.16-1.68x. Bands of image groups (planes
// under half of kMinGemmPixels, 10x10) stay on the library unless the pointwise weight is small
// (kSmallBandWeightValues): there each thread's rows of the weight (up to 3 MB) are read again for
// every panel of the wide band, and the forward ran 0.83-0.85x against 0.90-0.92x, the backward
// 1.05-1.09x against 1.22-1.37x. With a small weight the re-reads come from L2: on the Zen 4 (2
// threads, batch 8, `retain`, three rounds of alternating processes, relu6 between the halves),
// 14x14 384 -> 64, 384 -> 96 and 576 -> 96 (25K to 55K weight values) ran the forward 7-17% and the
// backward 4-17% faster than on the library, 7x7 576 -> 160 (92K) even; with a thread per image,
// 10x10 1024 -> 1536 and 1536 -> 2048 (1.6M and 3.1M) forward 0.77-0.85x of torch against 0.95-1.03x
// on the library, 7x7 960 -> 160 and -> 320 even.
inline constexpr int64_t kSmallBandWeightValues = int64_t(1) << 17;  // 512 KB in float32: half a Zen L2
bool xsep_band_products(const ImageGroups& groups, int64_t O, int64_t K) {
  return fused_products_on_xsep() && (groups.most() == 1 || O * K <= kSmallBandWeightValues);
}
// The NCHW forward's bands taken whole by threads on BLAS's products (see separable_forward_nchw):
// where products run on BLAS (no oneDNN, not xsep's), one image a band.
bool thread_bands_on_blas(const ImageGroups& groups, at::ScalarType acc) {
  return groups.most() == 1 && !fused_products_on_xsep() && !linear_uses_onednn(acc);
}
// With `stage` (kRowProductStageValues values a row of out; the NCHW forward where stream_output
// and the table streams: float32 on AVX-512), the products go out with non-temporal stores
// (row_product_streamed), where plain ones read each output line from memory first. Zen 4 EPYC,
// fp32, batch 8, 2 threads, `retain`, 2026-12-07, alternate processes (medians of 9-13 calls, two
// or three pairs): the forward at 147x147 64 -> 128 1.09-1.18x, 128 -> 128 1.05-1.09x, 74x74 128
// -> 256 1.05-1.10x, 256 -> 256 1.02-1.03x, 37x37 1.00-1.035x. Computing the products into a 128
// KB buffer whose rows were then streamed (no shift) gained 1.02-1.06x: the copy ran at memory
// speed after the products instead of beside them.
template <typename T>
void band_product(const DepthwiseKernels<T>& k, int64_t M, int64_t K, int64_t N, const Acc<T>* a_rows, const Acc<T>* b,
                  int64_t ldb, Acc<T>* panels, const Acc<T>* row_bias, Acc<T>* out, int64_t ldo,
                  Acc<T>* stage = nullptr) {
  pack_panels(k, K, N, b, 1, ldb, panels);
  for_row_tiles(M, [&](int64_t m0, int64_t m1) {
    const auto* rb = row_bias ? row_bias + m0 : nullptr;
    if (stage != nullptr)
      k.row_product_streamed(m1 - m0, K, N, a_rows + m0 * K, panels, rb, out + m0 * ldo, ldo,
                             stage + m0 * kRowProductStageValues);
    else k.row_product_packed(m1 - m0, K, N, a_rows + m0 * K, panels, nullptr, rb, out + m0 * ldo, ldo, false);
  });
}

// a [M, K] (element (m, k) at a[m * sm + k * sk], acc_t) packed for band_product.
template <typename T>
at::Tensor packed_rows(const DepthwiseKernels<T>& k, const at::Tensor& a, int64_t M, int64_t K, int64_t sm,
                       int64_t sk) {
  auto packed = at::empty({row_product_work(M, K)}, a.options());
  k.pack_row_product_rows(M, K, a.const_data_ptr<Acc<T>>(), sm, sk, packed.mutable_data_ptr<Acc<T>>());
  return packed;
}

// Images [n0, n0 + images), pixels [p0, p0 + pixels) of each plane, of an [N, R, plane] tensor, as
// an [R, images, pixels] view: the band buffers' layout ([R, images * pixels], images side by side).
at::Tensor band_of(const at::Tensor& planes, int64_t n0, int64_t images, int64_t p0, int64_t pixels) {
  return planes.narrow(0, n0, images).narrow(2, p0, pixels).transpose(0, 1);
}

// The rows of the bands that threads take whole in the NCHW forward on xsep's product: band_rows,
// cut finer where that makes the batch's band count a multiple of the threads, so that no thread
// idles through the last band (batch 1 on a one-band plane: a band per thread).
int64_t thread_band_rows(int64_t images, int64_t Ho, int64_t rows, int64_t threads) {
  for (int64_t bands = (Ho + rows - 1) / rows; bands <= Ho; ++bands) {
    const int64_t r = (Ho + bands - 1) / bands;
    if (images * ((Ho + r - 1) / r) % threads == 0) return r;
  }
  return rows;
}

at::Tensor separable_forward_nchw(const SeparableGeometry& sg, const at::Tensor& input, const at::Tensor& dw_weight,
                                  const at::Tensor& pw_weight, const std::optional<at::Tensor>& bias,
                                  const std::optional<at::Tensor>& dw_bias) {
  const DepthwiseGeometry& g = sg.dw;
  const int64_t O = sg.O, plane = g.Ho * g.Wo;
  auto out = at::empty({g.N, O, g.Ho, g.Wo}, input.options());
  if (out.numel() == 0) return out;
  const auto x = input.contiguous();
  const auto acc = acc_dtype(input.scalar_type());
  const auto w_pw = pw_weight.reshape({O, g.OC}).to(acc).contiguous();
  const auto b = acc_bias(bias);
  const auto w_dw = channel_major(dw_weight);
  const auto w_taps = nchw_band_taps(g, input, dw_weight);
  const auto b_dw = acc_bias(dw_bias);
  const NchwBands bands(g);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "separable_conv2d_cpu", [&] {
    using acc_t = Acc<scalar_t>;
    // The GEMM writes into the output itself in float32/float64, else into a band buffer, copied
    // (and rounded) per band.
    const bool in_place = input.scalar_type() == acc;
    const bool on_xsep = xsep_band_products(bands.groups, O, g.OC);
    if (on_xsep || thread_bands_on_blas(bands.groups, acc)) {
      // Each thread takes whole bands (one image each): their depthwise output, its packed panels
      // and the product stay with the thread that made them. With all threads on every band (the
      // library's way, below) each band's depthwise output went from core to core twice (channels
      // split for the depthwise, columns for the packing): on the 2-vCPU Zen 4, 74x74 256 -> 256,
      // the depthwise and packing took 6.6 ms of 35 where the two vCPUs ran close, 20 of 49 where
      // not (within one process too); one thread packed faster than two.
      // On BLAS (thread_bands_on_blas) the band's GEMM runs single-threaded inside the parallel
      // region, writing its slice of the output in place. 2-core Intel Xeon (MKL), fp32, batch 8,
      // 2026-12-05, forward against all threads on each band (alternate processes): default
      // allocator 147x147 64 -> 128 50 -> 42 ms, 128 -> 128 74 -> 57, 74x74 128 -> 256 29 -> 25,
      // 256 -> 256 51 -> 40; `retain` 74x74 1.05-1.1x, 19x19 728 -> 728 1.0-1.06x, 147x147 and
      // 37x37 within noise (MKL's products of 64 channels into these planes ran at half its rate
      // either way: 0.7-0.98x of torch there, where the depthwise and pointwise ops apart ran 1.7x).
      const int64_t rows = thread_band_rows(g.N, g.Ho, bands.rows, at::get_num_threads());
      const int64_t per_image = (g.Ho + rows - 1) / rows, T = rows * g.Wo;
      const DepthwiseBandNchw<scalar_t> band(g, sg.mid_activation, x, w_dw, w_taps, b_dw, T);
      const auto& kt = band.elementwise;
      const auto w_rows = on_xsep ? packed_rows(kt, w_pw, O, g.OC, g.OC, 1) : at::Tensor();
      const acc_t* bias_ptr = b.defined() ? b.const_data_ptr<acc_t>() : nullptr;
      const auto b_col = b.defined() ? b.view({O, 1}) : b;
      const auto acc_options = x.options().dtype(acc);
      scalar_t* out_ptr = out.mutable_data_ptr<scalar_t>();
      acc_t* out_acc = in_place ? out.mutable_data_ptr<acc_t>() : nullptr;
      const bool stream =
          on_xsep && in_place && kt.row_product_streamed != nullptr && stream_output(x.nbytes() + out.nbytes(), out);
      at::parallel_for(0, g.N * per_image, 1, [&](int64_t i0, int64_t i1) {
        const std::unique_ptr<acc_t[]> d(new acc_t[g.OC * T]);  // uninitialised: written before read
        const std::unique_ptr<acc_t[]> panels(on_xsep ? new acc_t[panel_values(kt, g.OC, T)] : nullptr);
        const std::unique_ptr<acc_t[]> y(in_place ? nullptr : new acc_t[O * T]);
        const std::unique_ptr<acc_t[]> stage(stream ? new acc_t[O * kRowProductStageValues] : nullptr);
        for (int64_t i = i0; i < i1; ++i) {
          const int64_t n = i / per_image, ho0 = i % per_image * rows, ho1 = std::min(g.Ho, ho0 + rows);
          const int64_t pixels = (ho1 - ho0) * g.Wo;
          const int64_t at = n * O * plane + ho0 * g.Wo;  // the band's first output element
          band(n, n + 1, ho0, ho1, d.get(), d.get());     // in a parallel region: on this thread alone
          acc_t* dst = in_place ? out_acc + at : y.get();
          const int64_t ld = in_place ? plane : T;
          if (on_xsep) {
            band_product(kt, O, g.OC, pixels, w_rows.const_data_ptr<acc_t>(), d.get(), T, panels.get(), bias_ptr, dst,
                         ld, stage.get());
          } else {
            auto dst_rows = at::from_blob(dst, {O, pixels}, {ld, 1}, acc_options);
            mm_with_bias_out(dst_rows, b_col, w_pw, at::from_blob(d.get(), {g.OC, pixels}, {T, 1}, acc_options));
          }
          if (!in_place)
            for (int64_t o = 0; o < O; ++o) kt.from_acc(y.get() + o * T, out_ptr + at + o * plane, pixels);
        }
      });
      return;
    }
    const int64_t T = bands.T;
    const DepthwiseBandNchw<scalar_t> band(g, sg.mid_activation, x, w_dw, w_taps, b_dw, T);
    auto d_buf = at::empty({g.OC, T}, x.options().dtype(acc));
    auto* d_ptr = d_buf.mutable_data_ptr<acc_t>();
    const auto out_planes = out.view({g.N, O, plane});
    const auto b_col = b.defined() ? b.view({O, 1}) : b;
    // On oneDNN the GEMM writes through its own result (left_product_out) for one image.
    const bool one_image = in_place && bands.groups.most() == 1;
    auto y_buf = one_image ? at::Tensor() : at::empty({O, T}, x.options().dtype(acc));
    for (int64_t k = 0; k < bands.groups.count; ++k) {
      const int64_t n0 = bands.groups.begin(k), images = bands.groups.end(k) - n0;
      for (int64_t ho0 = 0; ho0 < g.Ho; ho0 += bands.rows) {
        const int64_t ho1 = std::min(g.Ho, ho0 + bands.rows), pixels = (ho1 - ho0) * g.Wo, cols = images * pixels;
        band(n0, n0 + images, ho0, ho1, d_ptr, d_ptr);
        auto y = one_image ? out_planes[n0].narrow(1, ho0 * g.Wo, pixels) : y_buf.narrow(1, 0, cols);
        left_product_out(y, b_col, w_pw, d_buf.narrow(1, 0, cols));
        if (!one_image) band_of(out_planes, n0, images, ho0 * g.Wo, pixels).copy_(y.view({O, images, pixels}));
      }
    }
  });
  return out;
}

// run(k, slot) for the backward's units of work k in [0, count) (NCHW groups, channels-last
// tiles), as many at a time as there are slots: one slot, all threads on each unit (the steps
// parallel inside); several, one unit a thread in a parallel region (the steps on that thread
// alone). Then add(slot) for each unit in order: the units' own sums added in a fixed order.
template <typename Slot, typename Run, typename Add>
void units_in_waves(int64_t count, std::vector<Slot>& slots, const Run& run, const Add& add) {
  const int64_t wave = static_cast<int64_t>(slots.size());
  for (int64_t k0 = 0; k0 < count; k0 += wave) {
    const int64_t k1 = std::min(count, k0 + wave);
    if (wave == 1) {
      run(k0, slots[0]);
    } else {
      at::parallel_for(k0, k1, 1, [&](int64_t i0, int64_t i1) {
        for (int64_t k = i0; k < i1; ++k) run(k, slots[k - k0]);
      });
    }
    for (int64_t k = k0; k < k1; ++k) add(slots[k - k0]);
  }
}

// The depthwise bias's gradient from the depthwise output's gradient, `images` images of
// `channels` planes of P values laid [images, channels, P]: each plane summed in pixel order, the
// images in order (the same bits at any thread count).
template <typename A>
void plane_sums_in_order(const A* planes, int64_t images, int64_t channels, int64_t P, A* out) {
  at::parallel_for(0, channels, grain(images * P), [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      A total = 0;
      for (int64_t j = 0; j < images; ++j) {
        const A* row = planes + (j * channels + c) * P;
        A sum = 0;
        for (int64_t p = 0; p < P; ++p) sum += row[p];
        total += sum;
      }
      out[c] = total;
    }
  });
}

// The backward in NCHW, image group after image group (one image per group unless the planes are
// small, image_groups), each group's output rows in the forward's bands: the band's depthwise
// output is recomputed (pre = dw(x) + bias, post = mid(pre)) and with the band of grad_output gY
// [O, band] (the group's images side by side) gives the group's gY x post^T (addmm_tn_fixed_order,
// band after band, from zero) and gD [C*M, band] = W_pw^T x gY (times mid'(pre)), written into the
// group's gD planes [images, C*M, Ho*Wo] (through a band buffer when the group has several
// images); then the depthwise kernels take the group's whole gD (their input gradient needs
// neighbouring rows): grad_input of the group in place, and its weight gradient. The depthwise
// bias's gradient sums each gD plane in pixel order. Each group's three weight gradients are its
// own sums, added to the totals group after group: a fixed order, whichever thread made them.
// Buffers: a few bands and one group's gD per group in flight, whatever the batch.
template <typename T>
struct NchwGroupBackward {
  using acc_t = Acc<T>;
  // What one group in flight writes: its band buffers, its gD planes and its weight gradients.
  struct Slot { at::Tensor d, m, gy, gd, gd_band, panels, grad_pw, grad_dw, grad_db; };

  const DepthwiseGeometry& g;
  Activation mid;
  int64_t O;
  const NchwBands& bands;
  const DepthwiseBandNchw<T>& band;
  bool on_xsep;
  const at::Tensor& go;      // grad_output, NCHW
  const at::Tensor& x;       // input, NCHW
  const at::Tensor& w_dw;    // channel-major depthwise weight
  const at::Tensor& w_rows;  // on xsep's product: W_pw^T packed as gD = W_pw^T gY's rows
  const at::Tensor& w_pw_t;  // elsewhere: W_pw^T for the library
  bool with_db;              // the depthwise bias's gradient wanted
  at::Tensor& grad_input;

  int64_t plane() const { return g.Ho * g.Wo; }
  bool go_in_place() const { return bands.groups.most() == 1 && std::is_same_v<T, acc_t>; }

  Slot slot() const {
    const auto opts = x.options().dtype(c10::CppTypeToScalarType<acc_t>::value);
    const int64_t T_ = bands.T, most = bands.groups.most();
    Slot s;
    s.d = at::empty({g.OC, T_}, opts);
    s.m = mid == Activation::none ? s.d : at::empty({g.OC, T_}, opts);
    s.gy = go_in_place() ? at::Tensor() : at::empty({O, T_}, opts);
    s.gd = at::empty({most, g.OC, plane()}, opts);
    s.gd_band = most == 1 ? s.gd : at::empty({g.OC, T_}, opts);  // side by side
    s.panels = on_xsep ? at::empty({panel_values(band.elementwise, O, T_)}, opts) : at::Tensor();
    s.grad_pw = at::empty({O, g.OC}, opts);
    s.grad_db = at::empty({with_db ? g.OC : 0}, opts);
    return s;
  }

  // Group k into slot s. Called by all threads (each step parallel inside), or by one thread in a
  // parallel region (each step then on that thread alone): the same steps and sums either way.
  void operator()(int64_t k, Slot& s) const {
    const int64_t n0 = bands.groups.begin(k), images = bands.groups.end(k) - n0, T_ = bands.T;
    const int64_t P = plane(), in_plane = g.C * g.H * g.W;
    const auto& ew = band.elementwise;
    const auto go_planes = go.view({g.N, O, P});
    acc_t* d_ptr = s.d.template mutable_data_ptr<acc_t>();
    acc_t* m_ptr = s.m.template mutable_data_ptr<acc_t>();
    acc_t* gd_ptr = s.gd.template mutable_data_ptr<acc_t>();
    s.grad_pw.zero_();
    for (int64_t ho0 = 0; ho0 < g.Ho; ho0 += bands.rows) {
      const int64_t ho1 = std::min(g.Ho, ho0 + bands.rows), pixels = (ho1 - ho0) * g.Wo, p0 = ho0 * g.Wo;
      const int64_t cols = images * pixels;
      band(n0, n0 + images, ho0, ho1, d_ptr, m_ptr);
      auto gy = go_in_place() ? go_planes[n0].narrow(1, p0, pixels) : s.gy.narrow(1, 0, cols);
      if (!go_in_place()) gy.view({O, images, pixels}).copy_(band_of(go_planes, n0, images, p0, pixels));
      addmm_tn_fixed_order(s.grad_pw, gy.t(), s.m.narrow(1, 0, cols).t());
      auto gd = images == 1 ? s.gd[0].narrow(1, p0, pixels) : s.gd_band.narrow(1, 0, cols);
      if (on_xsep) {
        band_product(ew, g.OC, O, cols, w_rows.template const_data_ptr<acc_t>(), gy.template const_data_ptr<acc_t>(),
                     gy.stride(0), s.panels.template mutable_data_ptr<acc_t>(), nullptr,
                     gd.template mutable_data_ptr<acc_t>(), gd.stride(0));
      } else {
        left_product_out(gd, at::Tensor(), w_pw_t, gy);
      }
      if (images > 1) s.gd.narrow(0, 0, images).transpose(0, 1).copy_(gd.view({g.OC, images, pixels}));
      if (mid != Activation::none) {
        // mid'(pre) from the band (image j at column j * pixels) into the gD planes.
        at::parallel_for(0, g.OC, grain(cols), [&](int64_t c0, int64_t c1) {
          for (int64_t j = 0; j < images; ++j)
            for (int64_t oc = c0; oc < c1; ++oc)
              ew.activation_grad(mid, d_ptr + oc * T_ + j * pixels, gd_ptr + (j * g.OC + oc) * P + p0, pixels);
        });
      }
    }
    DepthwiseGeometry group = g;  // the depthwise kernels run on the group's planes
    group.N = images;
    const T* x_k = x.template const_data_ptr<T>() + n0 * in_plane;
    // Not streamed: with stream_output's rule it ran no faster on Xception's NCHW layers (2-core
    // Xeon, fp32, `retain`, 2026-12-06, 147x147 to 37x37, alternate processes: 0.96-1.04x a layer).
    depthwise_grad_input_nchw<T, acc_t>(group, gd_ptr, w_dw.template const_data_ptr<acc_t>(), x_k,
                                        grad_input.template mutable_data_ptr<T>() + n0 * in_plane, false);
    s.grad_dw = depthwise_grad_weight_nchw<T, acc_t>(group, gd_ptr, x_k);
    if (with_db) plane_sums_in_order(gd_ptr, images, g.OC, P, s.grad_db.template mutable_data_ptr<acc_t>());
  }
};

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> separable_backward_nchw(
    const SeparableGeometry& sg, const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& dw_weight,
    const at::Tensor& pw_weight, const std::optional<at::Tensor>& dw_bias) {
  const DepthwiseGeometry& g = sg.dw;
  const int64_t O = sg.O, plane = g.Ho * g.Wo;
  const auto acc = acc_dtype(input.scalar_type());
  const auto x = input.contiguous();
  const auto go = grad_output.contiguous();
  const auto w_dw = channel_major(dw_weight);
  const auto w_taps = nchw_band_taps(g, input, dw_weight);
  const auto b_dw = acc_bias(dw_bias);
  const bool empty = g.N == 0 || plane == 0;
  const auto nchw = input.options().memory_format(at::MemoryFormat::Contiguous);
  auto grad_input = empty ? at::zeros(input.sizes(), nchw) : at::empty(input.sizes(), nchw);  // overwritten
  auto grad_pw = at::zeros({O, g.OC}, x.options().dtype(acc));
  auto grad_dw = at::zeros({g.OC, g.kh * g.kw}, x.options().dtype(acc));
  auto grad_dw_bias = at::zeros({b_dw.defined() ? g.OC : 0}, x.options().dtype(acc));
  if (!empty) {
    const NchwBands bands(g);
    const int64_t most = bands.groups.most();
    // W_pw^T [C*M, O]: made contiguous (a weight-sized copy, up to 12 MB) for the many narrow GEMMs
    // of one image's bands, and for oneDNN (left_product_out); read transposed in place by BLAS in
    // the few wide GEMMs of image groups.
    const bool on_xsep = xsep_band_products(bands.groups, O, g.OC);
    const auto w_pw = pw_weight.reshape({O, g.OC}).to(acc).contiguous();
    const bool w_t_copy = most == 1 || linear_uses_onednn(acc);
    const auto w_pw_t = on_xsep ? at::Tensor() : w_t_copy ? w_pw.t().contiguous() : w_pw.t();
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::kHalf, at::kBFloat16, input.scalar_type(), "separable_conv2d_backward_cpu", [&] {
          const DepthwiseBandNchw<scalar_t> band(g, sg.mid_activation, x, w_dw, w_taps, b_dw, bands.T);
          // xsep's product: W_pw^T packed once as gD = W_pw^T gY's rows.
          const auto w_rows = on_xsep ? packed_rows(band.elementwise, w_pw, g.OC, O, 1, g.OC) : at::Tensor();
          const NchwGroupBackward<scalar_t> group{
              g, sg.mid_activation, O, bands, band, on_xsep, go, x, w_dw, w_rows, w_pw_t, b_dw.defined(), grad_input};
          // On xsep's product, with at least a group per thread, each thread takes whole groups (a
          // wave of one group a thread at a time; a group is one image unless the planes are small): as in the forward,
          // a band's data then stays with the thread that made it. 2-vCPU Zen 4, fp32, batch 8, backward: 147x147 128
          // -> 128 97-98 ms against 107 (all threads on each image, where the two vCPUs ran close) or 139 (where not),
          // 74x74 256 -> 256 75-77 against 76 or 92-95, 37x37 728 -> 728 134-136 against 132 or 140-142; 19x19 within
          // noise. Otherwise (the library, whose products are parallel inside, or fewer images than threads) all
          // threads work on one group at a time. The weight gradient's product must run on xsep's kernel too (BLAS
          // called from a parallel region runs on one thread, or oversubscribes).
          const int64_t threads = at::get_num_threads();
          const int64_t wave =
              on_xsep && tn_product_on_xsep(acc) && threads > 1 && bands.groups.count >= threads ? threads : 1;
          std::vector<typename NchwGroupBackward<scalar_t>::Slot> slots;
          for (int64_t i = 0; i < wave; ++i) slots.push_back(group.slot());
          units_in_waves(bands.groups.count, slots, group, [&](const auto& s) {
            grad_pw.add_(s.grad_pw);
            grad_dw.add_(s.grad_dw);
            if (b_dw.defined()) grad_dw_bias.add_(s.grad_db);
          });
        });
  }
  const auto grad_bias = b_dw.defined() ? grad_dw_bias.to(input.scalar_type()) : at::empty({0}, input.options());
  return {grad_input, from_matrix(grad_dw, dw_weight), from_matrix(grad_pw, pw_weight), grad_bias};
}

// NCHW layers of small planes with a large pointwise weight, float32 on oneDNN: the two halves
// apart. There the bands above hold image groups (planes under kMinGemmPixels / 2) whose products
// run on the library (weights past kSmallBandWeightValues): each band's product is oneDNN's
// convolution of one glued image, whose result, like the group's grad_output and depthwise-output
// gradient, is copied between the band's layout and the planes, and the backward copies W_pw
// transposed; at 14x14 728 -> 728 those copies were about a tenth of the forward+backward. Such a
// layer's intermediate is small (14x14x728, batch 8: 4.6 MB, inside L3), so fusing saves little.
// Apart: the depthwise op writes the intermediate in NCHW (its own path: channel blocks on small
// planes), the mid activation in place, then torch's own 1x1 convolution over the batch (what
// torch's NCHW path runs), no copy. The backward recomputes the intermediate, takes its gradient
// from that convolution's backward, the pointwise weight gradient on addmm_tn_fixed_order (the
// same bits at any thread count; the depthwise gradients follow oneDNN's, which may round otherwise
// at another thread count, as the bands' library products did), then the depthwise op's backward.
// Zen 4 EPYC, fp32, batch 8, 2 threads, `retain`, against torch's NCHW pair in the same process
// (min of 6, two to three runs), forward / forward+backward, this path (the fused bands before it):
// input relu, 14x14 728 -> 728 0.96-1.05x / 0.96-1.03x (0.87-0.94x / 0.83-0.94x), 7x7 1024 -> 1536
// 1.00-1.17x / 1.03-1.09x (0.94-0.98x / 0.90-0.96x), 7x7 1536 -> 2048 0.90-1.04x / 0.92-1.01x
// (0.91-0.98x / 0.80-0.86x); relu6 between the halves, 7x7 960 -> 160 0.98-0.99x / 0.89-0.92x
// (0.90-1.01x / 0.66-0.79x), 960 -> 320 1.01-1.10x / 0.92-0.97x (0.86-1.00x / 0.66-0.78x). The layers
// are GEMM-bound: torch's GEMM either way, so parity is the aim here.
bool nchw_halves_apart(const SeparableGeometry& sg, at::ScalarType dtype) {
  if (dtype != at::kFloat || !linear_uses_onednn(dtype) || sg.O * sg.dw.OC <= kSmallBandWeightValues) return false;
  return image_groups(sg.dw.N, sg.dw.Ho * sg.dw.Wo).most() > 1;
}

// The arguments the depthwise op takes again in nchw_halves_apart.
struct DepthwiseArgs {
  at::IntArrayRef stride, padding, dilation;
  std::string_view input_activation;
};

// The depthwise half apart (float32, NCHW): pre = dw(x) + bias, and post = mid(pre) (pre itself
// without a mid activation).
std::pair<at::Tensor, at::Tensor> depthwise_half_apart(const SeparableGeometry& sg, const at::Tensor& input,
                                                       const at::Tensor& dw_weight,
                                                       const std::optional<at::Tensor>& dw_bias, const DepthwiseArgs& a,
                                                       bool keep_pre) {
  const at::Tensor pre =
      depthwise_conv2d_cpu(input, dw_weight, dw_bias, a.stride, a.padding, a.dilation, a.input_activation).contiguous();
  if (sg.mid_activation == Activation::none) return {pre, pre};
  const at::Tensor post = keep_pre ? at::empty_like(pre) : pre;
  const auto& ew = depthwise_kernels<float>();
  const int64_t planes = sg.dw.N * sg.dw.OC, P = sg.dw.Ho * sg.dw.Wo;
  const float* in = pre.const_data_ptr<float>();
  float* out = post.mutable_data_ptr<float>();
  at::parallel_for(0, planes, grain(P), [&](int64_t i0, int64_t i1) {
    ew.activation(sg.mid_activation, in + i0 * P, out + i0 * P, (i1 - i0) * P);
  });
  return {pre, post};
}

at::Tensor separable_forward_apart(const SeparableGeometry& sg, const at::Tensor& input, const at::Tensor& dw_weight,
                                   const at::Tensor& pw_weight, const std::optional<at::Tensor>& bias,
                                   const std::optional<at::Tensor>& dw_bias, const DepthwiseArgs& a) {
  const at::Tensor mid = depthwise_half_apart(sg, input, dw_weight, dw_bias, a, false).second;
  return at::convolution(mid, pw_weight, bias, {1, 1}, {0, 0}, {1, 1}, false, {0, 0}, 1).contiguous();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> separable_backward_apart(
    const SeparableGeometry& sg, const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& dw_weight,
    const at::Tensor& pw_weight, const std::optional<at::Tensor>& dw_bias, const DepthwiseArgs& a) {
  const DepthwiseGeometry& g = sg.dw;
  const int64_t O = sg.O, P = g.Ho * g.Wo;
  const auto [pre, post] = depthwise_half_apart(sg, input, dw_weight, dw_bias, a, true);
  const auto go = grad_output.contiguous();
  auto grad_pw = at::zeros({O, g.OC}, go.options());
  // Images side by side in groups (image_groups): each product's reduction at least kMinGemmPixels
  // long, so that its partial sums, added into grad_pw block by block, are not a read and write of
  // the whole weight gradient per image (7x7 1536 -> 2048: 12 MB per 49 pixels).
  const ImageGroups groups = image_groups(g.N, P);
  auto gy = at::empty({O, groups.most() * P}, go.options());
  auto m = at::empty({g.OC, groups.most() * P}, go.options());
  for (int64_t k = 0; k < groups.count; ++k) {
    const int64_t n0 = groups.begin(k), images = groups.end(k) - n0, cols = images * P;
    gy.narrow(1, 0, cols).view({O, images, P}).copy_(go.view({g.N, O, P}).narrow(0, n0, images).transpose(0, 1));
    m.narrow(1, 0, cols).view({g.OC, images, P}).copy_(post.view({g.N, g.OC, P}).narrow(0, n0, images).transpose(0, 1));
    addmm_tn_fixed_order(grad_pw, gy.narrow(1, 0, cols).t(), m.narrow(1, 0, cols).t());
  }
  const auto gd = std::get<0>(at::convolution_backward(go, post, pw_weight, std::nullopt, {1, 1}, {0, 0}, {1, 1}, false,
                                                       {0, 0}, 1, {true, false, false}))
                      .contiguous();
  const int64_t planes = g.N * g.OC;
  float* gd_ptr = gd.mutable_data_ptr<float>();
  if (sg.mid_activation != Activation::none) {
    const auto& ew = depthwise_kernels<float>();
    const float* pre_ptr = pre.const_data_ptr<float>();
    at::parallel_for(0, planes, grain(P), [&](int64_t i0, int64_t i1) {
      ew.activation_grad(sg.mid_activation, pre_ptr + i0 * P, gd_ptr + i0 * P, (i1 - i0) * P);
    });
  }
  at::Tensor grad_db = at::empty({0}, input.options());
  if (dw_bias.has_value() && dw_bias->defined()) {
    grad_db = at::empty({g.OC}, go.options());
    plane_sums_in_order(gd_ptr, g.N, g.OC, P, grad_db.mutable_data_ptr<float>());
  }
  auto [grad_input, grad_dw] =
      depthwise_conv2d_backward_cpu(gd, input, dw_weight, a.stride, a.padding, a.dilation, a.input_activation);
  return {grad_input, grad_dw, from_matrix(grad_pw, pw_weight), grad_db};
}

}  // namespace

at::Tensor separable_conv2d_cpu(const at::Tensor& input, const at::Tensor& dw_weight, const at::Tensor& pw_weight,
                                const std::optional<at::Tensor>& bias, at::IntArrayRef stride, at::IntArrayRef padding,
                                at::IntArrayRef dilation, std::string_view input_activation,
                                std::string_view mid_activation, const std::optional<at::Tensor>& dw_bias) {
  const SeparableGeometry sg =
      check_separable_forward("xsep.separable_conv2d", at::kCPU, input, dw_weight, pw_weight, bias, stride, padding,
                              dilation, input_activation, mid_activation, dw_bias);
  // The ATen calls below compute values, not graphs, even when the inputs require grad.
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  const DepthwiseGeometry& g = sg.dw;
  const Activation mid = sg.mid_activation;
  const int64_t O = sg.O;
  if (runs_nchw(input) && nchw_halves_apart(sg, input.scalar_type()))
    return separable_forward_apart(sg, input, dw_weight, pw_weight, bias, dw_bias,
                                   {stride, padding, dilation, input_activation});
  if (runs_nchw(input)) return separable_forward_nchw(sg, input, dw_weight, pw_weight, bias, dw_bias);
  const int64_t P = g.N * g.Ho * g.Wo;
  if (P == 0) return in_format_of(empty_nhwc({g.N, O, g.Ho, g.Wo}, input), input);

  const auto x = nhwc(input);
  const auto acc = acc_dtype(input.scalar_type());
  const auto w_dw = tap_major(dw_weight);
  const auto b = acc_bias(bias);
  const auto b_dw = acc_bias(dw_bias);
  // The depthwise tiles prefetch their next input rows where input and output exceed the caches.
  const bool prefetch = prefetch_rows(x.nbytes() + P * O * x.element_size());
  if (fused_forward_on_xsep(input.scalar_type(), g.OC, O)) {
    auto out = empty_nhwc({g.N, O, g.Ho, g.Wo}, input);
    const auto w_pw = pw_weight.reshape({O, g.OC}).to(acc).contiguous();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "separable_conv2d_cpu", [&] {
      separable_forward_rows(DepthwiseTile<scalar_t>(g, mid, x, w_dw, b_dw, prefetch), O, w_pw, b, out);
    });
    return in_format_of(out, input);
  }
  const int64_t T = nhwc_forward_tile_pixels(g.OC, O, P, acc);
  // [O, C*M], packed for the products of several tiles (packing for one call costs more than it saves).
  const auto w_pw_2d = pw_weight.reshape({O, g.OC}).to(acc);
  const auto w_pw = T < P ? packed_linear_weight(w_pw_2d, T) : w_pw_2d;
  auto d_buf = at::empty({T, g.OC}, x.options().dtype(acc));
  // One tile in float32/float64: the product's own result is the output's rows (no copy).
  if (T >= P && input.scalar_type() == acc) {
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "separable_conv2d_cpu", [&] {
      const DepthwiseTile<scalar_t> tile(g, mid, x, w_dw, b_dw, prefetch);
      at::parallel_for(0, P, tile.grain, [&](int64_t q0, int64_t q1) {
        tile(0, q0, q1, d_buf.mutable_data_ptr<scalar_t>(), d_buf.mutable_data_ptr<scalar_t>());
      });
    });
    const auto rows = linear(d_buf.narrow(0, 0, P), w_pw, b).contiguous();
    return in_format_of(rows.view({g.N, g.Ho, g.Wo, O}).permute({0, 3, 1, 2}), input);
  }
  auto out = empty_nhwc({g.N, O, g.Ho, g.Wo}, input);

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "separable_conv2d_cpu", [&] {
    using acc_t = Acc<scalar_t>;
    constexpr bool out_is_acc = std::is_same_v<scalar_t, acc_t>;
    const DepthwiseTile<scalar_t> tile(g, mid, x, w_dw, b_dw, prefetch);
    acc_t* d_ptr = d_buf.mutable_data_ptr<acc_t>();
    scalar_t* out_ptr = out.mutable_data_ptr<scalar_t>();
    const auto out_rows = out.permute({0, 2, 3, 1}).view({P, O});
    auto y_buf = out_is_acc ? at::Tensor() : at::empty({T, O}, x.options().dtype(acc));
    for (int64_t p0 = 0; p0 < P; p0 += T) {
      const int64_t n = std::min(T, P - p0);
      at::parallel_for(0, n, tile.grain, [&](int64_t q0, int64_t q1) { tile(p0, q0, q1, d_ptr, d_ptr); });
      const auto d = d_buf.narrow(0, 0, n);
      auto y = out_is_acc ? out_rows.narrow(0, p0, n) : y_buf.narrow(0, 0, n);
      linear_out(y, d, w_pw, b);
      if constexpr (!out_is_acc) {
        const acc_t* y_ptr = y.const_data_ptr<acc_t>();
        at::parallel_for(0, n * O, 16384,
                         [&](int64_t i0, int64_t i1) { tile.k.from_acc(y_ptr + i0, out_ptr + p0 * O + i0, i1 - i0); });
      }
    }
  });
  return in_format_of(out, input);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> separable_conv2d_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& dw_weight, const at::Tensor& pw_weight,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, std::string_view input_activation,
    std::string_view mid_activation, const std::optional<at::Tensor>& dw_bias) {
  const SeparableGeometry sg =
      check_separable_backward("xsep.separable_conv2d_backward", at::kCPU, grad_output, input, dw_weight, pw_weight,
                               stride, padding, dilation, input_activation, mid_activation, dw_bias);
  // The ATen calls below compute values, not graphs, even when the inputs require grad.
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  const DepthwiseGeometry& g = sg.dw;
  const Activation mid = sg.mid_activation;
  const int64_t O = sg.O;
  if (runs_nchw(input) && nchw_halves_apart(sg, input.scalar_type()))
    return separable_backward_apart(sg, grad_output, input, dw_weight, pw_weight, dw_bias,
                                    {stride, padding, dilation, input_activation});
  if (runs_nchw(input)) return separable_backward_nchw(sg, grad_output, input, dw_weight, pw_weight, dw_bias);

  const int64_t P = g.N * g.Ho * g.Wo;
  const auto acc = acc_dtype(input.scalar_type());
  const auto x = nhwc(input);
  const auto go = nhwc(grad_output);
  const auto w_dw = tap_major(dw_weight);
  const auto w_pw = pw_weight.reshape({O, g.OC}).to(acc);  // [O, C*M]
  const auto b_dw = acc_bias(dw_bias);
  auto grad_pw = at::zeros({O, g.OC}, x.options().dtype(acc));
  const bool rows_on_xsep = fused_products_on_xsep();
  // The gradient of the depthwise output from oneDNN's backward-data primitive over the whole
  // grad_output, before the tiles, where the pointwise op's input gradient takes it
  // (grad_input_on_onednn: on Intel, float32 channels-last from kBlasLongGradInputRows pixels); the
  // tiles then recompute the depthwise output for the weight gradient only, in tiles of at least
  // kTnLongPixels pixels, so that each tile's product takes the long products' route (gemm.h). On
  // the 2-core Xeon (fp32, batch 8, `retain`, 2026-12-06, alternate processes) the backward of
  // 147x147 64 -> 128 had spent 14.5 ms on MKL's input gradients per tile (oneDNN's whole: 11) and
  // 21 ms on the 15716-pixel tiles' weight gradients in MKL's fixed blocks (17 ms on the long
  // route); over three rounds it went from 46-48 ms to 42, 128 -> 128 from 77-80 to 73, 74x74
  // 128 -> 256 from 32-33 to 29-33, 256 -> 256 within noise (54-59 either way).
  const bool grad_mid_on_onednn = !rows_on_xsep && P > 0 && input.scalar_type() == at::kFloat &&
                                  grad_input_on_onednn(at::kFloat, false, g.N, g.Ho * g.Wo);
  // Tiles of 256K values of depthwise output for short products on xsep's (at least 1024 pixels), a
  // tile's grad_output rows then still in the caches for the second product that reads them. 1M
  // values had run 147x147 64->128 and 128->128, 74x74 128->256 and 256->256 1.01-1.13x faster
  // than 4M (Zen 5, fp32, batch 8, interleaved, both allocator settings; 37x37 256->728 within
  // noise). Zen 4 EPYC (fp32, batch 8, 2 threads, `retain`, one process switching it call by call,
  // medians of 10, two runs, row_product reading rows in place), 256K against 1M: the backward
  // 147x147 64->128 1.16x, 128->128 1.05-1.10x, 74x74 128->256 1.01-1.07x, 256->256 1.04-1.05x,
  // 37x37 256->728 1.02x, MobileNet's 112x112 32->16 1.17x, 56x56 144->24 1.05x, 96->24 1.11x, 28x28
  // 192->32 1.05x; 128K and 64K no faster than 256K.
  constexpr int64_t kShortBackwardTileValues = int64_t(1) << 18;  // 1 MB of float32: an L2
  int64_t T = rows_on_xsep && g.OC <= kShortProductK
                  ? tile_pixels(g.OC, std::max<int64_t>(P, 1), kShortBackwardTileValues, 1024)
                  : nhwc_tile_pixels(g.OC, std::max<int64_t>(P, 1), acc);
  if (grad_mid_on_onednn && P >= kTnLongPixels) {
    const int64_t long_tiles = P / kTnLongPixels;  // each of at least kTnLongPixels pixels
    T = std::max(T, (P + long_tiles - 1) / long_tiles);
  }
  // Gradient with respect to the depthwise output (before the mid activation), [P, C*M]: with one
  // tile on the library's product, its own result (no copy).
  const bool one_tile = !grad_mid_on_onednn && !rows_on_xsep && P > 0 && T >= P;
  at::Tensor grad_mid;
  if (grad_mid_on_onednn) {
    // The [N, C*M, Ho, Wo] input the backward-data primitive takes the shape of (never written).
    const auto mid_shape = empty_nhwc({g.N, g.OC, g.Ho, g.Wo}, x);
    grad_mid = onednn_grad_input(go, mid_shape, pw_weight).permute({0, 2, 3, 1}).reshape({P, g.OC});
  } else if (!one_tile) {
    grad_mid = at::empty({P, g.OC}, x.options().dtype(acc));
  }
  const auto w_pw_t = rows_on_xsep || grad_mid_on_onednn ? at::Tensor()
                      : one_tile                         ? w_pw.t()
                                                         : packed_linear_weight(w_pw.t(), T);  // [C*M, O]
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "separable_conv2d_backward_cpu", [&] {
    using acc_t = Acc<scalar_t>;
    constexpr bool go_is_acc = std::is_same_v<scalar_t, acc_t>;
    const DepthwiseTile<scalar_t> tile(g, mid, x, w_dw, b_dw, prefetch_rows(x.nbytes() + go.nbytes()));
    const auto& k = tile.k;
    const scalar_t* go_ptr = go.const_data_ptr<scalar_t>();
    const auto go_rows = go.permute({0, 2, 3, 1}).view({P, O});
    const auto acc_options = x.options().dtype(acc);
    // xsep's product: W_pw [O, C*M] packed as gD = gY W_pw's operand, and gD's rows in blocks.
    const at::Tensor w_rows = rows_on_xsep ? row_product_weight<acc_t>(k, w_pw.contiguous(), true) : at::Tensor();
    // What one tile in flight writes: its depthwise output (pre and post mid activation), its
    // grad_output in acc_t, and its own share of the pointwise weight's gradient.
    struct Slot { at::Tensor d, m, gy, grad_pw; };
    const auto slot = [&] {
      Slot s;
      s.d = at::empty({T, g.OC}, acc_options);
      s.m = mid == Activation::none ? s.d : at::empty({T, g.OC}, acc_options);
      s.gy = go_is_acc ? at::Tensor() : at::empty({T, O}, acc_options);
      s.grad_pw = at::empty({O, g.OC}, acc_options);
      return s;
    };
    // The tile starting at pixel p0 into slot s: called by all threads (each step parallel inside)
    // or by one thread in a parallel region (each step on that thread alone), the same sums either way.
    const auto run_tile = [&](int64_t p0, Slot& s) {
      const int64_t n = std::min(T, P - p0);
      acc_t* d_ptr = s.d.mutable_data_ptr<acc_t>();
      acc_t* m_ptr = s.m.mutable_data_ptr<acc_t>();
      at::parallel_for(0, n, tile.grain, [&](int64_t q0, int64_t q1) {
        tile(p0, q0, q1, d_ptr, m_ptr);
        if constexpr (!go_is_acc) {
          k.to_acc(go_ptr + (p0 + q0) * O, s.gy.mutable_data_ptr<acc_t>() + q0 * O, (q1 - q0) * O);
        }
      });
      const auto gy = go_is_acc ? go_rows.narrow(0, p0, n) : s.gy.narrow(0, 0, n);
      s.grad_pw.zero_();
      addmm_tn_fixed_order(s.grad_pw, gy, s.m.narrow(0, 0, n));
      if (rows_on_xsep) {
        // gD's rows straight into grad_mid (times mid'(pre)), each thread its blocks of the tile.
        const acc_t* gy_ptr = gy.const_data_ptr<acc_t>();
        const acc_t* pk = w_rows.const_data_ptr<acc_t>();
        acc_t* gm_ptr = grad_mid.mutable_data_ptr<acc_t>();
        const RowBlocks blocks(n, O);
        at::parallel_for(0, blocks.count, 1, [&](int64_t b0, int64_t b1) {
          const std::unique_ptr<acc_t[]> work = row_product_workspace<acc_t>(blocks.longest(), O, O);
          for (int64_t i = b0; i < b1; ++i) {
            const int64_t q0 = blocks.begin(i), rows = blocks.end(i) - q0;
            acc_t* gm = gm_ptr + (p0 + q0) * g.OC;
            k.row_product(rows, O, g.OC, gy_ptr + q0 * O, O, pk, nullptr, gm, g.OC, work.get(), false);
            if (mid != Activation::none) k.activation_grad(mid, d_ptr + q0 * g.OC, gm, rows * g.OC);
          }
        });
        return;
      }
      if (one_tile) {
        grad_mid = linear(gy, w_pw_t, at::Tensor()).contiguous();
      } else if (!grad_mid_on_onednn) {
        auto gm = grad_mid.narrow(0, p0, n);
        linear_out(gm, gy, w_pw_t, at::Tensor());
      }
      acc_t* gm_ptr = grad_mid.mutable_data_ptr<acc_t>();
      if (mid != Activation::none) {
        at::parallel_for(0, n, tile.grain, [&](int64_t q0, int64_t q1) {
          k.activation_grad(mid, d_ptr + q0 * g.OC, gm_ptr + (p0 + q0) * g.OC, (q1 - q0) * g.OC);
        });
      }
    };
    // On xsep's product, with 1M-value tiles (short products) and at least a tile per thread, each
    // thread takes whole tiles (a wave of one tile a thread at a time): a tile's depthwise output
    // then stays with the thread that made it, where the pointwise weight's gradient read all of
    // it from every thread. Taller tiles (4M values) would not leave the caches room for a tile
    // per thread; the library's products run parallel inside. Either way each tile's share of the
    // weight gradient is its own sum, added tile after tile: the same bits at any thread count. The
    // weight gradient's product must run on xsep's kernel too (BLAS in a parallel region: see NCHW).
    const int64_t threads = at::get_num_threads(), tiles = (P + T - 1) / T;
    const int64_t wave =
        rows_on_xsep && tn_product_on_xsep(acc) && T * g.OC <= (int64_t(1) << 20) && threads > 1 && tiles >= threads
            ? threads
            : 1;
    std::vector<Slot> slots;
    for (int64_t i = 0; i < wave; ++i) slots.push_back(slot());
    units_in_waves(
        tiles, slots, [&](int64_t t, Slot& s) { run_tile(t * T, s); }, [&](const Slot& s) { grad_pw.add_(s.grad_pw); });
  });
  auto [grad_input, grad_dw] = depthwise_backward_from_acc(g, input, x, grad_mid, dw_weight, w_dw);
  // The depthwise bias's gradient: grad_mid summed over the pixels (one more pass over it, so only
  // when there is a depthwise bias; empty otherwise).
  const auto grad_dw_bias =
      b_dw.defined() ? column_sums_fixed_order(grad_mid).to(input.scalar_type()) : at::empty({0}, input.options());
  return {grad_input, grad_dw, from_matrix(grad_pw, pw_weight), grad_dw_bias};
}

}  // namespace xsep::cpu
