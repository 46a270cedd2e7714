// The data types the CUDA kernels are compiled for, as a tag the host code passes to the launch
// functions (which take raw pointers, keeping ATen out of the nvcc-compiled files).
#pragma once

namespace xsep::cuda {

enum class Dtype { f32, f64, f16, bf16 };

}  // namespace xsep::cuda
