// Warp-level tensor-core helpers (sm_80+) shared by the GEMM kernels: ldmatrix from shared memory
// and mma.sync m16n8k16 with float accumulation, for float16 and bfloat16.
//
// Fragment layouts (PTX ISA, "mma.m16n8k16" for 16-bit types), with g = lane / 4, t = lane % 4:
//   A (16 x 16, row-major): a[0] = A[g][2t..2t+1], a[1] = A[g+8][2t..], a[2] = A[g][2t+8..],
//                           a[3] = A[g+8][2t+8..]
//   B (16 x 8, "col": stored n-major, k contiguous): b[0] = B[2t..2t+1][g], b[1] = B[2t+8..][g]
//   C (16 x 8, float): c[0..1] = C[g][2t..2t+1], c[2..3] = C[g+8][2t..2t+1]
// ldmatrix.x4 reads four 8 x 8 matrices whose rows' addresses come from lanes 0-7, 8-15, 16-23,
// 24-31; lane l receives row l / 4, elements 2 (l % 4) and 2 (l % 4) + 1 of each (x2: lanes 0-15).
// ldmatrix...trans (PTX ISA: "the matrix is loaded in column-major format") hands out the transpose:
// lane l receives element l / 4 of rows 2 (l % 4) and 2 (l % 4) + 1. So from a tile stored k-major
// (rows of the 8 x 8 matrix are k, its columns A's rows m or B's columns n), .trans gives the same
// A and B fragments as the plain load does from a tile stored [m or n][k].
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>

namespace xsep::cuda {

template <typename T> struct MmaType;
template <> struct MmaType<c10::Half> { static constexpr bool bf16 = false; };
template <> struct MmaType<c10::BFloat16> { static constexpr bool bf16 = true; };

#ifdef XSEP_CUDA_EMU
// The tests' CPU emulator (tests/cuda_emu) implements these warp-collective operations itself.
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) { ::xsep_emu::ldmatrix_x4(r, p); }

__device__ __forceinline__ void ldmatrix_x2(uint32_t (&r)[2], const void* p) { ::xsep_emu::ldmatrix_x2(r, p); }

__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
  ::xsep_emu::ldmatrix_x4_trans(r, p);
}

__device__ __forceinline__ void ldmatrix_x2_trans(uint32_t (&r)[2], const void* p) {
  ::xsep_emu::ldmatrix_x2_trans(r, p);
}

template <bool BF16>
__device__ __forceinline__ void mma_16816(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  ::xsep_emu::mma_16816(BF16, c, a, b);
}
#else
__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}

__device__ __forceinline__ void ldmatrix_x2(uint32_t (&r)[2], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(smem_addr(p)));
}

__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}

__device__ __forceinline__ void ldmatrix_x2_trans(uint32_t (&r)[2], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(smem_addr(p)));
}

template <bool BF16>
__device__ __forceinline__ void mma_16816(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  if constexpr (BF16) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
}
#endif  // XSEP_CUDA_EMU

}  // namespace xsep::cuda
