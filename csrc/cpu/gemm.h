// The CPU ops' dense products, on the library that runs them fastest on this machine.
//
// torch ships two: BLAS (MKL on x86, through at::mm) and oneDNN (behind its convolutions and
// mkldnn::_linear_pointwise). On Intel processors MKL runs its AVX-512 code and is the faster one
// (2-core Xeon, fp32: at::mm 250-320 GFLOP/s, a 1x1 convolution 200-265). On AMD processors MKL
// runs its AVX2 code while oneDNN runs AVX-512: on the 2-core AMD EPYC (Zen 4, AVX-512), fp32,
// Xception's pointwise shapes, at::mm 140-190 GFLOP/s against oneDNN's 200-220, which made the
// pointwise op 0.69x of torch's 1x1 convolution at 10x10 1536 -> 2048 (issue 14). So: oneDNN on
// AMD processors, BLAS elsewhere; XSEP_CPU_GEMM=blas|onednn overrides it (tests and benchmarks).
// Only float32 products go to oneDNN; the others, and every product when torch was built without
// oneDNN, use BLAS. Weight gradients need a fixed summation order (addmm_tn_fixed_order, host.h):
// see weight_gemm_library below.
#pragma once

#include <ATen/core/Tensor.h>

namespace xsep::cpu {

// "xsep", "blas" or "blas (xsep from N pixels)": what runs the weight gradients' products
// (addmm_tn_fixed_order, host.h) for float32 and float64: xsep's own kernel (tn_product_impl.h) on
// AMD processors with AVX-512 kernels, where it ran Xception's pointwise weight gradients 1.1-1.3x
// faster than MKL's products in fixed blocks (Zen 4, fp32, batch 8); elsewhere BLAS, except, on
// Intel with AVX-512 kernels, float32 products of row operands (channels-last) over at least
// kTnLongPixels pixels. With AVX2 kernels BLAS everywhere: on the 2-core Zen 4 restricted to AVX2
// (XSEP_CPU_ISA=avx2, ONEDNN_MAX_CPU_ISA=AVX2, ATEN_CPU_CAPABILITY=avx2, MKL_ENABLE_INSTRUCTIONS=
// AVX2: an AVX2 machine's code on this one's cores; fp32, batch 8, `retain`, 2026-12-07) xsep's
// AVX2 kernel left the pointwise op's forward+backward at 0.84x of torch in NCHW (0.65-0.80x from
// 74x74 256 -> 256 down) and 0.94x channels-last, MKL's at 1.00x and 0.98x; the fused op's 0.90x
// -> 1.01x and 0.96x -> 1.03x (geometric means over Xception's layers, one run each). On
// Intel MKL runs its AVX-512 code: on the 2-core Intel Xeon (fp32, batch 8, 2026-12-05, alternate
// processes) it ran channels-last weight gradients at 270-300 GFLOP/s on Xception's layers from
// 37x37 down against this kernel's 215-250, MobileNet's 28x28 144 -> 32 and 14x14 384 -> 96 at
// 0.9x of it, but over many pixels this kernel ran ahead: 147x147 64 -> 128 1.17-1.45x, 128 -> 128
// 1.05-1.13x, 112x112 32 -> 16 1.45-1.5x and 16 -> 96 1.23x, 56x56 24 -> 144 1.25-1.3x, 74x74 and
// 56x56 96 -> 24 even; the NCHW ones (pixel-contiguous operands) MKL at 250-300 against 110-230.
// XSEP_CPU_WEIGHT_GEMM=blas|xsep overrides it (all products on one). Chosen once per process.
const char* weight_gemm_library();
inline constexpr int64_t kTnLongPixels = 16384;
// Whether addmm_tn_fixed_order runs on xsep's kernel for this dtype (every product).
bool tn_product_on_xsep(at::ScalarType dtype);
// Whether it does for a product of row operands over K pixels into out [M, N]: as
// tn_product_on_xsep, and where weight_gemm_library is "blas (xsep from N pixels)", float32 with K >=
// kTnLongPixels, or at any K with b's rows read in place (tn_reads_b_in_place, depthwise_kernels.h)
// and at most kTnShortInPlaceMaxRows rows of out. There xsep's kernel ran ahead of MKL's (2-core
// Intel Xeon, fp32, batch 8, 2026-12-06, alternate processes, median of 2-3, GFLOP/s, MKL -> xsep):
// MobileNet's 28x28 32 -> 192 156 -> 244, 14x14 64 -> 384 219 -> 295, 8x40x40 64 -> 128 214 -> 284,
// 28x28 96 -> 64 204 -> 280, 2x74x74 128 -> 128 282 -> 323, 37x37 128 -> 384 273 -> 309, 128 -> 512
// 272 -> 294; with more rows it fell behind (37x37 128 -> 704 to 1024: 150-204 against MKL's
// 265-280), and with b packed too (28x28 192 -> 32 218 against 171, 37x37 728 -> 728 360 against 258).
// Since the kernel prefetches a's next block (tn_product_impl.h) those longer products run about as
// fast as MKL's (37x37 128 -> 728 283-300, 128 -> 1024 265-273 GFLOP/s): the limit stays.
bool tn_rows_product_on_xsep(at::ScalarType dtype, int64_t K, int64_t M, int64_t N);
inline constexpr int64_t kTnShortInPlaceMaxRows = 512;

// "xsep" or "library": what runs the fused op's pointwise products (forward, and the backward's
// gradient of the depthwise output), every dtype: xsep's own kernel (row_product_impl.h), on AMD
// processors whose kernels run AVX-512 or AVX2 (channels_last: the depthwise output of each
// thread's block of pixels multiplied from L2 straight into the output; NCHW: each band of one
// image, separable_conv2d.cpp); elsewhere the library of linear() (gemm_library) and
// left_product_out, tile by tile. Its AVX2 build (6 x 16 register tiles), on the 2-core Zen 4 held
// to AVX2 code in every library (see weight_gemm_library; `retain`, 2026-12-07, three runs against
// two, geometric means over Xception's layers, forward / forward+backward): NCHW 1.08-1.10x /
// 0.99-1.06x of torch against 0.80-0.87x / 0.85-0.92x tile by tile through oneDNN's AVX2 code,
// channels_last 1.14-1.17x / 1.03-1.13x against 0.98-1.02x / 1.01-1.02x.
// oneDNN, AMD's library, writes each result into a new tensor (a copy per tile) and re-packs the
// weight per call: on Zen 5 (fp32, batch 8, `retain`, interleaved) the forward ran 1.03-1.27x of
// torch with xsep's product against 0.82-0.97x tile by tile through oneDNN. On Intel, BLAS (MKL)
// writes in place: on the 2-core Xeon (2026-12-05, `retain`, alternate processes) the fused op's
// forward+backward ran 1.0-1.2x faster on it than on xsep's product in channels_last (equal at
// 147x147 and 74x74), 1.0-1.35x in NCHW; except the channels-last forwards of short, narrow
// products (fused_forward_on_xsep below), "library (xsep for short channels-last forwards)".
// XSEP_CPU_FUSED_GEMM=library|xsep overrides it (every product on one).
const char* fused_gemm_library();
bool fused_products_on_xsep();

// The channels-last fused forward's products on xsep's kernel where the others run on BLAS
// (Intel, kernels in AVX-512): float32, K <= kShortProductK mid channels, N output channels from
// kRowForwardMinColumns to kRowForwardMaxColumns, where xsep's threads, each multiplying its block
// of depthwise output from L2 straight into the output, ran ahead of MKL called tile by tile (why
// MKL falls behind on these shapes was not profiled). On the 2-core Xeon (fp32, batch 8,
// 2026-12-06, alternate processes, both allocator settings, two rounds) the forward ran faster on
// xsep's product at 147x147 64 -> 128 (1.02-1.16x), 128 -> 128 (1.06-1.10x), 74x74 256 -> 256
// (1.03-1.09x) and 128 -> 256 (0.99-1.10x); slower on wider products, 37x37 256 -> 728
// 0.94-0.99x, 10x10 1024 -> 1536 0.84x, MobileNet's 7x7 960 -> 160 0.87-0.90x, and on narrower
// ones, whose blocks of depthwise output, packed into the kernel's row tiles, meet one 32-column
// panel: 112x112 32 -> 16 0.69-0.79x, 56x56 144 -> 24 0.84-1.0x, 28x28 192 -> 32 0.82-0.93x.
// (14x14 384 -> 64 and 576 -> 96, longer, ran 0.96-1.06x.)
// The backward stays on the library: at 147x147 and 74x74 its time moved within noise on xsep's.
inline constexpr int64_t kRowForwardMinColumns = 64;
inline constexpr int64_t kRowForwardMaxColumns = 256;
bool fused_forward_on_xsep(at::ScalarType dtype, int64_t K, int64_t N);

// The longest inner dimension (K) of a "short" product: one whose output is large next to its
// operands, where oneDNN's 1x1 convolution beats its inner product (the pointwise op) and the
// copy of the inner product's result out of its own tensor is a large share of the time (the
// fused op's forward tiles). Xception's 64-, 128- and 256-channel layers.
inline constexpr int64_t kShortProductK = 256;

// "blas" or "onednn": the library linear() and linear_out() use for float32 (chosen once per process).
const char* gemm_library();
// Whether linear() and linear_out() run on oneDNN for operands of this dtype.
bool linear_uses_onednn(at::ScalarType dtype);

// The fewest rows (P) of a product that oneDNN runs faster as its 1x1 convolution than as its inner
// product. Zen 5 (AMD EPYC family 26, fp32, 2 threads, interleaved, K and N from 728 to 2048): at
// 2888 rows (19x19, batch 8) and 10952 (37x37) the convolution ran 0-9% faster (433-449 GFLOP/s,
// what torch's own 1x1 convolution reaches); at 800 rows (10x10) the inner product ran 0-7% faster
// (30% at K 2048, N 728).
inline constexpr int64_t kConvProductMinRows = 2048;
// Whether a product of `rows` rows and inner dimension K runs on oneDNN's 1x1 convolution: float32
// on oneDNN, with a short inner dimension (K <= kShortProductK) or at least kConvProductMinRows rows.
bool product_on_onednn_conv(at::ScalarType dtype, int64_t rows, int64_t K);

// The most input channels of a channels-last pointwise forward that runs as oneDNN's 1x1
// convolution where the products otherwise run on BLAS (Intel). On the 2-core Intel Xeon (fp32,
// batch 8, `retain`, 2026-12-05, two runs, interleaved with torch's) MKL ran the 147x147 64 -> 128
// forward at 0.84-0.91x of torch's 1x1 convolution and 128 -> 128 at 0.94x, oneDNN's at 0.99-1.04x
// and 0.98-1.01x; 74x74 128 -> 256 even; from 256 channels MKL as fast or faster (37x37 256 -> 728
// 1.17x against 0.97-0.99x).
inline constexpr int64_t kBlasShortForwardK = 128;
// Whether the channels-last pointwise forward, `rows` pixels of K channels, runs as oneDNN's 1x1
// convolution: as product_on_onednn_conv where products run on oneDNN; float32 with K <=
// kBlasShortForwardK where they run on BLAS (and torch has oneDNN).
bool forward_on_onednn_conv(at::ScalarType dtype, int64_t rows, int64_t K);

// The fewest pixels of a channels-last input gradient that runs on oneDNN's backward-data
// primitive (torch's own call) where the products otherwise run on BLAS (Intel). On the 2-core
// Intel Xeon (fp32, batch 8, `retain`, 2026-12-05, interleaved, min of 5-7, two runs) oneDNN ran
// Xception's 147x147 and 74x74 input gradients 1.05-1.16x faster than MKL, and MobileNet's 112x112
// 16 -> 96 1.04-1.28x; from 37x37 down each led on some layers and trailed on others (37x37 256 ->
// 728 oneDNN 1.11x, 728 -> 728 MKL 1.03x, 19x19 and 10x10 MKL 1.03-1.15x, MobileNet's 28x28 to
// 7x7 0.9-1.2x either way). Products that long stream their operands from memory: the long
// products of the weight gradients' rule (kTnLongPixels).
inline constexpr int64_t kBlasLongGradInputRows = kTnLongPixels;
// The most pixels a plane may hold for an NCHW input gradient to run on oneDNN where the products
// otherwise run on BLAS (Intel): there xsep runs it as one MKL product per image (W^T gY_n), which
// small planes make short. On the 2-core Intel Xeon (fp32, batch 8, `retain`, 2026-12-06,
// XSEP_CPU_GEMM=blas against onednn, and builds with and without this rule, in alternating
// processes, min of 6-20, two rounds each) oneDNN ran Xception's 19x19 728 -> 1024 and 10x10 1536 ->
// 2048 input gradients 1.04-1.07x faster, 19x19 728 -> 728 and 10x10 1024 -> 1536 within noise
// (0.95-1.03x), MobileNet's 14x14 1.03-1.25x and 7x7 0.98-1.07x; MKL led from 22x22 (128 -> 728
// 1.07-1.18x; 28x28 32 -> 192 1.5x; 37x37 and larger 1.2-1.8x).
inline constexpr int64_t kOneDnnNchwGradInputMaxPlane = 400;
// Whether the pointwise input gradient of `images` planes of `plane` pixels (NCHW or not) runs on
// oneDNN: float32 wherever products run on oneDNN (linear_uses_onednn, every layout); where they
// run on BLAS (and torch has oneDNN), float32 channels-last with at least kBlasLongGradInputRows
// pixels in all, and float32 NCHW with planes of at most kOneDnnNchwGradInputMaxPlane pixels.
bool grad_input_on_onednn(at::ScalarType dtype, bool nchw, int64_t images, int64_t plane);
// The pointwise input gradient on oneDNN: torch's own call, its backward-data primitive, in the
// input's memory format (input gives only its shape and format: the fused op passes an unwritten
// tensor). Before, xsep ran it as the forward 1x1 convolution of grad_output by W^T (a copy of
// W^T each call, which oneDNN then reordered), or in channels-last below kConvProductMinRows rows
// as its inner product: Zen 4 EPYC, fp32, batch 8, 2 threads, Xception's pointwise layers (one
// process, interleaved, min of 4), NCHW 1.02-1.35x (10x10 1024 -> 1536 1.35x, 1536 -> 2048 1.18x,
// 19x19 1.05x), channels_last 1.00-1.14x (10x10 1536 -> 2048). Its sums run over the output
// channels with no split between threads: no weight gradient's fixed order to keep.
at::Tensor onednn_grad_input(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight);

// x [P, K] . w [N, K]^T (+ bias [N] when defined): the pointwise forward's product, and the input
// gradient's with w = the weight transposed. On oneDNN, its 1x1 convolution of x viewed as one
// channels-last [1, K, 1, P] image where product_on_onednn_conv, else its inner product; either
// reads w contiguous (a copy otherwise). Pass packed_linear_weight(w, rows) when calling more than
// once with it.
at::Tensor linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias);
// The same, written into out [P, N] (the output's rows, a tile buffer).
void linear_out(at::Tensor& out, const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias);

// out [R, T] (rows may lie further apart) = a [R, K] x b [K, T] (+ bias [R, 1] when defined): the
// NCHW paths' products, a weight on the left of a band of planes. On oneDNN (float32,
// linear_uses_onednn) as its 1x1 convolution of b viewed as one [K, 1, T] image, the result copied
// into out: at::mm is MKL, which runs AVX2 code on AMD processors (Zen 5: 0.18-0.20 TFLOP/s against
// oneDNN's 0.36-0.42, 2 threads). Else BLAS, in place.
void left_product_out(at::Tensor& out, const at::Tensor& bias, const at::Tensor& a, const at::Tensor& b);

// w [N, K] prepared for many linear()/linear_out() calls of about `rows` rows each (the fused op's
// tiles): for oneDNN's inner product, packed once into its blocked layout (an opaque tensor, for
// those calls only), which it otherwise does on every call (tiles of 1369 x 728 x 728 on the AMD
// EPYC, Zen 4: 130-170 GFLOP/s unpacked, 170-185 packed); else (BLAS, or products that run on
// oneDNN's convolution) w itself.
at::Tensor packed_linear_weight(const at::Tensor& w, int64_t rows);

}  // namespace xsep::cpu
