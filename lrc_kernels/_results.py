"""Result types returned by the public functions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._messages import plain

__all__ = ["SRPResult", "HitCurve", "cache_size_for"]

#: how to install the optional pandas dependency of ``to_pandas()``
PANDAS_EXTRA = "pip install 'lrc-kernels[pandas]'"


def _fmt_shape(a: Any) -> str:
    return str(tuple(np.shape(a)))


def _pandas() -> Any:
    """pandas, imported on first use; without it a clear ImportError naming the extra."""
    try:
        import pandas
    except ImportError as exc:
        raise ImportError(
            f"to_pandas() needs pandas, which is not installed: {PANDAS_EXTRA}"
        ) from exc
    return pandas


def _m_list(m: Any) -> tuple[list[int], bool]:
    """(segment lengths, whether the arrays have a leading m axis)."""
    if isinstance(m, (list, tuple, np.ndarray)):
        return [int(v) for v in m], True
    return [int(m)], False


def _tidy(
    head: dict[str, Any], axes: list[tuple[str | None, Any]], values: dict[str, Any]
) -> dict[str, np.ndarray]:
    """Columns of a long table: one row per element of the grid spanned by ``axes``.

    ``head`` holds constant columns (repeated on every row). ``axes`` lists every axis in
    order as (column name, labels); a None name is an axis of length one that gets no
    column. Each array of ``values`` has the grid's leading axes (a prefix of it) and is
    repeated over the rest. Rows run in C order over the axes, like ``ndarray.ravel``.
    """
    shape = tuple(len(labels) for _, labels in axes)
    n = int(np.prod(shape, dtype=np.int64))
    idx = np.indices(shape).reshape(len(shape), n)
    cols: dict[str, np.ndarray] = {k: np.full(n, v) for k, v in head.items()}
    for i, (name, labels) in enumerate(axes):
        if name is not None:
            cols[name] = np.asarray(labels)[idx[i]]
    for name, a in values.items():
        a = np.asarray(a)
        a = a.reshape(a.shape + (1,) * (len(shape) - a.ndim))
        cols[name] = np.ascontiguousarray(np.broadcast_to(a, shape)).reshape(n)
    return cols


def _labels(domains: list[str] | None) -> list[Any]:
    return [None] if domains is None else [str(d) for d in domains]


def _frame(cols: dict[str, np.ndarray]) -> Any:
    return _pandas().DataFrame(cols)


@dataclass(repr=False, eq=False)
class SRPResult:
    """Segment routing best performance, as returned by :func:`lrc_kernels.srp`.

    Attributes
    ----------
    value : ndarray of float64
        SRP (the best segment-router F1). Shape: model level ``()``, layer level ``(L,)``,
        expert level ``(L, E)``; ``by_domain=True`` adds a leading domain axis and a list of
        m adds a leading m axis before it.
    threshold : ndarray of int64
        The arg-max threshold ``p*`` (smallest among ties), same shape as ``value``.
    ratio : ndarray of float64
        ``preds(p*) / acts``: experts the best segment router keeps per real activation
        (NaN where there is no activation).
    ci : tuple of ndarray or None
        ``(lower, upper)`` basic bootstrap interval when ``bootstrap > 0``.
    m, level, domains, bootstrap, confidence
        What was computed.
    windows : ndarray of int64
        Number of (sequence, window) pairs behind each value (per m, per domain).
    histogram : ndarray of int64, or list of them
        The summed window-count histograms ``H[..., c]`` the values come from (per m, the
        shape of ``value`` plus a last axis ``c = 0..m``); for a list of m, a list of arrays
        (the bins differ per m, so they cannot be stacked). Prefer :attr:`histograms`,
        which has one type whatever the number of m.

    Notes
    -----
    See ``docs/metrics.md`` (section "SRP") for the definition.
    """

    value: Any
    threshold: Any
    ratio: Any
    m: Any
    level: str
    domains: list[str] | None = None
    ci: tuple[Any, Any] | None = None
    bootstrap: int = 0
    confidence: float = 0.95
    windows: Any = None
    histogram: Any = None
    _activation_ratio: Any = field(default=None)
    _activation_fn: Callable[[], Any] | None = field(default=None)

    @property
    def histograms(self) -> list[np.ndarray]:
        """The histograms as a list with one array per m, also for a single m.

        ``histograms[i]`` has the shape of ``value[i]`` (of ``value`` for a single m) plus a
        last axis ``c = 0..m_i``.
        """
        _, has_m = _m_list(self.m)
        return list(self.histogram) if has_m else [self.histogram]

    @property
    def activation_ratio(self) -> np.ndarray:
        """Per-expert activation ratio ``acts / (m * windows)``, shape ``(..., L, E)``.

        The leading axes follow ``value`` (m list, then domain). For m = 1 this is the plain
        token frequency of each expert.
        """
        if self._activation_ratio is None and self._activation_fn is not None:
            self._activation_ratio = self._activation_fn()
            self._activation_fn = None
        return self._activation_ratio

    def to_pandas(self) -> Any:
        """The result as a tidy long :class:`pandas.DataFrame`: one row per SRP value.

        Rows run over m, then domain, then layer, then expert (the order of ``value``'s
        axes). The columns, in this order, are those that apply (``docs/api.md``, "Results
        as data frames"):

        - ``level`` (str): ``"model"``, ``"layer"`` or ``"expert"``;
        - ``layer`` (int64): layer index 0 .. L-1, at layer and expert level;
        - ``expert`` (int64): expert id 0 .. E-1, at expert level;
        - ``domain`` (str): the domain label, with ``by_domain=True``;
        - ``m`` (int64): the segment length (also for a single m);
        - ``srp`` (float64): ``value``;
        - ``threshold`` (int64): ``threshold`` (p*);
        - ``ratio`` (float64): ``ratio`` (preds/acts; NaN where there is no activation);
        - ``ci_low``, ``ci_high`` (float64): ``ci``, with ``bootstrap > 0``;
        - ``windows`` (int64): ``windows`` of the row's m and domain.

        Returns
        -------
        pandas.DataFrame

        Raises
        ------
        ImportError
            pandas is not installed (``pip install 'lrc-kernels[pandas]'``).
        """
        return _frame(self._columns())

    def _columns(self) -> dict[str, np.ndarray]:
        """The columns of :meth:`to_pandas` as numpy arrays (no pandas needed)."""
        ms, has_m = _m_list(self.m)
        arrays = {
            "srp": np.asarray(self.value, dtype=np.float64),
            "threshold": np.asarray(self.threshold, dtype=np.int64),
            "ratio": np.asarray(self.ratio, dtype=np.float64),
        }
        if self.ci is not None:
            arrays["ci_low"] = np.asarray(self.ci[0], dtype=np.float64)
            arrays["ci_high"] = np.asarray(self.ci[1], dtype=np.float64)
        arrays["windows"] = np.asarray(self.windows, dtype=np.int64)
        lead = int(has_m) + int(self.domains is not None)
        level_shape = arrays["srp"].shape[lead:]
        for k, a in arrays.items():  # make the m and domain axes explicit
            if not has_m:
                a = a[None]
            if self.domains is None:
                a = a[:, None]
            arrays[k] = a
        names = ("layer", "expert")[: len(level_shape)]
        axes: list[tuple[str | None, Any]] = [
            ("m", ms),
            ("domain" if self.domains is not None else None, _labels(self.domains)),
            *[(nm, np.arange(n, dtype=np.int64)) for nm, n in zip(names, level_shape, strict=True)],
        ]
        cols = _tidy({"level": self.level}, axes, arrays)
        order = ["level", *names, "domain", "m", *arrays]
        return {k: cols[k] for k in order if k in cols}

    def __repr__(self) -> str:
        v = np.asarray(self.value)
        body = f"{float(v):.6f}" if v.ndim == 0 else f"array{_fmt_shape(v)}"
        ci = ""
        if self.ci is not None and v.ndim == 0:
            ci = f", ci=({float(self.ci[0]):.6f}, {float(self.ci[1]):.6f})"
        return f"SRPResult(level={self.level!r}, m={self.m!r}, value={body}{ci})"


def cache_size_for(rho: Any, per_unit: int, n: int) -> np.ndarray:
    """Cache sizes ``C = rho * per_unit`` as int64, checking each is a whole size in [1, n]."""
    r = np.asarray(rho, dtype=np.float64)
    flat = r.ravel()
    if not np.all(np.isfinite(flat)):
        bad = plain(flat[~np.isfinite(flat)][0])
        raise ValueError(f"rho must be a finite number, got {bad}")
    C = r * per_unit
    Ci = np.rint(C)
    lo, hi = 1.0 / per_unit, n / per_unit
    outside = ((r <= 0) | (Ci > n) | (C > n + 1e-9)).ravel()
    if outside.any():
        raise ValueError(
            f"rho = {flat[outside][0]:.10g} is outside (0, {hi:g}]: the cache ratio is "
            f"C / {per_unit} for cache sizes C = 1 .. {n}"
        )
    partial = ((np.abs(C - Ci) > 1e-9) | (Ci < 1)).ravel()
    if partial.any():
        i = int(np.flatnonzero(partial)[0])
        raise ValueError(
            f"rho = {flat[i]:.10g} does not give a whole cache size (rho * {per_unit} = "
            f"{C.ravel()[i]:.10g}); valid ratios are multiples of {lo:g} up to {hi:g}"
        )
    return Ci.astype(np.int64)


@dataclass(repr=False, eq=False)
class HitCurve:
    """Hit rate at every cache size, as returned by :func:`lrc_kernels.sch` and
    :func:`lrc_kernels.hit_curve`.

    Attributes
    ----------
    rates : ndarray of float64
        ``rates[..., i]`` = mean over sequences of the hit rate ``h(sizes[i])``; for a full
        curve (``sizes = 1 .. N``) that is ``rates[..., C-1] = h(C)``. Layer level:
        ``(L, len(sizes))``, one curve per layer; model level: ``(len(sizes),)``, one cache
        shared by all layers. ``by_domain=True`` adds a leading domain axis, a list of m a
        leading m axis.
    sizes : ndarray of int64
        The cache size of each position of the last axis of ``rates`` (increasing):
        ``1 .. N`` (N = E, or L*E at model level) for a full curve, else the grid asked for
        with ``sizes=`` or ``rho=``.
    policy, m, level, warm_start, domains
        What was computed.
    params : dict
        The policy's parameter, e.g. ``{"decay": 0.95}`` (empty for unparameterised
        policies; SCH's window is ``m``).
    num_experts, top_k, num_layers : int
        Shape of the trace.
    sequences : ndarray of int64
        Non-empty sequences averaged (per domain). Empty sequences have no curve.
    hits : ndarray of int64
        Accesses that hit at each size, summed over the sequences (shape of ``rates``).
    accesses : ndarray of int64
        All accesses of those sequences (shape of ``rates`` without the size axis).
    stat : ndarray of int64 or None
        Stack policies: the raw stack-depth counts summed over sequences, over every depth
        whatever ``sizes`` (last entry: misses at every size); None for per-size policies.

    Notes
    -----
    See ``docs/metrics.md`` ("The priority stack", "Policies without the stack property")
    for the definitions.
    """

    rates: Any
    policy: str
    m: Any
    level: str
    warm_start: bool
    num_experts: int
    top_k: int
    num_layers: int
    domains: list[str] | None = None
    sequences: Any = None
    stat: Any = None
    sizes: Any = None
    hits: Any = None
    accesses: Any = None
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = int(np.shape(self.rates)[-1])
        if self.sizes is None:
            self.sizes = np.arange(1, n + 1, dtype=np.int64)
        self.sizes = np.asarray(self.sizes, dtype=np.int64)
        if self.stat is not None:
            stat = np.asarray(self.stat, dtype=np.int64)
            if self.hits is None:
                self.hits = np.cumsum(stat[..., :-1], axis=-1)[..., self.sizes - 1]
            if self.accesses is None:
                self.accesses = stat.sum(axis=-1)

    @property
    def num_ids(self) -> int:
        """Ids one cache holds at most: ``E`` at layer level, ``L*E`` at model level."""
        return self.num_experts * (self.num_layers if self.level == "model" else 1)

    def _positions(self, rho: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(C, i)``: cache sizes of ``rho`` and their positions in :attr:`sizes`."""
        C = cache_size_for(rho, self.per_unit, self.num_ids)
        idx = np.clip(np.searchsorted(self.sizes, C), 0, self.sizes.size - 1)
        missing = np.asarray(self.sizes[idx] != C).ravel()
        if missing.any():
            c = int(np.asarray(C).ravel()[int(np.flatnonzero(missing)[0])])
            shown = ", ".join(str(int(v)) for v in self.sizes[:8])
            more = ", ..." if self.sizes.size > 8 else ""
            raise ValueError(
                f"cache size C = {c} (rho = {c / self.per_unit:g}) is not in this curve's "
                f"sizes ({shown}{more}); compute it with hit_curve(..., sizes=[...]) or rho=[...]"
            )
        return C, idx

    @property
    def per_unit(self) -> int:
        """Cache size of ratio 1: ``k`` at layer level, ``L*k`` at model level."""
        return self.top_k * (self.num_layers if self.level == "model" else 1)

    @property
    def num_sizes(self) -> int:
        """Cache sizes in the curve (the length of the last axis of ``rates``)."""
        return int(np.shape(self.rates)[-1])

    @property
    def cache_sizes(self) -> np.ndarray:
        """:attr:`sizes` (``C = 1 .. N`` for a full curve)."""
        return self.sizes

    @property
    def rho(self) -> np.ndarray:
        """Cache ratio of every size: ``C / k`` (model level ``C / (L*k)``)."""
        return self.cache_sizes / self.per_unit

    def at(self, rho: Any) -> Any:
        """Hit rate at cache ratio ``rho``: ``h(rho * k)`` (model level ``h(rho * L * k)``).

        ``rho`` may be a scalar (result drops the size axis) or a sequence (a last axis of
        ``len(rho)``). It must lie in ``(0, E/k]`` and give a whole cache size, and that
        size must be in :attr:`sizes` (always so for a full curve).
        """
        _, idx = self._positions(rho)
        return np.asarray(self.rates)[..., idx]

    def to_pandas(self, rho: Any = None) -> Any:
        """The curve as a tidy long :class:`pandas.DataFrame`: one row per hit rate.

        Rows run over m, then domain, then layer, then cache size. The columns, in this
        order, are those that apply (``docs/api.md``, "Results as data frames"):

        - ``policy`` (str): the policy name (one of ``lrc_kernels.ALL_POLICIES``);
        - ``level`` (str): ``"layer"`` or ``"model"``;
        - ``layer`` (int64): layer index 0 .. L-1, at layer level;
        - ``domain`` (str): the domain label, with ``by_domain=True``;
        - ``m`` (int64): the future window, for ``policy="sch"``;
        - ``decay``, ``window``, ``prefix`` or ``pinned``: the policy's parameter
          (:attr:`params`), for the parameterised per-size policies;
        - ``rho`` (float64): the cache ratio ``C / k`` (model level ``C / (L*k)``);
        - ``cache_size`` (int64): ``C``;
        - ``hit_rate`` (float64): the mean of the per-sequence rates at size C;
        - ``hits`` (int64): accesses that hit at size C, summed over the sequences
          (:attr:`hits`; for stack policies ``stat[..., :C].sum(-1)``);
        - ``accesses`` (int64): all accesses of those sequences (:attr:`accesses`); with
          sequences of one length, ``hits / accesses`` is ``hit_rate``;
        - ``sequences`` (int64): ``sequences`` of the row's domain.

        Parameters
        ----------
        rho : float or sequence of float, optional
            Only the cache sizes ``C = rho * k`` (model level ``rho * L * k``); each ratio
            must give a whole size in :attr:`sizes`, as for :meth:`at`. Default: every size
            of :attr:`sizes`.

        Returns
        -------
        pandas.DataFrame

        Raises
        ------
        ImportError
            pandas is not installed (``pip install 'lrc-kernels[pandas]'``).
        ValueError
            A ratio gives no whole cache size.
        """
        return _frame(self._columns(rho))

    def _columns(self, rho: Any = None) -> dict[str, np.ndarray]:
        """The columns of :meth:`to_pandas` as numpy arrays (no pandas needed)."""
        if rho is None:
            sizes, idx = self.sizes, np.arange(self.sizes.size)
        else:
            sizes, idx = (np.atleast_1d(a) for a in self._positions(rho))
        ms, has_m = (None, False) if self.m is None else _m_list(self.m)
        rates = np.asarray(self.rates, dtype=np.float64)
        hits = np.asarray(self.hits, dtype=np.int64)
        acc = np.asarray(self.accesses, dtype=np.int64)
        seqs = np.asarray(self.sequences, dtype=np.int64)
        if not has_m:
            rates, hits, acc = rates[None], hits[None], acc[None]
        if self.domains is None:
            rates, hits, acc, seqs = rates[:, None], hits[:, None], acc[:, None], seqs[None]
        if self.level == "model":
            rates, hits, acc = rates[:, :, None], hits[:, :, None], acc[:, :, None]
        arrays = {
            "rho": (sizes / self.per_unit)[None, None, None],
            "cache_size": sizes[None, None, None],
            "hit_rate": rates[..., idx],
            "hits": hits[..., idx],
            "accesses": acc,
            "sequences": np.broadcast_to(seqs, rates.shape[:2]),
        }
        axes: list[tuple[str | None, Any]] = [
            ("m" if ms is not None else None, ms or [None]),
            ("domain" if self.domains is not None else None, _labels(self.domains)),
            (
                "layer" if self.level != "model" else None,
                np.arange(rates.shape[2], dtype=np.int64),
            ),
            (None, sizes),
        ]
        cols = _tidy({"policy": self.policy, "level": self.level, **self.params}, axes, arrays)
        order = ["policy", "level", "layer", "domain", "m", *self.params, *arrays]
        return {k: cols[k] for k in order if k in cols}

    def __repr__(self) -> str:
        m = "" if self.m is None else f", m={self.m!r}"
        m += "".join(f", {k}={v!r}" for k, v in self.params.items())
        return (
            f"HitCurve(policy={self.policy!r}{m}, level={self.level!r}, "
            f"rates=array{_fmt_shape(self.rates)})"
        )
