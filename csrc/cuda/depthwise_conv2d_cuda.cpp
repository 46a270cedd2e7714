// CUDA depthwise convolution: argument checks, device guard, stream and layout around the kernels
// of depthwise_conv2d_kernels.cu. The forward has a channels-last (NHWC) and an NCHW kernel, and so
// does the input gradient at unit stride with M == 1; the other backward kernels work on
// channels-last data, so NCHW tensors are converted for them (an extra pass each way). Outputs
// are returned in the input's memory format.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>

#include <optional>
#include <string_view>
#include <tuple>

#include "common/conv_args.h"
#include "common/layout.h"
#include "cuda/cuda_host.h"
#include "cuda/depthwise_conv2d_kernels.h"
#include "cuda/ops.h"

namespace xsep::cuda {

at::Tensor depthwise_conv2d_cuda(const at::Tensor& input, const at::Tensor& weight,
                                 const std::optional<at::Tensor>& bias, at::IntArrayRef stride, at::IntArrayRef padding,
                                 at::IntArrayRef dilation, std::string_view input_activation) {
  const DepthwiseGeometry g = check_depthwise_forward("xsep.depthwise_conv2d", kDevice, input, weight, bias, stride,
                                                      padding, dilation, input_activation);
  const c10::cuda::CUDAGuard guard(input.device());
  // NCHW inputs run the NCHW kernel; everything else (channels_last, odd strides) runs on a
  // channels-last copy.
  const bool nchw = input.suggest_memory_format() == at::MemoryFormat::Contiguous;
  at::Tensor out =
      nchw ? at::empty({g.N, g.OC, g.Ho, g.Wo}, input.options()) : empty_nhwc({g.N, g.OC, g.Ho, g.Wo}, input);
  if (out.numel() > 0) {
    const at::Tensor w = tap_major(weight);
    const at::Tensor b = acc_bias(bias);
    const void* bp = b.defined() ? b.const_data_ptr() : nullptr;
    if (nchw) {
      const at::Tensor x = input.contiguous();
      depthwise_forward_nchw(g, dtype_of(input), x.const_data_ptr(), w.const_data_ptr(), bp, out.mutable_data_ptr(),
                             current_stream());
    } else {
      const at::Tensor x = nhwc(input);
      depthwise_forward_nhwc(g, dtype_of(input), x.const_data_ptr(), w.const_data_ptr(), bp, out.mutable_data_ptr(),
                             current_stream());
    }
  }
  return in_format_of(out, input);
}

namespace {

// The two gradients once the arguments are checked (g); the caller holds the device guard.
at::Tensor grad_input(const DepthwiseGeometry& g, const at::Tensor& grad_output, const at::Tensor& input,
                      const at::Tensor& weight) {
  const at::Tensor w = tap_major(weight);
  if (input.suggest_memory_format() == at::MemoryFormat::Contiguous) {
    // NCHW at unit stride with M == 1: the NCHW kernel, no layout conversion
    at::Tensor gi = at::empty({g.N, g.C, g.H, g.W}, input.options());
    if (gi.numel() == 0) return gi;
    const at::Tensor go = grad_output.contiguous();
    const at::Tensor x = g.relu_input ? input.contiguous() : at::Tensor();  // only for the relu mask
    if (depthwise_grad_input_nchw(g, dtype_of(input), go.const_data_ptr(), w.const_data_ptr(),
                                  x.defined() ? x.const_data_ptr() : nullptr, gi.mutable_data_ptr(),
                                  current_stream())) {
      return gi;
    }
  }
  at::Tensor gi = empty_nhwc({g.N, g.C, g.H, g.W}, input);
  if (gi.numel() > 0) {
    const at::Tensor go = nhwc(grad_output);
    const at::Tensor x = g.relu_input ? nhwc(input) : at::Tensor();  // only for the relu mask
    depthwise_grad_input_nhwc(g, dtype_of(input), go.const_data_ptr(), w.const_data_ptr(),
                              x.defined() ? x.const_data_ptr() : nullptr, gi.mutable_data_ptr(), current_stream());
  }
  return in_format_of(gi, input);
}

// Deterministic: fixed chunks, partial sums, an ordered second pass (see depthwise_conv2d_kernels.h).
at::Tensor grad_weight(const DepthwiseGeometry& g, const at::Tensor& grad_output, const at::Tensor& input,
                       const at::Tensor& weight) {
  const auto acc = input.options().dtype(acc_dtype(input.scalar_type()));
  at::Tensor taps = at::empty({g.kh * g.kw, g.OC}, acc);
  if (g.N * g.Ho * g.Wo == 0) {
    taps.zero_();
  } else {
    const at::Tensor go = nhwc(grad_output);
    const at::Tensor x = nhwc(input);
    at::Tensor partials = at::empty({depthwise_grad_weight_chunks(g), g.kh * g.kw, g.OC}, acc);
    depthwise_grad_weight_nhwc(g, dtype_of(input), go.const_data_ptr(), x.const_data_ptr(), partials.mutable_data_ptr(),
                               taps.mutable_data_ptr(), current_stream());
  }
  return from_tap_major(taps, weight);
}

}  // namespace

at::Tensor depthwise_conv2d_grad_input_cuda(const at::Tensor& grad_output, const at::Tensor& input,
                                            const at::Tensor& weight, at::IntArrayRef stride, at::IntArrayRef padding,
                                            at::IntArrayRef dilation, std::string_view input_activation) {
  const DepthwiseGeometry g = check_depthwise_backward("xsep.depthwise_conv2d_grad_input", kDevice, grad_output, input,
                                                       weight, stride, padding, dilation, input_activation);
  const c10::cuda::CUDAGuard guard(input.device());
  return grad_input(g, grad_output, input, weight);
}

at::Tensor depthwise_conv2d_grad_weight_cuda(const at::Tensor& grad_output, const at::Tensor& input,
                                             const at::Tensor& weight, at::IntArrayRef stride, at::IntArrayRef padding,
                                             at::IntArrayRef dilation, std::string_view input_activation) {
  const DepthwiseGeometry g = check_depthwise_backward("xsep.depthwise_conv2d_grad_weight", kDevice, grad_output, input,
                                                       weight, stride, padding, dilation, input_activation);
  const c10::cuda::CUDAGuard guard(input.device());
  return grad_weight(g, grad_output, input, weight);
}

// The two kernels one after the other (each reads grad_output).
std::tuple<at::Tensor, at::Tensor> depthwise_conv2d_backward_cuda(const at::Tensor& grad_output,
                                                                  const at::Tensor& input, const at::Tensor& weight,
                                                                  at::IntArrayRef stride, at::IntArrayRef padding,
                                                                  at::IntArrayRef dilation,
                                                                  std::string_view input_activation) {
  const DepthwiseGeometry g = check_depthwise_backward("xsep.depthwise_conv2d_backward", kDevice, grad_output, input,
                                                       weight, stride, padding, dilation, input_activation);
  const c10::cuda::CUDAGuard guard(input.device());
  return {grad_input(g, grad_output, input, weight), grad_weight(g, grad_output, input, weight)};
}

}  // namespace xsep::cuda
