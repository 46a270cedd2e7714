// The C++ signature of each op of xsep/ops/schemas.py, written once: every device declares its
// host function for an op with the op's type here (cpu/ops.h, cuda/ops.h). Parameter names as in
// the schemas.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <string_view>
#include <tuple>

namespace xsep {

using DepthwiseConv2dFn = at::Tensor(const at::Tensor& input, const at::Tensor& weight,
                                     const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                     at::IntArrayRef padding, at::IntArrayRef dilation,
                                     std::string_view input_activation);
// depthwise_conv2d_grad_input and depthwise_conv2d_grad_weight.
using DepthwiseConv2dGradFn = at::Tensor(const at::Tensor& grad_output, const at::Tensor& input,
                                         const at::Tensor& weight, at::IntArrayRef stride, at::IntArrayRef padding,
                                         at::IntArrayRef dilation, std::string_view input_activation);
// depthwise_conv2d_backward: (grad_input, grad_weight).
using DepthwiseConv2dBackwardFn = std::tuple<at::Tensor, at::Tensor>(const at::Tensor& grad_output,
                                                                     const at::Tensor& input, const at::Tensor& weight,
                                                                     at::IntArrayRef stride, at::IntArrayRef padding,
                                                                     at::IntArrayRef dilation,
                                                                     std::string_view input_activation);

using PointwiseConv2dFn = at::Tensor(const at::Tensor& input, const at::Tensor& weight,
                                     const std::optional<at::Tensor>& bias);
// pointwise_conv2d_grad_input and pointwise_conv2d_grad_weight.
using PointwiseConv2dGradFn = at::Tensor(const at::Tensor& grad_output, const at::Tensor& input,
                                         const at::Tensor& weight);

using SeparableConv2dFn = at::Tensor(const at::Tensor& input, const at::Tensor& depthwise_weight,
                                     const at::Tensor& pointwise_weight, const std::optional<at::Tensor>& bias,
                                     at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                     std::string_view input_activation, std::string_view mid_activation,
                                     const std::optional<at::Tensor>& depthwise_bias);
// (grad_input, grad_depthwise_weight, grad_pointwise_weight, grad_depthwise_bias)
using SeparableConv2dBackwardFn = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& depthwise_weight,
    const at::Tensor& pointwise_weight, at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
    std::string_view input_activation, std::string_view mid_activation,
    const std::optional<at::Tensor>& depthwise_bias);

}  // namespace xsep
