// The kernel interface every fastmse backend implements: five passes over a strided,
// broadcast problem. Plain C++ on raw buffers; nothing here knows about Python.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace fastmse {

// Element types; fastmse._core exports these codes as `scalar_types` (the GPU passes
// take them with each device pointer).
enum class ScalarType : int { float16 = 0, float32 = 1, float64 = 2, bfloat16 = 3 };

// float16 and bfloat16: converted in software, in loops that only the baseline copy of
// the kernels has where a copy for a wider instruction set leaves them out (cpp/isa.cpp).
inline constexpr bool sixteen_bit(ScalarType type) {
    return type == ScalarType::float16 || type == ScalarType::bfloat16;
}

// Bytes of one element.
inline constexpr std::size_t item_size(ScalarType type) {
    switch (type) {
        case ScalarType::float16: return 2;
        case ScalarType::bfloat16: return 2;
        case ScalarType::float32: return 4;
        case ScalarType::float64: return 8;
    }
    return 1;
}

// Fixed summation geometry of the CPU kernels (cpp/kernels.cpp; the GPU's is in
// cuda/kernels.cu). Results depend on these (and on the problem's shape and strides) and
// on nothing else: not on the thread count, not on scheduling.
inline constexpr int64_t kLanes = 8;               // float64 accumulators of a block's output, either mode
inline constexpr int64_t kBlock = 2048;            // summed positions per lane-mode block (one output)
inline constexpr int64_t kRowBlock = 256;          // summed positions per across-output block
inline constexpr int64_t kOutputsPerTask = 64;     // neighbouring outputs of an across-output task
inline constexpr int64_t kChunk = 1 << 15;         // summed positions per task, either mode
inline constexpr int64_t kParallelMin = 1 << 16;   // positions below which one thread runs
inline constexpr int64_t kParallelAsleepMin = 1 << 18;  // the same where the team sleeps (run_on_team)
inline constexpr int kMaxDims = 64;                // dimensions of a Problem (NumPy's limit)

// What a pass that sums weights itself (Problem::weight_sums_in_pass) found in them.
struct WeightSumsInPass {
    std::atomic<bool> negative_weight{false};
    std::atomic<bool> zero_sum{false};
};

// One array taking part in a call: its element at index (0, ..., 0) and its strides
// over Problem::shape, in elements (zero along broadcast dimensions).
struct Operand {
    void* data = nullptr;  // nullptr: absent (no weights, no output)
    const int64_t* strides = nullptr;
};

// A call's data. Dimensions [0, n_kept) index the reduced result; [n_kept, ndim) are
// summed over. predictions, targets and out hold `dtype`; weights hold `dtype` or
// float64; loss holds `loss_dtype` (float64 or `dtype`) and scale float64, both with zero
// strides over the summed dimensions.
struct Problem {
    ScalarType dtype = ScalarType::float64;
    ScalarType weights_dtype = ScalarType::float64;
    ScalarType loss_dtype = ScalarType::float64;
    int ndim = 0;
    int n_kept = 0;
    const int64_t* shape = nullptr;
    Operand predictions, targets, weights;
    Operand out;    // elementwise result: gradient or squared error
    // One per kept position: its float64 sum divided by loss_divisor, rounded once to
    // loss_dtype. A loss in float64 with divisor 1 is the exact sum, for callers that
    // combine sums; in `dtype` with the count as divisor it is the finished mean, with
    // no float64 array and no second pass over one.
    Operand loss;
    double loss_divisor = 1.0;
    // Where not nullptr, each output's own divisor in place of loss_divisor (a weighted
    // mean: the output's weight sum), float64 laid out as loss: read at the loss's offsets.
    const double* loss_divisors = nullptr;
    // Where not nullptr, a weighted mean of rows of at most kBlock positions along the last
    // dimension (a loss per sample, weights per position), for reduce, grad and
    // reduce_and_grad, or, for reduce alone, of any outputs that lane mode sums (over
    // everything, or rows of more than kBlock positions): each output's sum, and the
    // gradient factor of its positions (scale), divided by its weight sum, found from the
    // weights as the pass reads them (summed as reduce_difference sums w - 0 over the same
    // plan); loss_divisor must be 1. A pass of their own to sum the weights is then not
    // needed. A zero sum is reported here, and by reduce a negative weight (the gradient
    // passes take weights checked before); the results are then not to be used, and a
    // gradient has been written all the same.
    WeightSumsInPass* weight_sums_in_pass = nullptr;
    // Where not nullptr, for reduce_difference without weights in lane mode (outputs of
    // more than kBlock positions, not across outputs): set if a prediction is negative. A
    // pass that sums weights (w - 0) so checks them as it reads them.
    std::atomic<bool>* negative_prediction = nullptr;
    Operand scale;  // float64 gradient factor, one per kept position
    // For a sum over everything (n_kept == 0): each row along the last dimension summed
    // alone, as a loss per row sums it, then the row sums in C order as a flat sum of a
    // float64 array of them. With rows of up to kBlock positions that an operand broadcasts
    // along (weights per sample), this order lets them take the short rows' loops.
    bool rows_first = false;
    int num_threads = 1;
};

