// The five passes on the GPU: reduce, grad, reduce_and_grad, squared_error and
// reduce_difference (cuda/kernels.cuh).
//
// Summation order, fixed by the problem alone (never by the device's size or the
// grid), so a result is bitwise the same on every GPU and every run:
//   * An output's summed positions are cut into tiles of kTilePositions positions.
//     Thread j of the tile's block adds, in this order, positions
//     tile * kTilePositions + s * kThreads * V + j * V + v for s = 0 .. kItems / V - 1
//     and v = 0 .. V - 1, where V = 16 bytes / the element size: one 16-byte load per
//     step on contiguous aligned data (a thread issues all of a full tile's loads before
//     its first addition), and the same positions one by one otherwise.
//   * The block's 256 partial sums are combined by a fixed shuffle tree (block_sum),
//     and the tile sums of one output by a second kernel (finish_kernel: the same tree,
//     or a warp's where there are at most 32): a two-stage reduction with no atomics. An
//     output of one tile is finished by the first.
//   * An output of at most kRowMax positions is summed by a group of lanes of a warp
//     (row_kernel), each lane in order, then the lanes by a fixed shuffle tree.
//   * Where neighbouring outputs are closer in memory than an output's positions, by
//     columns (column_kernel): chunks of kColumnChunk positions, each warp's kColumnRows
//     in order, the warps by a fixed pairwise tree, the chunks by finish_kernel.
// reduction_of chooses among these from the shape and the inputs' strides alone.
// Sums are float64 whatever the data's dtype; the arithmetic of a position is the CPU
// kernels' (cpp/kernels.cpp), in the same order, and nvcc is told not to contract it
// into FMAs (CMakeLists.txt), so results stay within rounding of the CPU's.
//
// Compiled by nvcc for GPUs, and by the host C++ compiler against cuda/host_model.hpp
// (CUDA's execution model on the CPU) into the test-only module fastmse._cuda_host: the
// same source, run in CI where there is no GPU.
#ifdef __CUDACC__
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#else
#include "host_model.hpp"
#endif

#include <algorithm>
#include <atomic>
#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>

#include "../cpp/position.hpp"
#include "kernels.cuh"

