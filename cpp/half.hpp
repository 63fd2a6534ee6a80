// The 16-bit floats, IEEE binary16 and bfloat16, converted without compiler or CPU
// support for _Float16 or __bf16, so the same wheel runs on every x86-64 and aarch64 CPU
// and builds with MSVC. half_to_float and bfloat16_to_float are exact (NaNs become the
// quiet NaN of their sign, as in the Numba kernels); the conversions to 16 bits round
// to nearest even, once. The binary16 bit-level parts follow Maratyszcza's FP16 library
// and need IEEE float semantics (never -ffast-math).
#pragma once

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

inline float half_to_float(Half h) {
    const uint32_t shifted = static_cast<uint32_t>(h.bits) << 16;
    const uint32_t sign = shifted & 0x80000000u;
    const uint32_t two_w = shifted + shifted;
    // Normal numbers: re-bias the exponent by moving it into float position and scaling.
    const float normalized = bits_to_float((two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
    // Subnormals: build 0.5 + m * 2^-24 exactly and subtract the 0.5.
    const float denormalized = bits_to_float((two_w >> 17) | (126u << 23)) - 0.5f;
    const uint32_t magnitude = two_w < (1u << 27) ? float_to_bits(denormalized)
                                                  : float_to_bits(normalized);
    // A NaN chosen, not returned early: no branch, so loops of conversions vectorize.
    const bool is_nan = two_w > 0xF8000000u;
    return bits_to_float(sign | (is_nan ? 0x7FC00000u : magnitude));
}

inline Half float_to_half(float f) {
    // Scaling up then down rounds the mantissa to 10 bits with the FPU's own
    // round-to-nearest-even, and overflows to infinity where binary16 does.
    float base = (std::fabs(f) * 0x1.0p+112f) * 0x1.0p-110f;
    const uint32_t w = float_to_bits(f);
    const uint32_t shl1_w = w + w;
    const uint32_t sign = w & 0x80000000u;
    uint32_t bias = shl1_w & 0xFF000000u;
    if (bias < 0x71000000u) bias = 0x71000000u;
    base = bits_to_float((bias >> 1) + 0x07800000u) + base;
    const uint32_t bits = float_to_bits(base);
    const uint32_t exponent_bits = (bits >> 13) & 0x00007C00u;
    const uint32_t mantissa_bits = bits & 0x00000FFFu;
    const uint32_t nonsign = exponent_bits + mantissa_bits;
    const bool is_nan = shl1_w > 0xFF000000u;
    return Half{static_cast<uint16_t>((sign >> 16) | (is_nan ? 0x7E00u : nonsign))};
}

// float64 -> float32 rounding to odd (truncate, and set the last bit if anything was cut
// off): it keeps enough information for a second rounding, to nearest even at 11 bits
// (binary16) or 8 bits (bfloat16), to equal a direct one (24 >= 11 + 2).
inline float double_to_float_odd(double value) {
    float f = static_cast<float>(value);
    if (static_cast<double>(f) != value && std::isfinite(f)) {
        uint32_t bits = float_to_bits(f);
        if (std::fabs(static_cast<double>(f)) > std::fabs(value)) --bits;  // toward zero
        f = bits_to_float(bits | 1u);
    }
    return f;
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
    const bool is_nan = (w & 0x7FFFFFFFu) > 0x7F800000u;  // chosen, not returned early: as half_to_float
    return bits_to_float(is_nan ? (w & 0x80000000u) | 0x7FC00000u : w);
}

inline BFloat16 float_to_bfloat16(float f) {
    const uint32_t w = float_to_bits(f);
    if ((w & 0x7FFFFFFFu) > 0x7F800000u)  // the quiet NaN of its sign, as binary16's
        return BFloat16{static_cast<uint16_t>(((w >> 16) & 0x8000u) | 0x7FC0u)};
    // Adding just under half a unit of the kept part, plus its last bit, rounds to
    // nearest even; a carry into the exponent is the right result, up to infinity.
    const uint32_t rounded = w + 0x7FFFu + ((w >> 16) & 1u);
    return BFloat16{static_cast<uint16_t>(rounded >> 16)};
}

// float64 -> bfloat16 with one rounding.
inline BFloat16 double_to_bfloat16(double value) {
    return float_to_bfloat16(double_to_float_odd(value));
}

}  // namespace
}  // namespace fastmse
