// The only file that knows about Python: converts NumPy buffers, shapes and strides
// into a fastmse::Problem, releases the GIL and runs a kernel.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "half.hpp"
#include "kernels.hpp"

#ifdef FASTMSE_WITH_CUDA
#include "kernels.cuh"
#endif

// The same file builds fastmse._core and, with FASTMSE_CUDA_HOST_MODEL, the test-only
// fastmse._cuda_host: the CUDA entry points of cuda/kernels.cu compiled for the host
// (cuda/host_model.hpp), with nothing of the CPU kernels.
#ifdef FASTMSE_CUDA_HOST_MODEL
#define FASTMSE_MODULE _cuda_host
#else
#define FASTMSE_MODULE _core
#endif

namespace py = pybind11;

#ifdef FASTMSE_CUDA_HOST_MODEL
// tests/host_model_faults.cpp: kernels that break CUDA's rules, and one that keeps them.
std::vector<double> run_host_model_case(const std::string& name, int blocks);
#endif

namespace {

using fastmse::Operand;
using fastmse::Problem;
using fastmse::ScalarType;

// NumPy's type numbers of the dtypes and the byte-order character of a swapped one,
// found once at import (init_dtype_numbers): scalar_type_of runs on every call, and
// comparing two integers costs nothing next to building dtypes there. bfloat16 is
// ml_dtypes' user dtype, whose number is known once ml_dtypes is imported: it is looked
// up when an array of an unknown dtype arrives, and kept.
struct DtypeNumbers {
    int float16 = -1;
    int float32 = -1;
    int float64 = -1;
    int bfloat16 = -1;
    char swapped = '>';
};
DtypeNumbers g_dtype_numbers;

void init_dtype_numbers() {
    g_dtype_numbers.float16 = py::dtype("float16").num();
    g_dtype_numbers.float32 = py::dtype::of<float>().num();
    g_dtype_numbers.float64 = py::dtype::of<double>().num();
    const bool little = py::module_::import("sys").attr("byteorder").cast<std::string>() == "little";
    g_dtype_numbers.swapped = little ? '>' : '<';
}

// ml_dtypes.bfloat16's type number where ml_dtypes has been imported (by whoever made
// the array), else -1; ml_dtypes is never imported here.
int bfloat16_number() {
    const py::dict modules = py::module_::import("sys").attr("modules");
    if (!modules.contains("ml_dtypes")) return -1;
    return py::dtype::from_args(modules["ml_dtypes"].attr("bfloat16")).num();
}

ScalarType scalar_type_of(const py::array& array) {
    const py::dtype dtype = array.dtype();
    if (dtype.byteorder() != g_dtype_numbers.swapped) {
        const int num = dtype.num();
        if (num == g_dtype_numbers.float32) return ScalarType::float32;
        if (num == g_dtype_numbers.float64) return ScalarType::float64;
        if (num == g_dtype_numbers.float16) return ScalarType::float16;
        if (g_dtype_numbers.bfloat16 < 0) g_dtype_numbers.bfloat16 = bfloat16_number();
        if (num == g_dtype_numbers.bfloat16) return ScalarType::bfloat16;
    }
    throw py::type_error("fastmse._core: unsupported dtype " + std::string(py::str(dtype)));
}

// The codes of ScalarType, as fastmse._core.scalar_types gives them to Python (by dtype name).
constexpr ScalarType kScalarTypes[] = {ScalarType::float16, ScalarType::float32, ScalarType::float64,
                                       ScalarType::bfloat16};
const char* const kScalarTypeNames[] = {"float16", "float32", "float64", "bfloat16"};

ScalarType scalar_type_from_code(int code) {
    for (const ScalarType type : kScalarTypes)
        if (static_cast<int>(type) == code) return type;
    throw py::value_error("fastmse._core: unknown dtype code " + std::to_string(code) +
                          " (see fastmse._core.scalar_types)");
}

enum class Access { read, write };

constexpr std::size_t kOperandCount = 6;  // predictions, targets, weights, out, loss, scale

// Integers of a tuple or list, read through the C API: this runs on every call, and
// pybind11's generic casters would show in small calls (`python -m fastmse bench`).
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

// A problem's extents, read into `shape`; checks the dimension count and n_kept.
std::size_t read_shape(py::handle shape_seq, int n_kept, int64_t* shape) {
    const std::size_t ndim = static_cast<std::size_t>(py::len(shape_seq));
    if (ndim > static_cast<std::size_t>(fastmse::kMaxDims) || n_kept < 0 || n_kept > static_cast<int>(ndim))
        throw py::value_error("fastmse._core: malformed problem");
    read_int64s(shape_seq, shape, ndim, "shape");
    return ndim;
}

// What a Problem's pointers and strides live in while a call runs.
struct ProblemStorage {
    int64_t shape[fastmse::kMaxDims];
    int64_t strides[kOperandCount][fastmse::kMaxDims];
};

// An operand as the kernels see it: its address and element type.
struct OperandSource {
    void* data;
    ScalarType type;
};

// shape: extents; items/strides: the six operands and their element strides (None and an
// empty tuple where absent); source(k, item) gives an operand's address and type;
// inputs_anywhere: predictions, targets and weights may sit at any address (the CPU's).
// Checks the call's structure and dtypes; that shape and strides stay inside each
// buffer is the Python layer's job (fastmse._plan), not checked here.
template <typename Source>
Problem read_problem(ProblemStorage& storage, py::handle shape_seq, int n_kept, py::handle items_seq,
                     py::handle strides_seq, bool inputs_anywhere, Source&& source) {
    const std::size_t ndim = read_shape(shape_seq, n_kept, storage.shape);
    if (py::len(items_seq) != kOperandCount || py::len(strides_seq) != kOperandCount)
        throw py::value_error("fastmse._core: malformed problem");

    Problem problem;
    problem.ndim = static_cast<int>(ndim);
    problem.n_kept = n_kept;
    problem.shape = storage.shape;
    Operand* operands[kOperandCount] = {&problem.predictions, &problem.targets, &problem.weights,
                                        &problem.out, &problem.loss, &problem.scale};
    const py::sequence items = py::reinterpret_borrow<py::sequence>(items_seq);
    const py::sequence strides_of = py::reinterpret_borrow<py::sequence>(strides_seq);
    for (std::size_t k = 0; k < kOperandCount; ++k) {
        const py::object item = items[k];
        if (item.is_none()) {
            if (k < 2) throw py::type_error("fastmse._core: predictions and targets are required");
            continue;
        }
        const OperandSource operand = source(k, item);
        // The CPU kernels read inputs at any address; outputs, and everything on a GPU (a
        // fault there), must be aligned to their element size: the Python layer copies or
        // writes through scratch where they are not, and this keeps it honest.
        const bool may_be_misaligned = inputs_anywhere && k < 3;
        if (!may_be_misaligned && reinterpret_cast<std::uintptr_t>(operand.data) % item_size(operand.type) != 0)
            throw py::value_error("fastmse._core: operand " + std::to_string(k) + " is not aligned to its element size");
        if (k == 0) problem.dtype = operand.type;
        if (k == 2) problem.weights_dtype = operand.type;
        if (k == 4) problem.loss_dtype = operand.type;
        const bool either = k == 2 || k == 4;  // weights and loss: the data's dtype or float64
        const bool allowed = k == 5 ? operand.type == ScalarType::float64
                                    : operand.type == problem.dtype || (either && operand.type == ScalarType::float64);
        if (!allowed)
            throw py::type_error(k == 5 ? "fastmse._core: scale must be float64"
                                        : "fastmse._core: operands must share one dtype (weights, loss: or float64)");
        read_int64s(strides_of[k], storage.strides[k], ndim, "strides");
        operands[k]->data = operand.data;
        operands[k]->strides = storage.strides[k];
    }
    return problem;
}

// The loss divisor: a float (Problem::loss_divisor), or an operand item (Problem::loss_divisors:
// float64, laid out as loss, which like strides is the Python layer's job) read by `source`.
template <typename Source>
void read_loss_divisor(Problem& problem, py::handle divisor, Source&& source) {
    if (PyFloat_Check(divisor.ptr()) || PyLong_Check(divisor.ptr())) {
        problem.loss_divisor = divisor.cast<double>();
        return;
    }
    const OperandSource operand = source(kOperandCount, py::reinterpret_borrow<py::object>(divisor));
    if (operand.type != ScalarType::float64 || reinterpret_cast<std::uintptr_t>(operand.data) % 8 != 0)
        throw py::type_error("fastmse._core: loss divisors must be aligned float64");
    if (problem.loss.data == nullptr) throw py::value_error("fastmse._core: loss divisors without a loss");
    problem.loss_divisors = static_cast<const double*>(operand.data);
}

#ifndef FASTMSE_CUDA_HOST_MODEL
using Kernel = void (*)(const Problem&);

// A CPU pass on NumPy arrays, with the GIL released.
template <Kernel K>
void run_host(py::handle shape, int n_kept, py::handle arrays, py::handle strides, py::handle loss_divisor,
              bool rows_first) {
    ProblemStorage storage;
    const auto source = [](std::size_t k, const py::object& item) {
        if (!py::isinstance<py::array>(item))
            throw py::type_error("fastmse._core: operands must be NumPy arrays or None");
        auto array = py::reinterpret_borrow<py::array>(item);
        const bool writes = k == 3 || k == 4;
        void* data = writes ? array.mutable_data() : const_cast<void*>(array.data());
        return OperandSource{data, scalar_type_of(array)};
    };
    Problem problem = read_problem(storage, shape, n_kept, arrays, strides, true, source);
    read_loss_divisor(problem, loss_divisor, source);
    problem.rows_first = rows_first;
    problem.num_threads = fastmse::get_num_threads();
    py::gil_scoped_release release;
    K(problem);
}
#endif

#ifndef FASTMSE_CUDA_HOST_MODEL
// The common small call, whole in C++: fastmse.mse, mse_grad and mse_and_grad on NumPy
// arrays of one float dtype and shape, C-contiguous and aligned, summed over everything or
// over a leading or trailing run of axes, with or without a dense `out`; without weights,
// or with weights that are per position (predictions' shape), per sample (over
// everything), per column (over everything, or over the axes they cover), or cancel from
// a mean (constant along every summed axis: weights per sample with a loss per sample).
// Python's general path (fastmse._resolve, _plan, _compute) costs microseconds before a
// kernel that takes less on small arrays; this builds the very Problem that path builds
// for such a call (fastmse._plan.make_plan, and the weight sums of
// fastmse._compute._weight_sums), runs the same kernels and rounds the result as
// fastmse._compute._finish does, so results are bitwise the same. Anything else, bad
// arguments included, gets NotImplemented: the general path then computes it or raises
// the error that names the argument.
enum class Job { mse = 0, mse_grad = 1, mse_and_grad = 2 };
enum class Reduction { mean, sum, none };

constexpr int64_t kReleaseGilMin = int64_t{1} << 15;  // positions; below, the GIL costs more than the kernel

// NumPy's PyArray_Scalar (slot 60 of its C API table, the same in NumPy 1 and 2): a
// result over everything becomes a NumPy scalar without a Python-level constructor call.
using ArrayScalarFunction = PyObject* (*)(void* data, PyObject* descr, PyObject* base);
ArrayScalarFunction g_array_scalar = nullptr;

void init_array_scalar() {
    const py::object api = py::detail::import_numpy_core_submodule("multiarray").attr("_ARRAY_API");
    void** table = static_cast<void**>(PyCapsule_GetPointer(api.ptr(), nullptr));
    if (table == nullptr) throw py::error_already_set();
    g_array_scalar = reinterpret_cast<ArrayScalarFunction>(table[60]);
}

// The float16/32/64 type of a plain NumPy array fit for the small path, else nothing.
bool small_path_type(const py::detail::PyArray_Proxy* array, ScalarType& type) {
    const auto* descr = py::detail::array_descriptor_proxy(array->descr);
    if (descr->byteorder == g_dtype_numbers.swapped) return false;
    const int num = descr->type_num;
    if (num == g_dtype_numbers.float32) type = ScalarType::float32;
    else if (num == g_dtype_numbers.float64) type = ScalarType::float64;
    else if (num == g_dtype_numbers.float16) type = ScalarType::float16;
    else return false;
    return true;
}

bool plain_array(py::handle value) {
    return Py_TYPE(value.ptr()) == py::detail::npy_api::get().PyArray_Type_;
}

// Aligned and contiguous in C order, or (fortran) in Fortran order.
bool dense_flags(const py::detail::PyArray_Proxy* array, bool fortran, int more = 0) {
    using api = py::detail::npy_api;
    const int wanted =
        (fortran ? api::NPY_ARRAY_F_CONTIGUOUS_ : api::NPY_ARRAY_C_CONTIGUOUS_) | api::NPY_ARRAY_ALIGNED_ | more;
    return (array->flags & wanted) == wanted;
}

// The reduced axes as a bit set (normalized, no repeats), or false where `axis` is
// anything but None, an int or a tuple of ints in range (the general path says what).
bool read_axes(py::handle axis, int ndim, uint64_t& axes) {
    if (axis.is_none()) {
        axes = ndim == 64 ? ~uint64_t{0} : (uint64_t{1} << ndim) - 1;
        return true;
    }
    auto add = [&](PyObject* item) {
        if (!PyLong_CheckExact(item)) return false;
        const long d = PyLong_AsLong(item);
        if (d == -1 && PyErr_Occurred()) {
            PyErr_Clear();
            return false;
        }
        if (d < -ndim || d >= ndim) return false;
        const uint64_t bit = uint64_t{1} << (d < 0 ? d + ndim : d);
        if (axes & bit) return false;
        axes |= bit;
        return true;
    };
    axes = 0;
    if (PyTuple_CheckExact(axis.ptr())) {
        for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(axis.ptr()); ++k)
            if (!add(PyTuple_GET_ITEM(axis.ptr(), k))) return false;
        return true;
    }
    return add(axis.ptr());
}