// The five passes, named as in fastmse._backends.Kernels and fastmse._core.
// reduce: loss = sum over the summed dimensions of w * (p - t)^2, in float64 (then
// divided and rounded as Problem::loss says).
void reduce(const Problem& problem);
// grad: out = scale * w * (p - t), computed in float64 and rounded once to `dtype`.
void grad(const Problem& problem);
// reduce_and_grad: both of the above in one pass over memory.
void reduce_and_grad(const Problem& problem);
// squared_error: out = w * (p - t)^2, elementwise.
void squared_error(const Problem& problem);
// reduce_difference: loss = sum over the summed dimensions of w * (p - t), in float64:
// the gradient where predictions is broadcast along those dimensions, before its factor.
void reduce_difference(const Problem& problem);

// Reads `bytes` bytes once on all threads and returns a checksum: the streaming-read
// bandwidth ceiling that benchmarks measure the kernels against.
uint64_t stream_read(const void* data, int64_t bytes, int num_threads);

// The passes above are compiled once per instruction set (cpp/kernels.cpp); every copy
// gives bitwise the same results. The most capable copy the CPU runs is used unless
// set_isa chooses another: "baseline" or, on x86-64, "avx2".
const char* active_isa();
// False (and nothing changes) when `name` is not built or the CPU cannot run it.
bool set_isa(const char* name);
// Names of the copies this CPU can run, in order of capability, nullptr-terminated.
const char* const* runnable_isas();

// Thread count for the next calls: n > 0 fixes it, n == 0 follows OpenMP
// (OMP_NUM_THREADS, omp_set_num_threads, threadpoolctl).
void set_num_threads(int n);
int get_num_threads();

// Whether a call of `positions` positions runs on OpenMP's team (where get_num_threads()
// is more than 1): from kParallelMin positions while the team is awake, from
// kParallelAsleepMin once it sleeps. GNU OpenMP's threads spin for a millisecond or two
// after a parallel region, then sleep (at once under OMP_WAIT_POLICY=passive), and waking
// them costs about 50 us on a 2-vCPU VM: what one thread takes for 2**18 positions. A
// loss called once a training step finds the team asleep. The team counts as awake for a
// millisecond after the calling thread's last parallel region (team_ran). Results do not
// depend on it.
bool run_on_team(int64_t positions);
// Called by the kernels when a parallel region of theirs ends.
void team_ran();
// Sets the positions from which calls run on the team asleep or awake (kParallelAsleepMin
// unless set; kParallelMin makes every call of kParallelMin positions or more do so, as
// tests of the threads need); returns the one it replaces.
int64_t set_parallel_asleep_min(int64_t positions);

}  // namespace fastmse