namespace fastmse {
namespace {

// Stored values are rounded once. A NaN is stored as the CPU kernels store it, the quiet
// NaN of its sign (CUDA's conversions give 0x7FFF for every NaN).
template <>
struct Scalar<__half> {
    __device__ static double load(__half x) { return __half2float(x); }
    __device__ static __half store(double v) {
        if (v != v) return __ushort_as_half(copysign(1.0, v) < 0.0 ? 0xFE00 : 0x7E00);
        return __double2half(v);
    }
};

template <>
struct Scalar<__nv_bfloat16> {
    __device__ static double load(__nv_bfloat16 x) { return __bfloat162float(x); }
    __device__ static __nv_bfloat16 store(double v) {
        if (v != v) return __ushort_as_bfloat16(copysign(1.0, v) < 0.0 ? 0xFFC0 : 0x7FC0);
        return __double2bfloat16(v);
    }
};

}  // namespace

namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kItems = 16;                        // positions per thread per tile
constexpr int64_t kTilePositions = int64_t{kThreads} * kItems;  // summed positions per tile
constexpr int64_t kRowMax = 1024;                 // positions an output may have to be summed by a warp
constexpr int kRowsAtOnce = 4;                    // outputs a lane group of row_kernel sums side by side
constexpr int kColumnRows = 16;                   // summed positions per warp per column chunk
constexpr int64_t kColumnChunk = int64_t{kWarps} * kColumnRows;  // summed positions per column chunk

enum OperandIndex { kP, kT, kW, kOut, kLoss, kScale, kOperands };

// Shape and element strides (zero where broadcast or absent), by value in the launch.
// Division of indices by a fixed extent without a division instruction (a 64-bit one is
// tens of instructions on a GPU): a multiply-high by a magic number and shifts, chosen on
// the host once per launch (Granlund and Montgomery, as libdivide's unsigned 64-bit case).
struct Divisor {
    uint64_t magic;  // 0: a power of two, a shift alone
    int shift;
    bool add;  // the magic number has 65 bits: add back and halve
};

__host__ __device__ inline uint64_t multiply_high(uint64_t a, uint64_t b) {
#if defined(__CUDA_ARCH__)
    return __umul64hi(a, b);
#elif defined(__SIZEOF_INT128__)
    return static_cast<uint64_t>((static_cast<unsigned __int128>(a) * b) >> 64);
#else
    const uint64_t a_low = a & 0xffffffffu, a_high = a >> 32, b_low = b & 0xffffffffu, b_high = b >> 32;
    const uint64_t low_low = a_low * b_low, high_low = a_high * b_low, low_high = a_low * b_high;
    const uint64_t middle = (low_low >> 32) + (high_low & 0xffffffffu) + low_high;
    return a_high * b_high + (high_low >> 32) + (middle >> 32);
#endif
}

__device__ inline uint64_t divide(uint64_t n, const Divisor& d) {
    if (d.magic == 0) return n >> d.shift;
    const uint64_t q = multiply_high(d.magic, n);
    return d.add ? (((n - q) >> 1) + q) >> d.shift : q >> d.shift;
}

// floor(high * 2**64 / d) and its remainder, for high < d, by long division.
inline uint64_t divide_wide(uint64_t high, uint64_t d, uint64_t* remainder) {
    uint64_t quotient = 0, r = high;
    for (int bit = 63; bit >= 0; --bit) {
        const bool carry = (r >> 63) != 0;
        r <<= 1;
        quotient <<= 1;
        if (carry || r >= d) {
            r -= d;
            quotient |= 1;
        }
    }
    *remainder = r;
    return quotient;
}

inline Divisor divisor_of(int64_t extent) {
    const uint64_t d = extent > 1 ? static_cast<uint64_t>(extent) : 1;
    int log2 = 0;
    while ((d >> log2) > 1) ++log2;
    if ((d & (d - 1)) == 0) return Divisor{0, log2, false};
    uint64_t remainder = 0;
    uint64_t magic = divide_wide(uint64_t{1} << log2, d, &remainder);
    if (d - remainder < (uint64_t{1} << log2)) return Divisor{magic + 1, log2, false};
    magic += magic;
    const uint64_t twice = remainder + remainder;
    if (twice >= d || twice < remainder) magic += 1;
    return Divisor{magic + 1, log2, true};
}

struct Geometry {
    int ndim;
    int n_kept;
    int64_t n_out;  // kept positions
    int64_t n_red;  // summed positions per kept one
    int64_t shape[kMaxDims];
    int64_t strides[kOperands][kMaxDims];
    Divisor extents[kMaxDims];  // by shape[d]
    Divisor by_n_red;
};

// `index` divided by the extent `d`: quotient and remainder.
__device__ inline int64_t split(int64_t index, int64_t extent, const Divisor& d, int64_t* remainder) {
    const auto quotient = static_cast<int64_t>(divide(static_cast<uint64_t>(index), d));
    *remainder = index - quotient * extent;
    return quotient;
}

struct Operands {
    const void* p;
    const void* t;
    const void* w;
    void* out;
    void* loss;           // Problem::loss: float64, or the data's dtype where loss_in_data_type
    double loss_divisor;  // what each sum is divided by before it is stored
    const double* loss_divisors;  // or each output's own, at the loss's offsets (Problem::loss_divisors)
    const double* scale;
    bool loss_in_data_type;
    bool wide_weights;    // weights in float64, not in the data's dtype
    bool vector_aligned;  // flat, and p, t, w, out 16-byte aligned
};

template <typename T>
constexpr int kVector = 16 / static_cast<int>(sizeof(T));

// An output's loss from its sum: divided, rounded once to its dtype (Problem::loss).
template <typename T>
__device__ inline void store_loss(const Operands& a, int64_t at, double sum) {
    const double value = a.loss_divisors != nullptr ? sum / a.loss_divisors[at]
                         : a.loss_divisor == 1.0    ? sum  // sums for a caller to combine
                                                    : sum / a.loss_divisor;
    if (a.loss_in_data_type)
        static_cast<T*>(a.loss)[at] = Scalar<T>::store(value);
    else
        static_cast<double*>(a.loss)[at] = value;
}

template <typename T>
__device__ inline double weight_at(const Operands& a, int64_t offset) {
    if (a.w == nullptr) return 1.0;
    if (a.wide_weights) return static_cast<const double*>(a.w)[offset];
    return Scalar<T>::load(static_cast<const T*>(a.w)[offset]);
}

// The inputs of the position at element offsets `off` (strided problems), read: its
// difference and weight, and where its `out` value goes. Loading several positions before
// adding any (load, then add) keeps their loads in flight together.
struct Loaded {
    double d;
    double weight;
    int64_t out_at;
};

template <typename T>
__device__ inline Loaded load_position(const Operands& a, const int64_t* off) {
    const double d = Scalar<T>::load(static_cast<const T*>(a.p)[off[kP]]) -
                     Scalar<T>::load(static_cast<const T*>(a.t)[off[kT]]);
    return Loaded{d, weight_at<T>(a, off[kW]), off[kOut]};
}

template <Pass P, typename T>
__device__ inline double add_position(const Operands& a, const Loaded& x, double scale) {
    T* out = a.out ? static_cast<T*>(a.out) + x.out_at : nullptr;
    return apply<P, T>(x.d, x.weight, scale, out);
}

// The position at element offsets `off`: writes `out` where the pass does and returns its
// share of the sum.
template <Pass P, typename T>
__device__ inline double visit(const Operands& a, const int64_t* off, double scale) {
    return add_position<P, T>(a, load_position<T>(a, off), scale);
}

// Position r of a flat problem (one summed dimension, unit strides): every operand's
// offset is r.
template <Pass P, typename T>
__device__ inline double visit_flat(const Operands& a, int64_t r, double scale) {
    const int64_t off[kOut + 1] = {r, r, r, r};
    return visit<P, T>(a, off, scale);
}

__host__ __device__ inline bool aligned16(const void* p) {
    return p == nullptr || reinterpret_cast<std::uintptr_t>(p) % 16 == 0;
}

// V elements of E (E is T, or float64 weights of float32/float16 data, V = kVector<T>),
// read and written with 16-byte loads and stores: one, or more for a wider E.
template <typename E, int V>
struct Pack {
    E v[V];
};

template <typename E, int V>
__device__ inline Pack<E, V> load_pack(const void* base, int64_t r) {
    constexpr int kLoads = static_cast<int>(sizeof(E)) * V / 16;
    const uint4* from = reinterpret_cast<const uint4*>(static_cast<const E*>(base) + r);
    uint4 raw[kLoads];
#pragma unroll
    for (int k = 0; k < kLoads; ++k) raw[k] = from[k];
    Pack<E, V> pack;
    memcpy(&pack, raw, sizeof raw);
    return pack;
}

// One step of a thread on a flat, aligned problem: positions r .. r + V - 1 of each operand.
template <typename T, typename Wt>
struct Step {
    static constexpr int V = kVector<T>;
    Pack<T, V> p, t;
    Pack<Wt, V> w;
};

template <typename T, typename Wt>
__device__ inline Step<T, Wt> load_step(const Operands& a, int64_t r) {
    Step<T, Wt> step;
    step.p = load_pack<T, Step<T, Wt>::V>(a.p, r);
    step.t = load_pack<T, Step<T, Wt>::V>(a.t, r);
    if (a.w) step.w = load_pack<Wt, Step<T, Wt>::V>(a.w, r);
    return step;
}

// Adds the terms of a loaded step to acc in order, and stores its `out` values.
template <Pass P, typename T, typename Wt>
__device__ inline double add_step(const Operands& a, const Step<T, Wt>& step, int64_t r, double scale, double acc) {
    constexpr int V = Step<T, Wt>::V;
    Pack<T, V> out;  // only where the pass writes: an unused array's address would keep it in memory
#pragma unroll
    for (int v = 0; v < V; ++v) {
        const double d = Scalar<T>::load(step.p.v[v]) - Scalar<T>::load(step.t.v[v]);
        const double weight = a.w ? Scalar<Wt>::load(step.w.v[v]) : 1.0;
        if constexpr (kWrites<P>)
            acc += apply<P, T>(d, weight, scale, &out.v[v]);
        else
            acc += term<P>(weight, d);
    }
    if constexpr (kWrites<P>) {
        uint4 raw;
        memcpy(&raw, &out, sizeof raw);
        *reinterpret_cast<uint4*>(static_cast<T*>(a.out) + r) = raw;
    }
    return acc;
}

// Positions r .. r + V - 1 of a flat, aligned problem; adds their terms to acc in order.
template <Pass P, typename T, typename Wt>
__device__ inline double visit_pack(const Operands& a, int64_t r, double scale, double acc) {
    return add_step<P, T, Wt>(a, load_step<T, Wt>(a, r), r, scale, acc);
}

// A thread's share of a full tile of a flat, aligned problem (from `start`, kThreads * V
// apart): all its loads first, so that they are in flight together, then the terms in
// the order described at the top. The steps are a pack expansion, not a loop, so that
// they stay in registers (a loop left one instantiation's array in local memory).
template <Pass P, typename T, typename Wt, int... S>
__device__ inline double visit_steps(const Operands& a, int64_t start, double scale, std::integer_sequence<int, S...>) {
    constexpr int64_t kApart = int64_t{kThreads} * kVector<T>;
    const Step<T, Wt> steps[] = {load_step<T, Wt>(a, start + S * kApart)...};
    double acc = 0.0;
    ((acc = add_step<P, T, Wt>(a, steps[S], start + S * kApart, scale, acc)), ...);
    return acc;
}

template <Pass P, typename T, typename Wt>
__device__ inline double visit_tile(const Operands& a, int64_t start, double scale) {
    constexpr int kSteps = kItems / kVector<T>;
    // float64 weights of float16 data (64 bytes a step) are loaded a step at a time:
    // all at once, ptxas spilled them.
    if constexpr (sizeof(Wt) * kVector<T> > 32) {
        double acc = 0.0;
        for (int s = 0; s < kSteps; ++s)
            acc = visit_pack<P, T, Wt>(a, start + int64_t{s} * kThreads * kVector<T>, scale, acc);
        return acc;
    } else {
        return visit_steps<P, T, Wt>(a, start, scale, std::make_integer_sequence<int, kSteps>{});
    }
}

// Element offsets of kept position o (dimensions [0, n_kept)).
__device__ inline void kept_offsets(const Geometry& g, int64_t o, int64_t* off) {
    for (int k = 0; k < kOperands; ++k) off[k] = 0;
    for (int d = g.n_kept - 1; d >= 0; --d) {
        int64_t i;
        o = split(o, g.shape[d], g.extents[d], &i);
        for (int k = 0; k < kOperands; ++k) off[k] += i * g.strides[k][d];
    }
}

// `base` plus the element offsets of summed position r (dimensions [n_kept, ndim)).
__device__ inline void summed_offsets(const Geometry& g, const int64_t* base, int64_t r, int64_t* off) {
    for (int k = 0; k < kW + 2; ++k) off[k] = base[k];  // p, t, w, out
    for (int d = g.ndim - 1; d >= g.n_kept; --d) {
        int64_t i;
        r = split(r, g.shape[d], g.extents[d], &i);
        for (int k = 0; k < kW + 2; ++k) off[k] += i * g.strides[k][d];
    }
}

// `base` plus the element offsets of summed position r: a product where one dimension is
// summed (after merging, the common case), the general walk otherwise.
__device__ inline void position_offsets(const Geometry& g, const int64_t* base, int64_t r, int64_t* off) {
    if (g.ndim - g.n_kept == 1) {
        for (int k = 0; k < kW + 2; ++k) off[k] = base[k] + r * g.strides[k][g.ndim - 1];
        return;
    }
    summed_offsets(g, base, r, off);
}

__device__ inline double scale_at(const Operands& a, const int64_t* kept) {
    return a.scale ? a.scale[kept[kScale]] : 0.0;
}

// The sum of `value` over the block, in thread 0: a fixed shuffle tree, then the warps'
// sums by the same tree. Every thread of the block must call it.
__device__ inline double block_sum(double value) {
    __shared__ double warp_sums[kWarps];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) value += __shfl_down_sync(0xffffffffu, value, offset);
    if (lane == 0) warp_sums[warp] = value;
    __syncthreads();
    if (warp == 0) {
        value = lane < kWarps ? warp_sums[lane] : 0.0;
#pragma unroll
        for (int offset = 16; offset > 0; offset >>= 1) value += __shfl_down_sync(0xffffffffu, value, offset);
    }
    __syncthreads();  // warp_sums is reused by the block's next tile
    return value;
}

