"""SRP front end: :func:`srp`, :func:`srp_from_histogram` and the paper's SRP-based measures.

The pass over the source is :class:`lrc_kernels._stream.Stream`; the tables come from the
backend; the numbers from :mod:`lrc_kernels._reduce`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import _reduce
from . import _validate as _v
from ._backends import reductions
from ._results import SRPResult
from ._spec import BACKENDS, LEVELS_SRP, m_columns
from ._stream import GroupSum, Step, Stream

__all__ = ["srp", "srp_from_histogram", "load_balance", "domain_specialization"]

# refuse per-sequence bootstrap tables larger than this (bytes)
_BOOTSTRAP_TABLE_LIMIT = int(os.environ.get("LRC_BOOTSTRAP_TABLE_LIMIT", 4 << 30))


def _scalarize(a: np.ndarray) -> Any:
    return a[()] if a.ndim == 0 else a


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
    m = _v.check_int(m, "m", 1)
    H = np.asarray(histogram)
    if H.dtype == np.bool_ or not np.issubdtype(H.dtype, np.integer):
        raise TypeError(f"histogram must hold integer counts, got dtype {H.dtype}")
    if H.ndim < 1 or H.shape[-1] != m + 1:
        raise ValueError(f"histogram's last axis must have m + 1 = {m + 1} bins, got {H.shape}")
    if H.size and H.min() < 0:
        raise ValueError("histogram counts must be >= 0")
    if H.size and H.max() > _v.MAX_INT:
        raise ValueError(f"histogram counts must be <= {_v.MAX_INT}, got {int(H.max())}")
    f1, thr, ratio = _reduce.best(np.ascontiguousarray(H, dtype=np.int64), m)
    return _scalarize(f1), _scalarize(thr), _scalarize(ratio)


@dataclass
class _Request:
    """The checked arguments of one :func:`srp` call."""

    ms: np.ndarray
    single_m: bool
    level: str
    bootstrap: int
    confidence: float
    by_domain: bool
    seed: int
    backend: str
    cols: np.ndarray = field(init=False)
    width: int = field(init=False)

    def __post_init__(self) -> None:
        cols, self.width = m_columns(self.ms)
        self.cols = np.asarray(cols, np.int64)

    @property
    def per_seq(self) -> bool:
        return self.bootstrap > 0

    @property
    def per_expert(self) -> bool:
        # bootstrapping a model/layer level value needs no per-expert detail
        return self.level == "expert" or not self.per_seq


def _check_args(m, level, bootstrap, confidence, by_domain, seed, backend) -> _Request:
    ms, single_m = _v.check_windows(m)
    _v.check_choice(level, "level", LEVELS_SRP)
    B = _v.check_int(bootstrap, "bootstrap", 0)
    if isinstance(confidence, (bool, np.bool_)) or not isinstance(
        confidence, (float, int, np.floating, np.integer)
    ):
        raise TypeError(f"confidence must be a number in (0, 1), got {_v.plain(confidence)}")
    if not 0 < confidence < 1:
        raise ValueError(
            f"confidence must lie strictly between 0 and 1, got {_v.plain(confidence)}"
        )
    by_domain = _v.check_bool(by_domain, "by_domain")
    seed = _v.check_int(seed, "seed", 0)
    _v.check_choice(backend, "backend", BACKENDS)
    return _Request(ms, single_m, level, B, confidence, by_domain, seed, backend)


def _srp_memory(batch: Any, per_expert: bool, width: int) -> None:
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


@dataclass
class _Tables:
    """What one pass over the source accumulates for SRP."""

    table: GroupSum = field(default_factory=GroupSum)  # (G, L, E|1, W) summed per domain
    act: GroupSum = field(default_factory=GroupSum)  # per-expert table when streamed
    seq_tables: list[np.ndarray] = field(default_factory=list)  # per sequence (bootstrap)
    seq_dom: list[np.ndarray] = field(default_factory=list)
    lengths: list[np.ndarray] = field(default_factory=list)


def _table(step: Step, req: _Request, group: np.ndarray, n: int, per_expert: bool, **kw):
    b = step.batch
    return step.backend.window_hist_table(
        step.ids, b.offsets, b.num_experts, req.ms, group, n, per_expert, **kw
    )


def _add_per_sequence(step: Step, req: _Request, acc: _Tables, G: int, streamed: bool) -> None:
    """One batch of the bootstrap path: a table per sequence, and its per-domain sums."""
    batch, codes = step.batch, step.domains
    S_b = batch.num_sequences
    rows_bytes = S_b * batch.num_layers * (batch.num_experts if req.per_expert else 1) * req.width
    if rows_bytes * 8 > _BOOTSTRAP_TABLE_LIMIT:
        raise MemoryError(
            f"bootstrapping at level={req.level!r} needs per-sequence histograms of "
            f"{rows_bytes * 8 / 2**30:.1f} GiB for this batch; use level='layer' or "
            "'model' for confidence intervals, fewer m values, or raise "
            "LRC_BOOTSTRAP_TABLE_LIMIT (bytes)"
        )
    t = _table(step, req, np.arange(S_b, dtype=np.int64), S_b, req.per_expert, per_sequence=True)
    # model level resamples whole-model histograms only: keep (S_b, 1, 1, W) per batch, not
    # (S_b, L, 1, W), so a long streamed trace holds 1/L of the per-sequence rows
    acc.seq_tables.append(t.sum(axis=(1, 2), keepdims=True) if req.level == "model" else t)
    gsum = np.zeros((G,) + t.shape[1:], np.int64)
    if S_b and (codes == codes[0]).all():
        gsum[codes[0]] = step.backend.sum_sequences(t)
    else:
        for g in np.unique(codes):
            gsum[g] = step.backend.sum_sequences(t[codes == g])
    acc.table.add(gsum)
    if not req.per_expert and streamed:
        # activation ratios need per-expert activation sums only, not histograms
        acc.act.add(
            step.backend.window_acts_table(
                step.ids, batch.offsets, batch.num_experts, req.ms, codes, G
            )
        )


def _accumulate(stream: Stream, req: _Request, act: bool = False) -> _Tables:
    """The tables of one pass; ``act`` keeps the per-expert table of a bootstrap run at a
    coarser level even when the source is in memory (partials always keep it)."""
    acc = _Tables()
    for step in stream:
        _srp_memory(step.batch, req.per_expert, req.width)
        G = len(stream.domains.index)
        acc.lengths.append(step.batch.lengths)
        acc.seq_dom.append(step.domains)
        if req.per_seq:
            _add_per_sequence(step, req, acc, G, stream.streamed or act)
        else:
            acc.table.add(_table(step, req, step.domains, G, True))
    return acc


@dataclass
class _PerM:
    """Per-m result parts, in order of m."""

    values: list[Any] = field(default_factory=list)
    thresholds: list[Any] = field(default_factory=list)
    ratios: list[Any] = field(default_factory=list)
    windows: list[Any] = field(default_factory=list)
    hists: list[Any] = field(default_factory=list)
    act: list[Any] = field(default_factory=list)
    ci_lo: list[Any] = field(default_factory=list)
    ci_hi: list[Any] = field(default_factory=list)


def _empty_table(first: Any, req: _Request) -> np.ndarray:
    # a source with no sequences at all: no domain, or one empty group
    Eo = first.num_experts if req.per_expert else 1
    return np.zeros((0 if req.by_domain else 1, first.num_layers, Eo, req.width), np.int64)


def _concat_batches(parts: list[np.ndarray]) -> np.ndarray:
    """The per-batch tables as one array, each batch released once copied (the peak is
    the whole table plus one batch, not twice the table)."""
    if len(parts) == 1:
        return parts.pop()
    dtype = np.result_type(*parts)
    out = np.empty((sum(p.shape[0] for p in parts),) + parts[0].shape[1:], dtype)
    at = 0
    while parts:
        p = parts.pop(0)
        out[at : at + p.shape[0]] = p
        at += p.shape[0]
    return out


def _reduce_all(table: np.ndarray, acc: _Tables, req: _Request, red: Any) -> _PerM:
    """Values, thresholds, ratios, windows (and intervals) of every m from the tables."""
    lengths = np.concatenate(acc.lengths)
    D = table.shape[0]
    dom_all = np.concatenate(acc.seq_dom) if acc.seq_dom else np.zeros(0, np.int64)
    out = _PerM()
    if req.per_seq:
        S = lengths.shape[0]
        _v.check_memory(
            2 * req.bootstrap * S * 8,
            f"the bootstrap resample weights ({req.bootstrap} resamples x {S} sequences, "
            "int64, twice)",
            "lower bootstrap",
        )
        strata = dom_all if req.by_domain else None  # per-domain intervals: within domains
        Wmat = _reduce.bootstrap_weights(S, req.bootstrap, req.seed, strata)
        seq_all = _concat_batches(acc.seq_tables)
    one = (lambda a: a) if req.by_domain else (lambda a: a[0])
    for c0, mm in zip(req.cols.tolist(), req.ms.tolist(), strict=True):
        rows = _reduce.level_rows(table[..., c0 : c0 + mm + 1], req.level)  # (D, ..., m+1)
        f1, thr, ratio = _reduce.best(rows, mm, red)
        wl = _reduce.windows_of(lengths, mm)
        win = np.zeros(D, np.int64)
        if req.by_domain:
            np.add.at(win, dom_all, wl)
        else:
            win[0] = wl.sum()
        for part, a in zip(
            (out.hists, out.values, out.thresholds, out.ratios, out.windows),
            (rows, f1, thr, ratio, win),
            strict=True,
        ):
            part.append(one(a))
        if req.per_expert:
            out.act.append(
                _reduce.activation_ratio(table[..., c0 : c0 + mm + 1], mm, win, req.by_domain)
            )
        if req.per_seq:
            lo, hi = _reduce.bootstrap_ci(
                seq_all,
                c0,
                rows,
                Wmat,
                dom_all,
                req.level,
                mm,
                wl,
                f1,
                req.confidence,
                req.by_domain,
                red,
            )
            out.ci_lo.append(lo)
            out.ci_hi.append(hi)
    return out


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
    client: Any = None,
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
        Positional or keyword, as in :func:`sch` and :func:`hit_curve`.
    level : {"model", "layer", "expert"}
        Where histograms are pooled before the best threshold is chosen: the whole model
        (one threshold, the default: the paper's SRP), each layer, or each (layer,
        expert). Keyword-only, as in :func:`sch` and :func:`hit_curve`.
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
        ``"reference"`` needs neither Numba nor CuPy.
    progress : bool or callable
        Progress bar (tqdm) while streaming files. A callable is called with each batch (a
        :class:`Trace`) just before that batch is processed. With ``client``: a bar over
        the shards as they complete, or a callable called with each shard's partial.
    client : distributed.Client, optional
        Compute on a Dask cluster: each file of ``trace`` (trace files only) is a task, and
        the partial results are merged exactly (bit-identical to one process; see
        :mod:`lrc_kernels.partial` and ``docs/studies.md``).

    Returns
    -------
    SRPResult

    Notes
    -----
    Definition: ``docs/metrics.md``, section "SRP". Windows slide one token at a time; a
    sequence shorter than m has no window. With no window at all, SRP is 0 (the F1 of an
    empty denominator) and the ratio is NaN.
    """
    req = _check_args(m, level, bootstrap, confidence, by_domain, seed, backend)
    if client is not None:
        from .cluster import run

        kw = dict(level=level, num_experts=num_experts, by_domain=by_domain)
        kw.update(bootstrap=bootstrap, confidence=confidence, seed=seed, backend=backend)
        return run(client, "srp", trace, dict(kw, m=m), progress)
    stream = Stream(trace, num_experts, req.by_domain, backend, progress)
    acc = _accumulate(stream, req)
    first = stream.first
    table = acc.table.table
    if table is None or table.shape[0] == 0:
        table = _empty_table(first, req)
    out = _reduce_all(table, acc, req, reductions(req.backend))
    return _result(req, out, acc, stream, trace)


