// Choice of instruction set: the entry points of cpp/kernels.hpp, each running the
// compiled copy of the kernels chosen for this CPU (cpp/kernel_set.hpp), and the
// settings all copies share.
#include <atomic>
#include <cctype>
#include <chrono>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <limits>

#include "kernel_set.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#endif

namespace fastmse {
namespace {

// Every copy built, least capable first.
const KernelSet* const kBuilt[] = {
    &baseline::kernels,
#ifdef FASTMSE_HAVE_AVX2
    &avx2::kernels,
#endif
};
constexpr std::size_t kBuiltCount = std::size(kBuilt);

bool cpu_runs(const KernelSet& set) {
    if (std::strcmp(set.isa, "avx2") != 0) return true;
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2");  // the CPU's and the OS's (saved YMM state)
#else
    return false;
#endif
}

// The copies this CPU runs, least capable first, and their names (nullptr-terminated).
struct Runnable {
    const KernelSet* sets[kBuiltCount] = {};
    const char* names[kBuiltCount + 1] = {};
    std::size_t count = 0;
};

const Runnable& runnable() {
    static const Runnable found = [] {
        Runnable r;
        for (const KernelSet* set : kBuilt) {
            if (!cpu_runs(*set)) continue;
            r.sets[r.count] = set;
            r.names[r.count++] = set->isa;
        }
        return r;
    }();
    return found;
}

std::atomic<const KernelSet*>& active() {
    static std::atomic<const KernelSet*> chosen{runnable().sets[runnable().count - 1]};
    return chosen;
}

const KernelSet& kernels() { return *active().load(std::memory_order_relaxed); }

// The copy that runs `problem`: the chosen one, or the baseline copy for float16 and
// bfloat16 where the chosen one has no loops of its own for them.
const KernelSet& kernels_for(const Problem& problem) {
    const KernelSet& chosen = kernels();
    return sixteen_bit(problem.dtype) && !chosen.own_16_bit ? baseline::kernels : chosen;
}

std::atomic<int> g_num_threads{0};

// A forked child holds only the thread that called fork(): an OpenMP team the parent
// started is gone, and GNU OpenMP would wait for it forever at the next parallel region.
// So a forked child runs the kernels on one thread, never entering OpenMP (as PyTorch's
// DataLoader workers do); spawn and forkserver children start clean and use every core.
std::atomic<bool> g_forked{false};

#if defined(__unix__) || defined(__APPLE__)
void mark_forked() { g_forked.store(true, std::memory_order_relaxed); }
const int g_fork_handler = pthread_atfork(nullptr, nullptr, mark_forked);
#endif

int64_t now_ns() {
    const auto since = std::chrono::steady_clock::now().time_since_epoch();
    return std::chrono::duration_cast<std::chrono::nanoseconds>(since).count();
}

// How long OpenMP's team counts as awake after a parallel region (run_on_team): none
// where OMP_WAIT_POLICY is passive, else 1 ms (GNU OpenMP's threads were seen spinning
// 1-2 ms; LLVM's spin for 200 ms).
int64_t awake_ns() {
    static const int64_t window = [] {
        const char* policy = std::getenv("OMP_WAIT_POLICY");
        const char passive[] = "passive";
        bool is_passive = policy != nullptr && std::strlen(policy) == std::strlen(passive);
        for (std::size_t k = 0; is_passive && policy[k] != '\0'; ++k)
            is_passive = std::tolower(static_cast<unsigned char>(policy[k])) == passive[k];
        return is_passive ? int64_t{0} : int64_t{1'000'000};
    }();
    return window;
}

// When the calling thread's last parallel region ended (now_ns()): GNU OpenMP keeps a
// team of threads per calling thread.
thread_local int64_t t_last_team_end = std::numeric_limits<int64_t>::min() / 2;
std::atomic<int64_t> g_parallel_asleep_min{kParallelAsleepMin};

}  // namespace

void reduce(const Problem& problem) { kernels_for(problem).reduce(problem); }
void grad(const Problem& problem) { kernels_for(problem).grad(problem); }
void reduce_and_grad(const Problem& problem) { kernels_for(problem).reduce_and_grad(problem); }
void squared_error(const Problem& problem) { kernels_for(problem).squared_error(problem); }
void reduce_difference(const Problem& problem) { kernels_for(problem).reduce_difference(problem); }

bool run_on_team(int64_t positions) {
    if (positions < kParallelMin) return false;
    if (positions >= g_parallel_asleep_min.load(std::memory_order_relaxed)) return true;
    return now_ns() - t_last_team_end < awake_ns();
}

void team_ran() { t_last_team_end = now_ns(); }

int64_t set_parallel_asleep_min(int64_t positions) { return g_parallel_asleep_min.exchange(positions); }

uint64_t stream_read(const void* data, int64_t bytes, int num_threads) {
    return kernels().stream_read(data, bytes, num_threads);
}

const char* active_isa() { return kernels().isa; }

bool set_isa(const char* name) {
    const Runnable& r = runnable();
    for (std::size_t k = 0; k < r.count; ++k) {
        if (std::strcmp(r.sets[k]->isa, name) == 0) {
            active().store(r.sets[k]);
            return true;
        }
    }
    return false;
}

const char* const* runnable_isas() { return runnable().names; }

void set_num_threads(int n) { g_num_threads.store(n < 0 ? 0 : n); }

int get_num_threads() {
    if (g_forked.load(std::memory_order_relaxed)) return 1;
    const int fixed = g_num_threads.load();
    if (fixed > 0) return fixed;
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

}  // namespace fastmse
