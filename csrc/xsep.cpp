// The xsep operator library: every schema lives here; kernels register per device next to their
// code (TORCH_LIBRARY_IMPL in csrc/cpu/*.cpp and csrc/cuda/*.cu). Loading this library (the
// Python extension module xsep._C, or the just-in-time build) is what makes torch.ops.xsep exist.
#include <Python.h>
#include <torch/library.h>

#include <string>

#include "cpu/kernels.h"

#ifndef XSEP_WITH_CUDA
#define XSEP_WITH_CUDA 0
#endif
#define XSEP_STRINGIFY_(x) #x
#define XSEP_STRINGIFY(x) XSEP_STRINGIFY_(x)
#ifdef XSEP_CUDA_ARCHS  // the arch list as one token, '_' between archs (see xsep/_build.py)
#define XSEP_CUDA_ARCHS_STR XSEP_STRINGIFY(XSEP_CUDA_ARCHS)
#else
#define XSEP_CUDA_ARCHS_STR ""
#endif

// What this library was built with, as "key=value;..." (read by `python -m xsep info`).
static std::string build_info() {
  return std::string("cuda=") + (XSEP_WITH_CUDA ? "1" : "0") + ";cuda_archs=" + XSEP_CUDA_ARCHS_STR +
         ";cpu_isa=" + xsep::cpu::kernel_isa() + ";compiler=" +
#if defined(__clang__)
         "clang " __clang_version__;
#elif defined(__GNUC__)
         "gcc " __VERSION__;
#else
         "unknown";
#endif
}

extern "C" {
// An empty Python module, so that `import xsep._C` loads the library; no Python bindings.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(xsep, m) {
  m.def("_build_info() -> str", &build_info);

  // padding is (top, bottom, left, right); activations are "none" or "relu" on the input, and
  // "none", "relu", "relu6" or "elu" between the depthwise and pointwise halves.
  m.def(
      "depthwise_conv2d(Tensor input, Tensor weight, Tensor? bias, int[2] stride, int[4] padding, "
      "int[2] dilation, str input_activation) -> Tensor");
  m.def(
      "depthwise_conv2d_grad_input(Tensor grad_output, Tensor input, Tensor weight, int[2] stride, "
      "int[4] padding, int[2] dilation, str input_activation) -> Tensor");
  m.def(
      "depthwise_conv2d_grad_weight(Tensor grad_output, Tensor input, Tensor weight, int[2] stride, "
      "int[4] padding, int[2] dilation, str input_activation) -> Tensor");

  m.def("pointwise_conv2d(Tensor input, Tensor weight, Tensor? bias) -> Tensor");
  m.def("pointwise_conv2d_grad_input(Tensor grad_output, Tensor input, Tensor weight) -> Tensor");
  m.def("pointwise_conv2d_grad_weight(Tensor grad_output, Tensor input, Tensor weight) -> Tensor");

  m.def(
      "separable_conv2d(Tensor input, Tensor depthwise_weight, Tensor pointwise_weight, Tensor? bias, "
      "int[2] stride, int[4] padding, int[2] dilation, str input_activation, str mid_activation) "
      "-> Tensor");
  // Returns (grad_input, grad_depthwise_weight, grad_pointwise_weight); the bias gradient is
  // grad_output summed over (N, H, W), left to the caller.
  m.def(
      "separable_conv2d_backward(Tensor grad_output, Tensor input, Tensor depthwise_weight, "
      "Tensor pointwise_weight, int[2] stride, int[4] padding, int[2] dilation, "
      "str input_activation, str mid_activation) -> (Tensor, Tensor, Tensor)");
}
