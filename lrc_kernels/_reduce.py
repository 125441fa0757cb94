"""Reductions from the backends' integer tables to the published numbers.

Best F1 over thresholds (SRP), per-expert activation ratios, mean hit curves, and the
basic bootstrap interval. Every backend produces the same integer tables, and these
reductions are exact up to one correctly rounded division, so the results are
bit-identical across backends. The exact-fraction definitions they must agree with are
:func:`lrc_kernels.reference.srp_from_histogram` and :func:`lrc_kernels.reference.hit_rates`
(``tests/test_reduce.py``).

The array kernels behind best F1 and the bootstrap come from a
:class:`lrc_kernels._backends.Reductions` object: Numba's for the CPU and GPU backends,
plain NumPy for the reference backend (which therefore needs no Numba).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ._backends import Reductions, reductions

__all__ = [
    "best",
    "level_rows",
    "windows_of",
    "activation_ratio",
    "activation_ratio_from_acts",
    "curves",
    "curves_from_hits",
    "bootstrap_weights",
    "bootstrap_ci",
    "load_balance_of",
    "specialization_of",
]

# float32 holds every integer up to 2**24 exactly, float64 up to 2**53
_F32_EXACT = 1 << 24
_F64_EXACT = 1 << 53


def best(
    H: np.ndarray, m: int, red: Reductions | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best F1, its threshold and ``preds/acts`` over the last axis of ``H`` (c = 0..m).

    ``red`` supplies the row kernel (default: Numba where installed, else NumPy; both give
    the same bits). The ratio is NaN where there is no activation.
    """
    red = red if red is not None else reductions()
    shape = H.shape[:-1]
    f1, thr, preds, acts = red.best_f1_rows(H.reshape(-1, m + 1), m)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(acts > 0, preds / np.where(acts > 0, acts, 1), np.nan)
    return f1.reshape(shape), thr.reshape(shape), ratio.reshape(shape)


def level_rows(table: np.ndarray, level: str) -> np.ndarray:
    """(G, L, E|1, W) table summed to the rows of ``level``: (G, W), (G, L, W), (G, L, E, W)."""
    if level == "model":
        return table.sum(axis=(1, 2))
    if level == "layer":
        return table.sum(axis=2)
    return table


def windows_of(lengths: np.ndarray, m: int) -> np.ndarray:
    """Windows of ``m`` tokens in sequences of the given lengths (0 if shorter than m)."""
    return np.maximum(lengths - m + 1, 0)


def activation_ratio(tab: np.ndarray, m: int, win: np.ndarray, by_domain: bool) -> np.ndarray:
    """Per-expert ``acts / (m * windows)`` from a (D, L, E, m+1) table."""
    c = np.arange(m + 1, dtype=np.float64)
    return activation_ratio_from_acts(tab @ c, m, win, by_domain)  # exact below 2**53


