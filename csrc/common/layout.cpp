#include "common/layout.h"

#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>

namespace xsep {

at::ScalarType acc_dtype(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

at::Tensor nhwc(const at::Tensor& t) { return t.contiguous(at::MemoryFormat::ChannelsLast); }

at::Tensor empty_nhwc(at::IntArrayRef sizes, const at::Tensor& like) {
  return at::empty(sizes, like.options().memory_format(at::MemoryFormat::ChannelsLast));
}

at::Tensor in_format_of(const at::Tensor& out, const at::Tensor& input) {
  return out.contiguous(input.suggest_memory_format());
}

at::Tensor acc_bias(const std::optional<at::Tensor>& bias) {
  if (!bias.has_value() || !bias->defined()) return at::Tensor();
  return bias->to(acc_dtype(bias->scalar_type())).contiguous();
}

namespace {

// [cols, rows] of type `type` from a [rows, cols] `src` (any strides), converting on the way. ATen's
// copy of a transposed view costs ~2 ns an element on CPU (17 us for Xception's 728-channel 3x3
// weight, 5-10% of a 10x10 layer's whole kernel, on every call); this loop, well under 1 ns. The
// inner loop runs along the longer side, so that the strided side steps min(rows, cols) values: a
// depthwise weight of 1024 channels x 9 taps transposed channel by channel put each channel's 9
// stores 4 KiB apart, in one L1 cache set of 8 ways, where they kept evicting each other. AMD Zen 4,
// one thread, one image in cache, 3x3, 2026-12-06, three alternate processes (medians), depthwise
// forward / forward+backward: channels_last 10x10x1024 96 -> 75 / 379 -> 335 us, 7x7x2048 130 -> 70
// / 417 -> 341, NCHW 10x10x1024 109 -> 87 / 425 -> 388; 19x19x728 unchanged. On CUDA tensors, or
// none to move: undefined (the caller takes ATen's path).
at::Tensor transposed_on_cpu(const at::Tensor& src, int64_t rows, int64_t cols, at::ScalarType type) {
  if (!src.device().is_cpu() || src.numel() == 0) return at::Tensor();
  const at::Tensor s = src.contiguous();
  at::Tensor dst = at::empty({cols, rows}, src.options().dtype(type));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, s.scalar_type(), "xsep.transpose", [&] {
    using in_t = scalar_t;
    const in_t* in = s.const_data_ptr<in_t>();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, type, "xsep.transpose", [&] {
      scalar_t* out = dst.mutable_data_ptr<scalar_t>();
      if (rows >= cols) {
        for (int64_t j = 0; j < cols; ++j)
          for (int64_t i = 0; i < rows; ++i) out[j * rows + i] = static_cast<scalar_t>(in[i * cols + j]);
      } else {
        for (int64_t i = 0; i < rows; ++i)
          for (int64_t j = 0; j < cols; ++j) out[j * rows + i] = static_cast<scalar_t>(in[i * cols + j]);
      }
    });
  });
  return dst;
}

}  // namespace

at::Tensor tap_major(const at::Tensor& weight) {
  const int64_t rows = weight.size(0);
  at::Tensor out =
      transposed_on_cpu(weight, rows, rows == 0 ? 0 : weight.numel() / rows, acc_dtype(weight.scalar_type()));
  if (out.defined()) return out;
  return weight.reshape({weight.size(0), -1}).t().contiguous().to(acc_dtype(weight.scalar_type()));
}

at::Tensor from_tap_major(const at::Tensor& taps, const at::Tensor& like) {
  if (taps.dim() == 2) {
    const at::Tensor out = transposed_on_cpu(taps, taps.size(0), taps.size(1), like.scalar_type());
    if (out.defined()) return out.view(like.sizes());
  }
  return taps.t().reshape(like.sizes()).to(like.scalar_type()).contiguous();
}

at::Tensor to_matrix(const at::Tensor& weight) { return weight.reshape({weight.size(0), weight.size(1)}).contiguous(); }

at::Tensor from_matrix(const at::Tensor& grad, const at::Tensor& weight) {
  return grad.to(weight.scalar_type()).reshape(weight.sizes()).contiguous();
}

}  // namespace xsep
