// One compiled copy of the kernels: cpp/kernels.cpp is built once per instruction set,
// each time inside its own namespace, and cpp/isa.cpp picks a copy at run time.
#pragma once

#include <cstdint>

#include "kernels.hpp"

namespace fastmse {

struct KernelSet {
    const char* isa;
    bool own_16_bit;  // false: float16 and bfloat16 problems run the baseline copy
    void (*reduce)(const Problem&);
    void (*grad)(const Problem&);
    void (*reduce_and_grad)(const Problem&);
    void (*squared_error)(const Problem&);
    void (*reduce_difference)(const Problem&);
    uint64_t (*stream_read)(const void* data, int64_t bytes, int num_threads);
};

namespace baseline {
extern const KernelSet kernels;
}
namespace avx2 {
extern const KernelSet kernels;  // built only where FASTMSE_HAVE_AVX2 is defined
}

}  // namespace fastmse
