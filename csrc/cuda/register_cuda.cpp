// What CUDA implements: the host functions of cuda/ops.h, registered in one place. The CUDA
// emulator's build (tests/cuda_emu, XSEP_CUDA_EMU) registers the same functions for CPU tensors as
// torch.ops.xsep_emu.*, so that tests/cuda runs the host code and kernels without a GPU.
#include <torch/library.h>

#include "cuda/ops.h"

#ifdef XSEP_CUDA_EMU
#define XSEP_CUDA_OPS_LIBRARY xsep_emu
#define XSEP_CUDA_OPS_KEY CPU
#else
#define XSEP_CUDA_OPS_LIBRARY xsep
#define XSEP_CUDA_OPS_KEY CUDA
#endif

namespace xsep::cuda {

TORCH_LIBRARY_IMPL(XSEP_CUDA_OPS_LIBRARY, XSEP_CUDA_OPS_KEY, m) {
  m.impl("depthwise_conv2d", &depthwise_conv2d_cuda);
  m.impl("depthwise_conv2d_grad_input", &depthwise_conv2d_grad_input_cuda);
  m.impl("depthwise_conv2d_grad_weight", &depthwise_conv2d_grad_weight_cuda);
  m.impl("depthwise_conv2d_backward", &depthwise_conv2d_backward_cuda);
  m.impl("pointwise_conv2d", &pointwise_conv2d_cuda);
  m.impl("pointwise_conv2d_grad_input", &pointwise_conv2d_grad_input_cuda);
  m.impl("pointwise_conv2d_grad_weight", &pointwise_conv2d_grad_weight_cuda);
  m.impl("separable_conv2d", &separable_conv2d_cuda);
  m.impl("separable_conv2d_backward", &separable_conv2d_backward_cuda);
}

}  // namespace xsep::cuda
