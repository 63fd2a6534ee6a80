// The five passes on the CPU: reduce, grad, reduce_and_grad, squared_error and
// reduce_difference (cpp/kernels.hpp).
//
// Summation order, fixed by the problem alone:
//   * The summed positions of one output are cut into tasks of kChunk positions.
//   * Inside a task, blocks are summed, then combined by a binary-counter cascade
//     (pairwise summation without recursion; cpp/layout.hpp).
//   * Lane mode (the fastest dimension is summed): a block is kBlock consecutive
//     positions of one output, spread over kLanes float64 accumulators by position.
//   * Across-output mode (the fastest dimension is kept): a block is kRowBlock summed
//     positions for a group of kOutputsPerTask neighbouring outputs, each output's spread
//     over kLanes float64 accumulators by position (so that a narrow batch's additions do
//     not wait on each other), and the inner loop runs along contiguous memory.
//   * Task sums of one output are combined by the same cascade in task order.
// Threads only decide who computes which task, so results are bitwise identical for
// any thread count. The Numba backend (python/fastmse/_numba.py) mirrors this file; the
// short-row tasks and across_block here are faster walks of the same order, so Numba's
// general walk gives the same bits without them.
//
// This file is compiled once per instruction set (FASTMSE_ISA names the copy and its
// namespace; see CMakeLists.txt), and cpp/isa.cpp picks one at run time. So all code
// here and in the headers it includes has internal linkage, and nothing here
// instantiates library templates with out-of-line code (std::vector): the linker keeps
// one copy of such code for the whole module, and an AVX2 copy of it would then run on
// CPUs without AVX2.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <type_traits>
#include <utility>

#include "half.hpp"
#include "kernel_set.hpp"
#include "layout.hpp"
#include "position.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__GNUC__) && defined(__AVX__)
#include <immintrin.h>
#endif

#ifndef FASTMSE_ISA
#define FASTMSE_ISA baseline
#endif
// Whether this copy has float16 and bfloat16 loops of its own. Only the baseline copy
// needs them: their software conversions ran no faster in the AVX2 copy, and they were
// half of its compile time (benchmarks/RESULTS.md, session 21). cpp/isa.cpp runs such
// problems on the baseline copy where the chosen one has none (KernelSet::own_16_bit).
#ifndef FASTMSE_ISA_16_BIT
#define FASTMSE_ISA_16_BIT 1
#endif
#define FASTMSE_STRINGIFY_(x) #x
#define FASTMSE_STRINGIFY(x) FASTMSE_STRINGIFY_(x)

namespace fastmse {
namespace {

template <>
struct Scalar<Half> {
    static double load(Half x) { return half_to_float(x); }
    static Half store(double v) { return double_to_half(v); }
};

template <>
struct Scalar<BFloat16> {
    static double load(BFloat16 x) { return bfloat16_to_float(x); }
    static BFloat16 store(double v) { return double_to_bfloat16(v); }
};

}  // namespace

namespace FASTMSE_ISA {
namespace {

constexpr int64_t kPrefetchDistance = 1024;  // elements

// An input element as float64. Inputs are read where they are, aligned to their element
// size or not (arrays that Dask or pickle moved between processes often are not), through
// a type of alignment 1: the same loads where the compiler allows it (a memcpy, which is
// what MSVC gets, kept GCC from vectorizing the lanes).
#if defined(__GNUC__)
typedef float unaligned_float __attribute__((aligned(1)));
typedef double unaligned_double __attribute__((aligned(1)));
typedef Half unaligned_half __attribute__((aligned(1)));
typedef BFloat16 unaligned_bfloat16 __attribute__((aligned(1)));
template <typename T>
struct Unaligned;
template <>
struct Unaligned<float> {
    using type = unaligned_float;
};
template <>
struct Unaligned<double> {
    using type = unaligned_double;
};
template <>
struct Unaligned<Half> {
    using type = unaligned_half;
};
template <>
struct Unaligned<BFloat16> {
    using type = unaligned_bfloat16;
};

// UBSan's alignment check does not see the typedef's alignment of 1 (its reports here
// are of the in-place reads that this exists for); the rest of UBSan still applies.
template <typename T>
__attribute__((no_sanitize("alignment"))) inline double load(const T* at) {
    return Scalar<T>::load(*reinterpret_cast<const typename Unaligned<T>::type*>(at));
}
#else
template <typename T>
inline double load(const T* at) {
    T value;
    std::memcpy(&value, at, sizeof value);
    return Scalar<T>::load(value);
}
#endif

// The loads of one position; its arithmetic is cpp/position.hpp's.
template <typename T>
inline double difference(const T* p, const T* t) {
    return load(p) - load(t);
}

template <bool Weighted, typename Wt>
inline double weight_at(const Wt* w) {
    if constexpr (Weighted) return load(w);
    return 1.0;
}

// One position: writes `out` where the pass does and returns its share of the sum.
template <Pass P, bool Weighted, typename T, typename Wt>
inline double element(const T* p, const T* t, const Wt* w, T* out, double scale) {
    const double d = difference(p, t);
    const double weight = weight_at<Weighted>(w);
    return apply<P>(d, weight, scale, out);
}

// Asks for the inputs kPrefetchDistance elements ahead: the hardware prefetcher alone
// leaves sums and the one-thread gradient short of a plain streaming read (compare the
// "read" ceiling of `python -m fastmse bench`).
inline void prefetch(const void* address) {
#if defined(__GNUC__)
    __builtin_prefetch(address);
#else
    (void)address;
#endif
}

// The address ahead is computed as an integer: it may lie past the end of the array (in
// a later row that is not there), where pointer arithmetic would be undefined.
template <typename T>
inline const void* ahead(const T* p) {
    return reinterpret_cast<const void*>(reinterpret_cast<std::uintptr_t>(p) +
                                         kPrefetchDistance * sizeof(T));
}

template <typename T>
inline void prefetch_inputs(const T* p, const T* t) {
    prefetch(ahead(p));
    prefetch(ahead(t));
}

// GCC deletes a call to a function that only prefetches (it has no side effects) unless it
// inlines the call first: a lambda of row_range that did so was compiled to nothing. Such
// helpers are always inlined.
#if defined(__GNUC__)
#define FASTMSE_ALWAYS_INLINE __attribute__((always_inline))
#else
#define FASTMSE_ALWAYS_INLINE
#endif

// The lines of `count` elements from `from` on, kPrefetchDistance elements ahead, for the
// loops over short rows, whose steps are not a line's.
template <typename T>
FASTMSE_ALWAYS_INLINE inline void prefetch_span(const T* from, int64_t count) {
    const std::uintptr_t first = reinterpret_cast<std::uintptr_t>(ahead(from));
    const std::uintptr_t end = first + static_cast<std::uintptr_t>(count) * sizeof(T);
    for (std::uintptr_t at = first; at < end; at += 64) prefetch(reinterpret_cast<const void*>(at));
}

// prefetch_span of Count elements, a line every 64 bytes from the first, unrolled: spans
// that follow one another so ask for every line of theirs, with no loop to run.
template <int64_t Count, typename T>
FASTMSE_ALWAYS_INLINE inline void prefetch_lines(const T* from) {
    const std::uintptr_t first = reinterpret_cast<std::uintptr_t>(ahead(from));
    for (std::uintptr_t at = 0; at < Count * sizeof(T); at += 64) prefetch(reinterpret_cast<const void*>(first + at));
}

// Four float64 lanes to a register with AVX, two without (SSE2, NEON); the stores of
// `out` align to whole ones of them (run_lanes), whatever the compiler.
#if defined(__AVX__)
constexpr int64_t kVectorWidth = 4;
#else
constexpr int64_t kVectorWidth = 2;
#endif

// The element types of the loops specialized beyond the general ones.
template <typename T>
inline constexpr bool kPackable = std::is_same_v<T, float> || std::is_same_v<T, double>;

#if defined(__GNUC__)
// The lanes' body written in vector types where the data is float32 or float64 and
// contiguous: GCC's vectorizer alone split the fused pass between vector and scalar code,
// differently as the file grew (a flat mse_and_grad swung between 13 and 22 ms), and
// kept the accumulators of short rows in memory. Same operations, same order, same bits.
typedef double Lanes __attribute__((vector_size(kVectorWidth * sizeof(double))));
template <typename T>
struct Packed {  // kVectorWidth elements of T at any address
    typedef T type __attribute__((vector_size(kVectorWidth * sizeof(T)), aligned(1), __may_alias__));
};

template <typename T>
inline Lanes load_packed(const T* at) {
#if defined(__AVX__)
    // GCC 12 lowers the generic float conversion to two halves and an insert.
    if constexpr (std::is_same_v<T, float>) return reinterpret_cast<Lanes>(_mm256_cvtps_pd(_mm_loadu_ps(at)));
#endif
    return __builtin_convertvector(*reinterpret_cast<const typename Packed<T>::type*>(at), Lanes);
}

// Streaming: non-temporal stores, to an address aligned to kStreamAlign, of an output too
// large to stay in cache (kStreamingStoresMin): the line is then not read first. float64
// vectors go as two 16-byte halves, which stream as fast as one 32-byte store and need
// only the 16-byte alignment NumPy gives.
template <typename T, bool Streaming = false>
inline void store_packed(T* at, Lanes value) {
#if defined(__AVX__)
    if constexpr (std::is_same_v<T, float>) {
        const __m128 narrowed = _mm256_cvtpd_ps(reinterpret_cast<__m256d>(value));
        if constexpr (Streaming)
            _mm_stream_ps(at, narrowed);
        else
            _mm_storeu_ps(at, narrowed);
        return;
    }
    if constexpr (Streaming && std::is_same_v<T, double>) {
        const __m256d whole = reinterpret_cast<__m256d>(value);
        _mm_stream_pd(at, _mm256_castpd256_pd128(whole));
        _mm_stream_pd(at + 2, _mm256_extractf128_pd(whole, 1));
        return;
    }
#endif
    *reinterpret_cast<typename Packed<T>::type*>(at) = __builtin_convertvector(value, typename Packed<T>::type);
}
#endif

inline constexpr std::uintptr_t kStreamAlign = 16;  // bytes

// One element of an output that streams, stored non-temporally too: a plain store to a
// line that the vectors around it stream reads the line in and flushes the write-combining
// buffer (a 2**22 float64 gradient peeling and finishing each 2,048-position block with
// plain stores took 2.3-2.4 ms against 1.8 streaming them).
template <typename T>
inline void store_streaming(T* at, T value) {
#if defined(__GNUC__) && defined(__AVX__) && defined(__x86_64__)
    if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
        using Bits = std::conditional_t<std::is_same_v<T, float>, int, long long>;
        Bits bits;
        std::memcpy(&bits, &value, sizeof bits);
        if constexpr (std::is_same_v<T, float>)
            _mm_stream_si32(reinterpret_cast<int*>(at), bits);
        else
            _mm_stream_si64(reinterpret_cast<long long*>(at), bits);
        return;
    }
#endif
    *at = value;
}
#if defined(__GNUC__)

// kVectorWidth positions given their differences and weights (unread where there are none):
// cpp/position.hpp's scalar expressions, the weight 1 left out (x * 1 == x exactly).
// Writes the squared error or the gradient (factor: each position's scale) at `out` where
// the pass does; returns sum plus the positions' terms where it sums.
template <Pass P, bool Weighted, typename T, bool Streaming = false>
inline Lanes packed_positions(Lanes d, Lanes weight, Lanes factor, T* out, Lanes sum) {
    const Lanes wd = Weighted ? weight * d : d;
    if constexpr (P == Pass::squared_error) store_packed<T, Streaming>(out, wd * d);
    if constexpr (P == Pass::grad || P == Pass::reduce_and_grad)
        store_packed<T, Streaming>(out, Weighted ? (factor * weight) * d : factor * d);
    if constexpr (P == Pass::reduce_difference) return sum + wd;
    if constexpr (P == Pass::reduce || P == Pass::reduce_and_grad) return sum + wd * d;
    return sum;
}

// Positions [i, i + kLanes * k) for the largest whole k, lane l taking i + l + kLanes * j
// (acc: the lanes of a reducing pass, unread otherwise); OneTarget: *t for every position
// (a scalar target, a target per row along its row, or the 0 that weight sums subtract);
// returns where it stopped.
template <Pass P, bool Weighted, bool OneTarget, bool Streaming, typename T, typename Wt>
inline int64_t run_packed(double* acc, const T* p, const T* t, const Wt* w, T* out, double scale, int64_t i,
                          int64_t n, int64_t extent) {
    constexpr int64_t kParts = kLanes / kVectorWidth;
    Lanes sum[kParts] = {};
    if constexpr (kReduces<P>)
        for (int64_t k = 0; k < kParts; ++k) std::memcpy(&sum[k], acc + k * kVectorWidth, sizeof(Lanes));
    Lanes target = {}, factor;  // each lane set, not 0 + x: a target or factor of -0 keeps its sign
    for (int64_t j = 0; j < kVectorWidth; ++j) {
        if constexpr (OneTarget)
            if (i + kLanes <= n) target[j] = load(t);
        factor[j] = scale;
    }
    for (; i + kLanes <= n; i += kLanes) {
        if (i + kPrefetchDistance < extent) {
            if constexpr (OneTarget) prefetch(ahead(p + i));
            else prefetch_inputs(p + i, t + i);
            if constexpr (Weighted) prefetch(ahead(w + i));
        }
        Lanes d[kParts], weight[kParts] = {};
        for (int64_t k = 0; k < kParts; ++k) {
            const int64_t at = i + k * kVectorWidth;
            d[k] = load_packed(p + at) - (OneTarget ? target : load_packed(t + at));
            if constexpr (Weighted) weight[k] = load_packed(w + at);
        }
        for (int64_t k = 0; k < kParts; ++k)
            sum[k] = packed_positions<P, Weighted, T, Streaming>(d[k], weight[k], factor,
                                                   kWrites<P> ? out + i + k * kVectorWidth : nullptr, sum[k]);
    }
    if constexpr (kReduces<P>)
        for (int64_t k = 0; k < kParts; ++k) std::memcpy(acc + k * kVectorWidth, &sum[k], sizeof(Lanes));
    return i;
}
#endif

// n consecutive positions along one dimension; position i goes to lane (lane + i) % kLanes.
// The dimension goes on for `extent` positions from c: prefetches stop there, since one
// past the end of a small array may cost a page walk, which shows in small calls.
// Streaming (passes that write, `out` contiguous and aligned to its elements): `out` stored
// non-temporally (store_packed, store_streaming) where its vectors fall aligned, as the
// gradient's peel makes them and the fused pass's, which follow its lanes, may; the
// caller fences the stores.
template <Pass P, bool Weighted, bool Unit, typename T, typename Wt, bool Streaming = false>
inline void run_lanes(double* lanes, int64_t lane, Cursor<T, Wt> c, const int64_t* step, double scale,
                      int64_t n, int64_t extent) {
    // Plain locals, not struct members behind a captured reference: GCC vectorizes the
    // 8-lane body only when it can see that the stores cannot move these pointers.
    const T* const p = c.p;
    const T* const t = c.t;
    const Wt* const w = c.w;
    T* const out = c.out;
    const int64_t sp = Unit ? 1 : step[kP], st = Unit ? 1 : step[kT];
    const int64_t sw = Unit ? 1 : step[kW], so = Unit ? 1 : step[kOut];
    bool streams = Streaming;
    if constexpr (Streaming && kReduces<P>) {
        const int64_t head = std::min(n, (kLanes - (lane & (kLanes - 1))) & (kLanes - 1));
        streams = reinterpret_cast<std::uintptr_t>(out + head) % kStreamAlign == 0;
    }
    auto value = [=](int64_t i) {
        const Wt* wi = nullptr;
        T* oi = nullptr;
        if constexpr (Weighted) wi = w + i * sw;
        if constexpr (kWrites<P>) oi = out + i * so;
        if (Streaming && streams) {
            T staged;
            const double share = element<P, Weighted>(p + i * sp, t + i * st, wi, &staged, scale);
            store_streaming(oi, staged);
            return share;
        }
        return element<P, Weighted>(p + i * sp, t + i * st, wi, oi, scale);
    };
    double acc[kLanes] = {};
    int64_t i = 0;
    if constexpr (kReduces<P>) {
        for (int64_t l = 0; l < kLanes; ++l) acc[l] = lanes[l];
        for (; i < n && ((lane + i) & (kLanes - 1)) != 0; ++i) acc[(lane + i) & (kLanes - 1)] += value(i);
    }
    // Bytes to which `out` is aligned for its vector stores.
    constexpr std::uintptr_t kStore = Streaming ? kStreamAlign : kVectorWidth * sizeof(T);
    if constexpr (kWrites<P> && !kReduces<P>) {
        // `out`'s vector stores aligned (the walk's order is free here): NumPy aligns float64
        // arrays to 16 bytes, and every other 32-byte store then spanned two cache lines
        // (2**22 float64 mse_grad 3.4 ms, 2.3 aligned).
        const std::uintptr_t misaligned = reinterpret_cast<std::uintptr_t>(out) % kStore;
        if (so == 1 && misaligned % sizeof(T) == 0) {
            const int64_t peel = static_cast<int64_t>((kStore - misaligned) % kStore / sizeof(T));
            for (; i < std::min(n, peel); ++i) value(i);
        }
    }
    bool packed = false;
#if defined(__GNUC__)
    if constexpr (kPackable<T> && (!Weighted || kPackable<Wt>)) {
        if constexpr (Unit) {
            if (Streaming && streams)
                i = run_packed<P, Weighted, false, Streaming>(acc, p, t, w, out, scale, i, n, extent);
            else
                i = run_packed<P, Weighted, false, false>(acc, p, t, w, out, scale, i, n, extent);
            packed = true;
        } else if (sp == 1 && st == 0 && (!Weighted || sw == 1) && (!kWrites<P> || so == 1)) {
            i = run_packed<P, Weighted, true, false>(acc, p, t, w, out, scale, i, n, extent);  // out unchecked: plain
            packed = true;
        }
    }
#endif
    if (!packed) {
        // Eight positions are loaded before any is stored (`out` is never a partial overlap
        // of an input; the Python layer makes sure), so each block of lanes vectorizes.
        for (; i + kLanes <= n; i += kLanes) {
            if constexpr (Unit)
                if (i + kPrefetchDistance < extent) prefetch_inputs(p + i, t + i);
            double d[kLanes], weight[kLanes];
            for (int64_t l = 0; l < kLanes; ++l) {
                d[l] = difference(p + (i + l) * sp, t + (i + l) * st);
                weight[l] = weight_at<Weighted>(w + (Weighted ? (i + l) * sw : 0));
            }
            if constexpr (kWrites<P>)
                for (int64_t l = 0; l < kLanes; ++l) write<P>(out + (i + l) * so, scale, weight[l], d[l]);
            if constexpr (kReduces<P>)
                for (int64_t l = 0; l < kLanes; ++l) acc[l] += term<P>(weight[l], d[l]);
        }
    }
    for (; i < n; ++i) {
        if constexpr (kReduces<P>)
            acc[(lane + i) & (kLanes - 1)] += value(i);
        else
            value(i);
    }
    if constexpr (kReduces<P>)
        for (int64_t l = 0; l < kLanes; ++l) lanes[l] = acc[l];
}

// Runs fn(begin, end) over contiguous ranges of [0, n_tasks), one range per thread.
template <typename Fn>
void for_each_range(int64_t n_tasks, bool parallel, int num_threads, Fn&& fn) {
#ifdef _OPENMP
    if (parallel && num_threads > 1 && n_tasks > 1) {
        const int64_t threads = std::min<int64_t>(num_threads, n_tasks);
#pragma omp parallel num_threads(static_cast<int>(threads))
        {
            const int64_t tid = omp_get_thread_num();
            const int64_t team = omp_get_num_threads();
            fn(n_tasks * tid / team, n_tasks * (tid + 1) / team);
        }
        team_ran();
        return;
    }
#endif
    (void)parallel;
    (void)num_threads;
    fn(int64_t{0}, n_tasks);
}

// n values of X on the heap, zeroed, for the length of a call.
template <typename X>
class Scratch {
   public:
    void allocate(int64_t n) {
        data_ = static_cast<X*>(std::calloc(static_cast<size_t>(n), sizeof(X)));
        if (data_ == nullptr && n > 0) throw std::bad_alloc();
    }
    X& operator[](int64_t i) { return data_[i]; }
    X* data() { return data_; }
    Scratch() = default;
    Scratch(const Scratch&) = delete;
    Scratch& operator=(const Scratch&) = delete;
    ~Scratch() { std::free(data_); }

