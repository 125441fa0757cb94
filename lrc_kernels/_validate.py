"""Every boundary check of the package, in one place (the error contract of docs/api.md).

The kernels do no bounds checking (Numba, CUDA), so a value that crosses the public
boundary unchecked becomes memory corruption. Every public function, the trace container,
the file formats, the converters, the CLI and the GPU backend call these helpers and never
re-implement them. The rules:

- integers are ``int`` or NumPy integers, never ``bool`` and never ``float`` (``TypeError``);
- every size and window has an upper bound that the kernels hold without int64 overflow
  (``ValueError`` naming the bound);
- expert ids keep their exact value or are refused before any cast;
- a computation whose memory need is known in advance is refused with a ``ValueError``
  naming the need in bytes and the argument to change, before allocating.

Array-library agnostic: the array checks take NumPy or CuPy arrays. This module imports no
kernel and not the ``gpu`` package at module level (the CPU duplicate scan is imported when
first used).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np

from ._spec import id_dtype_for

__all__ = [
    "MAX_EXPERTS",
    "MAX_WINDOW",
    "MAX_INT",
    "IndexRangeError",
    "check_int",
    "check_bool",
    "check_choice",
    "check_num_experts",
    "check_windows",
    "check_real",
    "check_sizes",
    "check_int_array",
    "check_index_array",
    "check_layout",
    "check_offsets",
    "check_ids",
    "check_weights",
    "check_memory",
    "id_dtype_for",
    "locate",
    "memory_limit",
]

# Ids are stored as uint32 at most: every id in [0, E) must fit, so E <= 2**32.
MAX_EXPERTS = 1 << 32
# Segment / future window lengths. The kernels add a window to a token position
# (``t + m``), positions are below 2**62 (int64 row indices of real arrays), so any
# m <= 2**40 keeps every sum far inside int64; a window longer than every sequence
# already gives the result of any longer one.
MAX_WINDOW = 1 << 40
# Any other count or size (seeds, bootstrap resamples, batch sizes, split lengths).
MAX_INT = (1 << 62) - 1

Where = Callable[[int], str]


# ------------------------------------------------------------------ scalars
def check_int(
    value: Any,
    name: str,
    minimum: int | None = None,
    maximum: int | None = MAX_INT,
    *,
    what: str = "an integer",
) -> int:
    """``value`` as a Python int in ``[minimum, maximum]``.

    Raises ``TypeError`` for anything but ``int`` / NumPy integers (``bool`` and floats
    included, even integral ones) and ``ValueError`` outside the range. ``what`` describes
    the expected value in the type error ("a positive integer").
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        shown = plain(value)
        if isinstance(value, (float, np.floating)) and np.isfinite(value) and value == int(value):
            raise TypeError(f"{name} must be {what}, got the float {shown}; use int({shown})")
        raise TypeError(f"{name} must be {what}, got {shown} ({type(value).__name__})")
    v = int(value)
    if minimum is not None and v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    if maximum is not None and v > maximum:
        raise ValueError(f"{name} must be <= {maximum}{_power(maximum)}, got {v}")
    return v


def _power(n: int) -> str:
    """`` (2**p)`` or `` (2**p - 1)`` when ``n`` is one of those, else ``""``."""
    if n > 1024 and n & (n - 1) == 0:
        return f" (2**{n.bit_length() - 1})"
    if n > 1024 and (n + 1) & n == 0:
        return f" (2**{n.bit_length()} - 1)"
    return ""


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return _Shown(f"an array of shape {tuple(value.shape)} and dtype {value.dtype}")
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


class _Shown(str):
    def __repr__(self) -> str:
        return str(self)


def plain(value: Any) -> str:
    """``repr`` of a value for messages, NumPy scalars as plain Python numbers."""
    text = repr(_plain(value))
    return text if len(text) <= 80 else text[:77] + "..."


