// Kernels for tests/test_cuda_host.py, compiled into the test-only fastmse._cuda_host:
// one that keeps CUDA's rules (a block sum by shuffles, shared memory and a barrier), whose
// result checks the host model's semantics, and some that break them, which the host model
// must refuse, naming the kernel, where a GPU would hang or corrupt memory.
#include <stdexcept>
#include <string>
#include <vector>

#include "host_model.hpp"

namespace {

constexpr unsigned kThreads = 256;

// out[block] = the sum of in over the block: each warp's by a shuffle tree into its lane 0,
// then the warps' sums, through shared memory, by thread 0.
__global__ void block_sum(const double* in, double* out) {
    __shared__ double warp_sums[kThreads / 32];
    double value = in[blockIdx.x * blockDim.x + threadIdx.x];
    for (unsigned offset = 16; offset > 0; offset >>= 1) value += __shfl_down_sync(0xffffffffu, value, offset);
    if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = value;
    __syncthreads();
    if (threadIdx.x == 0) {
        double total = 0.0;
        for (unsigned w = 0; w < kThreads / 32; ++w) total += warp_sums[w];
        out[blockIdx.x] = total;
    }
}

__global__ void leaves_before_a_barrier(const double*, double* out) {
    if (threadIdx.x >= 128) return;
    __syncthreads();
    out[blockIdx.x] = 1.0;
}

__global__ void waits_at_two_barriers(const double*, double* out) {
    if (threadIdx.x / 32 % 2 == 0) {
        __syncthreads();
    } else {
        __syncthreads();
    }
    out[blockIdx.x] = 1.0;
}

__global__ void leaves_during_a_shuffle(const double* in, double* out) {
    if (threadIdx.x % 32 == 5) return;
    const double value = __shfl_down_sync(0xffffffffu, in[threadIdx.x], 1);
    if (threadIdx.x == 0) out[blockIdx.x] = value;
}

// Reads one element past the end of `in` (AddressSanitizer must see it).
__global__ void reads_past_the_end(const double* in, double* out) {
    const double value = in[blockIdx.x * blockDim.x + threadIdx.x + 1];
    if (threadIdx.x == 0) out[blockIdx.x] = value;
}

}  // namespace

// in[i] = i, one element per thread; returns out (one value per block). Raises the host
// model's std::runtime_error where it refuses the kernel.
std::vector<double> run_host_model_case(const std::string& name, int blocks) {
    if (blocks < 1) throw std::invalid_argument("blocks must be at least 1");
    std::vector<double> in(static_cast<std::size_t>(blocks) * kThreads), out(static_cast<std::size_t>(blocks), -1.0);
    for (std::size_t i = 0; i < in.size(); ++i) in[i] = static_cast<double>(i);
    using fastmse::host_model::launch;
    const dim3 grid(static_cast<unsigned>(blocks)), block(kThreads);
    const double* input = in.data();
    double* output = out.data();
    if (name == "block_sum")
        launch<block_sum>(grid, block, nullptr, input, output);
    else if (name == "leaves_before_a_barrier")
        launch<leaves_before_a_barrier>(grid, block, nullptr, input, output);
    else if (name == "waits_at_two_barriers")
        launch<waits_at_two_barriers>(grid, block, nullptr, input, output);
    else if (name == "leaves_during_a_shuffle")
        launch<leaves_during_a_shuffle>(grid, block, nullptr, input, output);
    else if (name == "reads_past_the_end")
        launch<reads_past_the_end>(grid, block, nullptr, input, output);
    else
        throw std::invalid_argument("no host model case " + name);
    return out;
}