// Passes that do not reduce (grad, squared_error) over all n_out * n_red positions.
template <Pass P, typename T, bool Flat>
__global__ void __launch_bounds__(kThreads) map_kernel(Geometry g, Operands a) {
    const int64_t n = g.n_out * g.n_red;
    const int64_t first = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
    const int64_t stride = int64_t{gridDim.x} * blockDim.x;
    if constexpr (Flat) {
        const double scale = a.scale ? a.scale[0] : 0.0;
        int64_t done = 0;
        if (a.vector_aligned) {
            constexpr int V = kVector<T>;
            for (int64_t i = first; i < n / V; i += stride) {
                if (a.wide_weights)
                    visit_pack<P, T, double>(a, i * V, scale, 0.0);
                else
                    visit_pack<P, T, T>(a, i * V, scale, 0.0);
            }
            done = n / V * V;
        }
        for (int64_t r = done + first; r < n; r += stride) visit_flat<P, T>(a, r, scale);
    } else {
        // V neighbouring positions per thread: one division for them, not two per position.
        constexpr int V = kVector<T>;
        int64_t kept[kOperands], off[kOperands];
        for (int64_t i = first * V; i < n; i += stride * V) {
            int64_t r;
            int64_t o = split(i, g.n_red, g.by_n_red, &r);
            kept_offsets(g, o, kept);
            double scale = scale_at(a, kept);
            for (int v = 0; v < V && i + v < n; ++v, ++r) {
                if (r == g.n_red) {
                    r = 0;
                    kept_offsets(g, ++o, kept);
                    scale = scale_at(a, kept);
                }
                position_offsets(g, kept, r, off);
                visit<P, T>(a, off, scale);
            }
        }
    }
}

