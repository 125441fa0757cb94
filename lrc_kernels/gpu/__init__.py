"""CuPy backend: SRP window histograms and the priority-stack engine as CUDA kernels.

The kernels are CUDA C sources next to this file (``srp.cu``, ``stack.cu``,
``validate.cu``), compiled by NVRTC through ``cupy.RawModule`` once per device and source
(memoised here, and cached on disk by CuPy). The functions below produce the same integer
tables as :mod:`lrc_kernels.reference`; the package's shared reduction code turns them into
``SRPResult`` / ``HitCurve`` values, so every backend reports identical numbers.

cupy is imported lazily: importing this module never needs it, and :func:`is_available`
answers without raising. See ``docs/gpu.md`` for the launch configuration and the way the
kernels are tested on machines without a GPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from . import _plan

__all__ = [
    "is_available",
    "require",
    "as_device_array",
    "validate_ids",
    "window_hist_table",
    "stack_stats_table",
]

_INSTALL_HINT = (
    "install the CuPy build matching your CUDA driver, e.g. pip install 'lrc-kernels[gpu]' "
    "(cupy-cuda13x) or pip install cupy-cuda12x, or use backend='cpu'"
)

# (device id, source file) -> cupy.RawModule
_MODULES: dict[tuple[int, str], Any] = {}


def is_available() -> bool:
    """True when cupy imports and at least one CUDA device is usable. Never raises."""
    try:
        import cupy

        return bool(cupy.cuda.is_available())
    except Exception:
        return False


def require() -> Any:
    """Return the ``cupy`` module, or raise a clear error naming the fix.

    Raises
    ------
    ImportError
        cupy is not installed.
    RuntimeError
        cupy is installed but no CUDA device (or driver) is usable.
    """
    try:
        import cupy
    except ImportError as exc:
        raise ImportError(
            f"backend='gpu' needs CuPy, which is not installed: {_INSTALL_HINT}"
        ) from exc
    try:
        ok = bool(cupy.cuda.is_available())
    except Exception:  # pragma: no cover - depends on the driver
        ok = False
    if not ok:
        raise RuntimeError(
            "backend='gpu' needs a CUDA device, but CuPy finds none (no GPU, or no/too old "
            "NVIDIA driver; check nvidia-smi). Use backend='cpu' (or 'auto', which picks the "
            "CPU for host data) on this machine."
        )
    return cupy


def _module(cp: Any, source: str) -> Any:
    dev = int(cp.cuda.runtime.getDevice())
    key = (dev, source)
    mod = _MODULES.get(key)
    if mod is None:
        mod = cp.RawModule(code=_plan.read_source(source), options=_plan.NVRTC_OPTIONS)
        _MODULES[key] = mod
    return mod


def _launcher(cp: Any):
    def launch(spec: _plan.Launch) -> None:
        fn = _module(cp, spec.source).get_function(spec.name)
        fn((spec.grid,), (spec.block,), spec.args)

    return launch


def _scratch_budget(cp: Any) -> int:
    free, _total = cp.cuda.runtime.memGetInfo()
    return int(max(1 << 20, min(_plan.DEFAULT_SCRATCH_BUDGET, free // 4)))


def as_device_array(obj: Any) -> Any:
    """A CuPy array viewing ``obj`` on its GPU.

    Parameters
    ----------
    obj : cupy.ndarray, torch.Tensor on a CUDA device, or array_like
        CuPy arrays are returned as they are; CUDA torch tensors are wrapped through DLPack
        (no copy, same memory); anything else is copied once to the current device.

    Returns
    -------
    cupy.ndarray

    Raises
    ------
    ImportError, RuntimeError
        cupy missing or no CUDA device (the message names the fix).
    TypeError
        A torch tensor that is not on a CUDA device.
    """
    cp = require()
    if isinstance(obj, cp.ndarray):
        return obj
    mod = type(obj).__module__
    if mod.startswith("torch"):
        if getattr(obj.device, "type", None) != "cuda":
            raise TypeError(
                f"a torch tensor on device {obj.device} is not GPU-resident; pass it as is "
                "with backend='cpu', or move it with tensor.cuda()"
            )
        return cp.from_dlpack(obj.detach())
    return cp.asarray(np.asarray(obj))


def validate_ids(experts: Any, offsets: Any, num_experts: int) -> tuple[Any, np.ndarray]:
    """Validate GPU-resident expert ids the way :class:`lrc_kernels.Trace` validates host ids.

    Same checks, in the same order, with the same messages as the host path (integer dtype,
    ``ndim == 3``, ``k >= 1``, ``k <= E``, offsets, ids in ``[0, E)``, no id twice within a
    token); the scans over the ids run on the device.

    Parameters
    ----------
    experts : cupy.ndarray or CUDA torch.Tensor, shape (N, L, k)
    offsets : array_like of int, shape (S + 1,), or None
    num_experts : int

    Returns
    -------
    ids : cupy.ndarray, shape (N, L, k)
        C-contiguous, dtype ``lrc_kernels._trace.id_dtype_for(num_experts)``.
    offsets : numpy.ndarray of int64, shape (S + 1,)

    Raises
    ------
    TypeError, ValueError
        Malformed input; the message names the sequence, token, layer and slot.
    ImportError, RuntimeError
        cupy missing or no CUDA device.
    """
    cp = require()
    x = as_device_array(experts)
    with x.device:
        return _plan.validate_ids(x, offsets, num_experts, xp=cp, launch=_launcher(cp))


def window_hist_table(
    experts: Any,
    offsets: Any,
    num_experts: int,
    ms: Sequence[int],
    group: Any,
    n_groups: int,
    per_expert: bool,
) -> np.ndarray:
    """SRP window histograms of every (group, layer[, expert]), computed on the GPU.

    Parameters
    ----------
    experts : numpy.ndarray, cupy.ndarray or CUDA torch.Tensor, shape (N, L, k)
        Valid expert ids (as stored by a :class:`lrc_kernels.Trace`). Host arrays are copied
        to the device once; device arrays are used in place.
    offsets : array_like of int, shape (S + 1,)
        Sequence boundaries.
    num_experts : int
        ``E``.
    ms : sequence of int
        Segment lengths ``m >= 1``; their histograms lie side by side in the last axis.
    group : array_like of int, shape (S,)
        Output row of each sequence, in ``[0, n_groups)``.
    n_groups : int
        Number of output rows.
    per_expert : bool
        Keep one histogram per expert (True) or sum the experts of each layer (False).

    Returns
    -------
    numpy.ndarray of int64, shape (n_groups, L, E or 1, sum(m + 1))
        Bit-identical to :func:`lrc_kernels.reference.window_hist_table`.

    Notes
    -----
    Definition: ``docs/metrics.md``, "SRP". Kernel and launch configuration:
    ``docs/gpu.md``.
    """
    cp = require()
    x = as_device_array(experts)
    with x.device:
        out = _plan.window_hist_table(
            x,
            offsets,
            num_experts,
            ms,
            group,
            n_groups,
            per_expert,
            xp=cp,
            launch=_launcher(cp),
            budget=_scratch_budget(cp),
        )
        return cp.asnumpy(out)


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
) -> np.ndarray:
    """Priority-stack depth counts (SCH, LRU, LFU, Belady), computed on the GPU.

    Parameters
    ----------
    experts : numpy.ndarray, cupy.ndarray or CUDA torch.Tensor, shape (N, L, k)
        Valid expert ids (as stored by a :class:`lrc_kernels.Trace`).
    offsets : array_like of int, shape (S + 1,)
        Sequence boundaries.
    num_experts : int
        ``E``.
    policy : {"sch", "lru", "lfu", "belady"}
    m : int or None
        SCH future window (ignored by the other policies).
    model_level : bool
        One cache over all layers (ids ``l*E + e``) instead of one per layer.
    warm_start : bool
        First accesses hit while the cache has free room (the paper's convention).
    group : array_like of int, shape (S,)
        Output row of each sequence, in ``[0, n_groups)``.
    n_groups : int
        Number of output rows.

    Returns
    -------
    numpy.ndarray of int64, shape (n_groups, L or 1, N + 1)
        ``stat[d]``: accesses hitting at every cache size ``C > d``; ``stat[N]``: misses at
        every size. Bit-identical to :func:`lrc_kernels.reference.stack_stats_table`.

    Notes
    -----
    Definition: ``docs/metrics.md``, "One engine for SCH, LRU, LFU and Belady". Kernel and
    launch configuration: ``docs/gpu.md``.
    """
    cp = require()
    x = as_device_array(experts)
    with x.device:
        out = _plan.stack_stats_table(
            x,
            offsets,
            num_experts,
            policy,
            m,
            model_level,
            warm_start,
            group,
            n_groups,
            xp=cp,
            launch=_launcher(cp),
            budget=_scratch_budget(cp),
        )
        return cp.asnumpy(out)
