"""Partial results: the integer tables of one shard, merged exactly, finished into results.

Every metric reduces to additive integer tables (SRP window-count histograms per domain,
per-sequence histograms for the bootstrap, stack-depth counts per (domain, length) class of
sequences for the hit curves). A :class:`Partial` holds them for one shard (a file, a batch,
any run of whole sequences); :func:`merge` adds the partials of consecutive shards, in the
order of the shards; :func:`finish` turns the result into the :class:`SRPResult` or
:class:`HitCurve` that :func:`lrc_kernels.srp` or :func:`lrc_kernels.hit_curve` returns for
the concatenated trace, bit for bit (bootstrap intervals included: the resampling is drawn
at :func:`finish` over the whole, ordered set of sequences, whose per-sequence tables the
partials carry). This is Dask's ``chunk -> combine -> aggregate`` shape: the same three
functions serve one process, a pool and a cluster (:mod:`lrc_kernels.cluster`).

Partials serialise to compact NumPy ``.npz`` bytes (:meth:`Partial.to_bytes`,
:meth:`Partial.save`, :func:`load`): integer tables in the narrowest unsigned type that
holds them, zlib-compressed, and a JSON header (kind, parameters, shape, domain labels).
"""

from __future__ import annotations

import io as _bytes_io
import json
import os
import zipfile
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np

from . import _cache_api, _cache_sizes, _srp_api
from . import _validate as _v
from ._backends import reductions
from ._results import HitCurve, SRPResult
from ._spec import ALL_POLICIES, LEVELS_CACHE, SIZE_POLICIES
from ._stream import GroupSum, Stream
from ._trace import LabelCodes

__all__ = [
    "Partial",
    "srp_partial",
    "curve_partial",
    "merge",
    "finish",
    "compute",
    "load",
    "from_bytes",
]

_FORMAT = "lrc-partial"
_VERSION = 1
KINDS = ("srp", "curve")


