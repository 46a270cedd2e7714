// Kernels whose memory accesses have known counts, to test the memory counters (counters.h,
// test_emu_counters.py). Each runs one warp (32 threads) unless it says otherwise.
#pragma once

#include <cstdint>

namespace xsep_emu_selftest {

// out[t] = x[t * stride]: one global load request and one store request.
void strided_load(const float* x, int stride, float* out);
// out[t] = the sum of x[(t + i) % 32] for i < times: `times` requests for the same 128 bytes.
void repeated_load(const float* x, int times, float* out);
// Lane t reads (or, with `store`, writes) `bytes` (4, 8 or 16) of shared memory at byte offsets[t]
// of an 8 KiB array (16-byte aligned), and writes out[t].
void shared_access(const int* offsets, int bytes, bool store, float* out);
// Lane t gives offsets[t] (a multiple of 16 in an 8 KiB array) as its ldmatrix.x4 row address;
// then `mmas` mma.sync.
void ldmatrix_rows(const int* offsets, int mmas, float* out);
// Each lane copies 16 bytes by cp.async: src[16 t .. 16 t + 16) to shared memory, then back to dst.
void async_copy(const float* src, float* dst);
// `blocks` blocks of 32 threads; out[block * 32 + t] = block.
void grid_of_blocks(int blocks, float* out);

}  // namespace xsep_emu_selftest