def check_bool(value: Any, name: str) -> bool:
    """``value`` if it is ``True`` or ``False`` (NumPy bools too); else ``TypeError``."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {plain(value)}")
    return bool(value)


def check_choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of the strings ``choices``; else ``ValueError`` listing them."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"unknown {name} {plain(value)}; choose one of {', '.join(choices)}")
    return value


def check_num_experts(value: Any) -> int:
    """Experts per layer: an integer in ``[1, MAX_EXPERTS]`` (ids fit uint32 exactly)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"num_experts must be a positive integer, got {plain(value)}")
    if value < 1:
        raise ValueError(f"num_experts must be >= 1, got {value}")
    if value > MAX_EXPERTS:
        raise ValueError(
            f"num_experts = {value} exceeds the limit of {MAX_EXPERTS} (2**32): expert ids "
            "are stored as uint32"
        )
    return int(value)


def check_windows(m: Any, name: str = "m") -> tuple[np.ndarray, bool]:
    """Segment lengths as an int64 array, and whether a single m (no leading axis) was given.

    Each in ``[1, MAX_WINDOW]``; a list must be non-empty and hold integers only.
    """
    if isinstance(m, (list, tuple, np.ndarray, range)):
        if isinstance(m, np.ndarray):
            if m.dtype == object or m.dtype == np.bool_ or not np.issubdtype(m.dtype, np.integer):
                raise TypeError(f"{name} must hold integers, got an array of dtype {m.dtype}")
            ms = [v for v in m.ravel()]
        else:
            ms = list(m)
        if not ms:
            raise ValueError(f"{name} is an empty list; give at least one segment length")
        vals = [check_int(v, name, 1, MAX_WINDOW) for v in ms]
        return np.asarray(vals, dtype=np.int64), False
    return np.asarray([check_int(m, name, 1, MAX_WINDOW)], dtype=np.int64), True


def check_real(
    value: Any,
    name: str,
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
    what: str | None = None,
) -> float:
    """``value`` as a finite Python float between ``lo`` and ``hi`` (either may be ``None``:
    no bound; ``lo_open`` / ``hi_open`` exclude the end).

    ``TypeError`` for anything but a real number (``bool`` is not one); ``ValueError`` when
    not finite or outside the bounds. ``what`` describes the value in messages.
    """
    desc = f" ({what})" if what else ""
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, (int, float, np.integer, np.floating)
    ):
        raise TypeError(f"{name} must be a real number{desc}, got {plain(value)}")
    v = float(value)
    if lo is not None and hi is not None:
        below = v <= lo if lo_open else v < lo
        above = v >= hi if hi_open else v > hi
        if below or above or not np.isfinite(v):
            left, right = "(" if lo_open else "[", ")" if hi_open else "]"
            raise ValueError(f"{name} must be in {left}{lo:g}, {hi:g}{right}{desc}, got {v:g}")
    elif not np.isfinite(v):
        raise ValueError(f"{name} must be finite{desc}, got {plain(value)}")
    elif lo is not None and (v <= lo if lo_open else v < lo):
        raise ValueError(f"{name} must be {'>' if lo_open else '>='} {lo:g}{desc}, got {v:g}")
    elif hi is not None and (v >= hi if hi_open else v > hi):
        raise ValueError(f"{name} must be {'<' if hi_open else '<='} {hi:g}{desc}, got {v:g}")
    return v


def check_sizes(sizes: Any, name: str = "sizes") -> np.ndarray:
    """Cache sizes as a sorted int64 array without repeats: a non-empty sequence (or one
    integer) of integers >= 1. The upper bound (the ids of the level) is the caller's."""
    if isinstance(sizes, np.ndarray):
        if (
            sizes.dtype == object
            or sizes.dtype == np.bool_
            or not np.issubdtype(sizes.dtype, np.integer)
        ):
            raise TypeError(f"{name} must hold integers, got an array of dtype {sizes.dtype}")
        vals = list(sizes.ravel())
    elif isinstance(sizes, (list, tuple, range)):
        vals = list(sizes)
    else:
        vals = [sizes]
    if not vals:
        raise ValueError(f"{name} is empty; give at least one cache size")
    out = [check_int(v, name, 1, MAX_INT, what="cache sizes (integers >= 1)") for v in vals]
    return np.unique(np.asarray(out, dtype=np.int64))