// Reducing passes, stage one: the sum of each (output, tile) into partials, in the order
// described at the top; reduce_and_grad writes the gradient on the way.
template <Pass P, typename T, bool Flat>
__global__ void __launch_bounds__(kThreads) tile_kernel(Geometry g, Operands a, int64_t tiles, double* partials) {
    constexpr int V = kVector<T>;
    const int64_t units = g.n_out * tiles;
    for (int64_t u = blockIdx.x; u < units; u += gridDim.x) {
        const int64_t o = u / tiles, tile = u % tiles;
        int64_t kept[kOperands], off[kOperands];
        kept_offsets(g, o, kept);
        const double scale = scale_at(a, kept);
        double acc = 0.0;
        const int64_t start = tile * kTilePositions + int64_t{threadIdx.x} * V;
        // Flat: each output's positions are contiguous; its operands, from its first one,
        // are read as a flat problem (16-byte loads where they are aligned).
        Operands row = a;
        if constexpr (Flat) {
            row.p = static_cast<const T*>(a.p) + kept[kP];
            row.t = static_cast<const T*>(a.t) + kept[kT];
            if (a.w)
                row.w = a.wide_weights ? static_cast<const void*>(static_cast<const double*>(a.w) + kept[kW])
                                       : static_cast<const void*>(static_cast<const T*>(a.w) + kept[kW]);
            if (a.out) row.out = static_cast<T*>(a.out) + kept[kOut];
            row.vector_aligned = aligned16(row.p) && aligned16(row.t) && aligned16(row.w) && aligned16(row.out);
        }
        const bool vector = Flat && row.vector_aligned;
        if (vector && (tile + 1) * kTilePositions <= g.n_red) {
            acc = a.wide_weights ? visit_tile<P, T, double>(row, start, scale) : visit_tile<P, T, T>(row, start, scale);
        } else {
            for (int s = 0; s < kItems / V; ++s) {
                const int64_t r0 = start + int64_t{s} * kThreads * V;
                if (vector && r0 + V <= g.n_red) {
                    acc = a.wide_weights ? visit_pack<P, T, double>(row, r0, scale, acc)
                                         : visit_pack<P, T, T>(row, r0, scale, acc);
                    continue;
                }
                // V neighbouring positions: the first found, the others a stride further
                // along the innermost dimension (found again where it wraps).
                const int last = g.ndim - 1;
                int64_t inner = -1;
                for (int v = 0; v < V && r0 + v < g.n_red; ++v) {
                    if constexpr (Flat) {
                        acc += visit_flat<P, T>(row, r0 + v, scale);
                    } else {
                        if (inner < 0 || inner + 1 == g.shape[last]) {
                            position_offsets(g, kept, r0 + v, off);
                            split(r0 + v, g.shape[last], g.extents[last], &inner);
                        } else {
                            ++inner;
                            for (int k = 0; k < kW + 2; ++k) off[k] += g.strides[k][last];
                        }
                        acc += visit<P, T>(a, off, scale);
                    }
                }
            }
        }
        const double total = block_sum(acc);
        // An output of one tile is finished here; several go through finish_kernel.
        if (threadIdx.x == 0) {
            if (tiles > 1)
                partials[u] = total;
            else if (a.loss)
                store_loss<T>(a, kept[kLoss], total);
        }
    }
}

