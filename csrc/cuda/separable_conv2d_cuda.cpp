// CUDA fused depthwise-separable convolution: argument checks, device guard, stream and layout
// around the kernels of separable_conv2d_kernels.cu (channels-last; other layouts are converted
// here and the outputs returned in the input's memory format).
//
// Forward: one kernel where a block's pixels' depthwise rows fit in shared memory; on wider layers
// act(d) goes through a workspace the size of the unfused pair's intermediate tensor
// (separable_forward_workspace).
// Backward: one depthwise pass, the depthwise forward kernel writing act(d) (the depthwise output
// after the mid activation, in the data type as the unfused pair's intermediate tensor), then plain
// GEMMs on it: the pointwise weight gradient grad_output^T . act(d) (the pointwise op's split-K
// GEMM) and the depthwise output's gradient (grad_d, in the data type as the unfused pair's would
// be) from a GEMM whose epilogue applies the mid activation's derivative, taken from act(d); grad_d
// then goes through the depthwise backward kernels. Weight gradients are deterministic (fixed
// splits summed in order).
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAGuard.h>

#include <cstdint>
#include <optional>
#include <string_view>
#include <tuple>

#include "common/conv_args.h"
#include "common/layout.h"
#include "cuda/cuda_host.h"
#include "cuda/depthwise_conv2d_kernels.h"
#include "cuda/ops.h"
#include "cuda/pointwise_conv2d_kernels.h"
#include "cuda/separable_conv2d_kernels.h"