def memory_limit() -> int:
    """Bytes a precomputable table may take: ``LRC_MEMORY_LIMIT`` or the physical memory."""
    env = os.environ.get("LRC_MEMORY_LIMIT")
    if env:
        return int(env)
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 1 << 40


def check_memory(need: int, what: str, fix: str) -> None:
    """Refuse, before allocating, a table of ``need`` bytes larger than :func:`memory_limit`.

    ``what`` names the table, ``fix`` the argument to change.
    """
    limit = memory_limit()
    if need > limit:
        raise ValueError(
            f"{what} needs {need} bytes ({need / 2**30:.1f} GiB), more than the limit of "
            f"{limit} bytes (physical memory, or LRC_MEMORY_LIMIT); {fix}"
        )


class IndexRangeError(IndexError, ValueError):
    """An index outside its sequence: an ``IndexError`` that is also a ``ValueError``
    (as NumPy's ``AxisError``), so code catching either keeps working."""


# ------------------------------------------------------------------- arrays
def check_int_array(a: Any, what: str) -> None:
    """``TypeError`` unless ``a`` has an integer dtype (bool is not one)."""
    dt = np.dtype(a.dtype)
    if dt == np.bool_ or not np.issubdtype(dt, np.integer):
        hint = ""
        if np.issubdtype(dt, np.floating):
            hint = (
                " Expert ids must be integers; if these are router logits or scores, take "
                "the top-k indices first (e.g. scores.argsort(-1)[..., ::-1][..., :k])."
            )
        raise TypeError(f"{what} must have an integer dtype, got {dt}.{hint}")


def check_index_array(values: Any, name: str, size: int) -> np.ndarray:
    """Integer indices into ``range(size)`` (negative ones count from the end) as int64.

    Floats and bools are refused (``TypeError``), out-of-range indices named (``IndexError``).
    """
    if isinstance(values, (list, tuple)):  # element by element: no bool or float cast
        values = np.asarray([check_int(v, name) for v in values], dtype=np.int64)
    a = np.asarray(values)
    if a.ndim == 0:
        a = a.reshape(1)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D list of indices, got shape {a.shape}")
    if a.size == 0:
        return np.zeros(0, np.int64)
    if a.dtype == object:
        a = np.asarray([check_int(v, name) for v in a.tolist()], dtype=np.int64)
    check_int_array(a, name)
    bad = np.flatnonzero((a < -size) | (a >= size))
    if bad.size:
        i = int(bad[0])
        raise IndexRangeError(
            f"{name} {plain(a.tolist())} out of range [0, {size}): {name}[{i}] = {int(a[i])}"
        )
    a = a.astype(np.int64)
    return np.where(a < 0, a + size, a)


def check_layout(L: int, k: int, E: int) -> None:
    """Layers and slots of an ``(N, L, k)`` id array, against ``E`` experts."""
    if L == 0:
        raise ValueError("experts has 0 layers (shape[1] == 0); a trace needs >= 1 layer")
    if k == 0:
        raise ValueError(
            "experts has k = 0 routing slots (shape[2] == 0); a trace needs top-k >= 1"
        )
    if k > E:
        raise ValueError(
            f"top-k = {k} exceeds num_experts = {E}: ids within a token must be "
            "distinct, so k <= num_experts. Is num_experts too small?"
        )


def check_offsets(off: np.ndarray, N: int) -> np.ndarray:
    """Sequence boundaries (host array): 1-D, from 0, non-decreasing, to ``N``; int64."""
    check_int_array(off, "offsets")
    if off.ndim != 1 or off.shape[0] < 1:
        raise ValueError(
            f"offsets must be a 1-D array of S+1 sequence boundaries, got shape {off.shape}"
        )
    if off.dtype == np.uint64 and off.size and off.max() > MAX_INT:
        i = int(off.argmax())
        raise ValueError(f"offsets[{i}] = {int(off[i])} is beyond the N = {N} token rows")
    off = off.astype(np.int64)
    if off[0] != 0:
        raise ValueError(f"offsets must start at 0, got offsets[0] = {off[0]}")
    d = np.diff(off)
    if d.size and d.min() < 0:
        s = int(np.argmax(d < 0))
        raise ValueError(
            f"offsets must be non-decreasing: offsets[{s + 1}] = {off[s + 1]} < "
            f"offsets[{s}] = {off[s]} (sequence {s} would have negative length)"
        )
    if off[-1] != N:
        raise ValueError(
            f"offsets must end at the number of token rows N = {N}, got offsets[-1] = {off[-1]}"
        )
    return np.ascontiguousarray(off)


