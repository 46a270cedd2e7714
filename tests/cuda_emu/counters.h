// The memory counters of the xsep_emu_counters build (counters.cpp; see emu_build.py): every memory
// access a kernel makes while the CPU emulator runs it, grouped into the warp-level requests a GPU
// would issue and counted the way a GPU's memory system serves them.
#pragma once

#include <cstdint>
#include <string>

namespace xsep_emu {

// Starts counting every launch from now on, each sampled to `runs` runs of `run_length` consecutive
// blocks (see set_block_sample; runs == 0: every block).
void counters_start(int64_t runs, int64_t run_length);

// Stops, and returns what was counted per launch since counters_start, as JSON: a list of launches
// with the kernel, its launch site, grid and block, the blocks run, per kind of access (global_load,
// global_store, shared_load, shared_store, ldmatrix, cp_async) the requests, lanes, bytes, 32-byte
// sectors and their ideal, shared-memory wavefronts and their ideal; the distinct bytes and sectors
// read and written (per run of blocks, summed); mma.sync instructions; and the same counts per call
// site (`pc`: the offset of the instruction after the access in `library`, for addr2line; `function`:
// the kernel's). Counts cover the blocks run only.
std::string counters_stop();

}  // namespace xsep_emu
