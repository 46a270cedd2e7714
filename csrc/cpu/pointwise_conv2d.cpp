// Pointwise (1x1) convolution on CPU: in channels-last layout the op is a plain GEMM over pixels,
// [P, C] x [C, O], which BLAS (MKL/oneDNN through at::mm) does near the machine's peak. In NCHW
// (runs_nchw) it is one GEMM per image, Y_n [O, HW] = W [O, C] x X_n [C, HW]: on oneDNN (gemm.h) its
// 1x1 convolution over the batch; on BLAS run in place on the tensors' own memory as one batched GEMM
// (the weight broadcast over the batch), and below 256 pixels a plane (10x10), images grouped side
// by side into wider GEMMs (image_groups, host.h). Low precision is computed in float32 and rounded
// once, as the other xsep kernels do.
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/baddbmm.h>
#include <ATen/ops/bmm.h>
#include <ATen/ops/convolution.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/zeros.h>

#include <optional>

#include "common/conv_args.h"
#include "common/layout.h"
#include "cpu/gemm.h"
#include "cpu/host.h"
#include "cpu/ops.h"

namespace xsep::cpu {
namespace {

// [N, C, H, W] tensor -> its channels-last data viewed as [N*H*W, C] in the accumulation dtype.
at::Tensor pixels(const at::Tensor& t) {
  return nhwc(t).permute({0, 2, 3, 1}).reshape({-1, t.size(1)}).to(acc_dtype(t.scalar_type()));
}

// [P, O] rows back to an [N, O, H, W] tensor in `like`'s dtype and memory format.
at::Tensor from_pixels(const at::Tensor& rows, const at::Tensor& like, int64_t channels) {
  auto out = rows.view({like.size(0), like.size(2), like.size(3), channels}).permute({0, 3, 1, 2});
  return in_format_of(out.to(like.scalar_type()), like);
}

at::Tensor weight_2d(const at::Tensor& weight) { return to_matrix(weight).to(acc_dtype(weight.scalar_type())); }

// NCHW: [N, C, H, W] tensor -> its dense NCHW data viewed as [N, C, H*W] in the accumulation dtype
// (no copy for a dense float32/float64 tensor).
at::Tensor planes(const at::Tensor& t) {
  return t.contiguous().view({t.size(0), t.size(1), t.size(2) * t.size(3)}).to(acc_dtype(t.scalar_type()));
}

// out_n [R, HW] = m [R, K] x b_n [K, HW] (+ bias [R]) for every image n, written into an NCHW
// [N, R, H, W] tensor shaped like `like`. On oneDNN: its 1x1 convolution over the batch. On BLAS, one
// image per GEMM (image_groups, host.h): one batched GEMM with m broadcast over the batch, straight
// into the output (into a float32 buffer first for low precision, rounded once); small planes: image
// groups, each group's planes copied side by side into [K, images * HW], one GEMM into
// [R, images * HW], copied back (and rounded) per image.
at::Tensor batched_left_product(const at::Tensor& m, const at::Tensor& b, const at::Tensor& bias,
                                const at::Tensor& like, int64_t rows) {
  const int64_t N = like.size(0), K = b.size(1), HW = b.size(2);
  if (linear_uses_onednn(b.scalar_type())) {
    // oneDNN: its 1x1 convolution over the whole batch, torch's own NCHW path (MKL's at::bmm runs
    // AVX2 code on AMD processors: gemm.h).
    const auto y = at::convolution(b.view({N, K, like.size(2), like.size(3)}), m.contiguous().view({rows, K, 1, 1}),
                                   bias.defined() ? std::optional<at::Tensor>(bias) : std::nullopt, {1, 1}, {0, 0},
                                   {1, 1}, false, {0, 0}, 1);
    return y.to(like.scalar_type()).contiguous();
  }
  auto out =
      at::empty({N, rows, like.size(2), like.size(3)}, like.options().memory_format(at::MemoryFormat::Contiguous));
  const ImageGroups groups = image_groups(N, HW);
  if (groups.most() <= 1) {  // one image per GEMM (or none)
    auto y = out.scalar_type() == b.scalar_type() ? out.view({N, rows, HW}) : at::empty({N, rows, HW}, b.options());
    // m made contiguous when it is a transposed view (W^T in the input gradient): a weight-sized
    // copy, cheaper than BLAS reading it transposed in each of N narrow GEMMs. The wide GEMMs of
    // image groups below read it transposed in place.
    const auto lhs = m.contiguous().expand({N, m.size(0), m.size(1)});
    if (bias.defined()) {
      at::baddbmm_out(y, bias.view({1, rows, 1}).expand({N, rows, HW}), lhs, b);
    } else {
      at::bmm_out(y, lhs, b);
    }
    if (!y.is_same(out)) out.copy_(y.view(out.sizes()));
    return out;
  }
  const int64_t most = groups.most();
  auto side_b = at::empty({K, most * HW}, b.options());
  auto side_y = at::empty({rows, most * HW}, b.options());
  const auto bias_col = bias.defined() ? bias.view({rows, 1}) : bias;
  const auto out_planes = out.view({N, rows, HW});
  for (int64_t k = 0; k < groups.count; ++k) {
    const int64_t n0 = groups.begin(k), images = groups.end(k) - n0, cols = images * HW;
    auto bk = side_b.narrow(1, 0, cols), yk = side_y.narrow(1, 0, cols);
    bk.view({K, images, HW}).copy_(b.narrow(0, n0, images).transpose(0, 1));
    mm_with_bias_out(yk, bias_col, m, bk);
    out_planes.narrow(0, n0, images).transpose(0, 1).copy_(yk.view({rows, images, HW}));
  }
  return out;
}

// Float32 forwards on oneDNN's 1x1 convolution (forward_on_onednn_conv, gemm.h) run as torch's own
// call on the channels-last tensor itself, writing the output in place of a copy.
bool pointwise_on_onednn_conv(const at::Tensor& t, int64_t K) {
  return forward_on_onednn_conv(t.scalar_type(), t.size(0) * t.size(2) * t.size(3), K);
}

at::Tensor conv1x1(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  return at::convolution(input, weight, bias, {1, 1}, {0, 0}, {1, 1}, false, {0, 0}, 1);
}

}  // namespace

at::Tensor pointwise_conv2d_cpu(const at::Tensor& input, const at::Tensor& weight,
                                const std::optional<at::Tensor>& bias) {
  check_pointwise_forward("xsep.pointwise_conv2d", at::kCPU, input, weight, bias);
  // The ATen calls below compute values, not graphs, even when the inputs require grad.
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  if (runs_nchw(input))
    return batched_left_product(weight_2d(weight), planes(input), acc_bias(bias), input, weight.size(0));
  if (pointwise_on_onednn_conv(input, input.size(1))) return in_format_of(conv1x1(nhwc(input), weight, bias), input);
  const auto x = pixels(input);
  const auto w = weight_2d(weight);
  const auto b = acc_bias(bias);
  const auto y = linear(x, w, b);
  return from_pixels(y, input, weight.size(0));
}

at::Tensor pointwise_conv2d_grad_input_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                           const at::Tensor& weight) {
  check_pointwise_backward("xsep.pointwise_conv2d_grad_input", at::kCPU, grad_output, input, weight);
  // The ATen calls below compute values, not graphs, even when the inputs require grad.
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  if (grad_input_on_onednn(input.scalar_type(), runs_nchw(input), input.size(0), input.size(2) * input.size(3)))
    return onednn_grad_input(grad_output, input, weight);
  if (runs_nchw(input)) {
    // G_n = W^T x gY_n.
    return batched_left_product(weight_2d(weight).t(), planes(grad_output), at::Tensor(), input, input.size(1));
  }
  return from_pixels(linear(pixels(grad_output), weight_2d(weight).t(), at::Tensor()), input, input.size(1));
}

