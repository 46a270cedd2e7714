// AVX2 + FMA build of the depthwise kernels: 32-byte vectors.
#include "cpu/isa_tables.h"

#if XSEP_CPU_X86_ISAS

#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#define XSEP_ISA_NS xsep::cpu::avx2::impl
#define XSEP_VEC_BYTES 32
#include "cpu/depthwise_kernels_impl.h"
#include "cpu/depthwise_nchw_kernels_impl.h"
#undef XSEP_VEC_BYTES
#undef XSEP_ISA_NS
#pragma GCC pop_options

XSEP_DEFINE_KERNEL_TABLES(avx2)

#endif  // XSEP_CPU_X86_ISAS
