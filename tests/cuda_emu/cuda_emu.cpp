// The emulator's scheduler and warp-collective operations (see cuda_emu.h for the model).
#include "cuda_emu.h"

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <numeric>
#include <random>
#include <sstream>
#include <stdexcept>
#include <vector>

namespace xsep_emu {
namespace {

constexpr int kWarp = 32;
// Kernels keep only small arrays on their stacks, but an exception thrown in a fiber unwinds there.
constexpr size_t kStackBytes = 256 * 1024;

enum class State { runnable, at_syncthreads, at_warp_op, exited };

struct Fiber {
  ThreadContext vars;  // what threadIdx and friends read
  ucontext_t context;
  State state;
  // Where it waits: the __syncthreads call site, or the name of the warp operation.
  const char* wait_file;
  int wait_line;
  // cp.async copies not yet performed: the open group, and the committed groups, oldest first.
  std::vector<std::pair<void*, const void*>> open_copies;
  std::deque<std::vector<std::pair<void*, const void*>>> committed_copies;
};

// A warp's mailbox for its collective operations: each lane deposits its operands, the lanes meet,
// each reads what it needs, and they meet again before the mailbox can be reused.
struct WarpScratch {
  int arrived;
  const void* rows[kWarp];
  uint32_t a[kWarp][4], b[kWarp][2];
  bool decoded;  // A and B below hold this mma's operands
  float A[16][16], B[16][8];
};

// Fiber stacks, kept for the process's life and reused by every block; each with an inaccessible
// guard page below it, so an overflow faults instead of corrupting a neighbour.
class Stacks {
 public:
  char* get(size_t i) {
    while (stacks_.size() <= i) {
      const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
      void* base =
          mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (base == MAP_FAILED) throw std::runtime_error("cuda_emu: cannot map a fiber stack");
      mprotect(base, page, PROT_NONE);
      stacks_.push_back(static_cast<char*>(base) + page);
    }
    return stacks_[i];
  }

 private:
  std::vector<char*> stacks_;
};

struct Emulator {
  std::mutex mutex;  // one launch at a time: shared memory is function-static
  std::mt19937_64 rng{0};
  std::string launch_error;  // pending, as cudaGetLastError would return it
  Stacks stacks;

