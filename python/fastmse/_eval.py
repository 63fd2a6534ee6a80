"""``python -m fastmse eval PRED TARGET``: the loss of two arrays on disk, in bounded memory.

``.npy`` files are memory-mapped and read in slabs along axis 0, each slab's pages
released once summed (so the resident memory stays near one slab, whatever the file
size); ``.npz`` members (``file.npz`` with one array, or ``file.npz:name``) are streamed
through the zip reader. The slabs go through :class:`MSEAccumulator`, so the result is
the one-call result to within 1 ulp.
"""

from __future__ import annotations

import json
import math
import mmap
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np

from ._accumulator import MSEAccumulator
from ._compute import loss
from ._resolve import normalize_axes, resolve

SLAB_BYTES = 16 << 20  # per input: large enough to run at full bandwidth, small to keep RSS flat


class EvalError(Exception):
    """Bad input to ``eval``: printed as one line, exit code 2."""


class ArrayFile:
    """An array on disk, read in slabs of rows along axis 0."""

    def __init__(self, spec: str, name: str) -> None:
        self.name = name
        path_text, _, member = (
            spec.partition(":") if spec.count(":") == 1 and not Path(spec).exists() else (spec, "", "")
        )
        path = Path(path_text)
        if not path.is_file():
            msg = f"{name} file not found: {path_text}"
            raise EvalError(msg)
        self._mapping: mmap.mmap | None = None
        self._stream: IO[bytes] | None = None
        self._zip: zipfile.ZipFile | None = None
        try:
            if path.suffix == ".npz" or zipfile.is_zipfile(path):
                self._open_member(path, member)
            else:
                self._open_npy(path)
        except (ValueError, OSError, zipfile.BadZipFile, KeyError) as error:
            self.close()
            msg = f"{name} ({spec}) is not a readable .npy array or .npz member: {error}"
            raise EvalError(msg) from error
        if self.dtype.hasobject or self.dtype.kind not in "biuf":
            self.close()
            msg = f"{name} ({spec}) has dtype {self.dtype}; eval reads bool, integer and float arrays"
            raise EvalError(msg)

    def _read_header(self, stream: IO[bytes]) -> None:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            header = np.lib.format.read_array_header_1_0(stream)
        else:
            header = np.lib.format.read_array_header_2_0(stream)
        self.shape: tuple[int, ...] = tuple(header[0])
        self.fortran: bool = header[1]
        self.dtype: np.dtype = np.dtype(header[2])

    def _open_npy(self, path: Path) -> None:
        with path.open("rb") as stream:
            self._read_header(stream)
            offset = stream.tell()
            size = path.stat().st_size
            if size == 0 or math.prod(self.shape) * self.dtype.itemsize > size - offset:
                msg = "the file is shorter than its header says"
                raise ValueError(msg)
            self._mapping = mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ)
        self._array: np.ndarray | None = np.ndarray(
            self.shape, self.dtype, buffer=self._mapping, offset=offset, order="F" if self.fortran else "C"
        )
        self._offset = offset

    def _open_member(self, path: Path, member: str) -> None:
        self._zip = zipfile.ZipFile(path)
        names = [n.removesuffix(".npy") for n in self._zip.namelist()]
        if not member:
            if len(names) != 1:
                msg = f"it holds {len(names)} arrays ({', '.join(names)}); name one as {path}:NAME"
                raise ValueError(msg)
            member = names[0]
        if member not in names:
            msg = f"no member {member!r} among {', '.join(names)}"
            raise KeyError(msg)
        self._stream = self._zip.open(member + ".npy")
        self._read_header(self._stream)
        if self.fortran and len(self.shape) > 1:
            msg = "a Fortran-ordered array in a .npz cannot be streamed by rows; save it as .npy"
            raise ValueError(msg)

    def read_all(self) -> np.ndarray:
        """The whole array, copied into memory (for small weights that broadcast)."""
        return np.array(next(self.slabs(max(self.rows, 1))))

    @property
    def rows(self) -> int:
        return self.shape[0] if self.shape else 1

    def slabs(self, rows_per_slab: int) -> Iterator[np.ndarray]:
        """The array in consecutive slabs of `rows_per_slab` rows (one slab for 0-d)."""
        row_shape = self.shape[1:]
        row_bytes = math.prod(row_shape) * self.dtype.itemsize
        for start in range(0, self.rows, rows_per_slab):
            stop = min(start + rows_per_slab, self.rows)
            if self._stream is not None:
                count = (stop - start) * math.prod(row_shape)
                data = self._stream.read(count * self.dtype.itemsize)
                if len(data) != count * self.dtype.itemsize:
                    msg = f"{self.name} ends before its header says"
                    raise EvalError(msg)
                slab = np.frombuffer(data, self.dtype, count).reshape((stop - start, *row_shape))
                yield slab if self.shape else slab.reshape(())
            else:
                assert self._array is not None  # an .npy file, not closed
                yield self._array[start:stop] if self.shape else self._array
                self._release(start * row_bytes, stop * row_bytes)

    def _release(self, begin: int, end: int) -> None:
        """Drop the pages of a summed slab from this process (the page cache keeps them)."""
        if self._mapping is None or not hasattr(self._mapping, "madvise"):
            return
        if self.fortran and len(self.shape) > 1:  # a slab of rows touches the whole file
            begin, end = 0, len(self._mapping)
        else:
            begin, end = self._offset + begin, self._offset + end
        page = mmap.PAGESIZE
        begin -= begin % page
        self._mapping.madvise(mmap.MADV_DONTNEED, begin, min(end, len(self._mapping)) - begin)

    def close(self) -> None:
        self._array = None
        for handle in (self._stream, self._zip):
            if handle is not None:
                handle.close()
        if self._mapping is not None:
            try:
                self._mapping.close()
            except BufferError:  # a slab still referenced elsewhere: the GC unmaps it
                pass


