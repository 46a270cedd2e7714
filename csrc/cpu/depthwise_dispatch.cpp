// Picks the instruction-set build of the depthwise kernels once per process: the best one the CPU
// supports, unless XSEP_CPU_ISA=avx512|avx2|default asks for a specific one; and how many vectors
// of channels the AVX-512 build's runs take (two_vector_runs).
#include <c10/util/Exception.h>

#include <cstdlib>
#include <string>
#include <string_view>

#include "cpu/depthwise_kernels.h"
#include "cpu/depthwise_nchw_kernels.h"
#include "cpu/host.h"
#include "cpu/isa_tables.h"

namespace xsep::cpu {
namespace {

enum class Isa { avx512, avx2, baseline };

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::avx512: return "avx512";
    case Isa::avx2: return "avx2";
    case Isa::baseline: break;
  }
  return "default";
}

bool cpu_supports(Isa isa) {
#if XSEP_CPU_X86_ISAS
  __builtin_cpu_init();
  switch (isa) {
    case Isa::avx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
    case Isa::avx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    case Isa::baseline: break;
  }
#endif
  return isa == Isa::baseline;
}

Isa select_isa() {
  if (const auto name = env_choice("XSEP_CPU_ISA", {"avx512", "avx2", "default"})) {
    const Isa isa = name == "avx512" ? Isa::avx512 : name == "avx2" ? Isa::avx2 : Isa::baseline;
    TORCH_CHECK(cpu_supports(isa), "XSEP_CPU_ISA=", *name, ": this CPU (or this build) does not ",
                "support that instruction set");
    return isa;
  }
  for (Isa isa : {Isa::avx512, Isa::avx2})
    if (cpu_supports(isa)) return isa;
  return Isa::baseline;
}

// Thrown errors (a bad XSEP_CPU_ISA) leave the static uninitialised, so each call reports them.
Isa active_isa() {
  static const Isa isa = select_isa();
  return isa;
}

// Two vectors on every row, except on AMD's family 25 (Zen 4, whose AVX-512 runs on 256-bit units):
// on the AMD EPYC of family 26 (Zen 5), interleaved against the short-row rule, fp32, batch 8, 2
// threads, the forward ran 1.01-1.06x faster from 147x147x64 to 37x37x728 and 1.29x at 19x19x728,
// the input gradient 0.98-1.17x; on the 2-core Intel Xeon (AVX-512 and AMX, 2026-12-05; alternate
// processes, min of 9) the forward 1.2-1.35x at 147x147 and 74x74x256, 1.1-1.17x at 74x74x128 and
// 37x37x256, equal from 37x37x728 down, the backward 1.05-1.25x at 147x147 and 37x37x256; on the
// family-25 one (Zen 4) 37x37x728 ran 5-9% slower with them.
bool select_two_vector_runs() {
  const auto name = env_choice("XSEP_CPU_RUN_VECTORS", {"auto", "short-rows", "every-row"});
  if (name == "every-row") return true;
  if (name == "short-rows") return false;
  return amd_family() != 25;
}

DepthwiseRuns select_depthwise_runs() {
  const auto name = env_choice("XSEP_CPU_DEPTHWISE_RUNS", {"auto", "always", "never"});
  if (name == "always") return DepthwiseRuns::kEverywhere;
  if (name == "never") return DepthwiseRuns::kNowhere;
  if (amd_family() == 25) return DepthwiseRuns::kLongRows;
  return amd_family() != 0 ? DepthwiseRuns::kEverywhere : DepthwiseRuns::kAvx512Rule;
}

bool select_tn_b_in_place() {
  const auto name = env_choice("XSEP_CPU_WEIGHT_PACKING", {"auto", "pack", "in-place"});
  if (name == "pack") return false;
  if (name == "in-place") return true;
  return amd_family() == 0;
}

template <typename T>
DepthwiseKernels<T> make_table(Isa isa) {
  switch (isa) {
#if XSEP_CPU_X86_ISAS
    case Isa::avx512: return avx512::make_table<T>();
    case Isa::avx2: return avx2::make_table<T>();
#endif
    default: return baseline::make_table<T>();
  }
}

template <typename T>
DepthwiseNchwKernels<T> make_nchw_table(Isa isa) {
  switch (isa) {
#if XSEP_CPU_X86_ISAS
    case Isa::avx512: return avx512::make_nchw_table<T>();
    case Isa::avx2: return avx2::make_nchw_table<T>();
#endif
    default: return baseline::make_nchw_table<T>();
  }
}

}  // namespace

bool two_vector_runs() {
  static const bool every_row = select_two_vector_runs();
  return every_row;
}

const char* run_vectors_setting() { return two_vector_runs() ? "every row" : "short rows"; }

DepthwiseRuns depthwise_runs() {
  static const DepthwiseRuns runs = select_depthwise_runs();
  return runs;
}

const char* depthwise_runs_setting() {
  switch (depthwise_runs()) {
    case DepthwiseRuns::kEverywhere: return "always";
    case DepthwiseRuns::kNowhere: return "never";
    case DepthwiseRuns::kLongRows: {
      static const std::string words = "always, except forwards through the caches on rows under " +
                                       std::to_string(kMinForwardRunPixels) + " pixels";
      return words.c_str();
    }
    case DepthwiseRuns::kAvx512Rule: break;
  }
  // The rule takes runs in the AVX-512 build only (runs_chosen): the others' rows are all unit tiles.
  return active_isa() == Isa::avx512 ? "avx512 input gradients, fused bands and streamed forwards" : "never";
}

bool tn_b_in_place() {
  static const bool in_place = select_tn_b_in_place();
  return in_place;
}

const char* weight_packing_setting() { return tn_b_in_place() ? "narrow rows in place" : "packed"; }

template <typename T>
const DepthwiseKernels<T>& depthwise_kernels() {
  // The settings first: a bad XSEP_CPU_RUN_VECTORS, XSEP_CPU_DEPTHWISE_RUNS or
  // XSEP_CPU_WEIGHT_PACKING raises here, not inside a kernel's threads.
  static const DepthwiseKernels<T> table =
      (two_vector_runs(), depthwise_runs(), tn_b_in_place(), make_table<T>(active_isa()));
  return table;
}

template <typename T>
const DepthwiseNchwKernels<T>& depthwise_nchw_kernels() {
  static const DepthwiseNchwKernels<T> table = make_nchw_table<T>(active_isa());
  return table;
}

#define XSEP_INSTANTIATE_KERNEL_GETTERS(T)                    \
  template const DepthwiseKernels<T>& depthwise_kernels<T>(); \
  template const DepthwiseNchwKernels<T>& depthwise_nchw_kernels<T>();
XSEP_INSTANTIATE_KERNEL_GETTERS(float)
XSEP_INSTANTIATE_KERNEL_GETTERS(double)
XSEP_INSTANTIATE_KERNEL_GETTERS(c10::BFloat16)
XSEP_INSTANTIATE_KERNEL_GETTERS(c10::Half)
#undef XSEP_INSTANTIATE_KERNEL_GETTERS

const char* kernel_isa() { return isa_name(active_isa()); }

}  // namespace xsep::cpu
