// torch.ops.xsep_emu_counters: the xsep_emu_counters build's ops (see emu_build.py): every op of
// bindings.cpp (compiled here, in this file, under this namespace instead of xsep_emu, so that both
// builds can be loaded in one process), the counters (counters.h) and their own test kernels
// (counters_selftest.h).
#include <torch/library.h>

// bindings.cpp's registrations become a function this file's library calls.
#undef TORCH_LIBRARY
#define TORCH_LIBRARY(ns, m) static void register_emulator_ops(torch::Library& m)
#include "bindings.cpp"
#undef TORCH_LIBRARY

#include "counters.h"
#include "counters_selftest.h"

namespace {

void counters_start(int64_t runs, int64_t run_length) { xsep_emu::counters_start(runs, run_length); }

std::string counters_stop() { return xsep_emu::counters_stop(); }

at::Tensor lanes_out() { return poisoned({32}, at::kFloat); }

at::Tensor counters_selftest_strided_load(const at::Tensor& x, int64_t stride) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.numel() >= 31 * stride + 1, "x: float, 31 * stride + 1 elements");
  at::Tensor y = lanes_out();
  checked([&] {
    xsep_emu_selftest::strided_load(static_cast<const float*>(data(x)), static_cast<int>(stride),
                                    static_cast<float*>(out(y)));
  });
  return y;
}

at::Tensor counters_selftest_repeated_load(const at::Tensor& x, int64_t times) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.numel() >= 32, "x: float, 32 elements");
  at::Tensor y = lanes_out();
  checked([&] {
    xsep_emu_selftest::repeated_load(static_cast<const float*>(data(x)), static_cast<int>(times),
                                     static_cast<float*>(out(y)));
  });
  return y;
}

const int* offsets_of(const at::Tensor& offsets) {
  TORCH_CHECK(offsets.scalar_type() == at::kInt && offsets.numel() == 32, "offsets: 32 int32 byte offsets");
  return static_cast<const int*>(data(offsets));
}

at::Tensor counters_selftest_shared_access(const at::Tensor& offsets, int64_t bytes, bool store) {
  at::Tensor y = lanes_out();
  checked([&] {
    xsep_emu_selftest::shared_access(offsets_of(offsets), static_cast<int>(bytes), store, static_cast<float*>(out(y)));
  });
  return y;
}

at::Tensor counters_selftest_ldmatrix_rows(const at::Tensor& offsets, int64_t mmas) {
  at::Tensor y = lanes_out();
  checked([&] {
    xsep_emu_selftest::ldmatrix_rows(offsets_of(offsets), static_cast<int>(mmas), static_cast<float*>(out(y)));
  });
  return y;
}

at::Tensor counters_selftest_async_copy(const at::Tensor& src) {
  TORCH_CHECK(src.scalar_type() == at::kFloat && src.numel() == 128, "src: 128 floats");
  at::Tensor dst = poisoned({128}, at::kFloat);
  checked([&] { xsep_emu_selftest::async_copy(static_cast<const float*>(data(src)), static_cast<float*>(out(dst))); });
  return dst;
}

at::Tensor counters_selftest_grid_of_blocks(int64_t blocks) {
  at::Tensor y = poisoned({blocks * 32}, at::kFloat);
  checked([&] { xsep_emu_selftest::grid_of_blocks(static_cast<int>(blocks), static_cast<float*>(out(y))); });
  return y;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(xsep_emu_counters, m) {
  register_emulator_ops(m);
  m.def("counters_start", &counters_start);
  m.def("counters_stop", &counters_stop);
  m.def("counters_selftest_strided_load", &counters_selftest_strided_load);
  m.def("counters_selftest_repeated_load", &counters_selftest_repeated_load);
  m.def("counters_selftest_shared_access", &counters_selftest_shared_access);
  m.def("counters_selftest_ldmatrix_rows", &counters_selftest_ldmatrix_rows);
  m.def("counters_selftest_async_copy", &counters_selftest_async_copy);
  m.def("counters_selftest_grid_of_blocks", &counters_selftest_grid_of_blocks);
}
