#include "common/conv_args.h"

#include <c10/util/Exception.h>

#include <iterator>
#include <string>

namespace xsep {

namespace {

void check_device(const char* op, c10::DeviceType device, const at::Tensor& input) {
  TORCH_CHECK(input.device().type() == device, op, ": expected ", c10::DeviceTypeName(device), " tensors, got ",
              input.device());
}

// Parses an activation name, one of the first `count` of kActivationNames; `arg` names the argument
// in the error.
Activation parse_activation(const char* op, const char* arg, std::string_view name, int count) {
  for (int code = 0; code < count; ++code)
    if (name == kActivationNames[code]) return static_cast<Activation>(code);
  std::string expected;
  for (int code = 0; code < count; ++code)
    expected += (code == 0 ? "'" : code + 1 < count ? ", '" : " or '") + std::string(kActivationNames[code]) + "'";
  TORCH_CHECK_VALUE(false, op, ": unknown ", arg, " '", std::string(name), "'; expected ", expected);
}

// A floating dtype the kernels support: float32, float64, float16, bfloat16.
void check_float_dtype(const char* op, const char* arg, const at::Tensor& t) {
  const auto dt = t.scalar_type();
  TORCH_CHECK_TYPE(dt == at::kFloat || dt == at::kDouble || dt == at::kHalf || dt == at::kBFloat16, op, ": ", arg,
                   " has dtype ", dt, "; supported are float32, float64, float16 and bfloat16");
}

void check_same_device_dtype(const char* op, const char* arg, const at::Tensor& t, const at::Tensor& input) {
  TORCH_CHECK(t.device() == input.device(), op, ": ", arg, " is on ", t.device(), " but input is on ", input.device(),
              "; all tensors must be on one device");
  TORCH_CHECK_TYPE(t.scalar_type() == input.scalar_type(), op, ": ", arg, " has dtype ", t.scalar_type(),
                   " but input has dtype ", input.scalar_type(), "; all tensors must have one dtype");
}

void check_input(const char* op, const at::Tensor& input) {
  TORCH_CHECK_VALUE(input.dim() == 4, op, ": input must be a 4-D tensor [N, C, H, W], got ", input.dim(),
                    "-D with shape ", input.sizes());
  TORCH_CHECK_VALUE(input.size(1) > 0, op, ": input must have at least one channel, got shape ", input.sizes());
  check_float_dtype(op, "input", input);
}

// An optional bias [channels] (`arg` names it), on input's device with input's dtype.
void check_bias(const char* op, const char* arg, const std::optional<at::Tensor>& bias, const at::Tensor& input,
                int64_t channels) {
  if (!bias.has_value() || !bias->defined()) return;
  check_same_device_dtype(op, arg, *bias, input);
  TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == channels, op, ": ", arg, " must have shape [", channels,
                    "], got ", bias->sizes());
}

// input [N, C, H, W], weight [C*M, 1, kh, kw], optional bias [C*M], stride, padding (top, bottom,
// left, right), dilation; errors name the bad argument.
DepthwiseGeometry check_depthwise(const char* op, const at::Tensor& input, const at::Tensor& weight,
                                  const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                  at::IntArrayRef padding, at::IntArrayRef dilation,
                                  std::string_view input_activation) {
  check_input(op, input);
  check_same_device_dtype(op, "weight", weight, input);
  DepthwiseGeometry g{};
  g.N = input.size(0);
  g.C = input.size(1);
  g.H = input.size(2);
  g.W = input.size(3);
  TORCH_CHECK_VALUE(weight.dim() == 4 && weight.size(1) == 1 && weight.size(0) > 0 && weight.size(0) % g.C == 0 &&
                        weight.size(2) > 0 && weight.size(3) > 0,
                    op, ": weight must have shape [C * M, 1, kh, kw] for input channels C = ", g.C,
                    " and a depth multiplier M >= 1, got ", weight.sizes());
  g.OC = weight.size(0);
  g.M = g.OC / g.C;
  g.kh = weight.size(2);
  g.kw = weight.size(3);
  check_bias(op, "bias", bias, input, g.OC);
  TORCH_CHECK_VALUE(stride.size() == 2 && stride[0] > 0 && stride[1] > 0, op,
                    ": stride must be two positive ints, got ", stride);
  TORCH_CHECK_VALUE(padding.size() == 4 && padding[0] >= 0 && padding[1] >= 0 && padding[2] >= 0 && padding[3] >= 0, op,
                    ": padding must be four non-negative ints (top, bottom, left, right), got ", padding);
  TORCH_CHECK_VALUE(dilation.size() == 2 && dilation[0] > 0 && dilation[1] > 0, op,
                    ": dilation must be two positive ints, got ", dilation);
  g.sh = stride[0];
  g.sw = stride[1];
  g.pad_top = padding[0];
  g.pad_left = padding[2];
  g.dil_h = dilation[0];
  g.dil_w = dilation[1];
  const int64_t span_h = g.dil_h * (g.kh - 1) + 1, span_w = g.dil_w * (g.kw - 1) + 1;
  const int64_t padded_h = g.H + padding[0] + padding[1], padded_w = g.W + padding[2] + padding[3];
  TORCH_CHECK_VALUE(span_h <= padded_h && span_w <= padded_w, op, ": the kernel (", g.kh, "x", g.kw, ", dilation ",
                    dilation, ", spanning ", span_h, "x", span_w, ") is larger than the padded input (", padded_h, "x",
                    padded_w, ")");
  g.Ho = (padded_h - span_h) / g.sh + 1;
  g.Wo = (padded_w - span_w) / g.sw + 1;
  g.relu_input = parse_activation(op, "input_activation", input_activation, kInputActivations) == Activation::relu;
  return g;
}

// input [N, C, H, W], weight [O, C, 1, 1] (or [O, C]), optional bias [O].
void check_pointwise(const char* op, const at::Tensor& input, const at::Tensor& weight,
                     const std::optional<at::Tensor>& bias) {
  check_input(op, input);
  check_same_device_dtype(op, "weight", weight, input);
  const bool shape_ok = (weight.dim() == 4 && weight.size(2) == 1 && weight.size(3) == 1) || weight.dim() == 2;
  TORCH_CHECK_VALUE(shape_ok && weight.size(1) == input.size(1) && weight.size(0) > 0, op,
                    ": weight must have shape [O, C, 1, 1] for input channels C = ", input.size(1), ", got ",
                    weight.sizes());
  check_bias(op, "bias", bias, input, weight.size(0));
}

// grad_output must be 4-D [N, channels, Ho, Wo] on input's device with input's dtype.
void check_grad_output(const char* op, const at::Tensor& grad_output, const at::Tensor& input, int64_t channels,
                       int64_t Ho, int64_t Wo) {
  check_same_device_dtype(op, "grad_output", grad_output, input);
  TORCH_CHECK_VALUE(grad_output.dim() == 4 && grad_output.size(0) == input.size(0) && grad_output.size(1) == channels &&
                        grad_output.size(2) == Ho && grad_output.size(3) == Wo,
                    op, ": grad_output must have shape [", input.size(0), ", ", channels, ", ", Ho, ", ", Wo, "], got ",
                    grad_output.sizes());
}

// The separable convolution's pointwise_weight [O, g.OC, 1, 1] and optional bias [O], on input's
// device with input's dtype.
void check_separable_pointwise(const char* op, const DepthwiseGeometry& g, const at::Tensor& input,
                               const at::Tensor& pw_weight, const std::optional<at::Tensor>& bias) {
  check_same_device_dtype(op, "pointwise_weight", pw_weight, input);
  TORCH_CHECK_VALUE(pw_weight.dim() == 4 && pw_weight.size(1) == g.OC && pw_weight.size(2) == 1 &&
                        pw_weight.size(3) == 1 && pw_weight.size(0) > 0,
                    op, ": pointwise_weight must have shape [O, ", g.OC, ", 1, 1], got ", pw_weight.sizes());
  check_bias(op, "bias", bias, input, pw_weight.size(0));
}

}  // namespace

