// The accumulation type of each data type, for every kernel (CPU and CUDA): float for all but
// double. Light on purpose (no includes), so that nvcc-compiled kernels and the CPU kernels'
// instruction-set regions can use it; acc_dtype (common/layout.h) is its run-time twin.
#pragma once

namespace xsep {

template <typename T>
struct AccType {
  using type = float;
};
template <>
struct AccType<double> {
  using type = double;
};
template <typename T>
using Acc = typename AccType<T>::type;

}  // namespace xsep
