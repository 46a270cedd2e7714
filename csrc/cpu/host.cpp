#include "cpu/host.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>

namespace xsep::cpu {

at::Tensor& addmm_tn_fixed_order(at::Tensor& out, const at::Tensor& a, const at::Tensor& b) {
  constexpr int64_t kBlasReductionRows = 512;
  for (int64_t k0 = 0; k0 < a.size(0); k0 += kBlasReductionRows) {
    const int64_t k = std::min(kBlasReductionRows, a.size(0) - k0);
    out.addmm_(a.narrow(0, k0, k).t(), b.narrow(0, k0, k));
  }
  return out;
}

std::tuple<at::Tensor, at::Tensor> depthwise_backward_from_acc(const DepthwiseGeometry& shape, const at::Tensor& input,
                                                               const at::Tensor& x, const at::Tensor& grad_out_acc,
                                                               const at::Tensor& weight, const at::Tensor& w_taps) {
  auto grad_input = empty_nhwc(input.sizes(), input);
  at::Tensor grad_taps;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "depthwise_backward_from_acc", [&] {
    using acc_t = Acc<scalar_t>;
    const auto& k = depthwise_kernels<scalar_t>();
    const acc_t* go = grad_out_acc.const_data_ptr<acc_t>();
    const scalar_t* x_ptr = x.const_data_ptr<scalar_t>();
    const acc_t* w = w_taps.const_data_ptr<acc_t>();
    scalar_t* gi = grad_input.mutable_data_ptr<scalar_t>();
    if (grad_input.numel() > 0) {
      at::parallel_for(0, shape.N * shape.H, grain(shape.W * shape.OC * shape.kh * shape.kw),
                       [&](int64_t r0, int64_t r1) { k.grad_input_acc(shape, go, w, x_ptr, gi, r0, r1); });
    }
    grad_taps = depthwise_grad_weight_taps<scalar_t, acc_t>(shape, go, x_ptr);
  });
  return {in_format_of(grad_input, input), from_tap_major(grad_taps, weight)};
}

}  // namespace xsep::cpu