// Reducing passes, stage two: each output's partial sums, by a fixed tree, into loss; a
// block per output, or, where an output has at most 32 (few tiles or column chunks), a
// warp per output, lane l taking partial l.
template <typename T>
__global__ void __launch_bounds__(kThreads) finish_kernel(Geometry g, const double* partials, int64_t tiles, Operands a) {
    if (tiles <= 32) {
        const int lane = static_cast<int>(threadIdx.x & 31);
        const int64_t warps = int64_t{gridDim.x} * kWarps;
        for (int64_t first = int64_t{blockIdx.x} * kWarps; first < g.n_out; first += warps) {
            const int64_t o = first + (threadIdx.x >> 5);
            double acc = o < g.n_out && lane < tiles ? partials[o * tiles + lane] : 0.0;
            for (int offset = 16; offset > 0; offset >>= 1) acc += __shfl_down_sync(0xffffffffu, acc, offset);
            if (o < g.n_out && lane == 0) {
                int64_t kept[kOperands];
                kept_offsets(g, o, kept);
                store_loss<T>(a, kept[kLoss], acc);
            }
        }
        return;
    }
    for (int64_t o = blockIdx.x; o < g.n_out; o += gridDim.x) {
        double acc = 0.0;
        for (int64_t k = threadIdx.x; k < tiles; k += kThreads) acc += partials[o * tiles + k];
        const double total = block_sum(acc);
        if (threadIdx.x == 0) {
            int64_t kept[kOperands];
            kept_offsets(g, o, kept);
            store_loss<T>(a, kept[kLoss], total);
        }
    }
}

// Reducing passes over short outputs (at most kRowMax positions, none included): each
// output is summed by a group of `group` lanes of a warp (the smallest power of two of at
// least its positions, at most 32), lane l of the group adding positions l, l + group, ...
// in order, so that neighbouring lanes read neighbouring elements; then the group's sums by
// a fixed shuffle tree into its first lane. A group takes kRowsAtOnce outputs at once,
// their loads side by side, so that a thread has several in flight. Every lane of a warp
// takes part in the shuffles.
template <Pass P, typename T>
__global__ void __launch_bounds__(kThreads) row_kernel(Geometry g, Operands a, int group) {
    const int lane = static_cast<int>(threadIdx.x & 31), member = lane % group;
    const int64_t rows_per_warp = 32 / group, rows_per_block = int64_t{kWarps} * rows_per_warp;
    const int64_t row_in_block = int64_t{threadIdx.x >> 5} * rows_per_warp + lane / group;
    const int64_t rows_per_step = rows_per_block * kRowsAtOnce;
    for (int64_t first = int64_t{blockIdx.x} * rows_per_step; first < g.n_out;
         first += int64_t{gridDim.x} * rows_per_step) {
        int64_t kept[kRowsAtOnce][kOperands];
        double scale[kRowsAtOnce], acc[kRowsAtOnce];
        bool valid[kRowsAtOnce];
#pragma unroll
        for (int k = 0; k < kRowsAtOnce; ++k) {
            const int64_t o = first + k * rows_per_block + row_in_block;
            valid[k] = o < g.n_out;
            acc[k] = 0.0;
            if (valid[k]) kept_offsets(g, o, kept[k]);
            scale[k] = valid[k] ? scale_at(a, kept[k]) : 0.0;
        }
        for (int64_t r = member; r < g.n_red; r += group) {
            Loaded loaded[kRowsAtOnce];
#pragma unroll
            for (int k = 0; k < kRowsAtOnce; ++k) {
                if (!valid[k]) continue;
                int64_t off[kOperands];
                position_offsets(g, kept[k], r, off);
                loaded[k] = load_position<T>(a, off);
            }
#pragma unroll
            for (int k = 0; k < kRowsAtOnce; ++k)
                if (valid[k]) acc[k] += add_position<P, T>(a, loaded[k], scale[k]);
        }
#pragma unroll
        for (int k = 0; k < kRowsAtOnce; ++k) {
            for (int offset = group / 2; offset > 0; offset >>= 1)
                acc[k] += __shfl_down_sync(0xffffffffu, acc[k], offset);
            if (valid[k] && member == 0 && a.loss) store_loss<T>(a, kept[k][kLoss], acc[k]);
        }
    }
}

// The lanes row_kernel gives an output of n positions.
int row_group(int64_t n) {
    int group = 1;
    while (group < 32 && group < n) group *= 2;
    return group;
}

