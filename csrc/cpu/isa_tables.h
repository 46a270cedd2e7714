// The kernel tables each instruction-set build (isa_*.cpp) provides; depthwise_dispatch.cpp picks one.
#pragma once

#include "cpu/depthwise_kernels.h"
#include "cpu/depthwise_nchw_kernels.h"

// The AVX-512 and AVX2 builds exist on x86-64 with GCC (they rely on `#pragma GCC target`);
// elsewhere only the baseline build does.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define XSEP_CPU_X86_ISAS 1
#else
#define XSEP_CPU_X86_ISAS 0
#endif

namespace xsep::cpu {

#if XSEP_CPU_X86_ISAS
namespace avx512 {
template <typename T> DepthwiseKernels<T> make_table();
template <typename T> DepthwiseNchwKernels<T> make_nchw_table();
}  // namespace avx512
namespace avx2 {
template <typename T> DepthwiseKernels<T> make_table();
template <typename T> DepthwiseNchwKernels<T> make_nchw_table();
}  // namespace avx2
#endif
namespace baseline {
template <typename T> DepthwiseKernels<T> make_table();
template <typename T> DepthwiseNchwKernels<T> make_nchw_table();
}  // namespace baseline

}  // namespace xsep::cpu

// Defines ISA::make_table<T>() and ISA::make_nchw_table<T>() for the four dtypes from the kernels
// just compiled into ISA::impl.
#define XSEP_DEFINE_KERNEL_TABLES(ISA)          \
  namespace xsep::cpu::ISA {                    \
  template <typename T>                         \
  DepthwiseKernels<T> make_table() {            \
    return impl::make_table<T>();               \
  }                                             \
  template <typename T>                         \
  DepthwiseNchwKernels<T> make_nchw_table() {   \
    return impl::make_nchw_table<T>();          \
  }                                             \
  XSEP_INSTANTIATE_KERNEL_TABLES(float)         \
  XSEP_INSTANTIATE_KERNEL_TABLES(double)        \
  XSEP_INSTANTIATE_KERNEL_TABLES(c10::BFloat16) \
  XSEP_INSTANTIATE_KERNEL_TABLES(c10::Half)     \
  }
#define XSEP_INSTANTIATE_KERNEL_TABLES(T)       \
  template DepthwiseKernels<T> make_table<T>(); \
  template DepthwiseNchwKernels<T> make_nchw_table<T>();