def evaluate(
    predictions: str,
    targets: str,
    *,
    weights: str | None = None,
    axis: tuple[int, ...] | None = None,
    reduction: Literal["mean", "sum"] = "mean",
    progress: bool = True,
) -> tuple[Any, dict[str, Any]]:
    """The loss of two array files, streamed; returns it and a description of the run."""
    sources = [ArrayFile(predictions, "PRED"), ArrayFile(targets, "TARGET")]
    try:
        if weights is not None:
            sources.append(ArrayFile(weights, "WEIGHTS"))
        pred, targ = sources[0], sources[1]
        if pred.shape != targ.shape:
            msg = f"PRED has shape {pred.shape} and TARGET {targ.shape}; they must be equal"
            raise EvalError(msg)
        weight_file = sources[2] if weights is not None else None
        streamed_weights = weight_file is not None and weight_file.shape == pred.shape
        whole_weights = None
        if weight_file is not None and not streamed_weights:
            padded = (1,) * (len(pred.shape) - len(weight_file.shape)) + weight_file.shape
            if len(padded) > len(pred.shape) or (pred.shape and padded[0] != 1):
                msg = f"WEIGHTS has shape {weight_file.shape}; it must be {pred.shape} or broadcast along axis 0"
                raise EvalError(msg)
            whole_weights = weight_file.read_all()
        try:
            axes = normalize_axes(axis, len(pred.shape))
        except (ValueError, TypeError, np.exceptions.AxisError) as error:
            raise EvalError(str(error)) from error
        row_bytes = max(math.prod(pred.shape[1:]) * max(pred.dtype.itemsize, targ.dtype.itemsize), 1)
        rows_per_slab = max(1, SLAB_BYTES // row_bytes)
        streams = [s.slabs(rows_per_slab) for s in sources if s is not weight_file or streamed_weights]
        bar = _progress(pred.rows, progress)
        accumulate = not pred.shape or 0 in axes
        accumulator = MSEAccumulator(axis=axes if pred.shape else None, reduction=reduction)
        pieces = []
        try:
            for slabs in zip(*streams, strict=True):
                w = slabs[2] if streamed_weights else whole_weights
                if accumulate:
                    accumulator.update(slabs[0], slabs[1], w)
                else:  # each slab's rows are results of their own
                    pieces.append(np.atleast_1d(loss(resolve(slabs[0], slabs[1], w, axes, reduction), keepdims=False)))
                if bar is not None:
                    bar.update(len(slabs[0]) if pred.shape else 1)
        except (ValueError, TypeError) as error:
            raise EvalError(str(error)) from error
        finally:
            if bar is not None:
                bar.close()
        if accumulate:
            result = accumulator.result()
        else:
            result = np.concatenate(pieces) if pieces else np.empty(0)
        info = {
            "shape": list(pred.shape),
            "dtype": str(np.asarray(result).dtype),
            "axis": list(axes) if axis is not None else None,
            "reduction": reduction,
            "weighted": weights is not None,
        }
        return result, info
    finally:
        for source in sources:
            source.close()


def _progress(total: int, wanted: bool) -> Any:
    if not wanted:
        return None
    try:
        from tqdm import tqdm  # type: ignore[import-untyped]
    except ImportError:
        return None
    return tqdm(total=total, unit="rows", desc="fastmse eval", disable=None, file=sys.stderr)


def _as_json_value(result: Any) -> Any:
    return np.asarray(result, dtype=np.float64).tolist()


def main(args: Any) -> int:
    try:
        result, info = evaluate(
            args.predictions,
            args.targets,
            weights=args.weights,
            axis=tuple(args.axis) if args.axis else None,
            reduction=args.reduction,
            progress=not args.json,
        )
    except EvalError as error:
        print(f"fastmse eval: error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"loss": _as_json_value(result), **info}))
    else:
        print(result if np.ndim(result) == 0 else np.array2string(np.asarray(result), threshold=1000))
    return 0
