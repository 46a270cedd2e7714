// CPU depthwise convolution: argument checks, layout and threading around the vectorised kernels.
// NCHW inputs run the NCHW plane kernels (depthwise_nchw_kernels.h) in place, or, on small planes,
// channel blocks through the NHWC kernels (see nchw_depthwise_path); channels-last inputs the NHWC
// kernels (depthwise_kernels.h). Outputs are returned in the input's memory format.
#include <ATen/Context.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/convolution.h>
#include <ATen/ops/convolution_backward.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <optional>
#include <string_view>
#include <tuple>

#include "common/conv_args.h"
#include "common/layout.h"
#include "cpu/depthwise_kernels.h"
#include "cpu/depthwise_nchw_kernels.h"
#include "cpu/host.h"
#include "cpu/ops.h"

// ATen's OpenMP backend implements at::parallel_for inline, in this file: without -fopenmp every
// op here would run on one thread.
#if AT_PARALLEL_OPENMP && !defined(_OPENMP)
#error "xsep: compile the CPU host code with -fopenmp, or at::parallel_for runs serially"
#endif

namespace xsep::cpu {

// Channel blocks (auto) where the planes are small for the plane kernels, which hold a plane's
// pixels in their vector lanes (a plane's fill, tap table and row stores then cost more than its
// multiply-adds): planes up to 28 wide for 3x3 (and smaller) kernels, up to 56 wide for 5x5 and 6x6,
// any for 7x7 and wider; in float32 layers (the other types were not timed; their 16-bit
// transposes go element by element) of 128 or more planes. Zen 4 EPYC, fp32, 2 threads, 2026-12-05,
// two runs of benchmarks/results/cpu-amd-epyc-avx512-2t/2026-12-05_nchw-depthwise-paths
// (scripts/nchw_depthwise_paths.py), blocks over the plane kernels, forward / backward, batch 8
// (batch 1): 3x3 on planes 7 to 28 wide, stride 1 or 2, 1.02-2.05x / 0.97-3.03x (0.96-1.76x /
// 1.21-2.06x); 5x5, 7 to 56 wide, 0.96-2.90x / 0.90-3.36x (0.90-1.61x / 0.89-2.38x; the low ends:
// stride 2 on 56 wide); 7x7, 7 to 56 wide, 1.42-3.73x / 1.19-1.95x (1.62-1.79x / 1.21-1.68x).
// Against 0.56-1.07x forward (most below 1) / 0.85-1.33x backward for 3x3 on planes 37 to 112
// wide. On the narrow planes oneDNN ran by default until then (torch's own call,
// XSEP_CPU_NCHW_DEPTHWISE=narrow, which holds channels in its lanes too), blocks were 1.03-2.82x
// faster forward and 1.12-2.37x backward.
// And only with 128 or more planes (images x channels: 8 blocks of 16 channels, items enough for
// 2 threads): one 56x56 image of 40 channels, 7x7, ran 0.84x backward in blocks (one block), while
// the plane kernels split its planes between threads. (A bound on the thread count would make the
// weight gradient's bits depend on it.)
bool nchw_in_blocks(const DepthwiseGeometry& g, at::ScalarType dtype) {
  const bool some_output = g.N > 0 && g.C > 0 && g.Ho * g.Wo > 0;
  switch (nchw_depthwise_setting_choice()) {
    case NchwDepthwiseSetting::kBlocks: return some_output;
    case NchwDepthwiseSetting::kAuto: {
      const bool small = g.W <= (g.kw >= 7 ? g.W : g.kw >= 5 ? 56 : 28);
      return some_output && small && g.N * g.C >= 128 && dtype == at::kFloat;
    }
    default: return false;
  }
}

// Shifted rows (DepthwiseNchwKernels::forward_shifted, AVX-512 float32) for the forward of 3x3
// layers at unit stride with padding 1 (the output the input's size), depth multiplier 1, planes
// 10 to 56 wide of at least 100 values, with the automatic setting: each plane read in place, no
// padded copy and no transposes (the channel blocks' transposes took about three quarters of
// 19x19x728's forward); without an input relu, their input gradient too (the forward of
// grad_output with the kernel turned half a turn: depthwise_grad_input_nchw), the weight gradient
// staying where it ran. Zen 4 EPYC, fp32, batch 8, 2 threads,
// `retain`, 2026-12-08, alternate processes against channel blocks / plane kernels (min of 38-58
// calls, three to five pairs, ms): 19x19x728 0.43-0.71 against 0.81-2.07, 37x37x728 1.72-2.73
// against 3.33-4.32, 37x37x256 0.53-1.02 against 0.78-1.30, 56x56x144 0.68-1.18 against 0.81-1.42,
// 28x28x192 0.25-0.46 against 0.33-0.54, 14x14x576 0.22-0.36 against 0.27-0.47, 10x10x1024
// 0.24-0.39 against 0.28-0.43, 10x10x1536 0.34-0.65 against 0.40-0.81 (most pairs its way: this VM's
// noise). Hence the bounds: 7x7x960 ran 0.16 against 0.15 (four vectors for 49 values, the window
// set up a plane), 64x64x32 0.24-0.43 against 0.21-0.31 (rows of whole vectors: the plane kernels'
// aligned path), and 5x5 and 7x7 kernels 1.5-4x slower than the channel blocks (EfficientNet's
// 14x14x480 and 28x28x240, ConvNeXt's 56x56x40 to 7x7x320: a lane shift and a masked multiply-add
// per tap, against the blocks' register tiles). The fused op's NCHW bands of whole planes run it
// too (forward, and the backward's recomputation): 19x19 728 -> 728 forward 16.0-17.0 against
// 16.6-19.0 ms, forward+backward 51-54 against 54-58. The depthwise op's backward (input and weight
// gradients; three pairs, min of 28 calls, ms): 19x19x728 1.25-1.48 against 1.80-1.92, 10x10x1024
// 0.66-1.16 against 0.76-0.79, 37x37x728 6.5-7.4 against 8.0, 37x37x256 2.06-2.23 against
// 2.61-2.77, 28x28x192 0.65-0.68 against 1.13-1.80, 14x14x576 0.62-0.68 against 0.72-1.36,
// 56x56x144 2.43-2.95 against 2.72-3.08; the fused op's backward within noise (its products).
bool nchw_shifted(const DepthwiseGeometry& g, at::ScalarType dtype) {
  const bool same = g.M == 1 && g.sh == 1 && g.sw == 1 && g.dil_h == 1 && g.dil_w == 1 && g.kh == 3 && g.kw == 3 &&
                    g.pad_top == 1 && g.pad_left == 1 && g.Ho == g.H && g.Wo == g.W;
  return nchw_depthwise_setting_choice() == NchwDepthwiseSetting::kAuto && dtype == at::kFloat && same &&
         g.W <= kShiftedMaxWidth && g.H * g.W >= kShiftedMinPixels && g.N * g.C > 0 &&
         depthwise_nchw_kernels<float>().forward_shifted != nullptr;
}

int64_t nchw_block_channels(int64_t C, int64_t images) {
  const int64_t wanted = 4 * at::get_num_threads();
  int64_t even = C;
  for (int64_t cb = 64; cb >= 16; cb -= 16) {
    const int64_t blocks = (C + cb - 1) / cb;
    even = std::min(C, ((C + blocks - 1) / blocks + 15) / 16 * 16);
    if (images * ((C + even - 1) / even) >= wanted) break;
  }
  return even;
}

namespace {

// The planes of an NCHW forward where nchw_shifted (float32: T is its own acc_t), a kernel call per
// image's run of them.
template <typename T>
void forward_shifted_planes(const DepthwiseGeometry& g, const DepthwiseNchwKernels<T>& k, const T* x, const Acc<T>* w,
                            const Acc<T>* bias, T* out) {
  if constexpr (std::is_same_v<T, Acc<T>>) {
    const int64_t plane = g.H * g.W;
    for_plane_runs(g.N, g.C, grain(plane * g.kh * g.kw), [&](int64_t n, int64_t c0, int64_t c1) {
      k.forward_shifted(g, x, w, bias, out + (n * g.C + c0) * plane, plane, n, c0, c1);
    });
  } else {
    TORCH_INTERNAL_ASSERT(false, "forward_shifted takes float32 only");
  }
}

// The NCHW paths (runs_nchw): the kernels read and write dense NCHW tensors in place. The forward
// on the plane kernels, or in channel blocks (see nchw_depthwise_path).
at::Tensor forward_in_nchw(const DepthwiseGeometry& g, const at::Tensor& input, const at::Tensor& weight,
                           const std::optional<at::Tensor>& bias, bool in_blocks) {
  at::Tensor out = at::empty({g.N, g.OC, g.Ho, g.Wo}, input.options());
  if (out.numel() == 0) return out;
  const at::Tensor x = input.contiguous();
  const bool shifted = nchw_shifted(g, input.scalar_type());
  const at::Tensor w = in_blocks && !shifted ? tap_major(weight) : channel_major(weight);
  const at::Tensor b = acc_bias(bias);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "xsep.depthwise_conv2d", [&] {
    using acc_t = Acc<scalar_t>;
    const auto& k = depthwise_nchw_kernels<scalar_t>();
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const acc_t* wp = w.const_data_ptr<acc_t>();
    const acc_t* bp = b.defined() ? b.const_data_ptr<acc_t>() : nullptr;
    scalar_t* yp = out.mutable_data_ptr<scalar_t>();
    if (shifted) return forward_shifted_planes(g, k, xp, wp, bp, yp);
    if (in_blocks) {
      const int64_t cb = nchw_block_channels(g.C, g.N), blocks = (g.C + cb - 1) / cb;
      at::parallel_for(0, g.N * blocks, 1, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) {
          const int64_t n = i / blocks, c0 = i % blocks * cb;
          k.forward_blocked(g, xp, wp, bp, yp + (n * g.OC + c0 * g.M) * g.Ho * g.Wo, g.Ho * g.Wo, n, c0,
                            std::min(g.C, c0 + cb));
        }
      });
      return;
    }
    const int64_t plane = g.Ho * g.Wo;
    const bool stream = stream_output(x.nbytes() + out.nbytes(), out);
    // Input planes q = n * C + c (each with its M output planes), whole images of rows.
    for_plane_runs(g.N, g.C, grain(plane * g.M * g.kh * g.kw), [&](int64_t n, int64_t c0, int64_t c1) {
      k.forward(g, xp, wp, bp, yp + (n * g.OC + c0 * g.M) * plane, plane, n, c0, c1, 0, g.Ho, stream);
    });
  });
  return out;
}