DepthwiseGeometry check_depthwise_forward(const char* op, c10::DeviceType device, const at::Tensor& input,
                                          const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                                          at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                          std::string_view input_activation) {
  check_device(op, device, input);
  return check_depthwise(op, input, weight, bias, stride, padding, dilation, input_activation);
}

DepthwiseGeometry check_depthwise_backward(const char* op, c10::DeviceType device, const at::Tensor& grad_output,
                                           const at::Tensor& input, const at::Tensor& weight, at::IntArrayRef stride,
                                           at::IntArrayRef padding, at::IntArrayRef dilation,
                                           std::string_view input_activation) {
  const DepthwiseGeometry g =
      check_depthwise_forward(op, device, input, weight, std::nullopt, stride, padding, dilation, input_activation);
  check_grad_output(op, grad_output, input, g.OC, g.Ho, g.Wo);
  return g;
}

void check_pointwise_forward(const char* op, c10::DeviceType device, const at::Tensor& input, const at::Tensor& weight,
                             const std::optional<at::Tensor>& bias) {
  check_device(op, device, input);
  check_pointwise(op, input, weight, bias);
}

void check_pointwise_backward(const char* op, c10::DeviceType device, const at::Tensor& grad_output,
                              const at::Tensor& input, const at::Tensor& weight) {
  check_pointwise_forward(op, device, input, weight, std::nullopt);
  check_grad_output(op, grad_output, input, weight.size(0), input.size(2), input.size(3));
}

SeparableGeometry check_separable_forward(const char* op, c10::DeviceType device, const at::Tensor& input,
                                          const at::Tensor& dw_weight, const at::Tensor& pw_weight,
                                          const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                          at::IntArrayRef padding, at::IntArrayRef dilation,
                                          std::string_view input_activation, std::string_view mid_activation,
                                          const std::optional<at::Tensor>& dw_bias) {
  const DepthwiseGeometry g =
      check_depthwise_forward(op, device, input, dw_weight, std::nullopt, stride, padding, dilation, input_activation);
  check_separable_pointwise(op, g, input, pw_weight, bias);
  check_bias(op, "depthwise_bias", dw_bias, input, g.OC);
  const int every_activation = static_cast<int>(std::size(kActivationNames));
  return SeparableGeometry{g, pw_weight.size(0),
                           parse_activation(op, "mid_activation", mid_activation, every_activation)};
}

SeparableGeometry check_separable_backward(const char* op, c10::DeviceType device, const at::Tensor& grad_output,
                                           const at::Tensor& input, const at::Tensor& dw_weight,
                                           const at::Tensor& pw_weight, at::IntArrayRef stride, at::IntArrayRef padding,
                                           at::IntArrayRef dilation, std::string_view input_activation,
                                           std::string_view mid_activation, const std::optional<at::Tensor>& dw_bias) {
  const SeparableGeometry g = check_separable_forward(op, device, input, dw_weight, pw_weight, std::nullopt, stride,
                                                      padding, dilation, input_activation, mid_activation, dw_bias);
  check_grad_output(op, grad_output, input, g.O, g.dw.Ho, g.dw.Wo);
  return g;
}

}  // namespace xsep
