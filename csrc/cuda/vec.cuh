// VEC consecutive elements moved as one aligned access (16 bytes for the kernels' vectors).
#pragma once

namespace xsep::cuda {

template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Vec {
  T v[VEC];
};

// The elements per 16-byte vector of T.
template <typename T>
constexpr int kVec16 = 16 / static_cast<int>(sizeof(T));

}  // namespace xsep::cuda
