// CUDA's execution model on the CPU, for the test-only build of cuda/kernels.cu
// (fastmse._cuda_host): what the kernels use, with CUDA's semantics, so that the
// kernels' own source runs, and is checked, where there is no GPU.
//
// * Every thread of a block is a fiber with its own stack. A block's fibers run on one
//   OS thread, each until it finishes or waits: __syncthreads is a real block barrier and
//   __shfl_down_sync a real exchange among the 32 threads of a warp. Blocks run one after
//   another on each OS thread (several OS threads where OpenMP is built in), so
//   __shared__ variables (thread_local statics) are the block's own while it runs.
// * A block that cannot go on (a thread left the kernel, or waits at another barrier,
//   while others wait at one; a warp whose threads do not all reach a shuffle) is an
//   error that names the kernel, the block and what each thread was doing: undefined in
//   CUDA, a hang or wrong results on a GPU. A block's threads run in index order or, as
//   tests choose, in reverse, so that a missing barrier changes results.
// * The device: one, with a multiprocessor count that tests set (grid sizes follow it).
//   Launches run to completion before they return; streams are accepted and ignored.
// * Memory is host memory: 16-byte uint4 loads are aligned (UBSan checks it), and
//   AddressSanitizer sees every access to global memory, as compute-sanitizer's memcheck
//   would; not to __shared__ variables (thread_local, which it does not guard).
#pragma once

#if defined(__CUDACC__)
#error "cuda/host_model.hpp is the host compiler's stand-in for CUDA; nvcc has the real one"
#endif

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "../cpp/half.hpp"

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FASTMSE_HOST_MODEL_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define FASTMSE_HOST_MODEL_ASAN 1
#endif

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static thread_local
#define __syncthreads() ::fastmse::host_model::sync_block(__FILE__, __LINE__)
#define __shfl_down_sync(mask, value, delta) \
    ::fastmse::host_model::shuffle_down(mask, value, delta, __FILE__, __LINE__)
#define threadIdx (::fastmse::host_model::thread_index())
#define blockIdx (::fastmse::host_model::block_index())
#define blockDim (::fastmse::host_model::block_dim())
#define gridDim (::fastmse::host_model::grid_dim())
#define CUDART_VERSION 0  // no CUDA runtime: build_info says "0.0"

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

// may_alias: the kernels read and write other types' memory through it, as CUDA allows.
#if defined(__GNUC__)
struct __attribute__((may_alias, aligned(16))) uint4 {
#else
struct alignas(16) uint4 {
#endif
    unsigned x, y, z, w;
};

struct __half {
    uint16_t bits;
};
// Internal linkage, as the cpp/half.hpp functions they call.
static inline float __half2float(__half h) { return fastmse::half_to_float(fastmse::Half{h.bits}); }
// As CUDA's conversions: rounded once, and every NaN 0x7FFF (the kernels store their own NaN).
static inline __half __double2half(double v) {
    return __half{v != v ? uint16_t{0x7FFF} : fastmse::double_to_half(v).bits};
}
static inline __half __ushort_as_half(unsigned short bits) { return __half{bits}; }
struct __nv_bfloat16 {
    uint16_t bits;
};
static inline float __bfloat162float(__nv_bfloat16 b) {
    return fastmse::bfloat16_to_float(fastmse::BFloat16{b.bits});
}
static inline __nv_bfloat16 __double2bfloat16(double v) {
    return __nv_bfloat16{v != v ? uint16_t{0x7FFF} : fastmse::double_to_bfloat16(v).bits};
}
static inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short bits) { return __nv_bfloat16{bits}; }
static inline float __double2float_rn(double v) { return static_cast<float>(v); }

// The runtime calls cuda/kernels.cu makes.
struct CUstream_st;
using cudaStream_t = CUstream_st*;
enum cudaError_t {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorInvalidDevice = 101,
};
enum cudaDeviceAttr { cudaDevAttrMultiProcessorCount = 16 };
struct cudaFuncAttributes {
    int maxThreadsPerBlock = 1024;
};

