// The memory counters (see counters.h), compiled only into the xsep_emu_counters build.
//
// Seeing the accesses: that build compiles every file with gcc's -fsanitize=thread, which puts a call
// to __tsan_readN / __tsan_writeN(address) before each memory access; this file defines those
// functions itself (no sanitizer runtime is linked). Of the calls, it keeps those made by kernel code
// (xsep_emu::detail::in_kernel: not the scheduler, not an emulator call such as __syncthreads, not
// the host code) to a kernel's data: shared memory (the __shared__ arrays and the dynamic shared
// memory, as the emulator registers them) or global memory (everything else but the running
// thread's stack, the calling thread's stack, where the launch's arguments are, and the threads'
// built-in variables). cp.async, ldmatrix and mma.sync are emulator calls, which report themselves.
//
// Requests: a block's threads run one at a time between barriers and warp-collective operations (a
// segment); the k-th execution of one access (one call site) by each lane of a warp within a segment
// is taken as one warp-level instruction, a request. That holds where the lanes of a warp take the
// same path, as the kernels' hot loops do. Where lanes diverge (a lane skips a loop iteration the
// others run, by `continue` on a per-lane condition, or a loop's trip count differs per lane), the
// k-th executions of different lanes come from different iterations and are counted as one request:
// that site's sectors and wavefronts per request can then be wrong either way.
//
// Widths are those g++ compiled (a 16-byte vector copy is one 16-byte access); nvcc may split what
// the source does in one access: the kernel report's SASS widths (python -m xsep kernels) say what a
// GPU executes.
#include "counters.h"

#include <dlfcn.h>
#include <pthread.h>

#include <algorithm>
#include <array>
#include <map>
#include <sstream>
#include <stdexcept>
#include <unordered_map>
#include <utility>
#include <vector>

#include "cuda_emu.h"

// Code the instrumentation must not reach (the hooks themselves, and what they call).
#define XSEP_NOT_COUNTED __attribute__((no_sanitize("thread")))

namespace xsep_emu {
namespace {

constexpr int kWarp = 32, kBanks = 32;
constexpr uintptr_t kSector = 32, kWavefrontBytes = 128;  // a wavefront: one 4-byte word per bank

enum Kind : uint8_t { kGlobalLoad, kGlobalStore, kSharedLoad, kSharedStore, kLdmatrix, kCpAsync, kKinds };
constexpr const char* kKindNames[kKinds] = {"global_load",  "global_store", "shared_load",
                                            "shared_store", "ldmatrix",     "cp_async"};

// Counts of one kind of access (or of one call site): requests (warp-level instructions), the lanes
// in them and the bytes they asked for; global memory: the 32-byte sectors touched and the fewest
// that could hold each request's distinct bytes; shared memory: wavefronts and their fewest.
struct Counts {
  uint64_t requests = 0, lanes = 0, bytes = 0, sectors = 0, ideal_sectors = 0, wavefronts = 0, ideal_wavefronts = 0;

  void add(const Counts& o) {
    requests += o.requests, lanes += o.lanes, bytes += o.bytes, sectors += o.sectors;
    ideal_sectors += o.ideal_sectors, wavefronts += o.wavefronts, ideal_wavefronts += o.ideal_wavefronts;
  }
};

// One lane's access, kept until its segment ends. cp.async: `addr` the global source, `shared` the
// destination.
struct Access {
  const void* pc;
  uint32_t occurrence;  // this lane's how-many-th execution of pc in the segment
  uint8_t lane;
  Kind kind;
  uint16_t size;
  uintptr_t addr, shared;
};

struct Span {
  uintptr_t begin, bytes;
  bool holds(uintptr_t a) const { return a - begin < bytes; }
};

// Global memory: the sectors a request touches, and the fewest that could hold its distinct bytes.
XSEP_NOT_COUNTED void count_global(std::vector<Span>& spans, Counts& c) {
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) { return a.begin < b.begin; });
  uintptr_t unique = 0, end = 0, last_sector = ~uintptr_t{0};
  for (const Span& s : spans) {
    const uintptr_t from = std::max(s.begin, end), to = s.begin + s.bytes;
    if (to <= from) continue;
    unique += to - from;
    end = to;
    const uintptr_t first = from / kSector, last = (to - 1) / kSector;
    c.sectors += last - first + 1 - (first == last_sector ? 1 : 0);
    last_sector = last;
  }
  c.ideal_sectors += (unique + kSector - 1) / kSector;
}

