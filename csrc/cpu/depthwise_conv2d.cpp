// CPU depthwise convolution: argument checks, layout and threading around the vectorised kernels.
// NCHW inputs run the NCHW kernels (depthwise_nchw_kernels.h) in place (narrow float32 planes:
// oneDNN, see narrow_planes_on_onednn); channels-last inputs the NHWC kernels (depthwise_kernels.h). Outputs are
// returned in the input's memory format.
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
namespace {

// The NCHW paths (runs_nchw): the kernels read and write dense NCHW tensors in place.
at::Tensor forward_in_nchw(const DepthwiseGeometry& g, const at::Tensor& input, const at::Tensor& weight,
                           const std::optional<at::Tensor>& bias) {
  at::Tensor out = at::empty({g.N, g.OC, g.Ho, g.Wo}, input.options());
  if (out.numel() == 0) return out;
  const at::Tensor x = input.contiguous();
  const at::Tensor w = channel_major(weight);
  const at::Tensor b = acc_bias(bias);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "xsep.depthwise_conv2d", [&] {
    using acc_t = Acc<scalar_t>;
    const auto& k = depthwise_nchw_kernels<scalar_t>();
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const acc_t* wp = w.const_data_ptr<acc_t>();
    const acc_t* bp = b.defined() ? b.const_data_ptr<acc_t>() : nullptr;
    scalar_t* yp = out.mutable_data_ptr<scalar_t>();
    const int64_t plane = g.Ho * g.Wo;
    // Input planes q = n * C + c (each with its M output planes), whole images of rows; one kernel
    // call per image's run of channels, so that its setup is paid once per run, not per plane.
    at::parallel_for(0, g.N * g.C, grain(plane * g.M * g.kh * g.kw), [&](int64_t q0, int64_t q1) {
      for (int64_t q = q0; q < q1;) {
        const int64_t n = q / g.C, c0 = q % g.C, c1 = std::min(g.C, c0 + (q1 - q));
        k.forward(g, xp, wp, bp, yp + (n * g.OC + c0 * g.M) * plane, plane, n, c0, c1, 0, g.Ho);
        q += c1 - c0;
      }
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
            x.defined() ? x.const_data_ptr<scalar_t>() : nullptr, gi.mutable_data_ptr<scalar_t>());
      });
  return gi;
}

// NCHW float32 planes narrower than 14 pixels (kernels up to 3 wide) or 40 (wider kernels) run the
// forward and the input gradient on oneDNN's depthwise convolution, torch's own call, which holds
// channels in its vector lanes; xsep's plane kernels hold a plane's pixels there, and measured
// slower on such planes. Zen 5 EPYC, fp32, batch 8, 2 threads, interleaved, 2026-12-03, forward /
// input gradient against torch, stride 1: 3x3 12 pixels wide 0.98x / 1.12x, 10 wide 0.73-0.88x /
// 0.81-0.89x, 7 wide 0.68x / 0.84x, against 1.10-1.24x / 1.19-1.33x 14 wide; 5x5 28 wide 0.77-0.87x
// / 1.08-1.22x, 14 wide 0.54x / 0.76x, against 1.30-1.42x / 1.71-1.79x 56 wide; 7x7 32 wide
// 0.81-0.90x / 0.98-1.04x, 28 wide 0.63x / 0.82x, against 1.32x / 1.69x 40 wide. (No rule linear in
// the kernel width fits those three boundaries.) Only where oneDNN computes the same thing (symmetric
// padding, no relu on the input) and XSEP_CPU_NCHW_DEPTHWISE allows it. The weight gradient stays
// on xsep's kernels: the same bits at any thread count, and oneDNN's 5x5 and 7x7 weight gradients
// ran 3-35x slower (its 3x3 one 1.1-1.8x faster on planes up to 14 wide).
//
// And only with enough work (auto): oneDNN's call costs 65-100 us however small the layer, xsep's
// 13-21 us, so a small layer (one image, a small batch: serving) ran 1.01-6.5x faster on xsep's
// kernels although they do less per multiply-add. Zen 4 EPYC, 2 threads, 2026-12-04
// (benchmarks/results/cpu-amd-epyc-avx512-2t/2026-12-04_narrow-nchw-planes, forward / input
// gradient): one 10x10 image of 160 channels, 3x3: oneDNN 86 / 77 us, xsep 21 / 19 us; 14x14x480,
// 5x5: 119 / 127 against 92 / 93 us; the two met at 2-9 M multiply-adds (xsep's kernels then take
// 100-250 us). Below 2 M multiply-adds a thread (xsep's time falls with threads, oneDNN's fixed
// cost does not) xsep's kernels were faster in all 48 cases measured (geometric mean 2.54x).
constexpr int64_t kOneDnnDepthwiseMinWorkPerThread = int64_t{2} << 20;

bool narrow_planes_on_onednn(const DepthwiseGeometry& g, const at::Tensor& input, at::IntArrayRef padding) {
  const NchwDepthwiseOnOneDnn setting = nchw_depthwise_on_onednn();
  if (setting == NchwDepthwiseOnOneDnn::kNever) return false;
  const bool narrow = input.scalar_type() == at::kFloat && !g.relu_input && g.W < (g.kw <= 3 ? 14 : 40) &&
                      padding[0] == padding[1] && padding[2] == padding[3] && at::hasMKLDNN() &&
                      at::globalContext().userEnabledMkldnn();
  if (!narrow || setting == NchwDepthwiseOnOneDnn::kEveryNarrowPlane) return narrow;
  const int64_t multiply_adds = g.N * g.OC * g.Ho * g.Wo * g.kh * g.kw;
  return multiply_adds >= kOneDnnDepthwiseMinWorkPerThread * at::get_num_threads();
}

}  // namespace

