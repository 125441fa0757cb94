"""Public metric functions: validation, backend dispatch, streaming and reductions.

Every backend computes the same integer tables (window-count histograms, stack-depth
counts). The reductions from tables to SRP values and hit curves live here, once, so that
every backend that produces the same integers gives bit-identical floating-point results.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from . import _validate as _v
from ._results import HitCurve, SRPResult
from ._trace import Trace, _is_device_array, as_trace

__all__ = [
    "srp",
    "srp_from_histogram",
    "sch",
    "hit_curve",
    "load_balance",
    "domain_specialization",
    "BACKENDS",
    "LEVELS_SRP",
    "LEVELS_CACHE",
    "POLICIES",
]

BACKENDS = ("auto", "cpu", "gpu", "reference")
LEVELS_SRP = ("model", "layer", "expert")
LEVELS_CACHE = ("layer", "model")
POLICIES = ("lru", "lfu", "belady", "sch")

# float32 holds every integer up to 2**24 exactly, float64 up to 2**53
_F32_EXACT = 1 << 24
_F64_EXACT = 1 << 53
# largest cache (ids in one stack) the engine accepts
_MAX_CACHE_IDS = 1 << 24
# refuse per-sequence bootstrap tables larger than this (bytes)
_BOOTSTRAP_TABLE_LIMIT = int(os.environ.get("LRC_BOOTSTRAP_TABLE_LIMIT", 4 << 30))


# ------------------------------------------------------------------ argument checks
# (lrc_kernels._validate owns them; these names are kept for the modules that use them)
_check_choice = _v.check_choice
_check_ms = _v.check_windows


def _check_int(value: Any, name: str, minimum: int) -> int:
    return _v.check_int(value, name, minimum)


# ---------------------------------------------------------------------- sources
def _is_path_source(obj: Any) -> bool:
    if isinstance(obj, (str, bytes)) or hasattr(obj, "__fspath__"):
        return True
    if (
        isinstance(obj, (list, tuple))
        and obj
        and all(isinstance(o, (str, bytes)) or hasattr(o, "__fspath__") for o in obj)
    ):
        return True
    return False


# Activations (tokens x layers x k) per batch when streaming trace files: bounds peak
# memory (a few batches of ids, and per-batch tables) whatever the file size.
STREAM_BATCH_ACTIVATIONS = 1 << 26
# Fixed tokens per batch instead (tests use it to force many small batches).
STREAM_BATCH_TOKENS: int | None = None


def _batches(
    trace: Any, num_experts: int | None, progress: Any = False
) -> tuple[Iterator[Trace], bool]:
    """Trace batches (whole sequences) from a Trace, an array, or trace files (streamed)."""
    if _is_path_source(trace):
        from . import io as _io

        tokens = STREAM_BATCH_TOKENS
        if tokens is None:
            reader = _io.TraceReader(trace)
            tokens = max(1, STREAM_BATCH_ACTIVATIONS // (reader.num_layers * reader.top_k))
        it: Iterable[Trace] = _io.iter_trace_batches(trace, max_tokens=tokens)
        if num_experts is not None:
            it = (as_trace(b, num_experts) for b in it)
        if progress:
            it = _progress(it, progress)
        return iter(it), True
    return iter([as_trace(trace, num_experts)]), False


def _progress(it: Iterable[Trace], progress: Any) -> Iterator[Trace]:
    if callable(progress):
        for b in it:
            progress(b)
            yield b
        return
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is optional
        yield from it
        return
    with tqdm(unit="tok", unit_scale=True, desc="streaming") as bar:
        for b in it:
            yield b
            bar.update(b.num_tokens)


def _backend(name: str, trace: Trace):
    _check_choice(name, "backend", BACKENDS)
    on_device = _is_device_array(trace.experts)
    if name == "auto":
        name = "gpu" if on_device else "cpu"
    if name == "gpu":
        from . import gpu

        gpu.require()  # says which fix is needed: installing CuPy, or a device / driver
        return gpu, trace.experts
    experts = trace.experts
    if on_device:  # explicit request for a host backend: one copy to the host
        experts = experts.get() if hasattr(experts, "get") else experts.cpu().numpy()
    if name == "reference":
        from . import reference

        return reference, experts
    from . import cpu

    return cpu, experts


class _Codes:
    """Stable integer codes for labels seen across batches (order of first appearance)."""

    def __init__(self) -> None:
        self.index: dict[Any, int] = {}

    def codes(self, labels: Iterable[Any]) -> np.ndarray:
        return np.asarray(
            [self.index.setdefault(v, len(self.index)) for v in labels], dtype=np.int64
        )

    @property
    def names(self) -> list[Any]:
        return list(self.index)


def _domain_labels(batch: Trace, by_domain: bool) -> list[Any]:
    if not by_domain:
        return [None] * batch.num_sequences
    if batch.domains is None:
        raise ValueError(
            "by_domain=True needs domain labels: build the Trace with domains=[...] (one "
            "label per sequence), or write them into the trace file"
        )
    return list(batch.domains)


def _check_shape(first: Trace | None, batch: Trace) -> Trace:
    if first is not None and (
        batch.num_experts != first.num_experts
        or batch.num_layers != first.num_layers
        or batch.top_k != first.top_k
    ):
        raise ValueError(
            "trace batches disagree on their shape: (E, L, k) = "
            f"({first.num_experts}, {first.num_layers}, {first.top_k}) then "
            f"({batch.num_experts}, {batch.num_layers}, {batch.top_k}); all files of one "
            "source must come from the same model"
        )
    return first if first is not None else batch


def _grow(acc: np.ndarray | None, rows: int, like: np.ndarray) -> np.ndarray:
    """Accumulator with at least ``rows`` rows (new rows zero)."""
    if acc is None:
        return np.zeros((rows,) + like.shape[1:], dtype=like.dtype)
    if acc.shape[0] >= rows:
        return acc
    extra = np.zeros((rows - acc.shape[0],) + acc.shape[1:], dtype=acc.dtype)
    return np.concatenate([acc, extra])


# --------------------------------------------------------------------------- SRP
def _windows_of(lengths: np.ndarray, m: int) -> np.ndarray:
    return np.maximum(lengths - m + 1, 0)


def _cols(ms: np.ndarray) -> np.ndarray:
    c = np.zeros(ms.shape[0], np.int64)
    if ms.shape[0] > 1:
        c[1:] = np.cumsum(ms[:-1] + 1)
    return c


def _best(H: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best F1 over thresholds along the last axis of ``H`` (c = 0..m)."""
    from .cpu._srp import best_f1_rows

    shape = H.shape[:-1]
    f1, thr, preds, acts = best_f1_rows(H.reshape(-1, m + 1), m)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(acts > 0, preds / np.where(acts > 0, acts, 1), np.nan)
    return f1.reshape(shape), thr.reshape(shape), ratio.reshape(shape)


