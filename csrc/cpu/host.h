// Host-side helpers shared by the CPU ops: layouts, weight packing, deterministic reductions.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <tuple>

#include "common/conv_args.h"
#include "cpu/kernels.h"

namespace xsep::cpu {

void check_cpu(const char* op, const at::Tensor& input);

// float32 for every dtype but float64.
at::ScalarType acc_dtype(at::ScalarType t);

DwShape to_dw_shape(const DepthwiseGeometry& g);

// Depthwise weight [C*M, 1, kh, kw] -> tap-major [kh*kw, C*M] in the accumulation dtype.
at::Tensor tap_major(const at::Tensor& weight);
// And back: tap-major [kh*kw, C*M] -> [C*M, 1, kh, kw] in `like`'s dtype.
at::Tensor from_tap_major(const at::Tensor& taps, const at::Tensor& like);

// Sum of per-chunk partial results over the items [0, n): `fn(partial, begin, end)` adds the
// contribution of items [begin, end) into `partial` (zeroed, shape `sizes`). Chunk boundaries
// depend only on n and the partial's size, never on the thread count, and partials are added in
// chunk order, so the result is bitwise reproducible. Chunks run in parallel.
at::Tensor chunked_sum(int64_t n, at::IntArrayRef sizes, at::ScalarType dtype,
                       const std::function<void(at::Tensor&, int64_t, int64_t)>& fn);

// Depthwise backward given the gradient of its output as an accumulation-dtype NHWC buffer
// [N*Ho*Wo, C*M] (the fused backward's intermediate): (grad_input in input's dtype and memory
// format, grad_weight [C*M, 1, kh, kw]). `x` is input made channels-last; `w_taps` = tap_major(weight).
std::tuple<at::Tensor, at::Tensor> depthwise_backward_from_acc(const DwShape& shape,
                                                               const at::Tensor& input,
                                                               const at::Tensor& x,
                                                               const at::Tensor& grad_out_acc,
                                                               const at::Tensor& weight,
                                                               const at::Tensor& w_taps);

}  // namespace xsep::cpu