// Shared memory: 32 banks of 4 bytes; a wavefront serves one word per bank, and lanes asking for the
// same word share it. Accesses of 8 and 16 bytes go in phases of 16 and 8 (half and quarter warps):
// taken here over the distinct addresses in lane order, so that lanes reading one vector are served
// together (a broadcast of a 16-byte vector to a whole warp: one wavefront). Each phase takes as many
// wavefronts as the most distinct words any one bank holds. Ideal: the request's distinct words,
// 32 to a wavefront.
XSEP_NOT_COUNTED void count_shared(std::vector<Span>& spans, Counts& c) {
  std::vector<Span> distinct;
  uintptr_t widest = 0;
  for (const Span& s : spans) {
    widest = std::max(widest, s.bytes);
    if (std::none_of(distinct.begin(), distinct.end(),
                     [&](const Span& d) { return d.begin == s.begin && d.bytes == s.bytes; }))
      distinct.push_back(s);
  }
  const size_t phase = widest <= 4 ? kWarp : kWavefrontBytes / widest;
  std::vector<uintptr_t> all_words, words;
  for (size_t p0 = 0; p0 < distinct.size(); p0 += phase) {
    words.clear();
    for (size_t i = p0; i < std::min(distinct.size(), p0 + phase); ++i)
      for (uintptr_t w = distinct[i].begin / 4; w <= (distinct[i].begin + distinct[i].bytes - 1) / 4; ++w)
        words.push_back(w);
    std::sort(words.begin(), words.end());
    words.erase(std::unique(words.begin(), words.end()), words.end());
    std::array<int, kBanks> per_bank{};
    int most = 0;
    for (const uintptr_t w : words) most = std::max(most, ++per_bank[w % kBanks]);
    c.wavefronts += most;
    all_words.insert(all_words.end(), words.begin(), words.end());
  }
  std::sort(all_words.begin(), all_words.end());
  const auto unique = static_cast<uint64_t>(std::unique(all_words.begin(), all_words.end()) - all_words.begin());
  c.ideal_wavefronts += std::max<uint64_t>(1, (unique * 4 + kWavefrontBytes - 1) / kWavefrontBytes);
}

class Counter final : public Observer {
 public:
  // The running thread's access from kernel code (the hooks' only way in).
  XSEP_NOT_COUNTED void access(const void* pc, uintptr_t a, uint16_t size, bool write) {
    if (stack_.holds(a) || caller_stack_.holds(a) || vars_.holds(a) || a == current_ || a == in_kernel_) return;
    const bool shared = std::any_of(shared_.begin(), shared_.end(), [&](const Span& s) { return s.holds(a); });
    if (!shared) distinct(write ? run_writes_ : run_reads_, a, size);
    push(pc, shared ? (write ? kSharedStore : kSharedLoad) : (write ? kGlobalStore : kGlobalLoad), a, size, 0);
  }

  std::string json() const { return "[" + launches_.str() + "]"; }

  void launch_begin(const Site& site, const LaunchConfig& config, uint64_t blocks, uint64_t blocks_run) override {
    site_ = site;
    config_ = config;
    blocks_ = blocks;
    blocks_run_ = blocks_run;
    runs_ = 0;
    last_block_ = ~uint64_t{0};
    shared_.clear();
    for (Counts& c : totals_) c = Counts{};
    sites_.clear();
    distinct_ = {};
    mma_ = 0;
    // The launch's arguments stay on the caller's stack while it runs (Launch::operator()).
    pthread_attr_t attr;
    void* stack = nullptr;
    size_t bytes = 0;
    if (pthread_getattr_np(pthread_self(), &attr) == 0) {
      pthread_attr_getstack(&attr, &stack, &bytes);
      pthread_attr_destroy(&attr);
    }
    caller_stack_ = {reinterpret_cast<uintptr_t>(stack), bytes};
  }