def srp_from_histogram(histogram: Any, m: int) -> tuple[Any, Any, Any]:
    """SRP, best threshold and ``preds/acts`` of window-count histograms you pooled yourself.

    Parameters
    ----------
    histogram : array_like of int, shape (..., m + 1)
        ``H[..., c]``: windows in which an expert is used by ``c`` tokens, summed over
        whatever should share one threshold (e.g. ``SRPResult.histogram`` of a layer-level
        result summed over layers gives the model level).
    m : int
        The segment length the histogram was counted with.

    Returns
    -------
    (value, threshold, ratio)
        Arrays of the leading shape, bit-identical to what :func:`srp` reports for the
        same histogram.
    """
    m = _check_int(m, "m", 1)
    H = np.asarray(histogram)
    if H.dtype == np.bool_ or not np.issubdtype(H.dtype, np.integer):
        raise TypeError(f"histogram must hold integer counts, got dtype {H.dtype}")
    if H.ndim < 1 or H.shape[-1] != m + 1:
        raise ValueError(f"histogram's last axis must have m + 1 = {m + 1} bins, got {H.shape}")
    if H.size and H.min() < 0:
        raise ValueError("histogram counts must be >= 0")
    if H.size and H.max() > _v.MAX_INT:
        raise ValueError(f"histogram counts must be <= {_v.MAX_INT}, got {int(H.max())}")
    f1, thr, ratio = _best(np.ascontiguousarray(H, dtype=np.int64), m)
    return _scalarize(f1), _scalarize(thr), _scalarize(ratio)


def _level_rows(table: np.ndarray, level: str) -> np.ndarray:
    """(G, L, E|1, W) table summed to the rows of ``level``: (G, W), (G, L, W), (G, L, E, W)."""
    if level == "model":
        return table.sum(axis=(1, 2))
    if level == "layer":
        return table.sum(axis=2)
    return table


