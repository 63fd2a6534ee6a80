// The kernel interface every fastmse backend implements: five passes over a strided,
// broadcast problem. Plain C++ on raw buffers; nothing here knows about Python.
#pragma once

#include <cstdint>

namespace fastmse {

enum class ScalarType : int { float16 = 0, float32 = 1, float64 = 2 };

// Fixed summation geometry. Results depend on these (and on the problem's shape and
// strides) and on nothing else: not on the thread count, not on scheduling.
inline constexpr int64_t kLanes = 8;             // float64 accumulators per block
inline constexpr int64_t kBlock = 2048;          // elements per block, one output
inline constexpr int64_t kRowBlock = 256;        // reduced positions per block, across outputs
inline constexpr int64_t kTile = 64;             // outputs per task, across outputs
inline constexpr int64_t kChunk = 1 << 15;       // reduced positions per task
inline constexpr int64_t kParallelMin = 1 << 16; // elements below which one thread runs
inline constexpr int kMaxDims = 64;

// One array taking part in a call: its element at index (0, ..., 0) and its strides
// over Problem::shape, in elements (zero along broadcast dimensions).
struct Operand {
    void* data = nullptr;  // nullptr: absent (no weights, no output)
    const int64_t* strides = nullptr;
};

// A call's data. Dimensions [0, n_kept) index the reduced result; [n_kept, ndim) are
// summed over. predictions, targets and out hold `dtype`; weights hold `dtype` or
// float64; loss and scale hold float64 and have zero strides over the summed dimensions.
struct Problem {
    ScalarType dtype = ScalarType::float64;
    ScalarType weights_dtype = ScalarType::float64;
    int ndim = 0;
    int n_kept = 0;
    const int64_t* shape = nullptr;
    Operand predictions, targets, weights;
    Operand out;    // elementwise result: gradient or squared error
    Operand loss;   // float64 sums, one per kept position
    Operand scale;  // float64 gradient factor, one per kept position
    int num_threads = 1;
};

// loss = sum over the summed dimensions of w * (p - t)^2, in float64.
void sum_squared_error(const Problem& problem);
// out = scale * w * (p - t), computed in float64 and rounded once to `dtype`.
void scaled_difference(const Problem& problem);
// Both of the above in one pass over memory.
void sum_squared_error_and_scaled_difference(const Problem& problem);
// out = w * (p - t)^2, elementwise.
void squared_error(const Problem& problem);
// loss = sum over the summed dimensions of w * (p - t), in float64: the gradient where
// predictions is broadcast along those dimensions, before its constant factor.
void sum_difference(const Problem& problem);

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
bool built_with_openmp();

}  // namespace fastmse