@dataclass(eq=False)
class Partial:
    """The integer tables of a metric over some whole sequences of a trace.

    Make one with :func:`srp_partial` or :func:`curve_partial`, combine with :func:`merge`,
    turn into a result with :func:`finish`.

    Attributes
    ----------
    kind : {"srp", "curve"}
        Which metric the tables serve.
    params : dict
        The metric's parameters (JSON-able): partials merge only with equal parameters.
    shape : tuple of int or None
        ``(num_experts, num_layers, top_k)`` of the trace; None for a partial of no
        sequence.
    domains : list
        Domain labels in code order (``[None]`` without ``by_domain``).
    arrays : dict of str to ndarray
        The tables. SRP: ``table`` (domain, layer, expert|1, bins), ``lengths`` and
        ``seq_dom`` per sequence, ``act`` (per-expert table of a coarser bootstrap run),
        ``seq_tables`` (per-sequence tables of a bootstrap run). Curves: ``keys``
        (class, 2) = (domain code, length) and ``table_i`` per m (class, layer|1, depths)
        of stack-depth counts; a per-size policy: ``table_0`` (class, layer|1, sizes) of
        hits and ``counts`` (class,) of sequences.
    """

    kind: str
    params: dict[str, Any]
    shape: tuple[int, int, int] | None
    domains: list[Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def _class_sizes(self) -> np.ndarray:
        """Sequences per (domain, length) class of a curve partial (empty ones: 0)."""
        keys = self.arrays["keys"]
        if "counts" in self.arrays:  # a per-size policy counts its sequences
            return np.where(keys[:, 1] > 0, self.arrays["counts"], 0)
        tab = self.arrays.get("table_0")
        if tab is None or self.shape is None:
            return np.zeros(keys.shape[0], np.int64)
        A = self.shape[2] * (self.shape[1] if self.params["level"] == "model" else 1)
        per = tab[:, 0].sum(axis=-1)  # accesses of the first layer (or of the model)
        return per // np.maximum(keys[:, 1] * A, 1)

    @property
    def num_sequences(self) -> int:
        """Sequences the partial covers (for curves: those with at least one token)."""
        if self.kind == "srp":
            return int(self.arrays["lengths"].shape[0])
        return int(self._class_sizes().sum())

    @property
    def num_tokens(self) -> int:
        """Tokens of the sequences the partial covers."""
        if self.kind == "srp":
            return int(self.arrays["lengths"].sum())
        return int((self.arrays["keys"][:, 1] * self._class_sizes()).sum())

    def with_domain(self, label: Any) -> Partial:
        """This partial of a run without ``by_domain``, every sequence labelled ``label``
        (e.g. a shard that holds one domain), as if computed with ``by_domain=True``."""
        if self.params["by_domain"]:
            raise ValueError("with_domain: the partial already has domain labels")
        if label is None:
            raise ValueError("with_domain: a domain label cannot be None")
        params = dict(self.params, by_domain=True)
        # a partial of no sequence has no domain (one pass would never see the label)
        labels = [label] if self.domains else []
        return Partial(self.kind, params, self.shape, labels, dict(self.arrays))

    def pooled(self) -> Partial:
        """This ``by_domain`` partial with its domains pooled (as if computed without
        ``by_domain``)."""
        if not self.params["by_domain"]:
            return self
        params = dict(self.params, by_domain=False)
        a = self.arrays
        if self.kind == "srp":
            out = dict(a, seq_dom=np.zeros_like(a["seq_dom"]))
            for name in ("table", "act"):
                if name in a:
                    out[name] = a[name].sum(axis=0, keepdims=True)
            return Partial(self.kind, params, self.shape, [None], out)
        zero = np.zeros_like(a["keys"][:, :1])
        pool = Partial(self.kind, params, self.shape, [None], dict(a))
        pool.arrays["keys"] = np.concatenate([zero, a["keys"][:, 1:]], axis=1)
        return merge(pool)  # classes of equal length, now equal keys, are added

    # ------------------------------------------------------------ serialisation
    def to_bytes(self) -> bytes:
        """Compact ``.npz`` bytes (narrow integer tables, zlib) that :func:`from_bytes` reads."""
        head = {
            "format": _FORMAT,
            "version": _VERSION,
            "kind": self.kind,
            "params": self.params,
            "shape": list(self.shape) if self.shape is not None else None,
            "domains": self.domains,
            "dtypes": {k: str(v.dtype) for k, v in self.arrays.items()},
        }
        try:
            text = json.dumps(head, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"a partial serialises domain labels that are str, int or None: {exc}"
            ) from None
        buf = _bytes_io.BytesIO()
        arrays = {k: _narrow(v) for k, v in self.arrays.items()}
        header = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
        np.savez_compressed(buf, __header__=header, **arrays)
        return buf.getvalue()

    def save(self, path: str | os.PathLike) -> None:
        """Write :meth:`to_bytes` to ``path`` atomically (a temporary file, then a rename),
        so an interrupted write never leaves a partial that loads."""
        path = os.fspath(path)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(self.to_bytes())
        os.replace(tmp, path)

    def __repr__(self) -> str:
        return (
            f"Partial(kind={self.kind!r}, sequences={self.num_sequences}, "
            f"domains={self.domains!r}, params={self.params!r})"
        )


def _narrow(a: np.ndarray) -> np.ndarray:
    """Integer counts in the narrowest unsigned type that holds them (restored on load)."""
    if a.dtype.kind not in "iu" or a.size == 0 or a.min() < 0:
        return a
    top = int(a.max())
    for dt in (np.uint8, np.uint16, np.uint32):
        if top <= np.iinfo(dt).max:
            return a.astype(dt)
    return a


def from_bytes(data: bytes) -> Partial:
    """The :class:`Partial` of :meth:`Partial.to_bytes` bytes."""
    try:
        with np.load(_bytes_io.BytesIO(data), allow_pickle=False) as z:
            head = json.loads(bytes(z["__header__"]).decode("utf-8"))
            arrays = {k: z[k] for k in z.files if k != "__header__"}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise ValueError(f"not a serialised lrc_kernels partial: {exc}") from None
    if head.get("format") != _FORMAT or head.get("version") != _VERSION:
        raise ValueError(
            f"not a version-{_VERSION} lrc_kernels partial (header says "
            f"{head.get('format')!r} version {head.get('version')!r})"
        )
    arrays = {k: a.astype(head["dtypes"][k]) for k, a in arrays.items()}
    shape = tuple(head["shape"]) if head["shape"] is not None else None
    return Partial(head["kind"], head["params"], shape, head["domains"], arrays)


def load(path: str | os.PathLike) -> Partial:
    """The :class:`Partial` saved at ``path`` by :meth:`Partial.save`."""
    with open(path, "rb") as f:
        return from_bytes(f.read())


# ----------------------------------------------------------------- computing
def _shape_of(stream: Stream) -> tuple[int, int, int] | None:
    first = stream._first
    return None if first is None else (first.num_experts, first.num_layers, first.top_k)


def _full(table: np.ndarray | None, rows: int) -> np.ndarray | None:
    """A GroupSum table with a row for every group (rows of late groups are zero)."""
    if table is None or table.shape[0] == rows:
        return table
    pad = np.zeros((rows - table.shape[0],) + table.shape[1:], table.dtype)
    return np.concatenate([table, pad])


def srp_partial(
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
) -> Partial:
    """The tables of :func:`lrc_kernels.srp` over ``trace`` (same parameters).

    ``finish(merge(srp_partial(a, ...), srp_partial(b, ...)))`` equals ``srp(a + b, ...)``
    bit for bit, where ``a + b`` is the trace of a's sequences followed by b's. The
    bootstrap keeps one table per sequence (as :func:`lrc_kernels.srp` does); the
    resampling is drawn by :func:`finish` over all sequences of the merged partial.
    """
    req = _srp_api._check_args(m, level, bootstrap, confidence, by_domain, seed, backend)
    stream = Stream(trace, num_experts, req.by_domain, backend, progress)
    acc = _srp_api._accumulate(stream, req, act=True)
    G = len(stream.domains.index)
    arrays: dict[str, np.ndarray] = {
        "lengths": _cat(acc.lengths, np.int64),
        "seq_dom": _cat(acc.seq_dom, np.int64),
    }
    table = _full(acc.table.table, G)
    if table is not None:
        arrays["table"] = table
        if acc.act.table is not None:
            arrays["act"] = _full(acc.act.table, G)
        if req.per_seq:
            arrays["seq_tables"] = _cat(acc.seq_tables, np.int64)
    params = {
        "m": int(req.ms[0]) if req.single_m else [int(v) for v in req.ms],
        "level": req.level,
        "by_domain": req.by_domain,
        "bootstrap": req.bootstrap,
        "confidence": float(req.confidence),
        "seed": req.seed,
    }
    names = stream.domains.names if req.by_domain else [None]
    return Partial("srp", params, _shape_of(stream), names if G else [], arrays)


def _cat(parts: list[np.ndarray], dtype: Any) -> np.ndarray:
    if not parts:
        return np.zeros(0, dtype)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def curve_partial(
    trace: Any,
    policy: str,
    m: Any = None,
    *,
    level: str = "layer",
    warm_start: bool = True,
    sizes: Any = None,
    rho: Any = None,
    decay: float | None = None,
    window: int | None = None,
    prefix: int | None = None,
    pinned: float | None = None,
    num_experts: int | None = None,
    by_domain: bool = False,
    backend: str = "auto",
    progress: Any = False,
) -> Partial:
    """The tables of :func:`lrc_kernels.hit_curve` over ``trace`` (same parameters, every
    policy).

    Per (domain, length) class of sequences, one table per m: stack-depth counts (stack
    policies), or hits at each cache size and the number of sequences (per-size policies).
    ``sizes``/``rho`` and the policy's parameter (its default where not given) are part of
    the partial's parameters, so partials of different grids or parameters do not merge.
    :func:`finish` of merged partials equals :func:`lrc_kernels.hit_curve` of the
    concatenated trace bit for bit.
    """
    _v.check_choice(policy, "policy", ALL_POLICIES)
    ms, single_m = _cache_api._check_ms(policy, m)
    given = {"decay": decay, "window": window, "prefix": prefix, "pinned": pinned}
    pparams = _cache_sizes.check_params(policy, given)
    _v.check_choice(level, "level", LEVELS_CACHE)
    warm_start = _v.check_bool(warm_start, "warm_start")
    request = _cache_sizes.SizeRequest(policy, level, sizes, rho)
    by_domain = _v.check_bool(by_domain, "by_domain")
    stream = Stream(trace, num_experts, by_domain, backend, progress)
    if policy in SIZE_POLICIES:
        hits, counts, lens, _ = _cache_sizes.accumulate(
            stream, policy, request, level, bool(warm_start), pparams
        )
        tables = [hits, counts]
        names = ["table_0", "counts"]
    else:
        tables, lens = _cache_api._accumulate(stream, policy, ms, level, warm_start)
        names = [f"table_{i}" for i in range(len(tables))]
        if stream._first is not None:  # refuse a grid beyond the trace here, not at finish
            f = stream._first
            request.resolve(f.num_layers, f.num_experts, f.top_k, level)
    G = len(lens.index)
    arrays = {"keys": np.asarray(lens.names, np.int64).reshape(G, 2)}
    for name, acc in zip(names, tables, strict=True):
        if acc.table is not None:
            arrays[name] = _full(acc.table, G)
    params = {
        "policy": policy,
        "m": (int(ms[0]) if single_m else [int(v) for v in ms]) if policy == "sch" else None,
        "level": level,
        "warm_start": bool(warm_start),
        "by_domain": by_domain,
        **request.as_params(),
        **{k: (float(v) if isinstance(v, float) else int(v)) for k, v in pparams.items()},
    }
    dom = stream.domains.names if by_domain else [None]
    return Partial("curve", params, _shape_of(stream), dom if G else [], arrays)


def compute(trace: Any, kind: str, kwargs: dict[str, Any]) -> Partial:
    """:func:`srp_partial` (``kind="srp"``) or :func:`curve_partial` (``"curve"``) of
    ``trace`` with keyword arguments ``kwargs`` (what a cluster task runs)."""
    if kind == "srp":
        return srp_partial(trace, **kwargs)
    if kind == "curve":
        return curve_partial(trace, **kwargs)
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


# ------------------------------------------------------------------- merging
def _parts(partials: tuple[Any, ...]) -> list[Partial]:
    if len(partials) == 1 and not isinstance(partials[0], Partial):
        partials = tuple(partials[0])
    parts = list(partials)
    if not parts:
        raise ValueError("merge needs at least one partial")
    for i, p in enumerate(parts):
        if not isinstance(p, Partial):
            raise TypeError(f"merge takes Partial objects; item {i} is {type(p).__name__}")
    first = parts[0]
    for i, p in enumerate(parts[1:], 1):
        if p.kind != first.kind or p.params != first.params:
            keys = dict.fromkeys([*first.params, *p.params])
            diff = [k for k in keys if first.params.get(k) != p.params.get(k)]
            what = f" (they differ in {', '.join(diff)})" if p.kind == first.kind else ""
            raise ValueError(
                f"partial {i} was computed for {p.kind} with {p.params}, partial 0 for "
                f"{first.kind} with {first.params}{what}: only partials of one computation "
                "merge"
            )
    shapes = [p.shape for p in parts if p.shape is not None]
    for s in shapes[1:]:
        if s != shapes[0]:
            raise ValueError(
                f"partials disagree on the trace shape (E, L, k): {shapes[0]} then {s}; "
                "all shards of one source must come from the same model"
            )
    return parts


def merge(*partials: Any) -> Partial:
    """The partial of the shards of ``partials`` one after the other (exact integer sums).

    Parameters
    ----------
    *partials : Partial, or one iterable of Partial
        Partials of consecutive shards, in their order: the order decides the order of the
        sequences (hence of the bootstrap resampling) and of the domain labels (order of
        first appearance, as in one pass). Merging is associative: any grouping of
        consecutive partials gives the same result.

    Returns
    -------
    Partial
    """
    parts = _parts(partials)
    codes = LabelCodes()
    maps = [codes.codes(p.domains) for p in parts]
    G = len(codes.index)
    shape = next((p.shape for p in parts if p.shape is not None), None)
    first = parts[0]
    if first.kind == "srp":
        arrays = _merge_srp(parts, maps, G)
    else:
        arrays = _merge_curve(parts, maps)
    return Partial(first.kind, dict(first.params), shape, codes.names, arrays)


def _add_rows(tabs: list[tuple[np.ndarray, np.ndarray]], rows: int) -> np.ndarray:
    """Sum of tables whose row ``r`` goes to row ``map[r]`` (integers: order-free)."""
    t0 = tabs[0][1]
    acc = np.zeros((rows,) + t0.shape[1:], t0.dtype)
    for mp, t in tabs:
        if mp.size == np.unique(mp).size:  # distinct rows (the usual case): a fast add
            acc[mp] += t
        else:  # rows that fall together (pooled domains)
            np.add.at(acc, mp, t)
    return acc


def _merge_srp(parts: list[Partial], maps: list[np.ndarray], G: int) -> dict[str, np.ndarray]:
    out = {
        "lengths": _cat([p.arrays["lengths"] for p in parts], np.int64),
        "seq_dom": _cat(
            [mp[p.arrays["seq_dom"]] for p, mp in zip(parts, maps, strict=True)], np.int64
        ),
    }
    for name in ("table", "act"):
        tabs = [(mp, p.arrays[name]) for p, mp in zip(parts, maps, strict=True) if name in p.arrays]
        if tabs:
            out[name] = _add_rows(tabs, G)
    seq = [p.arrays["seq_tables"] for p in parts if "seq_tables" in p.arrays]
    if seq:
        out["seq_tables"] = _cat(seq, seq[0].dtype)
    return out


def _merge_curve(parts: list[Partial], maps: list[np.ndarray]) -> dict[str, np.ndarray]:
    classes = LabelCodes()  # (global domain code, length), in order of first appearance
    cmaps = []
    for p, mp in zip(parts, maps, strict=True):
        keys = p.arrays["keys"]
        cmaps.append(classes.codes((int(mp[d]), int(T)) for d, T in keys.tolist()))
    Gc = len(classes.index)
    out = {"keys": np.asarray(classes.names, np.int64).reshape(Gc, 2)}
    names = dict.fromkeys(k for p in parts for k in p.arrays if k != "keys")
    for name in names:  # table_i per m (stack policies); table_0 and counts (per-size)
        tabs = [
            (cm, p.arrays[name]) for p, cm in zip(parts, cmaps, strict=True) if name in p.arrays
        ]
        if tabs:
            out[name] = _add_rows(tabs, Gc)
    return out


# ------------------------------------------------------------------ finishing
def finish(partial: Partial, *, backend: str = "auto") -> SRPResult | HitCurve:
    """The result of the computation ``partial`` holds the tables of.

    Parameters
    ----------
    partial : Partial
        Usually :func:`merge` of the partials of every shard of a trace.
    backend : {"auto", "cpu", "gpu", "reference"}
        Whose reductions (best F1, bootstrap) to use; every backend gives the same bits,
        and ``"reference"`` needs no Numba.

    Returns
    -------
    SRPResult or HitCurve
        What :func:`lrc_kernels.srp` or :func:`lrc_kernels.hit_curve` returns for the
        concatenated shards, bit for bit (the bootstrap is drawn here, over all sequences).
    """
    if not isinstance(partial, Partial):
        raise TypeError(f"finish takes a Partial, got {type(partial).__name__}")
    if partial.shape is None:
        raise ValueError("the trace source holds no sequences")
    E, L, k = partial.shape
    first = SimpleNamespace(num_experts=E, num_layers=L, top_k=k)
    if partial.kind == "srp":
        return _finish_srp(partial, first, backend)
    return _finish_curve(partial, first)


def _finish_srp(p: Partial, first: Any, backend: str) -> SRPResult:
    pr, a = p.params, p.arrays
    req = _srp_api._check_args(
        pr["m"],
        pr["level"],
        pr["bootstrap"],
        pr["confidence"],
        pr["by_domain"],
        pr["seed"],
        backend,
    )
    acc = _srp_api._Tables()
    acc.lengths = [a["lengths"]]
    acc.seq_dom = [a["seq_dom"]]
    if "seq_tables" in a:
        acc.seq_tables = [a["seq_tables"]]
    acc.act.table = a.get("act")
    table = a.get("table")
    if table is None or table.shape[0] == 0:
        table = _srp_api._empty_table(first, req)
        if not req.per_expert:  # the per-expert table of no sequence, as one pass has it
            shape = (table.shape[0], first.num_layers, first.num_experts, req.width)
            acc.act.table = np.zeros(shape, np.int64)
    out = _srp_api._reduce_all(table, acc, req, reductions(req.backend))
    view = SimpleNamespace(
        domain_names=list(p.domains) if req.by_domain else None, streamed=True, first=first
    )
    return _srp_api._result(req, out, acc, view, None)


def _finish_curve(p: Partial, first: Any) -> HitCurve:
    pr, a = p.params, p.arrays
    ms, single_m = _cache_api._check_ms(pr["policy"], pr["m"])
    domains = LabelCodes()
    domains.codes(p.domains)
    view = SimpleNamespace(
        first=first,
        by_domain=pr["by_domain"],
        domains=domains,
        domain_names=list(p.domains) if pr["by_domain"] else None,
    )
    lens = LabelCodes()
    lens.codes((int(d), int(T)) for d, T in a["keys"].tolist())
    policy, level = pr["policy"], pr["level"]
    request = _cache_sizes.SizeRequest(policy, level, pr.get("sizes"), pr.get("rho"))
    if policy in SIZE_POLICIES:
        given = {k: pr.get(k) for k in ("decay", "window", "prefix", "pinned")}
        return _cache_sizes.curve_from_tables(
            view,
            a.get("table_0"),
            a.get("counts"),
            lens.names,
            policy,
            request,
            level,
            pr["warm_start"],
            _cache_sizes.check_params(policy, given),
        )
    tables = []
    for i in range(ms.shape[0]):
        acc = GroupSum()
        acc.table = a.get(f"table_{i}")
        tables.append(acc)
    curve = _cache_api._result(view, tables, lens, policy, ms, single_m, level, pr["warm_start"])
    return _cache_sizes.select_sizes(curve, request)