def locate(off: np.ndarray, row: int) -> tuple[int, int]:
    """(sequence, token) of token row ``row``: the last sequence starting at or before it."""
    s = int(np.searchsorted(off, row, side="right") - 1)
    return s, int(row - off[s])


def sequence_where(off: np.ndarray, prefix: str = "") -> Where:
    """A ``where(row)`` naming ``sequence s, token t`` (after ``prefix``)."""

    def where(r: int) -> str:
        s, t = locate(off, r)
        return f"{prefix}sequence {s}, token {t}"

    return where


def _xp(x: Any) -> Any:
    if type(x).__module__.startswith("cupy"):
        import cupy

        return cupy
    return np


def _first_index(mask: Any, shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """(row, layer, slot) of the first True of a C-ordered ``(N, L, k)`` mask."""
    xp = _xp(mask)
    flat = int(xp.argmax(mask.ravel()))
    _, L, k = shape
    r, rest = divmod(flat, L * k)
    l, j = divmod(rest, k)
    return r, l, j


def check_ids(
    x: Any,
    E: int,
    where: Where,
    *,
    scan: Callable[[Any, int], tuple[int, int, int]] | None = None,
    hint: str = "Check num_experts, and that padding (e.g. -1) was removed.",
    copy: bool = False,
) -> Any:
    """Range then duplicate checks of ``(N, L, k)`` ids; the ids in the canonical dtype.

    The range check runs on the ids as given (before any cast), so an id keeps its exact
    value or is refused. ``scan(y, E)`` finds the first id repeated within a token (the CPU
    scan by default; the GPU backend passes its device scan). ``where(row)`` names a token
    row in messages. NumPy or CuPy arrays.
    """
    shape = tuple(int(v) for v in x.shape)
    if x.size:
        lo, hi = int(x.min()), int(x.max())
        if lo < 0 or hi >= E:
            r, l, j = _first_index((x < 0) | (x >= E), shape)
            v = int(x[r, l, j])
            why = "is negative" if v < 0 else f"is >= num_experts = {E}"
            raise ValueError(
                f"{where(r)}, layer {l}, slot {j}: expert id {v} {why}; ids must lie in "
                f"[0, {E}). {hint}"
            )
    xp = _xp(x)
    canon = id_dtype_for(E)
    if copy:
        y = xp.array(x, dtype=canon, order="C", copy=True)
    else:
        y = xp.ascontiguousarray(x.astype(canon, copy=False))
    if y.size and shape[2] > 1:
        if scan is None:
            scan = _host_duplicate_scan()
        r, l, j = scan(y, E)
        if r >= 0:
            row = [int(v) for v in y[r, l].tolist()]
            raise ValueError(
                f"{where(r)}, layer {l}: expert id {row[j]} appears twice among the token's "
                f"top-k {row}; the top-k ids of a token must be distinct"
            )
    return y


def _host_duplicate_scan() -> Callable[[Any, int], tuple[int, int, int]]:
    """The Numba duplicate scan, or a NumPy one where Numba is not installed."""
    try:
        from .cpu._validate import first_duplicate
    except ImportError:
        return first_duplicate_numpy
    return first_duplicate


def first_duplicate_numpy(y: Any, num_experts: int) -> tuple[int, int, int]:
    """(row, layer, slot) of the first id repeated within its token, or (-1, -1, -1).

    Same result as :func:`lrc_kernels.cpu._validate.first_duplicate`, in NumPy: sort each
    token's ids, find equal neighbours, then the first (row, layer) with one and there the
    first slot that repeats an earlier slot.
    """
    y = np.asarray(y)
    if y.size == 0 or y.shape[2] < 2:
        return -1, -1, -1
    s = np.sort(y, axis=2)
    bad = (s[:, :, 1:] == s[:, :, :-1]).any(axis=2)
    if not bad.any():
        return -1, -1, -1
    r, l = (int(v) for v in np.unravel_index(int(np.argmax(bad)), bad.shape))
    row = y[r, l]
    for j in range(1, row.shape[0]):
        if (row[:j] == row[j]).any():
            return r, l, j
    return -1, -1, -1  # pragma: no cover - a sorted duplicate always has a later slot


def check_weights(
    w: Any,
    shape: tuple[int, ...],
    where: Where,
    dtype: np.dtype | None = None,
    *,
    copy: bool = True,
    prefix: str = "",
) -> np.ndarray:
    """Gate weights: floating, of ``shape``, finite, >= 0 (and within ``dtype`` if given).

    Returns a C-contiguous array (in ``dtype`` if given; a fresh copy when ``copy``).
    """
    w = np.asarray(w)
    if w.dtype == np.bool_ or not np.issubdtype(w.dtype, np.floating):
        raise TypeError(f"weights must be floating point, got {w.dtype}")
    if w.shape != tuple(shape):
        raise ValueError(f"weights shape {w.shape} must equal experts shape {tuple(shape)}")
    bad = ~np.isfinite(w) | (w < 0)
    if dtype is not None:
        bad |= w > np.finfo(dtype).max
    if bad.any():
        r, l, j = (int(v) for v in np.argwhere(bad)[0])
        over = f" or overflows {np.dtype(dtype).name}" if dtype is not None else ""
        raise ValueError(
            f"{prefix}gate weight {plain(w[r, l, j])} at {where(r)}, layer {l}, slot {j} is "
            f"negative, NaN, infinite{over}; weights must be finite and >= 0"
        )
    if not copy and dtype is None:
        return np.ascontiguousarray(w)
    return np.array(w, dtype=dtype if dtype is not None else w.dtype, order="C", copy=True)


# ------------------------------------------------------------ arrays of any library
def is_device_array(x: Any) -> bool:
    """True for CuPy arrays and CUDA torch tensors (anything living on a GPU)."""
    mod = type(x).__module__
    if mod.startswith("cupy"):
        return True
    if mod.startswith("torch") and getattr(getattr(x, "device", None), "type", None) == "cuda":
        return True
    return False


def to_numpy(x: Any, what: str) -> np.ndarray:
    """A host NumPy view or copy of ``x`` (CuPy and torch arrays included)."""
    if is_device_array(x):
        # The GPU backend keeps device arrays on the device; the host containers take a
        # copy. One copy, made explicit.
        if type(x).__module__.startswith("cupy"):
            return x.get()
        return x.detach().cpu().numpy()
    if type(x).__module__.startswith("torch"):
        return x.detach().numpy()
    try:
        return np.asarray(x)
    except Exception as exc:  # pragma: no cover - numpy's own message is kept
        raise TypeError(f"{what} could not be converted to a numpy array: {exc}") from exc


def whole_offsets(offsets: Any, N: int) -> np.ndarray:
    """Checked int64 offsets of ``N`` token rows (``None``: one sequence of all of them)."""
    if offsets is None:
        return np.array([0, N], dtype=np.int64)
    return check_offsets(to_numpy(offsets, "offsets"), N)


def device_array(obj: Any) -> Any:
    """A GPU array as a CuPy array (torch CUDA tensors through DLPack).

    The id scans of device arrays run on their device, so this boundary module is the one
    place outside the backends that reaches the GPU package, lazily and only for them.
    """
    from . import gpu

    return gpu.as_device_array(obj)


def check_device_ids(x: Any, offsets: Any, num_experts: int) -> tuple[Any, np.ndarray]:
    """:func:`check_ids` and the layout checks for a GPU array, run on its device."""
    from . import gpu

    return gpu.validate_ids(x, offsets, num_experts)