   private:
    X* data_ = nullptr;
};

// Task sums of a call.
using Partials = Scratch<double>;

// 1 / divisor where that is a number exactly (the divisor a power of two: the mean of rows
// of 2, 4, 8 ... positions), else 0. x / 2**k and x * 2**-k are the same real number, rounded
// once, so the same bits; the division held up sums of rows of a few positions (a third of
// the time of rows of 2). Both normal numbers: a subnormal one would read as 0 where
// another library has set the CPU to flush them, and the Numba backend divides.
inline double exact_reciprocal(double divisor) {
    int exponent = 0;  // divisor is +-2**(exponent - 1), its reciprocal +-2**(1 - exponent)
    if (!std::isfinite(divisor) || std::fabs(std::frexp(divisor, &exponent)) != 0.5 || exponent < -1021 ||
        exponent > 1023)
        return 0.0;
    return std::ldexp(std::copysign(1.0, divisor), 1 - exponent);
}

// Where outputs' sums go: Problem::loss, each sum divided and rounded once to its dtype.
class LossStore {
   public:
    explicit LossStore(const Problem& problem)
        : data_(problem.loss.data),
          type_(problem.loss_dtype),
          divisor_(problem.loss_divisor),
          reciprocal_(exact_reciprocal(problem.loss_divisor)),
          divisors_(problem.loss_divisors),
          weight_sums_in_pass_(problem.weight_sums_in_pass) {}

    // Float64 sums of the outputs from `origin` on, into `buffer` (a block of rows summed
    // first, see run_rows_first).
    LossStore(double* buffer, int64_t origin)
        : data_(buffer),
          type_(ScalarType::float64),
          divisor_(1.0),
          reciprocal_(1.0),
          divisors_(nullptr),
          origin_(origin) {}

    // Problem::weight_sums_in_pass: the pass divides each sum by its weight sum before
    // put_rows (which then divides by nothing more).
    WeightSumsInPass* weight_sums_in_pass() const { return weight_sums_in_pass_; }

    // The loss at element offset `at`, from its sum.
    void put(int64_t at, double sum) const { put_rows(at, 1, &sum, 1); }

    // The losses of n outputs `stride` apart from `at`, from their sums (overwritten): many
    // short rows at once take one dtype switch and vector divisions.
    void put_rows(int64_t at, int64_t stride, double* sums, int64_t n) const {
        divide_rows(at, stride, sums, n);
        store_rows(at, stride, sums, n);
    }

    // put_rows in two steps: the sums divided (in place), then rounded and stored. A few
    // rows divided at once (inlined where n is a constant) let the divisions overlap the
    // loop that sums the next rows, where after a batch of rows they queued up.
#if defined(__GNUC__)
    __attribute__((always_inline))
#endif
    inline void divide_rows(int64_t at, int64_t stride, double* sums, int64_t n) const {
        if (divisors_ != nullptr && stride == 1) {  // vector divisions
            for (int64_t i = 0; i < n; ++i) sums[i] /= divisors_[at + i];
        } else if (divisors_ != nullptr) {
            for (int64_t i = 0; i < n; ++i) sums[i] /= divisors_[at + i * stride];
        } else if (divisor_ == 1.0) {  // sums for a caller to combine
        } else if (reciprocal_ != 0.0) {
            for (int64_t i = 0; i < n; ++i) sums[i] *= reciprocal_;
        } else {
            for (int64_t i = 0; i < n; ++i) sums[i] /= divisor_;
        }
    }

    // The loss from element offset `at` on where each output's loss is its sum rounded to
    // T (nothing divided, stored in T's dtype): there a pass may store it itself. Else null.
    template <typename T>
    T* undivided_in(int64_t at) const {
        constexpr ScalarType kType = std::is_same_v<T, float> ? ScalarType::float32 : ScalarType::float64;
        static_assert(kPackable<T>);
        const bool undivided = divisors_ == nullptr && divisor_ == 1.0 && weight_sums_in_pass_ == nullptr;
        return undivided && type_ == kType ? static_cast<T*>(data_) + (at - origin_) : nullptr;
    }

    void store_rows(int64_t at, int64_t stride, const double* sums, int64_t n) const {
        at -= origin_;
        switch (type_) {
            case ScalarType::float16: store(static_cast<Half*>(data_) + at, stride, sums, n); break;
            case ScalarType::float32: store(static_cast<float*>(data_) + at, stride, sums, n); break;
            case ScalarType::float64: store(static_cast<double*>(data_) + at, stride, sums, n); break;
            case ScalarType::bfloat16: store(static_cast<BFloat16*>(data_) + at, stride, sums, n); break;
        }
    }

   private:
    template <typename L>
    static void store(L* loss, int64_t stride, const double* values, int64_t n) {
        if (stride == 1) {
            for (int64_t i = 0; i < n; ++i) loss[i] = Scalar<L>::store(values[i]);
        } else {
            for (int64_t i = 0; i < n; ++i) loss[i * stride] = Scalar<L>::store(values[i]);
        }
    }

    void* data_;
    ScalarType type_;
    double divisor_;
    double reciprocal_;  // exact_reciprocal(divisor_)
    const double* divisors_;
    WeightSumsInPass* weight_sums_in_pass_ = nullptr;
    int64_t origin_ = 0;
};

// Which tasks there are and where their sums go; threads only pick tasks from it.
struct Schedule {
    Layout layout;
    LossStore loss;
    int64_t n_chunks;
    bool across_outputs;
    bool short_rows;  // lane mode, each output one block along one dimension
    bool parallel;
    int num_threads;
    std::atomic<bool>* negative_prediction;  // Problem::negative_prediction
    Partials partials;  // task sums when an output spans several tasks
    // Their weight sums, where lane mode finds them in the pass (Problem::weight_sums_in_pass).
    Partials weight_partials;

    explicit Schedule(const Problem& problem)
        : layout(problem),
          loss(problem),
          num_threads(problem.num_threads),
          negative_prediction(problem.negative_prediction) {
        const Layout& l = layout;
        n_chunks = std::max<int64_t>(1, (l.n_red + kChunk - 1) / kChunk);
        const int j = l.n_kept - 1, r = l.last();
        const auto cost = [&](int d) {
            return std::llabs(l.strides[kP][d]) + std::llabs(l.strides[kT][d]);
        };
        // An output of one position sums to 0 + its term in either mode; rows walk it faster.
        across_outputs = l.n_kept > 0 && l.shape[j] > 1 && l.n_red > 1 && (l.shape[r] == 1 || cost(j) < cost(r));
        short_rows = !across_outputs && l.ndim - l.n_kept == 1 && l.n_red <= kBlock;
        // Rows of under kCountedTwiceBelow positions cost 2-3x the flat sum's time a position (a
        // division and shuffles a row): counted twice, so that the team wakes for them from half
        // the flat sum's size (rows of 3, 2**18 - 1 positions: 126-129 us on one thread, the team
        // asleep).
        constexpr int64_t kCountedTwiceBelow = 16;
        const int64_t positions = l.n_out * l.n_red;
        const bool costly_rows = short_rows && l.n_red < kCountedTwiceBelow;
        parallel = problem.num_threads > 1 && run_on_team(costly_rows ? 2 * positions : positions);
    }

    // Stores one task's sum for output o (kept row-major index) and chunk c.
    void store(int64_t o, int64_t c, const int64_t* kept_offset, double value) {
        if (n_chunks > 1) {
            partials[o * n_chunks + c] = value;
        } else if (layout.data[kLoss]) {
            loss.put(kept_offset[kLoss], value);
        }
    }

    // The same for a weighted mean whose weight sums the task found: the sum divided by
    // its weight sum (a zero one reported).
    void store_weighted(int64_t o, int64_t c, const int64_t* kept_offset, double value, double weight_sum) {
        if (n_chunks > 1) {
            partials[o * n_chunks + c] = value;
            weight_partials[o * n_chunks + c] = weight_sum;
        } else {
            put_weighted(kept_offset, value, weight_sum);
        }
    }

    void finish() {
        if (n_chunks == 1 || !layout.data[kLoss]) return;
        WeightSumsInPass* const in_pass = loss.weight_sums_in_pass();
        Odometer kept(layout, 0, layout.n_kept);
        for (int64_t o = 0; o < layout.n_out; ++o) {
            if (o > 0) kept.seek(o);
            const double value = total(partials, o);
            if (in_pass)
                put_weighted(kept.offset, value, total(weight_partials, o));
            else
                loss.put(kept.offset[kLoss], value);
        }
    }

   private:
    double total(Partials& sums, int64_t o) const {
        Cascade<1> cascade;
        for (int64_t c = 0; c < n_chunks; ++c) cascade.push(&sums[o * n_chunks + c], 1);
        double value;
        cascade.total(&value, 1);
        return value;
    }