  // The launch and block being run.
  const Site* site = nullptr;
  const std::function<void()>* body = nullptr;
  std::vector<Fiber> fibers;
  std::vector<WarpScratch> warps;
  std::vector<int> runnable;  // run from the back
  int running = -1;
  int exited = 0, at_syncthreads = 0;
  std::exception_ptr fiber_error;
  ucontext_t scheduler;
  // Set by on_fault: whether a fiber runs (its faults are the kernel's), and the fault it had.
  volatile sig_atomic_t in_fiber = 0, fault_signal = 0;
  void* volatile fault_address = nullptr;
  std::unique_ptr<unsigned char, decltype(&std::free)> dynamic_smem{nullptr, &std::free};
  size_t dynamic_smem_bytes = 0;
  std::map<void*, size_t> shared_arrays;       // every __shared__ array met so far
  int64_t sample_runs = 0, sample_length = 0;  // set_block_sample
};

Emulator& emu() {
  static Emulator e;
  return e;
}

// Marks an emulator call a kernel made as not the kernel's code, for the counters (returning to the
// kernel when it ends, or unwinding into fiber_main, which says otherwise).
struct EmulatorCode {
  EmulatorCode() { detail::in_kernel = false; }
  ~EmulatorCode() { detail::in_kernel = true; }
  EmulatorCode(const EmulatorCode&) = delete;
  EmulatorCode& operator=(const EmulatorCode&) = delete;
};

// A memory fault in a kernel (on x86 a misaligned 16-byte vector access faults, as it does on a
// GPU; an overflowing fiber stack hits its guard page) leaves its fiber for the scheduler, which
// reports it like any error in the kernel; a fault outside the fibers goes to the previous handler.
struct sigaction previous_segv, previous_bus;

void on_fault(int sig, siginfo_t* info, void*) {
  Emulator& e = emu();
  if (!e.in_fiber) {  // not the kernel's: restored, the previous handler gets the repeated fault
    sigaction(sig, sig == SIGSEGV ? &previous_segv : &previous_bus, nullptr);
    return;
  }
  e.in_fiber = 0;
  e.fault_signal = sig;
  e.fault_address = info->si_addr;
  setcontext(&e.scheduler);  // restores the scheduler's signal mask too
}

// Installs on_fault while a launch runs.
class FaultHandler {
 public:
  FaultHandler() {
    stack_t alt;
    sigaltstack(nullptr, &alt);
    if (alt.ss_flags & SS_DISABLE) {  // the handler cannot run on an overflowed fiber stack
      static std::vector<char> memory(64 * 1024);
      alt = stack_t{memory.data(), 0, memory.size()};
      sigaltstack(&alt, nullptr);
    }
    struct sigaction action{};
    action.sa_sigaction = on_fault;
    action.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&action.sa_mask);
    sigaction(SIGSEGV, &action, &previous_segv);
    sigaction(SIGBUS, &action, &previous_bus);
  }
  ~FaultHandler() {
    sigaction(SIGSEGV, &previous_segv, nullptr);
    sigaction(SIGBUS, &previous_bus, nullptr);
  }
};

std::string where(const Emulator& e, const dim3& block) {
  std::ostringstream s;
  s << "kernel " << e.site->kernel << " (launched at " << e.site->file << ":" << e.site->line << "), block (" << block.x
    << "," << block.y << "," << block.z << ")";
  return s.str();
}

std::string thread_name(const Fiber& f) {
  std::ostringstream s;
  s << "thread (" << f.vars.thread_idx.x << "," << f.vars.thread_idx.y << "," << f.vars.thread_idx.z << ")";
  return s.str();
}

void shuffle_into_runnable(Emulator& e, std::vector<int> ids) {
  std::shuffle(ids.begin(), ids.end(), e.rng);
  e.runnable.insert(e.runnable.end(), ids.begin(), ids.end());
}

void fiber_main() {
  Emulator& e = emu();
  Fiber& f = e.fibers[e.running];
  try {
    const std::function<void()>& body = *e.body;  // read before the kernel's code starts
    detail::in_kernel = true;
    body();
    detail::in_kernel = false;
  } catch (const std::exception& ex) {
    detail::in_kernel = false;
    e.fiber_error = std::make_exception_ptr(std::runtime_error(thread_name(f) + ": " + ex.what()));
  } catch (...) {
    detail::in_kernel = false;
    e.fiber_error = std::make_exception_ptr(std::runtime_error(thread_name(f) + ": unknown exception"));
  }
  const bool pending = !f.open_copies.empty() || std::any_of(f.committed_copies.begin(), f.committed_copies.end(),
                                                             [](const auto& group) { return !group.empty(); });
  if (pending && !e.fiber_error) {
    e.fiber_error = std::make_exception_ptr(
        std::runtime_error(thread_name(f) + ": exited with cp.async copies it never waited for (cp.async.wait_group)"));
  }
  f.state = State::exited;
  ++e.exited;
  // Returning resumes uc_link, the scheduler.
}

void yield_to_scheduler(Emulator& e) { swapcontext(&e.fibers[e.running].context, &e.scheduler); }

// Why nothing can run: which threads have exited and where the others wait.
std::string describe_deadlock(const Emulator& e) {
  std::map<std::string, int> sync_sites;
  std::map<int, std::pair<const char*, int>> warps;  // warp -> (an operation waited at, lanes there)
  for (size_t i = 0; i < e.fibers.size(); ++i) {
    const Fiber& f = e.fibers[i];
    if (f.state == State::at_syncthreads) {
      ++sync_sites[std::string(f.wait_file) + ":" + std::to_string(f.wait_line)];
    } else if (f.state == State::at_warp_op) {
      auto& w = warps[static_cast<int>(i) / kWarp];
      w.first = f.wait_file;
      ++w.second;
    }
  }
  std::ostringstream s;
  s << "deadlock: " << e.exited << " of " << e.fibers.size() << " threads exited";
  for (const auto& [site, n] : sync_sites) s << "; " << n << " wait at __syncthreads at " << site;
  for (const auto& [w, op] : warps)
    s << "; warp " << w << ": " << op.second << " lanes wait at " << op.first << " for the rest of the warp";
  s << " (a GPU would hang or misbehave: every thread of a block must reach the same __syncthreads, "
       "every lane of a warp the same warp-collective operation)";
  return s.str();
}

// All threads wait at __syncthreads: they must wait at the same one.
void release_syncthreads(Emulator& e, const dim3& block) {
  const Fiber& first = e.fibers.front();
  for (const Fiber& f : e.fibers) {
    if (f.wait_line != first.wait_line || std::strcmp(f.wait_file, first.wait_file) != 0) {
      throw std::runtime_error(where(e, block) + ": threads wait at different __syncthreads: " + thread_name(first) +
                               " at " + first.wait_file + ":" + std::to_string(first.wait_line) + ", " +
                               thread_name(f) + " at " + f.wait_file + ":" + std::to_string(f.wait_line));
    }
  }
  std::vector<int> all(e.fibers.size());
  std::iota(all.begin(), all.end(), 0);
  for (Fiber& f : e.fibers) f.state = State::runnable;
  e.at_syncthreads = 0;
  if (detail::observer) detail::observer->barrier();
  shuffle_into_runnable(e, std::move(all));
}

void run_block(Emulator& e, const LaunchConfig& config, const uint3& block, uint64_t linear) {
  const dim3 bd = config.block;
  const int n = static_cast<int>(bd.x * bd.y * bd.z);
  e.fibers.resize(n);
  e.warps.assign((n + kWarp - 1) / kWarp, WarpScratch{});
  e.runnable.clear();
  e.exited = e.at_syncthreads = 0;
  e.fiber_error = nullptr;
  // Shared memory holds nothing a block can rely on: 0xff bytes are NaN in every float type.
  if (e.dynamic_smem) std::memset(e.dynamic_smem.get(), 0xff, e.dynamic_smem_bytes);
  for (const auto& [p, bytes] : e.shared_arrays) std::memset(p, 0xff, bytes);
  for (int i = 0; i < n; ++i) {
    Fiber& f = e.fibers[i];
    const unsigned u = static_cast<unsigned>(i);
    f.vars = ThreadContext{uint3{u % bd.x, u / bd.x % bd.y, u / (bd.x * bd.y)}, block, bd, config.grid};
    f.state = State::runnable;
    f.open_copies.clear();
    f.committed_copies.clear();
    getcontext(&f.context);
    f.context.uc_stack.ss_sp = e.stacks.get(i);
    f.context.uc_stack.ss_size = kStackBytes;
    f.context.uc_link = &e.scheduler;
    makecontext(&f.context, fiber_main, 0);
  }
  std::vector<int> all(n);
  std::iota(all.begin(), all.end(), 0);
  shuffle_into_runnable(e, std::move(all));
  Observer* const observer = detail::observer;
  if (observer) observer->block_begin(linear, n, e.fibers.data(), n * sizeof(Fiber));
  for (;;) {
    while (!e.runnable.empty()) {
      e.running = e.runnable.back();
      e.runnable.pop_back();
      detail::current = &e.fibers[e.running].vars;
      if (observer) observer->resume(e.running, e.stacks.get(e.running), kStackBytes);
      e.in_fiber = 1;
      swapcontext(&e.scheduler, &e.fibers[e.running].context);
      e.in_fiber = 0;
      detail::in_kernel = false;
      if (e.fault_signal != 0) {
        std::ostringstream s;
        s << where(e, block) << ", " << thread_name(e.fibers[e.running]) << ": memory fault ("
          << (e.fault_signal == SIGBUS ? "SIGBUS" : "SIGSEGV") << ") at address " << e.fault_address
          << " (on a GPU: an illegal or misaligned address; a 16-byte vector access at an address that "
             "is not a multiple of 16 faults here too; or this thread's stack overflowed)";
        e.fault_signal = 0;
        throw std::runtime_error(s.str());
      }
      if (e.fiber_error) {
        try {
          std::rethrow_exception(e.fiber_error);
        } catch (const std::exception& ex) {
          throw std::runtime_error(where(e, block) + ", " + ex.what());
        }
      }
    }
    if (e.exited == n) {
      if (observer) observer->block_end();
      return;
    }
    if (e.at_syncthreads == n) {
      release_syncthreads(e, block);
    } else {
      throw std::runtime_error(where(e, block) + ": " + describe_deadlock(e));
    }
  }
}

std::string invalid_configuration(const LaunchConfig& c) {
  const uint64_t threads = uint64_t{c.block.x} * c.block.y * c.block.z;
  if (c.block.x == 0 || c.block.y == 0 || c.block.z == 0) return "a block dimension is 0";
  if (c.block.x > 1024 || c.block.y > 1024 || c.block.z > 64 || threads > 1024)
    return "more than 1024 threads per block (or x, y > 1024, z > 64)";
  if (c.grid.x == 0 || c.grid.y == 0 || c.grid.z == 0) return "a grid dimension is 0";
  if (c.grid.x > 0x7fffffffu || c.grid.y > 65535 || c.grid.z > 65535)
    return "grid too large (x < 2^31, y and z <= 65535)";
  if (c.dynamic_smem > 227 * 1024) return "more dynamic shared memory than any GPU has (227 KiB)";
  return {};
}

// Returns once all 32 lanes of the calling fiber's warp have called this, with the same `op`.
void warp_sync(Emulator& e, const char* op) {
  const int warp = e.running / kWarp, lane0 = warp * kWarp;
  if (lane0 + kWarp > static_cast<int>(e.fibers.size()))
    throw std::runtime_error(std::string(op) + " in a partial warp (the block size is not a multiple of 32)");
  WarpScratch& w = e.warps[warp];
  Fiber& self = e.fibers[e.running];
  self.state = State::at_warp_op;
  self.wait_file = op;
  self.wait_line = 0;
  if (++w.arrived == kWarp) {
    std::vector<int> lanes(kWarp);
    for (int l = 0; l < kWarp; ++l) {
      Fiber& f = e.fibers[lane0 + l];
      if (std::strcmp(f.wait_file, op) != 0)
        throw std::runtime_error("the lanes of warp " + std::to_string(warp) + " run different warp operations: " + op +
                                 " and " + f.wait_file);
      f.state = State::runnable;
      lanes[l] = lane0 + l;
    }
    w.arrived = 0;
    shuffle_into_runnable(e, std::move(lanes));
    if (detail::observer) detail::observer->warp_collective(warp);
  }
  yield_to_scheduler(e);
}

template <int NUM, bool TRANS = false>
void ldmatrix(uint32_t (&r)[NUM], const void* row, const char* op, const char* op_end, const void* pc) {
  Emulator& e = emu();
  const int lane = e.running % kWarp;
  WarpScratch& w = e.warps[e.running / kWarp];
  // Lanes 0-7 give the row addresses of the first 8 x 8 matrix, 8-15 of the second, and so on
  // (the other lanes' addresses are unused); each row is 16 bytes, naturally aligned.
  if (lane < 8 * NUM) {
    if (reinterpret_cast<uintptr_t>(row) % 16 != 0)
      throw std::runtime_error(std::string(op) + ": lane " + std::to_string(lane) +
                               "'s row address is not 16-byte aligned");
    w.rows[lane] = row;
  }
  warp_sync(e, op);
  if (lane == 0 && detail::observer) detail::observer->ldmatrix(pc, w.rows, NUM);
  // A group of four consecutive lanes loads a row: lane l gets row l / 4, elements 2 (l % 4) and
  // 2 (l % 4) + 1 (the lower-indexed one in the low half); register i holds matrix i. TRANS: the
  // matrix transposed, lane l gets element l / 4 of rows 2 (l % 4) and 2 (l % 4) + 1.
  for (int i = 0; i < NUM; ++i) {
    uint16_t lo, hi;
    if constexpr (TRANS) {
      const auto* even = static_cast<const unsigned char*>(w.rows[i * 8 + 2 * (lane % 4)]);
      const auto* odd = static_cast<const unsigned char*>(w.rows[i * 8 + 2 * (lane % 4) + 1]);
      std::memcpy(&lo, even + 2 * (lane / 4), 2);
      std::memcpy(&hi, odd + 2 * (lane / 4), 2);
    } else {
      const unsigned char* p = static_cast<const unsigned char*>(w.rows[i * 8 + lane / 4]) + 4 * (lane % 4);
      std::memcpy(&lo, p, 2);
      std::memcpy(&hi, p + 2, 2);
    }
    r[i] = lo | static_cast<uint32_t>(hi) << 16;
  }
  warp_sync(e, op_end);
}

// Element i of a fragment held in 16-bit pairs: a(2j) in the low half of register j, a(2j+1) high.
uint16_t element(const uint32_t* regs, int i) {
  return static_cast<uint16_t>(i % 2 == 0 ? regs[i / 2] & 0xffff : regs[i / 2] >> 16);
}

float to_float(uint16_t bits, bool bf16) {
  return bf16 ? static_cast<float>(c10::BFloat16(bits, c10::BFloat16::from_bits()))
              : static_cast<float>(c10::Half(bits, c10::Half::from_bits()));
}

}  // namespace

