// CUDA pointwise (1x1) convolution: argument checks, device guard, stream and layout around the
// strided GEMM of pointwise_conv2d_kernels.cu, over channels-last pixels (NCHW inputs are converted
// to channels-last here). Outputs keep the input's memory format; the weight gradient's reduction
// over pixels is split in fixed chunks and summed in order (deterministic).
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>

#include <optional>

#include "common/conv_args.h"
#include "common/layout.h"
#include "cuda/cuda_host.h"
#include "cuda/ops.h"
#include "cuda/pointwise_conv2d_kernels.h"

namespace xsep::cuda {

at::Tensor pointwise_conv2d_cuda(const at::Tensor& input, const at::Tensor& weight,
                                 const std::optional<at::Tensor>& bias) {
  check_pointwise_forward("xsep.pointwise_conv2d", at::kCUDA, input, weight, bias);
  const c10::cuda::CUDAGuard guard(input.device());
  const int64_t n = input.size(0), c = input.size(1), h = input.size(2), w = input.size(3);
  const int64_t o = weight.size(0), pixels = n * h * w;
  at::Tensor out = empty_nhwc({n, o, h, w}, input);
  if (out.numel() > 0) {
    const at::Tensor x = nhwc(input);
    const at::Tensor wm = to_matrix(weight);
    const at::Tensor b = acc_bias(bias);
    // Y[p, o] = sum_c X[p, c] W[o, c]
    const GemmParams g{pixels, o, c, /*a_m=*/c, /*a_k=*/1, /*b_k=*/1, /*b_n=*/c, /*c_m=*/o};
    pointwise_gemm(g, dtype_of(input), x.const_data_ptr(), wm.const_data_ptr(),
                   b.defined() ? b.const_data_ptr() : nullptr, out.mutable_data_ptr(), current_stream());
  }
  return in_format_of(out, input);
}

at::Tensor pointwise_conv2d_grad_input_cuda(const at::Tensor& grad_output, const at::Tensor& input,
                                            const at::Tensor& weight) {
  check_pointwise_backward("xsep.pointwise_conv2d_grad_input", at::kCUDA, grad_output, input, weight);
  const c10::cuda::CUDAGuard guard(input.device());
  const int64_t n = input.size(0), c = input.size(1), h = input.size(2), w = input.size(3);
  const int64_t o = weight.size(0), pixels = n * h * w;
  at::Tensor gi = empty_nhwc({n, c, h, w}, input);
  if (gi.numel() > 0) {
    const at::Tensor go = nhwc(grad_output);
    const at::Tensor wm = to_matrix(weight);
    // GX[p, c] = sum_o GY[p, o] W[o, c]
    const GemmParams g{pixels, c, o, /*a_m=*/o, /*a_k=*/1, /*b_k=*/c, /*b_n=*/1, /*c_m=*/c};
    pointwise_gemm(g, dtype_of(input), go.const_data_ptr(), wm.const_data_ptr(), nullptr, gi.mutable_data_ptr(),
                   current_stream());
  }
  return in_format_of(gi, input);
}

at::Tensor pointwise_conv2d_grad_weight_cuda(const at::Tensor& grad_output, const at::Tensor& input,
                                             const at::Tensor& weight) {
  check_pointwise_backward("xsep.pointwise_conv2d_grad_weight", at::kCUDA, grad_output, input, weight);
  const c10::cuda::CUDAGuard guard(input.device());
  const int64_t c = input.size(1), o = weight.size(0);
  const int64_t pixels = input.size(0) * input.size(2) * input.size(3);
  const auto acc = input.options().dtype(acc_dtype(input.scalar_type()));
  at::Tensor gw = at::empty({o, c}, acc);
  if (pixels == 0) {
    gw.zero_();
  } else {
    const at::Tensor go = nhwc(grad_output);
    const at::Tensor x = nhwc(input);
    // GW[o, c] = sum_p GY[p, o] X[p, c]
    const GemmParams g{o, c, pixels, /*a_m=*/1, /*a_k=*/o, /*b_k=*/c, /*b_n=*/1, /*c_m=*/c};
    at::Tensor partials = at::empty({gemm_k_splits(g), o, c}, acc);
    pointwise_gemm_split_k(g, dtype_of(input), go.const_data_ptr(), x.const_data_ptr(), partials.mutable_data_ptr(),
                           gw.mutable_data_ptr(), current_stream());
  }
  return from_matrix(gw, weight);
}

}  // namespace xsep::cuda
