// The mid activations of the fused op on CUDA (xsep::Activation), in the accumulation type: the
// activation itself, applied where the depthwise output is produced (the fused forward's on-chip
// tile, the depthwise forward kernel writing act(d) for the fused backward), and its derivative
// taken from the activation's output, which is all the fused backward keeps.
#pragma once

#include <cmath>
#include <type_traits>

#include "common/geometry.h"  // Activation

namespace xsep::cuda {

template <typename A>
__device__ __forceinline__ A activate(Activation act, A v) {
  switch (act) {
    case Activation::relu: return v < A(0) ? A(0) : v;
    case Activation::relu6: return v < A(0) ? A(0) : (v > A(6) ? A(6) : v);
    case Activation::elu:
      if constexpr (std::is_same_v<A, float>) return v > 0.0f ? v : expm1f(v);
      else return v > 0.0 ? v : expm1(v);
    default: return v;
  }
}

// d(act)/d(pre) * g from a = act(pre) (as the data type kept it), with the CPU kernels' and
// PyTorch's values at the kinks (relu'(0) = 0): relu: a > 0; relu6: 0 < a < 6; elu: 1 for a > 0,
// else exp(pre) = expm1(pre) + 1 = a + 1. Rounding is monotone and 0 and 6 are representable, so
// round(act(pre)) tells the same side of each kink as round(pre) did; for elu, a + 1 from the
// rounded a is off by at most half a unit of the data type near 1 (absolute), where exp of the
// rounded pre was off relatively: the same order of error.
template <typename A>
__device__ __forceinline__ A activation_grad_from_output(Activation act, A a, A g) {
  switch (act) {
    case Activation::relu: return a > A(0) ? g : A(0);
    case Activation::relu6: return a > A(0) && a < A(6) ? g : A(0);
    case Activation::elu: return a > A(0) ? g : g * (a + A(1));
    default: return g;
  }
}

}  // namespace xsep::cuda