namespace xsep::cuda {

at::Tensor separable_conv2d_cuda(const at::Tensor& input, const at::Tensor& dw_weight, const at::Tensor& pw_weight,
                                 const std::optional<at::Tensor>& bias, at::IntArrayRef stride, at::IntArrayRef padding,
                                 at::IntArrayRef dilation, std::string_view input_activation,
                                 std::string_view mid_activation, const std::optional<at::Tensor>& dw_bias) {
  const SeparableGeometry p =
      check_separable_forward("xsep.separable_conv2d", kDevice, input, dw_weight, pw_weight, bias, stride, padding,
                              dilation, input_activation, mid_activation, dw_bias);
  const c10::cuda::CUDAGuard guard(input.device());
  const DepthwiseGeometry& g = p.dw;
  at::Tensor out = empty_nhwc({g.N, p.O, g.Ho, g.Wo}, input);
  if (out.numel() > 0) {
    const at::Tensor x = nhwc(input);
    const at::Tensor w_taps = tap_major(dw_weight);
    const at::Tensor w_pw = to_matrix(pw_weight);
    at::Tensor b = acc_bias(bias);
    if (b.defined() && reinterpret_cast<uintptr_t>(b.const_data_ptr()) % 16 != 0) b = b.clone();  // (a view)
    const at::Tensor b_dw = acc_bias(dw_bias);
    const Dtype dt = dtype_of(input);
    const int64_t smem = smem_per_block_optin();
    const int64_t workspace_bytes = separable_forward_workspace(p, dt, smem);
    const at::Tensor workspace =
        workspace_bytes > 0 ? at::empty({workspace_bytes}, input.options().dtype(at::kByte)) : at::Tensor();
    separable_forward_nhwc(p, dt, x.const_data_ptr(), w_taps.const_data_ptr(), data_or_null(b_dw),
                           w_pw.const_data_ptr(), data_or_null(b), out.mutable_data_ptr(),
                           workspace_bytes > 0 ? workspace.mutable_data_ptr() : nullptr, smem, current_stream());
  }
  return in_format_of(out, input);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> separable_conv2d_backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& dw_weight, const at::Tensor& pw_weight,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, std::string_view input_activation,
    std::string_view mid_activation, const std::optional<at::Tensor>& dw_bias) {
  const SeparableGeometry p =
      check_separable_backward("xsep.separable_conv2d_backward", kDevice, grad_output, input, dw_weight, pw_weight,
                               stride, padding, dilation, input_activation, mid_activation, dw_bias);
  const c10::cuda::CUDAGuard guard(input.device());
  const DepthwiseGeometry& g = p.dw;
  const int64_t O = p.O;
  const auto acc = input.options().dtype(acc_dtype(input.scalar_type()));
  const auto fmt = input.suggest_memory_format();
  const at::Tensor b_dw = acc_bias(dw_bias);
  if (g.N * g.Ho * g.Wo == 0) {  // nothing flows back
    return {at::zeros(input.sizes(), input.options().memory_format(fmt)),
            at::zeros(dw_weight.sizes(), dw_weight.options()), at::zeros(pw_weight.sizes(), pw_weight.options()),
            at::zeros({b_dw.defined() ? g.OC : 0}, input.options())};
  }
  const Dtype dt = dtype_of(input);
  const cudaStream_t stream = current_stream();
  const at::Tensor x = nhwc(input);
  const at::Tensor go = nhwc(grad_output);
  const at::Tensor w_taps = tap_major(dw_weight);
  const at::Tensor w_pw = to_matrix(pw_weight);

  // act(d) [P, C*M]: the pointwise weight gradient's operand, and what the mid activation's
  // derivative is taken from
  at::Tensor act_d = empty_nhwc({g.N, g.OC, g.Ho, g.Wo}, input);
  depthwise_forward_nhwc(g, dt, x.const_data_ptr(), w_taps.const_data_ptr(), data_or_null(b_dw),
                         act_d.mutable_data_ptr(), stream, p.mid_activation);

  // grad_pw[o, c] = sum_p grad_output[p, o] act(d)[p, c]: A(o, p) = go[p * O + o], B(p, c) = act_d[p * C*M + c]
  const int64_t pixels = g.N * g.Ho * g.Wo;
  const GemmParams gw{O, g.OC, pixels, /*a_m=*/1, /*a_k=*/O, /*b_k=*/g.OC, /*b_n=*/1, /*c_m=*/g.OC};
  at::Tensor grad_pw = at::empty({O, g.OC}, acc);
  at::Tensor pw_partials = at::empty({gemm_k_splits(gw), O, g.OC}, acc);
  pointwise_gemm_split_k(gw, dt, go.const_data_ptr(), act_d.const_data_ptr(), pw_partials.mutable_data_ptr(),
                         grad_pw.mutable_data_ptr(), stream);

  at::Tensor grad_mid = empty_nhwc({g.N, g.OC, g.Ho, g.Wo}, input);
  separable_grad_mid_nhwc(p, dt, go.const_data_ptr(), act_d.const_data_ptr(), w_pw.const_data_ptr(),
                          grad_mid.mutable_data_ptr(), stream);

  at::Tensor grad_input = empty_nhwc({g.N, g.C, g.H, g.W}, input);
  if (grad_input.numel() > 0) {
    depthwise_grad_input_nhwc(p.dw, dt, grad_mid.const_data_ptr(), w_taps.const_data_ptr(), x.const_data_ptr(),
                              grad_input.mutable_data_ptr(), stream);
  }
  at::Tensor dw_taps = at::empty({g.kh * g.kw, g.OC}, acc);
  at::Tensor dw_partials = at::empty({depthwise_grad_weight_chunks(p.dw), g.kh * g.kw, g.OC}, acc);
  depthwise_grad_weight_nhwc(p.dw, dt, grad_mid.const_data_ptr(), x.const_data_ptr(), dw_partials.mutable_data_ptr(),
                             dw_taps.mutable_data_ptr(), stream);
  // The depthwise bias's gradient: grad_mid summed over the pixels, in the accumulation type (one
  // more pass over it, so only when there is a depthwise bias; empty otherwise).
  const at::Tensor grad_dw_bias =
      b_dw.defined() ? at::sum(grad_mid, {0, 2, 3}, false, acc_dtype(input.scalar_type())).to(input.scalar_type())
                     : at::empty({0}, input.options());
  return {grad_input.contiguous(fmt), from_tap_major(dw_taps, dw_weight), from_matrix(grad_pw, pw_weight),
          grad_dw_bias};
}

}  // namespace xsep::cuda
