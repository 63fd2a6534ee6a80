// cuda/kernels.cu compiled by the host C++ compiler against cuda/host_model.hpp, for the
// test-only module fastmse._cuda_host (CMakeLists.txt, FASTMSE_CUDA_HOST_MODEL).
#include "kernels.cu"