  void launch_end() override {
    end_run();
    std::ostringstream s;
    if (launches_.tellp() > 0) s << ",\n";
    s << "{\"kernel\": \"" << escaped(site_.kernel) << "\", \"file\": \"" << escaped(site_.file)
      << "\", \"line\": " << site_.line << ", \"grid\": [" << config_.grid.x << ", " << config_.grid.y << ", "
      << config_.grid.z << "], \"block\": [" << config_.block.x << ", " << config_.block.y << ", " << config_.block.z
      << "], \"dynamic_smem\": " << config_.dynamic_smem << ", \"blocks\": " << blocks_
      << ", \"blocks_run\": " << blocks_run_ << ", \"runs\": " << runs_ << ", \"mma\": " << mma_
      << ", \"distinct\": {\"read_bytes\": " << distinct_[0] << ", \"read_sectors\": " << distinct_[1]
      << ", \"write_bytes\": " << distinct_[2] << ", \"write_sectors\": " << distinct_[3] << "}, \"counts\": {";
    for (int k = 0; k < kKinds; ++k) s << (k ? ", " : "") << "\"" << kKindNames[k] << "\": " << counts(totals_[k]);
    // Call sites as offsets in the library (the kernels are all in this one), for addr2line.
    Dl_info info{};
    const uintptr_t base =
        dladdr(reinterpret_cast<const void*>(&counters_start), &info) ? reinterpret_cast<uintptr_t>(info.dli_fbase) : 0;
    s << "}, \"library\": \"" << escaped(info.dli_fname ? info.dli_fname : "")
      << "\", \"function\": " << reinterpret_cast<uintptr_t>(site_.function) - base << ", \"sites\": [";
    bool first = true;
    for (const auto& [key, c] : sites_) {
      const uintptr_t pc = reinterpret_cast<uintptr_t>(key.first);
      s << (first ? "" : ", ") << "{\"pc\": " << pc - base << ", \"kind\": \"" << kKindNames[key.second]
        << "\", \"counts\": " << counts(c) << "}";
      first = false;
    }
    s << "]}";
    launches_ << s.str();
  }

  void shared_memory(const void* p, size_t bytes) override {
    shared_.push_back({reinterpret_cast<uintptr_t>(p), bytes});
  }

  void block_begin(uint64_t linear, int threads, const void* vars, size_t bytes) override {
    if (runs_ == 0 || linear != last_block_ + 1) {  // a new run of consecutive blocks
      end_run();
      ++runs_;
    }
    last_block_ = linear;
    vars_ = {reinterpret_cast<uintptr_t>(vars), bytes};
    current_ = reinterpret_cast<uintptr_t>(&detail::current);
    in_kernel_ = reinterpret_cast<uintptr_t>(&detail::in_kernel);
    warps_.assign((threads + kWarp - 1) / kWarp, Warp{});
  }

  void block_end() override { barrier(); }

  void resume(int thread, const void* stack, size_t bytes) override {
    thread_ = thread;
    stack_ = {reinterpret_cast<uintptr_t>(stack), bytes};
  }

  void barrier() override {
    for (size_t w = 0; w < warps_.size(); ++w) warp_collective(static_cast<int>(w));
  }

  // The segment of `warp` ends: its accesses, grouped by (call site, occurrence), are its requests.
  XSEP_NOT_COUNTED void warp_collective(int warp) override {
    std::vector<Access>& accesses = warps_[warp].accesses;
    std::sort(accesses.begin(), accesses.end(), [](const Access& a, const Access& b) {
      return std::tie(a.pc, a.kind, a.occurrence, a.lane) < std::tie(b.pc, b.kind, b.occurrence, b.lane);
    });
    std::vector<Span> spans, shared_spans;
    for (size_t i = 0; i < accesses.size();) {
      const Access& first = accesses[i];
      Counts c{};
      c.requests = 1;
      spans.clear();
      shared_spans.clear();
      for (; i < accesses.size() && accesses[i].pc == first.pc && accesses[i].kind == first.kind &&
             accesses[i].occurrence == first.occurrence;
           ++i) {
        ++c.lanes;
        c.bytes += accesses[i].size;
        spans.push_back({accesses[i].addr, accesses[i].size});
        if (first.kind == kCpAsync) shared_spans.push_back({accesses[i].shared, accesses[i].size});
      }
      if (first.kind == kSharedLoad || first.kind == kSharedStore) {
        count_shared(spans, c);
      } else {
        count_global(spans, c);
        if (first.kind == kCpAsync) count_shared(shared_spans, c);
      }
      add(first.pc, first.kind, c);
    }
    accesses.clear();
    warps_[warp].occurrences.clear();
  }

