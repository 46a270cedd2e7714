// Kernels that break CUDA's rules on purpose, to test that the emulator reports what a GPU would
// hang on or get wrong (test_emu_selftest.py). Each runs one block of 64 threads.
#pragma once

namespace xsep_emu_selftest {

// Threads from `stay` on return before a __syncthreads the others wait at.
void early_exit(int stay);
// Even and odd threads wait at different __syncthreads.
void divergent_barriers();
// Lanes from `lanes` on skip an mma.sync their warp's other lanes run.
void partial_warp_mma(int lanes);
// Thread t writes base + t to shared memory (then __syncthreads when `sync`) and reads thread
// t + 1's value into out[t]: without the barrier the emulator's thread order exposes the race.
void neighbour_exchange(bool sync, int base, int* out);
// Thread t reads float t of the dynamic shared memory (fresh: NaN) into before[t], writes t, and
// after a __syncthreads reads thread 63 - t's into after[t].
void dynamic_shared_memory(float* before, float* after);
// A launch of 2048 threads per block (more than CUDA allows), with or without the launch check.
void oversized_launch(bool check);

}  // namespace xsep_emu_selftest