def activation_ratio_from_acts(acts: np.ndarray, m: int, win: np.ndarray, by_domain: bool):
    """:func:`activation_ratio` from the (D, L, E) activation sums ``sum_c c * H[c]``
    themselves (the same integers, the same division, so the same bits)."""
    acts = np.asarray(acts, np.float64)
    win = np.atleast_1d(win).astype(np.float64)
    den = (m * win)[:, None, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(den > 0, acts / np.where(den > 0, den, 1), np.nan)
    return r if by_domain else r[0]


def curves(
    tab: np.ndarray,
    keys: Sequence[tuple[int, int]],
    A: int,
    D: int,
    model_level: bool,
    L: int,
    n_ids: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean per-sequence curves from per-(domain, length) class tables.

    ``tab[g]`` sums the depth counts of the sequences of class ``keys[g] = (domain,
    length)``, which all have the same length T_g and ``A`` accesses per token, so their
    curves sum to ``cumsum(tab[g]) / (T_g * A)`` with exact integers up to one division.
    Classes are added in order of length for a fixed summation order. Returns ``(rates,
    stat_sum, sequences)`` with a leading axis of ``D`` domains.
    """
    Lo = 1 if model_level else L
    num = np.zeros((D, Lo, n_ids), np.float64)
    stat_sum = np.zeros((D, Lo, n_ids + 1), np.int64)
    nseq = np.zeros(D, np.int64)
    order = sorted(range(len(keys)), key=lambda g: (keys[g][1], keys[g][0]))
    for g in order:
        d, T = keys[g]
        d = d if d is not None else 0
        if T == 0 or g >= tab.shape[0]:
            continue
        row = tab[g]
        n_g = int(row[0].sum()) // (T * A)  # sequences in the class
        cum = np.cumsum(row[:, :n_ids], axis=-1)
        num[d] += cum / (T * A)
        stat_sum[d] += row
        nseq[d] += n_g
    with np.errstate(divide="ignore", invalid="ignore"):
        rates = np.where(nseq[:, None, None] > 0, num / np.maximum(nseq, 1)[:, None, None], np.nan)
    if model_level:
        rates = rates[:, 0]
        stat_sum = stat_sum[:, 0]
    return rates, stat_sum, nseq


def curves_from_hits(
    tab: np.ndarray, counts: np.ndarray, keys: Sequence[tuple[int, int]], A: int, D: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean per-sequence hit rates at a grid of sizes, from per-class hit counts.

    ``tab[g]`` (``(Lo, sizes)``) sums the hits of the ``counts[g]`` sequences of class
    ``keys[g] = (domain, length)``; as in :func:`curves` (same arithmetic, same order, so a
    per-size LRU gives the stack engine's bits) each class adds ``tab[g] / (T_g * A)``.
    Returns ``(rates, hits, accesses, sequences)`` with a leading axis of ``D`` domains:
    rates and hits ``(D, Lo, sizes)``, accesses ``(D, Lo)``.
    """
    Lo, nS = tab.shape[1], tab.shape[2]
    num = np.zeros((D, Lo, nS), np.float64)
    hits = np.zeros((D, Lo, nS), np.int64)
    acc = np.zeros((D, Lo), np.int64)
    nseq = np.zeros(D, np.int64)
    order = sorted(range(len(keys)), key=lambda g: (keys[g][1], keys[g][0]))
    for g in order:
        d, T = keys[g]
        d = d if d is not None else 0
        if T == 0 or g >= tab.shape[0]:
            continue
        num[d] += tab[g] / (T * A)
        hits[d] += tab[g]
        acc[d] += int(counts[g]) * T * A
        nseq[d] += int(counts[g])
    with np.errstate(divide="ignore", invalid="ignore"):
        rates = np.where(nseq[:, None, None] > 0, num / np.maximum(nseq, 1)[:, None, None], np.nan)
    return rates, hits, acc, nseq


# the last few weight matrices (read-only): calls at several levels on one trace, with one
# seed, draw the same resamples; only matrices up to this many bytes are kept
_WEIGHTS_CACHE: dict[tuple, np.ndarray] = {}
_WEIGHTS_CACHE_BYTES = 32 << 20
_WEIGHTS_CACHE_SIZE = 2


def bootstrap_weights(S: int, B: int, seed: int, strata: np.ndarray | None = None) -> np.ndarray:
    """``(B, S)`` multiplicities of each sequence in each of B resamples (seeded).

    With ``strata`` (a label code per sequence, e.g. its domain), each resample draws, for
    every stratum in code order, as many sequences as the stratum holds from that stratum
    alone: every domain keeps its size in every resample, so a per-domain SRP is never
    taken over an empty resample. Without it, the S sequences are drawn from all of them.
    The result is read-only: small matrices are cached (a deterministic function of the
    arguments), so that :func:`lrc_kernels.srp` at several levels draws them once.
    """
    S, B, seed = int(S), int(B), int(seed)
    st = None if strata is None else np.asarray(strata, np.int64)
    key = (S, B, seed, None if st is None else st.tobytes())
    hit = _WEIGHTS_CACHE.get(key)
    if hit is not None:
        return hit
    W = _draw_weights(S, B, seed, st)
    W.flags.writeable = False
    if W.nbytes <= _WEIGHTS_CACHE_BYTES:
        while len(_WEIGHTS_CACHE) >= _WEIGHTS_CACHE_SIZE:
            _WEIGHTS_CACHE.pop(next(iter(_WEIGHTS_CACHE)))
        _WEIGHTS_CACHE[key] = W
    return W


def _draw_weights(S: int, B: int, seed: int, strata: np.ndarray | None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if strata is None:
        draws = rng.integers(0, S, size=(B, S)) if S else np.zeros((B, 0), np.int64)
    else:
        strata = np.asarray(strata, np.int64)
        draws = np.empty((B, S), np.int64)
        for d in np.unique(strata):
            members = np.flatnonzero(strata == d)
            draws[:, members] = members[rng.integers(0, members.size, size=(B, members.size))]
    return np.bincount((draws + (np.arange(B) * S)[:, None]).ravel(), minlength=B * S).reshape(B, S)


def _level_rows3(seq_tab: np.ndarray, level: str) -> tuple[np.ndarray, tuple[int, ...]]:
    """Per-sequence (S, L, E|1, W) tables as (S, rows, W), and the shape of the rows."""
    S = seq_tab.shape[0]
    if level == "model":
        return seq_tab.sum(axis=(1, 2))[:, None, :], ()
    if level == "layer":
        rows3 = seq_tab.sum(axis=2) if seq_tab.shape[2] > 1 else seq_tab[:, :, 0, :]
        return rows3, (seq_tab.shape[1],)
    return seq_tab.reshape(S, -1, seq_tab.shape[-1]), seq_tab.shape[1:3]


def bootstrap_ci(
    seq_tab: np.ndarray,
    c0: int,
    totals: np.ndarray,
    Wmat: np.ndarray,
    dom_all: np.ndarray,
    level: str,
    m: int,
    wl: np.ndarray,
    est: np.ndarray,
    confidence: float,
    by_domain: bool,
    red: Reductions | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Basic bootstrap interval of the SRP values ``est`` from per-sequence tables.

    Each resample's histograms are ``W @ H_s`` (resample multiplicities times per-sequence
    histograms): a product in float32 (exact below 2**24 per cell) or float64 (below
    2**53). Bins that are zero in every sequence are dropped first; they are zero in every
    resample and do not change any F1. ``totals`` is the (D, rows..., m+1) sum the estimate
    came from; ``c0`` the first column of m's block in ``seq_tab``.
    """
    red = red if red is not None else reductions()
    rows3, row_shape = _level_rows3(seq_tab, level)
    S, R = rows3.shape[0], rows3.shape[1]
    bound = int((Wmat @ wl).max()) if S else 0
    dtype = np.float32 if bound < _F32_EXACT else np.float64
    if bound >= _F64_EXACT:  # pragma: no cover - beyond 2**53 windows
        raise OverflowError("too many windows for an exact bootstrap product")
    # bins non-zero in some sequence = bins non-zero in the totals (counts are >= 0)
    keep = np.flatnonzero(totals.sum(axis=0).reshape(-1)).astype(np.int64)
    Hs = red.gather_bins(rows3, c0, m, keep, dtype)
    col_r = keep // (m + 1)
    col_c = keep % (m + 1)
    row_ptr = np.searchsorted(col_r, np.arange(R + 1)).astype(np.int64)
    q = [(1 - confidence) / 2, (1 + confidence) / 2]
    out_lo, out_hi = [], []
    for d in range(totals.shape[0]):
        Wd = Wmat if not by_domain else Wmat * (dom_all == d)[None, :]
        f1 = red.resample_best_f1(Wd, Hs, row_ptr, col_c, m)
        qlo, qhi = red.column_quantiles(f1, q)
        e = (est[d] if by_domain else est[0]).reshape(-1)
        out_lo.append((2 * e - qhi).reshape(row_shape))
        out_hi.append((2 * e - qlo).reshape(row_shape))
    if by_domain:
        if not out_lo:
            return np.zeros((0,) + row_shape), np.zeros((0,) + row_shape)
        return np.stack(out_lo), np.stack(out_hi)
    return out_lo[0], out_hi[0]


def load_balance_of(activation_ratio: np.ndarray) -> float:
    """Global load balance: sample std (ddof=1) of every expert's activation ratio
    (:func:`lrc_kernels.load_balance`); NaN for fewer than two experts or a NaN ratio."""
    a = np.asarray(activation_ratio, dtype=np.float64).ravel()
    if a.size < 2 or np.isnan(a).any():
        return float("nan")
    return float(np.std(a, ddof=1))


def specialization_of(activation_ratio: np.ndarray, min_ratio: float) -> tuple[float, np.ndarray]:
    """Domain specialisation from per-domain ratios (D, L, E)
    (:func:`lrc_kernels.domain_specialization`): the mean over experts of the coefficient of
    variation across the domains where the ratio exceeds ``min_ratio``, and the (L, E) CVs."""
    a = np.asarray(activation_ratio, dtype=np.float64)  # (D, L, E)
    keep = a > min_ratio
    n = keep.sum(axis=0)
    x = np.where(keep, a, 0.0)
    mean = x.sum(axis=0) / np.maximum(n, 1)
    var = (np.where(keep, a - mean, 0.0) ** 2).sum(axis=0) / np.maximum(n - 1, 1)
    cv = np.where(n >= 2, np.sqrt(var) / np.where(mean > 0, mean, 1), np.nan)
    finite = cv[np.isfinite(cv)]
    return (float(finite.mean()) if finite.size else float("nan")), cv
