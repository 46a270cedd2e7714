// What CUDA implements: the host functions of cuda/ops.h, registered in one place.
#include <torch/library.h>

#include "cuda/ops.h"

namespace xsep::cuda {

TORCH_LIBRARY_IMPL(xsep, CUDA, m) {
  m.impl("depthwise_conv2d", &depthwise_conv2d_cuda);
  m.impl("depthwise_conv2d_grad_input", &depthwise_conv2d_grad_input_cuda);
  m.impl("depthwise_conv2d_grad_weight", &depthwise_conv2d_grad_weight_cuda);
  m.impl("pointwise_conv2d", &pointwise_conv2d_cuda);
  m.impl("pointwise_conv2d_grad_input", &pointwise_conv2d_grad_input_cuda);
  m.impl("pointwise_conv2d_grad_weight", &pointwise_conv2d_grad_weight_cuda);
  m.impl("separable_conv2d", &separable_conv2d_cuda);
  m.impl("separable_conv2d_backward", &separable_conv2d_backward_cuda);
}

}  // namespace xsep::cuda
