#include "cuda/cuda_host.h"

#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>

namespace xsep::cuda {

void check_cuda(const char* op, const at::Tensor& input) {
  TORCH_CHECK(input.device().is_cuda(), op, ": expected CUDA tensors, got ", input.device());
}

Dtype dtype_of(const at::Tensor& t) { return dtype_of(t.scalar_type()); }

at::Tensor nhwc(const at::Tensor& t) { return t.contiguous(at::MemoryFormat::ChannelsLast); }

at::Tensor empty_nhwc(at::IntArrayRef sizes, const at::Tensor& like) {
  return at::empty(sizes, like.options().memory_format(at::MemoryFormat::ChannelsLast));
}

DwParams dw_params(const DepthwiseGeometry& g) {
  return DwParams{g.N,  g.C,       g.H,        g.W,     g.M,     g.OC,  g.kh, g.kw, g.sh,
                  g.sw, g.pad_top, g.pad_left, g.dil_h, g.dil_w, g.Ho, g.Wo, g.relu_input};
}

int64_t smem_per_block_optin() {
  int bytes = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin,
                                        c10::cuda::current_device()));
  return bytes;
}

cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

}  // namespace xsep::cuda