namespace fastmse::host_model {

// The emulated device's multiprocessor count (the grid sizes follow it).
void set_multiprocessor_count(int count);
int multiprocessor_count();
// Whether a block's threads run in reverse index order (each until it waits or leaves).
void set_reverse_order(bool reverse);
bool reverse_order();

// The last launch error, as cudaGetLastError returns (and clears) it.
cudaError_t& last_error();

const dim3& thread_index();
const dim3& block_index();
const dim3& block_dim();
const dim3& grid_dim();

void sync_block(const char* file, int line);
// One exchange among the warp's 32 threads: every thread leaves `value` in its slot, waits
// until the whole warp has, and takes the slot of lane + delta (its own past lane 31).
uint64_t exchange_down(unsigned mask, uint64_t value, unsigned delta, const char* file, int line);

template <typename T>
T shuffle_down(unsigned mask, T value, unsigned delta, const char* file, int line) {
    static_assert(sizeof(T) <= sizeof(uint64_t), "shuffles move at most 8 bytes");
    uint64_t bits = 0;
    std::memcpy(&bits, &value, sizeof value);
    bits = exchange_down(mask, bits, delta, file, line);
    std::memcpy(&value, &bits, sizeof value);
    return value;
}

// Runs `body` as every thread of every block of a grid; throws std::runtime_error naming
// `kernel` when a block cannot go on.
class Body {
  public:
    virtual void run() const = 0;

  protected:
    ~Body() = default;
};
void run_grid(const std::string& kernel, dim3 grid, dim3 block, const Body& body);

// The kernel's name as the compiler spells the template argument.
template <auto Kernel>
std::string kernel_name() {
    const std::string signature = __PRETTY_FUNCTION__;
    const std::size_t at = signature.find("Kernel = ");
    if (at == std::string::npos) return signature;
    const std::size_t begin = at + 9;
    const std::size_t end = signature.find_first_of(";]", begin);
    return signature.substr(begin, end - begin);
}

template <typename Fn, typename... Args>
class Call final : public Body {
  public:
    Call(Fn fn, const Args&... args) : fn_(fn), args_(args...) {}
    void run() const override { std::apply(fn_, args_); }

  private:
    Fn fn_;
    std::tuple<Args...> args_;  // the kernel's parameters, copied as a launch copies them
};

// Kernel<<<grid, block, 0, stream>>>(args...), run before it returns.
template <auto Kernel, typename... Args>
void launch(dim3 grid, dim3 block, cudaStream_t, const Args&... args) {
    if (grid.x == 0 || block.x == 0 || block.x > 1024) {
        last_error() = cudaErrorInvalidConfiguration;
        return;
    }
    if (grid.y * grid.z != 1 || block.y * block.z != 1 || block.x % 32 != 0)
        throw std::invalid_argument("fastmse host model: " + kernel_name<Kernel>() +
                                    " launched with more than one dimension or a partial warp, which it does not take");
    run_grid(kernel_name<Kernel>(), grid, block, Call<decltype(Kernel), Args...>(Kernel, args...));
}

}  // namespace fastmse::host_model

inline cudaError_t cudaGetLastError() {
    const cudaError_t error = fastmse::host_model::last_error();
    fastmse::host_model::last_error() = cudaSuccess;
    return error;
}
inline const char* cudaGetErrorString(cudaError_t error) {
    switch (error) {
        case cudaSuccess: return "no error";
        case cudaErrorInvalidValue: return "invalid argument";
        case cudaErrorInvalidConfiguration: return "invalid configuration argument";
        case cudaErrorInvalidDevice: return "invalid device ordinal";
    }
    return "unknown error";
}
inline cudaError_t cudaGetDeviceCount(int* count) {
    *count = 1;
    return cudaSuccess;
}
inline cudaError_t cudaDriverGetVersion(int* version) {
    *version = 0;  // no driver
    return cudaSuccess;
}
inline cudaError_t cudaGetDevice(int* device) {
    *device = 0;
    return cudaSuccess;
}
inline cudaError_t cudaSetDevice(int device) { return device == 0 ? cudaSuccess : cudaErrorInvalidDevice; }
inline cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attribute, int device) {
    if (device != 0) return cudaErrorInvalidDevice;
    if (attribute != cudaDevAttrMultiProcessorCount) return cudaErrorInvalidValue;
    *value = fastmse::host_model::multiprocessor_count();
    return cudaSuccess;
}
// As a multiprocessor of 2048 threads, whatever the kernel's registers.
template <typename Kernel>
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* blocks, Kernel, int block_size, std::size_t) {
    if (block_size <= 0) return cudaErrorInvalidValue;
    *blocks = 2048 / block_size;
    return cudaSuccess;
}
template <typename Kernel>
cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* attributes, Kernel) {
    *attributes = cudaFuncAttributes{};
    return cudaSuccess;
}
