// What the CPU implements: the host functions of cpu/ops.h, registered in one place.
#include <torch/library.h>

#include "cpu/ops.h"

namespace xsep::cpu {

TORCH_LIBRARY_IMPL(xsep, CPU, m) {
  m.impl("depthwise_conv2d", &depthwise_conv2d_cpu);
  m.impl("depthwise_conv2d_grad_input", &depthwise_conv2d_grad_input_cpu);
  m.impl("depthwise_conv2d_grad_weight", &depthwise_conv2d_grad_weight_cpu);
  m.impl("depthwise_conv2d_backward", &depthwise_conv2d_backward_cpu);
  m.impl("pointwise_conv2d", &pointwise_conv2d_cpu);
  m.impl("pointwise_conv2d_grad_input", &pointwise_conv2d_grad_input_cpu);
  m.impl("pointwise_conv2d_grad_weight", &pointwise_conv2d_grad_weight_cpu);
  m.impl("separable_conv2d", &separable_conv2d_cpu);
  m.impl("separable_conv2d_backward", &separable_conv2d_backward_cpu);
}

}  // namespace xsep::cpu