bool read_reduction(py::handle value, Reduction& reduction) {
    if (!PyUnicode_CheckExact(value.ptr())) return false;
    if (PyUnicode_CompareWithASCIIString(value.ptr(), "mean") == 0) reduction = Reduction::mean;
    else if (PyUnicode_CompareWithASCIIString(value.ptr(), "sum") == 0) reduction = Reduction::sum;
    else if (PyUnicode_CompareWithASCIIString(value.ptr(), "none") == 0) reduction = Reduction::none;
    else return false;
    return true;
}

// `value` rounded once to `type`, as a NumPy scalar of `descr` (that type's dtype).
py::object scalar_of(ScalarType type, PyObject* descr, double value) {
    alignas(8) unsigned char element[8];
    switch (type) {
        case ScalarType::float16: *reinterpret_cast<fastmse::Half*>(element) = fastmse::double_to_half(value); break;
        case ScalarType::float32: *reinterpret_cast<float*>(element) = static_cast<float>(value); break;
        default: *reinterpret_cast<double*>(element) = value; break;
    }
    return py::reinterpret_steal<py::object>(g_array_scalar(element, descr, nullptr));
}

// Whether the `a_bytes` bytes at a and the `b_bytes` at b share one.
bool overlaps(const py::detail::PyArray_Proxy* a, int64_t a_bytes, const py::detail::PyArray_Proxy* b,
              int64_t b_bytes) {
    return a->data < b->data + b_bytes && b->data < a->data + a_bytes;
}

