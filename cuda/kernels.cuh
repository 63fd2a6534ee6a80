// The CUDA backend: the five passes of cpp/kernels.hpp on device memory. A Problem's
// pointers are device pointers on `device`; kernels are queued on `stream` (a
// cudaStream_t as an integer, 0 for the legacy default stream) and nothing waits for
// them. Errors are thrown as std::runtime_error (std::invalid_argument for a problem
// the GPU kernels do not take).
#pragma once

#include <cstdint>
#include <string>

#include "../cpp/kernels.hpp"

namespace fastmse::cuda {

// Dimensions a problem may have here, after the Python layer merged what it could:
// shapes and strides travel as kernel parameters.
inline constexpr int kMaxDims = 8;

void sum_squared_error(const Problem& problem, int device, std::uintptr_t stream);
void scaled_difference(const Problem& problem, int device, std::uintptr_t stream);
void sum_squared_error_and_scaled_difference(const Problem& problem, int device, std::uintptr_t stream);
void squared_error(const Problem& problem, int device, std::uintptr_t stream);
void sum_difference(const Problem& problem, int device, std::uintptr_t stream);

// Reads `bytes` bytes of device memory once (the read-bandwidth ceiling of the GPU
// benchmark), leaving a checksum in *sink (device memory, 8 bytes).
void stream_read(const void* data, int64_t bytes, uint64_t* sink, int device, std::uintptr_t stream);

// 0 where there is no driver or no device (never throws).
int device_count();
// The CUDA runtime version this module was built with (e.g. 13000).
int runtime_version();
// The architectures compiled in, as CMake's list (e.g. "75-real;80-real;...").
std::string architectures();

}  // namespace fastmse::cuda
