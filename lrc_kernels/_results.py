"""Result types returned by the public functions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["SRPResult", "HitCurve", "cache_size_for"]


def _fmt_shape(a: Any) -> str:
    return str(tuple(np.shape(a)))


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
    histogram : ndarray of int64
        The summed window-count histograms ``H[..., c]`` the values come from (per m, the
        shape of ``value`` plus a last axis ``c = 0..m``); for a list of m, a list of arrays.

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
    def activation_ratio(self) -> np.ndarray:
        """Per-expert activation ratio ``acts / (m * windows)``, shape ``(..., L, E)``.

        The leading axes follow ``value`` (m list, then domain). For m = 1 this is the plain
        token frequency of each expert.
        """
        if self._activation_ratio is None and self._activation_fn is not None:
            self._activation_ratio = self._activation_fn()
            self._activation_fn = None
        return self._activation_ratio

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
    if not np.all(np.isfinite(r)):
        raise ValueError(f"rho must be finite, got {rho!r}")
    C = r * per_unit
    Ci = np.rint(C)
    lo, hi = 1.0 / per_unit, n / per_unit
    if np.any(r <= 0) or np.any(Ci > n) or np.any(C > n + 1e-9):
        raise ValueError(
            f"rho = {rho!r} is outside (0, {hi:g}]: the cache ratio is C / {per_unit} for "
            f"cache sizes C = 1 .. {n}"
        )
    if np.any(np.abs(C - Ci) > 1e-9) or np.any(Ci < 1):
        raise ValueError(
            f"rho = {rho!r} does not give a whole cache size (rho * {per_unit} = {C!r}); valid "
            f"ratios are multiples of {lo:g} up to {hi:g}"
        )
    return Ci.astype(np.int64)


@dataclass(repr=False, eq=False)
class HitCurve:
    """Hit rate at every cache size, as returned by :func:`lrc_kernels.sch` and
    :func:`lrc_kernels.hit_curve`.

    Attributes
    ----------
    rates : ndarray of float64
        ``rates[..., C-1]`` = mean over sequences of the hit rate ``h(C)``. Layer level:
        ``(L, E)``, one curve per layer; model level: ``(L*E,)``, one cache shared by all
        layers. ``by_domain=True`` adds a leading domain axis, a list of m a leading m axis.
    policy, m, level, warm_start, domains
        What was computed.
    num_experts, top_k, num_layers : int
        Shape of the trace.
    sequences : ndarray of int64
        Non-empty sequences averaged (per domain). Empty sequences have no curve.
    stat : ndarray of int64
        The raw stack-depth counts summed over sequences (last entry: misses at every size).

    Notes
    -----
    See ``docs/metrics.md`` ("The priority stack") for the definition.
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

    @property
    def per_unit(self) -> int:
        """Cache size of ratio 1: ``k`` at layer level, ``L*k`` at model level."""
        return self.top_k * (self.num_layers if self.level == "model" else 1)

    @property
    def num_sizes(self) -> int:
        return int(np.shape(self.rates)[-1])

    @property
    def cache_sizes(self) -> np.ndarray:
        """``C = 1 .. N``."""
        return np.arange(1, self.num_sizes + 1)

    @property
    def rho(self) -> np.ndarray:
        """Cache ratio of every size: ``C / k`` (model level ``C / (L*k)``)."""
        return self.cache_sizes / self.per_unit

    def at(self, rho: Any) -> Any:
        """Hit rate at cache ratio ``rho``: ``h(rho * k)`` (model level ``h(rho * L * k)``).

        ``rho`` may be a scalar (result drops the size axis) or a sequence (a last axis of
        ``len(rho)``). It must lie in ``(0, E/k]`` and give a whole cache size.
        """
        C = cache_size_for(rho, self.per_unit, self.num_sizes)
        return np.asarray(self.rates)[..., C - 1]

    def __repr__(self) -> str:
        m = "" if self.m is None else f", m={self.m!r}"
        return (
            f"HitCurve(policy={self.policy!r}{m}, level={self.level!r}, "
            f"rates=array{_fmt_shape(self.rates)})"
        )
