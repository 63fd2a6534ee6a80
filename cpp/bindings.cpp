// The only file that knows about Python: converts NumPy buffers, shapes and strides
// into a fastmse::Problem, releases the GIL and runs a kernel.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>
#include <vector>

#include "kernels.hpp"

namespace py = pybind11;

namespace {

using fastmse::Operand;
using fastmse::Problem;
using fastmse::ScalarType;

ScalarType scalar_type_of(const py::array& array) {
    const py::dtype dtype = array.dtype();
    if (dtype.kind() == 'f' && dtype.byteorder() != '>') {
        switch (dtype.itemsize()) {
            case 2: return ScalarType::float16;
            case 4: return ScalarType::float32;
            case 8: return ScalarType::float64;
            default: break;
        }
    }
    throw py::type_error("fastmse._core: unsupported dtype " + std::string(py::str(dtype)));
}

enum class Access { read, write };

// A call's arrays and their strides, kept alive for the length of the call.
struct Operands {
    std::vector<py::array> arrays;
    std::vector<std::vector<int64_t>> strides;
};

void bind(Operand& operand, const py::object& array, const std::vector<int64_t>& strides,
          std::size_t ndim, Access access) {
    if (array.is_none()) return;
    if (strides.size() != ndim) throw py::value_error("fastmse._core: strides do not match shape");
    auto buffer = py::reinterpret_borrow<py::array>(array);
    operand.data = access == Access::write ? buffer.mutable_data() : const_cast<void*>(buffer.data());
    operand.strides = strides.data();
}

using Kernel = void (*)(const Problem&);

// arrays/strides: predictions, targets, weights, out, loss, scale (None where absent).
void run(Kernel kernel, const std::vector<int64_t>& shape, int n_kept,
         const std::vector<py::object>& arrays, const std::vector<std::vector<int64_t>>& strides) {
    if (shape.size() > static_cast<std::size_t>(fastmse::kMaxDims) || n_kept < 0 ||
        n_kept > static_cast<int>(shape.size()) || arrays.size() != 6 || strides.size() != 6)
        throw py::value_error("fastmse._core: malformed problem");
    for (std::size_t k = 0; k < 6; ++k)
        if (!arrays[k].is_none() && !py::isinstance<py::array>(arrays[k]))
            throw py::type_error("fastmse._core: operands must be NumPy arrays or None");

    Problem problem;
    problem.dtype = scalar_type_of(py::reinterpret_borrow<py::array>(arrays[0]));
    for (std::size_t k : {1, 2, 3})
        if (!arrays[k].is_none() &&
            scalar_type_of(py::reinterpret_borrow<py::array>(arrays[k])) != problem.dtype)
            throw py::type_error("fastmse._core: operands must share one dtype");
    for (std::size_t k : {4, 5})
        if (!arrays[k].is_none() &&
            scalar_type_of(py::reinterpret_borrow<py::array>(arrays[k])) != ScalarType::float64)
            throw py::type_error("fastmse._core: loss and scale must be float64");

    const std::size_t ndim = shape.size();
    problem.ndim = static_cast<int>(ndim);
    problem.n_kept = n_kept;
    problem.shape = shape.data();
    bind(problem.predictions, arrays[0], strides[0], ndim, Access::read);
    bind(problem.targets, arrays[1], strides[1], ndim, Access::read);
    bind(problem.weights, arrays[2], strides[2], ndim, Access::read);
    bind(problem.out, arrays[3], strides[3], ndim, Access::write);
    bind(problem.loss, arrays[4], strides[4], ndim, Access::write);
    bind(problem.scale, arrays[5], strides[5], ndim, Access::read);
    problem.num_threads = fastmse::get_num_threads();

    py::gil_scoped_release release;
    kernel(problem);
}

template <Kernel K>
void entry(const std::vector<int64_t>& shape, int n_kept, const std::vector<py::object>& arrays,
           const std::vector<std::vector<int64_t>>& strides) {
    run(K, shape, n_kept, arrays, strides);
}

py::dict build_info() {
    py::dict info;
    info["compiler"] = FASTMSE_COMPILER;
    info["openmp"] = fastmse::built_with_openmp();
#ifdef _OPENMP
    info["openmp_version"] = _OPENMP;
#else
    info["openmp_version"] = py::none();
#endif
    info["cuda"] = false;
    info["cuda_version"] = py::none();
    info["cuda_architectures"] = py::list();
    info["block"] = fastmse::kBlock;
    info["chunk"] = fastmse::kChunk;
    return info;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "fastmse's compiled kernels (private: use the fastmse package).";
    const char* signature_doc =
        "(shape, n_kept, arrays, strides): arrays and element strides of predictions, "
        "targets, weights, out, loss, scale; None where absent.";
    m.def("sum_squared_error", &entry<fastmse::sum_squared_error>, signature_doc);
    m.def("scaled_difference", &entry<fastmse::scaled_difference>, signature_doc);
    m.def("sum_squared_error_and_scaled_difference",
          &entry<fastmse::sum_squared_error_and_scaled_difference>, signature_doc);
    m.def("squared_error", &entry<fastmse::squared_error>, signature_doc);
    m.def("set_num_threads", &fastmse::set_num_threads, py::arg("n"));
    m.def("get_num_threads", &fastmse::get_num_threads);
    m.def("build_info", &build_info);
}
