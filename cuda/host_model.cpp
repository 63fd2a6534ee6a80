// The host model's fibers and scheduler (cuda/host_model.hpp).
#include "host_model.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <exception>

#ifdef _OPENMP
#include <omp.h>
#endif

#ifdef FASTMSE_HOST_MODEL_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

// Switching between fibers: a few instructions on x86-64 Linux (the kernels switch at every
// barrier and shuffle, millions of times in a test run), ucontext elsewhere and where
// shadow stacks (CET) are on, which glibc's swapcontext keeps and this switch would not
// (CMakeLists.txt builds this file without them where the compiler allows).
#if defined(__x86_64__) && defined(__linux__) && !defined(__ILP32__) && !(defined(__CET__) && (__CET__ & 2))
#define FASTMSE_HOST_MODEL_ASM_SWITCH 1
// Saves the callee-saved registers on the current stack and its pointer in *save, then
// continues on the stack `load` with the registers saved there.
extern "C" void fastmse_host_model_switch(void** save, void* load);
// A new fiber's first return address: calls r12(rbx) with the stack aligned as for a call.
extern "C" void fastmse_host_model_start();
asm(R"(
    .text
    .globl fastmse_host_model_switch
    .hidden fastmse_host_model_switch
    .type fastmse_host_model_switch, @function
    .p2align 4
fastmse_host_model_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size fastmse_host_model_switch, .-fastmse_host_model_switch

    .globl fastmse_host_model_start
    .hidden fastmse_host_model_start
    .type fastmse_host_model_start, @function
    .p2align 4
fastmse_host_model_start:
    subq $8, %rsp
    movq %rbx, %rdi
    callq *%r12
    ud2
    .size fastmse_host_model_start, .-fastmse_host_model_start
)");
#else
#include <ucontext.h>
#endif

