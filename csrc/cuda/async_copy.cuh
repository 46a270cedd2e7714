// cp.async (sm_80+): 16 bytes from global to shared memory without passing through registers,
// completing asynchronously, so that the next tile loads while the current one is multiplied.
// Copies are committed in groups; cp_async_wait<N>() waits until at most the N newest groups are
// still in flight (the tile must then still be published to the block with __syncthreads).
#pragma once

#include <cstdint>

namespace xsep::cuda {

__device__ __forceinline__ void cp_async_16(void* smem, const void* global) {
#ifdef XSEP_CUDA_EMU
  ::xsep_emu::cp_async_16(smem, global);
#else
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n"
               :
               : "r"(static_cast<uint32_t>(__cvta_generic_to_shared(smem))), "l"(global));
#endif
}

__device__ __forceinline__ void cp_async_commit() {
#ifdef XSEP_CUDA_EMU
  ::xsep_emu::cp_async_commit();
#else
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}

template <int N>
__device__ __forceinline__ void cp_async_wait() {
#ifdef XSEP_CUDA_EMU
  ::xsep_emu::cp_async_wait(N);
#else
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#endif
}

}  // namespace xsep::cuda
