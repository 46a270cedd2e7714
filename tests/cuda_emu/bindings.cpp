// torch.ops.xsep_emu: the CUDA launch functions of csrc/cuda/*_kernels.h, run by the CPU emulator
// (cuda_emu.h) on CPU tensors, for tests/cuda_emu; and the xsep ops themselves, as the CUDA host
// code implements them (registered by csrc/cuda/register_cuda.cpp), for tests/cuda. Thin on
// purpose: tensors arrive in the layout the launcher expects (the tests convert them), outputs and
// workspaces are allocated here NaN-filled, so that an element a kernel forgets to write shows up.
//
// To test a new launcher (say, from csrc/cuda/separable_conv2d_kernels.h; emu_build.py already
// compiles every csrc/cuda/*.cu): include its header, write a function taking at::Tensor /
// std::optional<at::Tensor> / int64_t / bool / std::vector<int64_t> arguments and returning the
// outputs, call the launcher inside `checked(...)` with `data(t)` (inputs) and `out(t)` (outputs)
// pointers and a null stream, and add `m.def("name", &function);` to TORCH_LIBRARY below (the
// schema is inferred).
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <torch/library.h>

#include <sys/mman.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <optional>
#include <tuple>
#include <vector>

#include "common/layout.h"
#include "cuda/depthwise_conv2d_kernels.h"
#include "cuda/dtype_of.h"
#include "cuda/pointwise_conv2d_kernels.h"
#include "cuda/separable_conv2d_kernels.h"
#include "cuda_emu.h"
#include "selftest.h"
#include "xsep_contract.h"

namespace {

using xsep::cuda::Dtype;

Dtype dtype_of(const at::Tensor& t) { return xsep::cuda::dtype_of(t.scalar_type()); }

at::ScalarType acc_dtype(const at::Tensor& t) { return xsep::acc_dtype(t.scalar_type()); }

// Guarded copies, the emulator's memcheck: with a fence set (set_fence), every tensor a launcher
// gets is a copy placed right after an inaccessible page ("before": an access before the tensor
// faults) or ending right at one ("after": an access past its end faults), at the original address
// modulo 16 so that the kernels take the same vector paths (which can leave up to 15 bytes of slack
// at the end). The emulator reports the fault as a memory error naming the kernel and thread, as
// compute-sanitizer would on a GPU. Outputs are copied back after the launch.
enum class Fence : int64_t { none = 0, before = 1, after = 2 };
Fence g_fence = Fence::none;

class GuardedCopies {
 public:
  GuardedCopies() = default;
  GuardedCopies(const GuardedCopies&) = delete;
  GuardedCopies& operator=(const GuardedCopies&) = delete;
  ~GuardedCopies() {
    for (const Region& r : regions_) munmap(r.map, r.map_bytes);
  }