def _result(req: _Request, out: _PerM, acc: _Tables, stream: Stream, trace: Any) -> SRPResult:
    def pack(parts: list[np.ndarray]) -> Any:
        return _scalarize(parts[0]) if req.single_m else np.stack(parts)

    ms = [int(v) for v in req.ms]
    res = SRPResult(
        value=pack(out.values),
        threshold=pack(out.thresholds),
        ratio=pack(out.ratios),
        m=ms[0] if req.single_m else ms,
        level=req.level,
        domains=stream.domain_names,
        bootstrap=req.bootstrap,
        confidence=float(req.confidence),
        windows=pack(out.windows),
        histogram=out.hists[0] if req.single_m else out.hists,
        ci=(pack(out.ci_lo), pack(out.ci_hi)) if req.per_seq else None,
    )
    if req.per_expert:
        res._activation_ratio = pack(out.act)
    elif stream.streamed:
        act = acc.act.table  # (G, L, E, len(ms)) activation sums
        res._activation_ratio = pack(
            [
                _reduce.activation_ratio_from_acts(act[..., i], mm, w, req.by_domain)
                for i, (mm, w) in enumerate(
                    zip(ms, [np.atleast_1d(w) for w in out.windows], strict=True)
                )
            ]
        )
    else:
        src = stream.first

        def _lazy() -> Any:
            return srp(
                src,
                ms[0] if req.single_m else ms,
                level="expert",
                by_domain=req.by_domain,
                backend=req.backend,
            ).activation_ratio

        res._activation_fn = _lazy
    return res


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
    return _reduce.load_balance_of(r.activation_ratio)


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
    return _reduce.specialization_of(r.activation_ratio, min_ratio)
