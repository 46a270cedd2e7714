// The checks every op starts with, shared by every device's host code, so that each backend
// rejects the same bad inputs with the same messages, in one order: the device, the arguments (the
// mid activation last), then grad_output (backward ops: each family's backward check is its forward
// check plus grad_output). They return the kernels'
// parameters (common/geometry.h). `device` is the device type whose kernels run.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/DeviceType.h>
#include <c10/util/ArrayRef.h>

#include <optional>
#include <string_view>

#include "common/geometry.h"

namespace xsep {

// depthwise_conv2d: input [N, C, H, W], weight [C*M, 1, kh, kw], optional bias [C*M], stride,
// padding (top, bottom, left, right), dilation, input_activation "none" or "relu".
DepthwiseGeometry check_depthwise_forward(const char* op, c10::DeviceType device, const at::Tensor& input,
                                          const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                                          at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                          std::string_view input_activation);
// Its backward ops: the same, no bias, and grad_output [N, C*M, Ho, Wo].
DepthwiseGeometry check_depthwise_backward(const char* op, c10::DeviceType device, const at::Tensor& grad_output,
                                           const at::Tensor& input, const at::Tensor& weight, at::IntArrayRef stride,
                                           at::IntArrayRef padding, at::IntArrayRef dilation,
                                           std::string_view input_activation);

// pointwise_conv2d: input [N, C, H, W], weight [O, C, 1, 1] (or [O, C]), optional bias [O].
void check_pointwise_forward(const char* op, c10::DeviceType device, const at::Tensor& input, const at::Tensor& weight,
                             const std::optional<at::Tensor>& bias);
// Its backward ops: the same, no bias, and grad_output [N, O, H, W].
void check_pointwise_backward(const char* op, c10::DeviceType device, const at::Tensor& grad_output,
                              const at::Tensor& input, const at::Tensor& weight);

// separable_conv2d: the depthwise arguments (its weight named depthwise_weight), pointwise_weight
// [O, C*M, 1, 1], optional bias [O], optional depthwise_bias [C*M] (added before the mid
// activation), mid_activation "none", "relu", "relu6" or "elu".
SeparableGeometry check_separable_forward(const char* op, c10::DeviceType device, const at::Tensor& input,
                                          const at::Tensor& dw_weight, const at::Tensor& pw_weight,
                                          const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                          at::IntArrayRef padding, at::IntArrayRef dilation,
                                          std::string_view input_activation, std::string_view mid_activation,
                                          const std::optional<at::Tensor>& dw_bias);
// Its backward op: the same, no (pointwise) bias, and grad_output [N, O, Ho, Wo].
SeparableGeometry check_separable_backward(const char* op, c10::DeviceType device, const at::Tensor& grad_output,
                                           const at::Tensor& input, const at::Tensor& dw_weight,
                                           const at::Tensor& pw_weight, at::IntArrayRef stride, at::IntArrayRef padding,
                                           at::IntArrayRef dilation, std::string_view input_activation,
                                           std::string_view mid_activation, const std::optional<at::Tensor>& dw_bias);

}  // namespace xsep
