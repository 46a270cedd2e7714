// Device-neutral tensor helpers shared by the CPU and CUDA host code: the accumulation dtype and
// the tap-major depthwise weight layout the kernels read (all taps of one tap index contiguous
// over channels, so a vector of channels loads at once).
#pragma once

#include <ATen/core/Tensor.h>

namespace xsep {

// float32 for every dtype but float64.
at::ScalarType acc_dtype(at::ScalarType t);

// Depthwise weight [C*M, 1, kh, kw] -> tap-major [kh*kw, C*M] in the accumulation dtype.
at::Tensor tap_major(const at::Tensor& weight);
// And back: tap-major [kh*kw, C*M] -> [C*M, 1, kh, kw] in `like`'s dtype.
at::Tensor from_tap_major(const at::Tensor& taps, const at::Tensor& like);

}  // namespace xsep