void run(const Site& site, const LaunchConfig& config, const std::function<void()>& thread_body) {
  Emulator& e = emu();
  const std::lock_guard<std::mutex> lock(e.mutex);
  if (const std::string bad = invalid_configuration(config); !bad.empty()) {
    if (e.launch_error.empty()) {
      e.launch_error = "kernel " + std::string(site.kernel) + " (launched at " + site.file + ":" +
                       std::to_string(site.line) + "): invalid configuration: " + bad;
    }
    return;
  }
  e.site = &site;
  e.body = &thread_body;
  e.dynamic_smem.reset(config.dynamic_smem > 0 ? static_cast<unsigned char*>(
                                                     std::aligned_alloc(128, (config.dynamic_smem + 127) / 128 * 128))
                                               : nullptr);
  e.dynamic_smem_bytes = config.dynamic_smem;
  struct Reset {  // whatever happens, no fiber's variables stay visible, and the observer hears the end
    ~Reset() {
      detail::current = nullptr;
      if (detail::observer) detail::observer->launch_end();
    }
  } reset;
  const FaultHandler fault_handler;
  const uint64_t gx = config.grid.x, gy = config.grid.y, blocks = gx * gy * config.grid.z;
  // The sampled runs [begin, begin + length): one in each share of the grid, placed in it by a
  // golden-ratio sequence, so that the samples do not all fall on one column of the grid (evenly
  // spaced ones would where the share is a multiple of gridDim.x: always the same edge tile).
  const uint64_t runs = static_cast<uint64_t>(e.sample_runs), length = static_cast<uint64_t>(e.sample_length);
  const bool sampled = runs > 0 && runs * length < blocks;
  const uint64_t num_runs = sampled ? runs : 1, run_length = sampled ? length : blocks;
  if (detail::observer) {
    detail::observer->launch_begin(site, config, blocks, num_runs * run_length);
    for (const auto& [p, bytes] : e.shared_arrays) detail::observer->shared_memory(p, bytes);
    if (e.dynamic_smem) detail::observer->shared_memory(e.dynamic_smem.get(), e.dynamic_smem_bytes);
  }
  for (uint64_t r = 0; r < num_runs; ++r) {
    const double phase = std::fmod(static_cast<double>(r + 1) * 0.6180339887498949, 1.0);
    const uint64_t begin =
        sampled ? r * blocks / runs + static_cast<uint64_t>(phase * static_cast<double>(blocks / runs - length + 1))
                : 0;
    for (uint64_t i = begin; i < begin + run_length; ++i) {
      const uint3 block{static_cast<unsigned>(i % gx), static_cast<unsigned>(i / gx % gy),
                        static_cast<unsigned>(i / (gx * gy))};
      run_block(e, config, block, i);
    }
  }
}

