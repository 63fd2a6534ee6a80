// The arithmetic of one position, written once for the CPU kernels (cpp/kernels.cpp)
// and the GPU kernels (cuda/kernels.cu, by nvcc and by the host model); the Numba
// kernels (python/fastmse/_numba.py) mirror it. In float64, whatever the data's dtype:
// d = p - t; loss term (w * d) * d; gradient term (scale * w) * d; difference term
// w * d; a stored value is rounded once to the data's dtype.
#pragma once

#if defined(__CUDACC__)
#define FASTMSE_HOST_DEVICE __host__ __device__
#else
#define FASTMSE_HOST_DEVICE
#endif

namespace fastmse {
// Internal linkage: each includer compiles its own copy (one per CPU instruction set).
namespace {

enum class Pass { reduce, grad, reduce_and_grad, squared_error, reduce_difference };

// Whether pass P sums into loss, and whether it writes `out`.
template <Pass P>
inline constexpr bool kReduces = P == Pass::reduce || P == Pass::reduce_and_grad || P == Pass::reduce_difference;
template <Pass P>
inline constexpr bool kWrites = P == Pass::grad || P == Pass::reduce_and_grad || P == Pass::squared_error;

// An element as float64, and a float64 value stored as an element (rounded once). The
// 16-bit types differ by backend (fastmse::Half and BFloat16 on the CPU, __half and
// __nv_bfloat16 on the GPU), and each backend specializes this for its own.
template <typename T>
struct Scalar {
    FASTMSE_HOST_DEVICE static double load(T x) { return x; }
    FASTMSE_HOST_DEVICE static T store(double v) { return static_cast<T>(v); }
};

// Writes `out` where the pass does: the squared error or the gradient.
template <Pass P, typename T>
FASTMSE_HOST_DEVICE inline void write(T* out, double scale, double weight, double d) {
    if constexpr (P == Pass::squared_error) *out = Scalar<T>::store(weight * d * d);
    if constexpr (P == Pass::grad || P == Pass::reduce_and_grad) *out = Scalar<T>::store(scale * weight * d);
}

// What a reducing pass adds up at one position.
template <Pass P>
FASTMSE_HOST_DEVICE inline double term(double weight, double d) {
    if constexpr (P == Pass::reduce_difference) return weight * d;
    return weight * d * d;
}

// One position, given its difference and weight: writes `out` where the pass does and
// returns its share of the sum.
template <Pass P, typename T>
FASTMSE_HOST_DEVICE inline double apply(double d, double weight, double scale, T* out) {
    if constexpr (kWrites<P>) write<P>(out, scale, weight, d);
    return term<P>(weight, d);
}

}  // namespace
}  // namespace fastmse
