// AVX-512 (F, BW, VL, DQ) build of the depthwise kernels: 64-byte vectors.
#include "cpu/isa_tables.h"

#if XSEP_CPU_X86_ISAS

#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")
#define XSEP_ISA_NS xsep::cpu::avx512::impl
#define XSEP_VEC_BYTES 64
#include "cpu/depthwise_kernels_impl.h"
#include "cpu/depthwise_nchw_kernels_impl.h"
#undef XSEP_VEC_BYTES
#undef XSEP_ISA_NS
#pragma GCC pop_options

XSEP_DEFINE_KERNEL_TABLES(avx512)

#endif  // XSEP_CPU_X86_ISAS
