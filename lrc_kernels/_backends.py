"""The backends behind the public metric functions, as objects of one typed protocol.

A backend computes the integer tables (window-count histograms, stack-depth counts) and
provides the reductions the public functions apply to them (:class:`Reductions`). Every
backend computes the same integers and every reduction is exact up to one correctly
rounded division, so all backends give bit-identical results.

Backends are picked by name (:func:`get`); nothing here imports a kernel module before it is
used, and the reference backend never imports Numba (its reductions are plain NumPy).
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from . import _spec
from . import _validate as _v
from ._trace import Trace, _is_device_array

__all__ = ["Backend", "Reductions", "NumpyReductions", "get", "reductions"]


class Reductions(Protocol):
    """Reductions of integer tables to SRP values and bootstrap quantiles.

    Every implementation gives the same bits: sums of integer counts are exact in float64
    below 2**53, F1 is one correctly rounded division, quantiles use NumPy's arithmetic.
    """

    def best_f1_rows(self, H: np.ndarray, m: int) -> tuple[np.ndarray, ...]:
        """``(f1, p*, preds(p*), acts)`` of each row of ``H`` (bins c = 0..m)."""
        ...

    def best_f1_sparse(
        self, Hb: np.ndarray, row_ptr: np.ndarray, col_c: np.ndarray, m: int
    ) -> np.ndarray:
        """Best F1 of resampled histograms stored without their all-zero bins."""
        ...

    def gather_bins(
        self, tab: np.ndarray, c0: int, m: int, keep: np.ndarray, dtype: Any
    ) -> np.ndarray:
        """Per-sequence counts of the flat bins ``keep`` of ``tab[:, :, c0:c0+m+1]``."""
        ...

    def resample_product(self, W: np.ndarray, H: np.ndarray) -> np.ndarray:
        """``W @ H`` in ``H.dtype`` (exact: the caller picks a dtype that holds the sums)."""
        ...

    def resample_best_f1(
        self, W: np.ndarray, H: np.ndarray, row_ptr: np.ndarray, col_c: np.ndarray, m: int
    ) -> np.ndarray:
        """``best_f1_sparse(resample_product(W, H), row_ptr, col_c, m)`` (same bits)."""
        ...

    def column_quantiles(self, x: np.ndarray, qs: Any) -> np.ndarray:
        """``np.quantile(x, qs, axis=0)``, method "linear"."""
        ...

    def sum_sequences(self, t: np.ndarray) -> np.ndarray:
        """``t.sum(axis=0)`` in int64 (per-sequence integer tables summed)."""
        ...


class Backend(Reductions, Protocol):
    """What :func:`lrc_kernels.srp`, :func:`~lrc_kernels.sch` and
    :func:`~lrc_kernels.hit_curve` need from a backend."""

    name: str

    def ids(self, trace: Trace) -> Any:
        """The trace's ids where this backend reads them (host or device array)."""
        ...

    def window_hist_table(
        self,
        experts: Any,
        offsets: np.ndarray,
        num_experts: int,
        ms: np.ndarray,
        group: np.ndarray,
        n_groups: int,
        per_expert: bool,
        *,
        per_sequence: bool = False,
    ) -> np.ndarray:
        """int64 (or int32 with ``per_sequence``) ``(G, L, E or 1, sum(m + 1))`` table,
        as :func:`lrc_kernels.reference.window_hist_table`."""
        ...

    def window_acts_table(
        self,
        experts: Any,
        offsets: np.ndarray,
        num_experts: int,
        ms: np.ndarray,
        group: np.ndarray,
        n_groups: int,
    ) -> np.ndarray:
        """int64 ``(G, L, E, len(ms))``: ``sum_c c * H[e][c]`` of each expert's window
        histogram for each m (its activations summed over the windows)."""
        ...

    def stack_stats_table(
        self,
        experts: Any,
        offsets: np.ndarray,
        num_experts: int,
        policy: str,
        m: int | None,
        model_level: bool,
        warm_start: bool,
        group: np.ndarray,
        n_groups: int,
    ) -> np.ndarray:
        """int64 ``(G, L or 1, N + 1)`` stack-depth counts, as
        :func:`lrc_kernels.reference.stack_stats_table`."""
        ...

    def policy_hits_table(
        self,
        experts: Any,
        offsets: np.ndarray,
        num_experts: int,
        policy: str,
        sizes: np.ndarray,
        model_level: bool,
        warm_start: bool,
        group: np.ndarray,
        n_groups: int,
        param: Any = None,
    ) -> np.ndarray:
        """int64 hits ``(G, L or 1, len(sizes))`` of a per-size policy, as
        :func:`lrc_kernels.reference.policy_hits_table`."""
        ...