namespace fastmse::host_model {
namespace {

constexpr unsigned kWarpSize = 32;
#ifdef FASTMSE_HOST_MODEL_ASAN
constexpr std::size_t kStackBytes = std::size_t{256} << 10;  // instrumented frames are larger
#else
constexpr std::size_t kStackBytes = std::size_t{64} << 10;
#endif

enum class State { ready, at_block_barrier, at_warp_barrier, left, failed };

struct Context {
#ifdef FASTMSE_HOST_MODEL_ASM_SWITCH
    void* stack_pointer = nullptr;
#else
    ucontext_t context;
#endif
};

void switch_context(Context& save, Context& load) {
#ifdef FASTMSE_HOST_MODEL_ASM_SWITCH
    fastmse_host_model_switch(&save.stack_pointer, load.stack_pointer);
#else
    if (swapcontext(&save.context, &load.context) != 0) std::abort();
#endif
}

// A stack with an inaccessible guard page below it: an overflow faults at once.
class Stack {
  public:
    Stack() {
        const std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
        mapping_ = static_cast<char*>(
            mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
        if (mapping_ == MAP_FAILED) throw std::bad_alloc();
        if (mprotect(mapping_, page, PROT_NONE) != 0) {
            munmap(mapping_, kStackBytes + page);
            throw std::bad_alloc();
        }
        bottom_ = mapping_ + page;
    }
    ~Stack() {
        if (mapping_ != nullptr) munmap(mapping_, static_cast<std::size_t>(bottom_ - mapping_) + kStackBytes);
    }
    Stack(Stack&& other) noexcept : mapping_(std::exchange(other.mapping_, nullptr)), bottom_(other.bottom_) {}
    Stack(const Stack&) = delete;
    Stack& operator=(const Stack&) = delete;
    Stack& operator=(Stack&&) = delete;
    char* bottom() const { return bottom_; }
    char* top() const { return bottom_ + kStackBytes; }

  private:
    char* mapping_ = nullptr;
    char* bottom_ = nullptr;
};

struct Fiber {
    Context context;
    dim3 index;
    State state = State::ready;
    const char* file = "";  // source file and line of the barrier or shuffle it waits at
    int line = 0;
    unsigned exchanges = 0;  // shuffles done: which of the warp's two slot sets is next
    bool ran = false;
    void* fake_stack = nullptr;  // AddressSanitizer's, while switched out
};

// The blocks one OS thread runs, one at a time.
struct Executor {
    std::vector<Stack> stacks;
    std::vector<Fiber> fibers;
    std::vector<uint64_t> slots;  // per warp, two sets of 32: one shuffle's values while the next fills
    Context scheduler;
    Fiber* current = nullptr;
    const Body* body = nullptr;
    dim3 block_index, block_dim, grid_dim;
    std::string failure;  // why a fiber stopped (State::failed)
    bool cancelling = false;  // a refused block's fibers are resumed only to leave
    const void* scheduler_stack = nullptr;  // AddressSanitizer: the OS thread's stack
    std::size_t scheduler_stack_size = 0;
};

thread_local Executor executor;
thread_local cudaError_t launch_error = cudaSuccess;
std::atomic<int> multiprocessors{4};
std::atomic<bool> reverse{false};

[[noreturn]] void fiber_main(Fiber* fiber) noexcept;

// From the scheduler into `fiber`, until it waits or leaves.
void resume(Executor& e, Fiber& fiber) {
    e.current = &fiber;
    fiber.ran = true;
#ifdef FASTMSE_HOST_MODEL_ASAN
    void* fake_stack = nullptr;
    const std::size_t index = static_cast<std::size_t>(&fiber - e.fibers.data());
    __sanitizer_start_switch_fiber(&fake_stack, e.stacks[index].bottom(), kStackBytes);
#endif
    switch_context(e.scheduler, fiber.context);
#ifdef FASTMSE_HOST_MODEL_ASAN
    __sanitizer_finish_switch_fiber(fake_stack, nullptr, nullptr);
#endif
    e.current = nullptr;
}

// From the running fiber back to the scheduler, in `state`.
void suspend(State state, const char* file, int line) {
    Executor& e = executor;
    Fiber& fiber = *e.current;
    fiber.state = state;
    fiber.file = file;
    fiber.line = line;
#ifdef FASTMSE_HOST_MODEL_ASAN
    __sanitizer_start_switch_fiber(state == State::left ? nullptr : &fiber.fake_stack, e.scheduler_stack,
                                   e.scheduler_stack_size);
#endif
    switch_context(fiber.context, e.scheduler);
#ifdef FASTMSE_HOST_MODEL_ASAN
    __sanitizer_finish_switch_fiber(fiber.fake_stack, &e.scheduler_stack, &e.scheduler_stack_size);
#endif
    // Leaving for good releases what the fiber holds (AddressSanitizer's fake stack).
    if (e.cancelling) suspend(State::left, "", 0);
}

#ifndef FASTMSE_HOST_MODEL_ASM_SWITCH
void fiber_entry(unsigned high, unsigned low) {
    fiber_main(reinterpret_cast<Fiber*>((std::uintptr_t{high} << 32) | low));
}
#endif

void start(Fiber& fiber, const Stack& stack) {
#ifdef FASTMSE_HOST_MODEL_ASAN
    ASAN_UNPOISON_MEMORY_REGION(stack.bottom(), kStackBytes);
#endif
#ifdef FASTMSE_HOST_MODEL_ASM_SWITCH
    // What fastmse_host_model_switch pops: r15, r14, r13, r12 (fiber_main), rbx (the
    // fiber), rbp, then the return address; the top 8 bytes keep the call aligned.
    void** sp = reinterpret_cast<void**>(stack.top());
    *--sp = nullptr;
    *--sp = reinterpret_cast<void*>(&fastmse_host_model_start);
    *--sp = nullptr;
    *--sp = &fiber;
    *--sp = reinterpret_cast<void*>(&fiber_main);
    *--sp = nullptr;
    *--sp = nullptr;
    *--sp = nullptr;
    fiber.context.stack_pointer = sp;
#else
    if (getcontext(&fiber.context.context) != 0) std::abort();
    fiber.context.context.uc_stack.ss_sp = stack.bottom();
    fiber.context.context.uc_stack.ss_size = kStackBytes;
    fiber.context.context.uc_link = nullptr;
    const auto address = reinterpret_cast<std::uintptr_t>(&fiber);
    makecontext(&fiber.context.context, reinterpret_cast<void (*)()>(&fiber_entry), 2,
                static_cast<unsigned>(address >> 32), static_cast<unsigned>(address & 0xffffffffu));
#endif
}

[[noreturn]] void fiber_main(Fiber* fiber) noexcept {
    Executor& e = executor;
#ifdef FASTMSE_HOST_MODEL_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &e.scheduler_stack, &e.scheduler_stack_size);
#endif
    e.body->run();
    suspend(State::left, "", 0);
    (void)fiber;
    std::abort();  // a fiber that left is never resumed
}

std::string site(const char* file, int line) {
    const std::string path = file;
    return path.substr(path.find_last_of("/\\") + 1) + ":" + std::to_string(line);
}

// "threads 0-31: waiting at __syncthreads (kernels.cu:180); threads 32-255: left the kernel"
std::string describe(const Executor& e, std::size_t n) {
    auto what = [](const Fiber& f) {
        switch (f.state) {
            case State::at_block_barrier: return "waiting at __syncthreads (" + site(f.file, f.line) + ")";
            case State::at_warp_barrier: return "waiting at __shfl_down_sync (" + site(f.file, f.line) + ")";
            case State::left: return std::string("left the kernel");
            default: return std::string("running");
        }
    };
    std::string text;
    for (std::size_t i = 0; i < n;) {
        std::size_t j = i + 1;
        while (j < n && what(e.fibers[j]) == what(e.fibers[i])) ++j;
        if (!text.empty()) text += "; ";
        text += j - i > 1 ? "threads " + std::to_string(i) + "-" + std::to_string(j - 1) : "thread " + std::to_string(i);
        text += ": " + what(e.fibers[i]);
        i = j;
    }
    return text;
}

// Whether the 32 threads of the warp at `lanes` all wait at one shuffle.
bool warp_at_shuffle(const Fiber* lanes) {
    return std::all_of(lanes, lanes + kWarpSize, [&](const Fiber& f) {
        return f.state == State::at_warp_barrier && f.line == lanes[0].line && f.file == lanes[0].file;
    });
}

void run_block(Executor& e, const std::string& kernel) {
    const std::size_t n = e.block_dim.x;
    if (e.stacks.size() < n) {
        e.stacks.reserve(n);
        while (e.stacks.size() < n) e.stacks.emplace_back();
        e.fibers.resize(n);
    }
    e.slots.assign(n / kWarpSize * 2 * kWarpSize, 0);
    for (std::size_t i = 0; i < n; ++i) {
        Fiber& fiber = e.fibers[i];
        fiber = Fiber{};
        fiber.index = dim3(static_cast<unsigned>(i));
        start(fiber, e.stacks[i]);
    }
    auto fail = [&](const std::string& why) {
        const std::string message = "fastmse host model: kernel " + kernel + ", block " +
                                    std::to_string(e.block_index.x) + " of " + std::to_string(e.grid_dim.x) + ": " + why;
        e.cancelling = true;
        for (std::size_t i = 0; i < n; ++i)
            if (e.fibers[i].ran && e.fibers[i].state != State::left) resume(e, e.fibers[i]);
        e.cancelling = false;
        throw std::runtime_error(message);
    };
    // Each warp runs as far as it can (through its shuffles) before the next starts, so
    // that warps run ahead of one another as on a GPU; in reverse order the last first.
    const bool backwards = reverse;
    const std::size_t warps = n / kWarpSize;
    for (;;) {
        for (std::size_t k = 0; k < warps; ++k) {
            Fiber* lanes = &e.fibers[(backwards ? warps - 1 - k : k) * kWarpSize];
            for (;;) {
                for (std::size_t l = 0; l < kWarpSize; ++l) {
                    Fiber& fiber = lanes[backwards ? kWarpSize - 1 - l : l];
                    if (fiber.state != State::ready) continue;
                    resume(e, fiber);
                    if (fiber.state == State::failed) fail("thread " + std::to_string(fiber.index.x) + " " + e.failure);
                }
                if (!warp_at_shuffle(lanes)) break;
                for (std::size_t l = 0; l < kWarpSize; ++l) lanes[l].state = State::ready;
            }
        }
        const auto first = e.fibers.begin(), last = first + static_cast<std::ptrdiff_t>(n);
        if (std::all_of(first, last, [](const Fiber& f) { return f.state == State::left; })) return;
        const bool barrier = std::all_of(first, last, [&](const Fiber& f) {
            return f.state == State::at_block_barrier && f.line == first->line && f.file == first->file;
        });
        if (!barrier)
            fail("the block cannot go on (undefined in CUDA: a hang or wrong results on a GPU): " + describe(e, n));
        for (auto f = first; f != last; ++f) f->state = State::ready;
    }
}

}  // namespace

void set_multiprocessor_count(int count) {
    if (count < 1) throw std::invalid_argument("the emulated device needs at least one multiprocessor");
    multiprocessors = count;
}
int multiprocessor_count() { return multiprocessors; }

void set_reverse_order(bool value) { reverse = value; }
bool reverse_order() { return reverse; }

cudaError_t& last_error() { return launch_error; }

const dim3& thread_index() { return executor.current->index; }
const dim3& block_index() { return executor.block_index; }
const dim3& block_dim() { return executor.block_dim; }
const dim3& grid_dim() { return executor.grid_dim; }

void sync_block(const char* file, int line) { suspend(State::at_block_barrier, file, line); }

uint64_t exchange_down(unsigned mask, uint64_t value, unsigned delta, const char* file, int line) {
    Executor& e = executor;
    Fiber& fiber = *e.current;
    if (mask != 0xffffffffu || delta >= kWarpSize) {
        e.failure = "shuffles with mask " + std::to_string(mask) + " and delta " + std::to_string(delta) + " (" +
                    site(file, line) + "): the host model takes whole warps and deltas below 32 only";
        suspend(State::failed, file, line);
    }
    const unsigned lane = fiber.index.x % kWarpSize, warp = fiber.index.x / kWarpSize;
    uint64_t* slots = &e.slots[(warp * 2 + fiber.exchanges % 2) * kWarpSize];
    slots[lane] = value;
    ++fiber.exchanges;
    suspend(State::at_warp_barrier, file, line);
    // The other set fills with the next shuffle's values, which no thread can write before
    // every thread has arrived there, that is, has read this one.
    return lane + delta < kWarpSize ? slots[lane + delta] : value;
}

void run_grid(const std::string& kernel, dim3 grid, dim3 block, const Body& body) {
    const int64_t blocks = grid.x;
    int64_t failed_block = blocks;
    std::string failure;
    std::atomic<bool> failed{false};
    auto run = [&](int64_t b) {
        if (failed) return;  // refused already: the first refusal is reported
        Executor& e = executor;
        e.body = &body;
        e.block_index = dim3(static_cast<unsigned>(b));
        e.block_dim = block;
        e.grid_dim = grid;
        try {
            run_block(e, kernel);
        } catch (const std::exception& error) {
#ifdef _OPENMP
#pragma omp critical(fastmse_host_model_failure)
#endif
            if (b < failed_block) failed_block = b, failure = error.what();
            failed = true;
        }
    };
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic) if (blocks > 1)
#endif
    for (int64_t b = 0; b < blocks; ++b) run(b);
    if (failed_block < blocks) throw std::runtime_error(failure);
}

}  // namespace fastmse::host_model
