// See selftest.h. Compiled only by the emulator build (emu_build.py), like csrc/cuda/*.cu.
#include <c10/cuda/CUDAException.h>

#include <cstdint>

#include "cuda/mma.cuh"
#include "selftest.h"

namespace xsep_emu_selftest {
namespace {

constexpr int kThreads = 64;

__global__ void early_exit_kernel(int stay) {
  if (static_cast<int>(threadIdx.x) >= stay) return;
  __syncthreads();
}

__global__ void divergent_barriers_kernel() {
  if (threadIdx.x % 2 == 0) {
    __syncthreads();
  } else {
    __syncthreads();
  }
}

__global__ void partial_warp_mma_kernel(int lanes) {
  float c[4] = {};
  const uint32_t a[4] = {}, b[2] = {};
  if (static_cast<int>(threadIdx.x % 32) < lanes) xsep::cuda::mma_16816<false>(c, a, b);
}

__global__ void neighbour_exchange_kernel(bool sync, int base, int* out) {
  __shared__ int s[kThreads];
  s[threadIdx.x] = base + static_cast<int>(threadIdx.x);
  if (sync) __syncthreads();
  out[threadIdx.x] = s[(threadIdx.x + 1) % kThreads];
}

__global__ void dynamic_shared_memory_kernel(float* before, float* after) {
  float* s = reinterpret_cast<float*>(::xsep_emu::dynamic_smem());
  before[threadIdx.x] = s[threadIdx.x];
  s[threadIdx.x] = static_cast<float>(threadIdx.x);
  __syncthreads();
  after[threadIdx.x] = s[kThreads - 1 - threadIdx.x];
}

__global__ void noop_kernel() {}

}  // namespace

void early_exit(int stay) {
  early_exit_kernel<<<1, kThreads>>>(stay);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void divergent_barriers() {
  divergent_barriers_kernel<<<1, kThreads>>>();
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void partial_warp_mma(int lanes) {
  partial_warp_mma_kernel<<<1, kThreads>>>(lanes);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void neighbour_exchange(bool sync, int base, int* out) {
  neighbour_exchange_kernel<<<1, kThreads>>>(sync, base, out);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void dynamic_shared_memory(float* before, float* after) {
  dynamic_shared_memory_kernel<<<1, kThreads, kThreads * sizeof(float)>>>(before, after);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void oversized_launch(bool check) {
  noop_kernel<<<1, 2048>>>();
  if (check) C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace xsep_emu_selftest