// What the general path asks of weights: that none is negative (fastmse._resolve; a NaN
// passes, as in np.fmin), or, where they would cancel from a mean, that all are positive
// and finite (fastmse._compute._without_cancelling_weights; a NaN fails).
enum class WeightTest { non_negative, positive_and_finite };

// What a span of weights holds: one that fails the test, a 0 (or -0).
struct SpanChecks {
    bool failed = false, zero = false;
};

// In 16-byte vectors where GCC or Clang compile them: GCC 12 left the float64 loop scalar
// on baseline x86-64 (it has no 64-bit compare to an integer flag to use): float64
// mse_grad(axis=-1, out=) of (2**20, 4) weighted per position took 7.7-7.9 ms, 5.3-5.4 in
// vectors (46% of the time, then 16%). 16 bytes: SSE2's and NEON's width.
template <WeightTest Test, bool FindZeros, typename W>
inline SpanChecks check_span(const W* w, int64_t n) {
    constexpr W kInfinity = std::numeric_limits<W>::infinity();
    const auto fails = [](W x) { return Test == WeightTest::non_negative ? x < W(0) : !(x > W(0) && x < kInfinity); };
    SpanChecks checks;
    int64_t i = 0;
#if defined(__GNUC__)
    typedef W Vector __attribute__((vector_size(16)));
    using Mask = decltype(Vector{} < Vector{});
    constexpr int64_t kWidth = sizeof(Vector) / sizeof(W);
    const Vector zero = {}, infinity = zero + kInfinity;
    Mask failed = {}, zeros = {};
    for (; i + kWidth <= n; i += kWidth) {
        Vector v;
        std::memcpy(&v, w + i, sizeof v);
        if constexpr (Test == WeightTest::non_negative)
            failed |= v < zero;
        else
            failed |= ~((v > zero) & (v < infinity));  // a NaN fails
        if constexpr (FindZeros) zeros |= v == zero;
    }
    for (int64_t j = 0; j < kWidth; ++j) {
        checks.failed = checks.failed || failed[j] != 0;
        checks.zero = checks.zero || zeros[j] != 0;
    }
#endif
    for (; i < n; ++i) {
        checks.failed = checks.failed || fails(w[i]);
        checks.zero = checks.zero || (FindZeros && w[i] == W(0));
    }
    return checks;
}

// A function of its own: inlined into small_call, GCC left the float32 loop scalar.
#if defined(_MSC_VER)
#define FASTMSE_NOINLINE __declspec(noinline)
#else
#define FASTMSE_NOINLINE __attribute__((noinline))
#endif
// Large arrays are read on the kernels' threads, in blocks of about 1,024 weights (an OR:
// the same answer on any number). Where `zero_rows` is given (non_negative), it is set if
// one of the n / row rows of `row` consecutive weights is all 0 (or -0): a row whose
// weights sum to 0. A 0 alone, as in a mask, leaves its row's sum above 0.
template <typename W>
FASTMSE_NOINLINE bool weights_pass(const W* w, int64_t n, WeightTest test, bool* zero_rows, int64_t row) {
    [[maybe_unused]] const int threads = n >= fastmse::kParallelMin * 16 ? fastmse::get_num_threads() : 1;
    const bool find_zeros = test == WeightTest::non_negative && zero_rows != nullptr;
    if (!find_zeros) row = 1;
    // Blocks of whole rows; only a block with a 0 in it is read again row by row, each row
    // until its first weight that is not 0.
    const int64_t n_rows = n / row, block_rows = std::max<int64_t>(1, 1024 / row);
    const int64_t blocks = (n_rows + block_rows - 1) / block_rows;
    bool failed = false, zero_row = false;
#pragma omp parallel for schedule(static) reduction(|| : failed, zero_row) num_threads(threads) if (threads > 1)
    for (int64_t b = 0; b < blocks; ++b) {
        const int64_t first = b * block_rows, rows = std::min(block_rows, n_rows - first);
        const W* at = w + first * row;
        SpanChecks checks;
        if (find_zeros)
            checks = check_span<WeightTest::non_negative, true>(at, rows * row);
        else if (test == WeightTest::non_negative)
            checks = check_span<WeightTest::non_negative, false>(at, rows);
        else
            checks = check_span<WeightTest::positive_and_finite, false>(at, rows);
        failed = failed || checks.failed;
        for (int64_t r = 0; checks.zero && r < rows && !zero_row; ++r) {
            int64_t j = 0;
            while (j < row && at[r * row + j] == W(0)) ++j;
            zero_row = j == row;
        }
    }
    if (find_zeros) *zero_rows = *zero_rows || zero_row;
    return !failed;
}

bool weights_pass(ScalarType type, const void* data, int64_t n, WeightTest test, bool* zero_rows = nullptr,
                  int64_t row = 1) {
    if (type == ScalarType::float32) return weights_pass(static_cast<const float*>(data), n, test, zero_rows, row);
    if (type == ScalarType::float64) return weights_pass(static_cast<const double*>(data), n, test, zero_rows, row);
    // float16, converted a block of whole rows at a time (rows of at most kBlock).
    const auto* halves = static_cast<const fastmse::Half*>(data);
    float block[fastmse::kBlock];
    const int64_t whole = zero_rows != nullptr ? fastmse::kBlock / row * row : fastmse::kBlock;
    for (int64_t start = 0; start < n; start += whole) {
        const int64_t m = std::min<int64_t>(whole, n - start);
        for (int64_t i = 0; i < m; ++i) block[i] = fastmse::half_to_float(halves[start + i]);
        if (!weights_pass(block, m, test, zero_rows, row)) return false;
    }
    return true;
}

