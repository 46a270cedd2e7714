// Argument checks and output-size arithmetic shared by every device's kernels, so that each
// backend rejects the same bad inputs with the same messages.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/Optional.h>

#include <string_view>

namespace xsep {

enum class Activation : int { none = 0, relu = 1, relu6 = 2, elu = 3 };

// Parses an activation name; `arg` names the argument in the error. Only "none" and "relu" are
// accepted when `input_side` (activations applied to the input as it is loaded).
Activation parse_activation(const char* op, const char* arg, std::string_view name, bool input_side);

struct DepthwiseGeometry {
  int64_t N, C, H, W;   // input
  int64_t M, OC;        // depth multiplier, output channels C * M
  int64_t kh, kw, sh, sw, pad_top, pad_bottom, pad_left, pad_right, dil_h, dil_w;
  int64_t Ho, Wo;       // output
  bool relu_input;
};

// Checks input [N, C, H, W], weight [C*M, 1, kh, kw], optional bias [C*M], stride, padding
// (top, bottom, left, right), dilation; returns the geometry. Errors name the bad argument.
DepthwiseGeometry check_depthwise(const char* op, const at::Tensor& input, const at::Tensor& weight,
                                  const c10::optional<at::Tensor>& bias, c10::IntArrayRef stride,
                                  c10::IntArrayRef padding, c10::IntArrayRef dilation,
                                  std::string_view input_activation);

// Checks input [N, C, H, W], weight [O, C, 1, 1] (or [O, C]), optional bias [O].
void check_pointwise(const char* op, const at::Tensor& input, const at::Tensor& weight,
                     const c10::optional<at::Tensor>& bias);

// The separable convolution's pointwise_weight [O, g.OC, 1, 1] and optional bias [O], on input's
// device with input's dtype.
void check_separable_pointwise(const char* op, const DepthwiseGeometry& g, const at::Tensor& input,
                               const at::Tensor& pw_weight, const c10::optional<at::Tensor>& bias);

// grad_output must be 4-D [N, channels, Ho, Wo] on input's device with input's dtype.
void check_grad_output(const char* op, const at::Tensor& grad_output, const at::Tensor& input,
                       int64_t channels, int64_t Ho, int64_t Wo);

// A floating dtype the kernels support: float32, float64, float16, bfloat16.
void check_float_dtype(const char* op, const char* arg, const at::Tensor& t);

}  // namespace xsep
