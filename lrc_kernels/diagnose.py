"""Diagnosis of a routing trace for expert offloading: what limits the cache hit rate.

:func:`diagnose` answers, at one memory budget, whether a better replacement policy would
help ("policy gap") or only more memory would ("working-set limit"), with the numbers the
answer rests on. It is built on the public API only (:func:`lrc_kernels.hit_curve`,
:class:`lrc_kernels.Trace`) and NumPy. ``docs/diagnose.md`` defines every number.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

import lrc_kernels as lk

from ._validate import check_choice, check_int

__all__ = ["diagnose", "Diagnosis", "FITS_LRU", "LOW_BELADY", "GAP"]

#: "fits" when LRU (the simple online policy) already hits at least this often.
FITS_LRU = 0.90
#: "working-set limit" when even Belady (the offline optimum) hits less often than this.
LOW_BELADY = 0.60
#: "policy gap" when Belady beats LRU by at least this much (and Belady >= LOW_BELADY).
GAP = 0.10

VERDICTS = ("fits", "working-set limit", "policy gap", "near bound")
LEVELS = ("layer", "model", "both")
_EXPLAIN = {
    "fits": "LRU already hits >= {fits:.2f}: the budget holds the working set",
    "working-set limit": (
        "even Belady (the offline optimum) hits < {low:.2f}: no policy reaches a good hit "
        "rate; more memory is needed"
    ),
    "policy gap": "Belady beats LRU by >= {gap:.2f}: a better (predictive) policy would help",
    "near bound": "LRU is within {gap:.2f} of Belady: only more memory helps much",
}


def verdict(belady: float, lru: float) -> str:
    """The verdict for one pair of hit rates (rules in :func:`diagnose`'s Notes)."""
    if lru >= FITS_LRU:
        return "fits"
    if belady < LOW_BELADY:
        return "working-set limit"
    if belady - lru >= GAP - 1e-12:  # 0.7 - 0.6 is 0.0999... in floats
        return "policy gap"
    return "near bound"


@dataclass
class Diagnosis:
    """What :func:`diagnose` found; plain fields (NumPy arrays and numbers).

    Attributes
    ----------
    num_experts, top_k, num_layers, num_tokens : int
        Shape of the trace (``E``, ``k``, ``L``, tokens over all sequences).
    budget, rho : int, float
        Experts in fast memory per layer (``C``) and the cache ratio ``C / k``. The shared
        (model-level) cache holds ``L * C`` experts, the same ratio.
    m : int
        Window length of the working set.
    level : str
        ``"layer"``, ``"model"`` or ``"both"``: which caches were simulated.
    working_set_mean : ndarray of float64, shape (L,)
        Mean number of distinct experts per window of ``m`` tokens, per layer.
    working_set_percentiles : ndarray of int64, shape (L, 3)
        50th, 90th and 99th nearest-rank percentile of that number per layer.
    working_set_histogram : ndarray of int64, shape (L, E + 1)
        Windows with exactly ``n`` distinct experts, per layer.
    model_working_set_mean : float
        Mean distinct (layer, expert) pairs per window (the sum over layers, window by window).
    model_working_set_percentiles : ndarray of int64, shape (3,)
        Its 50th, 90th and 99th percentile.
    windows : int
        Windows per layer (sequences shorter than ``m`` contribute none).
    coverage, experts_for_coverage : float, ndarray of int64 (L,)
        Fewest experts of each layer that receive ``coverage`` (default 0.9) of its
        activations; ``model_experts_for_coverage``: the same over (layer, expert) pairs.
    entropy : ndarray of float64, shape (L,)
        Normalised routing entropy ``H(p) / log(E)`` of each layer's expert distribution
        (0 when ``E == 1``); ``model_entropy`` is the mean over layers.
    activations : ndarray of int64, shape (L, E)
        Activations of every expert over the whole trace.
    reuse_histogram : ndarray of int64, shape (L, E + 1)
        LRU stack (reuse) distance counts: ``[l, d]`` accesses found at depth ``d`` (``d``
        other experts used since), the last column first accesses of a sequence.
    belady, lru, static : ndarray of float64, shape (L,) or None
        Per-layer hit rates at ``budget`` (layer level; ``None`` when ``level="model"``).
    model_belady, model_lru, model_static : float or None
        Shared-cache hit rates at ``L * budget`` (``None`` when ``level="layer"``).
    verdicts : dict
        ``"layer"`` (the verdict on the layer means), ``"model"`` (on the shared cache),
        ``"per_layer"`` (list, one per layer), present for the levels computed.
    """

    num_experts: int
    top_k: int
    num_layers: int
    num_tokens: int
    budget: int
    rho: float
    m: int
    level: str
    windows: int
    working_set_mean: Any
    working_set_percentiles: Any
    working_set_histogram: Any
    model_working_set_mean: float
    model_working_set_percentiles: Any
    coverage: float
    experts_for_coverage: Any
    model_experts_for_coverage: int
    entropy: Any
    model_entropy: float
    activations: Any
    reuse_histogram: Any
    belady: Any = None
    lru: Any = None
    static: Any = None
    model_belady: float | None = None
    model_lru: float | None = None
    model_static: float | None = None
    verdicts: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Every field as plain Python values (lists, ints, floats), ready for ``json``."""
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            v = getattr(self, name)
            out[name] = v.tolist() if isinstance(v, np.ndarray) else _plain(v)
        out["thresholds"] = {"fits_lru": FITS_LRU, "low_belady": LOW_BELADY, "gap": GAP}
        return out

    def summary(self) -> str:
        """A plain-words report: the verdicts, then the numbers they rest on."""
        return _summary(self)


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def diagnose(
    trace: Any,
    budget: int | None = None,
    *,
    rho: float | None = None,
    m: int = 16,
    level: str = "both",
    coverage: float = 0.9,
    num_experts: int | None = None,
    backend: str = "auto",
) -> Diagnosis:
    """Diagnose what limits the expert-cache hit rate of a trace at one memory budget.

    Parameters
    ----------
    trace : Trace, array_like or path
        The routing trace (anything :func:`lrc_kernels.as_trace` or
        :func:`lrc_kernels.read_trace` takes).
    budget : int, optional
        Experts held in fast memory per layer, ``C`` in ``[1, E]``. The shared cache holds
        ``L * C``. Give ``budget`` or ``rho``, not both; default ``rho = 2`` (``C = 2k``,
        at most ``E``).
    rho : float, optional
        The budget as a cache ratio ``C / k`` (must give a whole ``C``).
    m : int
        Window length (tokens) of the working set; default 16.
    level : {"layer", "model", "both"}
        Simulate one cache per layer, one shared cache, or both (default).
    coverage : float
        Share of activations for ``experts_for_coverage`` (default 0.9), in ``(0, 1]``.
    num_experts : int, optional
        ``E`` for array input.
    backend : str
        Passed to :func:`lrc_kernels.hit_curve`.

    Returns
    -------
    Diagnosis

    Notes
    -----
    Definitions (``docs/diagnose.md``):

    - Working set: distinct experts among the ``m`` tokens of each sliding window
      ``[t, t+m)``, ``t = 0 .. T-m`` of each sequence (SPEC's windows; shorter sequences
      have none). Percentiles are nearest-rank: the smallest ``v`` with at least ``q %`` of
      the windows at or below ``v``.
    - Belady and LRU: ``hit_curve(trace, policy, level=...).at(rho)`` (warm start, mean of
      per-sequence rates). Static oracle: the ``C`` most used experts of each layer over the
      whole trace (shared cache: the ``L*C`` most used (layer, expert) pairs) stay in fast
      memory; its hit rate is their share of all activations. It has no warm start, weighs
      sequences by length and never loads an expert, so it can exceed Belady slightly.
    - Verdict, from the Belady and LRU rates (layer means, or the shared cache): "fits" if
      LRU >= 0.90; else "working-set limit" if Belady < 0.60; else "policy gap" if
      Belady - LRU >= 0.10 (up to 1e-12); else "near bound". The thresholds are the
      module constants ``FITS_LRU``, ``LOW_BELADY`` and ``GAP``.
    """
    tr = trace if isinstance(trace, lk.Trace) else _load(trace, num_experts)
    E, k, L = tr.num_experts, tr.top_k, tr.num_layers
    level = check_choice(level, "level", LEVELS)
    m = check_int(m, "m", 1, what="a positive integer")
    C, rho_v = _budget(budget, rho, E, k)
    if isinstance(coverage, bool) or not isinstance(coverage, (int, float, np.floating)):
        raise TypeError(f"coverage must be a number in (0, 1], got {coverage!r}")
    if not 0 < float(coverage) <= 1:
        raise ValueError(f"coverage must be in (0, 1], got {coverage!r}")
    if tr.num_tokens == 0:
        raise ValueError("the trace has no tokens: nothing to diagnose")
    x = np.asarray(tr.experts)
    off = np.asarray(tr.offsets, dtype=np.int64)
    acts = np.stack([np.bincount(x[:, l].ravel(), minlength=E) for l in range(L)])
    ws = [_window_distinct(x[:, l], off, m, E) for l in range(L)]
    wins = int(ws[0].shape[0])
    hist = np.stack([np.bincount(w, minlength=E + 1) for w in ws]).astype(np.int64)
    total = np.sum(ws, axis=0, dtype=np.int64) if wins else np.zeros(0, np.int64)
    res = Diagnosis(
        num_experts=E,
        top_k=k,
        num_layers=L,
        num_tokens=int(tr.num_tokens),
        budget=C,
        rho=rho_v,
        m=m,
        level=level,
        windows=wins,
        working_set_mean=_hist_mean(hist),
        working_set_percentiles=np.array([_percentiles(h) for h in hist], dtype=np.int64),
        working_set_histogram=hist,
        model_working_set_mean=float(total.mean()) if wins else float("nan"),
        model_working_set_percentiles=_percentiles(np.bincount(total, minlength=1)),
        coverage=float(coverage),
        experts_for_coverage=np.array([_needed(a, coverage) for a in acts], dtype=np.int64),
        model_experts_for_coverage=_needed(acts.ravel(), coverage),
        entropy=np.array([_entropy(a) for a in acts]),
        model_entropy=float(np.mean([_entropy(a) for a in acts])),
        activations=acts.astype(np.int64),
        reuse_histogram=np.asarray(
            lk.hit_curve(tr, "lru", warm_start=False, backend=backend).stat, dtype=np.int64
        ),
    )
    _hit_rates(res, tr, acts, backend)
    return res


def _load(trace: Any, num_experts: int | None) -> Any:
    if isinstance(trace, (str, bytes)) or hasattr(trace, "__fspath__"):
        return lk.read_trace(trace)
    return lk.as_trace(trace, num_experts=num_experts)


def _budget(budget: Any, rho: Any, E: int, k: int) -> tuple[int, float]:
    """``(C, C / k)`` from ``budget`` (experts per layer) or ``rho`` (default 2)."""
    if budget is not None and rho is not None:
        raise ValueError("give budget (experts per layer) or rho (C / k), not both")
    if budget is not None:
        C = check_int(budget, "budget", 1, E, what="a number of experts per layer")
        return C, C / k
    if rho is None:  # the paper's rho = 2, capped at all E experts
        C = min(2 * k, E)
        return C, C / k
    r = rho
    if isinstance(r, bool) or not isinstance(r, (int, float, np.integer, np.floating)):
        raise TypeError(f"rho must be a number (the cache ratio C / k), got {r!r}")
    r = float(r)
    if not np.isfinite(r) or r <= 0 or r * k > E + 1e-9:
        raise ValueError(f"rho = {r:g} is outside (0, {E / k:g}] (C = rho * k = 1 .. E = {E})")
    C = int(np.rint(r * k))
    if abs(r * k - C) > 1e-9 or C < 1:
        raise ValueError(
            f"rho = {r:g} does not give a whole cache size (rho * k = {r * k:g}); "
            f"valid ratios are multiples of 1/{k} = {1 / k:g}"
        )
    return C, C / k


def _window_distinct(x: np.ndarray, off: np.ndarray, m: int, E: int) -> np.ndarray:
    """Distinct experts in every window ``[t, t+m)`` of every sequence, one layer.

    ``x`` is ``(N, k)``. An occurrence of expert e at token t whose previous occurrence (same
    sequence) is at ``prev`` is the first of e in exactly the windows starting in
    ``(max(prev, t-m), t]``: a difference array over those starts counts them.
    """
    N, k = x.shape
    lengths = np.diff(off)
    nwin = np.maximum(lengths - m + 1, 0)
    base = np.concatenate([[0], np.cumsum(nwin)])
    W = int(base[-1])
    if W == 0:
        return np.zeros(0, dtype=np.int64)
    seq = np.repeat(np.arange(lengths.size), lengths)
    g = np.repeat(np.arange(N, dtype=np.int64), k)
    e = x.ravel().astype(np.int64)
    order = np.lexsort((g, e))
    g, e = g[order], e[order]
    s = seq[g]
    t = g - off[s]
    prev = np.full(t.shape, -1, dtype=np.int64)
    same = (e[1:] == e[:-1]) & (s[1:] == s[:-1])
    prev[1:][same] = t[:-1][same]
    lo = np.maximum(np.maximum(prev + 1, t - m + 1), 0)
    hi = np.minimum(t, lengths[s] - m)
    ok = lo <= hi
    diff = np.bincount(base[s[ok]] + lo[ok], minlength=W + 1)
    diff -= np.bincount(base[s[ok]] + hi[ok] + 1, minlength=W + 1)
    return np.cumsum(diff[:W])


def _hist_mean(hist: np.ndarray) -> np.ndarray:
    n = hist.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (hist * np.arange(hist.shape[1])).sum(axis=1) / n


def _percentiles(h: np.ndarray, qs: tuple[int, ...] = (50, 90, 99)) -> np.ndarray:
    """Nearest-rank percentiles of the values counted by histogram ``h`` (-1 if empty)."""
    n = int(h.sum())
    if n == 0:
        return np.full(len(qs), -1, dtype=np.int64)
    cum = np.cumsum(h)
    # smallest v with cum[v] * 100 >= q * n (exact integer comparison)
    return np.array([int(np.searchsorted(cum * 100, q * n)) for q in qs], dtype=np.int64)


def _needed(counts: np.ndarray, coverage: float) -> int:
    """Fewest items whose counts reach ``coverage`` of the total."""
    c = np.sort(np.asarray(counts, dtype=np.int64))[::-1]
    cum = np.cumsum(c)
    if cum[-1] == 0:
        return 0
    q = Fraction(str(coverage))  # 0.9 -> 9/10 exactly: integer comparison, no rounding
    return int(np.searchsorted(cum * q.denominator, q.numerator * int(cum[-1]))) + 1


def _entropy(counts: np.ndarray) -> float:
    E = counts.size
    p = counts[counts > 0] / counts.sum()
    if E == 1:
        return 0.0
    return float(-(p * np.log(p)).sum() / np.log(E))


def _static_share(counts: np.ndarray, C: int) -> float:
    c = np.sort(np.asarray(counts, dtype=np.int64).ravel())[::-1]
    return float(c[:C].sum() / c.sum())


def _hit_rates(res: Diagnosis, tr: Any, acts: np.ndarray, backend: str) -> None:
    rho, L = res.rho, res.num_layers
    if res.level in ("layer", "both"):
        res.belady = np.asarray(lk.hit_curve(tr, "belady", backend=backend).at(rho), float)
        res.lru = np.asarray(lk.hit_curve(tr, "lru", backend=backend).at(rho), float)
        res.static = np.array([_static_share(a, res.budget) for a in acts])
        res.verdicts["layer"] = verdict(float(res.belady.mean()), float(res.lru.mean()))
        res.verdicts["per_layer"] = [
            verdict(b, u) for b, u in zip(res.belady, res.lru, strict=True)
        ]
    if res.level in ("model", "both"):
        kw = {"level": "model", "backend": backend}
        res.model_belady = float(lk.hit_curve(tr, "belady", **kw).at(rho))
        res.model_lru = float(lk.hit_curve(tr, "lru", **kw).at(rho))
        res.model_static = _static_share(acts, L * res.budget)
        res.verdicts["model"] = verdict(res.model_belady, res.model_lru)


def _reuse_buckets(stat: np.ndarray) -> list[tuple[str, int]]:
    """Reuse distances in powers of two: 0, 1, 2-3, 4-7, ..., then first accesses."""
    d = stat[:-1]
    out = [("0", int(d[:1].sum()))]
    lo = 1
    while lo < d.size:
        hi = min(2 * lo, d.size)
        out.append((f"{lo}" if hi == lo + 1 else f"{lo}-{hi - 1}", int(d[lo:hi].sum())))
        lo = hi
    out.append(("first", int(stat[-1])))
    return out


def _summary(d: Diagnosis) -> str:
    th = {"fits": FITS_LRU, "low": LOW_BELADY, "gap": GAP}
    lines = [
        f"budget: {d.budget} of {d.num_experts} experts per layer (rho = C/k = {d.rho:g}); "
        f"shared cache {d.budget * d.num_layers} of {d.num_experts * d.num_layers}",
    ]
    for lev, b, u, s in (
        ("layer", d.belady, d.lru, d.static),
        ("model", d.model_belady, d.model_lru, d.model_static),
    ):
        if lev not in d.verdicts:
            continue
        b, u, s = (float(np.mean(v)) for v in (b, u, s))
        v = d.verdicts[lev]
        what = "one cache per layer (layer means)" if lev == "layer" else "one shared cache"
        lines += [
            f"verdict ({what}): {v.upper()}",
            f"  Belady {b:.3f}  LRU {u:.3f}  static {s:.3f}  gap (Belady - LRU) {b - u:.3f}",
            "  " + _EXPLAIN[v].format(**th),
        ]
        if v == "working-set limit" and b - u >= GAP - 1e-12:
            lines.append(
                f"  (a better policy would still gain up to {b - u:.2f}, short of {LOW_BELADY:.2f})"
            )
    lines.append(
        f"rules: fits if LRU >= {FITS_LRU:.2f}; else working-set limit if Belady < "
        f"{LOW_BELADY:.2f}; else policy gap if Belady - LRU >= {GAP:.2f}; else near bound"
    )
    pct = int(round(d.coverage * 100))
    lines += [
        "",
        f"per layer (working set = distinct experts per window of m = {d.m} tokens; "
        f"{d.windows} windows per layer)",
    ]
    head = (
        f"{'layer':>5} {'ws mean':>8} {'p50':>4} {'p90':>4} {'p99':>4} {'E@' + str(pct) + '%':>6}"
    )
    head += f" {'entropy':>7}"
    if d.belady is not None:
        head += f" {'belady':>7} {'lru':>7} {'static':>7}  verdict"
    lines.append(head)
    for l in range(d.num_layers):
        p = d.working_set_percentiles[l]
        row = f"{l:>5} {d.working_set_mean[l]:>8.2f} {p[0]:>4} {p[1]:>4} {p[2]:>4}"
        row += f" {d.experts_for_coverage[l]:>6} {d.entropy[l]:>7.3f}"
        if d.belady is not None:
            row += f" {d.belady[l]:>7.3f} {d.lru[l]:>7.3f} {d.static[l]:>7.3f}"
            row += f"  {d.verdicts['per_layer'][l]}"
        lines.append(row)
    mp = d.model_working_set_percentiles
    lines.append(
        f"{'all':>5} {d.model_working_set_mean:>8.2f} {mp[0]:>4} {mp[1]:>4} {mp[2]:>4} "
        f"{d.model_experts_for_coverage:>6} {d.model_entropy:>7.3f}"
        "  (sums over layers; entropy: layer mean)"
    )
    stat = d.reuse_histogram.sum(axis=0)
    n = max(int(stat.sum()), 1)
    lines += ["", "reuse distance (LRU stack depth, all layers): share of accesses"]
    lines.append("  " + "  ".join(f"{name}: {c / n:.3f}" for name, c in _reuse_buckets(stat)))
    return "\n".join(lines)
