#include "common/weight_layout.h"

namespace xsep {

at::ScalarType acc_dtype(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

at::Tensor tap_major(const at::Tensor& weight) {
  return weight.reshape({weight.size(0), -1}).t().contiguous().to(acc_dtype(weight.scalar_type()));
}

at::Tensor from_tap_major(const at::Tensor& taps, const at::Tensor& like) {
  return taps.t().reshape(like.sizes()).to(like.scalar_type()).contiguous();
}

}  // namespace xsep
