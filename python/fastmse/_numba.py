"""Numba kernels: a mirror of cpp/kernels.cpp and of the per-position arithmetic of
cpp/position.hpp (which the CUDA kernels share).

Same summation geometry, same order of floating-point operations, same float16 and
bfloat16 rounding, so a plan gives bitwise the same results here as in the compiled module.
Used when the compiled module is missing or ``FASTMSE_BACKEND=numba``.
"""

from __future__ import annotations

import functools
import math
import os
import platform
import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeAlias

import numba
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, overload, register_jitable
from numpy.typing import NDArray

from ._plan import Plan, is_contiguous, per_output, scalar_loss
from ._types import FLOAT_DTYPES

# The kernels' argument types, for type checkers (Numba infers its own from the values):
# p, t, w and out are 1-D views of their storage (uint16 for float16, int16 for bfloat16:
# Numba knows neither, and the storage type tells the two apart), and so is the loss
# (float64 sums or the finished loss in its own dtype); scale and partial sums are
# float64; shapes, strides, indices and offsets int64.
Operand: TypeAlias = NDArray[Any]
Float64s: TypeAlias = NDArray[np.float64]
Int64s: TypeAlias = NDArray[np.int64]

# The summation geometry of cpp/kernels.hpp (kLanes, kBlock, ...) and Cascade::kLevels.
LANES = 8
BLOCK = 2048
ROW_BLOCK = 256
OUTPUTS_PER_TASK = 64
NARROW = 4  # across_block's groups of up to NARROW outputs have their rows unrolled (kNarrow)
CHUNK = 1 << 15
CASCADE_LEVELS = 64
KROWS = 4  # rows summed side by side and finished together by _vector_rows (kRowGroup)
SPECIALIZED_GROUPS = 3  # short rows of fewer groups of LANES have loops of their own in _vector_rows
STREAMED_SPECIALIZED_GROUPS = 2  # where their gradient streams (_RowsCode.emit_writing)
SHORT_ROW_GROUPS = 8  # rows of fewer groups of LANES are summed KROWS at a time
COPIED = 4 * BLOCK  # positions of a run of short rows whose target row is copied (row_tasks)
# Calls of fewer positions run on the calling thread (the compiled kernels' kParallelMin
# is 1 << 16): a worker asleep between calls takes about 50 us to wake (see _Worker), what
# one thread takes for 2**18 positions. Measured on 2 threads, float32, 10th percentile,
# with 5 ms of other work between calls (back to back in brackets): 2**18 59 us alone,
# 107 on two (45, 51); 2**19 145, 142 (146, 68); 2**20 291, 227 (295, 169).
PARALLEL_MIN = 1 << 19
# Reads of a flag before a thread sleeps (see _Worker): about 1 ms here for the calling
# thread, whose wait ends with the worker's part, and 0.5 ms for a worker between calls,
# which keeps a core busy meanwhile.
FINISH_SPINS, WORKER_SPINS = 1 << 22, 1 << 21
PREFETCH_DISTANCE = 1024  # elements, kernels.cpp's kPrefetchDistance
# kernels.cpp's kStreamingStoresMin and kStreamAlign: outputs from which a pass's vector
# stores go around the cache (_Emitter.streams_out), on x86-64, whose sfence orders them.
STREAMING_STORES_MIN = 24 << 20  # bytes
STREAM_ALIGN = 16  # bytes
_STREAMS = platform.machine().lower() in ("x86_64", "amd64")
P, T, W, OUT, LOSS, SCALE = range(6)
RUN_SUMS = 11  # the index of run's (and schedule's) float64 `sums` among its arguments
# The passes, in the order of cpp/kernels.cpp's Pass.
REDUCE, GRAD, REDUCE_AND_GRAD, SQUARED_ERROR, REDUCE_DIFFERENCE = range(5)
# How run splits a plan into tasks (cpp/kernels.cpp's Schedule).
LANE_MODE, ACROSS_MODE, ROW_MODE = range(3)


def _bits_as_double(typingctx: Any, bits: Any) -> Any:
    """The float64 whose bits are the int64 `bits`."""

    def codegen(context: Any, builder: Any, signature: Any, arguments: Any) -> Any:
        return builder.bitcast(arguments[0], ir.DoubleType())

    return types.float64(types.int64), codegen


bits_as_double: Any = intrinsic(_bits_as_double)


def _double_bits(typingctx: Any, value: Any) -> Any:
    """The bits of the float64 `value`, as an int64."""

    def codegen(context: Any, builder: Any, signature: Any, arguments: Any) -> Any:
        return builder.bitcast(arguments[0], ir.IntType(64))

    return types.int64(types.float64), codegen


double_bits: Any = intrinsic(_double_bits)


@register_jitable
def power_of_two(exponent: int) -> float:
    """2.0 ** exponent for a normal float64 (-1022 to 1023), built from its bits: a power
    computed took 3 ns each value of a 16-bit float."""
    return float(bits_as_double(np.int64(exponent + 1023) << 52))


@register_jitable
def binary_exponent(a: float) -> int:
    """The exponent of a normal positive float64 a (math.frexp(a)[1] - 1), from its bits."""
    return int(((double_bits(a) >> 52) & 0x7FF) - 1023)


@register_jitable
def _sixteen_bits_to_double(bits: int, mantissa_bits: int, exponent_max: int, bias: int) -> float:
    """The value of a 16-bit float (sign, exponent, mantissa; IEEE layout) as float64: its
    fields moved into a float64's."""
    exponent = (bits >> mantissa_bits) & exponent_max
    mantissa = bits & ((1 << mantissa_bits) - 1)
    sign = (bits & 0x8000) << 48
    if exponent == 0:  # zero or subnormal: mantissa units of 2 ** (1 - bias - mantissa_bits), exact
        value = mantissa * power_of_two(1 - bias - mantissa_bits)
        return -value if sign else value
    if exponent == exponent_max:  # the infinity or the quiet NaN of its sign: payloads are not kept (nor in C++)
        return float(bits_as_double(sign | (0x7FF << 52) | (0 if mantissa == 0 else 1 << 51)))
    return float(bits_as_double(sign | ((exponent - bias + 1023) << 52) | (mantissa << (52 - mantissa_bits))))


@register_jitable
def half_to_double(bits: np.uint16) -> float:
    return _sixteen_bits_to_double(np.int64(bits), 10, 31, 15)


@register_jitable
def double_to_half(value: float) -> np.uint16:
    # Rounds a float64 to binary16 once, nearest even: the scaled values are exact in
    # float64 and np.rint rounds half to even (cpp/half.hpp gets there by round-to-odd).
    sign = 0x8000 if math.copysign(1.0, value) < 0 else 0
    a = abs(value)
    # Typed locals: NumPy's stubs give Any for these conversions, which mypy --strict refuses.
    bits: np.uint16
    if math.isnan(a):
        bits = np.uint16(sign | 0x7E00)
    elif a >= 65520.0:
        bits = np.uint16(sign | 0x7C00)
    elif a < 2.0**-14:
        bits = np.uint16(sign | np.int64(np.rint(a * 2.0**24)))
    else:
        bits = _normal_half(sign, a)
    return bits


@register_jitable
def _normal_half(sign: int, a: float) -> np.uint16:
    exponent = binary_exponent(a)
    significand: int | np.int64 = np.int64(np.rint(a * power_of_two(10 - exponent)))
    if significand == 2048:
        significand = 1024
        exponent += 1
    bits: np.uint16 = np.uint16(sign | ((exponent + 15) << 10) | (significand - 1024))
    return bits


@register_jitable
def bfloat16_to_double(bits: np.int16) -> float:
    return _sixteen_bits_to_double(np.int64(bits) & 0xFFFF, 7, 255, 127)


@register_jitable
def double_to_bfloat16(value: float) -> np.int16:
    # As double_to_half: exact scaling, then np.rint's round half to even, once.
    sign = 0x8000 if math.copysign(1.0, value) < 0 else 0
    a = abs(value)
    bits: int | np.int64
    if math.isnan(a):
        bits = sign | 0x7FC0
    elif a >= 255.5 * 2.0**120:  # half a unit above the largest finite value, and beyond
        bits = sign | 0x7F80
    elif a < 2.0**-126:
        bits = sign | np.int64(np.rint(a * 2.0**133))
    else:
        exponent = binary_exponent(a)
        significand: int | np.int64 = np.int64(np.rint(a * power_of_two(7 - exponent)))
        if significand == 256:
            significand = 128
            exponent += 1
        bits = sign | ((exponent + 127) << 7) | (significand - 128)
    stored: np.int16 = np.int16(np.int64(bits) - (np.int64(bits) & 0x8000) * 2)  # the int16 of those bits
    return stored


def load(array: Operand, i: int) -> float:  # pragma: no cover - replaced by the overload in compiled code
    raise NotImplementedError


def store(array: Operand, i: int, value: float) -> None:  # pragma: no cover - replaced by the overload in compiled code
    raise NotImplementedError


# @overload requires the typing function and its implementations to have one signature,
# annotations included; Numba calls the first with Numba types and the others with values.
OverloadArg: TypeAlias = Any


# Every index here is an offset from the start of a flat view (flat_view), never negative:
# indexing with it unsigned spares Numba's negative-index wrap-around at every access,
# which cost 2.5x on a flat sum.
@overload(load)
def _load(array: OverloadArg, i: OverloadArg) -> Callable[[Operand, int], float]:
    if array.dtype == types.uint16:

        def load_half(array: OverloadArg, i: OverloadArg) -> float:
            return half_to_double(array[np.uint64(i)])

        return load_half

    if array.dtype == types.int16:

        def load_bfloat16(array: OverloadArg, i: OverloadArg) -> float:
            return bfloat16_to_double(array[np.uint64(i)])

        return load_bfloat16

    def load_float(array: OverloadArg, i: OverloadArg) -> float:
        value: float = np.float64(array[np.uint64(i)])
        return value

    return load_float


def sign_bits(array: Operand) -> tuple[Any, int]:
    """The elements' bits as unsigned integers of their width, and their sign bit's mask."""
    raise NotImplementedError  # pragma: no cover - replaced by the overload in compiled code


@overload(sign_bits)
def _sign_bits(array: OverloadArg) -> Callable[[Operand], tuple[Any, int]]:
    width = array.dtype.bitwidth
    unsigned = {16: np.uint16, 32: np.uint32, 64: np.uint64}[width]
    mask = np.uint64(1 << (width - 1))

    def bits_of(array: OverloadArg) -> tuple[Any, int]:
        return array.view(unsigned), mask

    return bits_of


@overload(store)
def _store(array: OverloadArg, i: OverloadArg, value: OverloadArg) -> Callable[[Operand, int, float], None]:
    if array.dtype == types.uint16:

        def store_half(array: OverloadArg, i: OverloadArg, value: OverloadArg) -> None:
            array[np.uint64(i)] = double_to_half(value)

        return store_half

    if array.dtype == types.int16:

        def store_bfloat16(array: OverloadArg, i: OverloadArg, value: OverloadArg) -> None:
            array[np.uint64(i)] = double_to_bfloat16(value)

        return store_bfloat16

    def store_float(array: OverloadArg, i: OverloadArg, value: OverloadArg) -> None:
        array[np.uint64(i)] = value

    return store_float


@register_jitable
def reduces(kind: int) -> bool:
    return kind == REDUCE or kind == REDUCE_AND_GRAD or kind == REDUCE_DIFFERENCE


@register_jitable
def writes(kind: int) -> bool:
    return kind == GRAD or kind == REDUCE_AND_GRAD or kind == SQUARED_ERROR


# The arithmetic of one position: cpp/position.hpp's write, term and apply.
@register_jitable
def write(kind: int, out: Operand, io: int, scale: float, weight: float, d: float) -> None:
    if kind == SQUARED_ERROR:
        store(out, io, weight * d * d)
    elif kind == GRAD or kind == REDUCE_AND_GRAD:
        store(out, io, scale * weight * d)


@register_jitable
def term(kind: int, weight: float, d: float) -> float:
    if kind == REDUCE_DIFFERENCE:
        return weight * d
    return weight * d * d


@register_jitable
def apply(kind: int, d: float, weight: float, scale: float, out: Operand, io: int) -> float:
    write(kind, out, io, scale, weight, d)
    return term(kind, weight, d)


@register_jitable
def element(
    kind: int,
    weighted: bool,
    p: Operand,
    ip: int,
    t: Operand,
    it: int,
    w: Operand,
    iw: int,
    out: Operand,
    io: int,
    scale: float,
) -> float:
    d = load(p, ip) - load(t, it)
    weight = load(w, iw) if weighted else 1.0
    return apply(kind, d, weight, scale, out, io)


@register_jitable
def seek(shape: Int64s, strides: Int64s, first: int, end: int, linear: int, index: Int64s, offset: Int64s) -> None:
    offset[:] = 0
    index[first:end] = 0
    # Position 0 takes no division: over an extent of 0 it is the only one there is.
    for d in range(end - 1, first - 1, -1):
        if linear == 0:
            break
        i = linear % shape[d]
        linear //= shape[d]
        index[d] = i
        for k in range(6):
            offset[k] += i * strides[k, d]


@register_jitable
def advance(shape: Int64s, strides: Int64s, first: int, end: int, n: int, index: Int64s, offset: Int64s) -> None:
    d = end - 1
    index[d] += n
    for k in range(6):
        offset[k] += n * strides[k, d]
    c = d
    while c >= first and index[c] >= shape[c]:
        for k in range(6):
            offset[k] -= index[c] * strides[k, c]
        index[c] = 0
        if c == first:
            return
        index[c - 1] += 1
        for k in range(6):
            offset[k] += strides[k, c - 1]
        c -= 1


def _unmanaged(typingctx: Any, array: Any) -> Any:
    """A view of `array` that takes no part in reference counting (no meminfo): passing it
    through the calls of a chunk costs a test of a null pointer where the array's own
    count costs an atomic add and subtract at each call (about 8 ns each, tens a chunk:
    most of a small call's time in the kernels). Only for arrays whose owner lives past
    every use of the view: an entry point's arguments (its caller holds them), or its own
    arrays whose variables it uses again after the view's last use (a view of a temporary,
    unmanaged(np.zeros(n)), would outlive its memory)."""

    if not isinstance(array, types.Array):
        return None

    def codegen(context: Any, builder: Any, signature: Any, arguments: Any) -> Any:
        source = context.make_array(array)(context, builder, arguments[0])
        view = context.make_array(array)(context, builder)
        for field in ("nitems", "itemsize", "data", "shape", "strides"):
            setattr(view, field, getattr(source, field))
        view.meminfo = ir.Constant(view.meminfo.type, None)
        view.parent = ir.Constant(view.parent.type, None)
        return view._getvalue()

    return array(array), codegen


unmanaged: Any = intrinsic(_unmanaged)


def _int64_flags(flags: Any) -> bool:
    """Whether `flags` is typed as an aligned C-contiguous int64 array (acquired's and
    released's address arithmetic)."""
    return isinstance(flags, types.Array) and flags.dtype == types.int64 and flags.layout == "C" and flags.aligned


def _acquired(typingctx: Any, flags: Any, i: Any) -> Any:
    """flags[i] of a C-contiguous int64 array, read with acquire ordering: a load that the
    compiler keeps in a loop, where a plain one would be read once for the whole loop."""

    if not (_int64_flags(flags) and isinstance(i, types.Integer)):
        return None

    def codegen(context: Any, builder: Any, signature: Any, arguments: Any) -> Any:
        view = context.make_array(flags)(context, builder, arguments[0])
        address = builder.gep(view.data, [arguments[1]])
        return builder.load_atomic(address, "acquire", 8)

    return types.int64(flags, i), codegen


acquired: Any = intrinsic(_acquired)


def _released(typingctx: Any, flags: Any, i: Any, value: Any) -> Any:
    """flags[i] = value in a C-contiguous int64 array, stored with release ordering: every
    write before it is seen by a thread that reads the value with acquired."""

    if not (_int64_flags(flags) and isinstance(i, types.Integer) and isinstance(value, types.Integer)):
        return None

    def codegen(context: Any, builder: Any, signature: Any, arguments: Any) -> Any:
        view = context.make_array(flags)(context, builder, arguments[0])
        address = builder.gep(view.data, [arguments[1]])
        builder.store_atomic(context.cast(builder, arguments[2], value, types.int64), address, "release", 8)
        return context.get_dummy_value()

    return types.none(flags, i, value), codegen


released: Any = intrinsic(_released)


@njit(cache=True, nogil=True)
def spin_until_set(flag: Int64s, spins: int) -> bool:
    """Whether flag[0] became non-zero within `spins` reads, the GIL released meanwhile."""
    for _ in range(spins):
        if acquired(flag, 0):
            return True
    return False


@njit(cache=True, nogil=True)
def await_call(done: Int64s, handed: Int64s, spins: int) -> None:
    """A worker's end of a call (see _Worker): done[0] set once the GIL is released, then up
    to `spins` reads of handed[0] for the next call."""
    released(done, 0, 1)
    spin_until_set(handed, spins)


@register_jitable
def let_workers_in(handed: Int64s) -> None:
    """Sets the flags of the workers handed a call's other ranges (see _Worker), from the
    calling thread's own range, its GIL released: a worker that sees its flag then takes
    the GIL at once, where one that saw it set from Python found the GIL held and slept
    on it (about 70 us to wake here: a 2**20-element sum on two threads took 0.21 ms)."""
    for i in range(handed.size):
        released(handed, i, 1)


@register_jitable
def cascade_push(stack: Float64s, state: Int64s, values: Float64s, width: int, scratch: Float64s) -> None:
    for j in range(width):
        scratch[j] = values[j]
    state[1] += 1
    n = state[1]
    while n & 1 == 0:
        state[0] -= 1
        for j in range(width):
            scratch[j] = stack[state[0], j] + scratch[j]
        n >>= 1
    for j in range(width):
        stack[state[0], j] = scratch[j]
    state[0] += 1


@register_jitable
def cascade_total(stack: Float64s, state: Int64s, result: Float64s, width: int) -> None:
    depth = state[0]
    for j in range(width):
        result[j] = 0.0
        if depth > 0:
            s = stack[depth - 1, j]
            for level in range(depth - 2, -1, -1):
                s = stack[level, j] + s
            result[j] = s


@register_jitable
def combine_lanes(acc: Float64s, at: int, step: int) -> float:
    """kernels' combine_lanes of the LANES lanes acc[at], acc[at + step], ..."""
    first = (acc[at] + acc[at + step]) + (acc[at + 2 * step] + acc[at + 3 * step])
    second = (acc[at + 4 * step] + acc[at + 5 * step]) + (acc[at + 6 * step] + acc[at + 7 * step])
    return float(first + second)


# An output's sum as the loss holds it: divided by its divisor (unless 1, a sum for the
# caller to combine) and rounded once to the loss's dtype, as cpp/kernels.cpp's LossStore
# finishes it. `loss` is (sums, finished), see schedule: stored into both, the one not in
# use a scratch value of one element, so that no row pays a test of which (a test per
# row made rows of ten 30% slower). `divisors` likewise: laid out as the loss (one per
# output, Plan.loss_divisor), or one value for all.
@register_jitable
def put_loss(loss: Any, i: int, value: float, divisors: Float64s) -> None:
    sums, finished = loss
    divisor = divisors[min(i, divisors.size - 1)]
    quotient = value if divisor == 1.0 else value / divisor
    # An array of one element has only index 0: there min gives it, elsewhere i.
    store(sums, min(i, sums.size - 1), quotient)
    store(finished, min(i, finished.size - 1), quotient)


@register_jitable
def store_sum(
    n_chunks: int,
    partials: Float64s,
    loss: Any,
    divisors: Float64s,
    origin: Int64s,
    o: int,
    c: int,
    loss_offset: int,
    value: float,
) -> None:
    if n_chunks > 1:
        partials[o * n_chunks + c] = value
    else:
        put_loss(loss, origin[LOSS] + loss_offset, value, divisors)


# Whether the runs along the last dimension, steps sp, st, sw and so, are what
# contiguous_rows and lane_run take.
@register_jitable
def runs_contiguous(kind: int, weighted: bool, sp: int, st: int, sw: int, so: int) -> bool:
    return sp == 1 and (st == 0 or st == 1) and (so == 1 or not writes(kind)) and (not weighted or sw == 0 or sw == 1)