at::Tensor grad_input_in_nchw(const DepthwiseGeometry& g, const at::Tensor& grad_output, const at::Tensor& input,
                              const at::Tensor& weight) {
  at::Tensor gi = at::empty({g.N, g.C, g.H, g.W}, input.options());
  if (gi.numel() == 0) return gi;
  const at::Tensor go = grad_output.contiguous();
  // The input is only read to mask the gradient of its relu.
  const at::Tensor x = g.relu_input ? input.contiguous() : at::Tensor();
  const at::Tensor w = channel_major(weight);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, input.scalar_type(), "xsep.depthwise_conv2d_grad_input", [&] {
        depthwise_grad_input_nchw<scalar_t, scalar_t>(
            g, go.const_data_ptr<scalar_t>(), w.const_data_ptr<Acc<scalar_t>>(),
            x.defined() ? x.const_data_ptr<scalar_t>() : nullptr, gi.mutable_data_ptr<scalar_t>(),
            stream_output(go.nbytes() + gi.nbytes() + (x.defined() ? x.nbytes() : 0), gi));
      });
  return gi;
}

// What runs an NCHW depthwise forward and input gradient (the weight gradient: blocks where they
// do, else the plane kernels).
enum class NchwPath { kPlanes, kBlocks, kOneDnn };

