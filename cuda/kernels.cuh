// The CUDA backend: the five passes of cpp/kernels.hpp on device memory. A Problem's
// pointers are device pointers on `device`; kernels are queued on `stream` (a
// cudaStream_t as an integer, 0 for the legacy default stream) and nothing waits for
// them. `workspace` is device memory of workspace_bytes(...) bytes (the caller's
// allocator owns it, so that CuPy's or PyTorch's memory pools serve it); it may be null
// where that is 0. Errors are thrown as std::runtime_error (std::invalid_argument for a
// problem the GPU kernels do not take).
#pragma once

#include <cstdint>
#include <string>

#include "../cpp/kernels.hpp"

namespace fastmse::cuda {

// Dimensions a problem may have here (fewer than fastmse::kMaxDims), after the Python
// layer merged what it could: shapes and strides travel as kernel parameters.
// fastmse._core exports it as cuda_max_dims.
inline constexpr int kMaxDims = 8;

// The five passes of cpp/kernels.hpp, same names and results.
void reduce(const Problem& problem, void* workspace, int device, std::uintptr_t stream);
void grad(const Problem& problem, void* workspace, int device, std::uintptr_t stream);
void reduce_and_grad(const Problem& problem, void* workspace, int device, std::uintptr_t stream);
void squared_error(const Problem& problem, void* workspace, int device, std::uintptr_t stream);
void reduce_difference(const Problem& problem, void* workspace, int device, std::uintptr_t stream);

// Scratch a reducing pass over `shape` (n_kept kept dimensions first), with these element
// strides of predictions and targets, needs: the partial sums of its outputs.
int64_t workspace_bytes(const int64_t* shape, int ndim, int n_kept, const int64_t* predictions_strides,
                        const int64_t* targets_strides);

// Whether this module has code that runs on `device` (its architecture compiled in, as
// real code or PTX the driver can compile) and a driver new enough for its runtime.
bool can_run(int device);

// Reads `bytes` bytes of device memory once (the read-bandwidth ceiling of the GPU
// benchmark), leaving a checksum in *sink (device memory, 8 bytes).
void stream_read(const void* data, int64_t bytes, uint64_t* sink, int device, std::uintptr_t stream);

// 0 where there is no driver or no device (never throws).
int device_count();
// The CUDA version the installed driver supports (e.g. 12080); 0 where there is none.
int driver_version();
// The CUDA runtime version this module was built with (e.g. 13000).
int runtime_version();
// The architectures compiled in, comma-separated (e.g. "75-real,80-real,...").
std::string architectures();

}  // namespace fastmse::cuda

#ifdef FASTMSE_CUDA_HOST_MODEL
// The test-only build's emulated device (cuda/host_model.hpp).
namespace fastmse::host_model {
void set_multiprocessor_count(int count);
int multiprocessor_count();
void set_reverse_order(bool reverse);
bool reverse_order();
}  // namespace fastmse::host_model
#endif
