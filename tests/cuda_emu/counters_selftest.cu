// See counters_selftest.h. Compiled only by the emulator builds (emu_build.py), like csrc/cuda/*.cu.
#include <c10/cuda/CUDAException.h>
#include <c10/util/Exception.h>

#include <cstdint>

#include "counters_selftest.h"
#include "cuda/async_copy.cuh"
#include "cuda/mma.cuh"
#include "cuda/vec.cuh"

namespace xsep_emu_selftest {
namespace {

constexpr int kLanes = 32, kSharedBytes = 8192;

__global__ void strided_load_kernel(const float* x, int stride, float* out) {
  out[threadIdx.x] = x[threadIdx.x * stride];
}

__global__ void repeated_load_kernel(const float* x, int times, float* out) {
  float sum = 0.0f;
  for (int i = 0; i < times; ++i) sum += x[(threadIdx.x + i) % kLanes];
  out[threadIdx.x] = sum;
}

// A vector of BYTES bytes, read or written as one access.
template <int BYTES>
__global__ void shared_access_kernel(const int* offsets, bool store, float* out) {
  __shared__ __align__(16) unsigned char s[kSharedBytes];
  using V = xsep::cuda::Vec<float, BYTES / 4>;
  V* p = reinterpret_cast<V*>(s + offsets[threadIdx.x]);
  float sum = 0.0f;
  if (store) {
    V v;
#pragma unroll
    for (int e = 0; e < BYTES / 4; ++e) v.v[e] = static_cast<float>(e);
    *p = v;
  } else {
    const V v = *p;
#pragma unroll
    for (int e = 0; e < BYTES / 4; ++e) sum += v.v[e];
  }
  out[threadIdx.x] = sum;
}

__global__ void ldmatrix_rows_kernel(const int* offsets, int mmas, float* out) {
  __shared__ __align__(16) unsigned char s[kSharedBytes];
  uint32_t a[4];
  xsep::cuda::ldmatrix_x4(a, s + offsets[threadIdx.x]);
  float c[4] = {};
  const uint32_t b[2] = {a[0], a[1]};
  for (int i = 0; i < mmas; ++i) xsep::cuda::mma_16816<true>(c, a, b);
  out[threadIdx.x] = c[0];
}

__global__ void async_copy_kernel(const float* src, float* dst) {
  __shared__ __align__(16) float s[kLanes * 4];
  xsep::cuda::cp_async_16(&s[threadIdx.x * 4], &src[threadIdx.x * 4]);
  xsep::cuda::cp_async_commit();
  xsep::cuda::cp_async_wait<0>();
  __syncthreads();
  for (int e = 0; e < 4; ++e) dst[threadIdx.x * 4 + e] = s[threadIdx.x * 4 + e];
}

__global__ void grid_of_blocks_kernel(float* out) {
  out[blockIdx.x * kLanes + threadIdx.x] = static_cast<float>(blockIdx.x);
}

}  // namespace

void strided_load(const float* x, int stride, float* out) {
  strided_load_kernel<<<1, kLanes>>>(x, stride, out);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void repeated_load(const float* x, int times, float* out) {
  repeated_load_kernel<<<1, kLanes>>>(x, times, out);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void shared_access(const int* offsets, int bytes, bool store, float* out) {
  switch (bytes) {
    case 4: shared_access_kernel<4><<<1, kLanes>>>(offsets, store, out); break;
    case 8: shared_access_kernel<8><<<1, kLanes>>>(offsets, store, out); break;
    case 16: shared_access_kernel<16><<<1, kLanes>>>(offsets, store, out); break;
    default: TORCH_CHECK(false, "shared_access: bytes must be 4, 8 or 16");
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void ldmatrix_rows(const int* offsets, int mmas, float* out) {
  ldmatrix_rows_kernel<<<1, kLanes>>>(offsets, mmas, out);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void async_copy(const float* src, float* dst) {
  async_copy_kernel<<<1, kLanes>>>(src, dst);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void grid_of_blocks(int blocks, float* out) {
  grid_of_blocks_kernel<<<blocks, kLanes>>>(out);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace xsep_emu_selftest
