// Stands in for c10's header in the emulator build (its folder comes first on the include path):
// the real C10_CUDA_KERNEL_LAUNCH_CHECK calls the CUDA runtime; cuda_emu.h defines one that reports
// the emulator's launch errors.
#pragma once

#include "cuda_emu.h"
