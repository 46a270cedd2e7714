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
namespace {

// The forward and the input gradient are one GEMM over the pixels p of a tensor `a` [N, K, H, W]:
// out[p, j] = sum_k a[p, k] B[k, j] (+ bias[j]), where B [K, cols] is the [O, C] weight matrix read
// through the strides (b_k, b_n). Returns out [N, cols, H, W] in `like`'s memory format.
at::Tensor gemm_over_pixels(const at::Tensor& a, const at::Tensor& weight, int64_t cols, int64_t b_k, int64_t b_n,
                            const std::optional<at::Tensor>& bias, const at::Tensor& like) {
  const int64_t n = a.size(0), k = a.size(1), h = a.size(2), w = a.size(3);
  at::Tensor out = empty_nhwc({n, cols, h, w}, like);
  if (out.numel() > 0) {
    const at::Tensor x = nhwc(a);
    const at::Tensor wm = to_matrix(weight);
    const at::Tensor b = acc_bias(bias);
    const GemmParams g{n * h * w, cols, k, /*a_m=*/k, /*a_k=*/1, b_k, b_n, /*c_m=*/cols};
    pointwise_gemm(g, dtype_of(like), x.const_data_ptr(), wm.const_data_ptr(),
                   b.defined() ? b.const_data_ptr() : nullptr, out.mutable_data_ptr(), current_stream());
  }
  return in_format_of(out, like);
}

}  // namespace

at::Tensor pointwise_conv2d_cuda(const at::Tensor& input, const at::Tensor& weight,
                                 const std::optional<at::Tensor>& bias) {
  check_pointwise_forward("xsep.pointwise_conv2d", kDevice, input, weight, bias);
  const c10::cuda::CUDAGuard guard(input.device());
  // Y[p, o] = sum_c X[p, c] W[o, c]: B[c, o] = W[o, c]
  const int64_t c = input.size(1);
  return gemm_over_pixels(input, weight, weight.size(0), /*b_k=*/1, /*b_n=*/c, bias, input);
}

at::Tensor pointwise_conv2d_grad_input_cuda(const at::Tensor& grad_output, const at::Tensor& input,
                                            const at::Tensor& weight) {
  check_pointwise_backward("xsep.pointwise_conv2d_grad_input", kDevice, grad_output, input, weight);
  const c10::cuda::CUDAGuard guard(input.device());
  // GX[p, c] = sum_o GY[p, o] W[o, c]: B = W
  const int64_t c = input.size(1);
  return gemm_over_pixels(grad_output, weight, c, /*b_k=*/c, /*b_n=*/1, std::nullopt, input);
}

at::Tensor pointwise_conv2d_grad_weight_cuda(const at::Tensor& grad_output, const at::Tensor& input,
                                             const at::Tensor& weight) {
  check_pointwise_backward("xsep.pointwise_conv2d_grad_weight", kDevice, grad_output, input, weight);
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
