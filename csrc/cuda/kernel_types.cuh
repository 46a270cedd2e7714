// For the .cu files: the accumulation type of each data type, and the switch from the host's
// Dtype tag to a C++ type.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "cuda/dtype.h"

namespace xsep::cuda {

template <typename T> struct Acc { using type = float; };
template <> struct Acc<double> { using type = double; };

// Calls f(T{}) for the C++ type T of `dt`.
template <typename F>
void dispatch_dtype(Dtype dt, F&& f) {
  switch (dt) {
    case Dtype::f32: f(float{}); break;
    case Dtype::f64: f(double{}); break;
    case Dtype::f16: f(c10::Half{}); break;
    case Dtype::bf16: f(c10::BFloat16{}); break;
  }
}

}  // namespace xsep::cuda