    void put_weighted(const int64_t* kept_offset, double value, double weight_sum) const {
        if (weight_sum == 0.0) loss.weight_sums_in_pass()->zero_sum.store(true, std::memory_order_relaxed);
        loss.put(kept_offset[kLoss], value / weight_sum);
    }
};

// Whether one of n weights, sw apart, is negative, as fastmse._resolve checks them (NaN
// passes). Branch-free, so that it vectorizes.
template <typename Wt>
inline bool any_negative(const Wt* w, int64_t sw, int64_t n) {
    const auto negative = [](const Wt* at) {
        if constexpr (kPackable<Wt>)
            return static_cast<unsigned>(*at < Wt(0));
        else
            return static_cast<unsigned>(load(at) < 0.0);
    };
    unsigned found = 0;
    if (sw == 1) {  // a loop of its own: with the step a variable it would not vectorize
        for (int64_t j = 0; j < n; ++j) found |= negative(w + j);
    } else {
        for (int64_t j = 0; j < n; ++j) found |= negative(w + j * sw);
    }
    return found != 0;
}

// Outputs of a pass that writes from which its stores stream (store_packed). On a 2-vCPU
// Xeon VM, mse_grad of 2**22 float64 positions (inputs and output 96 MiB) took 1.8 ms so
// against 2.3, 2**24 9.7 against 11.9; a C loop 2**21 float64 positions (16 MiB out) 0.92
// against 0.90 with plain stores, 24 MiB out as fast either way, 32 MiB 1.81 against 1.90.
// An output this large leaves the cache before it is read.
inline constexpr int64_t kStreamingStoresMin = int64_t{24} << 20;  // bytes
template <Pass P, typename T>
inline constexpr bool kStreams = kWrites<P> && kPackable<T>;

// Whether a pass's gradient may stream (each caller adds the alignment its stores need): an
// output of kStreamingStoresMin or more that is not an input too. In place (`out` is the
// predictions or the targets: the only overlap the Python layer lets through) each
// streamed store hits a line the pass has just read: one thread, 2**24 float32 positions,
// mse_grad(axis=0, out=p) of (N, 16) took 1.41 ns a position streamed against 0.86 plain.
template <Pass P, typename T>
bool streams_to_out(const Layout& l) {
    if constexpr (!kStreams<P, T>) {
        return false;
    } else {
        return l.n_out * l.n_red * static_cast<int64_t>(sizeof(T)) >= kStreamingStoresMin &&
               l.data[kOut] != l.data[kP] && l.data[kOut] != l.data[kT];
    }
}

// Tasks of lane mode: one output over one chunk of its summed positions.
template <Pass P, bool Weighted, typename T, typename Wt>
void lane_tasks(Schedule& schedule, int64_t begin, int64_t end) {
    const Layout& l = schedule.layout;
    const int last = l.last();
    int64_t step[kOperands];
    for (int k = 0; k < kOperands; ++k) step[k] = l.strides[k][last];
    const bool unit = step[kP] == 1 && step[kT] == 1 && (!Weighted || step[kW] == 1) &&
                      (!kWrites<P> || step[kOut] == 1);
    // A weighted loss whose weight sums the pass finds (Problem::weight_sums_in_pass): each
    // block's weights summed again, from cache, as reduce_difference sums w - 0 over the
    // same plan (w as its predictions, 0 as its targets: the same lanes, blocks and
    // cascades, so the same bits), and their signs checked.
    constexpr bool kInPass = Weighted && P == Pass::reduce;
    WeightSumsInPass* const in_pass = kInPass ? schedule.loss.weight_sums_in_pass() : nullptr;
    int64_t weight_step[kOperands] = {};
    weight_step[kP] = step[kW];
    const Wt zero{};  // 0 in every weight type
    // A weight sum (Problem::negative_prediction): the weights, its predictions, checked.
    constexpr bool kChecksPredictions = P == Pass::reduce_difference && !Weighted;
    std::atomic<bool>* const negative_prediction = kChecksPredictions ? schedule.negative_prediction : nullptr;
    bool negative = false;
    // Contiguous rows of at most kBlock positions summed with one row of targets for all of
    // them (a target per column over everything, which fastmse._compute._two_stage leaves
    // to lane mode): each block is one run, its targets read from the row repeated
    // (`repeated`, from the block's position in its row on), the same values in the same
    // lanes as the walk row by row gives. (Weights per sample spread over their rows the
    // same way ran no faster than their rows summed first.)
    const int64_t row = l.shape[last];
    const auto rows_of = [&](int k) { return l.strides[k][last - 1] == row; };
    const bool shared_target_row = unit && !in_pass && !negative_prediction && l.ndim - l.n_kept == 2 &&
                                   row <= kBlock && l.strides[kT][last - 1] == 0 && rows_of(kP) &&
                                   (!Weighted || rows_of(kW)) && (!kWrites<P> || rows_of(kOut));
    // Not on the stack, which every call would probe page by page; as long as the blocks
    // read (outputs of a few rows each refill it).
    const int64_t block_size = std::min(kBlock, l.n_red);
    const bool streaming = unit && streams_to_out<P, T>(l) &&
                           reinterpret_cast<std::uintptr_t>(l.data[kOut]) % sizeof(T) == 0;
    Scratch<T> repeated;  // block_size + row values
    if (shared_target_row) repeated.allocate(block_size + row);
    const T* repeated_from = nullptr;  // the row in `repeated`
    Odometer kept(l, 0, l.n_kept);
    Odometer summed(l, l.n_kept, l.ndim);
    int64_t kept_at = -1;
    for (int64_t task = begin; task < end; ++task) {
        const int64_t o = task / schedule.n_chunks, c = task % schedule.n_chunks;
        if (o != kept_at) kept.seek(o), kept_at = o;
        double scale = 0.0;
        if (l.data[kScale]) scale = static_cast<const double*>(l.data[kScale])[kept.offset[kScale]];
        const int64_t lo = c * kChunk, hi = std::min(lo + kChunk, l.n_red);
        summed.seek(lo);
        Cascade<1> cascade, weight_cascade;
        for (int64_t block = lo; block < hi; block += kBlock) {
            double acc[kLanes] = {}, weight_acc[kLanes] = {};
            const int64_t block_end = std::min(block + kBlock, hi);
            if (shared_target_row) {
                const T* const targets = static_cast<const T*>(l.data[kT]) + kept.offset[kT];
                if (targets != repeated_from) {
                    T* const to = repeated.data();
                    std::memcpy(to, targets, sizeof(T) * row);  // memcpy: the row may be misaligned
                    for (int64_t n = row; n < block_size + row; n *= 2)  // copies of whole rows, doubling
                        std::memcpy(to + n, to, sizeof(T) * std::min(n, block_size + row - n));
                    repeated_from = targets;
                }
                Cursor<T, Wt> at = cursor_at<T, Wt>(l, kept.offset, summed.offset);
                at.t = repeated.data() + block % row;
                if (streaming)
                    run_lanes<P, Weighted, true, T, Wt, kStreams<P, T>>(acc, 0, at, step, scale, block_end - block,
                                                                        l.n_red - block);
                else
                    run_lanes<P, Weighted, true>(acc, 0, at, step, scale, block_end - block, l.n_red - block);
                summed.seek(block_end);  // across rows: advance carries into one row only
            }
            for (int64_t pos = shared_target_row ? block_end : block; pos < block_end;) {
                const int64_t extent = l.shape[last] - summed.index[last];
                const int64_t n = std::min(extent, block_end - pos);
                const Cursor<T, Wt> at = cursor_at<T, Wt>(l, kept.offset, summed.offset);
                if (streaming)
                    run_lanes<P, Weighted, true, T, Wt, kStreams<P, T>>(acc, pos - block, at, step, scale, n, extent);
                else if (unit)
                    run_lanes<P, Weighted, true>(acc, pos - block, at, step, scale, n, extent);
                else
                    run_lanes<P, Weighted, false>(acc, pos - block, at, step, scale, n, extent);
                if constexpr (kInPass) {
                    if (in_pass) {
                        const Cursor<Wt, Wt> weights{at.w, &zero, nullptr, nullptr};
                        run_lanes<Pass::reduce_difference, false, false>(weight_acc, pos - block, weights, weight_step,
                                                                         0.0, n, extent);
                        negative = negative || any_negative(at.w, step[kW], n);
                    }
                }
                if constexpr (kChecksPredictions)
                    if (negative_prediction) negative = negative || any_negative(at.p, step[kP], n);
                pos += n;
                summed.advance(n);
            }
            const double block_sum = combine_lanes(acc);
            cascade.push(&block_sum, 1);
            if (in_pass) {
                const double block_weight_sum = combine_lanes(weight_acc);
                weight_cascade.push(&block_weight_sum, 1);
            }
        }
        double value;
        cascade.total(&value, 1);
        if constexpr (kInPass) {
            if (in_pass) {
                double weight_sum;
                weight_cascade.total(&weight_sum, 1);
                schedule.store_weighted(o, c, kept.offset, value, weight_sum);
                continue;
            }
        }
        if constexpr (kReduces<P>) schedule.store(o, c, kept.offset, value);
    }
    if (negative) (in_pass ? in_pass->negative_weight : *negative_prediction).store(true, std::memory_order_relaxed);
#if defined(__GNUC__) && defined(__AVX__)  // where store_packed streams
    if (streaming) _mm_sfence();  // the streamed stores seen by whoever reads `out` next
#endif
}

// A contiguous row of K positions (targets and weights: strides st and sw, 0 or 1),
// unrolled: the lanes and their combination are those of run_lanes over the row.
template <Pass P, bool Weighted, int K, typename T, typename Wt>
inline double fixed_row(const T* p, const T* t, int64_t st, const Wt* w, int64_t sw, T* out, double scale) {
    double acc[kLanes] = {};
    for (int i = 0; i < K; ++i) {
        const double d = difference(p + i, t + i * st);
        const double weight = weight_at<Weighted>(w + (Weighted ? i * sw : 0));
        if constexpr (kWrites<P>) write<P>(out + i, scale, weight, d);
        if constexpr (kReduces<P>) acc[i & (kLanes - 1)] += term<P>(weight, d);
    }
    return combine_lanes(acc);
}

// The passes that take Problem::weight_sums_in_pass.
template <Pass P>
inline constexpr bool kTakesWeightSums = P == Pass::reduce || P == Pass::grad || P == Pass::reduce_and_grad;

// Rows' weight sums (Problem::weight_sums_in_pass), one double a row, and whether one of
// their weights is negative: one flag for all (only whether a batch of rows has one
// counts), so that the sums are an array that divisions and checks run along as vectors.
struct RowWeightSums {
    double* sums;
    bool* negative;
};

// Rows of a group: see fixed_row_group and gradient_row_group.
inline constexpr int kRowGroup = 4;

#if defined(__GNUC__)
// kRowGroup contiguous rows of K positions side by side, for the passes that only sum:
// each lane of a vector is a row, summed exactly as fixed_row sums it (the same lanes,
// terms added in the same order, the same combine_lanes). Rows of a few positions leave
// fixed_row's lanes mostly idle; across rows every vector instruction does kRowGroup
// rows' work (GCC's vector extension: one AVX2 register, or two SSE2 ones).
typedef double RowGroup __attribute__((vector_size(kRowGroup * sizeof(double))));

// Targets: rows like predictions', or one per row (OneTarget: jt apart, loaded once).
// Weights: stride sw along a row (0 or 1), jw from row to row; one per row (OneWeight: sw
// is 0) is loaded once.
template <Pass P, bool Weighted, bool OneWeight, bool OneTarget, int K, typename T, typename Wt>
inline void fixed_row_group(const T* p, const T* t, int64_t jt, const Wt* w, int64_t sw, int64_t jw, double* value) {
    static_assert(!kWrites<P> && kRowGroup == 4);
    RowGroup acc[kLanes];
    for (int l = 0; l < kLanes; ++l) acc[l] = RowGroup{0.0, 0.0, 0.0, 0.0};
    RowGroup row_weight = {}, row_target = {};
    if constexpr (OneWeight) row_weight = RowGroup{load(w), load(w + jw), load(w + 2 * jw), load(w + 3 * jw)};
    if constexpr (OneTarget) row_target = RowGroup{load(t), load(t + jt), load(t + 2 * jt), load(t + 3 * jt)};
#if !defined(__clang__)
#pragma GCC unroll 16
#endif
    for (int i = 0; i < K; ++i) {
        const RowGroup ps = {load(p + i), load(p + K + i), load(p + 2 * K + i), load(p + 3 * K + i)};
        const RowGroup ts =
            OneTarget ? row_target : RowGroup{load(t + i), load(t + K + i), load(t + 2 * K + i), load(t + 3 * K + i)};
        const RowGroup d = ps - ts;
        if constexpr (Weighted) {
            const Wt* wi = w + i * sw;
            const RowGroup weight =
                OneWeight ? row_weight : RowGroup{load(wi), load(wi + jw), load(wi + 2 * jw), load(wi + 3 * jw)};
            acc[i & (kLanes - 1)] += P == Pass::reduce_difference ? weight * d : (weight * d) * d;
        } else {
            acc[i & (kLanes - 1)] += P == Pass::reduce_difference ? d : d * d;
        }
    }
    const RowGroup sum = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (int g = 0; g < kRowGroup; ++g) value[g] = sum[g];
}

// Where a row's weights are: one per row (or none), or one per position, along the row
// (stride 1) with rows of weights K apart (contiguous, like the data) or another step.
enum class RowWeights { per_row, per_position, per_position_strided };

// The gradient of kRowGroup contiguous rows of K positions, row g's scaled by factor[g]
// (and each position by its weight, for weights per position; w: row 0's, jw apart):
// packed across row boundaries, each lane taking its row's factor. streaming: as
// store_packed, `out` aligned to kStreamAlign (a branch here, not a copy of the caller's
// loop: rows of 10 weighted per sample, fused over everything, ran 10% slower so).
template <int K, RowWeights W = RowWeights::per_row, typename T, typename Wt = T>
inline void gradient_row_group(const T* p, const T* t, T* out, const double* factor, const Wt* w = nullptr,
                               int64_t jw = 0, bool streaming = false) {
    constexpr int kGroup = kRowGroup * K;
    static_assert(kGroup % kVectorWidth == 0);
    const auto stores = [&](auto streams) FASTMSE_ALWAYS_INLINE {
#if !defined(__clang__)
#pragma GCC unroll 64
#endif
        for (int e = 0; e < kGroup; e += kVectorWidth) {
            Lanes scale;
            for (int j = 0; j < kVectorWidth; ++j) scale[j] = factor[(e + j) / K];
            if constexpr (W == RowWeights::per_position) {
                scale *= load_packed(w + e);  // (scale * weight) * d, as write() has it
            } else if constexpr (W == RowWeights::per_position_strided) {
                Lanes weight;
                for (int j = 0; j < kVectorWidth; ++j) weight[j] = load(w + (e + j) / K * jw + (e + j) % K);
                scale *= weight;
            }
            store_packed<T, decltype(streams)::value>(out + e, scale * (load_packed(p + e) - load_packed(t + e)));
        }
    };
    if (streaming)
        stores(std::true_type{});
    else
        stores(std::false_type{});
}

// Which rows are summed one at a time, in vectors along the row itself: fewer instructions
// than fixed_row_group's vectors built element by element, where the row is whole vectors
// or long enough that a part-vector at its end costs less (measured on a 2-core EPYC:
// rows of 16 and 4 1.2-1.4x faster, of 10 1.1x; of 6 0.9x, so left to fixed_row_group).
// In the fused pass rows of at least 8 gain (rows of 4: 0.85x), those of 10 and 14 where
// their last vector is loaded whole (1.3-1.4x on an Intel Xeon, 2**22 float32 positions).
template <int K>
inline constexpr bool kPackedRow = K >= 4 && (K % kVectorWidth == 0 || K > 8);
template <int K>
inline constexpr bool kPackedGradientRow = K >= 8;

#if defined(__AVX__)
// The lanes I0, I1, I2, I3 of a and b side by side (0-3: a's, 4-7: b's), as __builtin_shufflevector.
template <int I0, int I1, int I2, int I3>
inline Lanes shuffle(Lanes a, Lanes b) {
#if defined(__clang__) || __GNUC__ >= 12
    return __builtin_shufflevector(a, b, I0, I1, I2, I3);
#else
    typedef int64_t Mask __attribute__((vector_size(sizeof(Lanes))));
    return __builtin_shuffle(a, b, Mask{I0, I1, I2, I3});
#endif
}

// A row's kLanes lanes (two vectors) as the pairs (l0 + l1, l4 + l5, l2 + l3, l6 + l7).
inline Lanes lane_pairs(const Lanes* acc) {
    static_assert(kLanes == 8 && kVectorWidth == 4);
    return shuffle<0, 4, 2, 6>(acc[0], acc[1]) + shuffle<1, 5, 3, 7>(acc[0], acc[1]);
}
#endif

// Lanes of comparisons (each lane 0 or -1), and whether one is set.
typedef int64_t LaneMask __attribute__((vector_size(sizeof(Lanes))));
inline bool any_lane(LaneMask mask) {
    bool any = false;
    for (int j = 0; j < kVectorWidth; ++j) any = any || mask[j] != 0;
    return any;
}

// Rows of fewer than kLanes positions, side by side in memory, summed four at a time as
// whole vectors (packed_row_group): rows of 3, 5, 6 and 7 1.5-1.7x faster than
// fixed_row_group, of 2 1.07x; rows of 4 stay with packed_row (1.07x faster). In the
// passes that also write the gradient (3-7: 1.3-1.5x faster than fixed_row_group and
// gradient_row_group), rows of 2 stay with those (1.15x faster). Measured on an Intel Xeon
// with AVX2 copies, 2**22 float32 positions in cache.
template <int K>
inline constexpr bool kPackedRowGroup = K < kLanes && !kPackedRow<K>;
template <int K>
inline constexpr bool kPackedGradientRowGroup = K >= 3 && K < kLanes;

// The values of kRowGroup rows of K < kLanes positions, side by side in kRowGroup * K /
// kVectorWidth vectors (row g's position i is value g * K + i), regrouped: values_at<I>
// gives position I of each row (row g's in lane g); per_position<V> spreads one value a
// row (row g's in lane g) over vector V's positions. With AVX a vector is four rows'
// worth and these are a permutation of each vector that holds some of them and a blend:
// element by element, GCC's extracts and inserts were most of the loop's work.
template <int K>
struct RowGroupLayout {
    static constexpr int kVectors = kRowGroup * K / kVectorWidth;
    static_assert(kVectors * kVectorWidth == kRowGroup * K);
    static constexpr int vector_of(int g, int i) { return (g * K + i) / kVectorWidth; }
    static constexpr int lane_of(int g, int i) { return (g * K + i) % kVectorWidth; }
    static constexpr int row_of(int v, int j) { return (v * kVectorWidth + j) / K; }

#if defined(__AVX__)
    // Lane g: row g's position I where vector V holds it, else `into`'s lane g.
    template <int I, int V>
    static Lanes take(Lanes into, Lanes values) {
        static_assert(kRowGroup == kVectorWidth);
        constexpr auto held = [](int g) { return vector_of(g, I) == V; };
        constexpr auto from = [](int g) { return vector_of(g, I) == V ? lane_of(g, I) : g; };
        const Lanes moved = shuffle<from(0), from(1), from(2), from(3)>(values, values);
        return shuffle<held(0) ? 4 : 0, held(1) ? 5 : 1, held(2) ? 6 : 2, held(3) ? 7 : 3>(into, moved);
    }
    template <int I, int V = vector_of(0, I)>
    static Lanes values_at(const Lanes* values, Lanes into = Lanes{}) {
        into = take<I, V>(into, values[V]);
        if constexpr (V < vector_of(kRowGroup - 1, I))
            return values_at<I, V + 1>(values, into);
        else
            return into;
    }
    template <int V>
    static Lanes per_position(Lanes rows) {
        return shuffle<row_of(V, 0), row_of(V, 1), row_of(V, 2), row_of(V, 3)>(rows, rows);
    }
#endif
};

template <typename F, int... V>
inline void for_each_constant(F&& f, std::integer_sequence<int, V...>) {
    (f(std::integral_constant<int, V>{}), ...);
}

// The sums of kRowGroup rows of K < kLanes positions into `sum` (row g's in lane g), from their
// terms side by side (RowGroupLayout): each row's positions taken as fixed_row's lanes
// (one term each, from +0: +0 + x is x but where x is -0, which FromZero terms may be)
// and combined as combine_lanes combines them, the lanes past the row left out (they would
// add +0 to a lane that is never -0).
template <int K, bool FromZero>
inline void row_group_sums(const Lanes* terms, RowGroup& sum) {
    using Layout = RowGroupLayout<K>;
    RowGroup l[K];
    for_each_constant(
        [&](auto i) {
            constexpr int kI = decltype(i)::value;
#if defined(__AVX__)
            l[kI] = Layout::template values_at<kI>(terms);
#else
            for (int g = 0; g < kRowGroup; ++g) l[kI][g] = terms[Layout::vector_of(g, kI)][Layout::lane_of(g, kI)];
#endif
            if constexpr (FromZero) l[kI] = RowGroup{} + l[kI];
        },
        std::make_integer_sequence<int, K>{});
    if constexpr (K == 1) sum = l[0];
    if constexpr (K == 2) sum = l[0] + l[1];
    if constexpr (K == 3) sum = (l[0] + l[1]) + l[2];
    if constexpr (K >= 4) {
        const RowGroup first = (l[0] + l[1]) + (l[2] + l[3]);
        if constexpr (K == 4) sum = first;
        if constexpr (K == 5) sum = first + l[4];
        if constexpr (K == 6) sum = first + (l[4] + l[5]);
        if constexpr (K == 7) sum = first + ((l[4] + l[5]) + l[6]);
    }
}

// What the rows of a weighted mean whose losses are divided by their weight sums as they
// are summed (packed_row_group) leave divide_by_weight_sums to report: lanes with a
// negative weight, rows whose weights sum to 0.
struct GroupWeightChecks {
    LaneMask negative = {};
    decltype(RowGroup{} == RowGroup{}) zero_sum = {};
    bool any_negative() const { return any_lane(negative); }
    bool any_zero_sum() const {
        bool any = false;
        for (int g = 0; g < kRowGroup; ++g) any = any || zero_sum[g] != 0;
        return any;
    }
};

// kRowGroup contiguous rows of K < kLanes positions, read as kRowGroup * K / kVectorWidth
// whole vectors: a row of 3 in vectors of its own, or side by side with other rows'
// positions in one vector per position (fixed_row_group), left most of the work to loads
// and inserts of single elements. Each lane takes its row's target (OneTarget: one per
// row, jt apart; else rows like predictions'), weight (W: one per row, jw apart, or rows of
// them like predictions') and gradient factor (factor[g]: row g's scale, times its weight
// where it has one per row). A sum's terms are then regrouped by position and combined as
// fixed_row combines its lanes (row_group_sums): the same bits. The gradient, where the
// pass writes it, is stored as gradient_row_group stores it, each vector after it is read:
// `out` may be predictions or targets.
// SumWeights (a weighted mean's loss, weights per position): each row's sum divided by its
// weight sum, summed as sum_row_weights sums it, here, where the divisions overlap the next
// groups' work (after the batch, one by one, they were a third of the time of rows of 3); what
// divide_by_weight_sums reports of them into *checks.
template <Pass P, bool Weighted, bool OneTarget, RowWeights W, int K, bool SumWeights = false, typename T,
          typename Wt>
inline void packed_row_group(const T* p, const T* t, int64_t jt, const Wt* w, int64_t jw, T* out,
                             const double* factor, double* sums, GroupWeightChecks* checks = nullptr) {
    static_assert(K < kLanes && W != RowWeights::per_position_strided && P != Pass::squared_error);
    static_assert(!SumWeights || (Weighted && W == RowWeights::per_position && P == Pass::reduce));
    using Layout = RowGroupLayout<K>;
    constexpr bool kAlong = Weighted && W == RowWeights::per_position;
    RowGroup row_target = {}, row_weight = {}, row_factor = {};
    for (int g = 0; g < kRowGroup; ++g) {
        if constexpr (OneTarget) row_target[g] = load(t + g * jt);
        if constexpr (Weighted && !kAlong) row_weight[g] = load(w + g * jw);
        if constexpr (kWrites<P>) row_factor[g] = factor[g];
    }
    Lanes terms[Layout::kVectors], weights[SumWeights ? Layout::kVectors : 1];
    LaneMask negative = {};
    for_each_constant(
        [&](auto v) {
            constexpr int kV = decltype(v)::value, kAt = kV * kVectorWidth;
            const auto per_position = [](const RowGroup& rows) {  // each lane its row's value
#if defined(__AVX__)
                return Layout::template per_position<kV>(rows);
#else
                Lanes lanes;
                for (int j = 0; j < kVectorWidth; ++j) lanes[j] = rows[Layout::row_of(kV, j)];
                return lanes;
#endif
            };
            const Lanes d = load_packed(p + kAt) - (OneTarget ? per_position(row_target) : load_packed(t + kAt));
            Lanes weight = {};
            if constexpr (Weighted) weight = kAlong ? load_packed(w + kAt) : per_position(row_weight);
            if constexpr (SumWeights) {
                weights[kV] = weight;
                negative |= weight < Lanes{};
            }
            if constexpr (kWrites<P>) {
                const Lanes scale = per_position(row_factor);
                store_packed(out + kAt, kAlong ? (scale * weight) * d : scale * d);
            }
            if constexpr (kReduces<P>) {
                const Lanes wd = Weighted ? weight * d : d;
                terms[kV] = P == Pass::reduce_difference ? wd : wd * d;
            }
        },
        std::make_integer_sequence<int, Layout::kVectors>{});
    if constexpr (kReduces<P>) {
        // d * d is never -0; a weighted term or a difference may be.
        RowGroup sum;
        row_group_sums<K, Weighted || P == Pass::reduce_difference>(terms, sum);
        if constexpr (SumWeights) {
            RowGroup weight_sum;
            row_group_sums<K, true>(weights, weight_sum);
            checks->negative |= negative;
            checks->zero_sum |= weight_sum == RowGroup{};
            sum /= weight_sum;
        }
        std::memcpy(sums, &sum, sizeof sum);
    }
}

// combine_lanes of the kLanes lanes held as vectors, in registers: with AVX, lanes 0-3 and
// 4-7; interleaving the two gives the pairs (l0 + l1, l4 + l5, l2 + l3, l6 + l7) in one
// addition, then the same sums as combine_lanes in the same order. A row of a few
// positions otherwise spends as long storing its lanes and adding them one by one.
inline double combine_packed(const Lanes* acc) {
#if defined(__AVX__)
    const Lanes pairs = lane_pairs(acc);
    const double first = pairs[0] + pairs[2], second = pairs[1] + pairs[3];
    return first + second;
#else
    double lanes[kLanes];
    std::memcpy(lanes, acc, sizeof lanes);
    return combine_lanes(lanes);
#endif
}

// Targets as packed_row_lanes reads them: from memory, or (Lanes) from one row of them
// converted once, which every row shares (a target per column with a loss per sample: its
// rows of a few positions spent a third of their conversions on the same targets).
template <typename T>
inline Lanes target_vector(const T* t, int at) {
    return load_packed(t + at);
}
inline Lanes target_vector(const Lanes* t, int at) { return t[at / kVectorWidth]; }
template <typename T>
inline double target_value(const T* t, int at) {
    return load(t + at);
}
inline double target_value(const Lanes* t, int at) { return t[at / kVectorWidth][at % kVectorWidth]; }

// One contiguous row of K positions of a sum (targets likewise, or one: OneTarget; one
// weight, none, or one per position: WeightsAlong), as fixed_row sums it: position i goes
// to lane i % kLanes, here vector (i / kVectorWidth) % kParts of lanes, which starts from
// 0 and adds its terms in position order; then combine_lanes. Lanes past the row's end add
// nothing. RowAfter: another row of every operand read along the row follows in memory,
// so the row's last vector is loaded whole (and its lanes past the row dropped) rather
// than element by element.
// SumWeights (weights along the row): also the row's weight sum, as packed_row of the
// weights and 0 sums them for reduce_difference (w - 0 is w, 1 * w is w), and whether one is
// negative, for Problem::weight_sums_in_pass.
// packed_row_lanes leaves the row's lanes uncombined in acc, and with SumWeights its weight
// sum's in weight_acc (kLanes / kVectorWidth vectors each), and ORs its weights' signs into
// *negative (lane by lane): rows then combine four at a time (combine_packed_rows).
template <Pass P, bool Weighted, bool OneTarget, bool RowAfter, int K, bool WeightsAlong = false,
          bool SumWeights = false, typename T, typename Tt, typename Wt>
inline void packed_row_lanes(const T* p, const Tt* t, const Wt* w, Lanes* acc, Lanes* weight_acc = nullptr,
                             LaneMask* negative = nullptr) {
    static_assert(!kWrites<P> && kPackable<T> && (!WeightsAlong || Weighted) && (!SumWeights || WeightsAlong));
    constexpr int kWidth = kVectorWidth, kParts = kLanes / kVectorWidth;
    constexpr int kWhole = K / kWidth, kTail = K % kWidth;
    for (int q = 0; q < kParts; ++q) {
        acc[q] = Lanes{};
        if constexpr (SumWeights) weight_acc[q] = Lanes{};
    }
    const auto sum_weights = [&](int q, Lanes weight) {
        if constexpr (SumWeights) {
            weight_acc[q % kParts] += weight;
            *negative |= weight < Lanes{};
        }
    };
    Lanes target = {};
    if constexpr (OneTarget)
        for (int j = 0; j < kWidth; ++j) target[j] = target_value(t, 0);
    const double row_weight = Weighted && !WeightsAlong ? load(w) : 1.0;
    const auto add = [&](int q, Lanes d, Lanes weight) {  // weight * d where there is none: 1 * d is d
        acc[q % kParts] = packed_positions<P, true, T>(d, weight, Lanes{}, nullptr, acc[q % kParts]);
    };
    const auto weight_at = [&](int at) {
        if constexpr (WeightsAlong) return load_packed(w + at);
        return Lanes{} + row_weight;
    };
#if !defined(__clang__)
#pragma GCC unroll 16
#endif
    for (int q = 0; q < kWhole; ++q) {
        const Lanes weight = weight_at(q * kWidth);
        add(q, load_packed(p + q * kWidth) - (OneTarget ? target : target_vector(t, q * kWidth)), weight);
        sum_weights(q, weight);
    }
    if constexpr (kTail > 0) {
        const int at = kWhole * kWidth;
        Lanes ps = {}, ts = target, weight = Lanes{} + row_weight;
        if constexpr (RowAfter) {
            ps = load_packed(p + at);
            if constexpr (!OneTarget) ts = target_vector(t, at);
            if constexpr (WeightsAlong) weight = load_packed(w + at);
        } else {  // element by element: a vector would read past the array
            for (int j = 0; j < kTail; ++j) {
                ps[j] = load(p + at + j);
                if constexpr (!OneTarget) ts[j] = target_value(t, at + j);
                if constexpr (WeightsAlong) weight[j] = load(w + at + j);
            }
        }
        const Lanes d = ps - ts;
        Lanes value = P == Pass::reduce_difference ? weight * d : (weight * d) * d;
        for (int j = kTail; j < kWidth; ++j) value[j] = weight[j] = 0.0;  // past the row: nothing added
        acc[kWhole % kParts] += value;
        sum_weights(kWhole, weight);
    }
}

template <Pass P, bool Weighted, bool OneTarget, bool RowAfter, int K, bool WeightsAlong = false,
          bool SumWeights = false, typename T, typename Tt, typename Wt>
inline double packed_row(const T* p, const Tt* t, const Wt* w, RowWeightSums weights = {}) {
    constexpr int kParts = kLanes / kVectorWidth;
    Lanes acc[kParts], weight_acc[SumWeights ? kParts : 1];
    LaneMask negative = {};
    packed_row_lanes<P, Weighted, OneTarget, RowAfter, K, WeightsAlong, SumWeights>(p, t, w, acc, weight_acc,
                                                                                     &negative);
    if constexpr (SumWeights) {
        *weights.sums = combine_packed(weight_acc);
        *weights.negative |= any_lane(negative);
    }
    return combine_packed(acc);
}

// combine_packed of kRowGroup rows' lanes at once, into sums[0, kRowGroup): the same
// additions in the same order, with AVX four rows' last steps in one vector each (a row
// of a few positions spends a third of its instructions combining its lanes).
inline void combine_packed_rows(const Lanes (*acc)[kLanes / kVectorWidth], double* sums) {
#if defined(__AVX__)
    static_assert(kRowGroup == 4);
    Lanes pairs[kRowGroup];  // row g's (l0 + l1, l4 + l5, l2 + l3, l6 + l7), as combine_packed
    for (int g = 0; g < kRowGroup; ++g) pairs[g] = lane_pairs(acc[g]);
    // Rows 0 and 2, 1 and 3: (first, second, first, second), first = pairs[0] + pairs[2]
    // and second = pairs[1] + pairs[3] of each, as combine_packed adds them.
    const Lanes halves02 = shuffle<0, 1, 4, 5>(pairs[0], pairs[2]) + shuffle<2, 3, 6, 7>(pairs[0], pairs[2]);
    const Lanes halves13 = shuffle<0, 1, 4, 5>(pairs[1], pairs[3]) + shuffle<2, 3, 6, 7>(pairs[1], pairs[3]);
    const Lanes rows = shuffle<0, 4, 2, 6>(halves02, halves13) + shuffle<1, 5, 3, 7>(halves02, halves13);
    std::memcpy(sums, &rows, sizeof rows);  // rows (0, 1, 2, 3): first + second of each
#else
    for (int g = 0; g < kRowGroup; ++g) sums[g] = combine_packed(acc[g]);
#endif
}
#endif

// The weight sums of `rows` rows of n positions, jw apart (weights sw apart along a row),
// for Problem::weight_sums_in_pass where the pass's own loop does not find them: summed as
// reduce_difference sums w - 0 over a row (the same lanes and order, so the same bits as
// that pass) and, CheckSigns, checked as fastmse._resolve checks them (none negative; NaN
// passes).
template <int K, bool CheckSigns, typename Wt>
void sum_row_weights(const Wt* w, int64_t jw, int64_t sw, int64_t n, int64_t rows, RowWeightSums weights) {
    const Wt zero{};  // 0 in every weight type
    int64_t step[kOperands] = {};
    step[kP] = sw;
#if defined(__GNUC__)
    constexpr bool kPacked = K > 0 && kPackedRow<K> && kPackable<Wt>;
#else
    constexpr bool kPacked = false;
#endif
    int64_t i = 0;
#if defined(__GNUC__)
    if constexpr (kPacked) {
        // kRowGroup rows' lanes combined together (combine_packed_rows: packed_row's bits).
        constexpr Pass kSum = Pass::reduce_difference;
        constexpr int kParts = kLanes / kVectorWidth;
        for (; sw == 1 && i + kRowGroup <= rows; i += kRowGroup) {
            Lanes acc[kRowGroup][kParts];
            for (int g = 0; g < kRowGroup; ++g) {
                const Wt* row = w + (i + g) * jw;
                if (i + g + 1 < rows && jw == K)
                    packed_row_lanes<kSum, false, true, true, K>(row, &zero, row, acc[g]);
                else
                    packed_row_lanes<kSum, false, true, false, K>(row, &zero, row, acc[g]);
            }
            combine_packed_rows(acc, weights.sums + i);
            if constexpr (CheckSigns)
                for (int g = 0; g < kRowGroup; ++g) *weights.negative |= any_negative(w + (i + g) * jw, sw, n);
        }
    }
    if constexpr (K > 0 && K < kLanes && !kPacked && kPackable<Wt>) {
        // Rows of a few weights one after another, kRowGroup at a time as whole vectors, as
        // packed_row_group sums them.
        using Layout = RowGroupLayout<K>;
        for (; sw == 1 && jw == K && i + kRowGroup <= rows; i += kRowGroup) {
            Lanes values[Layout::kVectors];
            LaneMask negative = {};
            for (int v = 0; v < Layout::kVectors; ++v) {
                values[v] = load_packed(w + i * K + v * kVectorWidth);
                negative |= values[v] < Lanes{};
            }
            RowGroup sums;
            row_group_sums<K, true>(values, sums);
            std::memcpy(weights.sums + i, &sums, sizeof sums);
            if constexpr (CheckSigns) *weights.negative |= any_lane(negative);
        }
    }
#endif
    for (; i < rows; ++i) {
        const Wt* row = w + i * jw;
        if (kPacked && sw == 1) {
#if defined(__GNUC__)
            if constexpr (kPacked) {
                constexpr Pass kSum = Pass::reduce_difference;
                weights.sums[i] = i + 1 < rows && jw == K ? packed_row<kSum, false, true, true, K>(row, &zero, row)
                                                          : packed_row<kSum, false, true, false, K>(row, &zero, row);
            }
#endif
        } else {
            double acc[kLanes] = {};
            run_lanes<Pass::reduce_difference, false, false>(acc, 0, Cursor<Wt, Wt>{row, &zero, nullptr, nullptr}, step,
                                                             0.0, n, n);
            weights.sums[i] = combine_lanes(acc);
        }
        if constexpr (CheckSigns) *weights.negative |= any_negative(row, sw, n);
    }
}

// The sums (if any) of rows [divided, n) divided by their weight sums, as LossStore::put_rows
// divides by loss_divisors; a negative weight, or a zero sum among them or among rows before
// them (zero_sum: packed_row_group's GroupWeightChecks), reported.
inline void divide_by_weight_sums(double* sums, const double* weight_sums, int64_t divided, int64_t n,
                                  bool negative, bool zero_sum, WeightSumsInPass& found) {
    int64_t zeros = 0;  // a count, not a flag: GCC compared a flag's sums one by one (5% of rows of 10)
    for (int64_t i = divided; i < n; ++i) zeros += weight_sums[i] == 0.0;
    zero_sum |= zeros != 0;
    if (sums)
        for (int64_t i = divided; i < n; ++i) sums[i] /= weight_sums[i];
    if (negative) found.negative_weight.store(true, std::memory_order_relaxed);
    if (zero_sum) found.zero_sum.store(true, std::memory_order_relaxed);
}

// Rows whose sums are stored together (LossStore::put_rows).
inline constexpr int64_t kRowBatch = 64;

// A row of K targets or weights that every row shares (a target or weights per column),
// copied kRowGroup + 1 times one after another: the loops for rows that follow each other
// in memory then read it as such rows, the same values, so the same bits. Row r's copy is
// at(r); a group of rows starting at a multiple of kRowGroup reads its rows K apart from
// at(r) (jump()), as it would read rows of its own.
template <typename X, int K>
class SharedRow {
   public:
    // Rows `jump` apart from `first`: shared (and copied) where jump is 0, the row's
    // positions are contiguous and more rows than the copies read it.
    SharedRow(const X* first, int64_t jump, int64_t step, int64_t rows) : first_(first), jump_(jump) {
        shared_ = K > 1 && first != nullptr && jump == 0 && step == 1 && rows > kRowGroup;
        if (shared_)
            for (int g = 0; g <= kRowGroup; ++g) std::memcpy(copies_ + g * K, first, K * sizeof(X));
    }
    const X* at(int64_t r) const { return shared_ ? copies_ + r % kRowGroup * K : first_ + r * jump_; }
    int64_t jump() const { return shared_ ? K : jump_; }

