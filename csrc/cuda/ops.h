// The CUDA host functions of the ops of xsep/ops/schemas.py, defined one op per file
// (csrc/cuda/<op>_cuda.cpp, around the kernels of <op>_kernels.cu) and registered for the CUDA
// dispatch key by csrc/cuda/register_cuda.cpp. Each checks its arguments itself (the ops are public) and returns its
// outputs in the input's memory format.
#pragma once

#include "op_signatures.h"

namespace xsep::cuda {

// Each declared with its op's signature type (op_signatures.h).
DepthwiseConv2dFn depthwise_conv2d_cuda;
DepthwiseConv2dGradFn depthwise_conv2d_grad_input_cuda, depthwise_conv2d_grad_weight_cuda;
DepthwiseConv2dBackwardFn depthwise_conv2d_backward_cuda;
PointwiseConv2dFn pointwise_conv2d_cuda;
PointwiseConv2dGradFn pointwise_conv2d_grad_input_cuda, pointwise_conv2d_grad_weight_cuda;
SeparableConv2dFn separable_conv2d_cuda;
SeparableConv2dBackwardFn separable_conv2d_backward_cuda;

}  // namespace xsep::cuda
