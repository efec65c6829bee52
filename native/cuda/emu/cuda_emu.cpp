// The block scheduler of the CUDA emulation (cuda_emu.h): fibers, one per thread of a block, switched
// only at barriers and warp collectives.
#include "cuda_emu.h"

#include <sys/mman.h>
#include <unistd.h>

// Switching fibers. ucontext's swapcontext also saves and restores the signal mask, a system call on
// every switch, and those calls were most of the emulation's time. A fiber here is switched only
// inside a call (syncthreads, warp_collective), so saving what the C ABI has a callee preserve is
// enough: on x86-64 and AArch64 a few instructions do it (falcon_emu_switch_stack below); elsewhere
// ucontext remains.
#if defined(__ELF__) && (defined(__x86_64__) || defined(__aarch64__))
#define FALCON_EMU_STACK_SWITCH 1
#else
#include <ucontext.h>
#endif

#include <algorithm>
#include <exception>
#include <memory>

#if defined(__SANITIZE_ADDRESS__)
#define FALCON_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FALCON_EMU_ASAN 1
#endif
#endif
#ifdef FALCON_EMU_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

#ifdef FALCON_EMU_STACK_SWITCH
// falcon_emu_switch_stack(save, load): pushes the callee-saved registers and the floating-point
// control words, stores the stack pointer in *save, then pops the same frame from the stack at `load`
// and returns there. falcon_emu_fiber_start is where a new fiber's first frame returns to: it calls
// the entry function that frame holds and never returns (a fiber's entry ends by switching away).
extern "C" void falcon_emu_switch_stack(void** save, void* load);
extern "C" void falcon_emu_fiber_start();
#if defined(__x86_64__)
// Frame, from the saved stack pointer up: MXCSR and x87 control word (8 bytes), r15, r14, r13, r12,
// rbx, rbp, return address. A new fiber's r12 holds its entry function.
asm(R"(
  .text
  .p2align 4
  .globl falcon_emu_switch_stack
  .hidden falcon_emu_switch_stack
  .type falcon_emu_switch_stack, @function
falcon_emu_switch_stack:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size falcon_emu_switch_stack, .-falcon_emu_switch_stack

  .p2align 4
  .globl falcon_emu_fiber_start
  .hidden falcon_emu_fiber_start
  .type falcon_emu_fiber_start, @function
falcon_emu_fiber_start:
  .cfi_startproc
  .cfi_undefined rip
  call *%r12
  ud2
  .cfi_endproc
  .size falcon_emu_fiber_start, .-falcon_emu_fiber_start
)");
#else
// Frame, from the saved stack pointer up: x19-x28, x29 (frame pointer), x30 (return address), d8-d15,
// FPCR, 8 bytes of padding (176 bytes). A new fiber's x19 holds its entry function.
asm(R"(
  .text
  .p2align 4
  .globl falcon_emu_switch_stack
  .hidden falcon_emu_switch_stack
  .type falcon_emu_switch_stack, %function
falcon_emu_switch_stack:
  sub sp, sp, #176
  stp x19, x20, [sp, #0]
  stp x21, x22, [sp, #16]
  stp x23, x24, [sp, #32]
  stp x25, x26, [sp, #48]
  stp x27, x28, [sp, #64]
  stp x29, x30, [sp, #80]
  stp d8, d9, [sp, #96]
  stp d10, d11, [sp, #112]
  stp d12, d13, [sp, #128]
  stp d14, d15, [sp, #144]
  mrs x9, fpcr
  str x9, [sp, #160]
  mov x9, sp
  str x9, [x0]
  mov sp, x1
  ldp x19, x20, [sp, #0]
  ldp x21, x22, [sp, #16]
  ldp x23, x24, [sp, #32]
  ldp x25, x26, [sp, #48]
  ldp x27, x28, [sp, #64]
  ldp x29, x30, [sp, #80]
  ldp d8, d9, [sp, #96]
  ldp d10, d11, [sp, #112]
  ldp d12, d13, [sp, #128]
  ldp d14, d15, [sp, #144]
  ldr x9, [sp, #160]
  msr fpcr, x9
  add sp, sp, #176
  ret
  .size falcon_emu_switch_stack, .-falcon_emu_switch_stack

  .p2align 4
  .globl falcon_emu_fiber_start
  .hidden falcon_emu_fiber_start
  .type falcon_emu_fiber_start, %function
falcon_emu_fiber_start:
  .cfi_startproc
  .cfi_undefined x30
  blr x19
  brk #0
  .cfi_endproc
  .size falcon_emu_fiber_start, .-falcon_emu_fiber_start
)");
#endif  // __x86_64__ or __aarch64__
#endif  // FALCON_EMU_STACK_SWITCH

namespace falcon::cuda_emu {
namespace {

// Kernels keep little on their stacks; a kernel error unwinds on its fiber's stack too.
constexpr size_t kFiberStackBytes = 256 * 1024;

#ifdef FALCON_EMU_STACK_SWITCH
struct FiberContext {
  void* stack_pointer = nullptr;
};

// Lays out on [stack, stack + bytes) the frame falcon_emu_switch_stack pops, so that switching to
// the fiber calls entry() on that stack with the ABI's stack alignment.
void start_context(FiberContext& context, void* stack, size_t bytes, void (*entry)()) {
#ifdef FALCON_EMU_ASAN
  // A stack starts clean, as a new thread's does: an earlier fiber on it may have been abandoned
  // mid-kernel, or may have left frames (its entry's, its last switch's) with poisoned redzones.
  // (AddressSanitizer's swapcontext interceptor did this for ucontext fibers.)
  ASAN_UNPOISON_MEMORY_REGION(stack, bytes);
#endif
  const uintptr_t top = (reinterpret_cast<uintptr_t>(stack) + bytes) & ~uintptr_t(15);
#if defined(__x86_64__)
  // The return into falcon_emu_fiber_start leaves the stack 16-byte aligned for its call; the 16
  // bytes above the frame stay zero (the end of the frame chain).
  auto* frame = reinterpret_cast<uint64_t*>(top - 80);
  std::memset(frame, 0, 80);
  frame[0] = 0x1F80u | uint64_t(0x037Fu) << 32;  // the default MXCSR and x87 control word
  frame[4] = reinterpret_cast<uint64_t>(entry);   // r12
  frame[7] = reinterpret_cast<uint64_t>(&falcon_emu_fiber_start);
#else
  auto* frame = reinterpret_cast<uint64_t*>(top - 176);
  std::memset(frame, 0, 176);                     // FPCR 0: the default rounding and no traps
  frame[0] = reinterpret_cast<uint64_t>(entry);   // x19
  frame[11] = reinterpret_cast<uint64_t>(&falcon_emu_fiber_start);  // x30
#endif
  context.stack_pointer = frame;
}

void switch_context(FiberContext& from, FiberContext& to) { falcon_emu_switch_stack(&from.stack_pointer, to.stack_pointer); }

#else
struct FiberContext {
  ucontext_t context;
};

void start_context(FiberContext& context, void* stack, size_t bytes, void (*entry)()) {
  getcontext(&context.context);
  context.context.uc_stack.ss_sp = stack;
  context.context.uc_stack.ss_size = bytes;
  context.context.uc_link = nullptr;
  makecontext(&context.context, entry, 0);
}

void switch_context(FiberContext& from, FiberContext& to) { swapcontext(&from.context, &to.context); }
#endif

enum class FiberState { Runnable, AtBarrier, AtWarp, Exited };

struct Fiber {
  FiberContext context;
  FiberState state = FiberState::Runnable;
  ThreadPlace place;
};

struct WarpState {
  unsigned existing = 0;   // lanes the block has in this warp
  unsigned exited = 0;
  unsigned arrived = 0;    // lanes waiting in the open collective
  unsigned mask = 0;       // of the open collective
  const char* op = nullptr;
  void* payloads[kWarpSize] = {};
};

// mmap'd fiber stacks with a guard page below each. Each host thread keeps its own for every launch
// it runs, growing them when a block has more threads: mapping and protecting them anew for each
// launch cost a system call per thread.
class Stacks {
 public:
  Stacks() = default;
  Stacks(const Stacks&) = delete;
  Stacks& operator=(const Stacks&) = delete;
  ~Stacks() { unmap(); }

  void reserve(size_t count) {
    if (count <= count_) return;
    unmap();
    void* base = mmap(nullptr, stride_ * count, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED) throw Error(ErrorKind::State, "the CUDA emulation could not map its fiber stacks (out of memory)");
    base_ = base;
    count_ = count;
    for (size_t i = 0; i < count; ++i) mprotect(static_cast<char*>(base_) + i * stride_, page_, PROT_NONE);
  }
  void* stack(size_t i) const { return static_cast<char*>(base_) + i * stride_ + page_; }

 private:
  void unmap() {
#ifdef FALCON_EMU_ASAN
    // Frames left on the stacks keep their redzones poisoned; whatever maps this memory next must
    // not inherit that.
    if (base_ != nullptr) ASAN_UNPOISON_MEMORY_REGION(base_, stride_ * count_);
#endif
    if (base_ != nullptr) munmap(base_, stride_ * count_);
    base_ = nullptr;
    count_ = 0;
  }
  size_t page_ = size_t(sysconf(_SC_PAGESIZE));
  size_t stride_ = kFiberStackBytes + page_;
  size_t count_ = 0;
  void* base_ = nullptr;
};

thread_local Stacks host_thread_stacks;

struct BlockRun {
  const char* kernel = nullptr;
  const std::function<void()>* body = nullptr;
  std::vector<Fiber> fibers;
  std::vector<WarpState> warps;
  FiberContext scheduler;
  int current = -1;
  int exited = 0;
  int at_barrier = 0;
  std::exception_ptr error;
  int failed = -1;  // the thread whose error stopped the block
#ifdef FALCON_EMU_ASAN
  void* scheduler_fake_stack = nullptr;
  const void* scheduler_stack_bottom = nullptr;
  size_t scheduler_stack_size = 0;
#endif
};

thread_local BlockRun* running = nullptr;

std::string coordinates(const dim3& d) { return "(" + std::to_string(d.x) + "," + std::to_string(d.y) + "," + std::to_string(d.z) + ")"; }

// Back to the scheduler from the running fiber; returns when the scheduler resumes it.
void yield_to_scheduler([[maybe_unused]] bool exiting) {
  BlockRun& run = *running;
  Fiber& fiber = run.fibers[size_t(run.current)];
#ifdef FALCON_EMU_ASAN
  void* fake_stack = nullptr;
  __sanitizer_start_switch_fiber(exiting ? nullptr : &fake_stack, run.scheduler_stack_bottom, run.scheduler_stack_size);
#endif
  switch_context(fiber.context, run.scheduler);
#ifdef FALCON_EMU_ASAN
  __sanitizer_finish_switch_fiber(fake_stack, nullptr, nullptr);
#endif
}

void fiber_main() {
  BlockRun& run = *running;
#ifdef FALCON_EMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &run.scheduler_stack_bottom, &run.scheduler_stack_size);
#endif
  try {
    (*run.body)();
    Fiber& fiber = run.fibers[size_t(run.current)];
    WarpState& warp = run.warps[size_t(run.current / kWarpSize)];
    const unsigned bit = 1u << fiber.place.lane;
    if (run.at_barrier > 0) kernel_error("this thread exited while " + std::to_string(run.at_barrier) + " others wait at __syncthreads()");
    if (warp.arrived != 0 && (warp.mask & bit)) kernel_error(std::string("this thread exited while its warp waits for it in ") + warp.op);
    warp.exited |= bit;
    fiber.state = FiberState::Exited;
    ++run.exited;
  } catch (...) {
    run.error = std::current_exception();
    run.failed = run.current;
  }
  yield_to_scheduler(true);
}

class KernelError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Runs one block to completion; throws its first kernel error.
void run_block(BlockRun& run, const Stacks& stacks, dim3 block_idx, dim3 block_dim, dim3 grid_dim) {
  const int threads = int(block_dim.x * block_dim.y * block_dim.z);
  const int num_warps = (threads + kWarpSize - 1) / kWarpSize;
  run.fibers.assign(size_t(threads), Fiber{});
  run.warps.assign(size_t(num_warps), WarpState{});
  run.exited = 0;
  run.at_barrier = 0;
  run.error = nullptr;
  run.failed = -1;
  for (int w = 0; w < num_warps; ++w) {
    const int lanes = std::min(kWarpSize, threads - w * kWarpSize);
    run.warps[size_t(w)].existing = lanes == kWarpSize ? 0xffffffffu : (1u << lanes) - 1u;
  }
  for (int t = 0; t < threads; ++t) {
    Fiber& fiber = run.fibers[size_t(t)];
    fiber.place.thread_idx = dim3(unsigned(t) % block_dim.x, unsigned(t) / block_dim.x % block_dim.y, unsigned(t) / (block_dim.x * block_dim.y));
    fiber.place.block_idx = block_idx;
    fiber.place.block_dim = block_dim;
    fiber.place.grid_dim = grid_dim;
    fiber.place.lane = t % kWarpSize;
    start_context(fiber.context, stacks.stack(size_t(t)), kFiberStackBytes, fiber_main);
  }
  for (;;) {
    bool progressed = false;
    for (int t = 0; t < threads; ++t) {
      if (run.fibers[size_t(t)].state != FiberState::Runnable) continue;
      progressed = true;
      run.current = t;
#ifdef FALCON_EMU_ASAN
      void* fake_stack = nullptr;
      __sanitizer_start_switch_fiber(&fake_stack, stacks.stack(size_t(t)), kFiberStackBytes);
#endif
      switch_context(run.scheduler, run.fibers[size_t(t)].context);
#ifdef FALCON_EMU_ASAN
      __sanitizer_finish_switch_fiber(fake_stack, nullptr, nullptr);
#endif
      run.current = -1;
      if (run.error) std::rethrow_exception(run.error);
    }
    if (run.exited == threads) return;
    if (!progressed) {
      std::string waiting;
      for (size_t w = 0; w < run.warps.size(); ++w) {
        if (run.warps[w].arrived != 0) waiting += "; warp " + std::to_string(w) + " waits in " + run.warps[w].op;
      }
      throw KernelError("deadlock: " + std::to_string(run.at_barrier) + " threads wait at __syncthreads()" + waiting +
                        " (a barrier or warp collective that not every thread reaches)");
    }
  }
}

}  // namespace

const ThreadPlace& place() {
  if (running == nullptr || running->current < 0) throw Error(ErrorKind::State, "CUDA built-ins used outside an emulated kernel");
  return running->fibers[size_t(running->current)].place;
}

void kernel_error(const std::string& message) { throw KernelError(message); }

void syncthreads() {
  BlockRun& run = *running;
  if (run.exited > 0) kernel_error("__syncthreads() after " + std::to_string(run.exited) + " threads of the block exited");
  Fiber& fiber = run.fibers[size_t(run.current)];
  if (++run.at_barrier == int(run.fibers.size())) {
    run.at_barrier = 0;
    for (Fiber& other : run.fibers) {
      if (other.state == FiberState::AtBarrier) other.state = FiberState::Runnable;
    }
    return;
  }
  fiber.state = FiberState::AtBarrier;
  yield_to_scheduler(false);
}

unsigned active_mask() {
  const WarpState& warp = running->warps[size_t(running->current / kWarpSize)];
  return warp.existing & ~warp.exited;
}

void warp_collective(const char* op, unsigned mask, void* payload, WarpCompletion complete) {
  BlockRun& run = *running;
  const int warp_index = run.current / kWarpSize;
  WarpState& warp = run.warps[size_t(warp_index)];
  Fiber& fiber = run.fibers[size_t(run.current)];
  const unsigned bit = 1u << fiber.place.lane;
  if (!(mask & bit)) kernel_error(std::string(op) + " called by a lane outside its mask");
  if (mask & ~warp.existing) kernel_error(std::string(op) + " mask names lanes the block does not have");
  if (mask & warp.exited) kernel_error(std::string(op) + " mask names lanes that have exited");
  if (warp.arrived != 0 && (warp.mask != mask || std::strcmp(warp.op, op) != 0)) {
    kernel_error(std::string(op) + " reached while other lanes of the warp wait in " + warp.op + " (divergent warp collectives)");
  }
  warp.op = op;
  warp.mask = mask;
  warp.payloads[fiber.place.lane] = payload;
  warp.arrived |= bit;
  if (warp.arrived == mask) {
    if (complete != nullptr) complete(warp.payloads, mask);
    warp.arrived = 0;
    for (int lane = 0; lane < kWarpSize; ++lane) {
      if ((mask >> lane & 1u) && lane != fiber.place.lane) run.fibers[size_t(warp_index * kWarpSize + lane)].state = FiberState::Runnable;
    }
    return;
  }
  fiber.state = FiberState::AtWarp;
  yield_to_scheduler(false);
}

void complete_vote(void* const* payloads, unsigned mask) {
  unsigned ballot = 0;
  for (int lane = 0; lane < kWarpSize; ++lane) {
    if ((mask >> lane & 1u) && static_cast<VoteExchange*>(payloads[lane])->predicate) ballot |= 1u << lane;
  }
  for (int lane = 0; lane < kWarpSize; ++lane) {
    if (mask >> lane & 1u) static_cast<VoteExchange*>(payloads[lane])->ballot = ballot;
  }
}

void issue(Stream* stream, std::function<void()> work) {
  if (stream != nullptr && stream->capturing) {
    stream->captured.push_back(std::move(work));
    return;
  }
  work();
}

void run_grid(const char* name, dim3 grid, dim3 block, const std::function<void()>& body) {
  const uint64_t threads = uint64_t(block.x) * block.y * block.z;
  require(threads >= 1 && threads <= kMaxThreadsPerBlock && block.z <= 64, ErrorKind::State,
          [&] { return std::string("emulated kernel ") + name + ": invalid block shape " + coordinates(block); });
  require(grid.x >= 1 && grid.y >= 1 && grid.y <= 65535 && grid.z >= 1 && grid.z <= 65535, ErrorKind::State,
          [&] { return std::string("emulated kernel ") + name + ": invalid grid shape " + coordinates(grid); });
  require(running == nullptr, ErrorKind::State, "an emulated kernel cannot launch another (dynamic parallelism is not emulated)");
  Stacks& stacks = host_thread_stacks;
  stacks.reserve(threads);
  BlockRun run;
  run.kernel = name;
  run.body = &body;
  running = &run;
  struct Reset {
    ~Reset() { running = nullptr; }
  } reset;
  dim3 block_idx;
  try {
    for (unsigned z = 0; z < grid.z; ++z) {
      for (unsigned y = 0; y < grid.y; ++y) {
        for (unsigned x = 0; x < grid.x; ++x) {
          block_idx = dim3(x, y, z);
          run_block(run, stacks, block_idx, block, grid);
        }
      }
    }
  } catch (const KernelError& e) {
    const std::string where = run.failed >= 0 ? " thread " + coordinates(run.fibers[size_t(run.failed)].place.thread_idx) : "";
    throw Error(ErrorKind::State, std::string("emulated kernel ") + name + " block " + coordinates(block_idx) + where + ": " + e.what());
  }
}

}  // namespace falcon::cuda_emu