// Runs fn() without the GIL where `size` positions are enough to repay releasing it.
template <typename Fn>
void without_gil_if(int64_t size, Fn&& fn) {
    if (size >= kReleaseGilMin) {
        py::gil_scoped_release release;
        fn();
    } else {
        fn();
    }
}

// How an operand of the small path (targets, weights) broadcasts to predictions' extents
// (`extents`, in the order the kernels walk them: reversed for Fortran order), from the
// right of its own shape: per position (not at all); per sample (predictions' leading extents,
// then extents of 1: (N, 1) on (N, k)); per column (extents of 1, then predictions'
// trailing ones: (k,) on (N, k)); `size` elements, varying along summed `axes` or not.
struct Broadcast {
    bool per_position = true, per_sample = true, per_column = true, varies_along_summed = false;
    int64_t size = 1;
};

// False where `given` does not broadcast to `extents`.
bool broadcast_of(const py::detail::PyArray_Proxy* given, const int64_t* extents, int ndim, bool reversed,
                  uint64_t axes, Broadcast& b) {
    if (given->nd > ndim) return false;
    bool past_samples = false;  // a dimension along which `given` broadcasts was seen
    bool past_columns = false;  // a dimension along which it does not
    for (int dim = 0; dim < ndim; ++dim) {
        const int d = (reversed ? ndim - 1 - dim : dim) - (ndim - given->nd);
        const int64_t extent = d < 0 ? 1 : given->dimensions[d];
        if (extent != 1 && extent != extents[dim]) return false;
        const bool broadcast = extent != extents[dim];
        b.per_position = b.per_position && !broadcast;
        b.per_sample = b.per_sample && !(past_samples && extent != 1);
        past_samples = past_samples || broadcast;
        past_columns = past_columns || extent != 1;
        b.per_column = b.per_column && !(past_columns && broadcast);
        b.varies_along_summed = b.varies_along_summed || (extent != 1 && (axes >> dim & 1));
        b.size *= extent;
    }
    return true;
}

// A target given as a number, written into `value` in the data's dtype as NumPy converts
// it: a Python float or int (an int of at most 2**53 in magnitude, exact as a double; both
// then rounded once), or a NumPy scalar of the data's dtype (exact). False for others, and
// where NumPy's cast would report something (a warning, or an error under np.errstate):
// an overflow, an inexact zero or subnormal (underflow), a signalling NaN (any NaN is
// left to it, but in float64, where nothing is cast).
bool number_target(py::handle number, const py::detail::PyArray_Proxy* p, ScalarType type, unsigned char* value) {
    double exact;
    if (PyFloat_CheckExact(number.ptr())) {
        exact = PyFloat_AS_DOUBLE(number.ptr());
    } else if (PyLong_CheckExact(number.ptr())) {
        int overflow = 0;
        const long long integer = PyLong_AsLongLongAndOverflow(number.ptr(), &overflow);
        constexpr long long kExact = 1LL << 53;
        if (overflow != 0 || integer > kExact || integer < -kExact) return false;
        exact = static_cast<double>(integer);
    } else if (reinterpret_cast<PyObject*>(Py_TYPE(number.ptr())) ==
               py::detail::array_descriptor_proxy(p->descr)->typeobj) {
        exact = PyFloat_AsDouble(number.ptr());
        if (exact == -1.0 && PyErr_Occurred()) throw py::error_already_set();
    } else {
        return false;
    }
    if (type == ScalarType::float64) {
        std::memcpy(value, &exact, sizeof exact);
        return true;
    }
    float rounded = static_cast<float>(exact);
    if (type == ScalarType::float32) {
        std::memcpy(value, &rounded, sizeof rounded);
    } else {
        const fastmse::Half half = fastmse::double_to_half(exact);
        std::memcpy(value, &half, sizeof half);
        rounded = fastmse::half_to_float(half);
    }
    const float smallest_normal = type == ScalarType::float32 ? std::numeric_limits<float>::min() : 0x1p-14f;
    const bool underflow = std::fabs(rounded) < smallest_normal && static_cast<double>(rounded) != exact;
    const bool overflow = !std::isfinite(rounded) && std::isfinite(exact);
    return !std::isnan(exact) && !underflow && !overflow;
}