  // ldmatrix: each 8 x 8 matrix is a phase of 8 rows of 16 bytes, at best one wavefront.
  XSEP_NOT_COUNTED void ldmatrix(const void* pc, const void* const* rows, int num) override {
    Counts c{};
    c.requests = 1;
    c.lanes = kWarp;
    c.bytes = static_cast<uint64_t>(num) * 8 * 16;
    std::vector<Span> spans;
    for (int m = 0; m < num; ++m) {
      spans.clear();
      for (int r = 0; r < 8; ++r) spans.push_back({reinterpret_cast<uintptr_t>(rows[m * 8 + r]), 16});
      Counts phase{};
      count_shared(spans, phase);
      c.wavefronts += phase.wavefronts;
      c.ideal_wavefronts += 1;
    }
    add(pc, kLdmatrix, c);
  }

  void mma(int) override { ++mma_; }

  XSEP_NOT_COUNTED void cp_async(const void* pc, const void* smem, const void* global) override {
    const auto a = reinterpret_cast<uintptr_t>(global);
    distinct(run_reads_, a, 16);
    push(pc, kCpAsync, a, 16, reinterpret_cast<uintptr_t>(smem));
  }

 private:
  struct Warp {
    std::vector<Access> accesses;
    std::unordered_map<const void*, std::array<uint32_t, kWarp>> occurrences;  // per call site, per lane
  };

  XSEP_NOT_COUNTED void push(const void* pc, Kind kind, uintptr_t a, uint16_t size, uintptr_t shared) {
    Warp& w = warps_[thread_ / kWarp];
    const int lane = thread_ % kWarp;
    auto [it, fresh] = w.occurrences.try_emplace(pc);
    if (fresh) it->second.fill(0);
    w.accesses.push_back({pc, it->second[lane]++, static_cast<uint8_t>(lane), kind, size, a, shared});
  }

  // The distinct bytes of global memory the run reads or writes: a byte mask per sector.
  XSEP_NOT_COUNTED static void distinct(std::unordered_map<uintptr_t, uint32_t>& masks, uintptr_t a, uint16_t size) {
    for (uintptr_t s = a / kSector; s <= (a + size - 1) / kSector; ++s) {
      const uintptr_t from = std::max(a, s * kSector) - s * kSector, to = std::min(a + size, (s + 1) * kSector);
      const uint64_t bits = ((uint64_t{1} << (to - s * kSector - from)) - 1) << from;
      masks[s] |= static_cast<uint32_t>(bits);
    }
  }

  void end_run() {
    const auto sum = [](std::unordered_map<uintptr_t, uint32_t>& masks, uint64_t& bytes, uint64_t& sectors) {
      for (const auto& [sector, mask] : masks) bytes += static_cast<uint64_t>(__builtin_popcount(mask));
      sectors += masks.size();
      masks.clear();
    };
    sum(run_reads_, distinct_[0], distinct_[1]);
    sum(run_writes_, distinct_[2], distinct_[3]);
  }

  XSEP_NOT_COUNTED void add(const void* pc, Kind kind, const Counts& c) {
    totals_[kind].add(c);
    sites_[{pc, kind}].add(c);
  }

  static std::string counts(const Counts& c) {
    std::ostringstream s;
    s << "{\"requests\": " << c.requests << ", \"lanes\": " << c.lanes << ", \"bytes\": " << c.bytes
      << ", \"sectors\": " << c.sectors << ", \"ideal_sectors\": " << c.ideal_sectors
      << ", \"wavefronts\": " << c.wavefronts << ", \"ideal_wavefronts\": " << c.ideal_wavefronts << "}";
    return s.str();
  }

