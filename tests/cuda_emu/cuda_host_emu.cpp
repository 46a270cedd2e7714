// Stands in for csrc/cuda/cuda_host.cpp (which asks the CUDA runtime) in the emulator build: the
// emulated device is an H100 (its opt-in shared memory per block), and launches take no stream.
#include "cuda/cuda_host.h"

namespace xsep::cuda {

Dtype dtype_of(const at::Tensor& t) { return dtype_of(t.scalar_type()); }

int64_t smem_per_block_optin() { return 227 * 1024; }

cudaStream_t current_stream() { return nullptr; }

}  // namespace xsep::cuda