py::object small_call(Job job, py::handle predictions, py::handle targets, py::handle weights_arg, py::handle axis,
                      py::handle reduction_arg, py::handle keepdims_arg, py::handle out_arg) {
    const py::object not_here = py::reinterpret_borrow<py::object>(Py_NotImplemented);
    if (!plain_array(predictions)) return not_here;
    const auto* p = py::detail::array_proxy(predictions.ptr());
    ScalarType type;
    if (!small_path_type(p, type) || p->nd == 0) return not_here;
    // Arrays in Fortran order (DataFrame.to_numpy()'s) are walked as the C-ordered arrays
    // of their transposes, as the general path's plan does: their extents and axes reversed.
    const bool c_order = dense_flags(p, false);
    const bool fortran = !c_order && dense_flags(p, true);
    if (!c_order && !fortran) return not_here;
    // Targets: an array (t), or a number held here.
    const py::detail::PyArray_Proxy* t = nullptr;
    alignas(8) unsigned char target_number[8];
    const void* target_data = target_number;
    if (plain_array(targets)) {
        t = py::detail::array_proxy(targets.ptr());
        ScalarType target_type;
        if (!small_path_type(t, target_type) || target_type != type || !dense_flags(t, fortran)) return not_here;
        target_data = t->data;
    } else if (!number_target(targets, p, type, target_number)) {
        return not_here;
    }
    const int ndim = p->nd;
    int64_t extents[64];  // NumPy's most dimensions
    int64_t size = 1;
    for (int d = 0; d < ndim; ++d) {
        extents[d] = p->dimensions[fortran ? ndim - 1 - d : d];
        size *= extents[d];
    }
    Reduction reduction;
    uint64_t given_axes;
    if (size == 0 || !read_reduction(reduction_arg, reduction) || !read_axes(axis, ndim, given_axes))
        return not_here;
    uint64_t axes = given_axes;  // over `extents`
    if (fortran) {
        axes = 0;
        int long_kept = 0;  // kept extents above 1
        for (int d = 0; d < ndim; ++d) {
            axes |= (given_axes >> d & 1) << (ndim - 1 - d);
            long_kept += !(given_axes >> d & 1) && p->dimensions[d] > 1;
        }
        // The kernels write a loss in the order they walk: Fortran order here, where the
        // general path's loss is in C order. The two are one where one kept extent is
        // above 1 at most.
        if (long_kept > 1 && job != Job::mse_grad) return not_here;
    }
    if (keepdims_arg.ptr() != Py_True && keepdims_arg.ptr() != Py_False) return not_here;
    const bool keepdims = keepdims_arg.ptr() == Py_True;
    if (reduction == Reduction::none && (!axis.is_none() || job == Job::mse_and_grad)) return not_here;

    // A leading or trailing run of summed axes: one kept and one summed dimension.
    int n_axes = 0;  // a loop, not a compiler's popcount builtin: MSVC builds this too
    for (uint64_t bits = axes; bits != 0; bits &= bits - 1) ++n_axes;
    const uint64_t leading_run = n_axes == 64 ? ~uint64_t{0} : (uint64_t{1} << n_axes) - 1;
    const bool leading = axes == leading_run;
    if (!leading && axes != leading_run << (ndim - n_axes)) return not_here;
    int64_t kept = 1;
    for (int d = 0; d < ndim; ++d)
        if (!(axes >> d & 1)) kept *= extents[d];
    const int64_t count = size / kept;
    const bool reduces = reduction != Reduction::none;
    // One position per output, unweighted (fastmse._compute._loss_per_position): the loss
    // is the squared errors, an elementwise pass in the data's dtype. Weights of a mean
    // cancel there (checked below, then left out); of a sum they do not.
    const bool loss_per_position = reduces && count == 1 && n_axes != ndim;
    if (loss_per_position && !weights_arg.is_none() && reduction != Reduction::mean) return not_here;

    // Weights read here (w): per position; per sample (predictions' leading extents, then
    // extents of 1: (N, 1) on (N, k)) over everything; per column (extents of 1, then
    // predictions' trailing ones: (k,) on (N, k)) over everything or over exactly the
    // axes they cover. Weights that cancel are checked and left out. Any others
    // (broadcast otherwise, of another dtype, not dense, negative, ...) go to the general
    // path.
    const py::detail::PyArray_Proxy* w = nullptr;
    ScalarType weights_type = type;
    int64_t weights_bytes = 0;
    int64_t n_weights = 1;
    // Weights per sample or per column keep rows apart: (weight_rows, size / weight_rows),
    // the weights' strides over them weight_strides.
    int64_t weight_rows = 0;
    int64_t weight_strides[2] = {1, 0};
    const py::detail::PyArray_Proxy* to_check = nullptr;  // the weights given, whose values are to be checked
    WeightTest weights_test = WeightTest::non_negative;
    if (!weights_arg.is_none()) {
        if (!plain_array(weights_arg)) return not_here;
        const auto* given = py::detail::array_proxy(weights_arg.ptr());
        if (!small_path_type(given, weights_type) || (weights_type != type && weights_type != ScalarType::float64) ||
            !dense_flags(given, fortran))
            return not_here;
        Broadcast weights_along;
        if (!broadcast_of(given, extents, ndim, fortran, axes, weights_along)) return not_here;
        n_weights = weights_along.size;
        const WeightTest test = reduction == Reduction::mean && !weights_along.varies_along_summed
                                    ? WeightTest::positive_and_finite
                                    : WeightTest::non_negative;
        if (test == WeightTest::non_negative) {
            if (weights_along.per_position) {
                w = given;
            } else if (weights_along.per_sample && n_axes == ndim && n_weights > 1 && n_weights < size) {
                w = given;
                weight_rows = n_weights;
            } else if (weights_along.per_column && n_weights > 1 && n_weights < size &&
                       (n_axes == ndim || (!leading && n_weights == count))) {
                w = given;
                weight_rows = size / n_weights;
                weight_strides[0] = 0;
                weight_strides[1] = 1;
            } else {
                return not_here;
            }
            weights_bytes = n_weights * static_cast<int64_t>(item_size(weights_type));
        }
        to_check = given;
        weights_test = test;
    }
    // Targets: per position; one for all (strides of 0 over any plan, beside any weights);
    // or, where no weights are read, per sample or per column (below).
    Broadcast targets_along;
    if (t == nullptr) targets_along.per_position = false;  // a number: one for all
    else if (!broadcast_of(t, extents, ndim, fortran, axes, targets_along)) return not_here;
    const int64_t n_targets = targets_along.size;
    const bool one_target = n_targets == 1 && !targets_along.per_position;
    const bool targets_broadcast = !targets_along.per_position && !one_target;
    if (targets_broadcast && w != nullptr) return not_here;
    // In Fortran order, operands per position (or one for all) alone: the general path's
    // plan orders dimensions by the operands' strides together, and with an operand that
    // broadcasts otherwise its order can be C order (a tie kept as given).
    if (fortran && (targets_broadcast || weight_rows != 0)) return not_here;
    const bool weighted_mean = w != nullptr && reduction == Reduction::mean;
    // Weights per position in a mean: a weight sum per output (else one for all).
    const bool sums_per_output = weighted_mean && weight_rows == 0;

    const int64_t bytes = size * static_cast<int64_t>(item_size(type));
    const auto dtype = py::reinterpret_borrow<py::dtype>(p->descr);
    // An array of predictions' shape and order, as np.empty_like makes it.
    const auto like_predictions = [&] {
        std::vector<py::ssize_t> shape(p->dimensions, p->dimensions + ndim), strides(ndim);
        py::ssize_t stride = static_cast<py::ssize_t>(item_size(type));
        for (int k = 0; k < ndim; ++k) {
            const int d = fortran ? k : ndim - 1 - k;
            strides[d] = stride;
            stride *= shape[d];
        }
        return py::array(dtype, std::move(shape), std::move(strides));
    };
    py::object out_object;
    if (job != Job::mse) {
        if (out_arg.is_none()) {
            out_object = like_predictions();
        } else {
            if (!plain_array(out_arg)) return not_here;
            const auto* o = py::detail::array_proxy(out_arg.ptr());
            ScalarType out_type;
            if (!small_path_type(o, out_type) || out_type != type || o->nd != ndim ||
                !dense_flags(o, fortran, py::detail::npy_api::NPY_ARRAY_WRITEABLE_))
                return not_here;
            for (int d = 0; d < ndim; ++d)
                if (o->dimensions[d] != p->dimensions[d]) return not_here;
            // `out` may be predictions or targets of their shape exactly, and overlap nothing else.
            const int64_t target_bytes = n_targets * static_cast<int64_t>(item_size(type));
            if (o->data != p->data && overlaps(o, bytes, p, bytes)) return not_here;
            if (t && overlaps(o, bytes, t, target_bytes) && !(o->data == t->data && targets_along.per_position))
                return not_here;
            if (w != nullptr && overlaps(o, bytes, w, weights_bytes)) return not_here;
            out_object = py::reinterpret_borrow<py::object>(out_arg);
        }
    }

    // The plan of fastmse._plan for this call: (kept, count) or (size,), in elements. The
    // gradient alone sums nothing and, but for a weighted mean's per output, has one factor:
    // any axis is one walk, flat but for rows that weights or targets keep apart.
    const bool split = kept > 1 && reduces && !loss_per_position && (job != Job::mse_grad || sums_per_output);
    // Targets per sample or per column keep rows apart as weights per sample or per column
    // do: over everything, (target_rows, size / target_rows); over a run of axes, where
    // they vary along exactly the kept or the summed dimension. target_strides: over the
    // plan's two dimensions.
    int64_t target_rows = 0;
    int64_t target_strides[2] = {0, 0};
    if (targets_broadcast) {
        const bool per_sample = targets_along.per_sample;
        if (!per_sample && !targets_along.per_column) return not_here;
        if (!split) {
            // A loss over axes whose kept extents are all 1: the general path's plan has no
            // kept dimension, and so other rows.
            if (job != Job::mse_grad && reduces && n_axes != ndim) return not_here;
            target_rows = per_sample ? n_targets : size / n_targets;
            target_strides[per_sample ? 0 : 1] = 1;
        } else {
            // Along the plan's first dimension (the kept one) or its second (the summed one).
            const bool along_kept = per_sample != leading;
            if (n_targets != (along_kept ? kept : count)) return not_here;
            target_strides[along_kept ? 0 : 1] = 1;
        }
    }
    // A loss per row weighted per position, rows of up to kBlock positions (and for the loss
    // alone, rows of more or one sum over everything: lane mode's blocks): the pass sums
    // the weights itself (Problem::weight_sums_in_pass), and for the loss alone checks their
    // signs there too (sums per output come from weights that vary along the summed axes,
    // so the test is non_negative). Where a sum turns out 0 the general path does the call
    // again, and its warning comes before it writes anything (an error where warnings are).
    // So a gradient is written into `out` this way only where no row's weights are all 0:
    // non-negative weights sum to 0 only where all are 0 (a NaN or an infinity makes a sum
    // NaN or infinite, never 0). Weights that are masks (0 or 1) keep this path.
    bool sums_in_pass =
        sums_per_output && (split ? !leading && (count <= fastmse::kBlock || job == Job::mse) : job == Job::mse);
    // Weight sums summed before the pass, in lane mode (over more than kBlock weights
    // for each sum, not across outputs), check the weights' signs as they read them.
    const int64_t weights_per_sum = weight_rows ? n_weights : split ? count : size;
    const bool signs_in_sums = weighted_mean && !sums_in_pass && (weight_rows || !split || !leading) &&
                               weights_per_sum > fastmse::kBlock;
    if (to_check != nullptr && !(sums_in_pass && job == Job::mse) && !signs_in_sums) {
        bool passed = false, zero = false;
        bool* const find_zero = sums_in_pass && !out_arg.is_none() ? &zero : nullptr;
        const void* weights = to_check->data;
        without_gil_if(n_weights, [&] {
            passed = weights_pass(weights_type, weights, n_weights, weights_test, find_zero, count);
        });
        if (!passed) return not_here;
        sums_in_pass = sums_in_pass && !zero;
    }
    int64_t shape[2], inputs[2], per_output[2] = {1, 0}, zeros[2] = {0, 0};
    const int64_t rows = weight_rows ? weight_rows : target_rows;  // of an operand per sample or per column
    // The loss and gradient of a loss per position in one pass, as rows of one position
    // in memory order (the loss array's): the kernels' loop for such rows takes float32 and
    // float64 with targets per position.
    const bool rows_of_one = loss_per_position && job == Job::mse_and_grad && targets_along.per_position &&
                             (type == ScalarType::float32 || type == ScalarType::float64);
    const int plan_ndim = split || rows || rows_of_one ? 2 : 1;
    if (rows_of_one) {
        shape[0] = size;
        shape[1] = 1;
        inputs[0] = inputs[1] = 1;
    } else if (rows && !split) {
        shape[0] = rows;
        shape[1] = size / rows;
        inputs[0] = shape[1];
        inputs[1] = 1;
        per_output[0] = 0;
    } else if (split) {
        shape[0] = kept;
        shape[1] = count;
        inputs[0] = leading ? 1 : count;
        inputs[1] = leading ? kept : 1;
    } else {
        shape[0] = size;
        inputs[0] = 1;
        per_output[0] = 0;
    }
    Problem problem;
    problem.dtype = type;
    problem.ndim = plan_ndim;
    problem.n_kept = split || rows_of_one ? 1 : 0;
    problem.shape = shape;
    problem.predictions = {p->data, inputs};
    problem.targets = {const_cast<void*>(target_data), targets_along.per_position ? inputs : target_strides};
    problem.num_threads = fastmse::get_num_threads();
    double denominator = reduction == Reduction::mean && !sums_in_pass ? static_cast<double>(count) : 1.0;
    // A weighted mean's denominators, as fastmse._compute._weight_sums gives them: the
    // kernels' sum of w - 0 per output over the same plan, or over the weights alone times
    // the positions that each weight counts for. Where one is zero the general path warns.
    // Arrays of one value per output are NumPy's, as the general path's are (its allocator
    // asks large ones for huge pages: fewer page faults).
    const int64_t outputs = sums_per_output && split ? kept : 1;
    double one_sum = 0.0;
    double* weight_sums = &one_sum;
    py::object weight_sums_array, scales_array;  // a default py::array_t would allocate one
    const auto float64s = [outputs](py::object& owner) {
        py::array_t<double> array(outputs);
        double* data = array.mutable_data();
        owner = std::move(array);
        return data;
    };
    // A weighted mean's weight sums where the pass does not find them itself: summed here,
    // one for all outputs or (sums_per_output_before) one per output.
    const bool sums_before = weighted_mean && !sums_in_pass;
    const bool sums_per_output_before = sums_before && split && sums_per_output;
    if (sums_before) {
        if (outputs > 1) {
            weight_sums = float64s(weight_sums_array);
        }
        alignas(8) static const unsigned char zero[8] = {};  // 0 in any float type
        Problem sums = problem;
        sums.dtype = weights_type;
        sums.predictions = {w->data, inputs};
        sums.targets = {const_cast<unsigned char*>(zero), zeros};
        sums.loss = {weight_sums, per_output};
        static constexpr int64_t kContiguous[1] = {1};
        if (weight_rows) {
            sums.ndim = 1;
            sums.n_kept = 0;
            sums.shape = &n_weights;
            sums.predictions.strides = kContiguous;
            sums.loss.strides = zeros;
        }
        std::atomic<bool> negative{false};
        if (signs_in_sums) sums.negative_prediction = &negative;
        without_gil_if(weight_rows ? n_weights : size, [&] { fastmse::reduce_difference(sums); });
        if (negative.load()) return not_here;
        // Each weight counts for the positions of the summed axes it broadcasts along.
        if (weight_rows && n_axes == ndim) weight_sums[0] *= static_cast<double>(size / n_weights);
        for (int64_t k = 0; k < outputs; ++k)
            if (weight_sums[k] == 0.0) return not_here;
        denominator = weight_sums[0];  // where there is one output
    }
    if (w != nullptr) {
        problem.weights = {w->data, weight_rows ? weight_strides : inputs};
        problem.weights_dtype = weights_type;
    }
    // Rows that weights or targets keep apart in a sum over everything are summed first
    // where fastmse._compute._two_stage says so: not for a target per column.
    problem.rows_first = rows && !split && n_axes == ndim && reduces && job != Job::mse_grad &&
                         shape[1] <= fastmse::kBlock && !(target_rows && target_strides[1] == 1);
    // The loss: a scalar from the float64 sum, as fastmse._compute._finish makes it, or an
    // array that the kernel finishes (divided, rounded once), as fastmse._compute.loss asks.
    const bool scalar_loss = n_axes == ndim && !keepdims;
    double scalar_sum = 0.0;
    py::object loss;
    if (job != Job::mse_grad && reduces) {
        if (scalar_loss) {
            problem.loss = {&scalar_sum, per_output};
        } else {
            std::vector<py::ssize_t> loss_shape;
            for (int d = 0; d < ndim; ++d) {
                const bool summed = given_axes >> d & 1;
                if (!summed) loss_shape.push_back(p->dimensions[d]);
                else if (keepdims) loss_shape.push_back(1);
            }
            loss = py::array(dtype, loss_shape);
            void* const loss_data = py::detail::array_proxy(loss.ptr())->data;
            if (loss_per_position && !rows_of_one) {
                // A pass of its own, first: the gradient may overwrite an input.
                Problem squared = problem;
                squared.out = {loss_data, inputs};
                without_gil_if(size, [&] { fastmse::squared_error(squared); });
                if (job == Job::mse) return loss;
            } else {
                problem.loss = {loss_data, per_output};
                problem.loss_dtype = type;
                problem.loss_divisor = sums_in_pass ? 1.0 : denominator;
                if (sums_per_output_before) problem.loss_divisors = weight_sums;
            }
        }
    }
    fastmse::WeightSumsInPass found;
    if (sums_in_pass) problem.weight_sums_in_pass = &found;
    double scale = reduction == Reduction::mean && !sums_in_pass ? 2.0 / denominator : 2.0;
    py::object errors;
    if (job != Job::mse) {
        problem.out = {py::detail::array_proxy(out_object.ptr())->data, inputs};
        problem.scale = {&scale, zeros};
        if (sums_per_output_before) {  // a weighted mean's factors, one per output
            // Written over the weight sums where the loss does not divide by them (as
            // fastmse._compute._scale in place).
            double* scales = weight_sums;
            if (job == Job::mse_and_grad) {
                scales = float64s(scales_array);
            }
            for (int64_t k = 0; k < outputs; ++k) scales[k] = 2.0 / weight_sums[k];
            problem.scale = {scales, per_output};
        }
    } else if (!reduces) {  // mse with "none": the squared errors
        errors = like_predictions();
        problem.out = {py::detail::array_proxy(errors.ptr())->data, inputs};
    }
    void (*kernel)(const Problem&) = job == Job::mse      ? (reduces ? &fastmse::reduce : &fastmse::squared_error)
                                     : job == Job::mse_grad || (loss_per_position && !rows_of_one)
                                         ? &fastmse::grad
                                         : &fastmse::reduce_and_grad;
    without_gil_if(size, [&] { kernel(problem); });
    // Where the general path raises or warns.
    if (found.negative_weight.load() || found.zero_sum.load()) return not_here;
    if (job == Job::mse_grad) return out_object;
    if (!reduces) return errors;

    if (scalar_loss) {
        loss = scalar_of(type, p->descr, scalar_sum / denominator);
        if (!loss) throw py::error_already_set();
    }
    if (job == Job::mse) return loss;
    return py::make_tuple(loss, out_object);
}