  static std::string escaped(const std::string& text) {
    std::string out;
    for (const char ch : text) {
      if (ch == '"' || ch == '\\') out += '\\';
      out += ch;
    }
    return out;
  }

  // The launch
  Site site_{};
  LaunchConfig config_{};
  uint64_t blocks_ = 0, blocks_run_ = 0, runs_ = 0, last_block_ = 0, mma_ = 0;
  std::array<Counts, kKinds> totals_;
  std::map<std::pair<const void*, Kind>, Counts> sites_;
  std::array<uint64_t, 4> distinct_{};  // read bytes, read sectors, write bytes, write sectors
  std::unordered_map<uintptr_t, uint32_t> run_reads_, run_writes_;
  // Where things are
  std::vector<Span> shared_;
  Span stack_{}, caller_stack_{}, vars_{};
  uintptr_t current_ = 0, in_kernel_ = 0;  // the emulator's variables kernel code and emulator calls touch
  // The block
  std::vector<Warp> warps_;
  int thread_ = 0;
  std::ostringstream launches_;  // the output
};

Counter* g_counter = nullptr;  // while counting (also detail::observer)

XSEP_NOT_COUNTED inline void hook(const void* pc, const void* p, uint16_t size, bool write) {
  if (!detail::in_kernel || g_counter == nullptr) return;
  detail::in_kernel = false;  // what the counter does is not the kernel's
  g_counter->access(pc, reinterpret_cast<uintptr_t>(p), size, write);
  detail::in_kernel = true;
}

}  // namespace

void counters_start(int64_t runs, int64_t run_length) {
  if (g_counter != nullptr) throw std::runtime_error("xsep_emu: the counters are already counting");
  set_block_sample(runs, run_length);
  g_counter = new Counter();
  detail::observer = g_counter;
}

std::string counters_stop() {
  if (g_counter == nullptr) throw std::runtime_error("xsep_emu: the counters were not started");
  std::string out = g_counter->json();
  detail::observer = nullptr;
  delete g_counter;
  g_counter = nullptr;
  set_block_sample(0, 1);
  return out;
}

}  // namespace xsep_emu

// The instrumentation's entry points (the names and signatures gcc's -fsanitize=thread calls).
#define XSEP_HOOK(name, size, write) \
  extern "C" XSEP_NOT_COUNTED void name(void* p) { xsep_emu::hook(__builtin_return_address(0), p, size, write); }
XSEP_HOOK(__tsan_read1, 1, false)
XSEP_HOOK(__tsan_read2, 2, false)
XSEP_HOOK(__tsan_read4, 4, false)
XSEP_HOOK(__tsan_read8, 8, false)
XSEP_HOOK(__tsan_read16, 16, false)
XSEP_HOOK(__tsan_write1, 1, true)
XSEP_HOOK(__tsan_write2, 2, true)
XSEP_HOOK(__tsan_write4, 4, true)
XSEP_HOOK(__tsan_write8, 8, true)
XSEP_HOOK(__tsan_write16, 16, true)
XSEP_HOOK(__tsan_unaligned_read2, 2, false)
XSEP_HOOK(__tsan_unaligned_read4, 4, false)
XSEP_HOOK(__tsan_unaligned_read8, 8, false)
XSEP_HOOK(__tsan_unaligned_read16, 16, false)
XSEP_HOOK(__tsan_unaligned_write2, 2, true)
XSEP_HOOK(__tsan_unaligned_write4, 4, true)
XSEP_HOOK(__tsan_unaligned_write8, 8, true)
XSEP_HOOK(__tsan_unaligned_write16, 16, true)
#undef XSEP_HOOK

