// Stride walking for cpp/kernels.cpp: a Problem as one table of element strides
// (Layout), row-major positions over a range of its dimensions with every operand's
// offset (Odometer, Cursor), and the fixed order in which sums are combined (Cascade,
// combine_lanes). The Numba backend (python/fastmse/_numba.py) mirrors it.
#pragma once

#include <cstdint>

#include "kernels.hpp"

namespace fastmse {
// Internal linkage, as in half.hpp: cpp/kernels.cpp is compiled once per instruction
// set, and each copy must keep its own code for these rather than share the linker's pick.
namespace {

enum OperandIndex { kP, kT, kW, kOut, kLoss, kScale, kOperands };

// The problem with absent operands given zero strides, and a virtual summed dimension
// of extent 1 when nothing is summed, so every output has at least one position.
struct Layout {
    int ndim = 0;
    int n_kept = 0;
    // Only [0, ndim] is filled: zeroing all kMaxDims rows would show in small calls.
    int64_t shape[kMaxDims + 1];
    int64_t strides[kOperands][kMaxDims + 1];
    void* data[kOperands] = {};
    int64_t n_out = 1;
    int64_t n_red = 1;

    explicit Layout(const Problem& problem) : ndim(problem.ndim), n_kept(problem.n_kept) {
        const Operand* operands[kOperands] = {&problem.predictions, &problem.targets,
                                              &problem.weights, &problem.out,
                                              &problem.loss, &problem.scale};
        for (int d = 0; d < ndim; ++d) shape[d] = problem.shape[d];
        for (int k = 0; k < kOperands; ++k) {
            data[k] = operands[k]->data;
            for (int d = 0; d <= ndim; ++d)
                strides[k][d] = data[k] != nullptr && d < ndim ? operands[k]->strides[d] : 0;
        }
        if (n_kept == ndim) shape[ndim++] = 1;
        for (int d = 0; d < n_kept; ++d) n_out *= shape[d];
        for (int d = n_kept; d < ndim; ++d) n_red *= shape[d];
    }
    int last() const { return ndim - 1; }
};

// Row-major position over dimensions [first, end) with every operand's offset there.
struct Odometer {
    const Layout* layout;
    int first, end;
    int64_t index[kMaxDims + 1];
    int64_t offset[kOperands];

    Odometer(const Layout& l, int first_dim, int end_dim)
        : layout(&l), first(first_dim), end(end_dim) {
        seek(0);
    }

    void seek(int64_t linear) {
        for (int64_t& o : offset) o = 0;
        for (int d = end - 1; d >= first; --d) index[d] = 0;
        // Position 0 takes no division: over an extent of 0 it is the only one there is.
        for (int d = end - 1; d >= first && linear != 0; --d) {
            const int64_t i = linear % layout->shape[d];
            linear /= layout->shape[d];
            index[d] = i;
            for (int k = 0; k < kOperands; ++k) offset[k] += i * layout->strides[k][d];
        }
    }

    // Moves n positions along the last dimension, carrying into the ones before it.
    void advance(int64_t n) {
        const int d = end - 1;
        index[d] += n;
        for (int k = 0; k < kOperands; ++k) offset[k] += n * layout->strides[k][d];
        if (index[d] < layout->shape[d]) return;
        for (int c = d; c >= first && index[c] >= layout->shape[c]; --c) {
            for (int k = 0; k < kOperands; ++k)
                offset[k] -= index[c] * layout->strides[k][c];
            index[c] = 0;
            if (c == first) return;
            ++index[c - 1];
            for (int k = 0; k < kOperands; ++k) offset[k] += layout->strides[k][c - 1];
        }
    }
};

// Pairwise summation of a stream of values, combined in a fixed binary-counter order.
template <int Width>
struct Cascade {
    static constexpr int kLevels = 64;
    double stack[kLevels][Width];
    int depth = 0;
    int64_t count = 0;

    void push(const double* values, int width) {
        double v[Width];
        for (int j = 0; j < width; ++j) v[j] = values[j];
        ++count;
        for (int64_t n = count; (n & 1) == 0; n >>= 1) {
            --depth;
            for (int j = 0; j < width; ++j) v[j] = stack[depth][j] + v[j];
        }
        for (int j = 0; j < width; ++j) stack[depth][j] = v[j];
        ++depth;
    }

    void total(double* result, int width) const {
        for (int j = 0; j < width; ++j) result[j] = 0.0;
        if (depth == 0) return;
        for (int j = 0; j < width; ++j) {
            double s = stack[depth - 1][j];
            for (int level = depth - 2; level >= 0; --level) s = stack[level][j] + s;
            result[j] = s;
        }
    }
};

inline double combine_lanes(const double* acc) {
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

// Weights are read in the data's type or in float64, never rounded to a narrower one.
template <typename T, typename Wt>
struct Cursor {
    const T* p;
    const T* t;
    const Wt* w;
    T* out;
};

template <typename T, typename Wt>
Cursor<T, Wt> cursor_at(const Layout& l, const int64_t* base, const int64_t* offset) {
    auto at = [&](int k) { return static_cast<T*>(l.data[k]) + base[k] + offset[k]; };
    Cursor<T, Wt> c{at(kP), at(kT), nullptr, nullptr};
    if (l.data[kW]) c.w = static_cast<const Wt*>(l.data[kW]) + base[kW] + offset[kW];
    if (l.data[kOut]) c.out = at(kOut);
    return c;
}

}  // namespace
}  // namespace fastmse
