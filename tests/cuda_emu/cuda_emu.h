// A CUDA-on-CPU emulator for the tests: csrc/cuda/*.cu, compiled as C++ by g++ (see emu_build.py,
// which puts `#include "cuda_emu.h"` first in each translated file and rewrites the <<<...>>>
// launches into xsep_emu::launch), run on the CPU so that CI without a GPU executes the kernels.
//
// Execution model: one OS thread. A launch runs its blocks one after another; within a block each
// CUDA thread is a fiber (ucontext), switched only at __syncthreads and warp-collective operations
// (ldmatrix, mma.sync), so a block's fibers run in turn between barriers, in an order shuffled
// (from a seed) at every barrier, which makes a missing __syncthreads show up as wrong results.
// Because blocks never overlap, a function-static array is exactly a block's shared memory:
// __shared__ becomes `static`, poisoned before each block runs. Misuse a GPU would hang on or
// leave undefined (threads that exited while others wait at __syncthreads, threads of a block at
// different __syncthreads, a warp whose lanes are not all at the same collective, misaligned
// ldmatrix rows or 16-byte vector accesses, a bad launch configuration) is reported as an error
// naming the kernel, block and thread.
//
// The tensor-core operations are implemented from the PTX ISA's definitions of the fragment
// layouts (sections "Matrix Fragments for mma.m16n8k16 with floating point type" and "ldmatrix"),
// independently of csrc/cuda/mma.cuh, which calls them under XSEP_CUDA_EMU.
#pragma once

// What nvcc includes in every .cu file: dim3, uint3, cudaStream_t, and (host_defines.h) __host__,
// __device__ and __global__ as nothing, __forceinline__ and __align__ as GCC attributes. Only the
// types are used: no CUDA runtime function is ever called.
#include <cuda_runtime.h>

#include <math.h>  // fma(float, float, float) and fma(double, double, double), as device code has

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

// Function statics are the block's shared memory (emu_build.py also registers each one-line
// declaration, to poison it before each block: see SharedArray).
#undef __shared__
#define __shared__ static
#define __launch_bounds__(...)

namespace xsep_emu {

// What the CUDA built-in variables read for the running fiber.
struct ThreadContext {
  uint3 thread_idx, block_idx;
  dim3 block_dim, grid_dim;
};

namespace detail {
// Set by the scheduler before it switches to a fiber (launches are serialised).
inline const ThreadContext* current = nullptr;
}  // namespace detail

#define threadIdx (::xsep_emu::detail::current->thread_idx)
#define blockIdx (::xsep_emu::detail::current->block_idx)
#define blockDim (::xsep_emu::detail::current->block_dim)
#define gridDim (::xsep_emu::detail::current->grid_dim)

// __syncthreads records where it was called, to report threads of a block at different barriers.
void syncthreads(const char* file, int line);
#define __syncthreads() ::xsep_emu::syncthreads(__FILE__, __LINE__)

// __trap() stops the kernel with an error, which the launch reports (as the other kernel errors).
[[noreturn]] void trap(const char* file, int line);
#define __trap() ::xsep_emu::trap(__FILE__, __LINE__)

// Registers a __shared__ array (emu_build.py declares a static one after each declaration, made
// static): it is filled with 0xff bytes (NaN in every float type) now and before each block runs.
// An empty object built by the emulator's code, so that registering writes nothing in the kernel's
// (which the memory counters would count).
void register_shared_bytes(void* p, size_t bytes);
class SharedArray {
 public:
  template <typename T>
  explicit SharedArray(T& array) : SharedArray(&array, sizeof(T)) {}
  SharedArray(void* p, size_t bytes);
};

// The launch's dynamic shared memory (XSEP_DYNAMIC_SMEM in csrc/cuda/kernel_types.cuh), 128-byte
// aligned, filled with 0xff bytes (NaN in every float type) before each block runs.
unsigned char* dynamic_smem();

// Warp-collective tensor-core operations (the PTX instructions of csrc/cuda/mma.cuh).
// ldmatrix.sync.aligned.m8n8.x4 / .x2 .shared.b16: `row` is this lane's row address.
void ldmatrix_x4(uint32_t (&r)[4], const void* row);
void ldmatrix_x2(uint32_t (&r)[2], const void* row);
// The same with .trans: each 8 x 8 matrix transposed (lane l: element l / 4 of rows 2 (l % 4), + 1).
void ldmatrix_x4_trans(uint32_t (&r)[4], const void* row);
void ldmatrix_x2_trans(uint32_t (&r)[2], const void* row);
// mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}.{bf16,f16}.f32 with D = C = c.
void mma_16816(bool bf16, float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]);

// Asynchronous copies (cp.async.cg.shared.global 16 bytes, commit_group, wait_group N of
// csrc/cuda/async_copy.cuh), per thread: a copy takes effect only when a wait_group leaving at most
// N newer groups pending needs it; a thread that exits with copies pending is an error.
void cp_async_16(void* smem, const void* global);
void cp_async_commit();
void cp_async_wait(int pending);

