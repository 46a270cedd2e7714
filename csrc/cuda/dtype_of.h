// The kernels' dtype tag of a tensor dtype (header-only: the CUDA emulator's test bindings use it
// too, without the CUDA runtime).
#pragma once

#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>

#include "cuda/dtype.h"

namespace xsep::cuda {

inline Dtype dtype_of(c10::ScalarType t) {
  switch (t) {
    case c10::kFloat: return Dtype::f32;
    case c10::kDouble: return Dtype::f64;
    case c10::kHalf: return Dtype::f16;
    case c10::kBFloat16: return Dtype::bf16;
    default: TORCH_CHECK(false, "xsep: unsupported dtype ", t);
  }
}

}  // namespace xsep::cuda