// Reducing passes where neighbouring outputs lie closer in memory than an output's
// positions (a sum over axis 0 of a C-ordered batch): lane l of every warp takes output
// j0 + l of 32 neighbouring ones along the last kept dimension, so that a warp reads
// neighbouring elements, and the summed positions are cut into chunks of kColumnChunk;
// warp w adds positions chunk * kColumnChunk + w * kColumnRows + i, i = 0 .. kColumnRows - 1,
// in order, and the 8 warps' sums of an output are combined by a fixed pairwise tree. An
// output of one chunk is finished here; several go through finish_kernel.
// (Its launch bounds name one block per multiprocessor at least: with the thread count
// alone, ptxas spilled reduce_and_grad's registers, nvcc 13 for sm_90.)
template <Pass P, typename T>
__global__ void __launch_bounds__(kThreads, 1) column_kernel(Geometry g, Operands a, int64_t chunks, double* partials) {
    __shared__ double warp_sums[kWarps][32];
    const int lane = static_cast<int>(threadIdx.x & 31), warp = static_cast<int>(threadIdx.x >> 5);
    const int64_t extent = g.shape[g.n_kept - 1], groups = (extent + 31) / 32;
    const int64_t units = g.n_out / extent * groups * chunks;
    for (int64_t u = blockIdx.x; u < units; u += gridDim.x) {
        const int64_t chunk = u % chunks, group = u / chunks % groups, outer = u / chunks / groups;
        const int64_t j = group * 32 + lane, o = outer * extent + j;
        int64_t kept[kOperands] = {}, off[kOperands];
        double acc = 0.0;
        if (j < extent) {
            kept_offsets(g, o, kept);
            const double scale = scale_at(a, kept);
            const int64_t first = chunk * kColumnChunk + int64_t{warp} * kColumnRows;
            // The rows' loads first, in flight together, then their terms in order.
            Loaded loaded[kColumnRows];
#pragma unroll
            for (int i = 0; i < kColumnRows; ++i) {
                if (first + i >= g.n_red) continue;
                position_offsets(g, kept, first + i, off);
                loaded[i] = load_position<T>(a, off);
            }
#pragma unroll
            for (int i = 0; i < kColumnRows; ++i)
                if (first + i < g.n_red) acc += add_position<P, T>(a, loaded[i], scale);
        }
        warp_sums[warp][lane] = acc;
        __syncthreads();
        if (warp == 0 && j < extent) {
            double sums[kWarps];
#pragma unroll
            for (int w = 0; w < kWarps; ++w) sums[w] = warp_sums[w][lane];
#pragma unroll
            for (int width = kWarps / 2; width > 0; width /= 2)
#pragma unroll
                for (int w = 0; w < width; ++w) sums[w] = sums[2 * w] + sums[2 * w + 1];
            if (chunks > 1)
                partials[o * chunks + chunk] = sums[0];
            else if (a.loss)
                store_loss<T>(a, kept[kLoss], sums[0]);
        }
        __syncthreads();  // warp_sums is reused by the block's next unit
    }
}

__global__ void __launch_bounds__(kThreads) read_kernel(const uint4* data, int64_t n, const unsigned char* tail,
                                                        int64_t tail_bytes, uint64_t* sink) {
    uint64_t acc = 0;
    const int64_t stride = int64_t{gridDim.x} * blockDim.x;
    for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n; i += stride) {
        const uint4 v = data[i];
        acc ^= (uint64_t{v.x} | uint64_t{v.y} << 32) ^ (uint64_t{v.z} | uint64_t{v.w} << 32);
    }
    if (blockIdx.x == 0 && threadIdx.x < tail_bytes) acc ^= tail[threadIdx.x];
    if (acc == 0x5eed5eed5eed5eedull) *sink = acc;  // keeps the loads; practically never stores
}

void check(cudaError_t status, const char* what) {
    if (status != cudaSuccess) {
        (void)cudaGetLastError();  // not left behind for the next call's launch check
        throw std::runtime_error(std::string("fastmse: CUDA error in ") + what + ": " + cudaGetErrorString(status));
    }
}

// Makes `device` current for the launches and restores the caller's device after.
class DeviceScope {
  public:
    explicit DeviceScope(int device) {
        const cudaError_t status = cudaGetDevice(&previous_);
        if (status != cudaSuccess) {
            (void)cudaGetLastError();
            throw std::runtime_error(std::string("fastmse: no usable CUDA device: ") + cudaGetErrorString(status));
        }
        if (previous_ != device) check(cudaSetDevice(device), "cudaSetDevice");
    }
    ~DeviceScope() {
        int current = previous_;
        if (cudaGetDevice(&current) == cudaSuccess && current != previous_) cudaSetDevice(previous_);
    }
    DeviceScope(const DeviceScope&) = delete;
    DeviceScope& operator=(const DeviceScope&) = delete;

  private:
    int previous_ = 0;
};

// Where one call's launches go: a device, its multiprocessor count and a stream.
struct Target {
    int device;
    int multiprocessors;
    cudaStream_t stream;
};

Target target_of(int device, std::uintptr_t stream) {
    int multiprocessors = 0;
    check(cudaDeviceGetAttribute(&multiprocessors, cudaDevAttrMultiProcessorCount, device), "cudaDeviceGetAttribute");
    return Target{device, std::max(1, multiprocessors), reinterpret_cast<cudaStream_t>(stream)};
}

constexpr int kCachedDevices = 64;

// Blocks of Kernel that one multiprocessor of `device` runs at once (the occupancy
// calculator's answer for kThreads threads, which depends on the kernel's registers),
// asked once per kernel and device.
template <auto Kernel>
int resident_blocks(int device) {
    static std::atomic<int> known[kCachedDevices];  // 0: not asked yet
    const bool cached = device >= 0 && device < kCachedDevices;
    int blocks = cached ? known[device].load(std::memory_order_relaxed) : 0;
    if (blocks == 0) {
        check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, Kernel, kThreads, 0),
              "cudaOccupancyMaxActiveBlocksPerMultiprocessor");
        blocks = std::max(1, blocks);
        if (cached) known[device].store(blocks, std::memory_order_relaxed);
    }
    return blocks;
}

// Blocks for `work` items, `per_block` per block.
int64_t blocks_for(int64_t work, int64_t per_block) { return (work + per_block - 1) / per_block; }


struct Launch {
    Geometry g{};
    Operands a{};
    bool flat = false;             // one contiguous dimension, all of it summed or mapped
    bool contiguous_rows = false;  // each output's positions contiguous (one summed dimension, unit strides)
};