   private:
    const X* first_;
    int64_t jump_;
    bool shared_;
    X copies_[K > 1 ? (kRowGroup + 1) * K : 1];
};

// `run` outputs from the odometer's position along the last kept dimension.
template <Pass P, bool Weighted, bool Unit, int K, typename T, typename Wt>
void row_range(const Layout& l, const LossStore& loss, const Odometer& kept, int64_t run, const int64_t* step) {
    const int64_t n = K > 0 ? K : l.n_red;
    int64_t js[kOperands] = {};
    if (l.n_kept > 0)
        for (int k = 0; k < kOperands; ++k) js[k] = l.strides[k][l.n_kept - 1];
    static constexpr int64_t kNoBase[kOperands] = {};
    const Cursor<T, Wt> first = cursor_at<T, Wt>(l, kNoBase, kept.offset);
    const SharedRow<T, K> targets(first.t, js[kT], step[kT], run);
    const SharedRow<Wt, K> weights(first.w, js[kW], step[kW], run);
    const double* scale = l.data[kScale] ? static_cast<const double*>(l.data[kScale]) + kept.offset[kScale] : nullptr;
    const bool has_loss = l.data[kLoss] != nullptr;
    // The gradient's stores stream (store_packed) where its rows follow one another in an
    // output too large for the cache, every row aligned as the first (groups of kRowGroup
    // rows, whose vector stores then are, or rows of whole kStreamAlign bytes): 2**24 float32
    // positions, mse_and_grad(axis=-1, out=) of (N, 10) 7.2 -> 5.8-6.5 ms, of (N, 100) 7.1-7.3
    // -> 6.5-6.7. The rows after the last group of a run store theirs plainly, and so do rows
    // of 3-7 (packed_row_group): streamed, their fused passes ran as fast or slower (2**24
    // float32, (N, 3) weighted per sample 10.4 -> 11.8 ms).
    const bool streaming = step[kOut] == 1 && js[kOut] == n && streams_to_out<P, T>(l) &&
                           reinterpret_cast<std::uintptr_t>(first.out) % kStreamAlign == 0 &&
                           (K > 0 || n * static_cast<int64_t>(sizeof(T)) % static_cast<int64_t>(kStreamAlign) == 0);
#if defined(__GNUC__)
    if constexpr (K == 1 && P == Pass::reduce_and_grad && !Weighted && kPackable<T>) {
        // Rows of one position, one after another (a loss per position): a row's sum is
        // 0 + d * d, which is d * d, its loss that rounded (the squared error) where the
        // loss is undivided, so the squared errors and the gradient go in one elementwise loop.
        T* const squared = has_loss ? loss.undivided_in<T>(kept.offset[kLoss]) : nullptr;
        if (squared && js[kP] == 1 && js[kT] == 1 && js[kOut] == 1 && js[kLoss] == 1 && js[kScale] == 0) {
            const double factor = scale ? *scale : 0.0;
            Lanes factors;  // each lane set, not 0 + x: a factor of -0 keeps its sign
            for (int j = 0; j < kVectorWidth; ++j) factors[j] = factor;
            int64_t r = 0;
            for (; r + kVectorWidth <= run; r += kVectorWidth) {
                if (r + kPrefetchDistance < run) prefetch_inputs(first.p + r, first.t + r);
                const Lanes d = load_packed(first.p + r) - load_packed(first.t + r);
                store_packed(first.out + r, factors * d);
                store_packed(squared + r, d * d);
            }
            for (; r < run; ++r) {
                const double d = difference(first.p + r, first.t + r);
                write<Pass::grad>(first.out + r, factor, 1.0, d);
                write<Pass::squared_error>(squared + r, 0.0, 1.0, d);
            }
            return;
        }
    }
#endif
    // Rows [r, r + count) of rows one after another ask for their operands kPrefetchDistance
    // elements ahead, as the flat walks do, in the passes that only read: without it, sums
    // over rows of 3 to 100 positions beyond the cache ran at half the flat sum's speed
    // (2**24 float32 positions, (N, 10): 6.0 ms, 3.4 with it). Not asked for: rows of more
    // than kPrefetchRowMax positions (rows of 1,000, each row's lines at once: 4.2 -> 5.1 ms)
    // and the passes that write (the float64 (N, 10) fused pass: 15.1 -> 17.7 ms).
    constexpr int64_t kPrefetchRowMax = 256;
    const bool prefetching = !kWrites<P> && step[kP] == 1 && js[kP] == n && n <= kPrefetchRowMax;
    const bool prefetch_targets = step[kT] == 1 && js[kT] == n;
    const bool prefetch_weights = Weighted && step[kW] == 1 && js[kW] == n;
    // rows: a std::integral_constant. Rows of a fixed length (K) ask for their lines unrolled
    // (prefetch_lines): as a loop, rows of 10 took 44 instructions a row, unrolled 37
    // (callgrind, 2**18 float32 positions, mse(axis=-1)); no faster in time.
    const auto prefetch_rows = [&](int64_t r, auto rows) FASTMSE_ALWAYS_INLINE {
        constexpr int64_t kRows = decltype(rows)::value;
        if (!prefetching || (r + kRows) * n + kPrefetchDistance >= run * n) return;
        if constexpr (K > 0) {
            prefetch_lines<kRows * K>(first.p + r * K);
            if (prefetch_targets) prefetch_lines<kRows * K>(first.t + r * K);
            if (prefetch_weights) prefetch_lines<kRows * K>(first.w + r * K);
        } else {
            prefetch_span(first.p + r * n, kRows * n);
            if (prefetch_targets) prefetch_span(first.t + r * n, kRows * n);
            if (prefetch_weights) prefetch_span(first.w + r * n, kRows * n);
        }
    };
    using OneRow = std::integral_constant<int64_t, 1>;
    using GroupOfRows = std::integral_constant<int64_t, kRowGroup>;
    double sums[kRowBatch];
    constexpr bool kInPass = Weighted && kTakesWeightSums<P>;
    WeightSumsInPass* const in_pass = kInPass ? loss.weight_sums_in_pass() : nullptr;
    [[maybe_unused]] double row_weight_sums[kRowBatch];
    for (int64_t r0 = 0; r0 < run; r0 += kRowBatch) {
        const int64_t rows = std::min(kRowBatch, run - r0);
        int64_t i = 0, divided = 0;  // rows [0, divided) of the batch have their sums divided
        [[maybe_unused]] bool weights_summed = false;  // row_weight_sums filled
        // Whether one of the batch's weights is negative (where the pass checks them), and
        // one of rows [0, divided) divided by their weight sums sums to zero.
        [[maybe_unused]] bool negative_weight = false, group_zero_sum = false;
        [[maybe_unused]] const RowWeightSums row_weights{row_weight_sums, &negative_weight};
        // A group's sums divided as soon as they are found, where they are divided by what
        // the loss store holds: the divisions then overlap the next groups' shuffles rather
        // than queue up after the batch (rows of 3 spent a third of their time there).
        const auto divide_group = [&]() {
            if (has_loss && !in_pass && divided == i) {
                loss.divide_rows(kept.offset[kLoss] + (r0 + i) * js[kLoss], js[kLoss], sums + i, kRowGroup);
                divided = i + kRowGroup;
            }
        };
        // The fused pass's groups of rows weighted per position (below) sum their rows' weights
        // in the loop that sums their terms, rather than in a loop of their own first: the
        // weights are then read and converted once, not twice.
#if defined(__GNUC__)
        constexpr bool kSumsInGroups = P == Pass::reduce_and_grad && kInPass && kPackedGradientRow<K> &&
                                       kPackable<T> && kPackable<Wt>;
#else
        constexpr bool kSumsInGroups = false;  // the groups are GCC's and Clang's
#endif
        [[maybe_unused]] const bool sums_in_groups = kSumsInGroups && in_pass && has_loss && step[kT] == 1 &&
                                                     js[kP] == K && targets.jump() == K && js[kOut] == K &&
                                                     step[kW] == 1 && weights.jump() == K;
        if constexpr (kWrites<P> && kInPass) {
            // The gradient's factors divided by the rows' weight sums before it is written.
            // The weights' signs are checked before these passes (what they write stays
            // written); a zero sum is only reported, after the gradient is written.
            if (in_pass && !sums_in_groups) {
                sum_row_weights<K, false>(first.w + r0 * js[kW], js[kW], step[kW], n, rows, row_weights);
                weights_summed = true;
            }
        }
#if defined(__GNUC__)
        // Rows one after another in memory (a C-contiguous batch), for a sum: each in vectors
        // along the row (kPackedRow; their lanes combined kRowGroup rows at a time), else
        // kRowGroup rows side by side. Targets: rows of their own likewise (or copies of one
        // row for every row: a target per column), or one per row (a target per sample); one
        // row for a run of a few rows, along the row only.
        if constexpr (K > 0 && !kWrites<P>) {
            const bool one_target = step[kT] == 0, target_rows = one_target || targets.jump() == K;
            if (has_loss && js[kP] == K && (target_rows || js[kT] == 0)) {
                const auto with_target = [&](auto run_rows) {
                    if (one_target)
                        run_rows(std::true_type{});
                    else
                        run_rows(std::false_type{});
                };
                if constexpr (kPackedRowGroup<K> && kPackable<T> && (!Weighted || kPackable<Wt>)) {
                    // Rows of a few positions, kRowGroup at a time as whole vectors; with
                    // weights per position, divided by their weight sums where the pass
                    // finds them (the rows after the last group's summed by sum_row_weights).
                    const auto row_groups = [&](auto one_target_, auto weight_kind, auto sum_weights) {
                        constexpr bool kSum = decltype(sum_weights)::value;
                        [[maybe_unused]] GroupWeightChecks checks;
                        for (; i + kRowGroup <= rows; i += kRowGroup) {
                            const int64_t r = r0 + i;
                            prefetch_rows(r, GroupOfRows{});
                            packed_row_group<P, Weighted, decltype(one_target_)::value, decltype(weight_kind)::value,
                                             K, kSum>(first.p + r * K, targets.at(r), targets.jump(),
                                                      Weighted ? weights.at(r) : nullptr, weights.jump(),
                                                      static_cast<T*>(nullptr), nullptr, sums + i, &checks);
                            if constexpr (!kSum) divide_group();
                        }
                        if constexpr (kSum) {
                            divided = i;
                            negative_weight |= checks.any_negative();
                            group_zero_sum = checks.any_zero_sum();
                            sum_row_weights<K, true>(first.w + (r0 + i) * js[kW], js[kW], step[kW], n, rows - i,
                                                     {row_weight_sums + i, &negative_weight});
                            weights_summed = true;
                        }
                    };
                    using PerRow = std::integral_constant<RowWeights, RowWeights::per_row>;
                    using PerPosition = std::integral_constant<RowWeights, RowWeights::per_position>;
                    if (target_rows && (!Weighted || step[kW] == 0)) {
                        with_target([&](auto one_target_) { row_groups(one_target_, PerRow{}, std::false_type{}); });
                    } else if (target_rows && step[kW] == 1 && weights.jump() == K) {
                        with_target([&](auto one_target_) {
                            if constexpr (kInPass) {
                                if (in_pass) {
                                    row_groups(one_target_, PerPosition{}, std::true_type{});
                                    return;
                                }
                            }
                            row_groups(one_target_, PerPosition{}, std::false_type{});
                        });
                    }
                }
                if constexpr (kPackedRow<K> && kPackable<T> && (!Weighted || kPackable<Wt>)) {
                    // weights_along: one weight per position, else one per row or none.
                    // shared_target: one row of targets for every row (a target per column),
                    // read as vectors converted once (target_vector).
                    const auto packed_rows = [&](auto one_target_, auto weights_along, auto sum_weights,
                                                 auto shared_target) {
                        constexpr bool kOneTarget = decltype(one_target_)::value;
                        constexpr bool kAlong = decltype(weights_along)::value;
                        constexpr bool kSum = decltype(sum_weights)::value;
                        constexpr bool kShared = decltype(shared_target)::value;
                        Lanes target_row[kShared ? (K + kVectorWidth - 1) / kVectorWidth : 1] = {};
                        for (int e = 0; kShared && e < K; ++e)
                            target_row[e / kVectorWidth][e % kVectorWidth] = load(first.t + e);
                        const auto target_of = [&](int64_t r) {
                            if constexpr (kShared)
                                return static_cast<const Lanes*>(target_row);
                            else
                                return targets.at(r);
                        };
                        weights_summed = kSum && i == 0;  // else rows before i have none
                        // Targets or weights per position broadcast over a run of a few rows
                        // (one row of them, not copied) have no row after theirs.
                        const bool row_after = target_rows && (!kAlong || weights.jump() == K);
                        // Whole groups of rows, combined together; a row after the group or not.
                        for (; i + kRowGroup <= rows; i += kRowGroup) {
                            prefetch_rows(r0 + i, GroupOfRows{});
                            constexpr int kParts = kLanes / kVectorWidth;
                            Lanes acc[kRowGroup][kParts], weight_acc[kRowGroup][kSum ? kParts : 1];
                            LaneMask negative = {};
                            // followed: every row of the group has a row after it. Decided once
                            // a group, so that its rows unroll and their lanes stay in registers
                            // (decided per row, they went through memory: rows of 10 1.2x slower).
                            const auto group = [&](auto followed) {
#if !defined(__clang__)
#pragma GCC unroll 4
#endif
                                for (int g = 0; g < kRowGroup; ++g) {
                                    const int64_t r = r0 + i + g;
                                    const T* p = first.p + r * K;
                                    const auto t = target_of(r);
                                    const Wt* w = Weighted ? weights.at(r) : nullptr;
                                    if (decltype(followed)::value || (row_after && g + 1 < kRowGroup))
                                        packed_row_lanes<P, Weighted, kOneTarget, true, K, kAlong, kSum>(
                                            p, t, w, acc[g], weight_acc[g], &negative);
                                    else
                                        packed_row_lanes<P, Weighted, kOneTarget, false, K, kAlong, kSum>(
                                            p, t, w, acc[g], weight_acc[g], &negative);
                                }
                            };
                            if (row_after && i + kRowGroup < rows)
                                group(std::true_type{});
                            else
                                group(std::false_type{});
                            combine_packed_rows(acc, sums + i);
                            if constexpr (kSum) {
                                combine_packed_rows(weight_acc, row_weight_sums + i);
                                negative_weight |= any_lane(negative);
                            }
                        }
                        for (; i < rows; ++i) {
                            const int64_t r = r0 + i;
                            const T* p = first.p + r * K;
                            const auto t = target_of(r);
                            const Wt* w = Weighted ? weights.at(r) : nullptr;
                            const RowWeightSums found{kSum ? row_weight_sums + i : nullptr, &negative_weight};
                            sums[i] = i + 1 < rows && row_after
                                          ? packed_row<P, Weighted, kOneTarget, true, K, kAlong, kSum>(p, t, w, found)
                                          : packed_row<P, Weighted, kOneTarget, false, K, kAlong, kSum>(p, t, w, found);
                        }
                    };
                    if ((!Weighted || step[kW] == 0) && js[kT] == 0 && step[kT] == 1) {
                        packed_rows(std::false_type{}, std::false_type{}, std::false_type{}, std::true_type{});
                    } else if (!Weighted || step[kW] == 0) {
                        with_target([&](auto one_target_) {
                            packed_rows(one_target_, std::false_type{}, std::false_type{}, std::false_type{});
                        });
                    } else if constexpr (Weighted && P == Pass::reduce) {  // a loss weighted per position
                        if (!one_target && step[kW] == 1) {
                            if (in_pass)
                                packed_rows(std::false_type{}, std::true_type{}, std::true_type{}, std::false_type{});
                            else
                                packed_rows(std::false_type{}, std::true_type{}, std::false_type{}, std::false_type{});
                        }
                    }
                }
                const auto groups = [&](auto one_weight) {
                    with_target([&](auto one_target_) {
                        for (; i + kRowGroup <= rows; i += kRowGroup) {
                            const int64_t r = r0 + i;
                            fixed_row_group<P, Weighted, decltype(one_weight)::value, decltype(one_target_)::value, K>(
                                first.p + r * K, targets.at(r), targets.jump(), Weighted ? weights.at(r) : nullptr,
                                step[kW], weights.jump(), sums + i);
                        }
                    });
                };
                // The packed loops above leave float32 and float64 rows only where weights
                // per position are not rows like predictions'; the groups are not compiled
                // for what they take (copies of every row length that never ran).
                constexpr bool kPackedSums = kPackable<T> && (!Weighted || kPackable<Wt>) &&
                                             (kPackedRowGroup<K> || kPackedRow<K>);
                if constexpr (!kPackedSums) {
                    if (target_rows && Weighted && step[kW] == 0)
                        groups(std::bool_constant<Weighted>{});  // true: one weight per row
                    else if (target_rows)
                        groups(std::false_type{});
                } else if constexpr (Weighted) {
                    if (target_rows && step[kW] != 0) groups(std::false_type{});
                }
            }
        }
        // The gradient passes on the same rows, with the weights one per row, one per
        // position (RowWeights) or none: the sums as above where the pass has them, then the
        // gradient of the group's positions, side by side in memory, as one run (its values
        // do not depend on the walk). The sums are read first: `out` may be predictions.
        if constexpr (K > 0 && (P == Pass::grad || P == Pass::reduce_and_grad) && kPackable<T> &&
                      (!Weighted || kPackable<Wt>)) {
            if ((has_loss || !kReduces<P>) && step[kT] == 1 && js[kP] == K && targets.jump() == K && js[kOut] == K) {
                const auto groups = [&](auto weight_kind) {
                    constexpr RowWeights kWeights = decltype(weight_kind)::value;
                    constexpr bool kAlong = kWeights != RowWeights::per_row;
                    for (; i + kRowGroup <= rows; i += kRowGroup) {
                        const int64_t r = r0 + i, at = r * K, jw = weights.jump();
                        const T* t = targets.at(r);
                        const Wt* w = Weighted ? weights.at(r) : nullptr;
                        double factor[kRowGroup];  // scale (times the row's weight), as write() has it
                        const auto find_factors = [&]() {
                            for (int g = 0; g < kRowGroup; ++g) {
                                const double row_scale = scale ? scale[(r + g) * js[kScale]] : 0.0;
                                factor[g] = (in_pass ? row_scale / row_weight_sums[i + g] : row_scale) *
                                            (Weighted && !kAlong ? load(w + g * jw) : 1.0);
                            }
                        };
                        if constexpr (kPackedGradientRowGroup<K> && kWeights != RowWeights::per_position_strided) {
                            find_factors();
                            packed_row_group<P, Weighted, false, kWeights, K>(first.p + at, t, 0, w, jw,
                                                                              first.out + at, factor, sums + i);
                            if constexpr (kReduces<P>) divide_group();
                        } else {
                            if constexpr (kReduces<P> && kPackedGradientRow<K>) {
                                // A row's last vector loaded whole where another row of
                                // every operand read along it follows.
                                constexpr bool kFollowed = kWeights != RowWeights::per_position_strided;
                                constexpr bool kSum = kSumsInGroups && kWeights == RowWeights::per_position;
                                constexpr int kParts = kLanes / kVectorWidth;
                                Lanes acc[kRowGroup][kParts], weight_acc[kRowGroup][kSum ? kParts : 1];
                                LaneMask negative = {};  // unread: the signs were checked before
                                // followed: decided once a group, as above.
                                const auto group = [&](auto followed, auto sum_weights) {
                                    constexpr bool kSumHere = decltype(sum_weights)::value;
#if !defined(__clang__)
#pragma GCC unroll 4
#endif
                                    for (int g = 0; g < kRowGroup; ++g) {
                                        const T* pg = first.p + at + g * K;
                                        const Wt* wg = Weighted ? w + g * jw : nullptr;
                                        if (decltype(followed)::value || (kFollowed && r + g + 1 < run))
                                            packed_row_lanes<Pass::reduce, Weighted, false, kFollowed, K, kAlong,
                                                             kSumHere>(pg, t + g * K, wg, acc[g], weight_acc[g],
                                                                       &negative);
                                        else
                                            packed_row_lanes<Pass::reduce, Weighted, false, false, K, kAlong,
                                                             kSumHere>(pg, t + g * K, wg, acc[g], weight_acc[g],
                                                                       &negative);
                                    }
                                };
                                const auto rows_of_group = [&](auto sum_weights) {
                                    if (kFollowed && r + kRowGroup < run)
                                        group(std::bool_constant<kFollowed>{}, sum_weights);
                                    else
                                        group(std::false_type{}, sum_weights);
                                };
                                bool weights_in_group = false;
                                if constexpr (kSum) {
                                    if (sums_in_groups) {
                                        rows_of_group(std::true_type{});
                                        combine_packed_rows(weight_acc, row_weight_sums + i);
                                        weights_in_group = true;
                                    }
                                }
                                if (!weights_in_group) rows_of_group(std::false_type{});
                                combine_packed_rows(acc, sums + i);
                            } else if constexpr (kReduces<P>) {
                                fixed_row_group<Pass::reduce, Weighted, Weighted && !kAlong, false, K>(
                                    first.p + at, t, 0, w, step[kW], jw, sums + i);
                            }
                            find_factors();
                            gradient_row_group<K, kWeights>(first.p + at, t, first.out + at, factor, w, jw,
                                                            streaming);
                        }
                    }
                };
                using PerRow = std::integral_constant<RowWeights, RowWeights::per_row>;
                if (!Weighted || step[kW] == 0) {
                    groups(PerRow{});
                } else if constexpr (Weighted) {
                    if (step[kW] == 1 && weights.jump() == K)
                        groups(std::integral_constant<RowWeights, RowWeights::per_position>{});
                    else if (step[kW] == 1)
                        groups(std::integral_constant<RowWeights, RowWeights::per_position_strided>{});
                }
                if (sums_in_groups) {  // the rows after the last group
                    sum_row_weights<K, false>(first.w + (r0 + i) * js[kW], js[kW], step[kW], n, rows - i,
                                              {row_weight_sums + i, &negative_weight});
                    weights_summed = true;
                }
            }
        }
#endif
        for (; i < rows; ++i) {
            const int64_t r = r0 + i;
            prefetch_rows(r, OneRow{});
            const T* p = first.p + r * js[kP];
            const T* t = first.t + r * js[kT];
            const Wt* w = Weighted ? first.w + r * js[kW] : nullptr;
            T* out = kWrites<P> ? first.out + r * js[kOut] : nullptr;
            double factor = scale ? scale[r * js[kScale]] : 0.0;
            if (in_pass) factor /= row_weight_sums[i];
            if constexpr (K > 0) {
                sums[i] = fixed_row<P, Weighted, K>(p, t, step[kT], w, step[kW], out, factor);
            } else {
                double acc[kLanes] = {};
                const Cursor<T, Wt> at{p, t, w, out};
                constexpr bool kMayStream = Unit && kStreams<P, T>;
                if (kMayStream && streaming)
                    run_lanes<P, Weighted, Unit, T, Wt, kMayStream>(acc, 0, at, step, factor, n, n);
                else
                    run_lanes<P, Weighted, Unit>(acc, 0, at, step, factor, n, n);
                sums[i] = combine_lanes(acc);
            }
        }
        if constexpr (kInPass) {
            if (in_pass) {
                if (!weights_summed)
                    sum_row_weights<K, true>(first.w + r0 * js[kW], js[kW], step[kW], n, rows, row_weights);
                divide_by_weight_sums(kReduces<P> ? sums : nullptr, row_weight_sums, divided, rows, negative_weight,
                                      group_zero_sum, *in_pass);
            }
        }
        if constexpr (kReduces<P>)
            if (has_loss) {
                const int64_t at = kept.offset[kLoss] + r0 * js[kLoss];
                loss.divide_rows(at + divided * js[kLoss], js[kLoss], sums + divided, rows - divided);
                loss.store_rows(at, js[kLoss], sums, rows);
            }
    }
#if defined(__GNUC__) && defined(__AVX__)  // where store_packed streams
    if (streaming) _mm_sfence();  // as lane_tasks
#endif
}

// Rows of up to kFixedRow<P, T> positions get a loop unrolled for their length: float32 and
// float64 rows of up to 16 in every pass, float16 and bfloat16 rows of up to 4 in the loss
// (reduce) only. The 16-bit types' other passes and longer rows gained little from it
// (their conversions cost more than the loop), and copies of every loop per row length for
// them were most of this file's compile time.
template <Pass P, typename T>
inline constexpr int kFixedRow = kPackable<T> ? 16 : P == Pass::reduce ? 4 : 0;

template <Pass P, bool Weighted, typename T, typename Wt, int K = 1>
void fixed_row_range(const Layout& l, const LossStore& loss, const Odometer& kept, int64_t run, const int64_t* step) {
    if constexpr (K <= kFixedRow<P, T>) {
        if (l.n_red == K)
            row_range<P, Weighted, true, K, T, Wt>(l, loss, kept, run, step);
        else
            fixed_row_range<P, Weighted, T, Wt, K + 1>(l, loss, kept, run, step);
    }
}

// Short rows: lane mode where each output's summed positions lie along one dimension
// and fit in one block (at most kBlock), as in a loss per sample. The sum of a row is
// then its one block, combine_lanes of its lanes, exactly what lane_tasks gives; here
// a task is a range of outputs, walked along the last kept dimension without seeking,
// so that rows of a few positions cost what their positions cost.
template <Pass P, bool Weighted, typename T, typename Wt>
void row_tasks(const Layout& l, const LossStore& loss, int64_t begin, int64_t end) {
    const int last = l.last(), j_dim = l.n_kept - 1;
    int64_t step[kOperands];
    for (int k = 0; k < kOperands; ++k) step[k] = l.strides[k][last];
    const bool unit = l.n_red == 1 || (step[kP] == 1 && step[kT] == 1 && (!kWrites<P> || step[kOut] == 1));
    // Targets and weights along the row may also be constant (one per sample): the
    // unrolled rows take both.
    const auto constant_or_unit = [&](int k) { return step[k] == 0 || step[k] == 1; };
    const bool fixed = l.n_red <= kFixedRow<P, T> &&
                       (l.n_red == 1 || (step[kP] == 1 && constant_or_unit(kT) && (!kWrites<P> || step[kOut] == 1) &&
                                         (!Weighted || constant_or_unit(kW))));
    const bool unit_weights = !Weighted || step[kW] == 1;
    Odometer kept(l, 0, l.n_kept);
    kept.seek(begin);
    for (int64_t o = begin; o < end;) {
        // Outputs left along the last kept dimension before the odometer carries.
        const int64_t run = j_dim >= 0 ? std::min(end - o, l.shape[j_dim] - kept.index[j_dim]) : end - o;
        if (fixed)
            fixed_row_range<P, Weighted, T, Wt>(l, loss, kept, run, step);
        else if (unit && unit_weights)
            row_range<P, Weighted, true, 0, T, Wt>(l, loss, kept, run, step);
        else
            row_range<P, Weighted, false, 0, T, Wt>(l, loss, kept, run, step);
        o += run;
        if (j_dim >= 0 && o < end) kept.advance(run);
    }
}

#if defined(__GNUC__)
// Rows of `width` outputs one after another in memory (a C-contiguous batch), kLanes rows
// at a time from row i (at lane 0): a group's kLanes * width positions are contiguous, so
// they run as one in vectors, position e adding to acc[e] (lane e / width of output
// e % width), as across_block adds them, in the same order. Targets or weights that every
// row shares (rows 0 apart: a target or weights per column, one for all) are read from
// kLanes copies of their row. Width > 0 fixes the width (the sums then live in registers).
// Returns where it stopped: other layouts are left to across_block's rows. Streaming: as
// store_packed, where the first group's `out` is aligned to kStreamAlign (each group's
// kLanes rows are whole 16-byte spans, so the others' are too).
template <Pass P, bool Weighted, int Width, bool Streaming = false, typename T, typename Wt>
inline int64_t across_rows(const T* p, const T* t, const Wt* w, T* out, const int64_t* js, const int64_t* rs,
                           int width, const double* scale, int64_t i, int64_t count, double* acc) {
    if constexpr (Width > 0) width = Width;
    const int64_t run = kLanes * width;
    const auto along = [&](int k) { return js[k] == 1 && rs[k] == width; };
    if (i + kLanes > count || !along(kP) || (kWrites<P> && !along(kOut)) || !(along(kT) || rs[kT] == 0) ||
        (Weighted && !(along(kW) || rs[kW] == 0)))
        return i;
    if constexpr (Streaming)
        if (reinterpret_cast<std::uintptr_t>(out + i * width) % kStreamAlign != 0)
            return across_rows<P, Weighted, Width>(p, t, w, out, js, rs, width, scale, i, count, acc);
    constexpr int64_t kMaxRun = kLanes * (Width > 0 ? Width : kOutputsPerTask);
    T target_copies[kMaxRun];
    [[maybe_unused]] Wt weight_copies[Weighted ? kMaxRun : 1];
    [[maybe_unused]] double factors[kWrites<P> ? kMaxRun : 1];
    const T* tg = t + i * rs[kT];
    if (rs[kT] == 0) {
        for (int64_t e = 0; e < run; ++e) target_copies[e] = t[e % width * js[kT]];
        tg = target_copies;
    }
    const Wt* wg = Weighted ? w + i * rs[kW] : nullptr;
    if constexpr (Weighted) {
        if (rs[kW] == 0) {
            for (int64_t e = 0; e < run; ++e) weight_copies[e] = w[e % width * js[kW]];
            wg = weight_copies;
        }
    }
    if constexpr (kWrites<P>)
        for (int64_t e = 0; e < run; ++e) factors[e] = scale[e % width];
    const int64_t jt = rs[kT] == 0 ? 0 : run, jw = Weighted && rs[kW] == 0 ? 0 : run;
    // Positions [e, e + kVectorWidth) of the group at pg.
    const auto part = [&](const T* pg, T* og, int64_t e, Lanes factor, Lanes sum) {
        Lanes weight = {};
        if constexpr (Weighted) weight = load_packed(wg + e);
        const Lanes d = load_packed(pg + e) - load_packed(tg + e);
        return packed_positions<P, Weighted, T, Streaming>(d, weight, factor, kWrites<P> ? og + e : nullptr, sum);
    };
    const auto lanes_at = [](const double* at) {
        Lanes v;
        std::memcpy(&v, at, sizeof v);
        return v;
    };
    // In the passes that only read, a group's vectors ask for the line kPrefetchDistance
    // elements ahead at each line's start, within the block, as the flat walks do: 2**24
    // float32 positions, (N, 64) `axis=0` 4.5-4.9 -> 3.6-3.9 ms. Asked for a group at a
    // time, rows of 64 outputs ran 20% slower in cache; rows of 16 ran 15% slower in cache
    // either way (8-15% faster beyond it), and are not asked for.
    constexpr int64_t kPerLine = 64 / (kVectorWidth * sizeof(T));  // vectors of T in a line
    constexpr int kPrefetchWidthMin = 32;                         // of the widths not fixed
    const auto prefetching = [&](int64_t at) {
        return !kWrites<P> && (Width > 0 || width >= kPrefetchWidthMin) &&
               (at + kLanes) * width + kPrefetchDistance < count * width;
    };
    const auto prefetch_vector = [&](int64_t at, const T* tg_, const Wt* wg_, int64_t e) FASTMSE_ALWAYS_INLINE {
        prefetch(ahead(p + at * width + e));
        if (jt != 0) prefetch(ahead(tg_ + e));
        if constexpr (Weighted)
            if (jw != 0) prefetch(ahead(wg_ + e));
    };
    if constexpr (Width > 0) {
        constexpr int kParts = kLanes * Width / kVectorWidth;
        Lanes sum[kParts], factor[kParts] = {};
        for (int k = 0; k < kParts; ++k) {
            sum[k] = lanes_at(acc + k * kVectorWidth);
            if constexpr (kWrites<P>) factor[k] = lanes_at(factors + k * kVectorWidth);
        }
        for (; i + kLanes <= count; i += kLanes, tg += jt) {
            const bool ahead_in_block = prefetching(i);
            for (int k = 0; k < kParts; ++k) {
                if (k % kPerLine == 0 && ahead_in_block) prefetch_vector(i, tg, wg, k * kVectorWidth);
                sum[k] = part(p + i * Width, kWrites<P> ? out + i * Width : nullptr, k * kVectorWidth, factor[k],
                              sum[k]);
            }
            if constexpr (Weighted) wg += jw;
        }
        for (int k = 0; k < kParts; ++k) std::memcpy(acc + k * kVectorWidth, &sum[k], sizeof(Lanes));
    } else {
        for (; i + kLanes <= count; i += kLanes, tg += jt) {
            const bool ahead_in_block = prefetching(i);
            for (int64_t e = 0; e < run; e += kVectorWidth) {
                if (e % (kPerLine * kVectorWidth) == 0 && ahead_in_block) prefetch_vector(i, tg, wg, e);
                const Lanes factor = kWrites<P> ? lanes_at(factors + e) : Lanes{};
                const Lanes sum = part(p + i * width, kWrites<P> ? out + i * width : nullptr, e, factor,
                                       lanes_at(acc + e));
                std::memcpy(acc + e, &sum, sizeof sum);
            }
            if constexpr (Weighted) wg += jw;
        }
    }
    return i;
}
#endif

// `count` summed positions, `rs` apart, from `offset` past `base`, of `width` neighbouring
// outputs: the block's position i (the first one's is `lane`) adds its terms to lane
// i % kLanes of each output, acc[(i % kLanes) * width + j], as across_output_tasks needs.
// Width > 0 fixes the width at compile time (then equal to `width`), so that the lanes
// of a few outputs (a loss per column of a narrow batch) live in registers. streaming:
// across_rows's groups stream their stores.
template <Pass P, bool Weighted, bool Unit, typename T, typename Wt, int Width = 0>
inline void across_block(const Layout& l, const int64_t* base, const int64_t* offset, const int64_t* js,
                         const int64_t* rs, int64_t count, int64_t lane, int width, const double* scale,
                         double* acc, bool streaming) {
    if constexpr (Width > 0) {
        double fixed[kLanes * Width];
        for (int e = 0; e < kLanes * Width; ++e) fixed[e] = acc[e];
        across_block<P, Weighted, Unit, T, Wt, -Width>(l, base, offset, js, rs, count, lane, Width, scale, fixed,
                                                       streaming);
        for (int e = 0; e < kLanes * Width; ++e) acc[e] = fixed[e];
        return;
    }
    if constexpr (Width < 0) width = -Width;
    const T* p = static_cast<const T*>(l.data[kP]) + base[kP] + offset[kP];
    const T* t = static_cast<const T*>(l.data[kT]) + base[kT] + offset[kT];
    const Wt* w = Weighted ? static_cast<const Wt*>(l.data[kW]) + base[kW] + offset[kW] : nullptr;
    T* out = kWrites<P> ? static_cast<T*>(l.data[kOut]) + base[kOut] + offset[kOut] : nullptr;
    const int64_t sp = Unit ? 1 : js[kP], st = Unit ? 1 : js[kT];
    const int64_t sw = Unit ? 1 : js[kW], so = Unit ? 1 : js[kOut];
    const auto row = [&](int64_t i, double* lane_acc) {
        const T* pi = p + i * rs[kP];
        const T* ti = t + i * rs[kT];
        const Wt* wi = Weighted ? w + i * rs[kW] : nullptr;
        T* oi = kWrites<P> ? out + i * rs[kOut] : nullptr;
        for (int j = 0; j < width; ++j) {
            const double v = element<P, Weighted>(pi + j * sp, ti + j * st, Weighted ? wi + j * sw : nullptr,
                                                  kWrites<P> ? oi + j * so : nullptr, scale[j]);
            if constexpr (kReduces<P>) lane_acc[j] += v;
        }
    };
    const auto lane_of = [&](int64_t i) { return acc + ((lane + i) & (kLanes - 1)) * width; };
    int64_t i = 0;
    for (; i < count && ((lane + i) & (kLanes - 1)) != 0; ++i) row(i, lane_of(i));
#if defined(__GNUC__)
    if constexpr (kPackable<T> && (!Weighted || kPackable<Wt>) && (Width < 0 || Unit)) {
        if (streaming)
            i = across_rows<P, Weighted, -Width, kStreams<P, T>>(p, t, w, out, js, rs, width, scale, i, count, acc);
        else
            i = across_rows<P, Weighted, -Width>(p, t, w, out, js, rs, width, scale, i, count, acc);
    }
#endif
    if constexpr (Width < 0)  // whole lanes, their indices known at compile time: in registers
        for (; i + kLanes <= count; i += kLanes)
            for (int64_t k = 0; k < kLanes; ++k) row(i + k, acc + k * width);
#if defined(__GNUC__)
    if constexpr (Width == 0 && Unit && kPackable<T> && (!Weighted || kPackable<Wt>)) {
        // Rows apart in memory (a batch summed over its leading axes, or in Fortran order
        // over its last): each row's outputs in vectors, their lanes' sums in acc as row()
        // adds them (row() stayed scalar: (256, 128, 128) float32 over axis 0 took 1.17 ms,
        // 1.01 so, against the flat sum's 0.57).
        for (; i < count; ++i) {
            double* const lane_acc = lane_of(i);
            const T* pi = p + i * rs[kP];
            const T* ti = t + i * rs[kT];
            const Wt* wi = Weighted ? w + i * rs[kW] : nullptr;
            T* oi = kWrites<P> ? out + i * rs[kOut] : nullptr;
            int j = 0;
            for (; j + kVectorWidth <= width; j += kVectorWidth) {
                Lanes sum = {}, factor = {}, weight = {};
                if constexpr (kReduces<P>) std::memcpy(&sum, lane_acc + j, sizeof sum);
                if constexpr (kWrites<P>) std::memcpy(&factor, scale + j, sizeof factor);
                if constexpr (Weighted) weight = load_packed(wi + j);
                const Lanes d = load_packed(pi + j) - load_packed(ti + j);
                sum = packed_positions<P, Weighted>(d, weight, factor, kWrites<P> ? oi + j : nullptr, sum);
                if constexpr (kReduces<P>) std::memcpy(lane_acc + j, &sum, sizeof sum);
            }
            for (; j < width; ++j) {
                const double v = element<P, Weighted>(pi + j, ti + j, Weighted ? wi + j : nullptr,
                                                      kWrites<P> ? oi + j : nullptr, scale[j]);
                if constexpr (kReduces<P>) lane_acc[j] += v;
            }
        }
    }
#endif
    for (; i < count; ++i) row(i, lane_of(i));
}

// Groups of up to kNarrow outputs (the last of a batch's columns, or all of a narrow one)
// whose predictions lie side by side take across_block with their width fixed; targets
// and weights may be one for all of them (a scalar target, the 0 of weight sums).
inline constexpr int kNarrow = 4;

template <Pass P, bool Weighted, typename T, typename Wt>
inline void narrow_block(const Layout& l, const int64_t* base, const int64_t* offset, const int64_t* js,
                         const int64_t* rs, int64_t count, int64_t lane, int width, const double* scale,
                         double* acc, bool streaming) {
    const auto fixed = [&](auto width_) {
        constexpr int kWidth = decltype(width_)::value;
        across_block<P, Weighted, false, T, Wt, kWidth>(l, base, offset, js, rs, count, lane, kWidth, scale, acc,
                                                        streaming);
    };
    switch (width) {
        case 1: fixed(std::integral_constant<int, 1>{}); break;
        case 2: fixed(std::integral_constant<int, 2>{}); break;
        case 3: fixed(std::integral_constant<int, 3>{}); break;
        default: fixed(std::integral_constant<int, 4>{}); break;
    }
}

// Tasks of across-output mode: a group of kOutputsPerTask neighbouring outputs along the
// last kept dimension, over one chunk of their summed positions.
template <Pass P, bool Weighted, typename T, typename Wt>
void across_output_tasks(Schedule& schedule, int64_t begin, int64_t end) {
    const Layout& l = schedule.layout;
    const int j_dim = l.n_kept - 1;
    const int64_t extent = l.shape[j_dim];
    const int64_t n_groups = (extent + kOutputsPerTask - 1) / kOutputsPerTask;
    int64_t js[kOperands];
    for (int k = 0; k < kOperands; ++k) js[k] = l.strides[k][j_dim];
    const bool unit = js[kP] == 1 && js[kT] == 1 && (!Weighted || js[kW] == 1) &&
                      (!kWrites<P> || js[kOut] == 1);
    // Narrow groups: predictions (and `out`) side by side, targets and weights too or one
    // for the group.
    const auto side_by_side = [&](int k, bool may_be_one) { return js[k] == 1 || (may_be_one && js[k] == 0); };
    const bool narrow_layout = side_by_side(kP, false) && (!kWrites<P> || side_by_side(kOut, false)) &&
                               side_by_side(kT, true) && (!Weighted || side_by_side(kW, true));
    Odometer outer(l, 0, j_dim);
    Odometer summed(l, l.n_kept, l.ndim);
    int64_t rs[kOperands];
    for (int k = 0; k < kOperands; ++k) rs[k] = l.strides[k][l.last()];
    // Tasks chunk by chunk, each chunk's groups of outputs together: a thread's range then
    // covers all the outputs of its rows, where ranges of groups left the thread of a
    // narrow last group (64 + 1 outputs) nearly idle. With one chunk and no outer axis, the
    // groups are still the only tasks.
    const int64_t tasks_per_chunk = l.n_out / extent * n_groups;
    // One summed dimension (after merging, the common case).
    const bool single = l.ndim - l.n_kept == 1;
    // The gradient's stores stream as lane_tasks's do, in whole groups of rows (across_rows),
    // which are every block's but the last where the summed positions lie along one
    // dimension: 2**24 float32 positions, mse_and_grad(axis=0, out=) of (N, 16) 7.9-8.4 ->
    // 6.9-7.1 ms, of (N, 3) 7.8 -> 6.4-6.6.
    const bool streaming = single && streams_to_out<P, T>(l);
    for (int64_t task = begin; task < end; ++task) {
        const int64_t c = task / tasks_per_chunk;
        const int64_t group = task % tasks_per_chunk % n_groups;
        const int64_t outer_index = task % tasks_per_chunk / n_groups;
        outer.seek(outer_index);
        const int64_t j0 = group * kOutputsPerTask;
        const int width = static_cast<int>(std::min(kOutputsPerTask, extent - j0));
        const bool narrow = narrow_layout && width <= kNarrow;
        int64_t base[kOperands];
        for (int k = 0; k < kOperands; ++k) base[k] = outer.offset[k] + j0 * js[k];
        double scale[kOutputsPerTask] = {};
        if (l.data[kScale])
            for (int j = 0; j < width; ++j)
                scale[j] = static_cast<const double*>(l.data[kScale])[base[kScale] + j * js[kScale]];
        const int64_t lo = c * kChunk, hi = std::min(lo + kChunk, l.n_red);
        summed.seek(lo);
        Cascade<kOutputsPerTask> cascade;
        for (int64_t block = lo; block < hi; block += kRowBlock) {
            double acc[kLanes * kOutputsPerTask];
            std::fill_n(acc, kLanes * width, 0.0);
            const int64_t block_end = std::min(block + kRowBlock, hi);
            auto sweep = [&](const int64_t* offset, int64_t count, int64_t lane) {
                if constexpr (kPackable<T>) {
                    if (narrow) {
                        narrow_block<P, Weighted, T, Wt>(l, base, offset, js, rs, count, lane, width, scale, acc,
                                                         streaming);
                        return;
                    }
                }
                if (unit)
                    across_block<P, Weighted, true, T, Wt>(l, base, offset, js, rs, count, lane, width, scale, acc,
                                                           streaming);
                else
                    across_block<P, Weighted, false, T, Wt>(l, base, offset, js, rs, count, lane, width, scale,
                                                            acc, streaming);
            };
            if (single) {  // positions a pointer step apart: the whole block in one sweep
                int64_t offset[kOperands];
                for (int k = 0; k < kOperands; ++k) offset[k] = block * rs[k];
                sweep(offset, block_end - block, 0);
            } else {
                // Runs along the innermost summed dimension, the lanes going on across them.
                for (int64_t pos = block; pos < block_end;) {
                    const int64_t n = std::min(l.shape[l.last()] - summed.index[l.last()], block_end - pos);
                    sweep(summed.offset, n, pos - block);
                    pos += n;
                    summed.advance(n);
                }
            }
            if constexpr (kReduces<P>) {
                double block_sums[kOutputsPerTask];
                for (int j = 0; j < width; ++j) {
                    double lanes[kLanes];
                    for (int64_t k = 0; k < kLanes; ++k) lanes[k] = acc[k * width + j];
                    block_sums[j] = combine_lanes(lanes);
                }
                cascade.push(block_sums, width);
            }
        }
        if constexpr (kReduces<P>) {
            double values[kOutputsPerTask];
            cascade.total(values, width);
            const int64_t o0 = outer_index * extent + j0;
            for (int j = 0; j < width; ++j) {
                int64_t kept_offset[kOperands];
                for (int k = 0; k < kOperands; ++k) kept_offset[k] = base[k] + j * js[k];
                schedule.store(o0 + j, c, kept_offset, values[j]);
            }
        }
    }
#if defined(__GNUC__) && defined(__AVX__)  // where store_packed streams
    if (streaming) _mm_sfence();  // as lane_tasks
#endif
}

template <Pass P, bool Weighted, typename T, typename Wt>
void execute(Schedule& schedule) {
    const Layout& l = schedule.layout;
    if (l.n_out == 0 || l.n_red == 0) return;
    if (schedule.across_outputs) {
        const int64_t n_groups = (l.shape[l.n_kept - 1] + kOutputsPerTask - 1) / kOutputsPerTask;
        const int64_t n_tasks = l.n_out / l.shape[l.n_kept - 1] * n_groups * schedule.n_chunks;
        for_each_range(n_tasks, schedule.parallel, schedule.num_threads, [&](int64_t b, int64_t e) {
            across_output_tasks<P, Weighted, T, Wt>(schedule, b, e);
        });
    } else if (schedule.short_rows) {
        // Tasks of about kChunk positions, whatever the row length.
        const int64_t rows = std::max<int64_t>(1, kChunk / l.n_red);
        const int64_t n_tasks = (l.n_out + rows - 1) / rows;
        for_each_range(n_tasks, schedule.parallel, schedule.num_threads, [&](int64_t b, int64_t e) {
            row_tasks<P, Weighted, T, Wt>(l, schedule.loss, b * rows, std::min(e * rows, l.n_out));
        });
    } else {
        for_each_range(l.n_out * schedule.n_chunks, schedule.parallel, schedule.num_threads,
                       [&](int64_t b, int64_t e) { lane_tasks<P, Weighted, T, Wt>(schedule, b, e); });
    }
}

inline constexpr bool kOwn16Bit = FASTMSE_ISA_16_BIT;

// fn(weighted, T{}, Wt{}) for the problem's element type T, weight type Wt (T or float64)
// and whether it has weights (std::bool_constant). 16-bit types only where this copy has
// their loops (kOwn16Bit).
template <typename Fn>
void with_types(const Problem& problem, Fn&& fn) {
    const bool weighted = problem.weights.data != nullptr;
    const bool wide_weights = problem.weights_dtype == ScalarType::float64;
    auto typed = [&](auto zero) {
        if (!weighted)
            fn(std::false_type{}, zero, zero);
        else if (wide_weights)
            fn(std::true_type{}, zero, 0.0);
        else
            fn(std::true_type{}, zero, zero);
    };
    if (sixteen_bit(problem.dtype) && !kOwn16Bit)  // cpp/isa.cpp sends such data to the baseline copy
        throw std::invalid_argument("16-bit data in a copy of the kernels without loops for it");
    switch (problem.dtype) {
        case ScalarType::float32: typed(float{}); break;
        case ScalarType::float64: typed(double{}); break;
        case ScalarType::float16:
            if constexpr (kOwn16Bit) typed(Half{});
            break;
        case ScalarType::bfloat16:
            if constexpr (kOwn16Bit) typed(BFloat16{});
            break;
    }
}

template <Pass P>
void run_rows_first(const Problem& problem);

// Whether the operands of a two-dimensional pass that writes disagree on which dimension
// is contiguous (inputs in Fortran order and `out` in C order, or one input transposed):
// walked row by row, one of them would then fetch each cache line once per element. One
// broadcast along a dimension (a target per sample) is read once per row, and does not;
// nor do rows of one (strides of 1 along both dimensions).
inline bool contiguous_along(const Operand& operand, int d) {
    return operand.data && std::llabs(operand.strides[d]) == 1 && std::llabs(operand.strides[1 - d]) > 1;
}

inline bool disagreeing_orders(const Problem& problem) {
    if (problem.ndim != 2 || !problem.out.data || problem.shape[0] < 2 || problem.shape[1] < 2) return false;
    bool along[2] = {false, false};
    for (const Operand* operand : {&problem.predictions, &problem.targets, &problem.weights, &problem.out})
        for (int d = 0; d < 2; ++d) along[d] |= contiguous_along(*operand, d);
    return along[0] && along[1];
}

// The tiles of such a pass: along the dimension that `out` has contiguous (walked
// innermost), one cache line of it; along the other, kTileRun positions. Each line a tile
// touches is then used whole before it leaves the cache, and the operands that step a row
// (often a page) apart along `out`'s lines touch few pages a tile: in a VM each page that
// misses the TLB costs a walk of two page tables. (A Fortran-ordered (65536, 64) float32
// batch with a C-ordered `out`: rows took 15-20 ms, NumPy's expression 11, tiles of 32 x 32
// 4-20 as the arrays' pages happened to be huge or not.)
inline constexpr int64_t kTileRun = 256;

struct Tiling {
    int64_t extent[2];  // of the problem's two dimensions
    int64_t side[2];    // of a tile
    int64_t tiles_along_1;
    int64_t n_tiles;
    int inner;  // the dimension walked innermost: `out`'s contiguous one