def _scalarize(a: np.ndarray) -> Any:
    return a[()] if a.ndim == 0 else a


def srp(
    trace: Any,
    m: Any,
    *,
    level: str = "model",
    num_experts: int | None = None,
    by_domain: bool = False,
    bootstrap: int = 0,
    confidence: float = 0.95,
    seed: int = 0,
    backend: str = "auto",
    progress: Any = False,
) -> SRPResult:
    """Segment routing best performance (SRP) for one or several segment lengths.

    Parameters
    ----------
    trace : Trace, array_like, path or list of paths
        A :class:`Trace`; an integer array ``(S, T, L, k)``, ``(T, L, k)`` or ``(T, k)``
        (the last needs ``num_experts``); or trace files, which are streamed with bounded
        memory.
    m : int or sequence of int
        Segment (window) length(s), any integer >= 1. A sequence adds a leading axis.
    level : {"model", "layer", "expert"}
        Where histograms are pooled before the best threshold is chosen: the whole model
        (one threshold), each layer, or each (layer, expert).
    num_experts : int, optional
        Experts per layer: required for plain arrays (never guessed from the ids);
        files and :class:`Trace` objects carry it (see :func:`lrc_kernels.as_trace`).
    by_domain : bool
        One result per domain label (adds a domain axis after the m axis).
    bootstrap : int
        Number of bootstrap resamples of the sequences for a confidence interval (the paper
        uses 1000); 0 for none. One resample serves every layer, expert, domain and m.
    confidence : float
        Confidence level of the basic bootstrap interval, in (0, 1).
    seed : int
        Seed of the resampling; a call is reproducible.
    backend : {"auto", "cpu", "gpu", "reference"}
        ``"auto"`` runs on the GPU for GPU-resident input, else on the CPU.
    progress : bool or callable
        Progress bar (tqdm) while streaming files. A callable is called with each batch (a
        :class:`Trace`) just before that batch is processed.

    Returns
    -------
    SRPResult

    Notes
    -----
    Definition: ``docs/metrics.md``, section "SRP". Windows slide one token at a time; a
    sequence shorter than m has no window. With no window at all, SRP is 0 (the F1 of an
    empty denominator) and the ratio is NaN.
    """
    ms, single_m = _check_ms(m)
    _check_choice(level, "level", LEVELS_SRP)
    B = _check_int(bootstrap, "bootstrap", 0)
    if isinstance(confidence, (bool, np.bool_)) or not isinstance(
        confidence, (float, int, np.floating, np.integer)
    ):
        raise TypeError(f"confidence must be a number in (0, 1), got {_v.plain(confidence)}")
    if not 0 < confidence < 1:
        raise ValueError(
            f"confidence must lie strictly between 0 and 1, got {_v.plain(confidence)}"
        )
    by_domain = _v.check_bool(by_domain, "by_domain")
    seed = _check_int(seed, "seed", 0)
    _check_choice(backend, "backend", BACKENDS)

    per_seq = B > 0
    # bootstrapping a model/layer level value needs no per-expert detail
    per_expert = level == "expert" or not per_seq
    cols = _cols(ms)
    width = int((ms + 1).sum())
    dom = _Codes()
    first: Trace | None = None
    table = None  # (G, L, E|1, W) summed per domain
    seq_tables: list[np.ndarray] = []  # per-sequence (L, E|1, W) tables for the bootstrap
    seq_dom: list[np.ndarray] = []
    lengths_all: list[np.ndarray] = []
    streamed_act = None
    batches, streamed = _batches(trace, num_experts, progress)
    for batch in batches:
        first = _check_shape(first, batch)
        _srp_memory(batch, per_expert, width)
        bk, experts = _backend(backend, batch)
        codes = dom.codes(_domain_labels(batch, by_domain))
        G = len(dom.index)
        lengths_all.append(batch.lengths)
        seq_dom.append(codes)
        if per_seq:
            S_b = batch.num_sequences
            rows_bytes = S_b * batch.num_layers * (batch.num_experts if per_expert else 1) * width
            if rows_bytes * 8 > _BOOTSTRAP_TABLE_LIMIT:
                raise MemoryError(
                    f"bootstrapping at level={level!r} needs per-sequence histograms of "
                    f"{rows_bytes * 8 / 2**30:.1f} GiB for this batch; use level='layer' or "
                    "'model' for confidence intervals, fewer m values, or raise "
                    "LRC_BOOTSTRAP_TABLE_LIMIT (bytes)"
                )
            # one row per sequence; the CPU kernels can write them as int32
            kw = {"per_sequence_int32": True} if bk.__name__ == "lrc_kernels.cpu" else {}
            t = bk.window_hist_table(
                experts,
                batch.offsets,
                batch.num_experts,
                ms,
                np.arange(S_b, dtype=np.int64),
                S_b,
                per_expert,
                **kw,
            )
            seq_tables.append(t)
            gsum = np.zeros((G,) + t.shape[1:], np.int64)
            if S_b and (codes == codes[0]).all():
                gsum[codes[0]] = t.sum(axis=0)
            else:
                for g in np.unique(codes):
                    gsum[g] = t[codes == g].sum(axis=0)
            table = _grow(table, G, gsum)
            table[: gsum.shape[0]] += gsum
            if not per_expert and streamed:
                a = bk.window_hist_table(
                    experts, batch.offsets, batch.num_experts, ms, codes, G, True
                )
                streamed_act = _grow(streamed_act, G, a)
                streamed_act[: a.shape[0]] += a
        else:
            t = bk.window_hist_table(experts, batch.offsets, batch.num_experts, ms, codes, G, True)
            table = _grow(table, G, t)
            table[: t.shape[0]] += t
    if first is None:
        raise ValueError("the trace source holds no sequences")
    if table is None or table.shape[0] == 0:
        # a source with no sequences at all: no domain, or one empty group
        Eo = first.num_experts if per_expert else 1
        table = np.zeros((0 if by_domain else 1, first.num_layers, Eo, width), np.int64)
    lengths = np.concatenate(lengths_all)
    names = dom.names if by_domain else None
    D = table.shape[0]
    dom_all = np.concatenate(seq_dom) if seq_dom else np.zeros(0, np.int64)

    values, thresholds, ratios, windows, hists, act = [], [], [], [], [], []
    ci_lo, ci_hi = [], []
    if per_seq:
        S = lengths.shape[0]
        _v.check_memory(
            2 * B * S * 8,
            f"the bootstrap resample weights ({B} resamples x {S} sequences, int64, twice)",
            "lower bootstrap",
        )
        rng = np.random.default_rng(seed)
        draws = rng.integers(0, S, size=(B, S)) if S else np.zeros((B, 0), np.int64)
        Wmat = np.bincount((draws + (np.arange(B) * S)[:, None]).ravel(), minlength=B * S).reshape(
            B, S
        )
        seq_all = seq_tables[0] if len(seq_tables) == 1 else np.concatenate(seq_tables)
    for mi, mm in enumerate(ms):
        mm = int(mm)
        sl = slice(int(cols[mi]), int(cols[mi]) + mm + 1)
        rows = _level_rows(table[..., sl], level)  # (D, ...rows..., m+1)
        f1, thr, ratio = _best(rows, mm)
        win = np.zeros(D, np.int64)
        wl = _windows_of(lengths, mm)
        if by_domain:
            np.add.at(win, dom_all, wl)
        else:
            win[0] = wl.sum()
        hists.append(rows if by_domain else rows[0])
        values.append(f1 if by_domain else f1[0])
        thresholds.append(thr if by_domain else thr[0])
        ratios.append(ratio if by_domain else ratio[0])
        windows.append(win if by_domain else win[0])
        if per_expert:
            act.append(_act_ratio(table[..., sl], mm, win, by_domain))
        if per_seq:
            lo, hi = _bootstrap_ci(
                seq_all,
                int(cols[mi]),
                rows,
                Wmat,
                dom_all,
                D,
                level,
                mm,
                wl,
                f1,
                confidence,
                by_domain,
            )
            ci_lo.append(lo)
            ci_hi.append(hi)

    def pack(parts: list[np.ndarray]) -> Any:
        return _scalarize(parts[0]) if single_m else np.stack(parts)

    res = SRPResult(
        value=pack(values),
        threshold=pack(thresholds),
        ratio=pack(ratios),
        m=int(ms[0]) if single_m else [int(v) for v in ms],
        level=level,
        domains=names,
        bootstrap=B,
        confidence=float(confidence),
        windows=pack(windows),
        histogram=hists[0] if single_m else hists,
        ci=(pack(ci_lo), pack(ci_hi)) if per_seq else None,
    )
    if per_expert:
        res._activation_ratio = pack(act)
    elif streamed:
        res._activation_ratio = pack(
            [
                _act_ratio(streamed_act[..., int(c) : int(c) + int(mm) + 1], int(mm), w, by_domain)
                for c, mm, w in zip(cols, ms, [np.atleast_1d(w) for w in windows], strict=True)
            ]
        )
    else:
        src = first

        def _lazy() -> Any:
            return srp(
                src,
                ms[0] if single_m else list(ms),
                level="expert",
                by_domain=by_domain,
                backend=backend,
            ).activation_ratio

        res._activation_fn = _lazy
    return res


