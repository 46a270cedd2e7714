#include "cuda/cuda_host.h"

#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAStream.h>

namespace xsep::cuda {

void check_cuda(const char* op, const at::Tensor& input) {
  TORCH_CHECK(input.device().is_cuda(), op, ": expected CUDA tensors, got ", input.device());
}

Dtype dtype_of(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return Dtype::f32;
    case at::kDouble: return Dtype::f64;
    case at::kHalf: return Dtype::f16;
    case at::kBFloat16: return Dtype::bf16;
    default: TORCH_CHECK(false, "xsep: unsupported dtype ", t.scalar_type());
  }
}

at::Tensor nhwc(const at::Tensor& t) { return t.contiguous(at::MemoryFormat::ChannelsLast); }

at::Tensor empty_nhwc(at::IntArrayRef sizes, const at::Tensor& like) {
  return at::empty(sizes, like.options().memory_format(at::MemoryFormat::ChannelsLast));
}

cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

}  // namespace xsep::cuda