void trap(const char* file, int line) {
  throw std::runtime_error("__trap() at " + std::string(file) + ":" + std::to_string(line));
}

void syncthreads(const char* file, int line) {
  const EmulatorCode emulator;
  Emulator& e = emu();
  Fiber& f = e.fibers[e.running];
  f.state = State::at_syncthreads;
  f.wait_file = file;
  f.wait_line = line;
  ++e.at_syncthreads;
  yield_to_scheduler(e);
}

void register_shared_bytes(void* p, size_t bytes) {
  const EmulatorCode emulator;
  emu().shared_arrays.emplace(p, bytes);
  if (detail::observer) detail::observer->shared_memory(p, bytes);
  std::memset(p, 0xff, bytes);
}

SharedArray::SharedArray(void* p, size_t bytes) { register_shared_bytes(p, bytes); }

unsigned char* dynamic_smem() {
  const EmulatorCode emulator;
  return emu().dynamic_smem.get();  // null for a launch without any, where a GPU's has 0 bytes
}

void ldmatrix_x4(uint32_t (&r)[4], const void* row) {
  const EmulatorCode emulator;
  ldmatrix<4>(r, row, "ldmatrix.x4", "ldmatrix.x4 (end)", __builtin_return_address(0));
}

void ldmatrix_x2(uint32_t (&r)[2], const void* row) {
  const EmulatorCode emulator;
  ldmatrix<2>(r, row, "ldmatrix.x2", "ldmatrix.x2 (end)", __builtin_return_address(0));
}