def _srp_memory(batch: Trace, per_expert: bool, width: int) -> None:
    """Refuse, before allocating, SRP histograms that cannot fit in memory."""
    Eo = batch.num_experts if per_expert else 1
    # one (L, E, sum(m + 1)) int64 table, and two int64 counters per expert and thread
    need = (batch.num_layers * Eo * width + 2 * batch.num_experts * (os.cpu_count() or 1)) * 8
    _v.check_memory(
        need,
        f"SRP's window-count histograms ({batch.num_layers} layers x {Eo} experts x {width} "
        "count bins, int64)",
        "lower m (each m adds m + 1 bins) or check num_experts",
    )


def _act_ratio(tab: np.ndarray, m: int, win: np.ndarray, by_domain: bool) -> np.ndarray:
    """Per-expert ``acts / (m * windows)`` from a (D, L, E, m+1) table."""
    c = np.arange(m + 1, dtype=np.float64)
    acts = tab @ c  # exact: integer sums below 2**53
    win = np.atleast_1d(win).astype(np.float64)
    den = (m * win)[:, None, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(den > 0, acts / np.where(den > 0, den, 1), np.nan)
    return r if by_domain else r[0]


def _bootstrap_ci(seq_tab, c0, totals, Wmat, dom_all, D, level, m, wl, est, confidence, by_domain):
    """Basic bootstrap interval of the SRP values from per-sequence tables.

    Each resample's histograms are ``W @ H_s`` (resample multiplicities times per-sequence
    histograms): a BLAS product in float32 (exact below 2**24 per cell) or float64
    (below 2**53), see ``lrc_kernels.cpu._srp.resample_product``. Bins that are zero in
    every sequence are dropped first; they are zero in every resample and do not change any
    F1 (see ``lrc_kernels.cpu._srp.best_f1_sparse``).
    """
    from .cpu._srp import best_f1_sparse, column_quantiles, gather_bins, resample_product

    S = seq_tab.shape[0]
    if level == "model":
        rows3 = seq_tab.sum(axis=(1, 2))[:, None, :]
        row_shape: tuple[int, ...] = ()
    elif level == "layer":
        rows3 = seq_tab.sum(axis=2) if seq_tab.shape[2] > 1 else seq_tab[:, :, 0, :]
        row_shape = (seq_tab.shape[1],)
    else:
        rows3 = seq_tab.reshape(S, -1, seq_tab.shape[-1])
        row_shape = seq_tab.shape[1:3]
    R = rows3.shape[1]
    bound = int((Wmat @ wl).max()) if S else 0
    dtype = np.float32 if bound < _F32_EXACT else np.float64
    if bound >= _F64_EXACT:  # pragma: no cover - beyond 2**53 windows
        raise OverflowError("too many windows for an exact bootstrap product")
    # bins non-zero in some sequence = bins non-zero in the totals (counts are >= 0)
    keep = np.flatnonzero(totals.sum(axis=0).reshape(-1)).astype(np.int64)
    Hs = gather_bins(rows3, c0, m, keep, dtype)
    col_r = keep // (m + 1)
    col_c = keep % (m + 1)
    row_ptr = np.searchsorted(col_r, np.arange(R + 1)).astype(np.int64)
    q = [(1 - confidence) / 2, (1 + confidence) / 2]
    out_lo = []
    out_hi = []
    for d in range(D):
        Wd = Wmat if not by_domain else Wmat * (dom_all == d)[None, :]
        f1 = best_f1_sparse(resample_product(Wd, Hs), row_ptr, col_c, m)
        qlo, qhi = column_quantiles(f1, q)
        e = (est[d] if by_domain else est[0]).reshape(-1)
        out_lo.append((2 * e - qhi).reshape(row_shape))
        out_hi.append((2 * e - qlo).reshape(row_shape))
    if by_domain:
        if not out_lo:
            return np.zeros((0,) + row_shape), np.zeros((0,) + row_shape)
        return np.stack(out_lo), np.stack(out_hi)
    return out_lo[0], out_hi[0]


# ------------------------------------------------------------------- hit curves
def hit_curve(
    trace: Any,
    policy: str,
    *,
    m: Any = None,
    level: str = "layer",
    warm_start: bool = True,
    num_experts: int | None = None,
    by_domain: bool = False,
    backend: str = "auto",
    progress: Any = False,
) -> HitCurve:
    """Hit rate of an expert cache at every cache size, for one replacement policy.

    Parameters
    ----------
    trace : Trace, array_like, path or list of paths
        As for :func:`srp`.
    policy : {"lru", "lfu", "belady", "sch"}
        Replacement policy; ``"sch"`` is the segment-oracle cache that knows the next
        ``m`` tokens (needs ``m``), ``"belady"`` the optimal offline policy (MIN).
    m : int or sequence of int, optional
        Future window of SCH (a sequence adds a leading axis). Only for ``"sch"``.
    level : {"layer", "model"}
        ``"layer"``: one cache per MoE layer (curves over C = 1..E, shape ``(L, E)``);
        ``"model"``: one cache shared by all layers (C = 1..L*E, shape ``(L*E,)``).
    warm_start : bool
        True (the paper's choice): while the cache has free room, a first access costs
        nothing. False: every first access is a miss (cold start).
    num_experts, by_domain, backend, progress
        As for :func:`srp`.

    Returns
    -------
    HitCurve

    Notes
    -----
    Definition: ``docs/metrics.md``, "The priority stack". Per-sequence curves are averaged
    with equal weight; empty sequences have no curve and are skipped (all-empty: NaN).
    """
    _check_choice(policy, "policy", POLICIES)
    if policy == "sch":
        if m is None:
            raise ValueError("policy='sch' needs the future window m (e.g. m=16)")
        ms, single_m = _check_ms(m)
    else:
        if m is not None:
            raise ValueError(f"m applies only to policy='sch', not {policy!r}; drop m=")
        ms, single_m = np.zeros(1, np.int64), True
    _check_choice(level, "level", LEVELS_CACHE)
    _v.check_bool(warm_start, "warm_start")
    by_domain = _v.check_bool(by_domain, "by_domain")
    _check_choice(backend, "backend", BACKENDS)
    model_level = level == "model"

    dom = _Codes()
    lens = _Codes()  # sequences are averaged per (domain, length) class: exact integer sums
    first: Trace | None = None
    tables: list[np.ndarray | None] = [None] * ms.shape[0]
    batches, _ = _batches(trace, num_experts, progress)
    for batch in batches:
        first = _check_shape(first, batch)
        n_cache = batch.num_experts * (batch.num_layers if model_level else 1)
        if n_cache > _MAX_CACHE_IDS:
            raise ValueError(
                f"a {level}-level cache over {n_cache:,} experts is beyond the stack engine's "
                f"limit of {_MAX_CACHE_IDS:,} ids (its state is O(ids) per thread); is "
                "num_experts right?"
            )
        Lo = 1 if model_level else batch.num_layers
        _v.check_memory(
            (Lo * (n_cache + 1) + 5 * n_cache * (os.cpu_count() or 1)) * 8,
            f"the {level}-level stack-depth tables ({Lo} x {n_cache + 1} int64, and five "
            "int64 per cache id and thread)",
            "use level='layer' or check num_experts",
        )
        bk, experts = _backend(backend, batch)
        dcode = dom.codes(_domain_labels(batch, by_domain))
        keys = list(zip(dcode.tolist(), batch.lengths.tolist(), strict=True))
        group = lens.codes(keys)
        G = len(lens.index)
        for mi, mm in enumerate(ms):
            t = bk.stack_stats_table(
                experts,
                batch.offsets,
                batch.num_experts,
                policy,
                int(mm) if policy == "sch" else None,
                model_level,
                bool(warm_start),
                group,
                G,
            )
            acc = _grow(tables[mi], G, t)
            acc[: t.shape[0]] += t
            tables[mi] = acc
    if first is None:
        raise ValueError("the trace source holds no sequences")
    L, E, k = first.num_layers, first.num_experts, first.top_k
    A = k * (L if model_level else 1)
    n_ids = L * E if model_level else E
    keys = lens.names
    D = len(dom.index) if by_domain else 1
    rates_all, stats_all, nseq = [], [], None
    for mi in range(ms.shape[0]):
        tab = tables[mi]
        if tab is None or tab.shape[0] == 0:
            tab = np.zeros((0, 1 if model_level else L, n_ids + 1), np.int64)
        rates, stat_sum, nseq = _curves(tab, keys, A, D, model_level, L, n_ids)
        rates_all.append(rates if by_domain else rates[0])
        stats_all.append(stat_sum if by_domain else stat_sum[0])
    return HitCurve(
        rates=rates_all[0] if single_m else np.stack(rates_all),
        policy=policy,
        m=(int(ms[0]) if single_m else [int(v) for v in ms]) if policy == "sch" else None,
        level=level,
        warm_start=bool(warm_start),
        num_experts=E,
        top_k=k,
        num_layers=L,
        domains=dom.names if by_domain else None,
        sequences=nseq if by_domain else nseq[0],
        stat=stats_all[0] if single_m else np.stack(stats_all),
    )


def _curves(tab, keys, A, D, model_level, L, n_ids):
    """Mean per-sequence curves from per-(domain, length) class tables.

    ``tab[g]`` sums the depth counts of the sequences of class g, which all have the same
    length T_g, so their curves sum to ``cumsum(tab[g]) / (T_g * A)`` with exact integers
    up to one division. Classes are added in order of length for a fixed summation order.
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


def sch(
    trace: Any,
    m: Any,
    *,
    level: str = "layer",
    warm_start: bool = True,
    num_experts: int | None = None,
    by_domain: bool = False,
    backend: str = "auto",
    progress: Any = False,
) -> HitCurve:
    """Segment cache best hit rate (SCH): hit curve of the m-token future oracle cache.

    Equivalent to ``hit_curve(trace, "sch", m=m, ...)``; see :func:`hit_curve` for the
    parameters. ``curve.at(2)`` is SCH at the paper's recommended cache ratio rho = 2.

    Notes
    -----
    Definition: ``docs/metrics.md``, "The priority stack" (SCH priority).
    """
    return hit_curve(
        trace,
        "sch",
        m=m,
        level=level,
        warm_start=warm_start,
        num_experts=num_experts,
        by_domain=by_domain,
        backend=backend,
        progress=progress,
    )


# ---------------------------------------------------------------- paper measures
def load_balance(
    trace: Any, m: int = 16, *, num_experts: int | None = None, backend: str = "auto"
) -> float:
    """Global load balance (LB): sample std (ddof=1) of every expert's activation ratio.

    Over all experts of all MoE layers, at segment length ``m`` (the paper: 16), over all
    domains. The paper prints this value x100.
    """
    m = _v.check_int(m, "m", 1, _v.MAX_WINDOW)
    r = srp(trace, m, level="expert", num_experts=num_experts, backend=backend)
    a = np.asarray(r.activation_ratio, dtype=np.float64).ravel()
    if a.size < 2 or np.isnan(a).any():
        return float("nan")
    return float(np.std(a, ddof=1))


def domain_specialization(
    trace: Any,
    m: int = 16,
    *,
    num_experts: int | None = None,
    backend: str = "auto",
    min_ratio: float = 1e-5,
) -> tuple[float, np.ndarray]:
    """Domain specialisation: per expert, the coefficient of variation (std/mean, ddof=1)
    of its activation ratio across domains; the model figure is the mean over experts.

    (expert, domain) pairs with activation ratio <= ``min_ratio`` are dropped; experts left
    with fewer than two domains get NaN and are left out of the mean.

    Returns
    -------
    (float, ndarray of shape (L, E))
    """
    m = _v.check_int(m, "m", 1, _v.MAX_WINDOW)
    r = srp(trace, m, level="expert", by_domain=True, num_experts=num_experts, backend=backend)
    a = np.asarray(r.activation_ratio, dtype=np.float64)  # (D, L, E)
    keep = a > min_ratio
    n = keep.sum(axis=0)
    x = np.where(keep, a, 0.0)
    mean = x.sum(axis=0) / np.maximum(n, 1)
    var = (np.where(keep, a - mean, 0.0) ** 2).sum(axis=0) / np.maximum(n - 1, 1)
    cv = np.where(n >= 2, np.sqrt(var) / np.where(mean > 0, mean, 1), np.nan)
    finite = cv[np.isfinite(cv)]
    return (float(finite.mean()) if finite.size else float("nan")), cv
