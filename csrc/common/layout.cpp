#include "common/layout.h"

#include <ATen/ops/empty.h>

namespace xsep {

at::ScalarType acc_dtype(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

at::Tensor nhwc(const at::Tensor& t) { return t.contiguous(at::MemoryFormat::ChannelsLast); }

at::Tensor empty_nhwc(at::IntArrayRef sizes, const at::Tensor& like) {
  return at::empty(sizes, like.options().memory_format(at::MemoryFormat::ChannelsLast));
}

at::Tensor in_format_of(const at::Tensor& out, const at::Tensor& input) {
  return out.contiguous(input.suggest_memory_format());
}

at::Tensor acc_bias(const std::optional<at::Tensor>& bias) {
  if (!bias.has_value() || !bias->defined()) return at::Tensor();
  return bias->to(acc_dtype(bias->scalar_type())).contiguous();
}

at::Tensor tap_major(const at::Tensor& weight) {
  return weight.reshape({weight.size(0), -1}).t().contiguous().to(acc_dtype(weight.scalar_type()));
}

at::Tensor from_tap_major(const at::Tensor& taps, const at::Tensor& like) {
  return taps.t().reshape(like.sizes()).to(like.scalar_type()).contiguous();
}

at::Tensor to_matrix(const at::Tensor& weight) { return weight.reshape({weight.size(0), weight.size(1)}).contiguous(); }

at::Tensor from_matrix(const at::Tensor& grad, const at::Tensor& weight) {
  return grad.to(weight.scalar_type()).reshape(weight.sizes()).contiguous();
}

}  // namespace xsep