void ldmatrix_x4_trans(uint32_t (&r)[4], const void* row) {
  const EmulatorCode emulator;
  ldmatrix<4, true>(r, row, "ldmatrix.x4.trans", "ldmatrix.x4.trans (end)", __builtin_return_address(0));
}

void ldmatrix_x2_trans(uint32_t (&r)[2], const void* row) {
  const EmulatorCode emulator;
  ldmatrix<2, true>(r, row, "ldmatrix.x2.trans", "ldmatrix.x2.trans (end)", __builtin_return_address(0));
}

void mma_16816(bool bf16, float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  const EmulatorCode emulator;
  Emulator& e = emu();
  const int lane = e.running % kWarp;
  WarpScratch& w = e.warps[e.running / kWarp];
  std::copy(a, a + 4, w.a[lane]);
  std::copy(b, b + 2, w.b[lane]);
  w.decoded = false;
  const char* op = bf16 ? "mma.m16n8k16.bf16" : "mma.m16n8k16.f16";
  warp_sync(e, op);
  if (lane == 0 && detail::observer) detail::observer->mma(e.running / kWarp);
  if (!w.decoded) {  // the first lane to resume assembles A (16 x 16) and B (16 x 8) for all
    for (int l = 0; l < kWarp; ++l) {
      const int g = l >> 2, t = l % 4;  // groupID, threadID_in_group
      for (int i = 0; i < 8; ++i) {
        const int row = g + ((i >> 1) & 1) * 8;  // g for a0, a1, a4, a5; g + 8 otherwise
        const int col = t * 2 + (i & 1) + (i >= 4 ? 8 : 0);
        w.A[row][col] = to_float(element(w.a[l], i), bf16);
      }
      for (int i = 0; i < 4; ++i) {
        const int row = t * 2 + (i & 1) + (i >= 2 ? 8 : 0);
        w.B[row][g] = to_float(element(w.b[l], i), bf16);
      }
    }
    w.decoded = true;
  }
  // This lane's accumulators: c0, c1 at row g, columns 2t, 2t + 1; c2, c3 at row g + 8. The
  // products of 16-bit values are exact in float; the sums are in float.
  const int g = lane >> 2, t = lane % 4;
  for (int i = 0; i < 4; ++i) {
    const int row = g + (i >= 2 ? 8 : 0), col = t * 2 + (i & 1);
    float d = c[i];
    for (int k = 0; k < 16; ++k) d += w.A[row][k] * w.B[k][col];
    c[i] = d;
  }
  warp_sync(e, bf16 ? "mma.m16n8k16.bf16 (end)" : "mma.m16n8k16.f16 (end)");
}

