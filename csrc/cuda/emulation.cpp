// The scheduler behind cuda/emulation.h: every CUDA thread of a block is a ucontext fiber on
// its own stack; the block's threads run in index order, each until it waits at a barrier or
// returns, and a barrier opens when every live thread of its scope (block or warp) waits there.
#include "cuda/emulation.h"

#include <sys/mman.h>
#include <ucontext.h>

#include <stdexcept>
#include <string>
#include <vector>

namespace summit {
namespace emulation {
namespace {

constexpr size_t kStackBytes = 256 * 1024;  // per CUDA thread, mapped lazily (pages touched only)
constexpr size_t kGuardBytes = 4096;        // a stack overflow faults instead of corrupting memory
constexpr unsigned kMaxThreads = 1024;      // CUDA's limit per block

enum class Wait { none, block_barrier, warp_barrier, returned };

struct Fiber {
  ucontext_t context;
  ThreadIndex index;
  Wait wait = Wait::none;
  unsigned mask = 0;   // the mask of the warp operation it waits in
  uint64_t value = 0;  // what it published there
};

class Stack {
 public:
  Stack() {
    base_ = mmap(nullptr, kStackBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base_ == MAP_FAILED) throw std::runtime_error("CUDA emulation: cannot map a thread stack");
    mprotect(base_, kGuardBytes, PROT_NONE);
  }
  Stack(Stack&& other) noexcept : base_(other.base_) { other.base_ = nullptr; }
  Stack(const Stack&) = delete;
  ~Stack() {
    if (base_) munmap(base_, kStackBytes);
  }
  void* base() const { return base_; }

