// The CPU host functions of the ops of xsep/ops/schemas.py, defined one op per file
// (csrc/cpu/<op>.cpp) and registered for the CPU dispatch key by csrc/cpu/register.cpp. Each
// checks its arguments itself (the ops are public) and returns its outputs in the input's memory
// format.
#pragma once

#include "op_signatures.h"

namespace xsep::cpu {

// Each declared with its op's signature type (op_signatures.h).
DepthwiseConv2dFn depthwise_conv2d_cpu;
DepthwiseConv2dGradFn depthwise_conv2d_grad_input_cpu, depthwise_conv2d_grad_weight_cpu;
DepthwiseConv2dBackwardFn depthwise_conv2d_backward_cpu;
PointwiseConv2dFn pointwise_conv2d_cpu;
PointwiseConv2dGradFn pointwise_conv2d_grad_input_cpu, pointwise_conv2d_grad_weight_cpu;
SeparableConv2dFn separable_conv2d_cpu;
SeparableConv2dBackwardFn separable_conv2d_backward_cpu;

}  // namespace xsep::cpu
