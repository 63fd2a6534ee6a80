// The only file that knows about Python: converts NumPy buffers, shapes and strides
// into a fastmse::Problem, releases the GIL and runs a kernel.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>

#include "kernels.hpp"

namespace py = pybind11;

namespace {

using fastmse::Operand;
using fastmse::Problem;
using fastmse::ScalarType;

ScalarType scalar_type_of(const py::array& array) {
    // Reads the descriptor directly: this runs on every call, small ones included.
    const auto* descr = py::detail::array_descriptor_proxy(py::detail::array_proxy(array.ptr())->descr);
    if (descr->byteorder != '>') {
        switch (descr->type_num) {
            case py::detail::npy_api::NPY_FLOAT_: return ScalarType::float32;
            case py::detail::npy_api::NPY_DOUBLE_: return ScalarType::float64;
            case 23 /* NPY_HALF */: return ScalarType::float16;
            default: break;
        }
    }
    throw py::type_error("fastmse._core: unsupported dtype " + std::string(py::str(array.dtype())));
}

enum class Access { read, write };

constexpr std::size_t kOperandCount = 6;  // predictions, targets, weights, out, loss, scale

// Integers of a tuple or list, read through the C API: this runs on every call, and
// pybind11's generic casters cost more than a 1,000-element kernel.
void read_int64s(py::handle sequence, int64_t* values, std::size_t count, const char* what) {
    PyObject* fast = PySequence_Fast(sequence.ptr(), what);
    if (fast == nullptr) throw py::error_already_set();
    const py::object owner = py::reinterpret_steal<py::object>(fast);
    if (static_cast<std::size_t>(PySequence_Fast_GET_SIZE(fast)) != count)
        throw py::value_error(std::string("fastmse._core: wrong length of ") + what);
    PyObject** items = PySequence_Fast_ITEMS(fast);
    for (std::size_t i = 0; i < count; ++i) {
        values[i] = PyLong_AsLongLong(items[i]);
        if (values[i] == -1 && PyErr_Occurred()) throw py::error_already_set();
    }
}

using Kernel = void (*)(const Problem&);

// shape: extents; arrays/strides: the six operands and their element strides (None and
// an empty tuple where absent). Checks the call's structure and dtypes; that shape and
// strides stay inside each buffer is the Python layer's job (fastmse._plan), not checked.
void run(Kernel kernel, py::handle shape_seq, int n_kept, py::handle arrays_seq,
         py::handle strides_seq) {
    const std::size_t ndim = static_cast<std::size_t>(py::len(shape_seq));
    if (ndim > static_cast<std::size_t>(fastmse::kMaxDims) || n_kept < 0 ||
        n_kept > static_cast<int>(ndim) || py::len(arrays_seq) != kOperandCount ||
        py::len(strides_seq) != kOperandCount)
        throw py::value_error("fastmse._core: malformed problem");
    int64_t shape[fastmse::kMaxDims];
    int64_t strides[kOperandCount][fastmse::kMaxDims];
    read_int64s(shape_seq, shape, ndim, "shape");

    Problem problem;
    problem.ndim = static_cast<int>(ndim);
    problem.n_kept = n_kept;
    problem.shape = shape;
    Operand* operands[kOperandCount] = {&problem.predictions, &problem.targets, &problem.weights,
                                        &problem.out, &problem.loss, &problem.scale};
    const py::sequence arrays = py::reinterpret_borrow<py::sequence>(arrays_seq);
    const py::sequence strides_of = py::reinterpret_borrow<py::sequence>(strides_seq);
    for (std::size_t k = 0; k < kOperandCount; ++k) {
        const py::object item = arrays[k];
        if (item.is_none()) {
            if (k < 2) throw py::type_error("fastmse._core: predictions and targets are required");
            continue;
        }
        if (!py::isinstance<py::array>(item))
            throw py::type_error("fastmse._core: operands must be NumPy arrays or None");
        auto array = py::reinterpret_borrow<py::array>(item);
        const ScalarType type = scalar_type_of(array);
        if (k == 0) problem.dtype = type;
        if (k == 2) problem.weights_dtype = type;
        const bool allowed = k < 4 ? type == problem.dtype || (k == 2 && type == ScalarType::float64)
                                   : type == ScalarType::float64;
        if (!allowed)
            throw py::type_error(k < 4 ? "fastmse._core: operands must share one dtype (weights: or float64)"
                                       : "fastmse._core: loss and scale must be float64");
        read_int64s(strides_of[k], strides[k], ndim, "strides");
        const bool writes = k == 3 || k == 4;
        operands[k]->data = writes ? array.mutable_data() : const_cast<void*>(array.data());
        operands[k]->strides = strides[k];
    }
    problem.num_threads = fastmse::get_num_threads();

    py::gil_scoped_release release;
    kernel(problem);
}

template <Kernel K>
void entry(py::handle shape, int n_kept, py::handle arrays, py::handle strides) {
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
    m.def("sum_difference", &entry<fastmse::sum_difference>, signature_doc);
    m.def(
        "stream_read",
        [](const py::array& array) {
            if (!(array.flags() & py::array::c_style))
                throw py::value_error("stream_read needs a C-contiguous array");
            const int threads = fastmse::get_num_threads();
            py::gil_scoped_release release;
            return fastmse::stream_read(array.data(), static_cast<int64_t>(array.nbytes()), threads);
        },
        py::arg("array"), "Read a C-contiguous array once on all threads (bandwidth probe).");
    m.def("set_num_threads", &fastmse::set_num_threads, py::arg("n"));
    m.def("get_num_threads", &fastmse::get_num_threads);
    m.def("build_info", &build_info);
}