// small_call as a METH_FASTCALL function: pybind11's argument dispatch would cost a
// third of a small call.
PyObject* small_call_entry(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
    if (nargs != 8 || !PyLong_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError,
                        "small_call(job, predictions, targets, weights, axis, reduction, keepdims, out)");
        return nullptr;
    }
    const long job = PyLong_AsLong(args[0]);
    if (job < 0 || job > 2) {
        PyErr_SetString(PyExc_ValueError, "small_call: job is 0 (mse), 1 (mse_grad) or 2 (mse_and_grad)");
        return nullptr;
    }
    try {
        return small_call(static_cast<Job>(job), args[1], args[2], args[3], args[4], args[5], args[6], args[7])
            .release()
            .ptr();
    } catch (py::error_already_set& error) {
        error.restore();
    } catch (const std::bad_alloc&) {
        PyErr_NoMemory();
    } catch (const std::exception& error) {
        PyErr_SetString(PyExc_RuntimeError, error.what());
    }
    return nullptr;
}

PyMethodDef g_small_call_def = {
    "small_call", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&small_call_entry)), METH_FASTCALL,
    "small_call(job, predictions, targets, weights, axis, reduction, keepdims, out): job 0 mse, 1 mse_grad, 2 "
    "mse_and_grad on the common small call, whole in C++; NotImplemented for any other call."};