 private:
  void* base_ = nullptr;
};

struct Block {
  std::vector<Fiber> fibers;
  ucontext_t scheduler;
  const std::function<void()>* kernel = nullptr;
  Fiber* current = nullptr;
};

thread_local Block* running = nullptr;
thread_local std::vector<Stack> stacks;  // reused by every launch on this OS thread

std::string block_name(const Block& b) {
  const dim3& i = b.fibers.front().index.block_idx;
  return "block (" + std::to_string(i.x) + ", " + std::to_string(i.y) + ", " + std::to_string(i.z) + ")";
}

void enter() {
  (*running->kernel)();
  running->current->wait = Wait::returned;  // then uc_link resumes the scheduler
}

Fiber& current_fiber() {
  if (!running || !running->current) throw std::logic_error("CUDA emulation: a CUDA builtin was used outside a kernel");
  return *running->current;
}

void suspend(Wait wait) {
  Fiber& f = current_fiber();
  f.wait = wait;
  swapcontext(&f.context, &running->scheduler);
}

unsigned warp_base(const Fiber& f) { return f.index.linear / warpSize * warpSize; }

unsigned lanes_where(const Block& b, unsigned base, bool (*test)(const Fiber&)) {
  unsigned lanes = 0;
  for (unsigned lane = 0; lane < static_cast<unsigned>(warpSize) && base + lane < b.fibers.size(); ++lane)
    if (test(b.fibers[base + lane])) lanes |= 1u << lane;
  return lanes;
}

bool is_live(const Fiber& f) { return f.wait != Wait::returned; }
bool at_warp_barrier(const Fiber& f) { return f.wait == Wait::warp_barrier; }
bool at_block_barrier(const Fiber& f) { return f.wait == Wait::block_barrier; }

// Opens every warp barrier that all live lanes of its warp wait at; true if any opened.
bool open_warp_barriers(Block& b) {
  bool opened = false;
  for (unsigned base = 0; base < b.fibers.size(); base += warpSize) {
    const unsigned live = lanes_where(b, base, is_live);
    if (!live || lanes_where(b, base, at_warp_barrier) != live) continue;
    for (unsigned lane = 0; lane < static_cast<unsigned>(warpSize); ++lane) {
      if (!(live >> lane & 1u)) continue;
      Fiber& f = b.fibers[base + lane];
      if ((f.mask & live) != live)
        throw std::runtime_error("CUDA emulation: " + block_name(b) + ", warp " + std::to_string(base / warpSize) +
                                 ": a warp operation with mask " + std::to_string(f.mask) +
                                 " leaves out live lanes (live: " + std::to_string(live) + ")");
      f.wait = Wait::none;
    }
    opened = true;
  }
  return opened;
}

void run_block(Block& b) {
  for (;;) {
    for (Fiber& f : b.fibers) {
      if (f.wait != Wait::none) continue;
      b.current = &f;
      swapcontext(&b.scheduler, &f.context);
    }
    b.current = nullptr;
    size_t live = 0, waiting_block = 0;
    for (const Fiber& f : b.fibers) {
      live += is_live(f);
      waiting_block += at_block_barrier(f);
    }
    if (live == 0) return;
    if (open_warp_barriers(b)) continue;
    if (waiting_block != live)
      throw std::runtime_error("CUDA emulation: " + block_name(b) + " deadlocks: " + std::to_string(waiting_block) +
                               " of " + std::to_string(live) +
                               " live threads wait at __syncthreads, the others at a warp operation");
    for (Fiber& f : b.fibers)
      if (is_live(f)) f.wait = Wait::none;
  }
}

struct Running {  // the launch's block is what the builtins see, until the launch ends or throws
  explicit Running(Block* b) {
    if (running) throw std::logic_error("CUDA emulation: a kernel cannot launch another kernel");
    running = b;
  }
  ~Running() { running = nullptr; }
};

}  // namespace

const ThreadIndex& this_thread() { return current_fiber().index; }

void block_barrier() { suspend(Wait::block_barrier); }

unsigned live_lanes() {
  const Fiber& f = current_fiber();
  return lanes_where(*running, warp_base(f), is_live);
}

uint64_t warp_exchange(unsigned mask, uint64_t value, unsigned source_lane) {
  Fiber& f = current_fiber();
  f.value = value;
  f.mask = mask;
  suspend(Wait::warp_barrier);
  const unsigned base = warp_base(f);
  if (base + source_lane >= running->fibers.size() || !is_live(running->fibers[base + source_lane]))
    throw std::runtime_error("CUDA emulation: a shuffle reads lane " + std::to_string(source_lane) +
                             ", which does not exist or has returned");
  const uint64_t got = running->fibers[base + source_lane].value;
  suspend(Wait::warp_barrier);  // every lane reads before any publishes again
  return got;
}

unsigned warp_ballot(unsigned mask, bool predicate) {
  Fiber& f = current_fiber();
  f.value = predicate;
  f.mask = mask;
  suspend(Wait::warp_barrier);
  const unsigned base = warp_base(f);
  unsigned bits = 0;
  for (unsigned lane = 0; lane < static_cast<unsigned>(warpSize) && base + lane < running->fibers.size(); ++lane)
    if ((mask >> lane & 1u) && is_live(running->fibers[base + lane]) && running->fibers[base + lane].value)
      bits |= 1u << lane;
  suspend(Wait::warp_barrier);
  return bits;
}

void run_grid(dim3 grid, dim3 block, const std::function<void()>& kernel) {
  const unsigned long long threads = 1ull * block.x * block.y * block.z;
  if (threads == 0 || threads > kMaxThreads)
    throw std::invalid_argument("CUDA emulation: a block must have 1 to 1024 threads, got " + std::to_string(threads));
  if (1ull * grid.x * grid.y * grid.z == 0) return;
  while (stacks.size() < threads) stacks.emplace_back();
  Block b;
  b.kernel = &kernel;
  b.fibers.resize(threads);
  Running guard(&b);
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        for (unsigned t = 0; t < threads; ++t) {
          Fiber& f = b.fibers[t];
          f.index = ThreadIndex{dim3(t % block.x, t / block.x % block.y, t / (block.x * block.y)), dim3(bx, by, bz),
                                block, grid, t};
          f.wait = Wait::none;
          getcontext(&f.context);
          f.context.uc_stack.ss_sp = static_cast<char*>(stacks[t].base()) + kGuardBytes;
          f.context.uc_stack.ss_size = kStackBytes - kGuardBytes;
          f.context.uc_link = &b.scheduler;
          makecontext(&f.context, enter, 0);
        }
        run_block(b);
      }
}

}  // namespace emulation
}  // namespace summit
