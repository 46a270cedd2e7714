#include "cpu/gemm.h"

#include <ATen/Context.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/convolution.h>
#include <ATen/ops/convolution_backward.h>
#include <ATen/ops/mm.h>
#include <c10/util/Exception.h>

#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/layout.h"
#include "cpu/depthwise_kernels.h"
#include "cpu/host.h"

namespace xsep::cpu {
namespace {

bool amd_processor() { return amd_family() > 0; }

// oneDNN's fp32 inner product as torch registers it (what torch.compile's CPU backend calls), and
// its weight packing, or nullopt when this torch has none.
std::optional<c10::OperatorHandle> onednn_op(const char* name) {
  if (!at::hasMKLDNN()) return std::nullopt;
  return c10::Dispatcher::singleton().findSchema({name, ""});
}
std::optional<c10::OperatorHandle> onednn_linear() { return onednn_op("mkldnn::_linear_pointwise"); }
std::optional<c10::OperatorHandle> onednn_pack() { return onednn_op("mkldnn::_reorder_linear_weight"); }
bool onednn_available() { return onednn_linear().has_value() && onednn_pack().has_value(); }

bool use_onednn() {
  static const bool onednn = [] {
    if (const auto name = env_choice("XSEP_CPU_GEMM", {"blas", "onednn"})) {
      TORCH_CHECK(name == "blas" || onednn_available(),
                  "XSEP_CPU_GEMM=onednn: this torch was built without oneDNN (mkldnn::_linear_pointwise)");
      return name == "onednn";
    }
    return amd_processor() && onednn_available();
  }();
  return onednn;
}

// Where the weight gradients' products run (weight_gemm_library, gemm.h).
enum class WeightProducts { kBlas, kXsep, kLongOnXsep };
WeightProducts weight_products() {
  static const WeightProducts choice = [] {
    if (const auto name = env_choice("XSEP_CPU_WEIGHT_GEMM", {"blas", "xsep"}))
      return name == "xsep" ? WeightProducts::kXsep : WeightProducts::kBlas;
    if (std::string_view(kernel_isa()) != "avx512") return WeightProducts::kBlas;
    return amd_processor() ? WeightProducts::kXsep : WeightProducts::kLongOnXsep;
  }();
  return choice;
}
bool weight_products_on_xsep() { return weight_products() == WeightProducts::kXsep; }

// Where the fused op's pointwise products run (fused_gemm_library, gemm.h).
enum class FusedProducts { kLibrary, kXsep, kShortForwardsOnXsep };
FusedProducts fused_products() {
  static const FusedProducts choice = [] {
    if (const auto name = env_choice("XSEP_CPU_FUSED_GEMM", {"library", "xsep"}))
      return name == "xsep" ? FusedProducts::kXsep : FusedProducts::kLibrary;
    const std::string_view isa = kernel_isa();
    if (amd_processor() && (isa == "avx512" || isa == "avx2")) return FusedProducts::kXsep;
    return isa == "avx512" ? FusedProducts::kShortForwardsOnXsep : FusedProducts::kLibrary;
  }();
  return choice;
}

}  // namespace

bool fused_products_on_xsep() { return fused_products() == FusedProducts::kXsep; }

bool fused_forward_on_xsep(at::ScalarType dtype, int64_t K, int64_t N) {
  return fused_products_on_xsep() || (fused_products() == FusedProducts::kShortForwardsOnXsep && dtype == at::kFloat &&
                                      K <= kShortProductK && N >= kRowForwardMinColumns && N <= kRowForwardMaxColumns);
}

namespace {

at::Tensor onednn_linear_call(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias) {
  static const c10::OperatorHandle op = *onednn_linear();
  // mkldnn::_linear_pointwise(Tensor X, Tensor W, Tensor? B, str attr, Scalar?[] scalars, str? algorithm)
  std::vector<c10::IValue> stack;
  stack.reserve(6);
  stack.emplace_back(x.contiguous());
  stack.emplace_back(w.is_mkldnn() ? w : w.contiguous());
  stack.emplace_back(bias.defined() ? c10::IValue(bias) : c10::IValue());
  stack.emplace_back(std::string("none"));
  stack.emplace_back(c10::List<std::optional<c10::Scalar>>());
  stack.emplace_back(c10::IValue());
  op.callBoxed(&stack);
  return stack.back().toTensor();
}

// x [P, K] . w [N, K]^T (+ bias) as oneDNN's 1x1 convolution of x viewed as one channels-last
// [1, K, 1, P] image: its result is channels-last, so the [P, N] rows are a view of it.
at::Tensor onednn_conv_product(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias) {
  const int64_t P = x.size(0), K = x.size(1), N = w.size(0);
  const auto image = x.contiguous().view({1, 1, P, K}).permute({0, 3, 1, 2});
  const auto y = at::convolution(image, w.contiguous().view({N, K, 1, 1}),
                                 bias.defined() ? std::optional<at::Tensor>(bias) : std::nullopt, {1, 1}, {0, 0},
                                 {1, 1}, false, {0, 0}, 1);
  return y.permute({0, 2, 3, 1}).reshape({P, N});
}

}  // namespace

const char* gemm_library() { return use_onednn() ? "onednn" : "blas"; }

bool linear_uses_onednn(at::ScalarType dtype) { return dtype == at::kFloat && use_onednn(); }

const char* weight_gemm_library() {
  switch (weight_products()) {
    case WeightProducts::kXsep: return "xsep";
    case WeightProducts::kLongOnXsep: {
      static const std::string name =
          "blas (xsep from " + std::to_string(kTnLongPixels) + " pixels, or for narrow rows read in place)";
      return name.c_str();
    }
    default: return "blas";
  }
}

const char* fused_gemm_library() {
  switch (fused_products()) {
    case FusedProducts::kXsep: return "xsep";
    case FusedProducts::kShortForwardsOnXsep: return "library (xsep for short channels-last forwards)";
    default: return "library";
  }
}

bool tn_product_on_xsep(at::ScalarType dtype) {
  return (dtype == at::kFloat || dtype == at::kDouble) && weight_products_on_xsep();
}

bool tn_rows_product_on_xsep(at::ScalarType dtype, int64_t K, int64_t M, int64_t N) {
  if (tn_product_on_xsep(dtype)) return true;
  if (weight_products() != WeightProducts::kLongOnXsep || dtype != at::kFloat) return false;
  return K >= kTnLongPixels || (M <= kTnShortInPlaceMaxRows && depthwise_kernels<float>().tn_reads_b_in_place(N));
}

bool product_on_onednn_conv(at::ScalarType dtype, int64_t rows, int64_t K) {
  return linear_uses_onednn(dtype) && (K <= kShortProductK || rows >= kConvProductMinRows);
}

bool forward_on_onednn_conv(at::ScalarType dtype, int64_t rows, int64_t K) {
  if (linear_uses_onednn(dtype)) return product_on_onednn_conv(dtype, rows, K);
  return dtype == at::kFloat && at::hasMKLDNN() && K <= kBlasShortForwardK;
}

bool grad_input_on_onednn(at::ScalarType dtype, bool nchw, int64_t images, int64_t plane) {
  if (linear_uses_onednn(dtype)) return true;
  if (dtype != at::kFloat || !at::hasMKLDNN()) return false;
  return nchw ? plane <= kOneDnnNchwGradInputMaxPlane : images * plane >= kBlasLongGradInputRows;
}

at::Tensor onednn_grad_input(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight) {
  const bool nchw = runs_nchw(input);
  const auto gi = std::get<0>(at::convolution_backward(nchw ? grad_output.contiguous() : nhwc(grad_output),
                                                       nchw ? input : nhwc(input), weight, std::nullopt, {1, 1}, {0, 0},
                                                       {1, 1}, false, {0, 0}, 1, {true, false, false}));
  return in_format_of(nchw ? gi.contiguous() : gi, input);
}

at::Tensor linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias) {
  if (linear_uses_onednn(x.scalar_type())) {
    if (!w.is_mkldnn() && product_on_onednn_conv(x.scalar_type(), x.size(0), x.size(1)))
      return onednn_conv_product(x, w, bias);
    return onednn_linear_call(x, w, bias);
  }
  return bias.defined() ? at::addmm(bias, x, w.t()) : at::mm(x, w.t());
}