// ---------------------------------------------------------------------------------------------
// Launches: `kernel<...><<<grid, block, smem, stream>>>(args)` becomes
// `::xsep_emu::launch({file, line, "kernel<...>"}, kernel<...>, grid, block, smem, stream)(args)`.

struct Site {
  const char* file;
  int line;
  const char* kernel;
  const void* function = nullptr;  // the kernel's code (set by Launch), for the counters to name it
};

struct LaunchConfig {
  dim3 grid, block;
  size_t dynamic_smem;
};

// Runs `thread_body` as every thread of every block (or, for an invalid configuration, records a
// launch error for C10_CUDA_KERNEL_LAUNCH_CHECK, as CUDA does). Errors in the kernel throw.
void run(const Site& site, const LaunchConfig& config, const std::function<void()>& thread_body);

template <typename... P>
class Launch {
 public:
  Launch(const Site& site, void (*kernel)(P...), const LaunchConfig& config)
      : site_(site), kernel_(kernel), config_(config) {
    site_.function = reinterpret_cast<const void*>(kernel);
  }

  template <typename... Args>
  void operator()(Args&&... args) const {
    static_assert(sizeof...(Args) == sizeof...(P), "wrong number of kernel arguments");
    // Converted to the parameter types once, as a launch copies its arguments; each thread then
    // gets its own copy (the kernel takes them by value).
    const std::tuple<std::decay_t<P>...> params(std::forward<Args>(args)...);
    run(site_, config_, [&] { std::apply(kernel_, params); });
  }

 private:
  Site site_;
  void (*kernel_)(P...);
  LaunchConfig config_;
};

template <typename... P>
Launch<P...> launch(const Site& site, void (*kernel)(P...), dim3 grid, dim3 block, size_t dynamic_smem = 0,
                    cudaStream_t /*stream: launches run synchronously*/ = nullptr) {
  return Launch<P...>(site, kernel, LaunchConfig{grid, block, dynamic_smem});
}

// Throws the launch error recorded since the last check, if any (C10_CUDA_KERNEL_LAUNCH_CHECK).
void check_launch(const char* file, int line);
#define C10_CUDA_KERNEL_LAUNCH_CHECK() ::xsep_emu::check_launch(__FILE__, __LINE__)

// For the bindings: the launch error that no C10_CUDA_KERNEL_LAUNCH_CHECK reported (a launcher
// that forgot one), empty if none; and the seed of the thread order (reset per test).
std::string take_unchecked_launch_error();
void set_schedule_seed(uint64_t seed);

// ---------------------------------------------------------------------------------------------
// Sampling and observing launches, for the memory counters (counters.cpp; only the
// xsep_emu_counters build, whose code is compiled with -fsanitize=thread, see emu_build.py).

// From now on each launch runs only `runs` runs of `run_length` consecutive blocks (by linear block
// index, x fastest: the order a GPU hands blocks out in), one in each of `runs` equal shares of the
// grid, all blocks when the grid has no more; runs == 0: every block. The other blocks' outputs are
// not written.
void set_block_sample(int64_t runs, int64_t run_length);

// Told by the scheduler what runs, as it runs.
class Observer {
 public:
  virtual ~Observer() = default;
  virtual void launch_begin(const Site& site, const LaunchConfig& config, uint64_t blocks, uint64_t blocks_run) = 0;
  virtual void launch_end() = 0;
  // [p, p + bytes) is shared memory: a __shared__ array as it registers, the dynamic shared memory.
  virtual void shared_memory(const void* p, size_t bytes) = 0;
  // Block `linear` (x fastest) of `threads` threads starts; [vars, vars + bytes) holds its threads'
  // built-in variables (threadIdx and friends read them: no kernel data).
  virtual void block_begin(uint64_t linear, int threads, const void* vars, size_t bytes) = 0;
  virtual void block_end() = 0;
  // Thread `thread` of the block runs next, on the stack [stack, stack + bytes).
  virtual void resume(int thread, const void* stack, size_t bytes) = 0;
  // Every thread of the block passed a __syncthreads; every lane of `warp` met at a collective.
  virtual void barrier() = 0;
  virtual void warp_collective(int warp) = 0;
  // Warp-collective tensor-core instructions, once per warp: ldmatrix (called from `pc`) of `num`
  // 8 x 8 matrices whose rows lanes 0 .. 8 num gave, and mma.sync. A cp.async by the running thread.
  virtual void ldmatrix(const void* pc, const void* const* rows, int num) = 0;
  virtual void mma(int warp) = 0;
  virtual void cp_async(const void* pc, const void* smem, const void* global) = 0;
};

namespace detail {
inline Observer* observer = nullptr;  // none outside the counters
// Whether the running code is a kernel's (not the scheduler's, nor an emulator call the kernel made):
// the counters count only its memory accesses.
inline bool in_kernel = false;
}  // namespace detail

}  // namespace xsep_emu