NchwPath nchw_depthwise_path(const DepthwiseGeometry& g, const at::Tensor& input, at::IntArrayRef padding) {
  if (nchw_depthwise_setting_choice() == NchwDepthwiseSetting::kOneDnnOnNarrowPlanes) {
    // Planes narrower than 14 pixels (kernels up to 3 wide) or 40 (wider), where oneDNN computes
    // the same thing (symmetric padding, no relu on the input).
    const bool narrow = input.scalar_type() == at::kFloat && !g.relu_input && g.W < (g.kw <= 3 ? 14 : 40) &&
                        padding[0] == padding[1] && padding[2] == padding[3] && at::hasMKLDNN() &&
                        at::globalContext().userEnabledMkldnn();
    return narrow ? NchwPath::kOneDnn : NchwPath::kPlanes;
  }
  return nchw_in_blocks(g, input.scalar_type()) ? NchwPath::kBlocks : NchwPath::kPlanes;
}

// Whether the NCHW input gradient runs on the shifted-rows kernel (depthwise_grad_input_nchw, host.h):
// where the forward does, without an input relu (its mask is not applied there).
bool shifted_grad_input(const DepthwiseGeometry& g, const at::Tensor& input) {
  return !g.relu_input && nchw_shifted(g, input.scalar_type());
}