at::Tensor depthwise_conv2d_cpu(const at::Tensor& input, const at::Tensor& weight,
                                const std::optional<at::Tensor>& bias, at::IntArrayRef stride, at::IntArrayRef padding,
                                at::IntArrayRef dilation, std::string_view input_activation) {
  constexpr const char* op = "xsep.depthwise_conv2d";
  const DepthwiseGeometry g =
      check_depthwise_forward(op, at::kCPU, input, weight, bias, stride, padding, dilation, input_activation);
  if (runs_nchw(input)) {
    if (narrow_planes_on_onednn(g, input, padding)) {
      const at::AutoDispatchBelowADInplaceOrView below_autograd;  // a value, not a graph
      return at::convolution(input, weight, bias, stride, {padding[0], padding[2]}, dilation, false, {0, 0}, g.C);
    }
    return forward_in_nchw(g, input, weight, bias);
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
      const bool stream = stream_output(x.nbytes() + out.nbytes());
      at::parallel_for(0, pixels, grain(g.OC * g.kh * g.kw),
                       [&](int64_t p0, int64_t p1) { k.forward(g, xp, wp, bp, yp + p0 * g.OC, p0, p1, stream); });
    });
  }
  return in_format_of(out, input);
}

namespace {

// The backward once the arguments are checked (g). NCHW input gradient of narrow float32 planes:
// oneDNN's, torch's own call (see narrow_planes_on_onednn); the weight gradient is then a pass of its
// own (grad_weight_in_nchw), while other NCHW layers take both in one pass (backward_in_nchw).
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
                          int64_t block) {
  const auto& k = depthwise_nchw_kernels<T>();
  at::parallel_for(0, (g.C + block - 1) / block, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t c0 = b * block, c1 = std::min(g.C, c0 + block);
      k.grad_weight(g, go, x, gw, c0, c1);
      for (int64_t n = g.N - 1; n >= 0; --n) k.grad_input(g, go, w, x, gi, n * g.C + c0, n * g.C + c1);
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
                               block);
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
        const bool stream = stream_output(go.nbytes() + gi.nbytes() + (x.defined() ? x.nbytes() : 0));
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
    const bool stream = gip != nullptr && stream_output(go.nbytes() + gi.nbytes() + x.nbytes());
    taps = depthwise_backward_taps(g, go.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), wp, gip, stream);
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
    if (narrow_planes_on_onednn(g, input, padding)) {
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
  if (runs_nchw(input)) return grad_weight_in_nchw(g, grad_output, input, weight);
  return std::get<1>(backward_in_nhwc(g, grad_output, input, weight, /*with_input=*/false));
}

std::tuple<at::Tensor, at::Tensor> depthwise_conv2d_backward_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                                                 const at::Tensor& weight, at::IntArrayRef stride,
                                                                 at::IntArrayRef padding, at::IntArrayRef dilation,
                                                                 std::string_view input_activation) {
  const DepthwiseGeometry g = check_depthwise_backward("xsep.depthwise_conv2d_backward", at::kCPU, grad_output, input,
                                                       weight, stride, padding, dilation, input_activation);
  if (runs_nchw(input)) {
    if (!narrow_planes_on_onednn(g, input, padding)) return backward_in_nchw(g, grad_output, input, weight);
    return {grad_input_on_onednn(g, grad_output, input, weight, stride, padding, dilation),
            grad_weight_in_nchw(g, grad_output, input, weight)};
  }
  return backward_in_nhwc(g, grad_output, input, weight, /*with_input=*/true);
}

}  // namespace xsep::cpu