# ------------------------------------------------------------------- reductions
class NumpyReductions:
    """The reductions in plain NumPy (no Numba): the reference backend's."""

    def best_f1_rows(self, H: np.ndarray, m: int) -> tuple[np.ndarray, ...]:
        H = np.asarray(H).reshape(-1, m + 1).astype(np.float64)
        c = np.arange(m + 1, dtype=np.float64)
        acts = H @ c  # exact: integer sums below 2**53
        matches = np.cumsum((H * c)[:, ::-1], axis=1)[:, ::-1]  # matches(p) = sum_{c>=p}
        preds = m * np.cumsum(H[:, ::-1], axis=1)[:, ::-1]
        den = preds + acts[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            f1 = np.where(den > 0, 2.0 * matches / np.where(den > 0, den, 1.0), 0.0)
        thr = np.argmax(f1, axis=1).astype(np.int64) if H.shape[0] else np.zeros(0, np.int64)
        rows = np.arange(H.shape[0])
        return f1[rows, thr], thr, preds[rows, thr], acts

    def best_f1_sparse(
        self, Hb: np.ndarray, row_ptr: np.ndarray, col_c: np.ndarray, m: int
    ) -> np.ndarray:
        Hb = np.asarray(Hb, dtype=np.float64)
        R = row_ptr.shape[0] - 1
        out = np.zeros((Hb.shape[0], R), np.float64)
        for r in range(R):
            a, b = int(row_ptr[r]), int(row_ptr[r + 1])
            if a == b:
                continue
            h = Hb[:, a:b]
            suf_m = np.cumsum((h * col_c[a:b].astype(np.float64))[:, ::-1], axis=1)[:, ::-1]
            suf_c = np.cumsum(h[:, ::-1], axis=1)[:, ::-1]
            den = m * suf_c + suf_m[:, :1]
            with np.errstate(divide="ignore", invalid="ignore"):
                v = np.where(den > 0, 2.0 * suf_m / np.where(den > 0, den, 1.0), 0.0)
            out[:, r] = np.maximum(v.max(axis=1), 0.0)
        return out

    def gather_bins(
        self, tab: np.ndarray, c0: int, m: int, keep: np.ndarray, dtype: Any
    ) -> np.ndarray:
        tab = np.asarray(tab)
        r = keep // (m + 1)
        c = keep % (m + 1)
        return tab[:, r, c0 + c].astype(dtype)

    def resample_product(self, W: np.ndarray, H: np.ndarray) -> np.ndarray:
        return np.asarray(W, dtype=H.dtype) @ H

    def sum_sequences(self, t: np.ndarray) -> np.ndarray:
        return np.asarray(t).sum(axis=0, dtype=np.int64)

    def resample_best_f1(
        self, W: np.ndarray, H: np.ndarray, row_ptr: np.ndarray, col_c: np.ndarray, m: int
    ) -> np.ndarray:
        return self.best_f1_sparse(self.resample_product(W, H), row_ptr, col_c, m)

    def column_quantiles(self, x: np.ndarray, qs: Any) -> np.ndarray:
        qs = np.asarray(qs, np.float64)
        if not (x.shape[0] and x.shape[1]):
            return np.full((qs.shape[0], x.shape[1]), np.nan)
        return np.quantile(np.asarray(x, np.float64), qs, axis=0)


class NumbaReductions:
    """The reductions as the parallel Numba kernels of :mod:`lrc_kernels.cpu._srp`."""

    def best_f1_rows(self, H: np.ndarray, m: int) -> tuple[np.ndarray, ...]:
        from .cpu._srp import best_f1_rows

        return best_f1_rows(H, m)

    def best_f1_sparse(
        self, Hb: np.ndarray, row_ptr: np.ndarray, col_c: np.ndarray, m: int
    ) -> np.ndarray:
        from .cpu._srp import best_f1_sparse

        return best_f1_sparse(Hb, row_ptr, col_c, m)

    def gather_bins(
        self, tab: np.ndarray, c0: int, m: int, keep: np.ndarray, dtype: Any
    ) -> np.ndarray:
        from .cpu._srp import gather_bins

        return gather_bins(tab, c0, m, keep, dtype)

    def resample_product(self, W: np.ndarray, H: np.ndarray) -> np.ndarray:
        from .cpu._srp import resample_product

        return resample_product(W, H)

    def resample_best_f1(
        self, W: np.ndarray, H: np.ndarray, row_ptr: np.ndarray, col_c: np.ndarray, m: int
    ) -> np.ndarray:
        from .cpu._srp import resample_best_f1

        return resample_best_f1(W, H, row_ptr, col_c, m)

    def column_quantiles(self, x: np.ndarray, qs: Any) -> np.ndarray:
        from .cpu._srp import column_quantiles

        return column_quantiles(x, qs)

    def sum_sequences(self, t: np.ndarray) -> np.ndarray:
        from .cpu._srp import sum_sequences

        return sum_sequences(t)


def reductions(name: str = "auto") -> Reductions:
    """The reductions of backend ``name``: NumPy for ``"reference"``, else Numba's (for
    ``"auto"`` only where Numba is installed; both give the same bits)."""
    if name == "reference":
        return NumpyReductions()
    if name == "auto":
        try:
            import numba  # noqa: F401
        except ImportError:
            return NumpyReductions()
    return NumbaReductions()


# --------------------------------------------------------------------- backends
class _HostIds:
    name = "cpu"

    def ids(self, trace: Trace) -> Any:
        x = trace.experts
        if _is_device_array(x):  # explicit request for a host backend: one copy to the host
            x = x.get() if hasattr(x, "get") else x.cpu().numpy()
        return x


def _acts_from_hist(table: np.ndarray, ms: np.ndarray) -> np.ndarray:
    """``sum_c c * H[..., c]`` of each m's block of a per-expert histogram table."""
    cols, _ = _spec.m_columns(ms)
    parts = [
        (table[..., c0 : c0 + int(m) + 1] * np.arange(int(m) + 1, dtype=np.int64)).sum(axis=-1)
        for c0, m in zip(cols, ms, strict=True)
    ]
    return np.stack(parts, axis=-1).astype(np.int64)


class _ActsFromHist:
    """``window_acts_table`` from the per-expert window histograms (backends without a
    direct activation-sum kernel)."""

    def window_acts_table(self, experts, offsets, num_experts, ms, group, n_groups):
        table = self.window_hist_table(experts, offsets, num_experts, ms, group, n_groups, True)
        return _acts_from_hist(table, ms)


class CpuBackend(_HostIds, NumbaReductions):
    """Numba kernels on the host (:mod:`lrc_kernels.cpu`)."""

    name = "cpu"

    def window_hist_table(
        self, experts, offsets, num_experts, ms, group, n_groups, per_expert, *, per_sequence=False
    ):
        from .cpu import window_hist_table

        return window_hist_table(
            experts,
            offsets,
            num_experts,
            ms,
            group,
            n_groups,
            per_expert,
            per_sequence_int32=per_sequence,
        )

    def window_acts_table(self, experts, offsets, num_experts, ms, group, n_groups):
        from .cpu._srp import window_acts_table

        return window_acts_table(experts, offsets, num_experts, ms, group, n_groups)

    def stack_stats_table(self, *args: Any) -> np.ndarray:
        from .cpu import stack_stats_table

        return stack_stats_table(*args)

    def policy_hits_table(self, *args: Any) -> np.ndarray:
        from .cpu._policies import policy_hits_table

        return policy_hits_table(*args)


class ReferenceBackend(_ActsFromHist, _HostIds, NumpyReductions):
    """The plain-Python reference (:mod:`lrc_kernels.reference`) with NumPy reductions."""

    name = "reference"

    def window_hist_table(
        self, experts, offsets, num_experts, ms, group, n_groups, per_expert, *, per_sequence=False
    ):
        from . import reference

        return reference.window_hist_table(
            experts, offsets, num_experts, ms, group, n_groups, per_expert
        )

    def stack_stats_table(self, *args: Any) -> np.ndarray:
        from . import reference

        return reference.stack_stats_table(*args)

    def policy_hits_table(self, *args: Any) -> np.ndarray:
        from . import reference

        return reference.policy_hits_table(*args)


class GpuBackend(_ActsFromHist, NumbaReductions):
    """CuPy kernels (:mod:`lrc_kernels.gpu`); the reductions run on the host."""

    name = "gpu"

    def ids(self, trace: Trace) -> Any:
        return trace.experts

    def window_hist_table(
        self, experts, offsets, num_experts, ms, group, n_groups, per_expert, *, per_sequence=False
    ):
        from . import gpu

        return gpu.window_hist_table(experts, offsets, num_experts, ms, group, n_groups, per_expert)

    def stack_stats_table(self, *args: Any) -> np.ndarray:
        from . import gpu

        return gpu.stack_stats_table(*args)

    def policy_hits_table(self, *args: Any) -> np.ndarray:
        raise no_gpu_kernel(args[3])


def no_gpu_kernel(policy: str) -> ValueError:
    """The error for a per-size policy on the GPU backend (raised before any work)."""
    return ValueError(
        f"policy={policy!r} has no GPU kernel: the per-size policies "
        f"({', '.join(_spec.SIZE_POLICIES)}) run on the CPU; pass backend='cpu' (GPU "
        "ids are copied to the host once)"
    )


_BY_NAME: dict[str, type] = {"cpu": CpuBackend, "gpu": GpuBackend, "reference": ReferenceBackend}


def get(name: str, trace: Trace) -> Backend:
    """The backend called ``name`` (one of :data:`lrc_kernels._spec.BACKENDS`) for ``trace``.

    ``"auto"`` is the GPU for GPU-resident ids, else the CPU. Asking for the GPU checks
    that it can run (installing CuPy, or a device / driver, is named when not).
    """
    _v.check_choice(name, "backend", _spec.BACKENDS)
    if name == "auto":
        name = "gpu" if _is_device_array(trace.experts) else "cpu"
    if name == "gpu":
        from . import gpu

        gpu.require()
    backend: Backend = _BY_NAME[name]()
    return backend