// (grad_input when with_input, else undefined; grad_weight when with_weight, else undefined). Each
// weight value: one kernel call's sum per image, then the images in order (add_into): the same
// bits at any thread count.
std::tuple<at::Tensor, at::Tensor> backward_in_nchw_blocks(const DepthwiseGeometry& g, const at::Tensor& grad_output,
                                                           const at::Tensor& input, const at::Tensor& weight,
                                                           bool with_input, bool with_weight) {
  const at::Tensor go = grad_output.contiguous(), x = input.contiguous();
  const at::Tensor w = tap_major(weight);
  at::Tensor gi = with_input ? at::empty({g.N, g.C, g.H, g.W}, input.options()) : at::Tensor();
  const auto acc = input.options().dtype(acc_dtype(input.scalar_type()));
  const int64_t size = g.kh * g.kw * g.OC;
  at::Tensor part = with_weight ? at::empty({g.N, size}, acc) : at::Tensor();
  at::Tensor total = with_weight ? at::empty({g.kh * g.kw, g.OC}, acc) : at::Tensor();
  const int64_t cb = nchw_block_channels(g.C, g.N), blocks = (g.C + cb - 1) / cb;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "xsep.depthwise_conv2d_backward", [&] {
    using acc_t = Acc<scalar_t>;
    const auto& k = depthwise_nchw_kernels<scalar_t>();
    const scalar_t* gop = go.const_data_ptr<scalar_t>();
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const acc_t* wp = w.const_data_ptr<acc_t>();
    scalar_t* gip = with_input ? gi.mutable_data_ptr<scalar_t>() : nullptr;
    acc_t* pp = with_weight ? part.mutable_data_ptr<acc_t>() : nullptr;
    at::parallel_for(0, g.N * blocks, 1, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t n = i / blocks, c0 = i % blocks * cb;
        k.backward_blocked(g, gop, xp, wp, gip, pp != nullptr ? pp + n * size : nullptr, n, c0, std::min(g.C, c0 + cb));
      }
    });
    if (!with_weight) return;
    const auto& add = depthwise_kernels<scalar_t>().add_into;
    acc_t* tot = total.mutable_data_ptr<acc_t>();
    at::parallel_for(0, size, 4096, [&](int64_t e0, int64_t e1) {
      std::copy(pp + e0, pp + e1, tot + e0);
      for (int64_t n = 1; n < g.N; ++n) add(pp + n * size + e0, tot + e0, e1 - e0);
    });
  });
  return {gi, with_weight ? from_tap_major(total, weight) : at::Tensor()};
}

}  // namespace

