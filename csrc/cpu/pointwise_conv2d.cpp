// Pointwise (1x1) convolution on CPU: in channels-last layout the op is a plain GEMM over pixels,
// [P, C] x [C, O], which BLAS (MKL/oneDNN through at::mm) does near the machine's peak. Low
// precision is computed in float32 and rounded once, as the other xsep kernels do.
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/mm.h>
#include <torch/library.h>

#include "common/conv_args.h"
#include "cpu/host.h"

namespace xsep::cpu {
namespace {

constexpr const char* kForward = "xsep.pointwise_conv2d";

// [N, C, H, W] tensor -> its channels-last data viewed as [N*H*W, C] in the accumulation dtype.
at::Tensor pixels(const at::Tensor& t) {
  auto nhwc = t.contiguous(at::MemoryFormat::ChannelsLast).permute({0, 2, 3, 1});
  return nhwc.reshape({-1, t.size(1)}).to(acc_dtype(t.scalar_type()));
}

// [P, O] rows back to an [N, O, H, W] tensor in `like`'s dtype and memory format.
at::Tensor from_pixels(const at::Tensor& rows, const at::Tensor& like, int64_t channels) {
  auto out = rows.view({like.size(0), like.size(2), like.size(3), channels}).permute({0, 3, 1, 2});
  return out.to(like.scalar_type()).contiguous(like.suggest_memory_format());
}

at::Tensor weight_2d(const at::Tensor& weight) {
  return weight.reshape({weight.size(0), weight.size(1)}).to(acc_dtype(weight.scalar_type()));
}

at::Tensor pointwise_conv2d_cpu(const at::Tensor& input, const at::Tensor& weight,
                                const c10::optional<at::Tensor>& bias) {
  check_pointwise(kForward, input, weight, bias);
  check_cpu(kForward, input);
  // The ATen calls below compute values, not graphs, even when the inputs require grad.
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  const auto x = pixels(input);
  const auto w = weight_2d(weight);
  const auto y = bias.has_value() && bias->defined()
                     ? at::addmm(bias->to(x.scalar_type()), x, w.t())
                     : at::mm(x, w.t());
  return from_pixels(y, input, weight.size(0));
}

at::Tensor pointwise_conv2d_grad_input_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                           const at::Tensor& weight) {
  constexpr const char* op = "xsep.pointwise_conv2d_grad_input";
  check_pointwise(op, input, weight, c10::nullopt);
  check_cpu(op, input);
  // The ATen calls below compute values, not graphs, even when the inputs require grad.
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  check_grad_output(op, grad_output, input, weight.size(0), input.size(2), input.size(3));
  return from_pixels(at::mm(pixels(grad_output), weight_2d(weight)), input, input.size(1));
}

at::Tensor pointwise_conv2d_grad_weight_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                            const at::Tensor& weight) {
  constexpr const char* op = "xsep.pointwise_conv2d_grad_weight";
  check_pointwise(op, input, weight, c10::nullopt);
  check_cpu(op, input);
  // The ATen calls below compute values, not graphs, even when the inputs require grad.
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  check_grad_output(op, grad_output, input, weight.size(0), input.size(2), input.size(3));
  const auto gw = at::mm(pixels(grad_output).t(), pixels(input));
  return gw.to(weight.scalar_type()).reshape(weight.sizes()).contiguous();
}

}  // namespace

TORCH_LIBRARY_IMPL(xsep, CPU, m) {
  m.impl("pointwise_conv2d", &pointwise_conv2d_cpu);
  m.impl("pointwise_conv2d_grad_input", &pointwise_conv2d_grad_input_cpu);
  m.impl("pointwise_conv2d_grad_weight", &pointwise_conv2d_grad_weight_cpu);
}

}  // namespace xsep::cpu