// The geometry of a problem of at most kMaxDims dimensions: `strides[k]` are operand k's
// element strides, nullptr where it is absent (zeros then).
Geometry geometry_of(const int64_t* shape, int ndim, int n_kept, const int64_t* const* strides) {
    Geometry g{};
    g.ndim = ndim;
    g.n_kept = n_kept;
    g.n_out = 1;
    g.n_red = 1;
    for (int d = 0; d < ndim; ++d) {
        g.shape[d] = shape[d];
        g.extents[d] = divisor_of(shape[d]);
        (d < n_kept ? g.n_out : g.n_red) *= shape[d];
        for (int k = 0; k < kOperands; ++k) g.strides[k][d] = strides[k] != nullptr ? strides[k][d] : 0;
    }
    g.by_n_red = divisor_of(g.n_red);
    return g;
}

Launch prepare(const Problem& problem) {
    if (problem.ndim > kMaxDims)
        throw std::invalid_argument("fastmse: the GPU kernels take at most " + std::to_string(kMaxDims) +
                                    " dimensions after merging, not " + std::to_string(problem.ndim));
    Launch launch;
    const Operand* operands[kOperands] = {&problem.predictions, &problem.targets, &problem.weights,
                                          &problem.out, &problem.loss, &problem.scale};
    const int64_t* strides[kOperands];
    for (int k = 0; k < kOperands; ++k) strides[k] = operands[k]->data != nullptr ? operands[k]->strides : nullptr;
    launch.g = geometry_of(problem.shape, problem.ndim, problem.n_kept, strides);
    const Geometry& g = launch.g;
    Operands& a = launch.a;
    a.p = problem.predictions.data;
    a.t = problem.targets.data;
    a.w = problem.weights.data;
    a.out = problem.out.data;
    a.loss = problem.loss.data;
    a.loss_divisor = problem.loss_divisor;
    a.loss_divisors = problem.loss_divisors;
    a.loss_in_data_type = problem.loss_dtype == problem.dtype;
    a.scale = static_cast<const double*>(problem.scale.data);
    a.wide_weights = a.w != nullptr && problem.weights_dtype == ScalarType::float64 &&
                     problem.dtype != ScalarType::float64;
    bool unit = true;
    for (int k : {kP, kT, kW, kOut})
        if (operands[k]->data != nullptr && g.ndim == 1 && g.strides[k][0] != 1) unit = false;
    launch.flat = g.n_kept == 0 && g.ndim <= 1 && unit;
    a.vector_aligned = launch.flat && aligned16(a.p) && aligned16(a.t) && aligned16(a.w) && aligned16(a.out);
    launch.contiguous_rows = g.ndim - g.n_kept <= 1;
    for (int k : {kP, kT, kW, kOut})
        if (operands[k]->data != nullptr && g.ndim > g.n_kept && g.strides[k][g.ndim - 1] != 1)
            launch.contiguous_rows = false;
    return launch;
}

// Every launch goes through here: <<<>>> under nvcc, the host model's launcher otherwise,
// so that the kernels keep one source. The grid: as many blocks as have work, at most what
// the device runs at once (grid-stride loops do the rest in whole waves); the summation
// order never depends on it.
template <auto Kernel, typename... Args>
void launch_kernel(int64_t work_blocks, const Target& target, const Args&... args) {
    const int64_t resident = int64_t{resident_blocks<Kernel>(target.device)} * target.multiprocessors;
    const auto blocks = static_cast<unsigned>(std::max<int64_t>(1, std::min(work_blocks, resident)));
#ifdef __CUDACC__
    Kernel<<<blocks, kThreads, 0, target.stream>>>(args...);
#else
    host_model::launch<Kernel>(blocks, kThreads, target.stream, args...);
#endif
}

int64_t tiles_of(int64_t n_red) { return (n_red + kTilePositions - 1) / kTilePositions; }

// How a reducing pass walks its outputs, and how many partial sums each output has (1:
// written to loss directly; more: combined by finish_kernel). As the CPU's across-output
// mode: by columns where the last kept dimension is cheaper to step along than the last
// summed one, for predictions and targets together.
enum class Walk { rows, tiles, columns };

struct Reduction {
    Walk walk;
    int64_t parts;
};

Reduction reduction_of(const Geometry& g) {
    const int j = g.n_kept - 1, r = g.ndim - 1;
    auto cost = [&](int d) {
        return (g.strides[kP][d] < 0 ? -g.strides[kP][d] : g.strides[kP][d]) +
               (g.strides[kT][d] < 0 ? -g.strides[kT][d] : g.strides[kT][d]);
    };
    if (g.n_kept > 0 && g.shape[j] > 1 && g.n_red > 1 && cost(j) < cost(r))
        return {Walk::columns, blocks_for(g.n_red, kColumnChunk)};
    if (g.n_red <= kRowMax) return {Walk::rows, 1};
    return {Walk::tiles, tiles_of(g.n_red)};
}