    explicit Tiling(const Problem& problem)
        : extent{problem.shape[0], problem.shape[1]},
          inner(contiguous_along(problem.out, 0) ? 0 : 1) {
        side[inner] = 64 / static_cast<int64_t>(item_size(problem.dtype));
        side[1 - inner] = kTileRun;
        tiles_along_1 = (extent[1] + side[1] - 1) / side[1];
        n_tiles = (extent[0] + side[0] - 1) / side[0] * tiles_along_1;
    }

    // Tile `tile`'s positions [first[d], last[d]) along each dimension.
    void bounds(int64_t tile, int64_t* first, int64_t* last) const {
        first[0] = tile / tiles_along_1 * side[0];
        first[1] = tile % tiles_along_1 * side[1];
        for (int d = 0; d < 2; ++d) last[d] = std::min(first[d] + side[d], extent[d]);
    }
};

// Tiles [begin, end) of an elementwise pass over a problem of disagreeing_orders.
template <Pass P, bool Weighted, typename T, typename Wt>
void tiled_tasks(const Problem& problem, const Tiling& tiling, int64_t begin, int64_t end) {
    static_assert(!kReduces<P>);
    const auto strides = [](const Operand& operand, int d) { return operand.data ? operand.strides[d] : 0; };
    const T* const p = static_cast<const T*>(problem.predictions.data);
    const T* const t = static_cast<const T*>(problem.targets.data);
    const Wt* const w = static_cast<const Wt*>(problem.weights.data);
    T* const out = static_cast<T*>(problem.out.data);
    const double* const scale = static_cast<const double*>(problem.scale.data);
    const int64_t sp[2] = {strides(problem.predictions, 0), strides(problem.predictions, 1)};
    const int64_t st[2] = {strides(problem.targets, 0), strides(problem.targets, 1)};
    const int64_t sw[2] = {strides(problem.weights, 0), strides(problem.weights, 1)};
    const int64_t so[2] = {strides(problem.out, 0), strides(problem.out, 1)};
    const int64_t ss[2] = {strides(problem.scale, 0), strides(problem.scale, 1)};
    const auto at = [&](int64_t r, int64_t c) {
        element<P, Weighted>(p + r * sp[0] + c * sp[1], t + r * st[0] + c * st[1],
                             Weighted ? w + r * sw[0] + c * sw[1] : nullptr, out + r * so[0] + c * so[1],
                             scale ? scale[r * ss[0] + c * ss[1]] : 0.0);
    };
    for (int64_t tile = begin; tile < end; ++tile) {
        int64_t first[2], last[2];
        tiling.bounds(tile, first, last);
        if (tiling.inner == 0) {
            for (int64_t c = first[1]; c < last[1]; ++c)
                for (int64_t r = first[0]; r < last[0]; ++r) at(r, c);
        } else {
            for (int64_t r = first[0]; r < last[0]; ++r)
                for (int64_t c = first[1]; c < last[1]; ++c) at(r, c);
        }
    }
}

// An elementwise problem with the neighbouring dimensions that every operand steps
// through as one (a stride the next one's times its extent: a C-ordered batch with one
// gradient factor for all) merged: walked flat, its stores are aligned (run_lanes), which
// rows of a few positions do not allow (2**22 float64 (N, 10) mse_grad 3.7 -> 2.4 ms).
struct MergedDims {
    Problem problem;
    int64_t shape[kMaxDims];
    int64_t strides[kOperands][kMaxDims];

