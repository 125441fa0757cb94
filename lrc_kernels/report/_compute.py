"""The report's numbers: one :class:`ModelResults` per trace, computed with the public API."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._spec import ALL_POLICIES, POLICY_PARAMS, SIZE_POLICIES

RHO_MARK = 2.0
RHO_TABLE = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0)
POLICY_ORDER = ("sch", "belady", "lru", "lfu")  # _spec.POLICIES in the order shown
# the per-size policies are simulated at this ratio by default (one size: cheap), at every
# size per layer and on RHO_TABLE for the shared cache with all_policies=True
SIZE_POLICY_RHO = RHO_MARK
# traces with more activations than this are streamed from disk by every metric call
# instead of being read into memory once
_IN_MEMORY_ACTIVATIONS = 200_000_000


def _policy_name(pol: str, m: int) -> str:
    names = {"sch": f"SCH (m={m})", "belady": "Belady", "lru": "LRU", "lfu": "LFU"}
    if pol in names:
        return names[pol]
    if pol in POLICY_PARAMS:
        kw, default = POLICY_PARAMS[pol]
        return f"{pol} ({kw}={default:g})"
    return pol


@dataclass
class ModelResults:
    """Everything the report shows for one model (trace).

    Attributes
    ----------
    name : str
        Model name shown in figures and tables.
    info : dict
        Trace metadata (see ``lrc info``).
    ms : list of int
        Segment lengths of the SRP results.
    srp_model, srp_layer : SRPResult
        SRP for every m at model level (with a bootstrap interval when asked) and per layer.
    curves : dict of str to HitCurve
        Layer-level hit curves per policy (``"sch"`` with future window ``sch_m``).
    sch_m : int
        Future window of SCH, and the m of the per-domain SRP.
    srp_domain : SRPResult or None
        Model-level SRP at ``sch_m`` per domain label (None without labels).
    sch_domain : HitCurve or None
        Layer-level SCH curve per domain label.
    load_balance : float
        Global load balance at m = ``sch_m``: std (ddof=1) of all experts' activation
        ratios (:func:`lrc_kernels.load_balance`; the paper prints it x100).
    domain_specialization : float or None
        Mean coefficient of variation of the experts' activation ratios across domains
        (:func:`lrc_kernels.domain_specialization`); None without domain labels.
    synthetic : bool
        The trace was made by :func:`lrc_kernels.synthetic_trace` (its metadata says so).
    policies : dict of str to HitCurve
        Layer-level curves of the per-size policies (``_spec.SIZE_POLICIES``, default
        parameters): at rho = ``SIZE_POLICY_RHO`` only, or at every size with
        ``all_policies``; empty where that rho gives no cache size.
    shared : dict of str to HitCurve
        With ``all_policies``: model-level (one shared cache) curves of every policy on the
        ratios ``RHO_TABLE`` that give whole sizes; else empty.
    notes : list of str
        What the report could not show for this trace, and why.
    """

    name: str
    info: dict[str, Any]
    ms: list[int]
    srp_model: Any
    srp_layer: Any
    curves: dict[str, Any]
    sch_m: int
    srp_domain: Any = None
    sch_domain: Any = None
    load_balance: float = float("nan")
    domain_specialization: float | None = None
    synthetic: bool = False
    policies: dict[str, Any] = field(default_factory=dict)
    shared: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def top_k(self) -> int:
        return int(self.info["top_k"])

    def mean_curve(self, policy: str) -> tuple[np.ndarray, np.ndarray]:
        """``(rho, hit rate)`` of a policy, averaged over the layers."""
        c = self.curves[policy]
        return np.asarray(c.rho, dtype=np.float64), np.asarray(c.rates).mean(axis=0)

    def hit_at(self, policy: str, rho: float, shared: bool = False) -> float:
        """Layer-mean hit rate at cache ratio ``rho`` (NaN where rho gives no whole size or
        was not simulated); ``shared``: the model-level cache of ``all_policies``."""
        curves = self.shared if shared else {**self.policies, **self.curves}
        c = curves.get(policy)
        if c is None:
            return float("nan")
        try:
            v = c.at(rho)
        except ValueError:
            return float("nan")
        return float(np.mean(v))


# SRP at m = 1 is 1 by definition (a one-token segment router keeps exactly the token's
# experts), so the report's SRP figures start at m = 2
MIN_PLOT_M = 2


def _default_ms(max_len: int) -> list[int]:
    ms = [m for m in (2, 4, 8, 16, 32, 64, 128, 256) if m <= max(max_len, 2)]
    return ms or [2]


def compute_results(
    sources: Sequence[Any],
    *,
    ms: Sequence[int] | None = None,
    sch_m: int = 16,
    bootstrap: int = 0,
    backend: str = "auto",
    progress: Any = None,
    all_policies: bool = False,
) -> list[ModelResults]:
    """Compute every number of the report with the public API.

    Parameters
    ----------
    sources : sequence of path, Trace or lrc_kernels.io.TraceSource
        The traces, one per model: trace files (or shard directories), in-memory
        :class:`~lrc_kernels.Trace` objects, or sources from
        :func:`lrc_kernels.io.open_sources` (see :func:`lrc_kernels.io.as_sources`).
    ms : sequence of int, optional
        Segment lengths for SRP; default 2, 4, ... 256 up to the longest sequence (SRP at
        m = 1 is 1 by definition; the figures leave it out when asked for).
    sch_m : int
        Future window of SCH, also the m of the per-domain SRP bars (the paper: 16).
    bootstrap : int
        Bootstrap resamples for the model-level SRP interval (0: none).
    backend : str
        Compute backend passed to the API.
    progress : object with an ``enabled`` attribute, optional
        Shows a bar over the computation steps when ``progress.enabled`` (the command
        line passes its ``Progress``; tqdm must be importable).
    all_policies : bool
        False (default): the per-size policies at rho = 2 per layer only (one simulation
        per layer and policy). True: at every cache size per layer, and every policy on a
        shared cache at the ratios ``RHO_TABLE`` (one simulation per size: much slower).

    Returns
    -------
    list of ModelResults
    """
    from .. import io as trace_io

    sources = trace_io.as_sources(sources)
    bar = None
    if progress is not None and progress.enabled:
        from tqdm.auto import tqdm  # enabled only where tqdm imports (cli._show_progress)

        bar = tqdm(total=_STEPS_PER_MODEL * len(sources), desc="report", leave=False, delay=0.5)

    def step() -> None:
        if bar is not None:
            bar.update(1)

    try:
        return [
            _model_results(s, ms, sch_m, bootstrap, backend, step, all_policies) for s in sources
        ]
    finally:
        if bar is not None:
            bar.close()


# progress steps of one model in _model_results
_STEPS_PER_MODEL = 9


def _trace_facts(source: Any) -> tuple[dict[str, Any], np.ndarray, Any, dict[str, Any], Any]:
    """(info row, sequence lengths, domains() callable, metadata, what the metrics read):
    a file source is read into memory once when it is small enough, else streamed."""
    import lrc_kernels as lk

    info = source.info()
    trace = getattr(source, "trace", None)
    if trace is not None:  # in memory already
        return info, trace.lengths, lambda: list(trace.domains), trace.meta, trace
    reader = source.reader
    lengths = reader.lengths()
    if reader.num_activations <= _IN_MEMORY_ACTIVATIONS:
        data: Any = lk.read_trace(source.path, weights=False)
    else:
        data = source.path
    return info, lengths, reader.domains, reader.meta, data


def _model_results(
    source: Any, ms: Any, sch_m: int, bootstrap: int, backend: str, step: Any, full: bool
) -> ModelResults:
    """Every number of one model (``step()`` after each of its 9 steps)."""
    import lrc_kernels as lk

    info, lengths, domains, meta, data = _trace_facts(source)
    max_len = int(lengths.max()) if lengths.size else 0
    m_list = [int(v) for v in ms] if ms else _default_ms(max_len)
    if sch_m not in m_list:  # the summary quotes SRP at m = sch_m
        m_list = sorted(set(m_list) | {int(sch_m)})
    srp_layer = lk.srp(data, m_list, level="layer", backend=backend)
    step()
    if bootstrap:
        srp_model = lk.srp(data, m_list, level="model", bootstrap=bootstrap, backend=backend)
    else:  # the same histograms pooled over layers: no second pass over the trace
        srp_model = _pool_layers(srp_layer)
    step()
    curves = {}
    for pol in POLICY_ORDER:
        curves[pol] = lk.hit_curve(
            data, pol, m=sch_m if pol == "sch" else None, level="layer", backend=backend
        )
        step()
    has_domains = info["num_domains"] > 0 and all(d is not None for d in domains())
    lb = lk.load_balance(data, sch_m, backend=backend)
    step()
    srp_dom = sch_dom = ds = None
    if has_domains:
        ds = lk.domain_specialization(data, sch_m, backend=backend)[0]
        srp_dom = lk.srp(data, sch_m, level="model", by_domain=True, backend=backend)
        sch_dom = lk.sch(data, sch_m, level="layer", by_domain=True, backend=backend)
    step()
    r = ModelResults(
        name=source.name,
        info=info,
        ms=m_list,
        srp_model=srp_model,
        srp_layer=srp_layer,
        curves=curves,
        sch_m=sch_m,
        srp_domain=srp_dom,
        sch_domain=sch_dom,
        load_balance=lb,
        domain_specialization=ds,
        synthetic=meta.get("generator") == "lrc_kernels.synthetic_trace",
    )
    r.policies, r.shared = _policy_curves(data, info, sch_m, backend, full)
    step()
    r.notes.extend(_notes(r, m_list, max_len))
    return r


def _policy_curves(
    data: Any, info: dict[str, Any], sch_m: int, backend: str, full: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Layer-level curves of the per-size policies (rho = 2, or every size with ``full``),
    and with ``full`` every policy on a shared cache at the ratios of ``RHO_TABLE``."""
    import lrc_kernels as lk

    E, k = int(info["num_experts"]), int(info["top_k"])
    if backend == "gpu":  # the per-size policies run on the CPU
        backend = "cpu"
    layer: dict[str, Any] = {}
    grid = {} if full else {"rho": [SIZE_POLICY_RHO]}
    if full or SIZE_POLICY_RHO * k <= E:
        for pol in SIZE_POLICIES:
            layer[pol] = lk.hit_curve(data, pol, level="layer", backend=backend, **grid)
    shared: dict[str, Any] = {}
    if full:
        rhos = [r for r in RHO_TABLE if float(r * k).is_integer() and r * k <= E]
        for pol in ALL_POLICIES:
            m = sch_m if pol == "sch" else None
            shared[pol] = lk.hit_curve(data, pol, m, level="model", rho=rhos, backend=backend)
    return layer, shared


