// The 16-bit floats, IEEE binary16 and bfloat16, converted without compiler or CPU
// support for _Float16 or __bf16, so the same wheel runs on every x86-64 and aarch64 CPU
// and builds with MSVC. half_to_float and bfloat16_to_float are exact (NaNs become the
// quiet NaN of their sign, as in the Numba kernels); the conversions to 16 bits round
// to nearest even, once. The binary16 bit-level parts follow Maratyszcza's FP16 library
// and need IEEE float semantics (never -ffast-math).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cmath>
#include <cstring>

namespace fastmse {
// Internal linkage: cpp/kernels.cpp is compiled once per instruction set, and the linker
// must not pick one copy's code for all.
namespace {

struct Half {
    uint16_t bits;
};

inline float bits_to_float(uint32_t bits) {
    float value;
    std::memcpy(&value, &bits, sizeof value);
    return value;
}

inline uint32_t float_to_bits(float value) {
    uint32_t bits;
    std::memcpy(&bits, &value, sizeof bits);
    return bits;
}

// Choices between two values are masks, not ?: or an early return: GCC compiles those
// to branches, and a loop with a branch does not vectorize (the 16-bit loops ran 1.3x
// (sums) to 1.6x (gradients) slower so; benchmarks/RESULTS.md, session 42).
inline uint32_t all_ones_if(bool condition) {
    return 0u - static_cast<uint32_t>(condition);
}

inline float half_to_float(Half h) {
    const uint32_t shifted = static_cast<uint32_t>(h.bits) << 16;
    const uint32_t sign = shifted & 0x80000000u;
    const uint32_t two_w = shifted + shifted;
    // Normal numbers: re-bias the exponent by moving it into float position and scaling.
    const float normalized = bits_to_float((two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
    // Subnormals: build 0.5 + m * 2^-24 exactly and subtract the 0.5.
    const float denormalized = bits_to_float((two_w >> 17) | (126u << 23)) - 0.5f;
    const uint32_t subnormal = all_ones_if(two_w < (1u << 27));
    const uint32_t magnitude =
        (float_to_bits(denormalized) & subnormal) | (float_to_bits(normalized) & ~subnormal);
    const uint32_t nan = all_ones_if(two_w > 0xF8000000u);
    return bits_to_float(sign | (0x7FC00000u & nan) | (magnitude & ~nan));
}

inline Half float_to_half(float f) {
    // Scaling up then down rounds the mantissa to 10 bits with the FPU's own
    // round-to-nearest-even, and overflows to infinity where binary16 does.
    float base = (std::fabs(f) * 0x1.0p+112f) * 0x1.0p-110f;
    const uint32_t w = float_to_bits(f);
    const uint32_t shl1_w = w + w;
    const uint32_t sign = w & 0x80000000u;
    const uint32_t exponent = shl1_w & 0xFF000000u;
    const uint32_t bias = std::max(exponent, 0x71000000u);
    base = bits_to_float((bias >> 1) + 0x07800000u) + base;
    const uint32_t bits = float_to_bits(base);
    const uint32_t exponent_bits = (bits >> 13) & 0x00007C00u;
    const uint32_t mantissa_bits = bits & 0x00000FFFu;
    const uint32_t nonsign = exponent_bits + mantissa_bits;
    const uint32_t nan = all_ones_if(shl1_w > 0xFF000000u);
    return Half{static_cast<uint16_t>((sign >> 16) | (0x7E00u & nan) | (nonsign & ~nan))};
}

// float64 -> float32 rounding to odd (truncate, and set the last bit if anything was cut
// off): it keeps enough information for a second rounding, to nearest even at 11 bits
// (binary16) or 8 bits (bfloat16), to equal a direct one (24 >= 11 + 2).
inline float double_to_float_odd(double value) {
    const float f = static_cast<float>(value);
    const double back = static_cast<double>(f);
    // Inexact finite results step toward zero where rounding went away from it, then
    // set their last bit (0 or 1 each: & where && would be a branch).
    const uint32_t inexact = static_cast<uint32_t>(back != value) &
                             static_cast<uint32_t>(std::fabs(f) <= 0x1.fffffep+127f);
    const uint32_t rounded_up = static_cast<uint32_t>(std::fabs(back) > std::fabs(value));
    return bits_to_float(((float_to_bits(f) - (inexact & rounded_up)) | inexact));
}

// float64 -> binary16 with one rounding.
inline Half double_to_half(double value) {
    return float_to_half(double_to_float_odd(value));
}

// bfloat16: the upper half of a float32.
struct BFloat16 {
    uint16_t bits;
};

inline float bfloat16_to_float(BFloat16 b) {
    const uint32_t w = static_cast<uint32_t>(b.bits) << 16;
    const uint32_t nan = all_ones_if((w & 0x7FFFFFFFu) > 0x7F800000u);
    return bits_to_float((((w & 0x80000000u) | 0x7FC00000u) & nan) | (w & ~nan));
}

inline BFloat16 float_to_bfloat16(float f) {
    const uint32_t w = float_to_bits(f);
    // Adding just under half a unit of the kept part, plus its last bit, rounds to
    // nearest even; a carry into the exponent is the right result, up to infinity.
    const uint32_t rounded = (w + 0x7FFFu + ((w >> 16) & 1u)) >> 16;
    // NaNs: the quiet NaN of their sign, as binary16's.
    const uint32_t nan = all_ones_if((w & 0x7FFFFFFFu) > 0x7F800000u);
    const uint32_t quiet_nan = ((w >> 16) & 0x8000u) | 0x7FC0u;
    return BFloat16{static_cast<uint16_t>((quiet_nan & nan) | (rounded & ~nan))};
}

// float64 -> bfloat16 with one rounding.
inline BFloat16 double_to_bfloat16(double value) {
    return float_to_bfloat16(double_to_float_odd(value));
}

}  // namespace
}  // namespace fastmse