#endif

#ifdef FASTMSE_WITH_CUDA
using DeviceKernel = void (*)(const Problem&, void*, int, std::uintptr_t);

// A GPU pass: operands are (device pointer, scalar_types code) pairs, workspace a device pointer
// to cuda_workspace_bytes(shape, n_kept, strides) bytes (0 where that is 0); kernels are queued on
// `stream` of `device`, and nothing waits for them.
template <DeviceKernel K>
void run_device(py::handle shape, int n_kept, py::handle operands, py::handle strides, py::handle loss_divisor,
                std::uintptr_t workspace, int device, std::uintptr_t stream) {
    ProblemStorage storage;
    const auto source = [](std::size_t, const py::object& item) {
        const auto pair = item.cast<std::pair<std::uintptr_t, int>>();
        return OperandSource{reinterpret_cast<void*>(pair.first), scalar_type_from_code(pair.second)};
    };
    Problem problem = read_problem(storage, shape, n_kept, operands, strides, false, source);
    read_loss_divisor(problem, loss_divisor, source);
    // std::invalid_argument and std::runtime_error reach Python as ValueError and RuntimeError.
    py::gil_scoped_release release;
    K(problem, reinterpret_cast<void*>(workspace), device, stream);
}
#endif

py::dict build_info() {
    py::dict info;
    info["compiler"] = FASTMSE_COMPILER;
#ifdef _OPENMP
    info["openmp"] = true;
    info["openmp_version"] = _OPENMP;
#else
    info["openmp"] = false;
    info["openmp_version"] = py::none();
#endif
#ifdef FASTMSE_WITH_CUDA
    info["cuda"] = true;
    const int version = fastmse::cuda::runtime_version();
    info["cuda_version"] = std::to_string(version / 1000) + "." + std::to_string(version % 1000 / 10);
    py::list architectures;
    const std::string listed = fastmse::cuda::architectures();
    for (std::size_t start = 0; start <= listed.size();) {
        const std::size_t end = std::min(listed.find(',', start), listed.size());
        if (end > start) architectures.append(listed.substr(start, end - start));
        start = end + 1;
    }
    info["cuda_architectures"] = architectures;
#else
    info["cuda"] = false;
    info["cuda_version"] = py::none();
    info["cuda_architectures"] = py::list();
#endif
    info["block"] = fastmse::kBlock;
    info["chunk"] = fastmse::kChunk;
    return info;
}

