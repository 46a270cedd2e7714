// Baseline build of the depthwise kernels (any CPU): 16-byte vectors, the compiler's default
// instruction set (SSE2 on x86-64).
#include "cpu/isa_tables.h"

#define XSEP_ISA_NS xsep::cpu::baseline::impl
#define XSEP_VEC_BYTES 16
#include "cpu/depthwise_kernels_impl.h"
#include "cpu/depthwise_nchw_kernels_impl.h"
#undef XSEP_VEC_BYTES
#undef XSEP_ISA_NS

XSEP_DEFINE_KERNEL_TABLES(baseline)