# Tasks of lane mode: one output over one chunk of its summed positions.
@register_jitable
def lane_tasks(begin: int, end: int, arguments: Any, partials: Float64s) -> None:
    (
        kind,
        weighted,
        has_scale,
        shape,
        n_kept,
        n_red,
        n_chunks,
        strides,
        origin,
        p,
        t,
        w,
        out,
        sums,
        finished,
        divisors,
        scale,
    ) = arguments
    loss = (sums, finished)
    ndim = shape.size
    last = ndim - 1
    kept_index = np.zeros(ndim, np.int64)
    kept_offset = np.zeros(6, np.int64)
    summed_index = np.zeros(ndim, np.int64)
    summed_offset = np.zeros(6, np.int64)
    acc = np.zeros(LANES)
    stack = np.zeros((CASCADE_LEVELS, 1))
    state = np.zeros(2, np.int64)
    one = np.zeros(1)
    scratch = np.zeros(1)
    kept_at = -1
    sp, st, sw, so = strides[P, last], strides[T, last], strides[W, last], strides[OUT, last]
    contiguous = runs_contiguous(kind, weighted, sp, st, sw, so)
    # As in cpp/kernels.cpp: contiguous rows of at most BLOCK with one row of targets for
    # all of them, each block one run, its targets from the row repeated.
    row = shape[last]
    shared_target_row = (
        contiguous
        and st == 1
        and (not weighted or sw == 1)
        and ndim - n_kept == 2
        and row <= BLOCK
        and strides[T, last - 1] == 0
        and strides[P, last - 1] == row
        and (not weighted or strides[W, last - 1] == row)
        and (not writes(kind) or strides[OUT, last - 1] == row)
    )
    chunk_size = min(CHUNK, n_red)  # what the chunks read: outputs of a few rows refill it
    repeated = np.empty(chunk_size + row if shared_target_row else 0, t.dtype)
    repeated_from = -1  # where the row in `repeated` starts in t
    blocks = (np.zeros(CHUNK // BLOCK), np.zeros(1, p.dtype), np.ones(1), block_steps())
    base = np.zeros(6, np.int64)
    for task in range(begin, end):
        o = task // n_chunks
        c = task % n_chunks
        if o != kept_at:
            seek(shape, strides, 0, n_kept, o, kept_index, kept_offset)
            kept_at = o
        factor = scale[origin[SCALE] + kept_offset[SCALE]] if has_scale else 0.0
        lo = c * CHUNK
        hi = min(lo + CHUNK, n_red)
        seek(shape, strides, n_kept, ndim, lo, summed_index, summed_offset)
        if shared_target_row:  # the chunk's blocks in one run across the rows
            row_at = origin[T] + kept_offset[T]
            if row_at != repeated_from:
                for i in range(row):
                    repeated[i] = t[row_at + i]
                for i in range(row, repeated.size):  # no division an element
                    repeated[i] = repeated[i - row]
                repeated_from = row_at
            for k in range(6):
                base[k] = origin[k] + kept_offset[k] + summed_offset[k]
            base[T] = lo % row
            base[LOSS] = 0
            run_of = (p, repeated, w, sw, out, scale, has_scale, np.int64(1))
            total = chunk_of_blocks(kind, weighted, run_of, base, hi - lo, blocks, (stack, state, one, scratch))
            if reduces(kind):
                store_sum(n_chunks, partials, loss, divisors, origin, o, c, kept_offset[LOSS], total)
            continue
        state[:] = 0
        for block in range(lo, hi, BLOCK):
            acc[:] = 0.0
            block_end = min(block + BLOCK, hi)
            pos = block
            while pos < block_end:
                n = min(shape[last] - summed_index[last], block_end - pos)
                ip = origin[P] + kept_offset[P] + summed_offset[P]
                it = origin[T] + kept_offset[T] + summed_offset[T]
                iw = origin[W] + kept_offset[W] + summed_offset[W]
                io = origin[OUT] + kept_offset[OUT] + summed_offset[OUT]
                # lane_run from the first position of lane 0, where the run is contiguous
                scalar_to = min(n, (block - pos) & (LANES - 1)) if contiguous else n
                for i in range(scalar_to):
                    v = element(
                        kind,
                        weighted,
                        p,
                        ip + i * strides[P, last],
                        t,
                        it + i * strides[T, last],
                        w,
                        iw + i * strides[W, last],
                        out,
                        io + i * strides[OUT, last],
                        factor,
                    )
                    acc[(pos - block + i) & (LANES - 1)] += v
                if scalar_to < n:
                    run_arguments = (p, t, w, sw, out, ip + scalar_to, it + scalar_to * st, iw + scalar_to * sw)
                    rest = (io + scalar_to, factor, n - scalar_to, acc, st)
                    specialized(LANES_ROUTINE, kind, weighted, (*run_arguments, *rest))
                pos += n
                advance(shape, strides, n_kept, ndim, n, summed_index, summed_offset)
            one[0] = combine_lanes(acc, 0, 1)
            cascade_push(stack, state, one, 1, scratch)
        cascade_total(stack, state, one, 1)
        if reduces(kind):
            store_sum(n_chunks, partials, loss, divisors, origin, o, c, kept_offset[LOSS], one[0])


# Short rows: lane mode where each output's summed positions lie along the last
# dimension and fit in one block, as in a loss per sample. A row's sum is then its one
# block, the combined lanes, with no cascade: what lane_tasks gives, here for a range of
# outputs walked without a seek per output (cpp/kernels.cpp's row_tasks).
@register_jitable
def row_tasks(begin: int, end: int, arguments: Any, partials: Float64s) -> None:
    (
        kind,
        weighted,
        has_scale,
        shape,
        n_kept,
        n_red,
        _,
        strides,
        origin,
        p,
        t,
        w,
        out,
        sums,
        finished,
        divisors,
        scale,
    ) = arguments
    loss = (sums, finished)
    last = shape.size - 1
    sp, st, sw, so = strides[P, last], strides[T, last], strides[W, last], strides[OUT, last]
    contiguous = runs_contiguous(kind, weighted, sp, st, sw, so)
    j = n_kept - 1  # the rows' dimension: walked by pointer steps, the odometer moved per run
    js = strides[:, j] if j >= 0 else np.zeros(6, np.int64)
    index = np.zeros(shape.size, np.int64)
    offset = np.zeros(6, np.int64)
    seek(shape, strides, 0, n_kept, begin, index, offset)
    acc = np.zeros(LANES)
    base = np.zeros(6, np.int64)
    # A pass that sums nothing over short rows one after another in p and out, with one
    # row of targets for all (a target per column) and one factor: a run of such rows is
    # walked as rows of up to COPIED positions whose targets are copies of that row side by
    # side (cpp/kernels.cpp's SharedRow copies a target row likewise), where each row of a
    # few positions cost as much as its arithmetic in set-up. Rows of more than 128
    # positions keep the walk row by row: a call per COPIED positions costs them as much.
    # The same operations on each position: the same bits. Whole groups of LANES rows a
    # call but a run's last, so that each call's positions are whole groups and, where the
    # first is aligned, each call's first is (their stores may stream: _RowsCode.streamable).
    rows_per_copy = 0
    if (
        not reduces(kind)
        and not weighted
        and contiguous
        and st == 1
        and j >= 0
        and js[T] == 0
        and js[P] == n_red
        and js[OUT] == n_red
        and js[SCALE] == 0
        and 64 * n_red <= COPIED
        and end - begin >= 2 * (COPIED // n_red)  # the copies made only where they may be used
    ):
        rows_per_copy = COPIED // n_red // LANES * LANES
    copies = np.empty(rows_per_copy * n_red, t.dtype) if rows_per_copy > 0 else t[:0]  # t's type either way
    o = begin
    while o < end:
        run = min(end - o, shape[j] - index[j]) if j >= 0 else end - o
        if contiguous:
            for k in range(6):
                base[k] = origin[k] + offset[k]
        if contiguous and rows_per_copy > 0 and run >= 2 * rows_per_copy:
            for i in range(copies.size):
                copies[i] = t[base[T] + i % n_red]
            first_p, first_out = base[P], base[OUT]
            base[T] = 0
            for r in range(0, run, rows_per_copy):
                base[P], base[OUT] = first_p + r * n_red, first_out + r * n_red
                positions = min(rows_per_copy, run - r) * n_red
                specialized(
                    ROWS_ROUTINE,
                    kind,
                    weighted,
                    (p, copies, w, sw, out, loss, divisors, scale, has_scale, base, js, 1, positions, st),
                )
        elif contiguous:
            specialized(
                ROWS_ROUTINE,
                kind,
                weighted,
                (p, t, w, sw, out, loss, divisors, scale, has_scale, base, js, run, n_red, st),
            )
        else:
            for r in range(run):
                factor = scale[origin[SCALE] + offset[SCALE] + r * js[SCALE]] if has_scale else 0.0
                ip = origin[P] + offset[P] + r * js[P]
                it = origin[T] + offset[T] + r * js[T]
                iw = origin[W] + offset[W] + r * js[W]
                io = origin[OUT] + offset[OUT] + r * js[OUT]
                acc[:] = 0.0
                for i in range(n_red):
                    acc[i & (LANES - 1)] += element(
                        kind, weighted, p, ip + i * sp, t, it + i * st, w, iw + i * sw, out, io + i * so, factor
                    )
                total = combine_lanes(acc, 0, 1)
                if reduces(kind):
                    put_loss(loss, origin[LOSS] + offset[LOSS] + r * js[LOSS], total, divisors)
        o += run
        if o < end:
            advance(shape, strides, 0, n_kept, run, index, offset)


# Tasks of across-output mode: a group of OUTPUTS_PER_TASK neighbouring outputs along the
# last kept dimension, over one chunk of their summed positions.
@register_jitable
def across_output_tasks(begin: int, end: int, arguments: Any, partials: Float64s) -> None:
    (
        kind,
        weighted,
        has_scale,
        shape,
        n_kept,
        n_red,
        n_chunks,
        strides,
        origin,
        p,
        t,
        w,
        out,
        sums,
        finished,
        divisors,
        scale,
    ) = arguments
    loss = (sums, finished)
    ndim = shape.size
    j_dim = n_kept - 1
    extent = shape[j_dim]
    n_groups = (extent + OUTPUTS_PER_TASK - 1) // OUTPUTS_PER_TASK
    tasks_per_chunk = n_groups
    for d in range(j_dim):
        tasks_per_chunk *= shape[d]
    outer_index_arr = np.zeros(ndim, np.int64)
    outer_offset = np.zeros(6, np.int64)
    summed_index = np.zeros(ndim, np.int64)
    summed_offset = np.zeros(6, np.int64)
    base = np.zeros(6, np.int64)
    # Per lane of each output (acc[lane * width + j]): its factor, its sum.
    factors = np.zeros(LANES * OUTPUTS_PER_TASK)
    acc = np.zeros(LANES * OUTPUTS_PER_TASK)
    values = np.zeros(OUTPUTS_PER_TASK)
    block_sums = np.zeros(OUTPUTS_PER_TASK)
    stack = np.zeros((CASCADE_LEVELS, OUTPUTS_PER_TASK))
    state = np.zeros(2, np.int64)
    scratch = np.zeros(OUTPUTS_PER_TASK)
    # A row of targets or weights shared by every row, copied once per lane (across_block).
    target_rows = np.empty(LANES * OUTPUTS_PER_TASK, t.dtype)
    weight_rows = np.empty(LANES * OUTPUTS_PER_TASK, w.dtype)
    reducing = reduces(kind)
    for task in range(begin, end):
        c = task // tasks_per_chunk  # chunk by chunk, as kernels.cpp's (a thread's range spans all groups)
        group = task % tasks_per_chunk % n_groups
        outer = task % tasks_per_chunk // n_groups
        seek(shape, strides, 0, j_dim, outer, outer_index_arr, outer_offset)
        j0 = group * OUTPUTS_PER_TASK
        width = min(OUTPUTS_PER_TASK, extent - j0)
        for k in range(6):
            base[k] = outer_offset[k] + j0 * strides[k, j_dim]
        factors[:] = 0.0
        if has_scale:
            for j in range(width):
                for lane in range(LANES):
                    factors[lane * width + j] = scale[origin[SCALE] + base[SCALE] + j * strides[SCALE, j_dim]]
        lo = c * CHUNK
        hi = min(lo + CHUNK, n_red)
        seek(shape, strides, n_kept, ndim, lo, summed_index, summed_offset)
        state[:] = 0
        walk = (p, t, w, out, origin, base, shape, strides, n_kept, summed_index, summed_offset, lo, hi)
        sums_of = (width, factors, acc, stack, state, scratch, target_rows, weight_rows, block_sums)
        specialized(ACROSS_ROUTINE, kind, weighted, (*walk, *sums_of))
        if reducing:
            cascade_total(stack, state, values, width)
            o0 = outer * extent + j0
            for j in range(width):
                store_sum(
                    n_chunks,
                    partials,
                    loss,
                    divisors,
                    origin,
                    o0 + j,
                    c,
                    base[LOSS] + j * strides[LOSS, j_dim],
                    values[j],
                )


@register_jitable
def unmanaged_operands(operands: Any) -> Any:
    """A plan's operands (p, t, w, out, sums, finished, divisors, scale) as unmanaged views
    (an entry point's arguments, which its caller holds): the calls of each task then pay
    no count changes for them."""
    p, t, w, out, sums, finished, divisors, scale = operands
    return (
        unmanaged(p),
        unmanaged(t),
        unmanaged(w),
        unmanaged(out),
        unmanaged(sums),
        unmanaged(finished),
        unmanaged(divisors),
        unmanaged(scale),
    )


# Tasks [begin, end) of one mode; `arguments` are schedule's, which each mode's tasks
# unpack. Several threads run disjoint ranges of tasks at once (NumbaBackend): Python
# threads, as the kernels release the GIL, not a parallel=True entry, whose parallel
# region took as long to compile again as the kernels themselves (14 s a dtype).
@njit(cache=True, nogil=True, error_model="numpy")
def tasks(handed: Int64s, begin: int, end: int, mode: int, arguments: Any, partials: Float64s) -> None:
    let_workers_in(handed)
    kind, weighted, has_scale, shape, n_kept, n_red, n_chunks, strides, origin = arguments[:9]
    p, t, w, out, sums, finished, divisors, scale = unmanaged_operands(arguments[9:])
    # The loss view not in use (put_loss's scratch value) is a range's own past the first
    # (which keeps the call's, so that one thread allocates nothing): one shared by the
    # threads would be stored into by each at every output, its cache line moved between
    # their cores. With one output there is one store.
    if begin > 0 and sums.size == 1 and finished.size > 1:
        sums = np.zeros(1)
    elif begin > 0 and finished.size == 1 and sums.size > 1:
        finished = np.zeros(1, finished.dtype)
    layout = (unmanaged(shape), n_kept, n_red, n_chunks, unmanaged(strides), unmanaged(origin))
    arguments = (kind, weighted, has_scale, *layout, p, t, w, out, sums, finished, divisors, scale)
    partials = unmanaged(partials)
    if mode == ROW_MODE:
        row_tasks(begin, end, arguments, partials)
    elif mode == ACROSS_MODE:
        across_output_tasks(begin, end, arguments, partials)
    else:
        lane_tasks(begin, end, arguments, partials)


# Positions of weights that weight_sum_tasks sums before it checks them (64 KiB of float32;
# at least one task's: a chunk of up to CHUNK positions in lane mode).
WEIGHTS_AT_ONCE = 1 << 14
# weight_sum_tasks' findings: a weight whose sign bit is set (negative, -0 or a NaN so
# signed), a row whose weights sum to 0 or NaN.
SIGNED_WEIGHT, UNUSABLE_ROW = range(2)


@njit(cache=True, nogil=True, error_model="numpy")
def weight_sum_tasks(
    handed: Int64s,
    begin: int,
    end: int,
    n_tasks: int,
    weight_mode: int,
    weight_arguments: Any,
    weight_partials: Float64s,
    scale: Float64s,
    found: Int64s,
) -> None:
    """Tasks [begin, end) of a pass that sums weights (reduce_difference, the weights as
    its predictions, flat and contiguous; `n_tasks` in all), each stretch of them followed
    by the check of as many weights (n / n_tasks a task: in row mode the very weights just
    read, in lane mode about those), from cache rather than in a pass of their own
    (np.fmin.reduce, on one thread, took a quarter of a weighted loss per row). Sets
    found[SIGNED_WEIGHT] for a weight whose sign bit is set: an OR of their bits, which
    runs at the cache's speed where comparisons in float64 took twice as long (a weight
    that is NaN leaves its sum NaN: the caller's to find). Rows
    (ROW_MODE, a task a row) set found[UNUSABLE_ROW] for a sum of 0 or NaN, and get their
    gradient factor, scale[r] = 2 / sum, where `scale` is not empty."""
    let_workers_in(handed)
    weights = weight_arguments[9]
    bits, sign = sign_bits(weights)
    n = weights.size
    per_task = (n + n_tasks - 1) // n_tasks  # positions whose weights a task checks
    rows = weight_mode == ROW_MODE
    row_sums = weight_arguments[13]
    signs = sign ^ sign  # 0, of the mask's type: an OR of unsigned integers
    unusable_rows = 0  # a count, not an early return: a loop of vectors
    step = max(1, WEIGHTS_AT_ONCE // per_task)
    for first in range(begin, end, step):
        last = min(first + step, end)
        tasks(handed[:0], first, last, weight_mode, weight_arguments, weight_partials)
        for i in range(min(first * per_task, n), min(last * per_task, n)):
            signs |= bits[np.uint64(i)]
        if rows:
            for r in range(first, last):
                unusable_rows += not row_sums[r] > 0.0  # weights without a sign: a sum of 0 or NaN
            if scale.size:
                for r in range(first, last):
                    scale[r] = 2.0 / row_sums[r]
    if signs & sign:
        released(found, SIGNED_WEIGHT, 1)
    if unusable_rows:
        released(found, UNUSABLE_ROW, 1)


# The loss comes as two views, float64 sums and the loss finished in the data's dtype, one
# of them a scratch value of one element (see put_loss). One compiled copy of the kernels
# then serves both, where a loss array of either dtype would compile them twice.
@njit(cache=True, nogil=True, error_model="numpy")
def schedule(
    kind: int,
    weighted: bool,
    has_scale: bool,
    shape: Int64s,
    n_kept: int,
    strides: Int64s,
    origin: Int64s,
    p: Operand,
    t: Operand,
    w: Operand,
    out: Operand,
    sums: Float64s,
    finished: Operand,
    divisors: Float64s,
    scale: Float64s,
) -> tuple[int, int, Any, Float64s]:
    """How run splits a plan (see cpp/kernels.cpp for the summation order): the mode, the
    number of tasks (0 where nothing is left to do), the tasks' arguments and the array of
    partial sums that they fill where an output's sum spans several chunks."""
    ndim = shape.size
    reducing = reduces(kind)
    if not reducing:  # the walk of a pass that sums nothing is free: short rows, as in C++
        n_kept = max(n_kept, ndim - 1)
    # int64 from the start, not the literal 1 (nor a literal 0 for tasks' begin in run):
    # Numba compiles and caches a copy of tasks for each type an argument takes while it
    # infers types, literals included, which doubled the time of a first call.
    n_out = np.int64(1)
    for d in range(n_kept):
        n_out *= shape[d]
    n_red = np.int64(1)
    for d in range(n_kept, ndim):
        n_red *= shape[d]
    n_chunks = max(1, (n_red + CHUNK - 1) // CHUNK)
    arguments = (
        kind,
        weighted,
        has_scale,
        shape,
        n_kept,
        n_red,
        n_chunks,
        strides,
        origin,
        p,
        t,
        w,
        out,
        sums,
        finished,
        divisors,
        scale,
    )
    partials = np.zeros(n_out * n_chunks if reducing and n_chunks > 1 else 0)
    if n_out == 0 or n_red == 0:
        if reducing and n_red == 0:  # sums of no terms
            index = np.zeros(ndim, np.int64)
            offset = np.zeros(6, np.int64)
            for o in range(n_out):
                seek(shape, strides, 0, n_kept, o, index, offset)
                put_loss((sums, finished), origin[LOSS] + offset[LOSS], 0.0, divisors)
        return LANE_MODE, np.int64(0), arguments, partials
    j, r = n_kept - 1, ndim - 1
    if (
        n_kept > 0
        and shape[j] > 1
        and (shape[r] == 1 or abs(strides[P, j]) + abs(strides[T, j]) < abs(strides[P, r]) + abs(strides[T, r]))
    ):
        n_tasks = n_out // shape[j] * ((shape[j] + OUTPUTS_PER_TASK - 1) // OUTPUTS_PER_TASK) * n_chunks
        return ACROSS_MODE, n_tasks, arguments, partials
    if ndim - n_kept == 1 and n_red <= BLOCK:
        return ROW_MODE, n_out, arguments, partials
    return LANE_MODE, n_out * n_chunks, arguments, partials


@njit(cache=True, nogil=True, error_model="numpy")
def combine_chunks(arguments: Any, partials: Float64s) -> None:
    """Each output's sum from its chunks' partial sums, where it has several."""
    kind, _, _, shape, n_kept, _, n_chunks, strides, origin, _, _, _, _, sums, finished, divisors, _ = arguments
    if not reduces(kind) or n_chunks == 1:
        return
    index = np.zeros(shape.size, np.int64)
    offset = np.zeros(6, np.int64)
    stack = np.zeros((CASCADE_LEVELS, 1))
    state = np.zeros(2, np.int64)
    one = np.zeros(1)
    scratch = np.zeros(1)
    for o in range(partials.size // n_chunks):
        seek(shape, strides, 0, n_kept, o, index, offset)
        state[:] = 0
        for c in range(n_chunks):
            one[0] = partials[o * n_chunks + c]
            cascade_push(stack, state, one, 1, scratch)
        cascade_total(stack, state, one, 1)
        put_loss((sums, finished), origin[LOSS] + offset[LOSS], one[0], divisors)


@njit(cache=True, nogil=True, error_model="numpy")
def run(
    kind: int,
    weighted: bool,
    has_scale: bool,
    shape: Int64s,
    n_kept: int,
    strides: Int64s,
    origin: Int64s,
    p: Operand,
    t: Operand,
    w: Operand,
    out: Operand,
    sums: Float64s,
    finished: Operand,
    divisors: Float64s,
    scale: Float64s,
) -> None:
    """Runs one pass over a plan on the calling thread, in one call from Python: what a
    small call takes (NumbaBackend runs larger ones on several threads)."""
    mode, n_tasks, arguments, partials = schedule(
        kind,
        weighted,
        has_scale,
        unmanaged(shape),
        n_kept,
        unmanaged(strides),
        unmanaged(origin),
        *unmanaged_operands((p, t, w, out, sums, finished, divisors, scale)),
    )
    if n_tasks:
        tasks(np.zeros(0, np.int64), np.int64(0), n_tasks, mode, arguments, partials)
        combine_chunks(arguments, partials)


# Numba leaves LLVM's SLP vectorizer off and its loop vectorizer does not reorder float
# sums, so eight lanes in scalars or an array stay eight scalar chains. _vector_groups
# emits the loop over groups of eight positions as <8 x double> vectors: the same
# operations in the same order per lane (or per output) as cpp/kernels.cpp, so the same
# bits, and run_packed's prefetch ahead of the loads (unguarded here: a prefetch past the
# end of an array does not fault).
_VECTOR_DTYPES = (types.float32, types.float64)
_LANE_SUMS: Any = types.UniTuple(types.float64, LANES)  # type: ignore[no-untyped-call]
ZERO_LANES = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


def _vectorizable(kind: int, weighted: bool, p: Any, t: Any, w: Any, out: Any) -> bool:
    """Whether _vector_groups' code takes these operand types: every array the pass reads
    or writes a C-contiguous float32 or float64 view."""
    used = [p, t] + ([w] if weighted else []) + ([out] if writes(kind) else [])
    return all(isinstance(a, types.Array) and a.layout == "C" and a.dtype in _VECTOR_DTYPES for a in used)


class _Emitter:
    """LLVM IR over an intrinsic's arrays (by name: their Numba type and value), each
    element read as float64: vector loads and stores of LANES lanes, prefetches."""

    def __init__(self, context: Any, builder: Any, arrays: dict[str, tuple[Any, Any]]) -> None:
        self.context, self.builder, self.arrays = context, builder, arrays
        self.i64, self.i32 = ir.IntType(64), ir.IntType(32)
        self.lanes = ir.VectorType(ir.DoubleType(), LANES)
        byte_pointer = ir.IntType(8).as_pointer()
        self._byte_pointer = byte_pointer
        self._prefetch = builder.module.declare_intrinsic(
            "llvm.prefetch",
            [byte_pointer],
            ir.FunctionType(ir.VoidType(), [byte_pointer, self.i32, self.i32, self.i32]),
        )
        # Whether `o`'s vector stores stream (streams_out), directly, in pieces (store_tail)
        # or staged first (staging).
        self.streaming = False
        self.staging: Any = None  # where stores of `o` go instead, to stream later (stream_staged)

    def constant(self, value: int) -> Any:
        return ir.Constant(self.i64, value)

    def _array(self, name: str) -> Any:
        array_type, value = self.arrays[name]
        return self.context.make_array(array_type)(self.context, self.builder, value)

    def size(self, name: str) -> Any:
        return self._array(name).nitems

    def data(self, name: str) -> Any:
        return self._array(name).data

    def element(self, name: str) -> Any:  # the array's element type in memory
        return self.context.get_data_type(self.arrays[name][0].dtype)

    def piece(self, name: str) -> int:  # elements in a STREAM_ALIGN-byte piece
        itemsize: int = self.arrays[name][0].dtype.bitwidth // 8
        return STREAM_ALIGN // itemsize

    def address(self, name: str, at: Any, count: int) -> tuple[Any, Any]:
        builder = self.builder
        element = self.element(name)
        loaded = ir.VectorType(element, count) if count > 1 else element
        data = self.staging if name == "o" and self.staging is not None else self.data(name)
        pointer = builder.gep(data, [at], source_etype=element)
        return builder.bitcast(pointer, loaded.as_pointer()), loaded

    def alignment(self, name: str) -> int:  # an element's, or none: misaligned data is read in place
        array_type = self.arrays[name][0]
        return array_type.dtype.bitwidth // 8 if array_type.aligned else 1

    def load(self, name: str, at: Any, count: int = LANES) -> Any:
        pointer, loaded = self.address(name, at, count)
        value = self.builder.load(pointer, align=self.alignment(name), typ=loaded)
        if self.arrays[name][0].dtype == types.float64:
            return value
        return self.builder.fpext(value, ir.VectorType(ir.DoubleType(), count) if count > 1 else ir.DoubleType())

    def store(self, name: str, at: Any, value: Any, count: int = LANES) -> None:
        pointer, stored = self.address(name, at, count)
        if self.arrays[name][0].dtype != types.float64:
            value = self.builder.fptrunc(value, stored)
        if name != "o" or count == 1 or not self.streaming or self.staging is not None:
            self.builder.store(value, pointer, align=self.alignment(name))
        else:
            self._store_streaming(value, pointer)

    def _store_streaming(self, value: Any, pointer: Any) -> None:
        """A non-temporal store, to STREAM_ALIGN bytes: LLVM splits a vector into 16-byte
        stores (MOVNTPS/MOVNTPD), as kernels.cpp's store_packed."""
        store = self.builder.store(value, pointer, align=STREAM_ALIGN)
        store.set_metadata("nontemporal", self.builder.module.add_metadata([ir.Constant(self.i32, 1)]))

    def itemsize(self, name: str) -> Any:
        return self.constant(self.arrays[name][0].dtype.bitwidth // 8)

    def rows_aligned(self, jo: Any, n: Any) -> Any:
        """Whether rows of n positions jo apart in `o` all start and end where the first
        row's alignment does to STREAM_ALIGN bytes."""
        builder = self.builder
        bytes_apart = builder.mul(builder.or_(jo, n), self.itemsize("o"))
        return builder.icmp_signed("==", builder.and_(bytes_apart, self.constant(STREAM_ALIGN - 1)), self.constant(0))

    def streams_out(self, io: Any, rows: Any) -> Any:
        """Whether the vector stores of `o` from io may stream, as kernels.cpp's
        streams_to_out and row_range have it: an output of STREAMING_STORES_MIN bytes or
        more that is neither p nor t (in place, each streamed store would hit a line just
        read), its first position aligned to STREAM_ALIGN, and `rows` (the caller's
        condition on its rows: every line streamed whole, as a line stored plainly in
        part, by a masked store, and streamed in part is read in and written twice: 2**24
        float32 of rows of 100, mse_and_grad(axis=-1, out=) 13 ms against 5). None off
        x86-64."""
        if not _STREAMS:
            return None
        builder = self.builder
        out, data = self._array("o"), {name: self.data(name) for name in ("o", "p", "t")}
        large = builder.icmp_signed(
            ">=", builder.mul(out.nitems, self.itemsize("o")), self.constant(STREAMING_STORES_MIN)
        )
        first = builder.add(builder.ptrtoint(data["o"], self.i64), builder.mul(io, self.itemsize("o")))
        aligned = builder.icmp_signed("==", builder.and_(first, self.constant(STREAM_ALIGN - 1)), self.constant(0))
        not_input = builder.and_(
            builder.icmp_unsigned("!=", data["o"], builder.bitcast(data["p"], data["o"].type)),
            builder.icmp_unsigned("!=", data["o"], builder.bitcast(data["t"], data["o"].type)),
        )
        return builder.and_(builder.and_(large, aligned), builder.and_(not_input, rows))

    def with_streams(self, io: Any, rows: Any, emit: Callable[[], None], fenced: bool = True) -> None:
        """emit() twice, its stores of `o` streaming where streams_out holds and plain
        where not (a branch a store cost rows of 16 and 100 3-4% in cache), the streamed
        ones fenced (_sfence) unless the caller fences them later."""
        streams = self.streams_out(io, rows)
        if streams is None:
            emit()
            return
        with self.builder.if_else(streams) as (streaming, plain):
            with streaming:
                self.streamed(emit, fenced)
            with plain:
                emit()

    def streamed(self, emit: Callable[[], None], fenced: bool = True) -> None:
        """emit() with its stores of `o` streaming, fenced (_sfence) unless the caller
        fences them later."""
        self.streaming = True
        emit()
        if fenced:
            _sfence(self.builder)
        self.streaming = False

    def staging_buffer(self, count: int) -> Any:
        """A buffer of `count` elements of `o`'s type for stores to be streamed later."""
        element = self.element("o")
        buffer = cgutils.alloca_once(self.builder, ir.ArrayType(element, count))  # type: ignore[no-untyped-call]
        buffer.align = 32
        return self.builder.bitcast(buffer, element.as_pointer())

    def stream_staged(self, source: Any, at: Any, count: Any) -> None:
        """Staged elements [source, source + count) streamed to `o` from `at` (aligned
        to STREAM_ALIGN; count elements a whole number of STREAM_ALIGN-byte pieces), a
        piece at a time: the streamed stores are of a piece whatever the vector."""
        builder, staging = self.builder, self.staging
        self.staging = None
        piece = self.piece("o")
        vector = ir.VectorType(self.element("o"), piece)
        with cgutils.for_range(builder, builder.udiv(count, self.constant(piece))) as loop:
            offset = builder.mul(loop.index, self.constant(piece))
            read = builder.bitcast(builder.gep(staging, [builder.add(source, offset)]), vector.as_pointer())
            self._store_streaming(
                builder.load(read, align=self.alignment("o")), self.address("o", builder.add(at, offset), piece)[0]
            )
        self.staging = staging

    def store_tail(self, name: str, at: Any, value: Any, lanes: Any, size: Any) -> None:
        """store_lanes of a row's last `size` positions (the first lanes); streamed, in
        16-byte pieces (size is a multiple of them where rows stream unstaged)."""
        if name != "o" or not self.streaming or self.staging is not None:
            self.store_lanes(name, at, value, lanes)
            return
        builder = self.builder
        _, stored = self.address(name, at, LANES)
        if self.arrays[name][0].dtype != types.float64:
            value = builder.fptrunc(value, stored)
        piece = self.piece(name)
        for first in range(0, LANES, piece):
            with builder.if_then(builder.icmp_signed(">", size, self.constant(first))):
                part = builder.shuffle_vector(
                    value, value, ir.Constant(ir.VectorType(self.i32, piece), list(range(first, first + piece)))
                )
                self._store_streaming(part, self.address(name, builder.add(at, self.constant(first)), piece)[0])

    def store_lanes(self, name: str, at: Any, value: Any, lanes: Any) -> None:
        """store of the LANES lanes where `lanes` (a vector of i1) is true; memory under
        the others is not touched, so a row's last group never writes into the next row
        (another thread's) or past the array's end."""
        pointer, stored = self.address(name, at, LANES)
        if self.arrays[name][0].dtype != types.float64:
            value = self.builder.fptrunc(value, stored)
        mask_type = ir.VectorType(ir.IntType(1), LANES)
        signature = ir.FunctionType(ir.VoidType(), [stored, pointer.type, self.i32, mask_type])
        element = "f64" if self.arrays[name][0].dtype == types.float64 else "f32"
        masked_store = f"llvm.masked.store.v{LANES}{element}.p0"
        function = cgutils.get_or_insert_function(self.builder.module, signature, masked_store)  # type: ignore[no-untyped-call]
        self.builder.call(function, [value, pointer, ir.Constant(self.i32, self.alignment(name)), lanes])

    def splat(self, value: Any) -> Any:
        vector = ir.Constant(self.lanes, None)
        for lane in range(LANES):
            vector = self.builder.insert_element(vector, value, ir.Constant(self.i32, lane))
        return vector

    def prefetch(self, name: str, at: Any) -> None:  # a read, kept in every cache level
        pointer, _ = self.address(name, self.builder.add(at, self.constant(PREFETCH_DISTANCE)), 1)
        flags = [ir.Constant(self.i32, v) for v in (0, 3, 1)]
        self.builder.call(self._prefetch, [self.builder.bitcast(pointer, self._byte_pointer), *flags])


def _sfence(builder: Any) -> None:
    """x86's sfence: streamed stores are weakly ordered, and the threads that made them
    hand the output on with plain ones."""
    signature = ir.FunctionType(ir.VoidType(), [])
    sfence = cgutils.get_or_insert_function(builder.module, signature, "llvm.x86.sse.sfence")  # type: ignore[no-untyped-call]
    builder.call(sfence, [])


def _fence_streams(typingctx: Any) -> tuple[Any, Callable[..., Any]]:
    """_sfence from compiled code, after stores that streamed unfenced (off x86-64, where
    none stream, nothing)."""

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        if _STREAMS:
            _sfence(builder)
        return context.get_dummy_value()

    return types.none(), codegen


fence_streams: Any = intrinsic(_fence_streams)


def _position_values(builder: Any, kind: int, d: Any, weight: Any, factor: Any) -> tuple[Any, Any]:
    """position.hpp's arithmetic on a group of differences d (weights `weight`, or None;
    gradient factor `factor`): what the pass stores (None where it stores nothing), and
    what it adds to the lanes (None where it sums nothing)."""
    wd = d if weight is None else builder.fmul(weight, d)  # position.hpp's weight * d
    stored = None
    if kind == SQUARED_ERROR:
        stored = builder.fmul(wd, d)
    elif writes(kind):  # scale * d where there is no weight, as run_packed
        stored = builder.fmul(factor if weight is None else builder.fmul(factor, weight), d)
    added = None
    if reduces(kind):
        added = wd if kind == REDUCE_DIFFERENCE else builder.fmul(wd, d)
    return stored, added


def _group_loop(
    em: _Emitter,
    kind: int,
    across: bool,
    n_groups: Any,
    ip: Any,
    io: Any,
    factor: Any,
    sums: Any,
    target_at: Callable[[Any], Any],
    weight_at: Callable[[Any], Any] | None,
    weight_sums: Any = None,
) -> None:
    """The loop over n_groups groups of LANES positions from ip (and io), the targets and
    weights of position i from target_at(i) and weight_at(i): each group's terms added to
    the vector at `sums` (across: the outputs' own sums, and factors, in arrays), and its
    weights to the vector at `weight_sums` where there is one."""
    builder = em.builder
    with cgutils.for_range(builder, n_groups) as loop:
        i = builder.mul(loop.index, em.constant(LANES))
        group_factor, group_sums = factor, sums
        if across:  # outputs i to i + 7: their factors, and their sums in memory
            group_factor = em.load("factors", i)
            group_sums, _ = em.address("sums", i, LANES)
        else:
            em.prefetch("p", builder.add(ip, i))
        d = builder.fsub(em.load("p", builder.add(ip, i)), target_at(i))
        weights = None if weight_at is None else weight_at(i)
        stored, added = _position_values(builder, kind, d, weights, group_factor)
        if stored is not None:
            em.store("o", builder.add(io, i), stored)
        if added is not None:
            builder.store(builder.fadd(builder.load(group_sums, align=8), added), group_sums, align=8)
        if weight_sums is not None:
            builder.store(builder.fadd(builder.load(weight_sums), weights), weight_sums)


def _per_operand_stride(em: _Emitter, stride: Any, one: Callable[[], None], along: Callable[[], None]) -> None:
    """one() where `stride` (of the targets or the weights) is 0, else along()."""
    with em.builder.if_else(em.builder.icmp_signed("==", stride, em.constant(0))) as (is_one, is_along):
        with is_one:
            one()
        with is_along:
            along()


@functools.cache
def _vector_groups(kind: int, weighted: bool, across: bool, streams: bool = False) -> Any:
    """An intrinsic groups(p, ip, t, it, w, iw, sw, out, io, factor, n, lanes, st) for one
    pass: the first n - n % 8 positions of a run (p and out contiguous from ip and io;
    targets from it, stride st, and weights from iw, stride sw: each 0 or 1), position i
    to lane i % 8, the lanes starting from the tuple `lanes`; returns the lanes.
    `across`: the positions are neighbouring outputs instead (across_block), position i
    adding to the float64 array lanes[i], its gradient factor factor[i] (an array);
    returns nothing. `streams` (a pass that writes): its stores of `out` stream where
    _Emitter.streams_out allows, as kernels.cpp's across_rows streams whole groups of rows."""

    @intrinsic
    def groups(
        typingctx: Any,
        p: Any,
        ip: Any,
        t: Any,
        it: Any,
        w: Any,
        iw: Any,
        sw: Any,
        out: Any,
        io: Any,
        factor: Any,
        n: Any,
        lanes: Any,
        st: Any,
    ) -> tuple[Any, Callable[..., Any]]:
        returned = types.none if across else _LANE_SUMS
        signature = returned(p, ip, t, it, w, iw, sw, out, io, factor, n, lanes, st)

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            # (type, value) by name: p, t, w, out and, across, the outputs' factors and sums
            names = {"p": 0, "t": 2, "w": 4, "o": 7, "factors": 9, "sums": 11}
            em = _Emitter(context, builder, {name: (signature.args[k], args[k]) for name, k in names.items()})

            def scalar(k: int, to: Any) -> Any:
                return context.cast(builder, args[k], signature.args[k], to)

            ip, it, iw, io, n, sw, st = (scalar(k, types.int64) for k in (1, 3, 5, 8, 10, 6, 12))
            factor, sums = None, None  # across: per group of outputs
            if not across:
                factor = em.splat(scalar(9, types.float64))
                initial = ir.Constant(em.lanes, None)
                for lane in range(LANES):
                    lane_sum = builder.extract_value(args[11], lane)
                    initial = builder.insert_element(initial, lane_sum, ir.Constant(em.i32, lane))
                sums = cgutils.alloca_once(builder, em.lanes)  # type: ignore[no-untyped-call]
                builder.store(initial, sums)
            n_groups = builder.udiv(n, em.constant(LANES))

            def targets_along(i: Any) -> Any:
                if not across:
                    em.prefetch("t", builder.add(it, i))
                return em.load("t", builder.add(it, i))

            def loop(weight_at: Callable[[Any], Any] | None) -> None:
                def emit(target_at: Callable[[Any], Any]) -> Callable[[], None]:
                    return lambda: _group_loop(em, kind, across, n_groups, ip, io, factor, sums, target_at, weight_at)

                _per_operand_stride(em, st, emit(lambda i: em.splat(em.load("t", it, 1))), emit(targets_along))

            def loops() -> None:
                if not weighted:
                    loop(None)
                else:
                    _per_operand_stride(
                        em,
                        sw,
                        lambda: loop(lambda i: em.splat(em.load("w", iw, 1))),
                        lambda: loop(lambda i: em.load("w", builder.add(iw, i))),
                    )

            if streams and writes(kind):  # the run's stores in one span, fenced by the caller
                whole_groups = builder.icmp_signed("==", builder.urem(n, em.constant(LANES)), em.constant(0))
                em.with_streams(io, whole_groups, loops, fenced=False)
            else:
                loops()
            if across:
                return context.get_dummy_value()
            total = builder.load(sums)
            values = [builder.extract_element(total, ir.Constant(em.i32, lane)) for lane in range(LANES)]
            return context.make_tuple(builder, signature.return_type, values)

        return signature, codegen

    return groups


class _RowsCode:
    """The IR of _vector_rows' intrinsic for one call site: see there. `em` holds the
    arrays p, t, w, sums, finished and divisors; the rest are int64 values."""

    def __init__(
        self, em: _Emitter, kind: int, weighted: bool, weight_sums: bool, divided: bool, scalars: dict[str, Any]
    ) -> None:
        self.em, self.builder, self.kind, self.weighted, self.divided = em, em.builder, kind, weighted, divided
        self.s = scalars  # ip, jp, it, jt, st, iw, jw, sw, il, jl, count, n (of the first row)
        builder, i64 = self.builder, em.i64
        self.zero = em.constant(0)
        self.n_groups = builder.udiv(scalars["n"], em.constant(LANES))
        self.at = builder.mul(self.n_groups, em.constant(LANES))  # the tail's first position
        self.tail_size = builder.sub(scalars["n"], self.at)
        splat_tail = ir.Constant(ir.VectorType(i64, LANES), None)
        for lane in range(LANES):
            splat_tail = builder.insert_element(splat_tail, self.tail_size, ir.Constant(em.i32, lane))
        self.in_row = builder.icmp_unsigned("<", self.constants(i64, list(range(LANES))), splat_tail)
        self.no_terms = ir.Constant(em.lanes, [0.0] * LANES)
        self.row_sums = [cgutils.alloca_once(builder, em.lanes) for _ in range(KROWS)]  # type: ignore[no-untyped-call]
        # Each row's weights summed as its loss is (weight_sums: see _vector_rows), in lanes of their own.
        self.weight_sums = (
            [cgutils.alloca_once(builder, em.lanes) for _ in range(KROWS)]  # type: ignore[no-untyped-call]
            if weight_sums
            else [None] * KROWS
        )
        self.gathered = cgutils.alloca_once(builder, em.lanes)  # type: ignore[no-untyped-call]
        # A group of short rows' gradient, streamed from here (lockstep).
        self.staged = em.staging_buffer(KROWS * SHORT_ROW_GROUPS * LANES) if writes(kind) and _STREAMS else None
        self.last = {name: builder.sub(em.size(name), em.constant(1)) for name in ("sums", "finished", "divisors")}
        # Per operand of the variant being emitted: whether its rows are all one row (step
        # 0: a target per column), and that row's tail, read once.
        self.shared: dict[str, Any] = {}
        self.shared_tails: dict[str, Any] = {}
        self.resume: Any = None  # the first row the streamed variant left (emit_writing)

    def constants(self, element: Any, values: list[Any]) -> Any:
        return ir.Constant(ir.VectorType(element, len(values)), values)

    def shuffle(self, a: Any, b: Any, indices: list[int]) -> Any:
        return self.builder.shuffle_vector(a, b, self.constants(self.em.i32, indices))

    def streamable(self) -> Any:
        """The rows whose gradient streams (_Emitter.streams_out): rows aligned as the
        first (their last positions stored in 16-byte pieces: _Emitter.store_tail), or
        short rows one after another, each group of KROWS of them a span of whole 16-byte
        pieces, staged and then streamed (lockstep), as kernels.cpp's gradient_row_group
        stores a group of rows."""
        builder, em, s = self.builder, self.em, self.s
        contiguous = builder.icmp_signed("==", s["jo"], s["n"])
        short = builder.icmp_unsigned("<", self.n_groups, em.constant(SHORT_ROW_GROUPS))
        return builder.or_(self.rows_aligned(), builder.and_(contiguous, short))

    def rows_aligned(self) -> Any:
        """_Emitter.rows_aligned of the rows (one row has no step: runs of rows whose
        targets are copied side by side come as one)."""
        builder, s = self.builder, self.s
        one_row = builder.icmp_signed("==", s["count"], self.em.constant(1))
        return self.em.rows_aligned(builder.select(one_row, self.zero, s["jo"]), s["n"])

    def emit(self) -> None:
        """The loops of each kind of targets and weights (one per row, or along it)."""
        em = self.em

        def with_weights(one_target: bool) -> Callable[[], None]:
            if not self.weighted or self.weight_sums[0] is not None:  # weights summed are along the rows
                return lambda: self.variant(one_target, False)
            return lambda: _per_operand_stride(
                em, self.s["sw"], lambda: self.variant(one_target, True), lambda: self.variant(one_target, False)
            )

        _per_operand_stride(em, self.s["st"], with_weights(True), with_weights(False))

    def emit_writing(self) -> None:
        """emit() for a pass that writes: where its gradient streams (streamable,
        _Emitter.streams_out), a streamed variant first, fenced; then the plain one, for
        the rows the streamed one left (none; the unaligned rows after the last group of
        short rows; or all, where it formed no group and the rows are not aligned). The
        streamed variant runs on outputs of STREAMING_STORES_MIN bytes or more,
        memory-bound, so it has fewer loops: of its own only for
        STREAMED_SPECIALIZED_GROUPS numbers of groups, and no plain one_by_one. With a
        streamed and a plain one_by_one there and a loop for every number of groups,
        each writing pass took a third longer to compile (the first fused loss per row
        176 s, against about 134 now; the CI run took over 30 minutes). Without a loop
        of their own for rows of one group, 2**24 float32 fused rows of 10 ran at 0.82
        of C++'s speed, not 0.93."""
        builder, em = self.builder, self.em
        streams = em.streams_out(self.s["io"], self.streamable())
        if streams is not None:
            self.resume = cgutils.alloca_once_value(builder, self.zero)  # type: ignore[no-untyped-call]
            with builder.if_then(streams):
                em.streamed(self.emit)
        self.emit()

    def variant(self, one_target: bool, one_weight: bool) -> None:
        builder, em, s, zero = self.builder, self.em, self.s, self.zero
        # The rows whose tails every array goes on past, read whole: a prefix of them,
        # found once. A row shared by all rows has its tail read before them, once.
        safe = s["count"]
        for name, start, step in self.along(one_target, one_weight):
            self.shared[name] = builder.icmp_signed("==", step, zero)
            self.shared_tails[name] = self.read_checked({name: builder.add(start, self.at)})[name]
            room = builder.sub(builder.sub(em.size(name), em.constant(LANES)), builder.add(start, self.at))
            ahead = builder.icmp_signed(">", step, zero)
            after = builder.add(builder.sdiv(room, builder.select(ahead, step, em.constant(1))), em.constant(1))
            fits = builder.or_(builder.icmp_signed(">=", room, zero), self.shared[name])
            limit = builder.select(fits, builder.select(ahead, after, s["count"]), zero)
            limit = builder.select(builder.icmp_signed("==", self.tail_size, zero), s["count"], limit)
            safe = builder.select(builder.icmp_signed("<", limit, safe), limit, safe)
        # Short rows KROWS at a time, their groups side by side; the rest (and longer
        # rows) one by one. Where the variant is a common one, rows of fewer than
        # SPECIALIZED_GROUPS groups have a loop for each number of groups (a constant
        # there, as C++'s template K): their groups unrolled; streamed, only rows of
        # fewer than STREAMED_SPECIALIZED_GROUPS groups (emit_writing).
        short = builder.icmp_unsigned("<", self.n_groups, em.constant(SHORT_ROW_GROUPS))
        row_groups = builder.select(short, builder.sdiv(safe, em.constant(KROWS)), zero)
        first = builder.mul(row_groups, em.constant(KROWS))
        if self.resume is not None and not em.streaming:  # go on from the streamed rows
            resume = builder.load(self.resume)
            resumed = builder.icmp_signed(">", resume, zero)
            row_groups = builder.select(resumed, zero, row_groups)
            first = builder.select(resumed, resume, first)
        common = not self.weighted or (self.kind != REDUCE_DIFFERENCE and not one_target)
        if not common:
            self.lockstep(row_groups, one_target, one_weight, None)
        else:
            done = builder.append_basic_block("lockstep_done")
            generic = builder.append_basic_block("lockstep_any_groups")
            switch = builder.switch(self.n_groups, generic)
            for groups in range(STREAMED_SPECIALIZED_GROUPS if em.streaming else SPECIALIZED_GROUPS):
                block = builder.append_basic_block(f"lockstep_{groups}_groups")
                switch.add_case(em.constant(groups), block)
                builder.position_at_end(block)
                if groups == 0:
                    self.packed_or_lockstep(row_groups, one_target, one_weight)
                else:
                    self.lockstep(row_groups, one_target, one_weight, groups)
                builder.branch(done)
            builder.position_at_end(generic)
            self.lockstep(row_groups, one_target, one_weight, None)
            builder.branch(done)
            builder.position_at_end(done)
        if not em.streaming:
            self.one_by_one(first, one_target, one_weight)
            return
        # Streamed, rows one by one stream where each is aligned; else they are the few
        # short rows after the last group, left to the plain variant (emit_writing).
        with builder.if_else(self.rows_aligned()) as (aligned, not_aligned):
            with aligned:
                self.one_by_one(first, one_target, one_weight)
                builder.store(self.s["count"], self.resume)
            with not_aligned:
                builder.store(first, self.resume)

    def along(self, one_target: bool, one_weight: bool) -> list[tuple[str, Any, Any]]:
        """(name, first row's offset, row step) of each operand read along the rows."""
        s = self.s
        operands = [("p", s["ip"], s["jp"])]
        if not one_target:
            operands.append(("t", s["it"], s["jt"]))
        if self.weighted and not one_weight:
            operands.append(("w", s["iw"], s["jw"]))
        return operands

    def read_whole(self, starts: dict[str, Any]) -> dict[str, Any]:
        return {name: self.em.load(name, start) for name, start in starts.items()}

    def read_checked(self, starts: dict[str, Any]) -> dict[str, Any]:
        """The tail as read_whole where every array goes on past it, else the row's
        positions one by one (0 past them): the last rows of an array."""
        builder, em = self.builder, self.em
        whole = ir.Constant(ir.IntType(1), 1)
        for name, start in starts.items():
            whole = builder.and_(
                whole, builder.icmp_signed("<=", builder.add(start, em.constant(LANES)), em.size(name))
            )
        with builder.if_else(whole, likely=True) as (in_bounds, at_the_end):
            with in_bounds:
                whole_values = self.read_whole(starts)
                whole_block = builder.block
            with at_the_end:
                lanes_pointer = builder.bitcast(self.gathered, ir.DoubleType().as_pointer())
                gathered_values = {}
                for name, start in starts.items():
                    builder.store(self.no_terms, self.gathered)
                    with cgutils.for_range(builder, self.tail_size) as loop:
                        value = em.load(name, builder.add(start, loop.index), 1)
                        builder.store(value, builder.gep(lanes_pointer, [loop.index]))
                    gathered_values[name] = builder.load(self.gathered)
                gathered_block = builder.block
        values = {}
        for name in starts:
            values[name] = builder.phi(em.lanes)
            values[name].add_incoming(whole_values[name], whole_block)
            values[name].add_incoming(gathered_values[name], gathered_block)
        return values

    def row_scalars(self, r: Any, one_target: bool, one_weight: bool) -> tuple[Any, ...]:
        """Row r's offsets into p, t, w and out, its one target and weight where the row
        has one, and its gradient factor (where the pass writes); None where not."""
        builder, em, s = self.builder, self.em, self.s
        ip, it = builder.add(s["ip"], builder.mul(r, s["jp"])), builder.add(s["it"], builder.mul(r, s["jt"]))
        iw, io = builder.add(s["iw"], builder.mul(r, s["jw"])), builder.add(s["io"], builder.mul(r, s["jo"]))
        target = em.load("t", it, 1) if one_target else None
        weight = em.load("w", iw, 1) if self.weighted and one_weight else None
        factor = None
        if writes(self.kind):  # scale[i] if has_scale else 0.0, as contiguous_rows
            value = em.load("scale", builder.add(s["i_factor"], builder.mul(r, s["j_factor"])), 1)
            has_scale = builder.icmp_signed("!=", s["has_scale"], self.zero)
            factor = builder.select(has_scale, value, ir.Constant(ir.DoubleType(), 0.0))
        return ip, it, iw, io, target, weight, factor

    def row(self, r: Any, one_target: bool, one_weight: bool) -> tuple[Any, ...]:
        """row_scalars, its target, weight and factor splat over LANES lanes."""
        *offsets, target, weight, factor = self.row_scalars(r, one_target, one_weight)
        return (*offsets, *(None if value is None else self.em.splat(value) for value in (target, weight, factor)))

    def add_group(self, row: tuple[Any, ...], i: Any, lanes: Any, weight_lanes: Any) -> None:
        """The row's group of LANES positions from i: its gradient stored, its terms added
        to the lanes at `lanes` (and its weights to those at weight_lanes, where not None)."""
        builder, em = self.builder, self.em
        ip, it, iw, io, target, weight, factor = row
        d = builder.fsub(
            em.load("p", builder.add(ip, i)), em.load("t", builder.add(it, i)) if target is None else target
        )
        weights = em.load("w", builder.add(iw, i)) if self.weighted and weight is None else weight
        stored, added = _position_values(builder, self.kind, d, weights, factor)
        if stored is not None:
            em.store("o", builder.add(io, i), stored)
        if added is not None:
            builder.store(builder.fadd(builder.load(lanes), added), lanes)
        if weight_lanes is not None:
            builder.store(builder.fadd(builder.load(weight_lanes), weights), weight_lanes)

    def add_tail(self, row: tuple[Any, ...], at: Any, read: Callable[..., Any], lanes: Any, weight_lanes: Any) -> None:
        """The row's last n % LANES positions (from `at`, read by `read`), one group whose
        lanes past the row are neither stored nor added (they add 0) to the lanes at
        `lanes` (and weight_lanes, as add_group)."""
        builder, em = self.builder, self.em
        ip, it, iw, io, target, weight, factor = row
        starts = {"p": builder.add(ip, at)}
        if target is None:
            starts["t"] = builder.add(it, at)
        if self.weighted and weight is None:
            starts["w"] = builder.add(iw, at)
        values = self.tail_values(starts, read)
        weights = (values["w"] if weight is None else weight) if self.weighted else None
        d = builder.fsub(values["p"], values["t"] if target is None else target)
        stored, added = _position_values(builder, self.kind, d, weights, factor)
        if stored is not None:
            em.store_tail("o", builder.add(io, at), stored, self.in_row, self.tail_size)
        if added is not None:
            added = builder.select(self.in_row, added, self.no_terms)  # a select: inf * 0 would be NaN
            builder.store(builder.fadd(builder.load(lanes), added), lanes)
        if weight_lanes is not None:
            weights = builder.select(self.in_row, weights, self.no_terms)
            builder.store(builder.fadd(builder.load(weight_lanes), weights), weight_lanes)

    def tail_values(self, starts: dict[str, Any], read: Callable[..., Any]) -> dict[str, Any]:
        """A row's tail of each operand from its start: the one row's (read once, see
        variant) where all rows share it, else read by `read`."""
        builder, values = self.builder, {}
        for name, start in starts.items():
            with builder.if_else(self.shared[name]) as (in_shared, in_own):
                with in_shared:
                    shared_block = builder.block
                with in_own:
                    own = read({name: start})[name]
                    own_block = builder.block
            values[name] = builder.phi(self.em.lanes)
            values[name].add_incoming(self.shared_tails[name], shared_block)
            values[name].add_incoming(own, own_block)
        return values

    def factors_first(
        self, rows: list[tuple[Any, ...]], n_groups: Any, at: Any, read: Callable[..., Any]
    ) -> tuple[list[tuple[Any, ...]], Any]:
        """Where a pass that writes sums the weights (weight_sums): the rows' weights
        summed ahead of their terms, in the weight lanes, as add_group and add_tail sum
        them; returns the rows with their gradient factor, 2 / sum, in place of scale's,
        and the sums (a vector of a lane a row)."""
        builder, em = self.builder, self.em
        lanes = self.weight_sums[: len(rows)]
        for weight_lanes in lanes:
            builder.store(self.no_terms, weight_lanes)
        with cgutils.for_range(builder, n_groups) as loop:
            i = builder.mul(loop.index, em.constant(LANES))
            for row, weight_lanes in zip(rows, lanes, strict=True):
                weights = em.load("w", builder.add(row[2], i))
                builder.store(builder.fadd(builder.load(weight_lanes), weights), weight_lanes)
        with builder.if_then(builder.icmp_signed(">", self.tail_size, self.zero)):
            for row, weight_lanes in zip(rows, lanes, strict=True):
                weights = self.tail_values({"w": builder.add(row[2], at)}, read)["w"]
                weights = builder.select(self.in_row, weights, self.no_terms)
                builder.store(builder.fadd(builder.load(weight_lanes), weights), weight_lanes)
        totals = self.side_by_side(lanes) if len(rows) == KROWS else self.row_total(lanes[0])
        factors = builder.fdiv(self.constants(ir.DoubleType(), [2.0] * len(rows)), totals)
        factor_of = [em.splat(builder.extract_element(factors, ir.Constant(em.i32, g))) for g in range(len(rows))]
        return [(*row[:6], factor) for row, factor in zip(rows, factor_of, strict=True)], totals

    def neighbours(self, a: Any, b: Any) -> Any:  # (a0 + a1, a2 + a3, ..., b0 + b1, b2 + b3, ...)
        width = a.type.count
        evens, odds = list(range(0, 2 * width, 2)), list(range(1, 2 * width, 2))
        return self.builder.fadd(self.shuffle(a, b, evens), self.shuffle(a, b, odds))

    def pairs(self, lanes: Any) -> Any:  # (l0 + l1, l2 + l3, l4 + l5, l6 + l7)
        return self.builder.fadd(self.shuffle(lanes, lanes, [0, 2, 4, 6]), self.shuffle(lanes, lanes, [1, 3, 5, 7]))

    def packed_or_lockstep(self, row_groups: Any, one_target: bool, one_weight: bool) -> None:
        """Rows of fewer than LANES positions: packed where they are not empty and each
        operand read or written along the rows goes on from one row into the next (rows n
        apart), else lockstep's."""
        builder, em, s = self.builder, self.em, self.s
        n = s["n"]
        packable = builder.icmp_signed("!=", n, self.zero)
        strides = [s["jp"]] + ([] if one_target else [s["jt"]])
        strides += [s["jw"]] if self.weighted and not one_weight else []
        strides += [s["jo"]] if writes(self.kind) else []
        for stride in strides:
            packable = builder.and_(packable, builder.icmp_signed("==", stride, n))
        with builder.if_else(packable) as (is_packed, is_not):
            with is_packed:
                done = builder.append_basic_block("packed_done")
                switch = builder.switch(n, done)
                for size in range(1, LANES):
                    block = builder.append_basic_block(f"packed_{size}")
                    switch.add_case(em.constant(size), block)
                    builder.position_at_end(block)
                    self.packed(row_groups, one_target, one_weight, size)
                    builder.branch(done)
                builder.position_at_end(done)
            with is_not:
                self.lockstep(row_groups, one_target, one_weight, 0)

    def packed(self, row_groups: Any, one_target: bool, one_weight: bool, n: int) -> None:
        """Rows [0, KROWS * row_groups) of n positions, side by side in memory: a group of
        KROWS rows is one vector of KROWS * n positions, read, computed and stored at once
        (each position taking its row's target, weight and factor), as cpp/kernels.cpp's
        fixed_row_group and gradient_row_group; position i of each row is then lane i of
        the row's sum, combined in combine_lanes' order (a lane past the row would add 0
        to a sum that is never -0: it is left out)."""
        builder, em = self.builder, self.em
        width, double = KROWS * n, ir.DoubleType()

        def spread(values: list[Any]) -> Any:  # one value a row, over the row's n positions
            vector = ir.Constant(ir.VectorType(double, KROWS), None)
            for g, value in enumerate(values):
                vector = builder.insert_element(vector, value, ir.Constant(em.i32, g))
            return self.shuffle(vector, vector, [g for g in range(KROWS) for _ in range(n)])

        def add(a: Any, b: Any) -> Any:
            return a if b is None else builder.fadd(a, b)

        def totals(values: Any) -> Any:  # each row's
            zeros = self.constants(double, [0.0] * KROWS)  # a lane starts at +0
            lanes = [
                builder.fadd(zeros, self.shuffle(values, values, [g * n + i for g in range(KROWS)])) for i in range(n)
            ] + [None] * (LANES - n)
            halves = [add(add(lanes[h], lanes[h + 1]), add(lanes[h + 2], lanes[h + 3])) for h in (0, 4)]
            return add(halves[0], halves[1])

        with cgutils.for_range(builder, row_groups) as group:
            first = builder.mul(group.index, em.constant(KROWS))
            rows = [self.row_scalars(builder.add(first, em.constant(g)), one_target, one_weight) for g in range(KROWS)]
            ip, it, iw, io = rows[0][:4]
            target = spread([row[4] for row in rows]) if one_target else em.load("t", it, width)
            d = builder.fsub(em.load("p", ip, width), target)
            weights = None
            if self.weighted:
                weights = spread([row[5] for row in rows]) if one_weight else em.load("w", iw, width)
            weight_totals = totals(weights) if self.weight_sums[0] is not None else None
            factor = None
            if writes(self.kind):
                factors = [row[6] for row in rows]
                if weight_totals is not None:  # 2 / each row's weight sum
                    quotients = builder.fdiv(self.constants(double, [2.0] * KROWS), weight_totals)
                    factors = [builder.extract_element(quotients, ir.Constant(em.i32, g)) for g in range(KROWS)]
                factor = spread(factors)
            stored, added = _position_values(builder, self.kind, d, weights, factor)
            if stored is not None:
                em.store("o", io, stored, width)
            if added is not None:
                self.put_losses(first, totals(added), KROWS, weight_totals)

    def lockstep(self, row_groups: Any, one_target: bool, one_weight: bool, groups: int | None) -> None:
        """Rows [0, KROWS * row_groups), KROWS at a time, their groups side by side
        (`groups` of them, where a constant), their lanes combined side by side."""
        builder, em = self.builder, self.em
        n_groups = self.n_groups if groups is None else em.constant(groups)
        at = self.at if groups is None else em.constant(groups * LANES)
        staged = em.streaming  # a pass that writes, its gradient streamed (streamable)
        with cgutils.for_range(builder, row_groups) as group:
            first = builder.mul(group.index, em.constant(KROWS))
            rows = [self.row(builder.add(first, em.constant(g)), one_target, one_weight) for g in range(KROWS)]
            io_first = rows[0][3]
            if staged:  # row g's gradient at g * n of the staging buffer
                rows = [(*row[:3], builder.mul(em.constant(g), self.s["n"]), *row[4:]) for g, row in enumerate(rows)]
                em.staging = self.staged
            lane_sets = list(zip(rows, self.row_sums, self.weight_sums, strict=True))
            weight_totals = None
            if self.weight_sums[0] is not None and writes(self.kind):
                rows, weight_totals = self.factors_first(rows, n_groups, at, self.read_whole)
                lane_sets = [(row, lanes, None) for row, lanes in zip(rows, self.row_sums, strict=True)]
            for _, *lanes in lane_sets:
                for each in lanes:
                    if each is not None:
                        builder.store(self.no_terms, each)
            with cgutils.for_range(builder, n_groups) as loop:
                i = builder.mul(loop.index, em.constant(LANES))
                for row, lanes, weight_lanes in lane_sets:
                    self.add_group(row, i, lanes, weight_lanes)
            with builder.if_then(builder.icmp_signed(">", self.tail_size, self.zero)):
                for row, lanes, weight_lanes in lane_sets:
                    self.add_tail(row, at, self.read_whole, lanes, weight_lanes)
            if staged:
                self.stream_group(io_first)
            if reduces(self.kind):
                if self.weight_sums[0] is not None and weight_totals is None:
                    weight_totals = self.side_by_side(self.weight_sums)
                self.put_losses(first, self.side_by_side(self.row_sums), KROWS, weight_totals)

    def stream_group(self, io: Any) -> None:
        """The staged gradient of KROWS rows streamed to `o` from io, the first row's
        offset: as one span where the rows lie one after another, else row by row (each
        aligned); one loop for both."""
        builder, em, n, jo = self.builder, self.em, self.s["n"], self.s["jo"]
        one_span = builder.icmp_signed("==", jo, n)
        spans = builder.select(one_span, em.constant(1), em.constant(KROWS))
        span = builder.select(one_span, builder.mul(n, em.constant(KROWS)), n)
        with cgutils.for_range(builder, spans) as loop:
            em.stream_staged(builder.mul(loop.index, n), builder.add(io, builder.mul(loop.index, jo)), span)
        em.staging = None

    def side_by_side(self, row_lanes: list[Any]) -> Any:
        """combine_lanes of each of KROWS rows' lanes (at row_lanes), side by side:
        ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)), a level at a time across the
        rows: eight shuffles in all, where combining each row's lanes first took twenty,
        and they held up the loop (rows of 8: 0.65 of C++'s speed)."""
        builder = self.builder
        lanes = [builder.load(pointer) for pointer in row_lanes]
        quarters = self.neighbours(self.neighbours(lanes[0], lanes[1]), self.neighbours(lanes[2], lanes[3]))
        halves = [self.shuffle(quarters, quarters, list(range(h, 2 * KROWS, 2))) for h in (0, 1)]
        return builder.fadd(halves[0], halves[1])

    def one_by_one(self, first: Any, one_target: bool, one_weight: bool) -> None:
        """Rows [first, count) each alone: its groups, then its tail (read_checked)."""
        builder, em = self.builder, self.em
        lanes, weight_lanes = self.row_sums[0], self.weight_sums[0]
        with cgutils.for_range(builder, builder.sub(self.s["count"], first)) as loop:
            r = builder.add(first, loop.index)
            row = self.row(r, one_target, one_weight)
            weight_total = None
            if weight_lanes is not None and writes(self.kind):
                (row,), weight_total = self.factors_first([row], self.n_groups, self.at, self.read_checked)
            ip, it, iw, io, target, weight, factor = row
            in_loop = weight_lanes if weight_total is None else None  # the weight lanes the loop adds to
            builder.store(self.no_terms, lanes)
            if in_loop is not None:
                builder.store(self.no_terms, in_loop)

            def targets_along(i: Any) -> Any:
                em.prefetch("t", builder.add(it, i))
                return em.load("t", builder.add(it, i))

            def weights_along(i: Any) -> Any:
                return em.load("w", builder.add(iw, i))

            weight_at = None if not self.weighted else (lambda i: weight) if weight is not None else weights_along
            target_at = (lambda i: target) if target is not None else targets_along
            _group_loop(em, self.kind, False, self.n_groups, ip, io, factor, lanes, target_at, weight_at, in_loop)
            with builder.if_then(builder.icmp_signed(">", self.tail_size, self.zero)):
                self.add_tail(row, self.at, self.read_checked, lanes, in_loop)
            if reduces(self.kind):
                if in_loop is not None:
                    weight_total = self.row_total(in_loop)
                self.put_losses(r, self.row_total(lanes), 1, weight_total)

    def row_total(self, lanes: Any) -> Any:
        """combine_lanes of one row's lanes (at `lanes`), as a vector of one."""
        builder, i32 = self.builder, self.em.i32
        pairs = self.pairs(builder.load(lanes))
        halves = builder.fadd(self.shuffle(pairs, pairs, [0, 2]), self.shuffle(pairs, pairs, [1, 3]))
        total = builder.fadd(
            builder.extract_element(halves, ir.Constant(i32, 0)), builder.extract_element(halves, ir.Constant(i32, 1))
        )
        return builder.insert_element(ir.Constant(ir.VectorType(ir.DoubleType(), 1), None), total, ir.Constant(i32, 0))

    def put_losses(self, first: Any, totals: Any, width: int, weight_totals: Any = None) -> None:
        """put_loss of rows first, first + 1, ... (totals: a vector of `width`): each
        divided by its divisor unless 1, and stored into both views; the divisors are
        weight_totals where given (the rows' weight sums), stored into `divisors`. A view of one element
        (put_loss's scratch value, or one output) takes the last row's alone: what the
        rows before it would store there is stored over. Outputs side by side (jl 1) that
        all lie in a view are read and stored as one vector: one by one, put_loss took as
        long as the sums."""
        builder, em, s, i32 = self.builder, self.em, self.s, self.em.i32
        outputs = [builder.add(s["il"], builder.mul(builder.add(first, em.constant(g)), s["jl"])) for g in range(width)]
        side_by_side = builder.icmp_signed("==", s["jl"], em.constant(1))
        vector_type = ir.VectorType(ir.DoubleType(), width)

        def index(name: str, output: Any) -> Any:  # min(il, size - 1), as put_loss indexes
            return builder.select(builder.icmp_signed("<", output, self.last[name]), output, self.last[name])

        def by_layout(
            name: str,
            one_value: Callable[[str], None],
            whole: Callable[[str], None] | None,
            each: Callable[[str], None],
        ) -> None:
            """one_value where the view has one element, whole (where there is one: for
            more than one output) where the outputs lie side by side in it, else each."""
            with builder.if_else(builder.icmp_signed("==", self.last[name], self.zero)) as (one, per_output):
                with one:
                    one_value(name)
                with per_output:
                    if whole is None:
                        each(name)
                    else:
                        in_view = builder.and_(side_by_side, builder.icmp_signed("<=", outputs[-1], self.last[name]))
                        with builder.if_else(in_view, likely=True) as (in_vector, apart):
                            with in_vector:
                                whole(name)
                            with apart:
                                each(name)

        read = cgutils.alloca_once(builder, vector_type)  # type: ignore[no-untyped-call]

        def read_one(name: str) -> None:
            one = builder.insert_element(
                ir.Constant(vector_type, None), em.load(name, self.zero, 1), ir.Constant(i32, 0)
            )
            builder.store(self.shuffle(one, one, [0] * width), read)

        def read_each(name: str) -> None:
            divisors = ir.Constant(vector_type, None)
            for g, output in enumerate(outputs):
                divisors = builder.insert_element(divisors, em.load(name, index(name, output), 1), ir.Constant(i32, g))
            builder.store(divisors, read)

        def read_whole(name: str) -> None:
            builder.store(em.load(name, outputs[0], width), read)

        def put(view: str, values: Any) -> None:
            def store_each(name: str) -> None:
                for g, output in enumerate(outputs):
                    em.store(name, index(name, output), builder.extract_element(values, ir.Constant(i32, g)), 1)

            by_layout(
                view,
                lambda name: em.store(name, self.zero, builder.extract_element(values, ir.Constant(i32, width - 1)), 1),
                (lambda name: em.store(name, outputs[0], values, width)) if width > 1 else None,
                store_each,
            )

        ones = self.constants(ir.DoubleType(), [1.0] * width)
        if weight_totals is None:
            by_layout("divisors", read_one, read_whole if width > 1 else None, read_each)
            divisors = builder.load(read)
        else:
            divisors = weight_totals if self.divided else ones
            put("divisors", weight_totals)
        quotients = builder.select(builder.fcmp_ordered("==", divisors, ones), totals, builder.fdiv(totals, divisors))
        for view in ("sums", "finished"):
            put(view, quotients)


@functools.cache
def _vector_rows(kind: int, weighted: bool, weight_sums: bool = False, divided: bool = True) -> Any:
    """An intrinsic rows(p, ip, jp, t, it, jt, st, w, iw, jw, sw, out, io, jo, scale,
    i_factor, j_factor, has_scale, sums, finished, divisors, il, jl, count, n) for one
    pass: `count` rows of n positions, row r's from ip + r * jp (targets, weights and out
    likewise, strides st and sw along the row: each 0 or 1; out contiguous), its gradient
    factor scale[i_factor + r * j_factor] (0 unless has_scale), its loss put at il + r *
    jl, as contiguous_rows does, the same bits.

    The whole loop in IR (_RowsCode), as cpp/kernels.cpp's packed rows: in Numba's code a
    row of a few positions cost twice C++'s, in its last n % 8 positions one by one, its
    lanes taken out of the vector to be combined, and a division per row whose latency
    held up the next rows. Here the last positions are one more group, read whole (the
    arrays go on past them but for the last rows, which read them one by one), whose
    lanes past the row add 0 (a lane starts at +0 and so is never -0, and adding 0 leaves
    its bits as they are) and are not stored (a masked store; where the gradient streams,
    _RowsCode.streamable, staged or stored in 16-byte pieces). Short rows are summed
    KROWS at a time, side by side, their lanes combined side by side in combine_lanes'
    order and divided in one vector division; rows of fewer than LANES positions that lie
    one after another are read KROWS at a time as one vector (_RowsCode.packed), where a
    group of LANES lanes for a row of 2 spent three quarters of its work on nothing.

    weight_sums (weights along the rows): each row's weights summed too, in lanes of their
    own, as reduce_difference sums them against a target of 0 (w - 0 is w), that sum
    stored into `divisors` in its place and the row's divisor (or, not `divided`, the
    loss left undivided: blocks of a flat sum); in a pass that writes, summed first, the
    row's gradient factor 2 / sum (_RowsCode.factors_first). The weights' own pass, a loop
    of its own, took as long as the loss's."""

    @intrinsic
    def rows(
        typingctx: Any,
        p: Any,
        ip: Any,
        jp: Any,
        t: Any,
        it: Any,
        jt: Any,
        st: Any,
        w: Any,
        iw: Any,
        jw: Any,
        sw: Any,
        out: Any,
        io: Any,
        jo: Any,
        scale: Any,
        i_factor: Any,
        j_factor: Any,
        has_scale: Any,
        sums: Any,
        finished: Any,
        divisors: Any,
        il: Any,
        jl: Any,
        count: Any,
        n: Any,
    ) -> tuple[Any, Callable[..., Any]]:
        signature = types.none(
            p, ip, jp, t, it, jt, st, w, iw, jw, sw, out, io, jo, scale, i_factor, j_factor, has_scale,
            sums, finished, divisors, il, jl, count, n,
        )  # fmt: skip

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            arrays = {"p": 0, "t": 3, "w": 7, "o": 11, "scale": 14, "sums": 18, "finished": 19, "divisors": 20}
            em = _Emitter(context, builder, {name: (signature.args[k], args[k]) for name, k in arrays.items()})
            at = {"ip": 1, "jp": 2, "it": 4, "jt": 5, "st": 6, "iw": 8, "jw": 9, "sw": 10, "io": 12, "jo": 13}
            at |= {"i_factor": 15, "j_factor": 16, "has_scale": 17, "il": 21, "jl": 22, "count": 23, "n": 24}
            scalars = {name: context.cast(builder, args[k], signature.args[k], types.int64) for name, k in at.items()}
            code = _RowsCode(em, kind, weighted, weight_sums, divided, scalars)
            if writes(kind):
                code.emit_writing()
            else:
                code.emit()
            return context.get_dummy_value()

        return signature, codegen

    return rows


@register_jitable
def _no_lane_groups(
    p: Any,
    ip: int,
    t: Any,
    it: int,
    w: Any,
    iw: int,
    sw: int,
    out: Any,
    io: int,
    factor: float,
    n: int,
    lanes: Any,
    st: int,
) -> Any:
    return lanes


@register_jitable
def _no_output_groups(
    p: Any,
    ip: int,
    t: Any,
    it: int,
    w: Any,
    iw: int,
    sw: int,
    out: Any,
    io: int,
    factors: Any,
    n: int,
    acc: Any,
    st: int,
) -> None:
    return None


@register_jitable
def _no_rows(
    p: Any, ip: int, jp: int, t: Any, it: int, jt: int, st: int, w: Any, iw: int, jw: int, sw: int,
    out: Any, io: int, jo: int, scale: Any, i_factor: int, j_factor: int, has_scale: bool,
    sums: Any, finished: Any, divisors: Any, il: int, jl: int, count: int, n: int,
) -> None:  # fmt: skip
    return None


def _routine_constants(
    kind: OverloadArg, weighted: OverloadArg, p: Any, t: Any, w: Any, out: Any, across: bool
) -> tuple[int, bool, bool, Any] | None:
    """What a routine's copy is compiled for: its pass and weighting (None unless both
    are literals), whether its operand types take the vector code, and the groups
    intrinsic (_vector_groups) or, where they do not, its no-op stand-in."""
    if not isinstance(kind, types.IntegerLiteral) or not isinstance(weighted, types.BooleanLiteral):
        return None
    pass_kind, is_weighted = kind.literal_value, weighted.literal_value
    if not _vectorizable(pass_kind, is_weighted, p, t, w, out):
        return pass_kind, is_weighted, False, _no_output_groups if across else _no_lane_groups
    return pass_kind, is_weighted, True, _vector_groups(pass_kind, is_weighted, across)


# `rows` runs of n positions one after another in p and out (targets and weights: strides
# st and sw, 0 or 1), row r's starting at base + r * js (per operand), lane i % 8 taking
# its position i: what lane_tasks computes for such a block or short row. Each row's
# combined lanes go to the loss at base[LOSS] + r * js[LOSS] (put_loss), its gradient
# factor read from scale at base[SCALE] + r * js[SCALE]. A pass that only sums, over
# float32 or float64, runs whole in _vector_rows' IR, four short rows at a time. In the
# others the groups of eight are _vector_groups' where the operand types allow, else
# eight locals; the loads of a group come ahead of its stores. The pass and the weights
# are constants of each compiled copy (`specialized`), chosen once for all the rows: each
# copy's loop holds only its own arithmetic (a choice per row doubled the time of rows
# of ten).
def contiguous_rows(kind: int, weighted: bool, arguments: Any) -> None:
    """`arguments`: (p, t, w, sw, out, loss, divisors, scale, has_scale, base, js, rows, n, st)."""
    raise NotImplementedError  # pragma: no cover - replaced by the overload in compiled code


@overload(contiguous_rows, prefer_literal=True)
def _contiguous_rows(kind: OverloadArg, weighted: OverloadArg, arguments: OverloadArg) -> Callable[..., None] | None:
    p, t, w, _, out = arguments.types[:5]
    constants = _routine_constants(kind, weighted, p, t, w, out, across=False)
    if constants is None:
        return None
    KIND, WEIGHTED, VECTOR, groups = constants
    loss_type, divisors_type, scale_type = arguments.types[5:8]
    # Operands of vector types (out contiguous where the pass writes), a loss too: the
    # whole loop in IR (_vector_rows).
    WHOLE_ROWS = (
        VECTOR
        and all(a.layout == "C" for a in (*loss_type.types, divisors_type, scale_type))
        and loss_type.types[0].dtype == scale_type.dtype == types.float64
        and loss_type.types[1].dtype in _VECTOR_DTYPES
    )
    whole_rows = _vector_rows(KIND, WEIGHTED) if WHOLE_ROWS else _no_rows

    def rows_of(kind: OverloadArg, weighted: OverloadArg, arguments: OverloadArg) -> None:
        p, t, w, sw, out, loss, divisors, scale, has_scale, base, js, rows, n, st = arguments
        if WHOLE_ROWS:
            sums, finished = loss
            whole_rows(
                p, base[P], js[P], t, base[T], js[T], st, w, base[W], js[W], sw, out, base[OUT], js[OUT],
                scale, base[SCALE], js[SCALE], has_scale, sums, finished, divisors, base[LOSS], js[LOSS], rows, n,
            )  # fmt: skip
            return
        end = n - n % LANES
        scalar_from = end if VECTOR else 0
        # Each row's offsets stepped on from the last, the steps read once: the compiler
        # cannot tell that the loss's stores leave base and js as they were, and read and
        # multiplied them again at every row.
        jp, jt, jw, jo, jl, jf = js[P], js[T], js[W], js[OUT], js[LOSS], js[SCALE]
        ip, it, iw, io, il, i_factor = base[P], base[T], base[W], base[OUT], base[LOSS], base[SCALE]
        for _ in range(rows):
            factor = scale[i_factor] if has_scale else 0.0
            a0, a1, a2, a3, a4, a5, a6, a7 = groups(
                p, ip, t, it, w, iw, sw, out, io, factor, scalar_from, ZERO_LANES, st
            )
            for i in range(scalar_from, end, LANES):
                d0 = load(p, ip + i) - load(t, it + i * st)
                d1 = load(p, ip + i + 1) - load(t, it + (i + 1) * st)
                d2 = load(p, ip + i + 2) - load(t, it + (i + 2) * st)
                d3 = load(p, ip + i + 3) - load(t, it + (i + 3) * st)
                d4 = load(p, ip + i + 4) - load(t, it + (i + 4) * st)
                d5 = load(p, ip + i + 5) - load(t, it + (i + 5) * st)
                d6 = load(p, ip + i + 6) - load(t, it + (i + 6) * st)
                d7 = load(p, ip + i + 7) - load(t, it + (i + 7) * st)
                w0 = w1 = w2 = w3 = w4 = w5 = w6 = w7 = 1.0
                if WEIGHTED:
                    w0, w1, w2, w3 = (
                        load(w, iw + i * sw),
                        load(w, iw + (i + 1) * sw),
                        load(w, iw + (i + 2) * sw),
                        load(w, iw + (i + 3) * sw),
                    )
                    w4, w5, w6, w7 = (
                        load(w, iw + (i + 4) * sw),
                        load(w, iw + (i + 5) * sw),
                        load(w, iw + (i + 6) * sw),
                        load(w, iw + (i + 7) * sw),
                    )
                if writes(KIND):
                    write(KIND, out, io + i, factor, w0, d0)
                    write(KIND, out, io + i + 1, factor, w1, d1)
                    write(KIND, out, io + i + 2, factor, w2, d2)
                    write(KIND, out, io + i + 3, factor, w3, d3)
                    write(KIND, out, io + i + 4, factor, w4, d4)
                    write(KIND, out, io + i + 5, factor, w5, d5)
                    write(KIND, out, io + i + 6, factor, w6, d6)
                    write(KIND, out, io + i + 7, factor, w7, d7)
                if reduces(KIND):
                    a0 += term(KIND, w0, d0)
                    a1 += term(KIND, w1, d1)
                    a2 += term(KIND, w2, d2)
                    a3 += term(KIND, w3, d3)
                    a4 += term(KIND, w4, d4)
                    a5 += term(KIND, w5, d5)
                    a6 += term(KIND, w6, d6)
                    a7 += term(KIND, w7, d7)
            # The last n % LANES positions, to lanes 0, 1, ... in turn: tests of how many,
            # the same for every row, where a loop's test of which lane took a third longer.
            tail = n - end
            if tail > 0:
                i = end
                a0 += element(KIND, WEIGHTED, p, ip + i, t, it + i * st, w, iw + i * sw, out, io + i, factor)
            if tail > 1:
                i = end + 1
                a1 += element(KIND, WEIGHTED, p, ip + i, t, it + i * st, w, iw + i * sw, out, io + i, factor)
            if tail > 2:
                i = end + 2
                a2 += element(KIND, WEIGHTED, p, ip + i, t, it + i * st, w, iw + i * sw, out, io + i, factor)
            if tail > 3:
                i = end + 3
                a3 += element(KIND, WEIGHTED, p, ip + i, t, it + i * st, w, iw + i * sw, out, io + i, factor)
            if tail > 4:
                i = end + 4
                a4 += element(KIND, WEIGHTED, p, ip + i, t, it + i * st, w, iw + i * sw, out, io + i, factor)
            if tail > 5:
                i = end + 5
                a5 += element(KIND, WEIGHTED, p, ip + i, t, it + i * st, w, iw + i * sw, out, io + i, factor)
            if tail > 6:
                i = end + 6
                a6 += element(KIND, WEIGHTED, p, ip + i, t, it + i * st, w, iw + i * sw, out, io + i, factor)
            if reduces(KIND):
                put_loss(loss, il, ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7)), divisors)
            ip, it, iw, io, il, i_factor = ip + jp, it + jt, iw + jw, io + jo, il + jl, i_factor + jf

    return rows_of


# A run of n positions contiguous in p and out (targets and weights: strides st and sw, 0
# or 1), position i adding to acc[i % 8]: lane_tasks' runs from a position of lane 0 on.
# Compiled per pass and weighting, as contiguous_rows.
def lane_run(kind: int, weighted: bool, arguments: Any) -> None:
    """`arguments`: (p, t, w, sw, out, ip, it, iw, io, factor, n, acc, st)."""
    raise NotImplementedError  # pragma: no cover - replaced by the overload in compiled code


@overload(lane_run, prefer_literal=True)
def _lane_run(kind: OverloadArg, weighted: OverloadArg, arguments: OverloadArg) -> Callable[..., None] | None:
    p, t, w, _, out = arguments.types[:5]
    constants = _routine_constants(kind, weighted, p, t, w, out, across=False)
    if constants is None:
        return None
    KIND, WEIGHTED, VECTOR, groups = constants

    def run_of(kind: OverloadArg, weighted: OverloadArg, arguments: OverloadArg) -> None:
        p, t, w, sw, out, ip, it, iw, io, factor, n, acc, st = arguments
        scalar_from = n - n % LANES if VECTOR else 0
        lanes = (acc[0], acc[1], acc[2], acc[3], acc[4], acc[5], acc[6], acc[7])
        lanes = groups(p, ip, t, it, w, iw, sw, out, io, factor, scalar_from, lanes, st)
        for lane in range(LANES):
            acc[lane] = lanes[lane]
        for i in range(scalar_from, n):
            acc[i & (LANES - 1)] += element(
                KIND, WEIGHTED, p, ip + i, t, it + i * st, w, iw + i * sw, out, io + i, factor
            )

    return run_of


# Summed positions [lo, hi) of `width` neighbouring outputs (from `base`, per operand),
# walked with the odometer (index, offset) over the summed dimensions in runs along the
# innermost one: position i of a block of ROW_BLOCK adds its terms to lane i % LANES of
# each output, acc[(i % LANES) * width + j], and each block's combined lanes (block_sums)
# are pushed onto the cascade (stack, state), as across_output_tasks sums them. A chunk
# in one call, where a call per block (or per run) cost a third of a narrow batch's time
# (the arrays' counts taken and given back at each call). Compiled per pass and
# weighting, as contiguous_rows.
def across_block(kind: int, weighted: bool, arguments: Any) -> None:
    """`arguments`: (p, t, w, out, origin, base, shape, strides, n_kept, index, offset, lo,
    hi, width, factors, acc, stack, state, scratch, target_rows, weight_rows, block_sums)."""
    raise NotImplementedError  # pragma: no cover - replaced by the overload in compiled code


@overload(across_block, prefer_literal=True)
def _across_block(kind: OverloadArg, weighted: OverloadArg, arguments: OverloadArg) -> Callable[..., None] | None:
    p, t, w, out = arguments.types[:4]
    constants = _routine_constants(kind, weighted, p, t, w, out, across=True)
    if constants is None:
        return None
    KIND, WEIGHTED, VECTOR, groups = constants
    # Whole groups of rows stream their stores (each a span of LANES * width positions);
    # rows one at a time do not, their last outputs' stores being plain ones.
    STREAMED_ROWS = VECTOR and writes(KIND)
    row_groups = _vector_groups(KIND, WEIGHTED, True, True) if STREAMED_ROWS else groups

    def block(kind: OverloadArg, weighted: OverloadArg, arguments: OverloadArg) -> None:
        p, t, w, out, origin, base, shape, strides, n_kept, index, offset, lo, hi = arguments[:13]
        width, factors, acc, stack, state, scratch, target_rows, weight_rows, block_sums = arguments[13:]
        ndim = shape.size
        j_dim, last_dim = n_kept - 1, ndim - 1
        sp, st, sw, so = strides[P, j_dim], strides[T, j_dim], strides[W, j_dim], strides[OUT, j_dim]
        rp, rt, rw, ro = strides[P, last_dim], strides[T, last_dim], strides[W, last_dim], strides[OUT, last_dim]
        vector_to = width - width % LANES if VECTOR and runs_contiguous(KIND, WEIGHTED, sp, st, sw, so) else 0
        # Rows of outputs one after another in memory, LANES at a time: their LANES * width
        # positions are contiguous, position e adding to acc[e] (kernels.cpp's across_rows;
        # here also for a wide group with one target for all: vectors along a row of outputs
        # take only whole groups of LANES). Targets or weights shared by every row of a run
        # are read from copies of their row.
        run = LANES * width
        rows = VECTOR and sp == 1 and rp == width and (not writes(KIND) or so == 1 and ro == width)
        rows = rows and (rt == 0 or st == 1 and rt == width) and (not WEIGHTED or rw == 0 or sw == 1 and rw == width)
        # Up to NARROW outputs side by side, not rows side by side: their rows unrolled.
        narrow = width <= NARROW and sp == 1 and st == 1 and (sw == 1 or not WEIGHTED) and (so == 1 or not writes(KIND))
        run_t, run_w = t, w  # where the rows' targets and weights are read
        if rows and rt == 0:
            run_t = target_rows
        if rows and WEIGHTED and rw == 0:
            run_w = weight_rows
        copied_t, copied_w = -1, -1  # where the copies' rows are from
        for first in range(lo, hi, ROW_BLOCK):
            last = min(first + ROW_BLOCK, hi)
            acc[:run] = 0.0
            pos = first
            while pos < last:  # runs along the innermost summed dimension
                n = min(shape[last_dim] - index[last_dim], last - pos)
                ap, at = origin[P] + base[P] + offset[P], origin[T] + base[T] + offset[T]
                aw, ao = origin[W] + base[W] + offset[W], origin[OUT] + base[OUT] + offset[OUT]
                if rows and n >= LANES:  # the copies of this run's shared rows, if not made yet
                    if rt == 0 and at != copied_t:
                        for e in range(run):
                            target_rows[e] = t[at + e % width * st]
                        copied_t = at
                    if WEIGHTED and rw == 0 and aw != copied_w:
                        for e in range(run):
                            weight_rows[e] = w[aw + e % width * sw]
                        copied_w = aw
                run_at = at if rt else 0  # where run_t's targets start
                run_aw = aw if rw else 0
                q = 0
                while q < n:
                    row_lane = (pos - first + q) & (LANES - 1)
                    ip, it, iw, io = ap + q * rp, at + q * rt, aw + q * rw, ao + q * ro
                    if rows and row_lane == 0 and q + LANES <= n:
                        run_it, run_iw = run_at + q * rt, run_aw + q * rw
                        row_groups(p, ip, run_t, run_it, run_w, run_iw, 1, out, io, factors, run, acc, 1)
                        q += LANES
                        continue
                    lane_at = row_lane * width
                    if narrow:  # unrolled, as the loop below costs more than the work of a few outputs
                        acc[lane_at] += element(KIND, WEIGHTED, p, ip, t, it, w, iw, out, io, factors[0])
                        if width > 1:
                            acc[lane_at + 1] += element(
                                KIND, WEIGHTED, p, ip + 1, t, it + 1, w, iw + 1, out, io + 1, factors[1]
                            )
                        if width > 2:
                            acc[lane_at + 2] += element(
                                KIND, WEIGHTED, p, ip + 2, t, it + 2, w, iw + 2, out, io + 2, factors[2]
                            )
                        if width > 3:
                            acc[lane_at + 3] += element(
                                KIND, WEIGHTED, p, ip + 3, t, it + 3, w, iw + 3, out, io + 3, factors[3]
                            )
                        q += 1
                        continue
                    if vector_to > 0:  # a view of the lane's sums only where they take it
                        lane_sums = acc[lane_at : lane_at + width]
                        groups(p, ip, t, it, w, iw, sw, out, io, factors, vector_to, lane_sums, st)
                    for j in range(vector_to, width):
                        acc[lane_at + j] += element(
                            KIND, WEIGHTED, p, ip + j * sp, t, it + j * st, w, iw + j * sw, out, io + j * so, factors[j]
                        )
                    q += 1
                pos += n
                advance(shape, strides, n_kept, ndim, n, index, offset)
            if reduces(KIND):
                for j in range(width):
                    block_sums[j] = combine_lanes(acc, j, width)
                cascade_push(stack, state, block_sums, width, scratch)
        if STREAMED_ROWS:
            fence_streams()

    return block


# The routines compiled once per pass and weighting, for `specialized`.
ROWS_ROUTINE = 0  # contiguous_rows
ACROSS_ROUTINE = 1  # across_block
LANES_ROUTINE = 2  # lane_run


def specialized(routine: int, kind: int, weighted: bool, arguments: Any) -> None:
    """routine(kind, weighted, arguments), the copy compiled for this pass and weighting:
    the pass is chosen here once for all the positions that the routine then walks."""
    raise NotImplementedError  # pragma: no cover - replaced by the overload in compiled code


@overload(specialized, prefer_literal=True)
def _specialized(
    routine: OverloadArg, kind: OverloadArg, weighted: OverloadArg, arguments: OverloadArg
) -> Callable[..., None] | None:
    if not isinstance(routine, types.IntegerLiteral):
        return None
    target = (contiguous_rows, across_block, lane_run)[routine.literal_value]

    def choose(routine: OverloadArg, kind: OverloadArg, weighted: OverloadArg, arguments: OverloadArg) -> None:
        if kind == REDUCE and weighted:
            target(REDUCE, True, arguments)
        elif kind == REDUCE:
            target(REDUCE, False, arguments)
        elif kind == GRAD and weighted:
            target(GRAD, True, arguments)
        elif kind == GRAD:
            target(GRAD, False, arguments)
        elif kind == REDUCE_AND_GRAD and weighted:
            target(REDUCE_AND_GRAD, True, arguments)
        elif kind == REDUCE_AND_GRAD:
            target(REDUCE_AND_GRAD, False, arguments)
        elif kind == SQUARED_ERROR and weighted:
            target(SQUARED_ERROR, True, arguments)
        elif kind == SQUARED_ERROR:
            target(SQUARED_ERROR, False, arguments)
        elif weighted:
            target(REDUCE_DIFFERENCE, True, arguments)
        else:
            target(REDUCE_DIFFERENCE, False, arguments)

    return choose


@register_jitable
def block_steps() -> Int64s:
    """chunk_of_blocks' steps: its rows BLOCK positions apart, their sums side by side."""
    steps = np.zeros((6, 1), np.int64)[:, 0]
    steps[P] = steps[T] = steps[W] = steps[OUT] = BLOCK
    steps[LOSS] = 1
    return steps


# n positions (a chunk or less) along one run, contiguous in p, t, w and out (targets and
# weights: strides st and sw, 0 or 1) from base, factor scale[base[SCALE]]: its blocks of
# BLOCK positions, as lane_tasks sums them, summed as rows of contiguous_rows BLOCK apart
# (`blocks`: their sums, a scratch view in p's dtype, divisors of 1 and block_steps()),
# then cascaded in turn; returns the cascade's total. One call a chunk, where a call a
# block cost a third of a flat sum's time (the arrays' counts taken and given back at each
# call). The arguments have exactly the types of row_tasks' (no literal, steps a strided
# view, the loss's second view in p's dtype), so that the copies of contiguous_rows
# compiled for one serve the other: a first call of both compiles them once, where it
# took 10 s each.
@register_jitable
def chunk_of_blocks(kind: int, weighted: bool, run_of: Any, base: Int64s, n: int, blocks: Any, cascade: Any) -> float:
    p, t, w, sw, out, scale, has_scale, st = run_of
    block_sums, scratch_loss, undivided, steps = blocks
    stack, state, one, scratch = cascade
    loss = (block_sums, scratch_loss)
    state[:] = 0
    whole = n // BLOCK
    for part in range(2):  # the whole blocks, then the rest
        rows, n_block = (whole, np.int64(BLOCK)) if part == 0 else (min(n - whole * BLOCK, 1), n - whole * BLOCK)
        if rows == 0:
            continue
        if part == 1:
            base[P] += whole * BLOCK
            base[T] += whole * BLOCK
            base[W] += whole * BLOCK
            base[OUT] += whole * BLOCK
        specialized(
            ROWS_ROUTINE,
            kind,
            weighted,
            (p, t, w, sw, out, loss, undivided, scale, has_scale, base, steps, rows, n_block, st),
        )
        for r in range(rows):
            one[0] = block_sums[r]
            cascade_push(stack, state, one, 1, scratch)
    cascade_total(stack, state, one, 1)
    return float(one[0])


@njit(cache=True, nogil=True, error_model="numpy")
def flat_tasks(
    handed: Int64s,
    begin: int,
    end: int,
    kind: int,
    weighted: bool,
    p: Operand,
    t: Operand,
    w: Operand,
    out: Operand,
    factor: float,
    partials: Float64s,
) -> None:
    """Chunks [begin, end) of a flat run, each chunk's sum in partials."""
    let_workers_in(handed)
    n = p.size
    p, t, w, out, partials = unmanaged(p), unmanaged(t), unmanaged(w), unmanaged(out), unmanaged(partials)
    cascade = (np.zeros((CASCADE_LEVELS, 1)), np.zeros(2, np.int64), np.zeros(1), np.zeros(1))
    # Each block's sum undivided, its factor scale[0].
    blocks = (np.zeros(CHUNK // BLOCK), np.zeros(1, p.dtype), np.ones(1), block_steps())
    scale = np.full(1, factor)
    base = np.zeros(6, np.int64)
    unit = np.int64(1)
    for c in range(begin, end):
        lo = c * CHUNK
        base[P] = base[T] = base[W] = base[OUT] = lo
        partials[c] = chunk_of_blocks(
            kind,
            weighted,
            (p, t, w, unit, out, unmanaged(scale), writes(kind), unit),
            unmanaged(base),
            min(CHUNK, n - lo),
            (unmanaged(blocks[0]), unmanaged(blocks[1]), unmanaged(blocks[2]), unmanaged(blocks[3])),
            (unmanaged(cascade[0]), unmanaged(cascade[1]), unmanaged(cascade[2]), unmanaged(cascade[3])),
        )


# A weighted mean per row's loss, gradient or both with its weight sums in one pass
# (_vector_rows' weight_sums), and a flat weighted sum's blocks' sums and weight sums.
_weighted_rows = _vector_rows(REDUCE, True, True)
_weighted_row_gradients = _vector_rows(GRAD, True, True)
_weighted_rows_and_gradients = _vector_rows(REDUCE_AND_GRAD, True, True)
_weighted_blocks = _vector_rows(REDUCE, True, True, False)


@njit(cache=True, nogil=True, error_model="numpy")
def weighted_mean_tasks(
    handed: Int64s,
    begin: int,
    end: int,
    p: Operand,
    t: Operand,
    w: Operand,
    partials: Float64s,
    weight_partials: Float64s,
    found: Int64s,
) -> None:
    """Chunks [begin, end) of a flat weighted sum (flat_tasks' REDUCE, float32 or float64,
    weights as long as p): each chunk's sum, and its weights' as _weight_sums sums them
    (reduce_difference against a target of 0), in one pass over its blocks (taken as rows
    of BLOCK, as chunk_of_blocks takes them, _vector_rows' weight sums), each cascaded
    into weight_partials; their sign bits then checked from cache (found[SIGNED_WEIGHT])."""
    let_workers_in(handed)
    n = p.size
    bits, sign = sign_bits(w)
    signs = sign ^ sign
    block_sums, weight_sums = np.zeros(CHUNK // BLOCK), np.zeros(CHUNK // BLOCK)
    last_loss, no_scale = np.zeros(1, p.dtype), np.zeros(1)
    stack, state, one, scratch = np.zeros((CASCADE_LEVELS, 1)), np.zeros(2, np.int64), np.zeros(1), np.zeros(1)
    for c in range(begin, end):
        lo = c * CHUNK
        size = min(CHUNK, n - lo)
        whole = size // BLOCK
        rest = size - whole * BLOCK
        if whole > 0:
            _weighted_blocks(
                p, lo, BLOCK, t, lo, BLOCK, 1, w, lo, BLOCK, 1, p, lo, BLOCK, no_scale, 0, 0, False,
                block_sums, last_loss, weight_sums, 0, 1, whole, BLOCK,
            )  # fmt: skip
        if rest > 0:
            at = lo + whole * BLOCK
            _weighted_blocks(
                p, at, rest, t, at, rest, 1, w, at, rest, 1, p, at, rest, no_scale, 0, 0, False,
                block_sums, last_loss, weight_sums, whole, 1, 1, rest,
            )  # fmt: skip
        for sums, into in ((block_sums, partials), (weight_sums, weight_partials)):
            state[:] = 0
            for block in range(whole + (rest > 0)):
                one[0] = sums[block]
                cascade_push(stack, state, one, 1, scratch)
            cascade_total(stack, state, one, 1)
            into[c] = one[0]
        for i in range(lo, lo + size):
            signs |= bits[np.uint64(i)]
    if signs & sign:
        released(found, SIGNED_WEIGHT, 1)


@njit(cache=True, nogil=True, error_model="numpy")
def weighted_rows_tasks(
    handed: Int64s,
    begin: int,
    end: int,
    kind: int,
    row: int,
    p: Operand,
    t: Operand,
    w: Operand,
    out: Operand,
    loss: Operand,
    row_sums: Float64s,
    found: Int64s,
) -> None:
    """Rows [begin, end) of `row` positions (up to BLOCK, row mode's rows: p, t, w and out
    C ordered, of one dtype, float32 or float64) of a mean per row weighted per position:
    each row's loss, gradient or both (`kind`) with its weights' sum (row_sums, where the
    pass sums: its divisor) in one pass, as the general path's weight sums and then its
    pass give them; a stretch of rows at a time, whose weights are then checked from cache
    as weight_sum_tasks checks them (found; a gradient's weights checked before, by
    weight_checks)."""
    let_workers_in(handed)
    bits, sign = sign_bits(w)
    signs = sign ^ sign
    unusable_rows = 0
    last_sum, no_scale = np.zeros(1), np.zeros(1)
    step = max(1, WEIGHTS_AT_ONCE // row)
    for first in range(begin, end, step):
        last = min(first + step, end)
        at = first * row
        rows_of = (
            p, at, row, t, at, row, 1, w, at, row, 1, out, at, row, no_scale, 0, 0, False,
            last_sum, loss, row_sums, first, 1, last - first, row,
        )  # fmt: skip
        if kind == REDUCE:
            _weighted_rows(*rows_of)
        elif kind == GRAD:
            _weighted_row_gradients(*rows_of)
        else:
            _weighted_rows_and_gradients(*rows_of)
        if kind == REDUCE:
            for i in range(at, last * row):
                signs |= bits[np.uint64(i)]
            for r in range(first, last):
                unusable_rows += not row_sums[r] > 0.0
    if signs & sign:
        released(found, SIGNED_WEIGHT, 1)
    if unusable_rows:
        released(found, UNUSABLE_ROW, 1)


@njit(cache=True, nogil=True, error_model="numpy")
def weight_checks(handed: Int64s, begin: int, end: int, w: Operand, found: Int64s) -> None:
    """Chunks [begin, end) of CHUNK weights checked before a gradient is written with
    weight sums that its pass finds (weighted_rows_tasks): found[SIGNED_WEIGHT] for a
    weight whose sign bit is set, found[UNUSABLE_ROW] for a weight that is NaN or 0 (a row
    of them may sum to NaN or 0: such calls are left to the weights' own pass, which finds
    which). An OR of bits and comparisons, at the speed of memory."""
    let_workers_in(handed)
    bits, sign = sign_bits(w)
    mantissa_bits = np.uint64(23 if w.itemsize == 4 else 52)  # float32 or float64
    magnitude = sign - np.uint64(1)
    infinity = magnitude ^ ((np.uint64(1) << mantissa_bits) - np.uint64(1))
    signs = sign ^ sign
    unusable = 0
    for i in range(begin * CHUNK, min(end * CHUNK, w.size)):
        b = bits[np.uint64(i)]
        signs |= b
        unusable |= (b & magnitude) > infinity or b == 0
    if signs & sign:
        released(found, SIGNED_WEIGHT, 1)
    if unusable:
        released(found, UNUSABLE_ROW, 1)


@njit(cache=True, nogil=True, error_model="numpy")
def loss_per_position_tasks(
    handed: Int64s, begin: int, end: int, p: Operand, t: Operand, out: Operand, loss: Operand
) -> None:
    """Chunks [begin, end) of CHUNK positions of a loss per position (one position an
    output, unweighted; float32 or float64, contiguous) and its gradient in one pass:
    the squared errors' pass and the gradient's (fastmse._compute) in one, the same
    arithmetic (cpp/position.hpp: the weight 1 left out, the scale 2), each value rounded
    once. `out` overlaps no input: in place, the loop's vectors would give way to scalars."""
    let_workers_in(handed)
    n = p.size
    for i in range(begin * CHUNK, min(n, end * CHUNK)):
        at = np.uint64(i)
        d = np.float64(p[at]) - np.float64(t[at])
        loss[at] = d * d
        out[at] = 2.0 * d


@njit(cache=True, nogil=True, error_model="numpy")
def flat_total(partials: Float64s) -> float:
    """The sum of a flat run from its chunks' sums, cascaded in order."""
    stack = np.zeros((CASCADE_LEVELS, 1))
    state = np.zeros(2, np.int64)
    one = np.zeros(1)
    scratch = np.zeros(1)
    for c in range(partials.size):
        one[0] = partials[c]
        cascade_push(stack, state, one, 1, scratch)
    cascade_total(stack, state, one, 1)
    return float(one[0])


def block_sum(values: Operand, n: int, acc: Float64s) -> float:
    """The float64 sum of values[:n] (n <= BLOCK) as a flat sum of them sums one block:
    position i in lane i % LANES (acc, LANES lanes), the lanes combined."""
    raise NotImplementedError  # pragma: no cover - replaced by the overload in compiled code


@overload(block_sum)
def _block_sum(values: OverloadArg, n: OverloadArg, acc: OverloadArg) -> Callable[..., float]:
    # The groups of LANES in _vector_groups' vectors where the values' type takes them:
    # one at a time, the lanes a loop-carried chain through memory, a block of row sums
    # took about 0.7 us (sums over everything of rows of 2 weighted per sample: a quarter
    # of the call).
    VECTOR = _vectorizable(REDUCE_DIFFERENCE, False, values, acc, None, None)
    groups = _vector_groups(REDUCE_DIFFERENCE, False, False) if VECTOR else _no_lane_groups

    def summed(values: OverloadArg, n: OverloadArg, acc: OverloadArg) -> float:
        acc[:] = 0.0  # also the targets, 0, of the groups
        lanes = groups(values, 0, acc, 0, values, 0, 0, values, 0, 0.0, n, ZERO_LANES, 0)
        vector_to = n - n % LANES if VECTOR else 0
        for lane in range(LANES):
            acc[lane] = lanes[lane]
        for i in range(vector_to, n):
            acc[i & (LANES - 1)] += load(values, i) - 0.0
        return combine_lanes(acc, 0, 1)

    return summed


# Blocks of short rows whose row sums row_block_sums finds in one call of row_tasks (256
# KiB of float64, in L2): one call a block, 2**24 float32 positions summed over
# everything rows first, rows of 2 and 3 with a target per sample, took 0.57-0.60 of
# C++'s time, 4 blocks a call 0.80-0.81, 16 0.92-0.95.
ROW_BLOCKS_AT_ONCE = 16


@njit(cache=True, nogil=True, error_model="numpy")
def row_block_sums(
    handed: Int64s, begin: int, end: int, arguments: Any, all_rows: Float64s, block_sums: Float64s
) -> None:
    """Blocks [begin, end) of BLOCK rows of a sum over everything taken rows first (see
    NumbaBackend._run_rows_first): each block's row sums added up as one block of a flat
    sum of an array of them (reduce_difference of the array and 0: the same lanes, terms
    and combination), into block_sums. Short rows (all_rows empty) are summed here,
    ROW_BLOCKS_AT_ONCE blocks at a time into a buffer of its own, as row_tasks sums them
    into a loss per row; other rows' sums are in all_rows."""
    let_workers_in(handed)
    shape, n_kept, origin, finished = arguments[3], arguments[4], arguments[8], arguments[14]
    n_rows = all_rows.size
    short_rows = n_rows == 0
    if short_rows:
        n_rows = 1
        for d in range(n_kept):
            n_rows *= shape[d]
    buffer = np.empty(BLOCK * ROW_BLOCKS_AT_ONCE if short_rows else 0)
    own_origin = origin.copy()
    # A scratch value of its own (the rows' loss is float64: `finished` is put_loss's), as tasks has.
    rows_of_block = arguments[:8] + (own_origin,) + arguments[9:13] + (buffer, np.zeros_like(finished)) + arguments[15:]
    no_partials = np.zeros(0)
    acc = np.zeros(LANES)
    for first in range(begin, end, ROW_BLOCKS_AT_ONCE):
        last = min(first + ROW_BLOCKS_AT_ONCE, end)
        r0 = first * BLOCK
        if short_rows:
            own_origin[LOSS] = origin[LOSS] - r0  # row r's sum to buffer[r - r0]: the rows' loss is in C order
            row_tasks(r0, min(last * BLOCK, n_rows), rows_of_block, no_partials)
        for block in range(first, last):
            b0, b1 = block * BLOCK, min((block + 1) * BLOCK, n_rows)
            sums = buffer[b0 - r0 : b1 - r0] if short_rows else all_rows[b0:b1]
            block_sums[block] = block_sum(sums, b1 - b0, acc)


@njit(cache=True, nogil=True, error_model="numpy")
def rows_first_total(
    n_rows: int,
    kind: int,
    weighted: bool,
    has_scale: bool,
    shape: Int64s,
    n_kept: int,
    strides: Int64s,
    origin: Int64s,
    p: Operand,
    t: Operand,
    w: Operand,
    out: Operand,
    sums: Float64s,
    finished: Operand,
    divisors: Float64s,
    scale: Float64s,
) -> float:
    """NumbaBackend._rows_first_total on the calling thread, in one call from Python: the
    tasks' arguments that schedule makes, boxed into Python objects and back, took a small
    call three times the run's own time. `n_rows` and run's arguments for a loss per row
    (spelled out: Numba does not join a star argument's tuple to others)."""
    layout = (kind, weighted, has_scale, shape, n_kept, strides, origin, p, t, w, out)
    mode, n_tasks, task_arguments, _ = schedule(*layout, sums, finished, divisors, scale)
    all_rows = np.empty(0)
    if mode != ROW_MODE and n_tasks:
        all_rows = np.empty(n_rows)
        run(*layout, all_rows, finished, divisors, scale)
    block_sums = np.empty((n_rows + BLOCK - 1) // BLOCK if n_tasks else 0)
    row_block_sums(np.zeros(0, np.int64), np.int64(0), block_sums.size, task_arguments, all_rows, block_sums)
    return block_total(block_sums)


@njit(cache=True, nogil=True, error_model="numpy")
def block_total(block_sums: Float64s) -> float:
    """A flat sum's total from its blocks' sums: a cascade of the blocks of each chunk,
    then of the chunks (flat_total)."""
    blocks_per_chunk = CHUNK // BLOCK
    partials = np.empty((block_sums.size + blocks_per_chunk - 1) // blocks_per_chunk)
    stack = np.zeros((CASCADE_LEVELS, 1))
    state = np.zeros(2, np.int64)
    one = np.zeros(1)
    scratch = np.zeros(1)
    for c in range(partials.size):
        state[:] = 0
        for block in range(c * blocks_per_chunk, min(block_sums.size, (c + 1) * blocks_per_chunk)):
            one[0] = block_sums[block]
            cascade_push(stack, state, one, 1, scratch)
        cascade_total(stack, state, one, 1)
        partials[c] = one[0]
    return flat_total(partials) if partials.size else 0.0


@njit(cache=True, nogil=True, error_model="numpy")
def run_flat(kind: int, weighted: bool, p: Operand, t: Operand, w: Operand, out: Operand, factor: float) -> float:
    """One pass over a flat run of p.size positions (w and out as long where present), on
    the calling thread; returns the float64 sum, which the caller finishes into the loss."""
    partials = np.empty((p.size + CHUNK - 1) // CHUNK)
    # partials.size, not a literal: flat_tasks would be compiled again for a literal end.
    flat_tasks(np.zeros(0, np.int64), np.int64(0), partials.size, kind, weighted, p, t, w, out, factor, partials)
    if partials.size == 1:  # one chunk: its sum is the total (a cascade of one value is that value)
        return float(partials[0])
    return flat_total(partials)


# NumPy's C function without its __array_function__ dispatch, half the cost of a small call's check.
_may_share_memory = getattr(np.may_share_memory, "_implementation", np.may_share_memory)


def _storage_view(flat: np.ndarray) -> np.ndarray:
    """`flat` as the kernels read it: the 16-bit floats as their bits (see Operand)."""
    if flat.itemsize != 2:  # first: a small call's cost
        return flat
    kind = flat.dtype.kind
    if kind == "f":
        return flat.view(np.uint16)
    if kind == "V":  # bfloat16, the one such dtype that reaches the kernels
        return flat.view(np.int16)
    return flat


def flat_view(array: np.ndarray) -> tuple[np.ndarray, int]:
    """A 1-D view over the memory `array` spans, and the index of its first element there."""
    if array.size == 0:
        return np.zeros(1, array.dtype), 0
    if array.flags.c_contiguous:  # its own memory in order (0-d too): one reshape
        return array.reshape(-1), 0
    itemsize = array.itemsize
    low = sum(min(0, (n - 1) * s) for n, s in zip(array.shape, array.strides, strict=True)) // itemsize
    high = sum(max(0, (n - 1) * s) for n, s in zip(array.shape, array.strides, strict=True)) // itemsize
    corner = array[
        tuple(slice(n - 1, n) if s < 0 else slice(0, 1) for n, s in zip(array.shape, array.strides, strict=True))
    ]
    flat = np.lib.stride_tricks.as_strided(corner.reshape(-1), (high - low + 1,), (itemsize,))
    return flat, -low


def _flat_operand(array: np.ndarray) -> np.ndarray:
    """A contiguous operand of a flat plan (in C order, or in Fortran order beside others
    in it) as the kernels read it: a 1-D view in memory order, 16-bit floats as their bits."""
    return _storage_view(array.ravel("K"))


def _divisors(loss_divisor: Any) -> Float64s:
    """Plan.loss_divisor as put_loss reads it: the divisors' flat view (its index of each
    output is the loss's, as they share a layout), or one value for every output."""
    if per_output(loss_divisor):
        return flat_view(loss_divisor)[0]
    return np.array((float(loss_divisor),))  # a quarter of np.full's cost


class _Alias:
    """The memory of a 1-D contiguous array, presented to NumPy as writeable; holds the
    array, so that the alias keeps it alive."""

    def __init__(self, view: np.ndarray) -> None:
        self.view = view
        self.__array_interface__ = {
            "shape": view.shape,
            "typestr": view.dtype.str,
            "data": (view.__array_interface__["data"][0], False),
            "version": 3,
        }


def _writeable(view: np.ndarray) -> np.ndarray:
    """`view` (1-D, contiguous: a flat_view) as the kernels take it: a read-only one as a
    writeable alias of the same memory. Numba types a read-only array apart and would
    compile every kernel again for it, 10 to 30 s at the first such call; the kernels
    never write predictions, targets, weights or scale, which alone come read-only (from
    np.broadcast_to, a memory map, Dask)."""
    if view.flags.writeable:
        return view
    return np.asarray(_Alias(view))


def _is_flat(plan: Plan) -> bool:
    """Whether `plan` is one contiguous run summed over everything: every operand along
    it C-contiguous, of its length (loss and scale one value each)."""
    if is_contiguous(plan):
        return True
    if plan.n_kept or len(plan.shape) != 1:
        return False
    n = plan.shape[0]
    for k, array in enumerate(plan.operands):
        if array is None:
            continue
        if k < LOSS and (plan.strides[k] != (1,) or array.size != n or not array.flags.c_contiguous):
            return False
        if k >= LOSS and array.size != 1:
            return False
    return True


def _arguments(kind: int, plan: Plan) -> tuple[Any, ...]:
    """run's (and schedule's) arguments for one pass over `plan`."""
    ndim = len(plan.shape)
    shape = list(plan.shape)
    if plan.n_kept == ndim:
        shape.append(1)
    strides = np.zeros((6, len(shape)), np.int64)
    origin = np.zeros(6, np.int64)
    storage = plan.operands.predictions.dtype
    flats: list[Operand] = []
    for k, (array, s) in enumerate(zip(plan.operands, plan.strides, strict=True)):
        if array is None:
            flats.append(np.zeros(1, storage if k < 4 else np.float64))
            continue
        strides[k, :ndim] = s
        flat, origin[k] = flat_view(array)
        flats.append(flat)
    flats = [_storage_view(f) for f in flats]
    p, t, w, out, loss, scale = flats
    p, t, w, scale = _writeable(p), _writeable(t), _writeable(w), _writeable(scale)
    # The loss as schedule takes it: float64 sums and the finished loss, one a scratch value.
    sums, finished = (loss, np.zeros(1, p.dtype)) if loss.dtype == np.float64 else (np.zeros(1), loss)
    return (
        kind,
        plan.operands.weights is not None,
        plan.operands.scale is not None,
        np.asarray(shape, np.int64),
        plan.n_kept,
        strides,
        origin,
        p,
        t,
        w,
        out,
        sums,
        finished,
        _divisors(plan.loss_divisor),
        scale,
    )


def _finish(loss: np.ndarray, divisor: Any, total: np.float64) -> None:
    """A sum over everything into its loss of one element, as put_loss finishes it."""
    if divisor == 1.0 and loss.dtype == np.float64:  # one number: a contiguous plan
        loss[...] = total
    else:
        with np.errstate(all="ignore"):
            loss[...] = total / divisor


class _Worker:
    """A thread that runs the kernel calls handed to it, one at a time: a lock to hand a
    call over and an event to say it has finished, where a ThreadPoolExecutor's futures
    and queue cost 70 us a call here (a quarter of a 2**20-element sum).

    Waking a sleeping thread took about 50 us here, once to start a call and once to
    finish it: so each side also spins a while, without the GIL, on a flag of the other's.
    After a call the worker says it is done and spins up to WORKER_SPINS reads for the
    next (await_call), and the calling thread, its own part done, spins up to
    FINISH_SPINS for `done` (spin_until_set). Each flag is set from compiled code, the
    GIL already released, so that the thread that sees it takes the GIL at once: `done`
    by the worker, and its `handed_flag` by the calling thread's own range of the call
    (let_workers_in). The lock and the event stay the hand-over's record, the flags only
    shorten the waits."""

    def __init__(self, name: str, handed_flag: Int64s) -> None:
        self._handed = threading.Lock()
        self._handed.acquire()
        self._idle = threading.Event()
        self._idle.set()
        self.done = np.ones(1, np.int64)  # 1 once the call handed over is finished
        # 1 once a call is handed over: set by the calling thread's range (let_workers_in)
        self._handed_flag = handed_flag
        self._call: tuple[Callable[..., None], tuple[Any, ...]] | None = None
        self._error: BaseException | None = None
        threading.Thread(target=self._serve, name=name, daemon=True).start()

    def start(self, kernel: Callable[..., None], arguments: tuple[Any, ...]) -> None:
        """Hands over kernel(*arguments), once the call before it (one that an interrupt
        left unawaited) has finished."""
        self._idle.wait()
        self._idle.clear()
        self.done[0] = 0
        self._error = None
        self._call = (kernel, arguments)
        self._handed.release()

    def finish(self) -> BaseException | None:
        """Returns when the call handed over has finished: its exception, if any, or an
        interrupt of the wait. Until then the kernel still uses the caller's arrays, so an
        interrupt ends the wait only after it."""
        interrupt: KeyboardInterrupt | None = None
        while not self._idle.is_set():
            try:
                self._idle.wait()
            except KeyboardInterrupt as caught:
                interrupt = caught
        error, self._error = self._error, None
        return interrupt or error

    def _serve(self) -> None:
        while True:
            self._handed.acquire()
            self._handed_flag[0] = 0
            assert self._call is not None
            kernel, arguments = self._call
            self._call = None
            try:
                kernel(*arguments)
            except BaseException as error:  # noqa: BLE001 - the caller's, returned by finish
                self._error = error
            del kernel, arguments  # the caller's arrays, not kept alive until the next call
            self._idle.set()
            try:
                await_call(self.done, self._handed_flag, WORKER_SPINS)
            except BaseException:  # noqa: BLE001 - the flags only shorten the waits: never the thread's end
                self.done[0] = 1


def max_threads() -> int:
    """The most threads the kernels use: ``NUMBA_NUM_THREADS``, as Numba reads it from the
    environment (by default the number of CPUs)."""
    return int(vars(numba.config)["NUMBA_NUM_THREADS"])  # set at run time: untyped


# Arrays that the kernels only read (divisors, scale, origin), made once for the small calls.
_ONE, _TWO, _NOUGHT, _ORIGIN = np.ones(1), np.full(1, 2.0), np.zeros(1), np.zeros(6, np.int64)
_NO_SCALE = np.zeros(0)  # weight_sum_tasks' `scale` where the rows' factors are not wanted
_NO_WORKERS = np.zeros(0, np.int64)  # the `handed` flags of a range that hands nothing over


@functools.lru_cache(maxsize=256)
def _run_layout(shape: tuple[int, ...], steps: tuple[tuple[int, ...] | None, ...]) -> tuple[Int64s, Int64s]:
    """The shape and strides arrays of _steps_arguments (the kernels only read them), made once
    for each: building them took a small call longer than the kernel's run."""
    strides = np.zeros((6, len(shape)), np.int64)
    for k, along in enumerate(steps):
        if along is not None:
            strides[k] = along
    return np.array(shape, np.int64), strides


def _steps_arguments(
    kind: int,
    shape: tuple[int, ...],
    n_kept: int,
    steps: tuple[tuple[int, ...] | None, ...],
    p: Any,
    t: Any,
    w: Any,
    out: Any,
    loss: Any,
    divisors: Float64s,
    scale: Float64s,
) -> tuple[Any, ...]:
    """run's arguments for a plan of `shape` (its first n_kept dimensions kept), each
    operand (P, T, W, OUT, LOSS, SCALE: flat arrays as the kernels read them, None where
    absent) `steps` apart along it: those that _arguments makes from a small call's plan,
    so the same bits. `loss`: an array of one value per output (the loss finished by the
    kernel: divided by `divisors`, rounded once), or None: the float64 sum over everything
    into run's `sums` (arguments[RUN_SUMS])."""
    shape_array, strides = _run_layout(shape, steps)
    nothing = np.zeros(1, p.dtype)  # an absent operand: never read, or written and dropped
    sums, finished = np.zeros(1), nothing
    if loss is not None:
        loss_flat = _storage_view(loss.reshape(-1))
        sums, finished = (loss_flat, nothing) if loss.dtype == np.float64 else (sums, loss_flat)
    return (
        kind,
        w is not None,
        steps[OUT] is not None,
        shape_array,
        n_kept,
        strides,
        _ORIGIN,
        p,
        t,
        nothing if w is None else w,
        nothing if out is None else out,
        sums,
        finished,
        divisors,
        scale,
    )


def writable_in_c_order(a: Any, ndim: int, dtype: Any, dtypes: tuple[Any, ...]) -> bool:
    """Whether the Numba type `a` is a writable array in C order of `ndim` dimensions and
    of `dtype`, one of `dtypes`: what small_batch and small_weighted take as they come."""
    return (
        isinstance(a, types.Array) and a.layout == "C" and a.mutable and a.ndim == ndim and a.dtype == dtype in dtypes
    )


# The targets of a batch of samples p of (rows, row) positions: of its shape, one a
# column ((row,) or (1, row)), one a sample ((rows, 1)).
OWN_SHAPE, PER_COLUMN, PER_SAMPLE = range(3)


def as_batch(t: Any) -> Any:
    """Targets as a batch's rows: a vector (one a column) as a row of one."""
    raise NotImplementedError  # pragma: no cover - replaced by the overload in compiled code


@overload(as_batch)
def _as_batch(t: OverloadArg) -> Callable[..., Any]:
    def vector_as_row(t: OverloadArg) -> Any:
        return t.reshape((1, t.size))

    def itself(t: OverloadArg) -> Any:
        return t

    return vector_as_row if t.ndim == 1 else itself


@register_jitable
def overlaps(a: Any, out: Any, at_its_positions: bool) -> bool:
    """Whether `out` shares memory with the array `a`, other than (where at_its_positions
    allows it) over exactly a's positions: the same start, its shape and order checked
    by the caller (each position is then read before it is written)."""
    a0, o0 = a.ctypes.data, out.ctypes.data
    return (a0 != o0 or not at_its_positions) and a0 < o0 + out.nbytes and o0 < a0 + a.nbytes


@register_jitable
def batch_fit(kind: int, summed: int, p: Any, t: Any, out: Any, loss: Any) -> int:
    """How the targets lie along a batch that batch_arguments takes (OWN_SHAPE,
    PER_COLUMN, PER_SAMPLE), or -1 where it does not: a pass that is one flat run (targets
    of the batch's shape, no loss per output), the squared errors, fewer than 2 rows or
    positions a row, targets per sample summed over everything (rows first: the general
    path's), a loss of another size, or `out` of another shape or over an input other
    than predictions (or targets of their shape) themselves. `summed`: the axis (0 or 1)
    summed into a loss per output, or -1."""
    rows, row = p.shape
    if t.shape == p.shape:
        along = OWN_SHAPE
    elif t.shape[0] == 1 and t.shape[1] == row:
        along = PER_COLUMN
    elif t.shape[0] == rows and t.shape[1] == 1:
        along = PER_SAMPLE
    else:
        return -1
    per_output = summed >= 0 and kind != GRAD
    if rows < 2 or row < 2 or kind == SQUARED_ERROR or (along == OWN_SHAPE and not per_output):
        return -1
    if along == PER_SAMPLE and not per_output and reduces(kind):
        return -1
    if per_output and loss.size != (rows if summed == 1 else row):
        return -1
    if writes(kind):
        if out.shape != p.shape:
            return -1
        if overlaps(p, out, True) or overlaps(t, out, along == OWN_SHAPE):
            return -1
    return along


def loss_views(loss: Any, per_output: bool) -> tuple[Any, Any]:
    """run's two views of the loss (see schedule): `loss` as the float64 sums or as the
    values finished in its dtype, the other a scratch value; both scratch values where
    there is no loss per output."""
    raise NotImplementedError  # pragma: no cover - replaced by the overload in compiled code


@overload(loss_views)
def _loss_views(loss: OverloadArg, per_output: OverloadArg) -> Callable[..., tuple[Any, Any]]:
    def as_sums(loss: OverloadArg, per_output: OverloadArg) -> tuple[Any, Any]:
        return loss if per_output else np.zeros(1), np.zeros(1)

    def as_finished(loss: OverloadArg, per_output: OverloadArg) -> tuple[Any, Any]:
        return np.zeros(1), loss if per_output else np.zeros(1, loss.dtype)

    return as_sums if loss.dtype == types.float64 else as_finished


@register_jitable
def batch_arguments(
    kind: int, summed: int, along: int, p: Any, t: Any, out: Any, loss: Any, factor: float, divisor: float
) -> tuple[Any, ...]:
    """run's arguments for a pass over a batch in C order (see batch_fit): over (rows,
    row), or (row, rows) for a loss per column, a column's positions a row apart. The
    arguments that the general path's plan gives, so the same bits; of the types a call
    from Python gives (no literal), so that run is the copy compiled for such a call."""
    rows, row = p.shape
    per_output = summed >= 0 and kind != GRAD
    target_steps = (row, 1) if along == OWN_SHAPE else ((0, 1) if along == PER_COLUMN else (1, 0))
    shape = np.empty(2, np.int64)
    strides = np.zeros((6, 2), np.int64)
    if per_output and summed == 0:
        shape[0], shape[1] = row, rows
        strides[P, 0], strides[P, 1] = 1, row
        strides[T, 0], strides[T, 1] = target_steps[1], target_steps[0]
    else:
        shape[0], shape[1] = rows, row
        strides[P, 0], strides[P, 1] = row, 1
        strides[T, 0], strides[T, 1] = target_steps
    if writes(kind):
        strides[OUT] = strides[P]
    if per_output:
        strides[LOSS, 0] = 1
    sums, finished = loss_views(loss, per_output)
    return (
        kind,
        p.size < 0,
        writes(kind),
        shape,
        np.int64(1 if per_output else 0),
        strides,
        np.zeros(6, np.int64),
        p.reshape(p.size),
        t.reshape(t.size),
        np.zeros(1, p.dtype),
        out.reshape(out.size),
        sums,
        finished,
        np.full(1, divisor if per_output else 1.0),
        np.full(1, factor),
    )


@njit(cache=True, nogil=True, error_model="numpy")
def batch_run_arguments(
    kind: int, summed: int, p: Any, t: Any, out: Any, loss: Any, factor: float, divisor: float
) -> tuple[int, tuple[Any, ...]]:
    """batch_fit's answer and batch_arguments (stand-ins where it is -1): the plan of a
    batch's pass, which small_batch runs, or the workers share (NumbaBackend._pass)."""
    rows_of_targets = as_batch(t)
    along = batch_fit(kind, summed, p, rows_of_targets, out, loss)
    return along, batch_arguments(kind, summed, max(along, 0), p, rows_of_targets, out, loss, factor, divisor)


@register_jitable
def elementwise(kind: int, p: Operand, t: Operand, out: Operand, factor: float) -> None:
    """The squared errors (kind SQUARED_ERROR) or the gradient (GRAD) of p.size contiguous
    positions into out, as a run's pass writes them (`write`)."""
    if kind == SQUARED_ERROR:
        for i in range(p.size):
            write(SQUARED_ERROR, out, i, factor, 1.0, load(p, i) - load(t, i))
    else:
        for i in range(p.size):
            write(GRAD, out, i, factor, 1.0, load(p, i) - load(t, i))


def flat_total_of(kind: int, p: Any, t: Any, out: Any, factor: float) -> float:
    """small_flat's body: run_flat over the arrays, or -1.0 where they are not all of one
    shape of one or two dimensions, all contiguous in C order or all in Fortran order,
    writable and of one float dtype of 32 or 64 bits, or `out` overlaps an input other
    than over exactly its positions (the same start, shape and order: each position is
    read before it is written). Misaligned arrays are read in place, as the general path
    reads them (Numba types them as aligned)."""
    raise NotImplementedError  # pragma: no cover - replaced by the overload in compiled code


@overload(flat_total_of)
def _flat_total_of(
    kind: OverloadArg, p: OverloadArg, t: OverloadArg, out: OverloadArg, factor: OverloadArg
) -> Callable[..., float]:
    arrays = (p, t, out)
    if not all(
        isinstance(a, types.Array)
        and a.layout == p.layout in ("C", "F")
        and a.mutable
        and a.ndim == p.ndim in (1, 2)
        and a.dtype == p.dtype in (types.float32, types.float64)
        for a in arrays
    ):
        # Decided from the types alone: arrays of another kind compile nothing but this,
        # a tenth of a second, where a copy that runs the kernels takes about 5 s (the
        # kernels' code linked in and made machine code again), so only one and two
        # dimensions (vectors, batches of samples) have one.
        def unfit(kind: OverloadArg, p: OverloadArg, t: OverloadArg, out: OverloadArg, factor: OverloadArg) -> float:
            return -1.0

        return unfit

    def total_of(kind: OverloadArg, p: OverloadArg, t: OverloadArg, out: OverloadArg, factor: OverloadArg) -> float:
        if t.shape != p.shape or out.shape != p.shape:
            return -1.0
        if overlaps(p, out, True) or overlaps(t, out, True):
            return -1.0
        n = p.size
        p, t, out = unmanaged(p).reshape(n), unmanaged(t).reshape(n), unmanaged(out).reshape(n)
        if not reduces(kind) and n <= CHUNK:
            # Nothing summed: one loop, without a run's blocks, cascade and scratch arrays
            # (about 0.45 us a call, more than a thousand positions' work).
            elementwise(kind, p, t, out, factor)
            return 0.0
        # `weighted` not a literal: run_flat is then the copy that a call from Python runs
        # (NumbaBackend._flat's), not one compiled again at such a call's first use.
        return run_flat(kind, n < 0, p, t, p, out, factor)

    def fortran_total_of(
        kind: OverloadArg, p: OverloadArg, t: OverloadArg, out: OverloadArg, factor: OverloadArg
    ) -> float:
        return flat_total_of(kind, p.T, t.T, out.T, factor)  # all in Fortran order: one flat run in memory

    return fortran_total_of if p.layout == "F" else total_of


@njit(cache=True, nogil=True, error_model="numpy")
def small_flat(kind: int, p: Any, t: Any, out: Any, factor: float) -> float:
    """One flat pass of a small call over predictions, targets and out as they come (see
    NumbaBackend._small_call): the checks of their layout are Numba's typing of them, and
    those of shape and overlap compiled, where in Python they took about 2 us a call.
    Returns the float64 sum (0 where the pass sums nothing), or -1.0, which no sum of
    squares is, where the arrays are not fit (flat_total_of)."""
    return flat_total_of(kind, p, t, out, factor)


def batch_total_of(kind: int, summed: int, p: Any, t: Any, out: Any, loss: Any, factor: float, divisor: float) -> float:
    """small_batch's body: run over batch_arguments, or -1.0 where batch_fit does not take
    the arrays or their types are not a batch's: predictions and out of two dimensions,
    targets of one or two, the loss of one, all in C order, writable, of one dtype
    (float32, float64, or float16 as its bits). Misaligned arrays are read in place, as
    the general path reads them (Numba types them as aligned)."""
    raise NotImplementedError  # pragma: no cover - replaced by the overload in compiled code


@overload(batch_total_of)
def _batch_total_of(
    kind: OverloadArg,
    summed: OverloadArg,
    p: OverloadArg,
    t: OverloadArg,
    out: OverloadArg,
    loss: OverloadArg,
    factor: OverloadArg,
    divisor: OverloadArg,
) -> Callable[..., float]:
    def fit(a: Any, ndim: int) -> bool:
        return writable_in_c_order(a, ndim, p.dtype, (types.float32, types.float64, types.uint16))

    if not (fit(p, 2) and fit(out, 2) and fit(loss, 1) and (fit(t, 1) or fit(t, 2))):

        def unfit(
            kind: OverloadArg,
            summed: OverloadArg,
            p: OverloadArg,
            t: OverloadArg,
            out: OverloadArg,
            loss: OverloadArg,
            factor: OverloadArg,
            divisor: OverloadArg,
        ) -> float:
            return -1.0

        return unfit

    def total_of(
        kind: OverloadArg,
        summed: OverloadArg,
        p: OverloadArg,
        t: OverloadArg,
        out: OverloadArg,
        loss: OverloadArg,
        factor: OverloadArg,
        divisor: OverloadArg,
    ) -> float:
        # The workers' plan, compiled here for the types they take too (a first threaded
        # call then compiles nothing).
        along, arguments = batch_run_arguments(kind, summed, p, t, out, loss, factor, divisor)
        if along < 0:
            return -1.0
        run(*arguments)
        return float(arguments[RUN_SUMS][0])

    return total_of


@njit(cache=True, nogil=True, error_model="numpy")
def small_batch(kind: int, summed: int, p: Any, t: Any, out: Any, loss: Any, factor: float, divisor: float) -> float:
    """One pass of a small call over a batch (see batch_fit) and its loss as they come, in
    one call from Python: its layout checked by Numba's typing, its shapes and overlap and
    its plan in compiled code, where in Python they took twice the run's time. Returns the
    float64 sum over everything where the pass sums it (otherwise a value of no use, never
    -1.0), or -1.0 where the arrays are not fit (batch_total_of)."""
    return batch_total_of(kind, summed, p, t, out, loss, factor, divisor)


def weighted_total_of(kind: int, mean: bool, per_row: bool, p: Any, t: Any, w: Any, out: Any, loss: Any) -> Any:
    """small_weighted's body: (the float64 sum, the mean's divisor: the weight sum, times
    the row's length for weights per sample; 1.0 for a sum or a loss per row), or
    (-1.0, 1.0) where the call is not one that NumbaBackend._weighted_small_call takes,
    or the general path raises or warns for it (a negative weight, all weights nan, a
    weight sum of 0 for a mean), or the arrays' types are not fit: p, t, w and out all
    of one or two dimensions (two for a loss per row), in C order, writable, of one float
    dtype of 32 or 64 bits, and `loss` of one dimension and that dtype (rows, or none).
    Misaligned weights are read in place."""
    raise NotImplementedError  # pragma: no cover - replaced by the overload in compiled code


@overload(weighted_total_of)
def _weighted_total_of(
    kind: OverloadArg,
    mean: OverloadArg,
    per_row: OverloadArg,
    p: OverloadArg,
    t: OverloadArg,
    w: OverloadArg,
    out: OverloadArg,
    loss: OverloadArg,
) -> Callable[..., Any]:
    def fit(a: Any, ndim: int) -> bool:
        return writable_in_c_order(a, ndim, p.dtype, (types.float32, types.float64))

    if not (p.ndim in (1, 2) and all(fit(a, p.ndim) for a in (p, t, w, out)) and fit(loss, 1)):

        def unfit(
            kind: OverloadArg,
            mean: OverloadArg,
            per_row: OverloadArg,
            p: OverloadArg,
            t: OverloadArg,
            w: OverloadArg,
            out: OverloadArg,
            loss: OverloadArg,
        ) -> Any:
            return -1.0, 1.0

        return unfit

    def total_of(
        kind: OverloadArg,
        mean: OverloadArg,
        per_row: OverloadArg,
        p: OverloadArg,
        t: OverloadArg,
        w: OverloadArg,
        out: OverloadArg,
        loss: OverloadArg,
    ) -> Any:
        n = p.size
        if t.shape != p.shape or n == 0 or (mean and n == 1):  # one position: weights that may cancel
            return -1.0, 1.0
        row = p.shape[p.ndim - 1]
        rows = n // row
        per_sample = w.shape != p.shape
        if per_sample and not (
            p.ndim == 2 and w.size == rows and w.shape[0] == rows and rows >= 2 and row >= 2 and not per_row
        ):
            return -1.0, 1.0
        if per_row and (p.ndim != 2 or row < 2 or rows < 2 or (reduces(kind) and loss.size != rows)):
            return -1.0, 1.0
        if writes(kind):
            if out.shape != p.shape:
                return -1.0, 1.0
            if overlaps(p, out, True) or overlaps(t, out, True) or overlaps(w, out, False):
                return -1.0, 1.0
        weights = w.reshape(w.size)
        negative = numbers = 0  # counts, not flags or an early return: a loop of vectors
        for i in range(weights.size):
            negative += weights[i] < 0
            numbers += weights[i] == weights[i]
        if negative or not numbers:  # the general path's error; all nan, which it takes
            return -1.0, 1.0
        p, t, out = p.reshape(n), t.reshape(n), out.reshape(n)
        weighted = n >= 0  # not a literal: run_flat and run are then the copies a call from Python runs
        nothing, origin = np.zeros(1, p.dtype), np.zeros(6, np.int64)
        shape = np.empty(2, np.int64)
        shape[0], shape[1] = rows, row
        strides = np.zeros((6, 2), np.int64)
        strides[P, 0], strides[P, 1] = row, 1
        strides[T] = strides[P]
        strides[W, 0] = 1
        if writes(kind):
            strides[OUT] = strides[P]
        if per_row:
            # As _weighted_small_call's plan: each row's weight sum the divisor of its
            # loss and of its gradient's factor.
            divisors, scale = np.ones(1), np.full(1, 2.0)
            strides[LOSS, 0] = 1
            if mean:
                divisors = np.empty(rows)
                weight_strides = np.zeros((6, 2), np.int64)  # the weights as predictions, targets of 0
                weight_strides[P], weight_strides[LOSS] = strides[P], strides[LOSS]
                weight_sums = (np.int64(REDUCE_DIFFERENCE), n < 0, n < 0, shape, np.int64(1), weight_strides, origin)
                zero = np.zeros(1, p.dtype)  # the targets: not `nothing`, which put_loss writes
                run(*weight_sums, weights, zero, nothing, nothing, divisors, nothing, np.ones(1), np.zeros(1))
                for r in range(rows):
                    if divisors[r] == 0.0:  # the general path's warning
                        return -1.0, 1.0
                scale = 2.0 / divisors
                if writes(kind):
                    strides[SCALE, 0] = 1
            strides[W] = strides[P]
            if not reduces(kind):
                strides[LOSS, 0] = 0
            sums, finished = loss_views(loss, reduces(kind))
            run(
                kind,
                weighted,
                writes(kind),
                shape,
                np.int64(1),
                strides,
                origin,
                p,
                t,
                weights,
                out,
                sums,
                finished,
                divisors if reduces(kind) else np.ones(1),
                scale if writes(kind) else np.zeros(1),
            )
            return 0.0, 1.0
        denominator = 1.0
        if mean:
            denominator = flat_sum(weights) * (float(row) if per_sample else 1.0)
            if denominator == 0.0:  # the general path's warning
                return -1.0, 1.0
        factor = (2.0 / denominator if mean else 2.0) if kind != REDUCE else 0.0
        if not per_sample:
            return run_flat(kind, weighted, p, t, weights, out, factor), denominator
        # As _weighted_small_call's plan: rows of up to a block summed first, as
        # _run_rows_first sums them; longer rows, and the gradient alone, in one run.
        rows_first = kind != GRAD and row <= BLOCK
        if rows_first:
            strides[LOSS, 0] = 1
        layout = (kind, weighted, writes(kind), shape, np.int64(1 if rows_first else 0), strides, origin)
        sums, scale = np.zeros(1), np.full(1, factor)
        if rows_first:
            total = rows_first_total(rows, *layout, p, t, weights, out, sums, nothing, np.ones(1), scale)
            return total, denominator
        run(*layout, p, t, weights, out, sums, nothing, np.ones(1), scale)
        return float(sums[0]), denominator

    return total_of


@njit(cache=True, nogil=True, error_model="numpy")
def small_weighted(kind: int, mean: bool, per_row: bool, p: Any, t: Any, w: Any, out: Any, loss: Any) -> Any:
    """One pass of a weighted small call (weights per position, or per sample of a batch,
    over everything; weights per position with a loss per row) in one call from Python:
    the weights' checks and sums and the plan compiled, where in Python they took twice
    the run's time. (The float64 sum, the mean's divisor), or (-1.0, 1.0) where the call
    is not fit (weighted_total_of)."""
    return weighted_total_of(kind, mean, per_row, p, t, w, out, loss)


@njit(cache=True, nogil=True, error_model="numpy")
def flat_sum(values: Operand) -> float:
    """The float64 sum of a flat array (weights, row sums) as the general path sums one: a
    run of reduce_difference of the values and 0. One call from Python, where run's
    fifteen arguments took about 1 us more; every argument is of the type that a call of
    run from Python has (no literal: Numba would compile run again for one). Up to a
    block of values (a small call's weights) is that block's sum, without the run's set-up."""
    if values.size <= BLOCK:
        return block_sum(values, values.size, np.zeros(LANES))
    no = values.size < 0
    strides = np.zeros((6, 1), np.int64)
    strides[P, 0] = 1
    nothing = np.zeros(1, values.dtype)
    sums = np.zeros(1)
    run(
        np.int64(REDUCE_DIFFERENCE),
        no,
        no,
        np.full(1, values.size),
        np.int64(0),
        strides,
        np.zeros(6, np.int64),
        values,
        nothing,
        nothing,
        nothing,
        sums,
        nothing,
        np.ones(1),
        np.zeros(1),
    )
    return float(sums[0])


def _small_call_out(out: Any, p: np.ndarray, t: np.ndarray, w: np.ndarray | None, fortran: bool) -> np.ndarray | None:
    """The array a small call writes: `out`, or a new one like predictions; None where `out`
    is not fit for it (of another dtype, shape or order, read-only, misaligned, or over an
    input other than predictions or targets of their shape themselves)."""
    if out is None:
        return np.empty_like(p)
    if type(out) is not np.ndarray or out.dtype != p.dtype or out.shape != p.shape:
        return None
    flags = out.flags
    if not (
        (flags.f_contiguous if fortran else flags.c_contiguous)
        and flags.aligned
        and flags.writeable
        and (out is p or not _may_share_memory(out, p))
        and ((out is t and t.shape == p.shape) or not _may_share_memory(out, t))
        and (w is None or not _may_share_memory(out, w))
    ):
        return None
    return out


# Those that small_flat and small_batch take as they come: the kernels read 16-bit floats
# as their bits (_storage_view), which they do not make.
_AS_THEY_COME = frozenset((np.dtype(np.float32), np.dtype(np.float64)))
# _small_call's pass of each reduction, for each job.
_SMALL_CALL_KINDS = (
    {"mean": REDUCE, "sum": REDUCE, "none": SQUARED_ERROR},
    {"mean": GRAD, "sum": GRAD},
    {"mean": REDUCE_AND_GRAD, "sum": REDUCE_AND_GRAD},
)
# No loss per output, as small_batch and batch_run_arguments take it: an array of the
# operands' dtype (as the kernels read them), never read or written.
_NO_LOSS = {np.dtype(name): np.zeros(0, name) for name in ("float32", "float64", "uint16")}


class NumbaBackend:
    """Kernels compiled by Numba at first use (cached on disk), run on Python threads."""

    name = "numba"
    rows_first = True

    def __init__(self) -> None:
        self.small_call: Callable[..., Any] | None = self._small_call
        self.version: str = numba.__version__
        self._threads = max_threads()
        self._workers: list[_Worker] = []
        self._handed_flags = np.zeros(self._threads, np.int64)  # worker i's is [i]
        self._team = threading.Lock()  # held by the call that uses the workers
        backend = weakref.ref(self)

        def forget_workers() -> None:  # in a forked child: its parent's threads do not exist there
            alive = backend()
            if alive is not None:
                alive._workers, alive._team = [], threading.Lock()
                alive._handed_flags[:] = 0

        os.register_at_fork(after_in_child=forget_workers)

    def _small_call(
        self, job: int, predictions: Any, targets: Any, weights: Any, axis: Any, reduction: Any, keepdims: Any, out: Any
    ) -> Any:
        """The commonest calls in one step (see fastmse._backends.small_call), small or
        large (on the workers too from PARALLEL_MIN positions): NumPy arrays of one float
        dtype, all contiguous in C order or all in Fortran order; weighted ones (aligned)
        as _weighted_small_call takes them. Unweighted, targets of the predictions' shape:
        the loss over everything, or (C order) over a leading or a trailing axis; the
        squared errors (``reduction="none"``); the gradient over everything or one axis
        (one factor: a flat walk). Targets per column ((k,) or (1, k)) or per sample
        ((N, 1)) of (N, k) predictions in C order: the loss over either axis or (per
        column) over everything, the gradient over anything. `out` may be predictions or
        targets of their shape themselves (on small_flat's and small_batch's path, a view
        of their very positions too), and overlap nothing else.
        run_flat or run, with the arguments that the general path's plan gives them: the
        same bits. NotImplemented for other calls. Those on one thread over float32 or
        float64 arrays of one or two dimensions go straight to small_flat (one flat run)
        or small_batch, which check their layout, shapes and overlap in compiled code
        (misaligned arrays are read in place there); others take _pass."""
        p, t = predictions, targets
        if (
            type(p) is not np.ndarray
            or type(t) is not np.ndarray
            or (dtype := p.dtype) not in FLOAT_DTYPES
            or (t.dtype is not dtype and t.dtype != dtype)  # equal, not the same: unpickled arrays
            or keepdims is not False
            or not 0 < p.size
            or type(reduction) is not str
            or (kind := _SMALL_CALL_KINDS[job].get(reduction, -1)) < 0
        ):
            return NotImplemented
        if weights is not None:
            if p.ndim == 0 or not (p.flags.aligned and t.flags.aligned):
                return NotImplemented
            return self._weighted_small_call(job, p, t, weights, axis, reduction, out)
        count, summed = p.size, -1  # summed: the one axis summed, normalized
        if axis is not None:
            if type(axis) is not int or not -p.ndim <= axis < p.ndim or kind == SQUARED_ERROR:
                return NotImplemented
            summed = axis % p.ndim
            count = p.shape[summed]
        mean = reduction == "mean"
        factor = 2.0 / count if mean else 2.0
        loss = None if summed < 0 or job == 1 else np.empty(p.shape[:summed] + p.shape[summed + 1 :], dtype)
        total, written = -1.0, None
        if job == 2 and loss is not None and loss.ndim and count == 1:  # a 0-d loss: the general path's scalar
            written = self._loss_per_position(p, t, out, loss)
            if written is not None:
                return loss, written
        if (
            (self._threads == 1 or p.size < PARALLEL_MIN)  # not self._parallel(p.size), a call less
            and (loss is None or p.ndim == 2)
            and dtype in _AS_THEY_COME
            and (out is None or type(out) is np.ndarray and out.dtype is dtype)
        ):
            written = p if kind == REDUCE else (np.empty_like(p) if out is None else out)  # p: never written
            if loss is None and t.shape == p.shape:
                total = small_flat(kind, p, t, written, factor)
            else:
                no_loss = _NO_LOSS[dtype] if loss is None else loss
                total = small_batch(kind, summed, p, t, written, no_loss, factor, float(count) if mean else 1.0)
        if total == -1.0:
            total, written = self._pass(kind, summed, p, t, out, loss, factor, float(count) if mean else 1.0)
            if total == -1.0:
                return NotImplemented
        if job == 1 or kind == SQUARED_ERROR:
            return written
        if loss is None:
            loss = scalar_loss(dtype, total / count if mean else total)
        return loss if job == 0 else (loss, written)

    def _loss_per_position(self, p: np.ndarray, t: np.ndarray, out: Any, loss: np.ndarray) -> Any:
        """_small_call's mse_and_grad of a loss per position (one position an output, as
        (N, 1) with axis=-1): the loss and the gradient in one pass (C++: rows of one), on
        the workers too where many, where the general path has two: the array written, or
        None where it does not take the call (float16, an order other than C, `out` over
        an input)."""
        if not (
            p.dtype in _AS_THEY_COME
            and t.shape == p.shape
            and p.flags.c_contiguous
            and t.flags.c_contiguous
            and p.flags.aligned
            and t.flags.aligned
        ):
            return None
        out = _small_call_out(out, p, t, None, False)
        if out is None or out is p or out is t:  # in place: the loop's vectors would give way to scalars
            return None
        arguments = (_writeable(p.reshape(-1)), _writeable(t.reshape(-1)), out.reshape(-1), loss.reshape(-1))
        n_chunks = (p.size + CHUNK - 1) // CHUNK
        if self._parallel(p.size):
            self._on_threads(loss_per_position_tasks, n_chunks, arguments)
        else:
            loss_per_position_tasks(_NO_WORKERS, 0, n_chunks, *arguments)
        return out

    def _pass(
        self, kind: int, summed: int, p: np.ndarray, t: np.ndarray, out: Any, loss: Any, factor: float, divisor: float
    ) -> tuple[float, Any]:
        """_small_call's pass over arrays that small_flat and small_batch do not take as
        they come (16-bit, read-only, of more dimensions, or large enough for the
        workers): (its float64 sum, the array written), or (-1.0, None) where _small_call
        does not take them."""
        flags, target_flags = p.flags, t.flags
        if p.ndim == 0 or not (flags.aligned and target_flags.aligned):
            return -1.0, None
        # Arrays all in Fortran order (DataFrame.to_numpy()'s) are one flat run in memory
        # too, as the general path's plan has them, where no loss is per output.
        fortran = not (flags.c_contiguous and target_flags.c_contiguous)
        if fortran and not (flags.f_contiguous and target_flags.f_contiguous):
            return -1.0, None
        one_run = t.shape == p.shape and loss is None
        unfit_targets = t.shape != p.shape and (p.ndim != 2 or not 0 < t.ndim <= 2)  # not a batch's
        if not one_run and (fortran or unfit_targets or p.ndim < 2 or 0 < summed < p.ndim - 1):
            return -1.0, None  # a batch (batch_fit): in C order, over its first or last axis
        if kind != REDUCE:
            out = _small_call_out(out, p, t, None, fortran)
            if out is None:
                return -1.0, None
        p_flat, t_flat = _flat_operand(p), _flat_operand(t)
        if not (flags.writeable and target_flags.writeable):
            p_flat, t_flat = _writeable(p_flat), _writeable(t_flat)
        out_flat = p_flat if out is None else _flat_operand(out)  # never written by REDUCE
        if one_run:
            return self._flat(kind, False, p_flat, t_flat, p_flat, out_flat, factor), out
        # A batch of (rows, row) positions, its loss summed over rows (summed 1) or columns (0).
        rows = p.size // p.shape[-1] if summed == p.ndim - 1 else p.shape[0]
        batch = (rows, p.size // rows)
        batch_call = (
            kind,
            -1 if loss is None else min(summed, 1),
            p_flat.reshape(batch),
            t_flat.reshape(batch if t.shape == p.shape else t.shape),
            out_flat.reshape(batch),
            _NO_LOSS[p_flat.dtype] if loss is None else _storage_view(loss.reshape(-1)),
            factor,
            divisor,
        )
        if not self._parallel(p.size):
            total = small_batch(*batch_call)
            return (total, out) if total != -1.0 else (-1.0, None)
        along, arguments = batch_run_arguments(*batch_call)
        if along < 0:
            return -1.0, None
        self._run_arguments(arguments, p.size)
        return float(arguments[RUN_SUMS][0]), out

    def _weighted_small_call(
        self, job: int, p: np.ndarray, t: np.ndarray, w: Any, axis: Any, reduction: str, out: Any
    ) -> Any:
        """_small_call with weights per sample that cancel from a loss per sample (the
        unweighted call), or of predictions' dtype, in C order with predictions and targets
        of one shape: per position, the loss over everything or over the last axis
        (a loss per row); per sample ((N, 1) on (N, k)), the loss over everything; the
        gradient and both likewise. The weight sums of a mean as fastmse._compute sums them
        (a run of reduce_difference over the weights), then the runs of the general path's
        plan: in one compiled call (small_weighted) for float32 and float64 arrays of one
        or two dimensions on one thread, otherwise from here. NotImplemented for other
        calls, and where the general path raises or warns: a negative weight, a weight sum
        of 0."""
        if (
            type(w) is np.ndarray
            and w.dtype in FLOAT_DTYPES
            and w.shape == (p.shape[0], 1)
            and p.ndim == 2
            and reduction == "mean"
            and type(axis) is int
            and axis in (-1, 1)
            and (out is None or not _may_share_memory(out, w))
        ):
            # Weights per sample with a loss per sample cancel from the mean where all are
            # positive and finite, as fastmse._compute._without_cancelling_weights has it.
            if np.minimum.reduce(w, axis=None) > 0 and np.maximum.reduce(w, axis=None) < math.inf:
                return self._small_call(job, p, t, None, axis, reduction, False, out)
            return NotImplemented
        dtype = p.dtype
        if (
            (axis is None or type(axis) is int and axis in (-1, p.ndim - 1))  # over everything, or per row
            and reduction != "none"
            and dtype in _AS_THEY_COME
            and type(w) is np.ndarray
            and (w.dtype is dtype or w.dtype == dtype)
            and (self._threads == 1 or p.size < PARALLEL_MIN)
            and (out is None or type(out) is np.ndarray and out.dtype is dtype)
        ):
            kind = (REDUCE, GRAD, REDUCE_AND_GRAD)[job]
            written = p if job == 0 else (np.empty_like(p) if out is None else out)  # p: never written
            per_row = axis is not None
            losses = np.empty(p.shape[:-1], dtype) if per_row and job != 1 else _NO_LOSS[dtype]
            total, denominator = small_weighted(kind, reduction == "mean", per_row, p, t, w, written, losses)
            if total != -1.0:
                if job == 1:
                    return written
                result = losses if per_row else scalar_loss(dtype, total / denominator)  # 1.0 for a sum
                return result if job == 0 else (result, written)
        if (
            type(w) is not np.ndarray
            or w.dtype != p.dtype
            or reduction == "none"
            or t.shape != p.shape
            or not (p.flags.c_contiguous and t.flags.c_contiguous and w.flags.c_contiguous and w.flags.aligned)
        ):
            return NotImplemented
        per_sample = w.shape != p.shape
        if per_sample and (p.ndim != 2 or w.shape != (p.shape[0], 1) or min(p.shape) < 2 or axis is not None):
            return NotImplemented
        count = p.size
        if axis is not None:  # a loss per row, weighted per position
            if type(axis) is not int or not -p.ndim <= axis < p.ndim or axis % p.ndim != p.ndim - 1:
                return NotImplemented
            count = p.shape[-1]
            if count < 2 or p.size < 2 * count:
                return NotImplemented
        mean = reduction == "mean"
        # The general path's error (a NaN passes); a mean's weights are checked as they are
        # summed (_weight_sums).
        if not mean and not np.fmin.reduce(w, axis=None) >= 0:
            return NotImplemented
        if p.size == 1 and mean:  # one position: weights that may cancel
            return NotImplemented
        if job != 0:
            out = _small_call_out(out, p, t, w, False)
            if out is None:
                return NotImplemented
        p_flat, t_flat, w_flat = _flat_operand(p), _flat_operand(t), _flat_operand(w)
        if not (p.flags.writeable and t.flags.writeable and w.flags.writeable):
            p_flat, t_flat, w_flat = _writeable(p_flat), _writeable(t_flat), _writeable(w_flat)
        out_flat = None if out is None else _flat_operand(out)
        kind = (REDUCE, GRAD, REDUCE_AND_GRAD)[job]
        rows = p.size // count if axis is not None else p.shape[0]
        row = p.size // rows
        if axis is not None:
            # Weight sums per row, each the loss's divisor and its gradient factor's.
            divisors, scale = (
                (np.empty(rows), np.empty(rows) if out is not None else _NO_SCALE) if mean else (_ONE, _TWO)
            )
            loss = np.empty(p.shape[:-1], p.dtype) if job != 1 else None
            steps = (row, 1)
            pass_arguments = _steps_arguments(
                kind,
                (rows, row),
                1,
                (
                    steps,
                    steps,
                    steps,
                    steps if out is not None else None,
                    (1, 0) if loss is not None else None,
                    (1, 0) if mean and out is not None else None,
                ),
                p_flat,
                t_flat,
                w_flat,
                out_flat,
                loss,
                divisors if loss is not None else _ONE,
                scale if out is not None else _NOUGHT,
            )
            in_pass = None  # the weight sums found in the pass
            if mean and row <= BLOCK and dtype in _AS_THEY_COME and self._parallel(p.size):
                in_pass = self._weighted_rows(kind, row, p_flat, t_flat, w_flat, out_flat, loss, divisors)
            if in_pass is None:
                if mean and self._weight_sums(w_flat, divisors, p.size, scale) is None:
                    return NotImplemented
                self._run_arguments(pass_arguments, p.size)
            elif not in_pass:
                return NotImplemented
            if job == 1:
                return out
            return loss if job == 0 else (loss, out)
        if mean and job == 0 and not per_sample and dtype in _AS_THEY_COME and self._parallel(p.size):
            sums = self._weighted_mean(p_flat, t_flat, w_flat)  # the loss and its weights' total in one pass
            if sums is None or sums[1] == 0.0:
                return NotImplemented  # as below
            return scalar_loss(p.dtype, sums[0] / sums[1])
        denominator = 1.0
        if mean:
            total_weights = self._weight_sums(w_flat, None, w_flat.size, _NO_SCALE)
            if total_weights is None:
                return NotImplemented
            denominator = total_weights * float(row) if per_sample else total_weights
            if denominator == 0.0:
                return NotImplemented  # the general path's warning
        factor = 2.0 / denominator if mean else 2.0
        if not per_sample:  # one flat run
            total = self._flat(
                kind, True, p_flat, t_flat, w_flat, p_flat if out_flat is None else out_flat, factor if job else 0.0
            )
        else:
            # Rows of up to a block summed first (fastmse._compute._two_stage), as
            # _run_rows_first sums them; longer rows, and the gradient alone, in one run
            # over (N, k).
            rows_first = job != 1 and row <= BLOCK
            steps = (row, 1)
            steps_arguments = (
                kind,
                (rows, row),
                1 if rows_first else 0,
                (steps, steps, (1, 0), steps if out is not None else None, (1, 0) if rows_first else None, None),
                p_flat,
                t_flat,
                w_flat,
                out_flat,
                np.zeros(1) if rows_first else None,  # the rows' loss: a stand-in
                _ONE,
                np.array((factor if job else 0.0,)),
            )
            if rows_first:
                total = self._rows_first_total(_steps_arguments(*steps_arguments), rows, p.size)
            else:
                total = self._steps(*steps_arguments)
        if job == 1:
            return out
        loss = scalar_loss(p.dtype, total / denominator if mean else total)
        return loss if job == 0 else (loss, out)

    def _run(self, kind: int, plan: Plan) -> None:
        if _is_flat(plan):
            self._run_flat(kind, plan)
        elif plan.rows_first:
            self._run_rows_first(kind, plan)
        else:
            self._run_arguments(_arguments(kind, plan), math.prod(plan.shape))

    def _parallel(self, size: int) -> bool:
        """Whether a pass over `size` positions runs on the workers as well."""
        return self._threads > 1 and size >= PARALLEL_MIN

    def _run_arguments(self, arguments: tuple[Any, ...], size: int) -> None:
        """run(*arguments), a pass over `size` positions, its tasks shared with the workers
        where that is large."""
        if not self._parallel(size):
            run(*arguments)
            return
        mode, n_tasks, task_arguments, partials = schedule(*arguments)
        if n_tasks:
            self._on_threads(tasks, n_tasks, (mode, task_arguments, partials))
            combine_chunks(task_arguments, partials)

    def _steps(self, *steps_arguments: Any) -> float:
        """run over _steps_arguments(*steps_arguments); its float64 sum over everything
        where it has no loss per output."""
        arguments = _steps_arguments(*steps_arguments)
        self._run_arguments(arguments, math.prod(steps_arguments[1]))
        return float(arguments[RUN_SUMS][0])

    def _weight_sums(self, weights: np.ndarray, row_sums: Float64s | None, size: int, scale: Float64s) -> float | None:
        """The sums of `weights` (as _flat_operand gives them) as reduce_difference sums
        them (the weights as its predictions, 0 as its targets): a sum per row into
        `row_sums` (rows of weights.size // row_sums.size; returns 0.0), or with row_sums None
        their total, returned, on the workers too where `size` positions (the loss's) are
        many; rows get their gradient factor into `scale` where it is not empty. None where
        the general path may raise or warn, and where it is left to decide (weight_sum_tasks'
        checks): a weight whose sign bit is set, a weight that is NaN, a row whose weights
        sum to 0 (a total of 0 is the caller's to find)."""
        zero = np.zeros(1, weights.dtype)  # the targets
        if row_sums is None:
            weight_arguments = _steps_arguments(
                REDUCE_DIFFERENCE,
                (weights.size,),
                0,
                ((1,), *[None] * 5),
                weights,
                zero,
                None,
                None,
                None,
                _ONE,
                _NOUGHT,
            )
        else:
            row = weights.size // row_sums.size
            layout = ((row, 1), None, None, None, (1, 0), None)
            weight_arguments = _steps_arguments(
                REDUCE_DIFFERENCE, (row_sums.size, row), 1, layout, weights, zero, None, None, row_sums, _ONE, _NOUGHT
            )
        mode, n_tasks, task_arguments, partials = schedule(*weight_arguments)
        if n_tasks == 0:  # no weights: not a call that _weighted_small_call takes
            return None
        found = np.zeros(2, np.int64)
        kernel_arguments = (n_tasks, mode, task_arguments, partials, scale, found)
        if self._parallel(size):
            self._on_threads(weight_sum_tasks, n_tasks, kernel_arguments)
        else:
            weight_sum_tasks(_NO_WORKERS, 0, n_tasks, *kernel_arguments)
        combine_chunks(task_arguments, partials)
        if found[UNUSABLE_ROW] or found[SIGNED_WEIGHT]:
            return None
        if row_sums is None:
            total = float(weight_arguments[RUN_SUMS][0])
            return None if math.isnan(total) else total
        if mode != ROW_MODE:  # rows of more than a block, their sums finished by combine_chunks
            if not (row_sums > 0.0).all():  # weights without a sign: a sum of 0 or NaN
                return None
            if scale.size:
                with np.errstate(over="ignore"):  # a subnormal weight sum's factor: inf, as in the kernel
                    np.divide(2.0, row_sums, out=scale)
        return 0.0

    def _weighted_rows(
        self,
        kind: int,
        row: int,
        p: Operand,
        t: Operand,
        w: Operand,
        out: Operand | None,
        loss: np.ndarray | None,
        row_sums: Float64s,
    ) -> bool | None:
        """A pass of a mean per row (rows of `row` positions, row_sums.size of them)
        weighted per position that finds its weight sums itself (weighted_rows_tasks), on
        the workers: True once done; False where the general path decides (a weight whose
        sign bit is set, a row whose weights sum to 0 or NaN); None, before anything is
        written, where a gradient's weights hold a 0 or a NaN (weight_checks): the weights'
        own pass then finds whether a row's sum is 0 or NaN, ahead of `out`."""
        found = np.zeros(2, np.int64)
        if writes(kind):
            self._on_threads(weight_checks, (w.size + CHUNK - 1) // CHUNK, (w, found))
            if found[SIGNED_WEIGHT]:
                return False
            if found[UNUSABLE_ROW]:
                return None
        losses = np.zeros(1, p.dtype) if loss is None else loss.reshape(-1)
        arguments = (kind, row, p, t, w, p if out is None else out, losses, row_sums, found)
        self._on_threads(weighted_rows_tasks, row_sums.size, arguments)
        return not found.any()

    def _weighted_mean(self, p: Operand, t: Operand, w: Operand) -> tuple[float, float] | None:
        """The float64 sum of a flat weighted run (_flat's REDUCE) and its weights' total
        (_weight_sums'), in one pass on the workers (weighted_mean_tasks); None where
        _weight_sums gives None for a total."""
        n_chunks = (p.size + CHUNK - 1) // CHUNK
        partials, weight_partials = np.empty(n_chunks), np.empty(n_chunks)
        found = np.zeros(2, np.int64)
        self._on_threads(weighted_mean_tasks, n_chunks, (p, t, w, partials, weight_partials, found))
        total_weights = flat_total(weight_partials)
        if found[SIGNED_WEIGHT] or math.isnan(total_weights):
            return None
        return flat_total(partials), total_weights

    def _flat(
        self, kind: int, weighted: bool, p: Operand, t: Operand, w: Operand, out: Operand, factor: float
    ) -> float:
        """run_flat(kind, weighted, p, t, w, out, factor), its chunks shared with the
        workers where the run is large."""
        if not self._parallel(p.size):
            return run_flat(kind, weighted, p, t, w, out, factor)
        partials = np.empty((p.size + CHUNK - 1) // CHUNK)
        self._on_threads(flat_tasks, partials.size, (kind, weighted, p, t, w, out, factor, partials))
        return flat_total(partials)

    def _run_rows_first(self, kind: int, plan: Plan) -> None:
        """A sum over everything (plan.rows_first), as cpp/kernels.cpp's run_rows_first:
        each row along the last dimension summed as a loss per row sums it, then the row
        sums in C order as a flat sum of them. Short rows are summed a block of BLOCK rows
        at a time into a buffer of each thread's own; others (a layout that sends them
        across outputs) into an array of all the row sums first."""
        n_rows = math.prod(plan.shape[:-1])
        row_strides = [0] * len(plan.shape)  # the rows' C order, as outputs of a loss per row
        for d in range(len(plan.shape) - 2, -1, -1):
            row_strides[d] = math.prod(plan.shape[d + 1 : -1])
        # Its loss a stand-in: each block's rows are summed into a buffer of their own.
        rows_plan = Plan(
            plan.shape,
            len(plan.shape) - 1,
            plan.operands._replace(loss=np.zeros(1)),
            [*plan.strides[:LOSS], tuple(row_strides), plan.strides[SCALE]],
        )
        total = self._rows_first_total(_arguments(kind, rows_plan), n_rows, math.prod(plan.shape))
        _finish(plan.operands.loss, plan.loss_divisor, np.float64(total))

    def _rows_first_total(self, arguments: tuple[Any, ...], n_rows: int, size: int) -> float:
        """The float64 sum over everything of n_rows rows (`size` positions) taken rows
        first: `arguments` run's for a loss per row, its loss a stand-in of one float64
        (see _run_rows_first)."""
        if not self._parallel(size):
            return rows_first_total(n_rows, *arguments)
        mode, n_tasks, task_arguments, _ = schedule(*arguments)
        all_rows = np.empty(0)
        if mode != ROW_MODE and n_tasks:
            all_rows = np.empty(n_rows)
            self._run_arguments((*arguments[:RUN_SUMS], all_rows, *arguments[RUN_SUMS + 1 :]), size)
        block_sums = np.empty((n_rows + BLOCK - 1) // BLOCK if n_tasks else 0)
        self._on_threads(row_block_sums, block_sums.size, (task_arguments, all_rows, block_sums))
        return block_total(block_sums)

    def _run_flat(self, kind: int, plan: Plan) -> None:
        predictions, targets, weights, out, loss, scale = plan.operands
        p, t = _flat_operand(predictions), _flat_operand(targets)
        w = p if weights is None else _flat_operand(weights)  # never read where there are none
        p, t, w = _writeable(p), _writeable(t), _writeable(w)
        total = self._flat(
            kind,
            weights is not None,
            p,
            t,
            w,
            np.zeros(1, p.dtype) if out is None else _flat_operand(out),  # never written; not an input, all the same
            0.0 if scale is None else float(scale.item()),
        )
        if loss is not None and reduces(kind):
            _finish(loss, plan.loss_divisor, np.float64(total))

    def _on_threads(self, kernel: Callable[..., None], n_tasks: int, arguments: tuple[Any, ...]) -> None:
        """kernel(handed, begin, end, *arguments) over tasks [0, n_tasks) cut into
        contiguous ranges, one a thread, the first on the calling one, whose `handed` are
        the flags of the workers that run the others (let_workers_in). The ranges write
        disjoint partial sums, so the result is the same for any number of them: a call
        that finds the workers busy with another thread's call runs all its tasks itself,
        as does one that cannot start them (the interpreter is shutting down)."""
        n_ranges = min(self._threads, n_tasks)
        if n_ranges == 1 or not self._team.acquire(blocking=False):
            kernel(_NO_WORKERS, 0, n_tasks, *arguments)
            return
        try:
            try:
                while len(self._workers) < n_ranges - 1:  # started at the first call that needs them
                    rank = len(self._workers)
                    self._workers.append(_Worker(f"fastmse-numba-{rank + 1}", self._handed_flags[rank : rank + 1]))
            except RuntimeError:
                kernel(_NO_WORKERS, 0, n_tasks, *arguments)
                return
            workers = self._workers[: n_ranges - 1]
            try:
                for rank, worker in enumerate(workers, start=1):
                    worker.start(
                        kernel, (_NO_WORKERS, n_tasks * rank // n_ranges, n_tasks * (rank + 1) // n_ranges, *arguments)
                    )
                kernel(self._handed_flags[: n_ranges - 1], 0, n_tasks // n_ranges, *arguments)
                for worker in workers:  # the rest waited for by finish once one spin runs out
                    if not spin_until_set(worker.done, FINISH_SPINS):
                        break
            finally:
                outcomes = [worker.finish() for worker in workers]  # every one waited for first
                for error in outcomes:
                    if error is not None:
                        raise error
        finally:
            self._team.release()

    def reduce(self, plan: Plan) -> None:
        self._run(REDUCE, plan)

    def grad(self, plan: Plan) -> None:
        self._run(GRAD, plan)

    def reduce_and_grad(self, plan: Plan) -> None:
        self._run(REDUCE_AND_GRAD, plan)

    def squared_error(self, plan: Plan) -> None:
        self._run(SQUARED_ERROR, plan)

    def reduce_difference(self, plan: Plan) -> None:
        self._run(REDUCE_DIFFERENCE, plan)

    def get_num_threads(self) -> int:
        return self._threads

    def set_num_threads(self, n: int) -> None:
        self._threads = min(n, max_threads())