at::Tensor depthwise_conv2d_cpu(const at::Tensor& input, const at::Tensor& weight,
                                const std::optional<at::Tensor>& bias, at::IntArrayRef stride, at::IntArrayRef padding,
                                at::IntArrayRef dilation, std::string_view input_activation) {
  constexpr const char* op = "xsep.depthwise_conv2d";
  const DepthwiseGeometry g =
      check_depthwise_forward(op, at::kCPU, input, weight, bias, stride, padding, dilation, input_activation);
  if (runs_nchw(input)) {
    const NchwPath path = nchw_depthwise_path(g, input, padding);
    if (path == NchwPath::kOneDnn) {
      const at::AutoDispatchBelowADInplaceOrView below_autograd;  // a value, not a graph
      return at::convolution(input, weight, bias, stride, {padding[0], padding[2]}, dilation, false, {0, 0}, g.C);
    }
    return forward_in_nchw(g, input, weight, bias, path == NchwPath::kBlocks);
  }
  at::Tensor out = empty_nhwc({g.N, g.OC, g.Ho, g.Wo}, input);
  if (out.numel() > 0) {
    const at::Tensor x = nhwc(input);
    const at::Tensor w = tap_major(weight);
    const at::Tensor b = acc_bias(bias);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), op, [&] {
      using acc_t = Acc<scalar_t>;
      const auto& k = depthwise_kernels<scalar_t>();
      const scalar_t* xp = x.const_data_ptr<scalar_t>();
      const acc_t* wp = w.const_data_ptr<acc_t>();
      const acc_t* bp = b.defined() ? b.const_data_ptr<acc_t>() : nullptr;
      scalar_t* yp = out.mutable_data_ptr<scalar_t>();
      const int64_t pixels = g.N * g.Ho * g.Wo;
      const bool stream = stream_output(x.nbytes() + out.nbytes(), out);
      const bool prefetch = prefetch_rows(x.nbytes() + out.nbytes());
      at::parallel_for(0, pixels, grain(g.OC * g.kh * g.kw), [&](int64_t p0, int64_t p1) {
        k.forward(g, xp, wp, bp, yp + p0 * g.OC, p0, p1, stream, prefetch);
      });
    });
  }
  return in_format_of(out, input);
}

namespace {

// The backward once the arguments are checked (g). NCHW input gradient of narrow float32 planes:
// oneDNN's, torch's own call (XSEP_CPU_NCHW_DEPTHWISE=narrow, see nchw_depthwise_path); the weight gradient is then a
// pass of its own (grad_weight_in_nchw), while other NCHW layers take both in one pass (backward_in_nchw).
at::Tensor grad_input_on_onednn(const DepthwiseGeometry& g, const at::Tensor& grad_output, const at::Tensor& input,
                                const at::Tensor& weight, at::IntArrayRef stride, at::IntArrayRef padding,
                                at::IntArrayRef dilation) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;  // a value, not a graph
  return std::get<0>(at::convolution_backward(grad_output, input, weight, std::nullopt, stride,
                                              {padding[0], padding[2]}, dilation, false, {0, 0}, g.C,
                                              {true, false, false}));
}

// Deterministic (see depthwise_backward_taps).
at::Tensor grad_weight_in_nchw(const DepthwiseGeometry& g, const at::Tensor& grad_output, const at::Tensor& input,
                               const at::Tensor& weight) {
  const at::Tensor go = grad_output.contiguous(), x = input.contiguous();
  at::Tensor gw;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, input.scalar_type(), "xsep.depthwise_conv2d_grad_weight",
      [&] { gw = depthwise_grad_weight_nchw(g, go.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>()); });
  return from_matrix(gw, weight);
}

// NCHW, both gradients on xsep's kernels, in one pass: blocks of input channels whose output-gradient
// planes (every image's) fill about kNchwBackwardBlockBytes, each block's weight gradient (images in
// order), then its input gradient (images in reverse, the planes read last first) while those planes
// are in cache; before, two passes each read all of grad_output. Each weight value is still summed
// by one kernel call, images in order: the same bits as the weight gradient alone. Zen 4 EPYC, fp32,
// batch 8, 2 threads, 3x3, 2026-12-04, against the two passes (one process, interleaved, min of 11,
// two runs): 1.07-1.12x from 147x147x64 to 74x74x256, 0.98-1.36x from 37x37x256 to 19x19x728.
constexpr int64_t kNchwBackwardBlockBytes = int64_t{256} << 10;

template <typename T>
void nchw_backward_blocks(const DepthwiseGeometry& g, const T* go, const T* x, const Acc<T>* w, Acc<T>* gw, T* gi,
                          int64_t block, bool stream_gi) {
  const auto& k = depthwise_nchw_kernels<T>();
  at::parallel_for(0, (g.C + block - 1) / block, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t c0 = b * block, c1 = std::min(g.C, c0 + block);
      k.grad_weight(g, go, x, gw, c0, c1);
      for (int64_t n = g.N - 1; n >= 0; --n) k.grad_input(g, go, w, x, gi, n * g.C + c0, n * g.C + c1, stream_gi);
    }
  });
}

