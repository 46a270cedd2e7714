// The kernels' parameters, shared by the CPU and CUDA kernels and built once by the argument checks
// (common/conv_args.h). Plain structs without ATen, so that nvcc-compiled kernels take them as they are.
#pragma once

#include <cstdint>

#include "xsep_contract.h"  // Activation, generated from xsep/ops/schemas.py (see xsep/_build.py)

namespace xsep {

// One depthwise convolution. Output channel oc reads input channel oc / M.
struct DepthwiseGeometry {
  int64_t N, C, H, W;  // input
  int64_t M, OC;       // depth multiplier, output channels C * M
  int64_t kh, kw, sh, sw;
  int64_t pad_top, pad_left;  // (bottom/right padding only shows up through Ho/Wo)
  int64_t dil_h, dil_w;
  int64_t Ho, Wo;   // output
  bool relu_input;  // the input goes through relu as it is loaded (the tensor is not changed)
};

// The fused depthwise-separable convolution: the depthwise half (no bias; dw.OC is the pointwise
// input width), the output channels and the activation between the halves.
struct SeparableGeometry {
  DepthwiseGeometry dw;
  int64_t O;
  Activation mid_activation;
};

}  // namespace xsep
