// CUDA fused depthwise-separable convolution: argument checks, device guard, stream and layout
// around the kernels of separable_conv2d_kernels.cu (channels-last; other layouts are converted
// here and the outputs returned in the input's memory format).
//
// Backward: the pointwise weight gradient and the depthwise output's gradient (grad_d, the one
// intermediate written to memory, in the data type as the unfused pair's would be) come from
// fused GEMMs that recompute the depthwise output on chip; grad_d then goes through the depthwise
// backward kernels. Weight gradients are deterministic (fixed splits summed in order).
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <optional>
#include <string_view>
#include <tuple>

#include "common/conv_args.h"
#include "common/weight_layout.h"
#include "cuda/cuda_host.h"
#include "cuda/depthwise_conv2d_kernels.h"
#include "cuda/separable_conv2d_kernels.h"

namespace xsep::cuda {
namespace {

SepParams sep_params(const DepthwiseGeometry& g, int64_t out_channels, Activation mid) {
  return SepParams{dw_params(g), out_channels, static_cast<int>(mid)};
}

// pointwise_weight [O, C*M, 1, 1] -> contiguous [O, C*M] in the data type
at::Tensor pointwise_matrix(const at::Tensor& pw_weight) {
  return pw_weight.reshape({pw_weight.size(0), pw_weight.size(1)}).contiguous();
}

at::Tensor separable_conv2d(const at::Tensor& input, const at::Tensor& dw_weight,
                            const at::Tensor& pw_weight, const std::optional<at::Tensor>& bias,
                            at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                            std::string_view input_activation, std::string_view mid_activation) {
  constexpr const char* op = "xsep.separable_conv2d";
  check_cuda(op, input);
  const DepthwiseGeometry g = check_depthwise(op, input, dw_weight, std::nullopt, stride, padding,
                                              dilation, input_activation);
  check_separable_pointwise(op, g, input, pw_weight, bias);
  const Activation mid = parse_activation(op, "mid_activation", mid_activation, false);
  const c10::cuda::CUDAGuard guard(input.device());
  const int64_t O = pw_weight.size(0);
  at::Tensor out = empty_nhwc({g.N, O, g.Ho, g.Wo}, input);
  if (out.numel() > 0) {
    const at::Tensor x = nhwc(input);
    const at::Tensor w_taps = tap_major(dw_weight);
    const at::Tensor w_pw = pointwise_matrix(pw_weight);
    const at::Tensor b = bias.has_value() && bias->defined()
                             ? bias->to(acc_dtype(input.scalar_type())).contiguous()
                             : at::Tensor();
    separable_forward_nhwc(sep_params(g, O, mid), dtype_of(input), x.const_data_ptr(),
                           w_taps.const_data_ptr(), w_pw.const_data_ptr(),
                           b.defined() ? b.const_data_ptr() : nullptr, out.mutable_data_ptr(),
                           smem_per_block_optin(), current_stream());
  }
  return out.contiguous(input.suggest_memory_format());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> separable_conv2d_backward(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& dw_weight,
    const at::Tensor& pw_weight, at::IntArrayRef stride, at::IntArrayRef padding,
    at::IntArrayRef dilation, std::string_view input_activation, std::string_view mid_activation) {
  constexpr const char* op = "xsep.separable_conv2d_backward";
  check_cuda(op, input);
  const DepthwiseGeometry g = check_depthwise(op, input, dw_weight, std::nullopt, stride, padding,
                                              dilation, input_activation);
  check_separable_pointwise(op, g, input, pw_weight, std::nullopt);
  const int64_t O = pw_weight.size(0);
  check_grad_output(op, grad_output, input, O, g.Ho, g.Wo);
  const Activation mid = parse_activation(op, "mid_activation", mid_activation, false);
  const c10::cuda::CUDAGuard guard(input.device());
  const auto acc = input.options().dtype(acc_dtype(input.scalar_type()));
  const auto fmt = input.suggest_memory_format();
  if (g.N * g.Ho * g.Wo == 0) {  // nothing flows back
    return {at::zeros(input.sizes(), input.options().memory_format(fmt)),
            at::zeros(dw_weight.sizes(), dw_weight.options()),
            at::zeros(pw_weight.sizes(), pw_weight.options())};
  }
  const SepParams p = sep_params(g, O, mid);
  const Dtype dt = dtype_of(input);
  const cudaStream_t stream = current_stream();
  const at::Tensor x = nhwc(input);
  const at::Tensor go = nhwc(grad_output);
  const at::Tensor w_taps = tap_major(dw_weight);
  const at::Tensor w_pw = pointwise_matrix(pw_weight);

  at::Tensor grad_pw = at::empty({O, g.OC}, acc);
  at::Tensor pw_partials = at::empty({separable_grad_pw_splits(p), O, g.OC}, acc);
  separable_grad_pointwise_weight_nhwc(p, dt, go.const_data_ptr(), x.const_data_ptr(),
                                       w_taps.const_data_ptr(), pw_partials.mutable_data_ptr(),
                                       grad_pw.mutable_data_ptr(), stream);

  at::Tensor grad_mid = empty_nhwc({g.N, g.OC, g.Ho, g.Wo}, input);
  separable_grad_mid_nhwc(p, dt, go.const_data_ptr(), x.const_data_ptr(), w_taps.const_data_ptr(),
                          w_pw.const_data_ptr(), grad_mid.mutable_data_ptr(), stream);

  at::Tensor grad_input = empty_nhwc({g.N, g.C, g.H, g.W}, input);
  if (grad_input.numel() > 0) {
    depthwise_grad_input_nhwc(p.dw, dt, grad_mid.const_data_ptr(), w_taps.const_data_ptr(),
                              x.const_data_ptr(), grad_input.mutable_data_ptr(), stream);
  }
  at::Tensor dw_taps = at::empty({g.kh * g.kw, g.OC}, acc);
  at::Tensor dw_partials = at::empty({depthwise_grad_weight_chunks(p.dw), g.kh * g.kw, g.OC}, acc);
  depthwise_grad_weight_nhwc(p.dw, dt, grad_mid.const_data_ptr(), x.const_data_ptr(),
                             dw_partials.mutable_data_ptr(), dw_taps.mutable_data_ptr(), stream);
  return {grad_input.contiguous(fmt), from_tap_major(dw_taps, dw_weight),
          grad_pw.to(pw_weight.scalar_type()).reshape(pw_weight.sizes()).contiguous()};
}

}  // namespace
}  // namespace xsep::cuda

TORCH_LIBRARY_IMPL(xsep, CUDA, m) {
  m.impl("separable_conv2d", &xsep::cuda::separable_conv2d);
  m.impl("separable_conv2d_backward", &xsep::cuda::separable_conv2d_backward);
}