  // A guarded copy of the memory `t` spans (any non-negative strides); `output`: copied back.
  void* place(const at::Tensor& t, bool output) {
    if (t.numel() == 0) return t.data_ptr();
    int64_t span = 1;
    for (int64_t d = 0; d < t.dim(); ++d) {
      TORCH_CHECK(t.stride(d) >= 0, "xsep_emu: negative strides are not supported");
      span += (t.size(d) - 1) * t.stride(d);
    }
    const size_t bytes = static_cast<size_t>(span) * t.element_size();
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    const size_t data_pages = (bytes + 16 + page - 1) / page, map_bytes = (data_pages + 1) * page;
    auto* map = static_cast<unsigned char*>(
        mmap(nullptr, map_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    TORCH_CHECK(map != MAP_FAILED, "xsep_emu: mmap failed");
    const auto src = reinterpret_cast<uintptr_t>(t.data_ptr());
    unsigned char* data;
    if (g_fence == Fence::before) {
      mprotect(map, page, PROT_NONE);
      data = map + page + src % 16;
    } else {
      unsigned char* guard = map + data_pages * page;
      mprotect(guard, page, PROT_NONE);
      data = guard - bytes;
      data -= (reinterpret_cast<uintptr_t>(data) - src) % 16;
    }
    std::memcpy(data, t.data_ptr(), bytes);
    regions_.push_back({map, map_bytes, data, bytes, output ? t.data_ptr() : nullptr});
    return data;
  }

  void copy_back() {
    for (const Region& r : regions_)
      if (r.back != nullptr) std::memcpy(r.back, r.data, r.bytes);
  }

 private:
  struct Region {
    void* map;
    size_t map_bytes;
    void* data;
    size_t bytes;
    void* back;
  };
  std::vector<Region> regions_;
};

GuardedCopies* g_copies = nullptr;  // the running launcher's, when a fence is set

void set_fence(int64_t fence) {
  TORCH_CHECK(fence >= 0 && fence <= 2, "xsep_emu: fence must be 0 (none), 1 (before) or 2 (after)");
  g_fence = static_cast<Fence>(fence);
}

// A CPU tensor's data for a launcher (guarded when a fence is set). `data` wants a dense tensor
// (the launchers assume dense layouts); `view_data` takes any strides (the GEMM's operands).
const void* view_data(const at::Tensor& t) {
  TORCH_CHECK(t.device().is_cpu(), "xsep_emu: expected a CPU tensor");
  return g_copies != nullptr ? g_copies->place(t, false) : t.const_data_ptr();
}
const void* data(const at::Tensor& t) {
  TORCH_CHECK(t.is_contiguous(), "xsep_emu: expected a contiguous CPU tensor");
  return view_data(t);
}
const void* data(const std::optional<at::Tensor>& t) { return t.has_value() ? data(*t) : nullptr; }
// An output's data (guarded and copied back after the launch when a fence is set).
void* out(const at::Tensor& t) {
  TORCH_CHECK(t.device().is_cpu() && t.is_contiguous(), "xsep_emu: expected a contiguous CPU tensor");
  return g_copies != nullptr ? g_copies->place(t, true) : t.data_ptr();
}

at::Tensor poisoned(at::IntArrayRef sizes, at::ScalarType dtype) {
  return at::full(sizes, NAN, at::TensorOptions().dtype(dtype));
}

// Runs a launcher (on guarded copies when a fence is set); a launch error it did not check with
// C10_CUDA_KERNEL_LAUNCH_CHECK is a bug too.
template <typename F>
void checked(F&& launcher) {
  GuardedCopies copies;
  g_copies = g_fence == Fence::none ? nullptr : &copies;
  try {
    launcher();
  } catch (...) {
    g_copies = nullptr;
    throw;
  }
  g_copies = nullptr;
  copies.copy_back();
  const std::string error = xsep_emu::take_unchecked_launch_error();
  TORCH_CHECK(error.empty(), "xsep_emu: a launch error the launcher did not check: ", error);
}

// params: the xsep::DepthwiseGeometry fields in order, N, C, H, W, M, OC, kh, kw, sh, sw, pad_top,
// pad_left, dil_h, dil_w, Ho, Wo.
xsep::DepthwiseGeometry dw_params(const std::vector<int64_t>& v, bool relu_input) {
  TORCH_CHECK(v.size() == 16, "xsep_emu: depthwise params need 16 values, got ", v.size());
  return {.N = v[0],
          .C = v[1],
          .H = v[2],
          .W = v[3],
          .M = v[4],
          .OC = v[5],
          .kh = v[6],
          .kw = v[7],
          .sh = v[8],
          .sw = v[9],
          .pad_top = v[10],
          .pad_left = v[11],
          .dil_h = v[12],
          .dil_w = v[13],
          .Ho = v[14],
          .Wo = v[15],
          .relu_input = relu_input};
}

// x [N, H, W, C], w_taps [kh * kw, OC] and bias [OC] in the accumulation type -> y [N, Ho, Wo, OC]
at::Tensor depthwise_forward_nhwc(const at::Tensor& x, const at::Tensor& w_taps, const std::optional<at::Tensor>& bias,
                                  std::vector<int64_t> params, bool relu_input) {
  const auto p = dw_params(params, relu_input);
  at::Tensor y = poisoned({p.N, p.Ho, p.Wo, p.OC}, x.scalar_type());
  checked(
      [&] { xsep::cuda::depthwise_forward_nhwc(p, dtype_of(x), data(x), data(w_taps), data(bias), out(y), nullptr); });
  return y;
}

// The same with an output activation (xsep::Activation's code) applied before the rounding: the
// fused backward's act(d).
at::Tensor depthwise_forward_act_nhwc(const at::Tensor& x, const at::Tensor& w_taps,
                                      const std::optional<at::Tensor>& bias, std::vector<int64_t> params,
                                      bool relu_input, int64_t activation) {
  const auto p = dw_params(params, relu_input);
  at::Tensor y = poisoned({p.N, p.Ho, p.Wo, p.OC}, x.scalar_type());
  checked([&] {
    xsep::cuda::depthwise_forward_nhwc(p, dtype_of(x), data(x), data(w_taps), data(bias), out(y), nullptr,
                                       static_cast<xsep::Activation>(activation));
  });
  return y;
}

// x [N, C, H, W] -> y [N, OC, Ho, Wo]
at::Tensor depthwise_forward_nchw(const at::Tensor& x, const at::Tensor& w_taps, const std::optional<at::Tensor>& bias,
                                  std::vector<int64_t> params, bool relu_input) {
  const auto p = dw_params(params, relu_input);
  at::Tensor y = poisoned({p.N, p.OC, p.Ho, p.Wo}, x.scalar_type());
  checked(
      [&] { xsep::cuda::depthwise_forward_nchw(p, dtype_of(x), data(x), data(w_taps), data(bias), out(y), nullptr); });
  return y;
}

// grad_output [N, Ho, Wo, OC], x [N, H, W, C] (only read with relu_input) -> grad_input [N, H, W, C]
at::Tensor depthwise_grad_input_nhwc(const at::Tensor& grad_output, const at::Tensor& w_taps,
                                     const std::optional<at::Tensor>& x, std::vector<int64_t> params, bool relu_input) {
  const auto p = dw_params(params, relu_input);
  at::Tensor gi = poisoned({p.N, p.H, p.W, p.C}, grad_output.scalar_type());
  checked([&] {
    xsep::cuda::depthwise_grad_input_nhwc(p, dtype_of(grad_output), data(grad_output), data(w_taps), data(x), out(gi),
                                          nullptr);
  });
  return gi;
}

// grad_output [N, OC, Ho, Wo], x [N, C, H, W] (only read with relu_input) -> grad_input [N, C, H, W],
// or an empty tensor when the NCHW kernel does not take these parameters
at::Tensor depthwise_grad_input_nchw(const at::Tensor& grad_output, const at::Tensor& w_taps,
                                     const std::optional<at::Tensor>& x, std::vector<int64_t> params, bool relu_input) {
  const auto p = dw_params(params, relu_input);
  at::Tensor gi = poisoned({p.N, p.C, p.H, p.W}, grad_output.scalar_type());
  bool launched = false;
  checked([&] {
    launched = xsep::cuda::depthwise_grad_input_nchw(p, dtype_of(grad_output), data(grad_output), data(w_taps), data(x),
                                                     out(gi), nullptr);
  });
  return launched ? gi : at::empty({0}, grad_output.options());
}

// grad_output [N, Ho, Wo, OC], x [N, H, W, C] -> grad_taps [kh * kw, OC] in the accumulation type
at::Tensor depthwise_grad_weight_nhwc(const at::Tensor& grad_output, const at::Tensor& x, std::vector<int64_t> params,
                                      bool relu_input) {
  const auto p = dw_params(params, relu_input);
  const auto acc = acc_dtype(x);
  at::Tensor partials = poisoned({xsep::cuda::depthwise_grad_weight_chunks(p), p.kh * p.kw, p.OC}, acc);
  at::Tensor taps = poisoned({p.kh * p.kw, p.OC}, acc);
  checked([&] {
    xsep::cuda::depthwise_grad_weight_nhwc(p, dtype_of(x), data(grad_output), data(x), out(partials), out(taps),
                                           nullptr);
  });
  return taps;
}

// The GEMM's operands as 2-D CPU views, any strides: A [M, K], B [K, N]; C [M, N] is dense.
xsep::cuda::GemmParams gemm_params(const at::Tensor& a, const at::Tensor& b) {
  TORCH_CHECK(a.dim() == 2 && b.dim() == 2 && a.size(1) == b.size(0) && a.device().is_cpu() && b.device().is_cpu() &&
                  a.scalar_type() == b.scalar_type(),
              "xsep_emu: expected CPU matrices A [M, K] and B [K, N] of one dtype");
  return {.M = a.size(0),
          .N = b.size(1),
          .K = a.size(1),
          .a_m = a.stride(0),
          .a_k = a.stride(1),
          .b_k = b.stride(0),
          .b_n = b.stride(1),
          .c_m = b.size(1)};
}

// C = A . B (+ bias [N] in the accumulation type), in the data type
at::Tensor pointwise_gemm(const at::Tensor& a, const at::Tensor& b, const std::optional<at::Tensor>& bias) {
  const auto g = gemm_params(a, b);
  at::Tensor c = poisoned({g.M, g.N}, a.scalar_type());
  checked([&] { xsep::cuda::pointwise_gemm(g, dtype_of(a), view_data(a), view_data(b), data(bias), out(c), nullptr); });
  return c;
}

// C = A . B in the accumulation type, the K reduction split (the weight gradient's GEMM)
at::Tensor pointwise_gemm_split_k(const at::Tensor& a, const at::Tensor& b) {
  const auto g = gemm_params(a, b);
  const auto acc = acc_dtype(a);
  at::Tensor partials = poisoned({xsep::cuda::gemm_k_splits(g), g.M, g.N}, acc);
  at::Tensor c = poisoned({g.M, g.N}, acc);
  checked([&] {
    xsep::cuda::pointwise_gemm_split_k(g, dtype_of(a), view_data(a), view_data(b), out(partials), out(c), nullptr);
  });
  return c;
}

// The fused op's parameters: the depthwise ones (see dw_params), the output channels and the mid
// activation's code (xsep::Activation).
xsep::SeparableGeometry sep_params(const std::vector<int64_t>& params, bool relu_input, int64_t out_channels,
                                   int64_t mid_activation) {
  return {dw_params(params, relu_input), out_channels, static_cast<xsep::Activation>(mid_activation)};
}

// x [N, H, W, C], w_taps [kh * kw, OC], dw_bias [OC] and bias [O] in the accumulation type, w_pw
// [O, OC] in the data type -> y [N, Ho, Wo, O]. smem_per_block: the shared memory a block may use
// (decides whether the depthwise rows stay resident; 0 forces act(d) through the workspace, which
// is allocated here as the CUDA op allocates it, NaN-filled).
at::Tensor separable_forward_nhwc(const at::Tensor& x, const at::Tensor& w_taps,
                                  const std::optional<at::Tensor>& dw_bias, const at::Tensor& w_pw,
                                  const std::optional<at::Tensor>& bias, std::vector<int64_t> params, bool relu_input,
                                  int64_t mid_activation, int64_t smem_per_block) {
  const auto p = sep_params(params, relu_input, w_pw.size(0), mid_activation);
  at::Tensor y = poisoned({p.dw.N, p.dw.Ho, p.dw.Wo, p.O}, x.scalar_type());
  const int64_t workspace_bytes = xsep::cuda::separable_forward_workspace(p, dtype_of(x), smem_per_block);
  at::Tensor workspace = poisoned({workspace_bytes / x.element_size()}, x.scalar_type());
  checked([&] {
    xsep::cuda::separable_forward_nhwc(p, dtype_of(x), data(x), data(w_taps), data(dw_bias), data(w_pw), data(bias),
                                       out(y), workspace_bytes > 0 ? out(workspace) : nullptr, smem_per_block, nullptr);
  });
  return y;
}

// grad_output [N, Ho, Wo, O], act_d [N, Ho, Wo, OC] (the depthwise output after the mid activation, in
// the data type; None without one), w_pw [O, OC] -> grad_mid [N, Ho, Wo, OC] in the data type
at::Tensor separable_grad_mid_nhwc(const at::Tensor& grad_output, const std::optional<at::Tensor>& act_d,
                                   const at::Tensor& w_pw, std::vector<int64_t> params, bool relu_input,
                                   int64_t mid_activation) {
  const auto p = sep_params(params, relu_input, w_pw.size(0), mid_activation);
  at::Tensor grad_mid = poisoned({p.dw.N, p.dw.Ho, p.dw.Wo, p.dw.OC}, grad_output.scalar_type());
  checked([&] {
    xsep::cuda::separable_grad_mid_nhwc(p, dtype_of(grad_output), data(grad_output), data(act_d), data(w_pw),
                                        out(grad_mid), nullptr);
  });
  return grad_mid;
}

int64_t gemm_k_splits(int64_t M, int64_t N, int64_t K) { return xsep::cuda::gemm_k_splits({.M = M, .N = N, .K = K}); }

int64_t depthwise_grad_weight_chunks(std::vector<int64_t> params) {
  return xsep::cuda::depthwise_grad_weight_chunks(dw_params(params, false));
}

void set_schedule_seed(int64_t seed) { xsep_emu::set_schedule_seed(static_cast<uint64_t>(seed)); }

// The emulator's own tests (selftest.h): errors propagate as exceptions.
void selftest_early_exit(int64_t stay) {
  checked([&] { xsep_emu_selftest::early_exit(static_cast<int>(stay)); });
}
void selftest_divergent_barriers() {
  checked([&] { xsep_emu_selftest::divergent_barriers(); });
}
void selftest_partial_warp_mma(int64_t lanes) {
  checked([&] { xsep_emu_selftest::partial_warp_mma(static_cast<int>(lanes)); });
}
void selftest_oversized_launch(bool check) {
  checked([&] { xsep_emu_selftest::oversized_launch(check); });
}

at::Tensor selftest_neighbour_exchange(bool sync, int64_t base) {
  at::Tensor out = at::full({64}, -1, at::TensorOptions().dtype(at::kInt));
  checked([&] { xsep_emu_selftest::neighbour_exchange(sync, static_cast<int>(base), out.mutable_data_ptr<int>()); });
  return out;
}

std::tuple<at::Tensor, at::Tensor> selftest_dynamic_shared_memory() {
  at::Tensor before = poisoned({64}, at::kFloat), after = poisoned({64}, at::kFloat);
  checked([&] {
    xsep_emu_selftest::dynamic_shared_memory(before.mutable_data_ptr<float>(), after.mutable_data_ptr<float>());
  });
  return {before, after};
}

}  // namespace

// The launch error that no C10_CUDA_KERNEL_LAUNCH_CHECK reported since the last call, empty if none:
// tests/cuda checks it after calling the host code's ops (which run outside `checked`).
std::string take_unchecked_launch_error() { return xsep_emu::take_unchecked_launch_error(); }

TORCH_LIBRARY(xsep_emu, m) {
  // The ops of xsep/ops/schemas.py, implemented for CPU tensors by the CUDA host code
  // (csrc/cuda/register_cuda.cpp, compiled with XSEP_CUDA_EMU): torch.ops.xsep_emu.separable_conv2d
  // runs what torch.ops.xsep.separable_conv2d runs on a GPU.
  for (const char* schema : xsep::kSchemas) m.def(schema);
  m.def("take_unchecked_launch_error", &take_unchecked_launch_error);
  m.def("depthwise_forward_nhwc", &depthwise_forward_nhwc);
  m.def("depthwise_forward_act_nhwc", &depthwise_forward_act_nhwc);
  m.def("depthwise_forward_nchw", &depthwise_forward_nchw);
  m.def("depthwise_grad_input_nhwc", &depthwise_grad_input_nhwc);
  m.def("depthwise_grad_input_nchw", &depthwise_grad_input_nchw);
  m.def("depthwise_grad_weight_nhwc", &depthwise_grad_weight_nhwc);
  m.def("depthwise_grad_weight_chunks", &depthwise_grad_weight_chunks);
  m.def("pointwise_gemm", &pointwise_gemm);
  m.def("pointwise_gemm_split_k", &pointwise_gemm_split_k);
  m.def("gemm_k_splits", &gemm_k_splits);
  m.def("separable_forward_nhwc", &separable_forward_nhwc);
  m.def("separable_grad_mid_nhwc", &separable_grad_mid_nhwc);
  m.def("set_schedule_seed", &set_schedule_seed);
  m.def("set_fence", &set_fence);
  m.def("selftest_early_exit", &selftest_early_exit);
  m.def("selftest_divergent_barriers", &selftest_divergent_barriers);
  m.def("selftest_partial_warp_mma", &selftest_partial_warp_mma);
  m.def("selftest_oversized_launch", &selftest_oversized_launch);
  m.def("selftest_neighbour_exchange", &selftest_neighbour_exchange);
  m.def("selftest_dynamic_shared_memory", &selftest_dynamic_shared_memory);
}