template <Pass P, typename T>
void launch_typed(const Launch& launch, double* partials, const Target& target) {
    const Geometry& g = launch.g;
    const Operands& a = launch.a;
    if constexpr (!kReduces<P>) {
        const int64_t blocks = blocks_for(g.n_out * g.n_red, int64_t{kThreads} * kVector<T>);
        if (launch.flat)
            launch_kernel<map_kernel<P, T, true>>(blocks, target, g, a);
        else
            launch_kernel<map_kernel<P, T, false>>(blocks, target, g, a);
    } else {
        const Reduction reduction = reduction_of(g);
        if (reduction.parts > 1 && partials == nullptr)
            throw std::invalid_argument("fastmse: a reducing GPU pass needs its workspace");
        if (reduction.walk == Walk::rows) {
            const int group = row_group(g.n_red);
            launch_kernel<row_kernel<P, T>>(blocks_for(g.n_out, int64_t{kWarps} * (32 / group) * kRowsAtOnce), target, g,
                                        a, group);
        } else if (reduction.walk == Walk::columns) {
            const int64_t extent = g.shape[g.n_kept - 1];
            launch_kernel<column_kernel<P, T>>(g.n_out / extent * blocks_for(extent, 32) * reduction.parts, target, g,
                                               a, reduction.parts, partials);
        } else if (launch.contiguous_rows) {
            launch_kernel<tile_kernel<P, T, true>>(g.n_out * reduction.parts, target, g, a, reduction.parts, partials);
        } else {
            launch_kernel<tile_kernel<P, T, false>>(g.n_out * reduction.parts, target, g, a, reduction.parts, partials);
        }
        check(cudaGetLastError(), "a kernel launch");
        if (a.loss && reduction.parts > 1) {
            const int64_t blocks = reduction.parts <= 32 ? blocks_for(g.n_out, kWarps) : g.n_out;
            launch_kernel<finish_kernel<T>>(blocks, target, g, static_cast<const double*>(partials), reduction.parts,
                                            a);
        }
    }
    check(cudaGetLastError(), "a kernel launch");
}

template <Pass P>
void run(const Problem& problem, void* workspace, int device, std::uintptr_t stream) {
    const Launch launch = prepare(problem);
    if (launch.g.n_out == 0 || (!kReduces<P> && launch.g.n_red == 0)) return;
    DeviceScope scope(device);
    (void)cudaGetLastError();  // an error older than this call is not this call's
    const Target target = target_of(device, stream);
    auto* partials = static_cast<double*>(workspace);
    switch (problem.dtype) {
        case ScalarType::float16: launch_typed<P, __half>(launch, partials, target); break;
        case ScalarType::float32: launch_typed<P, float>(launch, partials, target); break;
        case ScalarType::float64: launch_typed<P, double>(launch, partials, target); break;
        case ScalarType::bfloat16: launch_typed<P, __nv_bfloat16>(launch, partials, target); break;
    }
}

}  // namespace

void reduce(const Problem& problem, void* workspace, int device, std::uintptr_t stream) {
    run<Pass::reduce>(problem, workspace, device, stream);
}
void grad(const Problem& problem, void* workspace, int device, std::uintptr_t stream) {
    run<Pass::grad>(problem, workspace, device, stream);
}
void reduce_and_grad(const Problem& problem, void* workspace, int device, std::uintptr_t stream) {
    run<Pass::reduce_and_grad>(problem, workspace, device, stream);
}
void squared_error(const Problem& problem, void* workspace, int device, std::uintptr_t stream) {
    run<Pass::squared_error>(problem, workspace, device, stream);
}
void reduce_difference(const Problem& problem, void* workspace, int device, std::uintptr_t stream) {
    run<Pass::reduce_difference>(problem, workspace, device, stream);
}

void stream_read(const void* data, int64_t bytes, uint64_t* sink, int device, std::uintptr_t stream) {
    if (!aligned16(data)) throw std::invalid_argument("fastmse: stream_read needs 16-byte aligned memory");
    DeviceScope scope(device);
    (void)cudaGetLastError();
    const int64_t n = bytes / 16;
    const auto* tail = static_cast<const unsigned char*>(data) + n * 16;
    launch_kernel<read_kernel>(blocks_for(n, kThreads), target_of(device, stream), static_cast<const uint4*>(data), n,
                               tail, bytes - n * 16, sink);
    check(cudaGetLastError(), "stream_read");
}

int64_t workspace_bytes(const int64_t* shape, int ndim, int n_kept, const int64_t* predictions_strides,
                        const int64_t* targets_strides) {
    if (ndim > kMaxDims) return 0;  // the CuPy kernels take such a problem
    // reduction_of reads predictions' and targets' strides only.
    const int64_t* strides[kOperands] = {predictions_strides, targets_strides, nullptr, nullptr, nullptr, nullptr};
    const Geometry g = geometry_of(shape, ndim, n_kept, strides);
    const Reduction reduction = reduction_of(g);
    if (g.n_out == 0 || reduction.parts <= 1) return 0;
    return static_cast<int64_t>(sizeof(double)) * g.n_out * reduction.parts;
}

bool can_run(int device) {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || device < 0 || device >= count) {
        (void)cudaGetLastError();
        return false;
    }
    try {
        DeviceScope scope(device);
        cudaFuncAttributes attributes;
        const cudaError_t status = cudaFuncGetAttributes(&attributes, finish_kernel<float>);
        (void)cudaGetLastError();
        return status == cudaSuccess;
    } catch (const std::runtime_error&) {
        return false;
    }
}

int device_count() {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess) {
        cudaGetLastError();  // clear the sticky "no driver" status
        return 0;
    }
    return count;
}

int driver_version() {
    int version = 0;
    if (cudaDriverGetVersion(&version) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return version;
}

int runtime_version() { return CUDART_VERSION; }

std::string architectures() { return FASTMSE_CUDA_ARCHITECTURES; }

}  // namespace cuda
}  // namespace fastmse