at::Tensor packed_linear_weight(const at::Tensor& w, int64_t rows) {
  if (!linear_uses_onednn(w.scalar_type()) || product_on_onednn_conv(w.scalar_type(), rows, w.size(1))) return w;
  static const c10::OperatorHandle op = *onednn_pack();
  // mkldnn::_reorder_linear_weight(Tensor self, int? batch_size=None)
  std::vector<c10::IValue> stack{c10::IValue(w.contiguous()), c10::IValue(rows)};
  op.callBoxed(&stack);
  return stack.back().toTensor();
}

void left_product_out(at::Tensor& out, const at::Tensor& bias, const at::Tensor& a, const at::Tensor& b) {
  if (!linear_uses_onednn(b.scalar_type())) return mm_with_bias_out(out, bias, a, b);
  const int64_t R = a.size(0), K = a.size(1), T = b.size(1);
  const auto y = at::convolution(b.contiguous().view({1, K, 1, T}), a.contiguous().view({R, K, 1, 1}),
                                 bias.defined() ? std::optional<at::Tensor>(bias.reshape({R})) : std::nullopt, {1, 1},
                                 {0, 0}, {1, 1}, false, {0, 0}, 1);
  out.copy_(y.reshape({R, T}));
}

void linear_out(at::Tensor& out, const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias) {
  if (linear_uses_onednn(x.scalar_type())) {
    out.copy_(linear(x, w, bias));
  } else {
    mm_with_bias_out(out, bias, x, w.t());
  }
}

}  // namespace xsep::cpu