extern "C" {
XSEP_NOT_COUNTED void __tsan_read_range(void* p, unsigned long size) {
  xsep_emu::hook(__builtin_return_address(0), p, static_cast<uint16_t>(std::min(size, 65535ul)), false);
}
XSEP_NOT_COUNTED void __tsan_write_range(void* p, unsigned long size) {
  xsep_emu::hook(__builtin_return_address(0), p, static_cast<uint16_t>(std::min(size, 65535ul)), true);
}
// Nothing to do: no shadow stack, no runtime to start.
XSEP_NOT_COUNTED void __tsan_init() {}
XSEP_NOT_COUNTED void __tsan_func_entry(void*) {}
XSEP_NOT_COUNTED void __tsan_func_exit() {}
XSEP_NOT_COUNTED void __tsan_vptr_update(void**, void*) {}
XSEP_NOT_COUNTED void __tsan_vptr_read(void**) {}
XSEP_NOT_COUNTED void __tsan_atomic_thread_fence(int) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
XSEP_NOT_COUNTED void __tsan_atomic_signal_fence(int) { __atomic_signal_fence(__ATOMIC_SEQ_CST); }
}

// Atomics (the host code's, and static locals' guards; no kernel uses any): performed, not counted,
// sequentially consistent whatever order was asked for.
#define XSEP_ATOMIC_OP(bits, op)                                                                                   \
  extern "C" XSEP_NOT_COUNTED int##bits##_t __tsan_atomic##bits##_##op(volatile int##bits##_t* a, int##bits##_t v, \
                                                                       int) {                                      \
    return __atomic_##op(a, v, __ATOMIC_SEQ_CST);                                                                  \
  }
#define XSEP_ATOMICS(bits)                                                                                             \
  extern "C" XSEP_NOT_COUNTED int##bits##_t __tsan_atomic##bits##_load(const volatile int##bits##_t* a, int) {         \
    return __atomic_load_n(a, __ATOMIC_SEQ_CST);                                                                       \
  }                                                                                                                    \
  extern "C" XSEP_NOT_COUNTED void __tsan_atomic##bits##_store(volatile int##bits##_t* a, int##bits##_t v, int) {      \
    __atomic_store_n(a, v, __ATOMIC_SEQ_CST);                                                                          \
  }                                                                                                                    \
  extern "C" XSEP_NOT_COUNTED int##bits##_t __tsan_atomic##bits##_exchange(volatile int##bits##_t* a, int##bits##_t v, \
                                                                           int) {                                      \
    return __atomic_exchange_n(a, v, __ATOMIC_SEQ_CST);                                                                \
  }                                                                                                                    \
  XSEP_ATOMIC_OP(bits, fetch_add)                                                                                      \
  XSEP_ATOMIC_OP(bits, fetch_sub)                                                                                      \
  XSEP_ATOMIC_OP(bits, fetch_and)                                                                                      \
  XSEP_ATOMIC_OP(bits, fetch_or)                                                                                       \
  XSEP_ATOMIC_OP(bits, fetch_xor)                                                                                      \
  XSEP_ATOMIC_OP(bits, fetch_nand)                                                                                     \
  extern "C" XSEP_NOT_COUNTED int __tsan_atomic##bits##_compare_exchange_strong(                                       \
      volatile int##bits##_t* a, int##bits##_t* expected, int##bits##_t v, int, int) {                                 \
    return __atomic_compare_exchange_n(a, expected, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);                     \
  }                                                                                                                    \
  extern "C" XSEP_NOT_COUNTED int __tsan_atomic##bits##_compare_exchange_weak(                                         \
      volatile int##bits##_t* a, int##bits##_t* expected, int##bits##_t v, int, int) {                                 \
    return __atomic_compare_exchange_n(a, expected, v, true, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);                      \
  }                                                                                                                    \
  extern "C" XSEP_NOT_COUNTED int##bits##_t __tsan_atomic##bits##_compare_exchange_val(                                \
      volatile int##bits##_t* a, int##bits##_t expected, int##bits##_t v, int, int) {                                  \
    __atomic_compare_exchange_n(a, &expected, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);                           \
    return expected;                                                                                                   \
  }
XSEP_ATOMICS(8)
XSEP_ATOMICS(16)
XSEP_ATOMICS(32)
XSEP_ATOMICS(64)
#undef XSEP_ATOMICS
#undef XSEP_ATOMIC_OP