def _notes(r: ModelResults, m_list: list[int], max_len: int) -> list[str]:
    """What the report cannot show for a model, and why."""
    notes = []
    short = [m for m in m_list if m > max_len]
    if short:
        notes.append(
            f"m = {', '.join(map(str, short))} "
            f"{'exceeds' if len(short) == 1 else 'exceed'} the longest sequence "
            f"({max_len} tokens): no windows, not plotted"
        )
    if 2 * r.top_k > int(r.info["num_experts"]):
        notes.append(
            f"rho = 2 needs a cache of 2k = {2 * r.top_k} experts but a layer has only "
            f"{r.info['num_experts']}"
        )
    return notes


def _pool_layers(layer: Any) -> Any:
    """Model-level SRP from a layer-level result (list of m, no domains): the layer
    histograms summed, then the API's own best-threshold reduction, so the values are
    bit-identical to ``srp(..., level="model")``."""
    import lrc_kernels as lk

    values, thresholds, ratios, hists = [], [], [], []
    for m, H in zip(layer.m, layer.histogram, strict=True):
        pooled = np.asarray(H, dtype=np.int64).sum(axis=0)
        f1, thr, ratio = lk.srp_from_histogram(pooled, int(m))
        values.append(f1)
        thresholds.append(thr)
        ratios.append(ratio)
        hists.append(pooled)
    return lk.SRPResult(
        value=np.stack(values),
        threshold=np.stack(thresholds),
        ratio=np.stack(ratios),
        m=list(layer.m),
        level="model",
        windows=layer.windows,
        histogram=hists,
    )
