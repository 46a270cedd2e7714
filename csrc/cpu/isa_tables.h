// The kernel tables each instruction-set build (isa_*.cpp) provides; depthwise_dispatch.cpp picks one.
#pragma once

#include "cpu/depthwise_kernels.h"

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
}
namespace avx2 {
template <typename T> DepthwiseKernels<T> make_table();
}
#endif
namespace baseline {
template <typename T> DepthwiseKernels<T> make_table();
}

}  // namespace xsep::cpu

// Defines ISA::make_table<T>() for the four dtypes from the kernels just compiled into ISA::impl.
#define XSEP_DEFINE_KERNEL_TABLES(ISA)                                  \
  namespace xsep::cpu::ISA {                                            \
  template <typename T>                                                 \
  DepthwiseKernels<T> make_table() {                                    \
    return impl::make_table<T>();                                       \
  }                                                                     \
  template DepthwiseKernels<float> make_table<float>();                 \
  template DepthwiseKernels<double> make_table<double>();               \
  template DepthwiseKernels<c10::BFloat16> make_table<c10::BFloat16>(); \
  template DepthwiseKernels<c10::Half> make_table<c10::Half>();         \
  }
