// Device-neutral tensor helpers shared by the CPU and CUDA host code: the layouts the kernels read
// and write (channels-last activations; tap-major depthwise weights, all taps of one tap index
// contiguous over channels so that a vector of channels loads at once; weights and biases in the
// accumulation dtype) and the conversions back to what the ops return.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>

namespace xsep {

// float32 for every dtype but float64 (the run-time twin of Acc<T>, common/acc_type.h).
at::ScalarType acc_dtype(at::ScalarType t);

// `t` as a dense channels-last tensor (no copy when it already is one).
at::Tensor nhwc(const at::Tensor& t);
// An uninitialised [N, C, H, W] tensor laid out channels-last, with `like`'s dtype and device.
at::Tensor empty_nhwc(at::IntArrayRef sizes, const at::Tensor& like);
// An op's output in the input's memory format (every op returns that; no copy when it already is).
at::Tensor in_format_of(const at::Tensor& out, const at::Tensor& input);

// The bias in the accumulation dtype, contiguous; an undefined tensor when there is none.
at::Tensor acc_bias(const std::optional<at::Tensor>& bias);

// A kernel's pointer to an optional tensor (acc_bias's result): nullptr when undefined.
inline const void* data_or_null(const at::Tensor& t) { return t.defined() ? t.const_data_ptr() : nullptr; }

// Depthwise weight [C*M, 1, kh, kw] -> tap-major [kh*kw, C*M] in the accumulation dtype.
at::Tensor tap_major(const at::Tensor& weight);
// And back: tap-major [kh*kw, C*M] -> [C*M, 1, kh, kw] in `like`'s dtype.
at::Tensor from_tap_major(const at::Tensor& taps, const at::Tensor& like);
// Pointwise weight [O, C, 1, 1] (or [O, C]) -> contiguous [O, C] in its dtype.
at::Tensor to_matrix(const at::Tensor& weight);
// And a gradient [O, C] (any dtype) back to `weight`'s shape and dtype.
at::Tensor from_matrix(const at::Tensor& grad, const at::Tensor& weight);

}  // namespace xsep
