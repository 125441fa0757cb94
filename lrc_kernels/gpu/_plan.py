"""Launch planning shared by the CuPy backend and the host-shim tests.

Everything between "validated arguments" and "a kernel launch" lives here, written against
an array namespace ``xp`` (``cupy`` on a GPU, ``numpy`` for the host shim) and a ``launch``
callable that runs one :class:`Launch`. The CuPy wrapper and the tests therefore use the
same argument preparation, scratch sizing and launch geometry; only the final call differs.
This module never imports cupy.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import _spec
from .. import _validate as _v
from .._messages import plain

__all__ = [
    "KERNEL_DIR",
    "SOURCES",
    "NVRTC_OPTIONS",
    "POLICY_CODES",
    "DEFAULT_SCRATCH_BUDGET",
    "Launch",
    "geometry",
    "read_source",
    "kernel_name",
    "window_hist_table",
    "stack_stats_table",
    "first_duplicate",
    "validate_ids",
]

KERNEL_DIR = Path(__file__).resolve().parent
#: CUDA sources, one RawModule each.
SOURCES = ("srp.cu", "stack.cu", "validate.cu")
#: Options given to NVRTC at run time (the compile-only tests add -arch and -Werror).
NVRTC_OPTIONS = ("-std=c++17",)
#: Integer policy codes of stack.cu (:data:`lrc_kernels._spec.POLICY_CODES`).
POLICY_CODES = _spec.POLICY_CODES
#: Upper bound of the per-thread scratch memory of one launch (bytes).
DEFAULT_SCRATCH_BUDGET = 1 << 30
#: Threads per block of the stream kernels (heavy per-thread state, little arithmetic).
BLOCK = 128

_INT32_MAX = 2**31 - 1
_MAX_SCAN_THREADS = 1 << 22
_SUFFIX = {np.dtype(np.uint8): "u8", np.dtype(np.uint16): "u16", np.dtype(np.uint32): "u32"}
_INCLUDE = re.compile(r'^#include "([A-Za-z0-9_.]+)"\s*$', re.MULTILINE)

Launcher = Callable[["Launch"], None]


@dataclass(frozen=True)
class Launch:
    """One kernel launch: 1-D grid of ``grid`` blocks of ``block`` threads.

    ``args`` are exactly the kernel's parameters, in order: arrays of the caller's
    namespace, ``np.int32`` for C ``int`` and ``np.int64`` for C ``long long``.
    """

    source: str
    name: str
    grid: int
    block: int
    args: tuple[Any, ...]


def read_source(name: str, *, defines: bool = True) -> str:
    """Text of ``lrc_kernels/gpu/<name>`` with its local ``#include "..."`` lines inlined.

    This is the exact text handed to NVRTC, so it needs no include path, and CuPy's
    on-disk kernel cache (keyed by source text) sees any change to a shared header. With
    ``defines`` (the default) the policy codes of :func:`lrc_kernels._spec.cuda_defines`
    come first, so the sources take them from the one list in ``_spec``.
    """

    def inline(match: re.Match[str]) -> str:
        return read_source(match.group(1), defines=False)

    text = _INCLUDE.sub(inline, (KERNEL_DIR / name).read_text())
    return _spec.cuda_defines() + text if defines else text


def kernel_name(stem: str, dtype: np.dtype) -> str:
    """Entry-point name of a kernel instantiated for id dtype ``dtype``."""
    return f"lrc_{stem}_{_SUFFIX[np.dtype(dtype)]}"


def geometry(
    n_items: int,
    bytes_per_thread: int,
    *,
    budget: int = DEFAULT_SCRATCH_BUDGET,
    block: int = BLOCK,
) -> tuple[int, int]:
    """Launch geometry ``(grid, block)`` for ``n_items`` independent work items.

    One thread per item, as long as the per-thread scratch of all threads fits in
    ``budget`` bytes; beyond that, fewer threads, each taking several items through the
    kernels' grid-stride loops. At least one thread is always launched.
    """
    if n_items < 1:
        raise ValueError(f"geometry needs n_items >= 1, got {n_items}")
    cap = max(1, int(budget) // max(1, int(bytes_per_thread)))
    threads = max(1, min(int(n_items), cap))
    block = max(1, min(int(block), threads))
    grid = -(-threads // block)
    return grid, block


# ---------------------------------------------------------------------------- helpers
def _shape3(x: Any) -> tuple[int, int, int]:
    _v.check_int_array(x, "experts")
    if x.ndim != 3:
        raise ValueError(f"experts must have shape (tokens, layers, k), got shape {x.shape}")
    n_rows, L, k = (int(v) for v in x.shape)
    return n_rows, L, k


def _as_ids(x: Any, num_experts: int, xp: Any, launch: Launcher) -> Any:
    """Ids in a dtype the kernels are instantiated for, after checking they are valid.

    The kernels index per-expert state by id, so an id outside ``[0, E)`` or repeated
    within a token would write out of bounds on a GPU: checked here, on the device.
    """
    _shape3(x)
    return _v.check_ids(x, num_experts, _row_where, scan=_device_scan(xp, launch))


def _row_where(r: int) -> str:
    return f"token row {r}"


def _device_scan(xp: Any, launch: Launcher):
    def scan(y: Any, E: int) -> tuple[int, int, int]:
        return first_duplicate(y, xp=xp, launch=launch)

    return scan


def _seq_arrays(
    offsets: Any, group: Any, n_rows: int, n_groups: int, xp: Any
) -> tuple[np.ndarray, Any, Any]:
    off = np.asarray(offsets, dtype=np.int64)
    if off.ndim != 1 or off.size < 1 or off[0] != 0 or off[-1] != n_rows:
        raise ValueError(
            f"offsets must be S+1 sequence boundaries from 0 to {n_rows}, got {plain(off)!r}"
        )
    if off.size > 1 and np.diff(off).min() < 0:
        raise ValueError("offsets must be non-decreasing")
    S = off.size - 1
    g = np.asarray(group, dtype=np.int64).reshape(-1)
    if g.size != S:
        raise ValueError(f"group has {g.size} entries but there are {S} sequences")
    if S and (g.min() < 0 or g.max() >= n_groups):
        raise ValueError(f"group values must lie in [0, {n_groups}), got [{g.min()}, {g.max()}]")
    return off, xp.asarray(off), xp.asarray(g)


# ------------------------------------------------------------------------ SRP tables
def window_hist_table(
    experts: Any,
    offsets: Any,
    num_experts: int,
    ms: Sequence[int],
    group: Any,
    n_groups: int,
    per_expert: bool,
    *,
    xp: Any,
    launch: Launcher,
    budget: int = DEFAULT_SCRATCH_BUDGET,
    block: int = BLOCK,
) -> Any:
    """SRP window-histogram table (see :func:`lrc_kernels.reference.window_hist_table`).

    Returns an int64 array of namespace ``xp``, shape ``(n_groups, L, E or 1, sum(m+1))``.
    """
    E = int(num_experts)
    ms_list = [int(m) for m in ms]
    if not ms_list or min(ms_list) < 1:
        raise ValueError(
            f"segment lengths ms must be a non-empty list of integers >= 1: {plain(ms)!r}"
        )
    n_rows, L, k = _shape3(experts)
    _, off_d, group_d = _seq_arrays(offsets, group, n_rows, n_groups, xp)
    x = _as_ids(experts, E, xp, launch)
    S = int(off_d.shape[0]) - 1
    first_cols, width = _spec.m_columns(ms_list)
    cols = np.asarray(first_cols + [width], np.int64)
    Eo = E if per_expert else 1
    out = xp.zeros((n_groups, L, Eo, width), dtype=xp.int64)
    items = S * L * len(ms_list)
    if items == 0 or n_rows == 0:
        return out
    stride = 2 * E + (0 if per_expert else max(ms_list) + 1)
    grid, blk = geometry(items, 8 * stride, budget=budget, block=block)
    scratch = xp.empty(grid * blk * stride, dtype=xp.int64)
    launch(
        Launch(
            "srp.cu",
            kernel_name("srp_hist", x.dtype),
            grid,
            blk,
            (
                x,
                off_d,
                group_d,
                np.int64(S),
                np.int32(L),
                np.int32(k),
                np.int32(E),
                xp.asarray(np.asarray(ms_list, dtype=np.int64)),
                xp.asarray(cols[:-1]),
                np.int32(len(ms_list)),
                np.int64(width),
                np.int32(1 if per_expert else 0),
                scratch,
                np.int64(stride),
                out,
            ),
        )
    )
    return out


# ---------------------------------------------------------------------- stack tables
def stack_stats_table(
    experts: Any,
    offsets: Any,
    num_experts: int,
    policy: str,
    m: int | None,
    model_level: bool,
    warm_start: bool,
    group: Any,
    n_groups: int,
    *,
    xp: Any,
    launch: Launcher,
    budget: int = DEFAULT_SCRATCH_BUDGET,
    block: int = BLOCK,
) -> Any:
    """Stack-depth table (see :func:`lrc_kernels.reference.stack_stats_table`).

    Returns an int64 array of namespace ``xp``, shape ``(n_groups, L or 1, N+1)``.
    """
    if policy not in POLICY_CODES:
        raise ValueError(f"unknown policy {policy!r}; choose one of {sorted(POLICY_CODES)}")
    if policy == "sch":
        if m is None or isinstance(m, bool) or int(m) != m:
            raise ValueError(f"policy 'sch' needs an integer future window m, got {plain(m)!r}")
        m_arg = min(int(m), _INT32_MAX)
    else:
        m_arg = 0
    E = int(num_experts)
    n_rows, L, k = _shape3(experts)
    off, off_d, group_d = _seq_arrays(offsets, group, n_rows, n_groups, xp)
    S = off.size - 1
    N = L * E if model_level else E
    A = L * k if model_level else k
    T_max = int(np.diff(off).max()) if S else 0
    if T_max * A + N + 1 > _INT32_MAX:
        raise ValueError(
            f"a sequence of {T_max} tokens x {A} accesses per token is too long for the GPU "
            "stack engine (int32 positions); split it first, e.g. trace.split(4096)"
        )
    if 5 * N + 1 > _INT32_MAX:
        raise ValueError(f"{N} cache ids are too many for the GPU stack engine")
    x = _as_ids(experts, E, xp, launch)
    out = xp.zeros((n_groups, 1 if model_level else L, N + 1), dtype=xp.int64)
    if S == 0 or n_rows == 0:
        return out
    items = S if model_level else S * L
    stride = 5 * N + 1
    grid, blk = geometry(items, 4 * stride, budget=budget, block=block)
    scratch = xp.empty(grid * blk * stride, dtype=xp.int32)
    nxt = xp.empty(x.size if policy == "belady" else 1, dtype=xp.int32)
    launch(
        Launch(
            "stack.cu",
            kernel_name("stack_stats", x.dtype),
            grid,
            blk,
            (
                x,
                off_d,
                group_d,
                np.int64(S),
                np.int32(L),
                np.int32(k),
                np.int32(E),
                np.int32(POLICY_CODES[policy]),
                np.int32(m_arg),
                np.int32(1 if model_level else 0),
                np.int32(1 if warm_start else 0),
                scratch,
                np.int64(stride),
                nxt,
                out,
            ),
        )
    )
    return out


# ------------------------------------------------------------------------ validation
def first_duplicate(y: Any, *, xp: Any, launch: Launcher, block: int = 256) -> tuple[int, int, int]:
    """(row, layer, slot) of the first id repeated within its token, or (-1, -1, -1).

    ``y`` is a C-contiguous ``(N, L, k)`` array of a kernel id dtype (uint8/16/32).
    """
    n_rows, L, k = y.shape
    tokens = n_rows * L
    if tokens == 0 or k < 2:
        return -1, -1, -1
    first = xp.full(1, np.iinfo(np.uint64).max, dtype=xp.uint64)
    # no scratch: one thread per token, up to _MAX_SCAN_THREADS (then grid-stride)
    grid, blk = geometry(tokens, 1, budget=_MAX_SCAN_THREADS, block=block)
    launch(
        Launch(
            "validate.cu",
            kernel_name("first_duplicate", y.dtype),
            grid,
            blk,
            (y, np.int64(tokens), np.int32(k), first),
        )
    )
    flat = int(first[0])
    if flat == int(np.iinfo(np.uint64).max):
        return -1, -1, -1
    r, rest = divmod(flat, L * k)
    l, j = divmod(rest, k)
    return r, l, j


def validate_ids(
    x: Any, offsets: Any, num_experts: int, *, xp: Any, launch: Launcher
) -> tuple[Any, np.ndarray]:
    """The checks of ``Trace`` (same order, same messages), with the scans on ``xp`` arrays.

    Returns the ids as a C-contiguous array of the canonical dtype
    (:func:`lrc_kernels._spec.id_dtype_for`) and the offsets as numpy int64.
    """
    E = _v.check_num_experts(num_experts)
    _v.check_int_array(x, "experts")
    if x.ndim != 3:
        raise ValueError(
            f"Trace experts must have shape (tokens, layers, k), got ndim={x.ndim} "
            f"shape={x.shape}. Use lrc_kernels.as_trace() for (S, T, L, k), "
            "(T, L, k) or (T, k) arrays."
        )
    N, L, k = x.shape
    _v.check_layout(L, k, E)
    off = _v.whole_offsets(offsets, N)
    y = _v.check_ids(x, E, _v.sequence_where(off), scan=_device_scan(xp, launch))
    return y, off