std::tuple<at::Tensor, at::Tensor> backward_in_nchw(const DepthwiseGeometry& g, const at::Tensor& grad_output,
                                                    const at::Tensor& input, const at::Tensor& weight) {
  at::Tensor gi = at::empty({g.N, g.C, g.H, g.W}, input.options());
  const auto acc = input.options().dtype(acc_dtype(input.scalar_type()));
  at::Tensor gw = at::zeros({g.OC, g.kh * g.kw}, acc);
  if (gi.numel() > 0 && g.Ho * g.Wo > 0) {
    const at::Tensor go = grad_output.contiguous(), x = input.contiguous();
    const at::Tensor w = channel_major(weight);
    const int64_t channel_bytes = g.N * g.M * g.Ho * g.Wo * go.element_size();
    // No fewer blocks than threads (small layers), which does not change the bits.
    const int64_t per_thread = (g.C + at::get_num_threads() - 1) / at::get_num_threads();
    const int64_t block = std::clamp<int64_t>(kNchwBackwardBlockBytes / channel_bytes, 1, per_thread);
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::kHalf, at::kBFloat16, input.scalar_type(), "xsep.depthwise_conv2d_backward", [&] {
          using acc_t = Acc<scalar_t>;
          nchw_backward_blocks(g, go.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
                               w.const_data_ptr<acc_t>(), gw.mutable_data_ptr<acc_t>(), gi.mutable_data_ptr<scalar_t>(),
                               block, stream_output(go.nbytes() + gi.nbytes() + x.nbytes(), gi));
        });
  } else if (gi.numel() > 0) {
    gi = grad_input_in_nchw(g, grad_output, input, weight);  // no output pixel: the kernels' own zeros
  }
  return {gi, from_matrix(gw, weight)};
}

// Channels-last input gradient alone: the input rows split between threads.
at::Tensor grad_input_in_nhwc(const DepthwiseGeometry& g, const at::Tensor& grad_output, const at::Tensor& input,
                              const at::Tensor& weight) {
  at::Tensor gi = empty_nhwc({g.N, g.C, g.H, g.W}, input);
  if (gi.numel() == 0) return in_format_of(gi, input);
  const at::Tensor go = nhwc(grad_output);
  const at::Tensor x = g.relu_input ? nhwc(input) : at::Tensor();  // read only to mask the input's relu
  const at::Tensor w = tap_major(weight);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, input.scalar_type(), "xsep.depthwise_conv2d_grad_input", [&] {
        using acc_t = Acc<scalar_t>;
        const auto& k = depthwise_kernels<scalar_t>();
        const scalar_t* gop = go.const_data_ptr<scalar_t>();
        const scalar_t* xp = x.defined() ? x.const_data_ptr<scalar_t>() : nullptr;
        const acc_t* wp = w.const_data_ptr<acc_t>();
        scalar_t* gip = gi.mutable_data_ptr<scalar_t>();
        const bool stream = stream_output(go.nbytes() + gi.nbytes() + (x.defined() ? x.nbytes() : 0), gi);
        at::parallel_for(0, g.N * g.H, grain(g.W * g.OC * g.kh * g.kw),
                         [&](int64_t r0, int64_t r1) { k.grad_input(g, gop, wp, xp, gip, r0, r1, stream); });
      });
  return in_format_of(gi, input);
}

// Channels-last: (grad_input when with_input, else undefined; grad_weight), both from one pass over
// grad_output (depthwise_backward_taps).
std::tuple<at::Tensor, at::Tensor> backward_in_nhwc(const DepthwiseGeometry& g, const at::Tensor& grad_output,
                                                    const at::Tensor& input, const at::Tensor& weight,
                                                    bool with_input) {
  const at::Tensor go = nhwc(grad_output), x = nhwc(input);
  at::Tensor gi = with_input ? empty_nhwc({g.N, g.C, g.H, g.W}, input) : at::Tensor();
  const at::Tensor w = with_input ? tap_major(weight) : at::Tensor();
  at::Tensor taps;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "xsep.depthwise_conv2d_backward", [&] {
    using acc_t = Acc<scalar_t>;
    scalar_t* gip = with_input && gi.numel() > 0 ? gi.mutable_data_ptr<scalar_t>() : nullptr;
    const acc_t* wp = gip != nullptr ? w.const_data_ptr<acc_t>() : nullptr;
    const int64_t bytes = go.nbytes() + x.nbytes() + (gip != nullptr ? gi.nbytes() : 0);
    const bool stream = gip != nullptr && stream_output(bytes, gi);
    taps = depthwise_backward_taps(g, go.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), wp, gip, stream,
                                   prefetch_rows(bytes));
  });
  return {with_input ? in_format_of(gi, input) : at::Tensor(), from_tap_major(taps, weight)};
}

}  // namespace