// cp.async: the copies happen as late as CUDA allows, when a wait_group needs them, so that shared
// memory read before the wait still holds the poison (or the previous tile); __syncthreads does not
// complete them, as on a GPU.
void cp_async_16(void* smem, const void* global) {
  const EmulatorCode emulator;
  Emulator& e = emu();
  if (reinterpret_cast<uintptr_t>(smem) % 16 != 0 || reinterpret_cast<uintptr_t>(global) % 16 != 0)
    throw std::runtime_error("cp.async of 16 bytes with an address that is not a multiple of 16");
  e.fibers[e.running].open_copies.emplace_back(smem, global);
  if (detail::observer) detail::observer->cp_async(__builtin_return_address(0), smem, global);
}

void cp_async_commit() {
  const EmulatorCode emulator;
  Fiber& f = emu().fibers[emu().running];
  f.committed_copies.push_back(std::move(f.open_copies));
  f.open_copies.clear();
}

void cp_async_wait(int pending) {
  const EmulatorCode emulator;
  Fiber& f = emu().fibers[emu().running];
  while (static_cast<int>(f.committed_copies.size()) > pending) {
    for (const auto& [dst, src] : f.committed_copies.front()) std::memcpy(dst, src, 16);
    f.committed_copies.pop_front();
  }
}

void check_launch(const char* file, int line) {
  Emulator& e = emu();
  const std::lock_guard<std::mutex> lock(e.mutex);
  if (e.launch_error.empty()) return;
  const std::string error = std::move(e.launch_error);
  e.launch_error.clear();
  throw std::runtime_error("CUDA launch error (checked at " + std::string(file) + ":" + std::to_string(line) +
                           "): " + error);
}

std::string take_unchecked_launch_error() {
  Emulator& e = emu();
  const std::lock_guard<std::mutex> lock(e.mutex);
  std::string error = std::move(e.launch_error);
  e.launch_error.clear();
  return error;
}

void set_block_sample(int64_t runs, int64_t run_length) {
  Emulator& e = emu();
  const std::lock_guard<std::mutex> lock(e.mutex);
  if (runs < 0 || run_length < 1) throw std::invalid_argument("set_block_sample: runs >= 0 and run_length >= 1");
  e.sample_runs = runs;
  e.sample_length = run_length;
}

void set_schedule_seed(uint64_t seed) {
  Emulator& e = emu();
  const std::lock_guard<std::mutex> lock(e.mutex);
  e.rng.seed(seed);
}

}  // namespace xsep_emu