at::Tensor pointwise_conv2d_grad_weight_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                            const at::Tensor& weight) {
  check_pointwise_backward("xsep.pointwise_conv2d_grad_weight", at::kCPU, grad_output, input, weight);
  // The ATen calls below compute values, not graphs, even when the inputs require grad.
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  if (runs_nchw(input)) {
    // sum_n gY_n [O, HW] x X_n^T [HW, C], image after image, each in fixed blocks of pixels (the
    // operands read in place, transposed views): the same bits whatever the number of threads.
    // Planes shorter than one block would make every image's GEMM read and write all of gw for
    // a short reduction (10x10 1024->1536: 12 MB of gw per 100 pixels): there the images are first
    // packed side by side, [C, N*HW], a copy of the operands, and summed in blocks across images.
    const auto gy = planes(grad_output), x = planes(input);
    auto gw = at::zeros({weight.size(0), weight.size(1)}, gy.options());
    if (gy.size(2) < kBlasReductionRows) {
      const auto side_by_side = [](const at::Tensor& t) { return t.transpose(0, 1).reshape({t.size(1), -1}); };
      addmm_tn_fixed_order(gw, side_by_side(gy).t(), side_by_side(x).t());
    } else {
      for (int64_t n = 0; n < gy.size(0); ++n) addmm_tn_fixed_order(gw, gy[n].t(), x[n].t());
    }
    return from_matrix(gw, weight);
  }
  const auto gy = pixels(grad_output);
  auto gw = at::zeros({weight.size(0), weight.size(1)}, gy.options());
  return from_matrix(addmm_tn_fixed_order(gw, gy, pixels(input)), weight);
}

}  // namespace xsep::cpu