at::Tensor depthwise_conv2d_grad_input_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                           const at::Tensor& weight, at::IntArrayRef stride, at::IntArrayRef padding,
                                           at::IntArrayRef dilation, std::string_view input_activation) {
  const DepthwiseGeometry g = check_depthwise_backward("xsep.depthwise_conv2d_grad_input", at::kCPU, grad_output, input,
                                                       weight, stride, padding, dilation, input_activation);
  if (runs_nchw(input)) {
    const NchwPath path = nchw_depthwise_path(g, input, padding);
    if (path == NchwPath::kBlocks && !shifted_grad_input(g, input)) {
      return std::get<0>(backward_in_nchw_blocks(g, grad_output, input, weight, true, false));
    }
    if (path == NchwPath::kOneDnn) {
      return grad_input_on_onednn(g, grad_output, input, weight, stride, padding, dilation);
    }
    return grad_input_in_nchw(g, grad_output, input, weight);
  }
  return grad_input_in_nhwc(g, grad_output, input, weight);
}

at::Tensor depthwise_conv2d_grad_weight_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                            const at::Tensor& weight, at::IntArrayRef stride, at::IntArrayRef padding,
                                            at::IntArrayRef dilation, std::string_view input_activation) {
  const DepthwiseGeometry g = check_depthwise_backward("xsep.depthwise_conv2d_grad_weight", at::kCPU, grad_output,
                                                       input, weight, stride, padding, dilation, input_activation);
  if (runs_nchw(input)) {
    if (nchw_depthwise_path(g, input, padding) == NchwPath::kBlocks) {
      return std::get<1>(backward_in_nchw_blocks(g, grad_output, input, weight, false, true));
    }
    return grad_weight_in_nchw(g, grad_output, input, weight);
  }
  return std::get<1>(backward_in_nhwc(g, grad_output, input, weight, /*with_input=*/false));
}

std::tuple<at::Tensor, at::Tensor> depthwise_conv2d_backward_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                                                 const at::Tensor& weight, at::IntArrayRef stride,
                                                                 at::IntArrayRef padding, at::IntArrayRef dilation,
                                                                 std::string_view input_activation) {
  const DepthwiseGeometry g = check_depthwise_backward("xsep.depthwise_conv2d_backward", at::kCPU, grad_output, input,
                                                       weight, stride, padding, dilation, input_activation);
  if (runs_nchw(input)) {
    const NchwPath path = nchw_depthwise_path(g, input, padding);
    if (path != NchwPath::kOneDnn && shifted_grad_input(g, input)) {
      // The input gradient on the shifted rows, the weight gradient where it ran (the same bits as
      // the ops that make each alone).
      return {grad_input_in_nchw(g, grad_output, input, weight),
              path == NchwPath::kBlocks
                  ? std::get<1>(backward_in_nchw_blocks(g, grad_output, input, weight, false, true))
                  : grad_weight_in_nchw(g, grad_output, input, weight)};
    }
    if (path == NchwPath::kBlocks) return backward_in_nchw_blocks(g, grad_output, input, weight, true, true);
    if (path == NchwPath::kPlanes) return backward_in_nchw(g, grad_output, input, weight);
    return {grad_input_on_onednn(g, grad_output, input, weight, stride, padding, dilation),
            grad_weight_in_nchw(g, grad_output, input, weight)};
  }
  return backward_in_nhwc(g, grad_output, input, weight, /*with_input=*/true);
}

}  // namespace xsep::cpu