#ifndef FASTMSE_CUDA_HOST_MODEL
void bind_cpu(py::module_& m) {
    const char* signature_doc =
        "(shape, n_kept, arrays, strides, loss_divisor, rows_first): arrays and element strides of "
        "predictions, targets, weights, out, loss, scale (None where absent), what each loss sum is divided "
        "by (a float, or float64 laid out as loss: one divisor per output), and whether a sum over everything "
        "takes its rows first (Plan.rows_first).";
    init_array_scalar();
    m.add_object("small_call", py::reinterpret_steal<py::object>(PyCFunction_NewEx(&g_small_call_def, nullptr, m.attr("__name__").ptr())));
    m.def("reduce", &run_host<fastmse::reduce>, signature_doc);
    m.def("grad", &run_host<fastmse::grad>, signature_doc);
    m.def("reduce_and_grad", &run_host<fastmse::reduce_and_grad>, signature_doc);
    m.def("squared_error", &run_host<fastmse::squared_error>, signature_doc);
    m.def("reduce_difference", &run_host<fastmse::reduce_difference>, signature_doc);
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
    m.def("isa", &fastmse::active_isa, "Instruction set of the kernel copy that runs: 'baseline' or 'avx2'.");
    m.def(
        "set_isa", [](const std::string& name) { return fastmse::set_isa(name.c_str()); }, py::arg("name"),
        "Run the kernel copy for `name`; False (nothing changes) where it is not built or the CPU lacks it.");
    m.def(
        "runnable_isas",
        [] {
            py::list names;
            for (const char* const* name = fastmse::runnable_isas(); *name != nullptr; ++name) names.append(*name);
            return names;
        },
        "Instruction sets of the kernel copies this CPU runs, least capable first.");
    m.def("set_num_threads", &fastmse::set_num_threads, py::arg("n"));
    m.def("get_num_threads", &fastmse::get_num_threads);
    m.def("set_parallel_asleep_min", &fastmse::set_parallel_asleep_min, py::arg("positions"),
          "Positions from which calls use every thread whether OpenMP's are awake or asleep; returns the "
          "value it replaces (tests set kParallelMin, 2**16, to reach the threads on small arrays).");
}
#endif

#ifdef FASTMSE_WITH_CUDA
void bind_cuda(py::module_& m) {
    const char* device_doc =
        "(shape, n_kept, operands, strides, loss_divisor, workspace, device, stream): (device pointer, "
        "scalar_types code) or None for predictions, targets, weights, out, loss, scale; loss_divisor a float "
        "or a float64 (pointer, code) laid out as loss; queued on `stream` of `device`.";
    m.def("cuda_reduce", &run_device<fastmse::cuda::reduce>, device_doc);
    m.def("cuda_grad", &run_device<fastmse::cuda::grad>, device_doc);
    m.def("cuda_reduce_and_grad", &run_device<fastmse::cuda::reduce_and_grad>, device_doc);
    m.def("cuda_squared_error", &run_device<fastmse::cuda::squared_error>, device_doc);
    m.def("cuda_reduce_difference", &run_device<fastmse::cuda::reduce_difference>, device_doc);
    m.attr("cuda_max_dims") = fastmse::cuda::kMaxDims;
    m.def(
        "cuda_stream_read",
        [](std::uintptr_t data, int64_t bytes, std::uintptr_t sink, int device, std::uintptr_t stream) {
            py::gil_scoped_release release;
            fastmse::cuda::stream_read(reinterpret_cast<const void*>(data), bytes,
                                       reinterpret_cast<uint64_t*>(sink), device, stream);
        },
        py::arg("data"), py::arg("bytes"), py::arg("sink"), py::arg("device"), py::arg("stream"),
        "Read `bytes` of device memory once (the GPU bandwidth probe); sink: 8 bytes of device memory.");
    m.def("cuda_device_count", &fastmse::cuda::device_count);
    m.def("cuda_driver_version", &fastmse::cuda::driver_version,
          "The CUDA version the driver supports (e.g. 12080), 0 where there is no driver.");
    m.def("cuda_can_run", &fastmse::cuda::can_run, py::arg("device"),
          "Whether the compiled kernels run on `device` (architecture and driver).");
    m.def(
        "cuda_workspace_bytes",
        [](py::handle shape_seq, int n_kept, py::handle strides_seq) {
            int64_t shape[fastmse::kMaxDims], strides[2][fastmse::kMaxDims];
            const std::size_t ndim = read_shape(shape_seq, n_kept, shape);
            if (py::len(strides_seq) != kOperandCount) throw py::value_error("fastmse._core: malformed problem");
            const py::sequence strides_of = py::reinterpret_borrow<py::sequence>(strides_seq);
            for (std::size_t k = 0; k < 2; ++k) read_int64s(strides_of[k], strides[k], ndim, "strides");
            return fastmse::cuda::workspace_bytes(shape, static_cast<int>(ndim), n_kept, strides[0], strides[1]);
        },
        py::arg("shape"), py::arg("n_kept"), py::arg("strides"),
        "Device scratch bytes a reducing GPU pass over `shape` with these element strides needs.");
}
#endif

#ifdef FASTMSE_CUDA_HOST_MODEL
void bind_host_model(py::module_& m) {
    m.def("set_multiprocessor_count", &fastmse::host_model::set_multiprocessor_count, py::arg("count"),
          "The emulated device's multiprocessor count (the kernels' grid sizes follow it).");
    m.def("multiprocessor_count", &fastmse::host_model::multiprocessor_count);
    m.def("set_reverse_order", &fastmse::host_model::set_reverse_order, py::arg("reverse"),
          "Run a block's threads in reverse index order (a missing barrier then changes results).");
    m.def("reverse_order", &fastmse::host_model::reverse_order);
    m.def("run_host_model_case", &run_host_model_case, py::arg("name"), py::arg("blocks"),
          "Runs one kernel of tests/host_model_faults.cpp; RuntimeError where the host model refuses it.");
}
#endif

}  // namespace

PYBIND11_MODULE(FASTMSE_MODULE, m) {
    m.doc() = "fastmse's compiled kernels (private: use the fastmse package).";
    init_dtype_numbers();
    py::dict scalar_types;
    for (std::size_t k = 0; k < std::size(kScalarTypes); ++k)
        scalar_types[kScalarTypeNames[k]] = static_cast<int>(kScalarTypes[k]);
    m.attr("scalar_types") = scalar_types;
#ifndef FASTMSE_CUDA_HOST_MODEL
    bind_cpu(m);
#endif
#ifdef FASTMSE_WITH_CUDA
    bind_cuda(m);
#endif
#ifdef FASTMSE_CUDA_HOST_MODEL
    bind_host_model(m);
#endif
    m.def("build_info", &build_info);
}