    explicit MergedDims(const Problem& original) : problem(original) {
        Operand* const operands[kOperands] = {&problem.predictions, &problem.targets, &problem.weights,
                                              &problem.out,         &problem.loss,    &problem.scale};
        int n = 0;
        for (int d = 0; d < original.ndim; ++d) {
            bool merge = n > 0;
            for (int k = 0; k < kOperands && merge; ++k)
                if (operands[k]->data) merge = strides[k][n - 1] == operands[k]->strides[d] * original.shape[d];
            if (!merge) shape[n++] = 1;
            shape[n - 1] *= original.shape[d];
            for (int k = 0; k < kOperands; ++k) strides[k][n - 1] = operands[k]->data ? operands[k]->strides[d] : 0;
        }
        problem.ndim = n;
        problem.n_kept = std::min(original.n_kept, n - 1);
        problem.shape = shape;
        for (int k = 0; k < kOperands; ++k)
            if (operands[k]->data) operands[k]->strides = strides[k];
    }
};

// Pass P over a problem: its schedule, then the loops for its element and weight types.
template <Pass P>
void run_typed(const Problem& problem) {
    if constexpr (P == Pass::reduce_and_grad) {
        if (!problem.weight_sums_in_pass && disagreeing_orders(problem)) {
            // The loss in a pass of its own (the same sums: they do not depend on `out`),
            // first, as `out` may be an input; then the gradient in tiles.
            Problem loss = problem;
            loss.out = {};
            loss.scale = {};
            run_typed<Pass::reduce>(loss);
            Problem gradient = problem;
            gradient.loss = {};
            gradient.loss_divisors = nullptr;
            gradient.rows_first = false;
            run_typed<Pass::grad>(gradient);
            return;
        }
    }
    if constexpr (kReduces<P>) {
        if (problem.rows_first && problem.n_kept == 0 && problem.ndim >= 2 && problem.loss.data &&
            !problem.weight_sums_in_pass) {
            run_rows_first<P>(problem);
            return;
        }
    }
    if constexpr (!kReduces<P>) {
        if (!problem.weight_sums_in_pass && disagreeing_orders(problem)) {
            const Tiling tiling(problem);
            const bool parallel = problem.num_threads > 1 && run_on_team(problem.shape[0] * problem.shape[1]);
            with_types(problem, [&](auto weighted, auto zero, auto weight_zero) {
                for_each_range(tiling.n_tiles, parallel, problem.num_threads, [&](int64_t b, int64_t e) {
                    tiled_tasks<P, decltype(weighted)::value, decltype(zero), decltype(weight_zero)>(problem, tiling,
                                                                                                      b, e);
                });
            });
            return;
        }
        if (problem.ndim > 1 && !problem.weight_sums_in_pass) {
            const MergedDims merged(problem);
            if (merged.problem.ndim < problem.ndim) {
                run_typed<P>(merged.problem);
                return;
            }
        }
    }
    // An elementwise pass sums nothing, so the order of its walk is free: every row along
    // the last dimension is taken as an output, and short rows (a target or weight per
    // sample broadcast along them) go many to a task, as a loss per sample does.
    Problem walked = problem;
    if constexpr (!kReduces<P>) walked.n_kept = std::max(problem.n_kept, problem.ndim - 1);
    Schedule schedule(walked);
    const Layout& l = schedule.layout;
    if (problem.weight_sums_in_pass) {
        // Short rows find the sums in any of these passes; lane mode (outputs of more
        // than kBlock positions, or one output) in the loss alone.
        const bool lanes = P == Pass::reduce && !schedule.across_outputs;
        if (!kTakesWeightSums<P> || !l.data[kW] || (kReduces<P> && !l.data[kLoss]) || problem.loss_divisors ||
            problem.loss_divisor != 1.0 || !(lanes || (l.n_kept > 0 && schedule.short_rows)))
            throw std::invalid_argument(
                "weight_sums_in_pass: the loss or gradient of weighted rows of at most kBlock, or the loss in lane mode");
    }
    if (problem.negative_prediction &&
        (P != Pass::reduce_difference || l.data[kW] || schedule.across_outputs || schedule.short_rows))
        throw std::invalid_argument("negative_prediction: reduce_difference without weights in lane mode");
    if (kReduces<P> && l.data[kLoss] && l.n_red == 0) {
        // Nothing to sum: every output is an empty sum.
        Odometer kept(l, 0, l.n_kept);
        for (int64_t o = 0; o < l.n_out; ++o) {
            kept.seek(o);
            schedule.loss.put(kept.offset[kLoss], 0.0);
        }
        return;
    }
    if (kReduces<P> && schedule.n_chunks > 1) {
        schedule.partials.allocate(l.n_out * schedule.n_chunks);
        if (problem.weight_sums_in_pass) schedule.weight_partials.allocate(l.n_out * schedule.n_chunks);
    }
    with_types(problem, [&](auto weighted, auto zero, auto weight_zero) {
        execute<P, decltype(weighted)::value, decltype(zero), decltype(weight_zero)>(schedule);
    });
    if constexpr (kReduces<P>) schedule.finish();
}

// n row sums added up as one block of a flat sum of a float64 array of them adds them
// (reduce_difference of the array and 0): the same lanes, terms and combination.
inline double flat_block(const double* sums, int64_t n) {
    static constexpr double kZero = 0.0;
    static constexpr int64_t kStep[kOperands] = {1, 0, 0, 0, 0, 0};
    double acc[kLanes] = {};
    const Cursor<double, double> at{sums, &kZero, nullptr, nullptr};
    run_lanes<Pass::reduce_difference, false, false>(acc, 0, at, kStep, 0.0, n, n);
    return combine_lanes(acc);
}

// A sum over everything in rows first (Problem::rows_first): each row along the last
// dimension summed as a loss per row sums it, then the row sums in C order as a flat sum
// of an array of them: blocks of kBlock, a cascade of the blocks in each kChunk, a cascade
// of those. Where the rows are short rows, each block of them is summed into a buffer of
// its own and added up there: no array of row sums, no second pass. Rows that are not (a
// layout that sends them across outputs, or rows longer than kBlock) fill such an array
// first.
template <Pass P>
void run_rows_first(const Problem& problem) {
    int64_t row_strides[kMaxDims] = {};  // the rows' C order, as outputs of a loss per row
    for (int64_t d = problem.ndim - 2, at = 1; d >= 0; --d) {
        row_strides[d] = at;
        at *= problem.shape[d];
    }
    Problem rows = problem;
    rows.n_kept = problem.ndim - 1;
    rows.rows_first = false;
    rows.loss.strides = row_strides;
    rows.loss_dtype = ScalarType::float64;
    rows.loss_divisor = 1.0;
    rows.loss_divisors = nullptr;
    const Schedule schedule(rows);  // its loss is not written: each block has its own
    const Layout& l = schedule.layout;
    const int64_t n_rows = l.n_out, n_blocks = (n_rows + kBlock - 1) / kBlock;
    double total = 0.0;  // no rows, or rows of nothing: a sum of zeros
    if (n_rows > 0 && l.n_red > 0) {
        Partials all_rows;
        if (!schedule.short_rows) {
            all_rows.allocate(n_rows);
            rows.loss.data = &all_rows[0];
            run_typed<P>(rows);
        }
        Partials block_sums;
        block_sums.allocate(n_blocks);
        with_types(problem, [&](auto weighted, auto zero, auto weight_zero) {
            using T = decltype(zero);
            using Wt = decltype(weight_zero);
            for_each_range(n_blocks, schedule.parallel, problem.num_threads, [&](int64_t b, int64_t e) {
                double buffer[kBlock];
                for (int64_t block = b; block < e; ++block) {
                    const int64_t r0 = block * kBlock, r1 = std::min(r0 + kBlock, n_rows);
                    if (schedule.short_rows)
                        row_tasks<P, decltype(weighted)::value, T, Wt>(l, LossStore(buffer, r0), r0, r1);
                    block_sums[block] = flat_block(schedule.short_rows ? buffer : &all_rows[r0], r1 - r0);
                }
            });
        });
        static_assert(kChunk % kBlock == 0, "a flat sum's chunks are whole blocks");
        constexpr int64_t kBlocksPerChunk = kChunk / kBlock;
        const int64_t n_chunks = (n_blocks + kBlocksPerChunk - 1) / kBlocksPerChunk;
        Cascade<1> chunks;
        for (int64_t c = 0; c < n_chunks; ++c) {
            Cascade<1> blocks;
            for (int64_t block = c * kBlocksPerChunk; block < std::min(n_blocks, (c + 1) * kBlocksPerChunk); ++block)
                blocks.push(&block_sums[block], 1);
            blocks.total(&total, 1);  // one chunk: the total, as the flat sum stores it
            if (n_chunks > 1) chunks.push(&total, 1);
        }
        if (n_chunks > 1) chunks.total(&total, 1);
    }
    LossStore(problem).put(0, total);
}

// One cache line of the bandwidth ceiling's read.
inline uint64_t read_block(const uint64_t* block) {
    prefetch(ahead(reinterpret_cast<const float*>(block)));  // as far ahead as float32 inputs
    uint64_t total = 0;
    for (int64_t l = 0; l < kLanes; ++l) total += block[l];
    return total;
}

uint64_t stream_read(const void* data, int64_t bytes, int num_threads) {
    // Prefetched like the kernels, so the ceiling is not lower than what they reach.
    const auto* words = static_cast<const uint64_t*>(data);
    const int64_t n = bytes / static_cast<int64_t>(sizeof(uint64_t));
    const int64_t blocks = n / kLanes;
    uint64_t total = 0;
#ifdef _OPENMP
    if (num_threads > 1) {  // one thread never enters OpenMP: a forked child must not (cpp/isa.cpp)
#pragma omp parallel for reduction(+ : total) num_threads(num_threads) schedule(static)
        for (int64_t b = 0; b < blocks; ++b) total += read_block(words + b * kLanes);
    } else
#endif
    {
        for (int64_t b = 0; b < blocks; ++b) total += read_block(words + b * kLanes);
    }
    for (int64_t i = blocks * kLanes; i < n; ++i) total += words[i];
    (void)num_threads;
    return total;
}

}  // namespace

extern const KernelSet kernels = {
    FASTMSE_STRINGIFY(FASTMSE_ISA),
    kOwn16Bit,
    &run_typed<Pass::reduce>,
    &run_typed<Pass::grad>,
    &run_typed<Pass::reduce_and_grad>,
    &run_typed<Pass::squared_error>,
    &run_typed<Pass::reduce_difference>,
    &stream_read,
};

}  // namespace FASTMSE_ISA
}  // namespace fastmse
