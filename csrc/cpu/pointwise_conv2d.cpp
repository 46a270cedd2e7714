// Pointwise (1x1) convolution on CPU: in channels-last layout the op is a plain GEMM over pixels,
// [P, C] x [C, O], which BLAS (MKL/oneDNN through at::mm) does near the machine's peak. Low
// precision is computed in float32 and rounded once, as the other xsep kernels do.
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/zeros.h>

#include <optional>

#include "common/conv_args.h"
#include "common/layout.h"
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

}  // namespace

at::Tensor pointwise_conv2d_cpu(const at::Tensor& input, const at::Tensor& weight,
                                const std::optional<at::Tensor>& bias) {
  check_pointwise_forward("xsep.pointwise_conv2d", at::kCPU, input, weight, bias);
  // The ATen calls below compute values, not graphs, even when the inputs require grad.
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  const auto x = pixels(input);
  const auto w = weight_2d(weight);
  const auto b = acc_bias(bias);
  const auto y = b.defined() ? at::addmm(b, x, w.t()) : at::mm(x, w.t());
  return from_pixels(y, input, weight.size(0));
}

at::Tensor pointwise_conv2d_grad_input_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                           const at::Tensor& weight) {
  check_pointwise_backward("xsep.pointwise_conv2d_grad_input", at::kCPU, grad_output, input, weight);
  // The ATen calls below compute values, not graphs, even when the inputs require grad.
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  return from_pixels(at::mm(pixels(grad_output), weight_2d(weight)), input, input.size(1));
}

at::Tensor pointwise_conv2d_grad_weight_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                            const at::Tensor& weight) {
  check_pointwise_backward("xsep.pointwise_conv2d_grad_weight", at::kCPU, grad_output, input, weight);
  // The ATen calls below compute values, not graphs, even when the inputs require grad.
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  const auto gy = pixels(grad_output);
  auto gw = at::zeros({weight.size(0), weight.size(1)}, gy.options());
  return from_matrix(addmm_tn_fixed_order(gw, gy, pixels(input)), weight);
}

}  // namespace xsep::cpu
