"""Routing logs (JSONL / CSV records, one per token and layer) to traces, streaming.

Public through :mod:`lrc_kernels.convert` (:func:`from_routing_log`,
:func:`routing_log_to_file`, :func:`iter_routing_log`); ``docs/trace-format.md``
("Routing logs") documents the record shape, the field-name aliases and the grouping rule.
"""

from __future__ import annotations

import csv
import json
import re
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._trace import Trace, _validate_num_experts
from ._validate import check_choice, check_int

# canonical field -> accepted names (first match wins; compared case-insensitively)
ALIASES: dict[str, tuple[str, ...]] = {
    "request_id": ("request_id", "request", "req_id", "rid", "sequence_id", "seq_id", "seq"),
    "position": ("position", "pos", "token_position", "token_index", "token_idx", "token"),
    "layer": ("layer", "layer_id", "layer_idx", "moe_layer"),
    "experts": ("experts", "expert_ids", "topk_ids", "topk_indices", "selected_experts", "ids"),
    "weights": ("weights", "topk_weights", "routing_weights", "gate_weights", "scores"),
    "domain": ("domain", "dataset"),
}
REQUIRED = ("request_id", "position", "layer", "experts")
FORMATS = ("auto", "jsonl", "csv")
_SPLIT = re.compile(r"[\s,;|]+")


@dataclass
class RoutingLogStats:
    """What a pass over a routing log saw: ``lines`` read, ``records`` (one per token and
    layer), ``requests`` and ``tokens`` written, and ``peak_open``, the most requests that
    were open (buffered) at once; it never exceeds ``max_open``."""

    lines: int = 0
    records: int = 0
    requests: int = 0
    tokens: int = 0
    peak_open: int = 0


class _Request:
    __slots__ = ("rid", "first_line", "last_line", "records", "domain")

    def __init__(self, rid: str, line: int, domain: Any) -> None:
        self.rid, self.first_line, self.last_line = rid, line, line
        self.records: dict[tuple[int, int], tuple[list[int], Any, int]] = {}
        self.domain = domain


def _format_of(path: Path, fmt: str) -> str:
    fmt = check_choice(fmt, "format", FORMATS)
    if fmt != "auto":
        return fmt
    name = path.name.lower()
    for suffix, f in ((".jsonl", "jsonl"), (".ndjson", "jsonl"), (".csv", "csv")):
        if name.endswith(suffix) or name.endswith(suffix + ".gz"):
            return f
    raise ValueError(f"{path}: cannot tell the format from the name; pass format='jsonl' or 'csv'")


def _open(path: Path) -> Any:
    if path.name.lower().endswith(".gz"):
        import gzip

        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")  # noqa: SIM115


def _records(path: Path, fmt: str, stats: RoutingLogStats) -> Iterator[tuple[int, dict]]:
    """``(line number, {field: value})`` for every record, line by line."""
    with _open(path) as f:
        if fmt == "jsonl":
            for n, line in enumerate(f, 1):
                stats.lines = n
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}, line {n}: not valid JSON ({exc.msg})") from None
                if not isinstance(rec, dict):
                    raise ValueError(f"{path}, line {n}: a record must be a JSON object")
                yield n, rec
        else:
            reader = csv.reader(f)
            header = next(reader, None)
            stats.lines = 1
            if header is None:
                return
            header = [h.strip() for h in header]
            for row in reader:
                n = reader.line_num
                stats.lines = n
                if not row or all(not c.strip() for c in row):
                    continue
                if len(row) != len(header):
                    raise ValueError(
                        f"{path}, line {n}: {len(row)} fields, the header has {len(header)}"
                    )
                yield n, dict(zip(header, row, strict=True))


def _fields(keys: Any, path: Path, line: int) -> dict[str, str]:
    """Canonical field -> the record's key, from the first record's keys."""
    lower = {str(k).lower(): k for k in keys}
    found = {}
    for name, aliases in ALIASES.items():
        for a in aliases:
            if a in lower:
                found[name] = lower[a]
                break
    missing = [f for f in REQUIRED if f not in found]
    if missing:
        raise ValueError(
            f"{path}, line {line}: no field {missing[0]!r} (accepted names: "
            f"{', '.join(ALIASES[missing[0]])})"
        )
    return found


def _int(v: Any, what: str, where: str) -> int:
    if isinstance(v, bool):
        raise ValueError(f"{where}: field {what!r} must be an integer, got {v!r}")
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str) and re.fullmatch(r"\s*[+-]?\d+\s*", v):
        return int(v)
    raise ValueError(f"{where}: field {what!r} must be an integer, got {v!r}")


def _list(v: Any, what: str, where: str) -> list:
    if isinstance(v, str):
        text = v.strip().strip("[]()").strip()
        v = [p for p in _SPLIT.split(text) if p] if text else []
    elif not isinstance(v, list):
        v = [v]
    return v


def _parse(rec: dict, keys: dict, where: str, E: int, use_w: bool) -> tuple:
    for f in REQUIRED:
        if keys[f] not in rec or rec[keys[f]] in (None, ""):
            raise ValueError(f"{where}: missing field {f!r}")
    rid = str(rec[keys["request_id"]])
    pos = _int(rec[keys["position"]], "position", where)
    layer = _int(rec[keys["layer"]], "layer", where)
    if pos < 0 or layer < 0:
        raise ValueError(f"{where}: field {'position' if pos < 0 else 'layer'!r} is negative")
    ids = [_int(e, "experts", where) for e in _list(rec[keys["experts"]], "experts", where)]
    if not ids:
        raise ValueError(f"{where}: field 'experts' is empty")
    for e in ids:
        if not 0 <= e < E:
            raise ValueError(
                f"{where}: field 'experts': id {e} is outside [0, {E}) (num_experts = {E})"
            )
    if len(set(ids)) != len(ids):
        dup = next(e for i, e in enumerate(ids) if e in ids[:i])
        raise ValueError(f"{where}: field 'experts': expert {dup} appears twice in one token")
    w = None
    if use_w and "weights" in keys and rec.get(keys["weights"]) not in (None, ""):
        try:
            w = [float(x) for x in _list(rec[keys["weights"]], "weights", where)]
        except (TypeError, ValueError):
            raise ValueError(f"{where}: field 'weights' must be numbers") from None
        if len(w) != len(ids):
            raise ValueError(f"{where}: field 'weights' has {len(w)} values for {len(ids)} experts")
        if not all(np.isfinite(x) and x >= 0 for x in w):
            raise ValueError(f"{where}: field 'weights' must be finite and >= 0")
    dom = rec.get(keys["domain"]) if "domain" in keys else None
    return rid, pos, layer, ids, w, dom


def iter_routing_log(
    path: Any,
    *,
    num_experts: int,
    top_k: int | None = None,
    format: str = "auto",
    weights: bool = True,
    max_open: int = 1,
    stats: RoutingLogStats | None = None,
) -> Iterator[tuple[str, Any, np.ndarray, np.ndarray | None, list[int]]]:
    """Stream a routing log: one ``(request_id, domain, ids, weights, layer_ids)`` per
    request, ``ids`` of shape ``(T, L, k)``, as each request closes.

    At most ``max_open`` requests are open (buffered) at once. A record of a new request
    when ``max_open`` are open closes the one whose latest record is oldest; a record of a
    request that was already closed is an error. With the default ``max_open=1`` the log
    must group each request's records together (in any order inside the group). See
    :func:`from_routing_log` for the record shape.
    """
    p = Path(path)
    E = _validate_num_experts(num_experts)
    k = None if top_k is None else check_int(top_k, "top_k", 1, E)
    max_open = check_int(max_open, "max_open", 1)
    use_w = bool(weights)
    st = stats if stats is not None else RoutingLogStats()
    fmt = _format_of(p, format)
    keys: dict[str, str] | None = None
    state: dict[str, Any] = {"layers": None, "weights": None}
    open_: OrderedDict[str, _Request] = OrderedDict()
    closed: dict[str, int] = {}
    for n, rec in _records(p, fmt, st):
        where = f"{p}, line {n}"
        if keys is None:
            keys = _fields(rec.keys(), p, n)
        rid, pos, layer, ids, w, dom = _parse(rec, keys, where, E, use_w)
        if k is None:
            k = len(ids)
        if len(ids) != k:
            raise ValueError(f"{where}: field 'experts' has {len(ids)} ids, expected top_k = {k}")
        if state["weights"] is None:
            state["weights"] = w is not None
        elif state["weights"] != (w is not None):
            raise ValueError(
                f"{where}: field 'weights' is "
                + ("missing; earlier records have it" if state["weights"] else "unexpected")
                + (" (pass weights=False to ignore weights)" if state["weights"] else "")
            )
        st.records += 1
        req = open_.get(rid)
        if req is None:
            if rid in closed:
                raise ValueError(
                    f"{where}: request {rid!r} reappears after it was closed (its records "
                    f"ended at line {closed[rid]}); the log must group each request's "
                    f"records, or raise max_open (now {max_open}) to buffer more requests"
                )
            if len(open_) == max_open:
                _, old = open_.popitem(last=False)
                closed[old.rid] = old.last_line
                yield _close(old, p, state, k, st)
            req = open_[rid] = _Request(rid, n, dom)
            st.peak_open = max(st.peak_open, len(open_))
        else:
            open_.move_to_end(rid)
        if (pos, layer) in req.records:
            raise ValueError(
                f"{where}: request {rid!r} has a second record for position {pos}, layer "
                f"{layer} (the first is on line {req.records[pos, layer][2]})"
            )
        req.records[pos, layer] = (ids, w, n)
        req.last_line = n
    while open_:
        _, old = open_.popitem(last=False)
        yield _close(old, p, state, k, st)


def _close(req: _Request, p: Path, state: dict, k: Any, st: RoutingLogStats) -> tuple:
    where = f"{p}, request {req.rid!r} (lines {req.first_line}-{req.last_line})"
    layers = sorted({lay for _, lay in req.records})
    if state["layers"] is None:
        state["layers"] = layers
    want = state["layers"]
    extra = sorted(set(layers) - set(want))
    if extra:
        raise ValueError(f"{where}: layer {extra[0]} is not one of the log's layers {want}")
    T = max(pos for pos, _ in req.records) + 1
    L = len(want)
    if len(req.records) != T * L:
        for pos in range(T):
            for lay in want:
                if (pos, lay) not in req.records:
                    raise ValueError(
                        f"{where}: no record for position {pos}, layer {lay} (positions "
                        f"must run 0 .. {T - 1} with every layer at each)"
                    )
    col = {lay: i for i, lay in enumerate(want)}
    ids = np.empty((T, L, k), np.int64)
    w = np.empty((T, L, k), np.float32) if state["weights"] else None
    for (pos, lay), (e, wt, _) in req.records.items():
        ids[pos, col[lay]] = e
        if w is not None:
            w[pos, col[lay]] = wt
    st.requests += 1
    st.tokens += T
    dom = None if req.domain is None else str(req.domain)
    return req.rid, dom, ids, w, want


def from_routing_log(
    path: Any,
    *,
    num_experts: int,
    top_k: int | None = None,
    format: str = "auto",
    weights: bool = True,
    max_open: int = 1,
    stats: RoutingLogStats | None = None,
) -> Trace:
    """Read a routing log (JSONL or CSV) into a :class:`~lrc_kernels.Trace`.

    Parameters
    ----------
    path : str or path-like
        A ``.jsonl`` / ``.ndjson`` or ``.csv`` file (``.gz`` compressed too). One record per
        (request, token position, layer): ``request_id``, ``position``, ``layer``,
        ``experts`` (the top-k ids in router order), optional ``weights`` (one per id) and
        ``domain``. CSV lists are one field: ``"3 7"``, ``"3;7"``, ``"[3, 7]"``. Field
        names may be aliases (``docs/trace-format.md``, "Routing logs").
    num_experts : int
        ``E``; every id must lie in ``[0, E)``.
    top_k : int, optional
        ``k``; default: the length of the first record's ``experts``.
    format : {"auto", "jsonl", "csv"}
        ``"auto"`` decides from the file name.
    weights : bool
        Store gate weights when the records have them (default True).
    max_open : int
        Requests buffered at once (default 1: the log groups each request's records).
    stats : RoutingLogStats, optional
        Filled with what the pass saw (lines, records, requests, tokens, peak_open).

    Returns
    -------
    Trace
        One sequence per request, in the order requests close; positions ``0 .. T-1``;
        layers in increasing order of their logged number (kept in ``meta["layer_ids"]``).

    Raises
    ------
    ValueError
        On a malformed record, naming the file, line number and field; on a request with a
        missing (position, layer) record or a duplicate one; on a request that reappears
        after it closed.
    """
    seqs, doms, ws, layer_ids = [], [], [], None
    for _, dom, ids, w, layers in iter_routing_log(
        path,
        num_experts=num_experts,
        top_k=top_k,
        format=format,
        weights=weights,
        max_open=max_open,
        stats=stats,
    ):
        seqs.append(ids)
        doms.append(dom)
        ws.append(w)
        layer_ids = layers
    if not seqs:
        raise ValueError(f"{path}: the routing log has no records")
    off = np.zeros(len(seqs) + 1, np.int64)
    np.cumsum([s.shape[0] for s in seqs], out=off[1:])
    meta = {"source": "routing_log", "request_ids_order": "close order"}
    if layer_ids != list(range(len(layer_ids))):
        meta["layer_ids"] = layer_ids
    has_dom = any(d is not None for d in doms)
    return Trace(
        np.concatenate(seqs),
        off,
        num_experts=num_experts,
        domains=[d if d is not None else "" for d in doms] if has_dom else None,
        weights=np.concatenate(ws) if ws[0] is not None else None,
        meta=meta,
    )


def routing_log_to_file(
    path: Any,
    out: Any,
    *,
    num_experts: int,
    top_k: int | None = None,
    format: str = "auto",
    weights: bool = True,
    max_open: int = 1,
    model: str | None = None,
) -> RoutingLogStats:
    """Convert a routing log to a trace file, writing each request as it closes.

    Memory holds at most ``max_open`` requests (plus the set of closed request ids), so
    logs larger than memory convert. Arguments as for :func:`from_routing_log`.

    Returns
    -------
    RoutingLogStats
    """
    from .io import TraceWriter

    st = RoutingLogStats()
    writer = None
    try:
        for _, dom, ids, w, layers in iter_routing_log(
            path,
            num_experts=num_experts,
            top_k=top_k,
            format=format,
            weights=weights,
            max_open=max_open,
            stats=st,
        ):
            if writer is None:
                writer = TraceWriter(
                    out,
                    num_experts=num_experts,
                    top_k=ids.shape[2],
                    num_layers=ids.shape[1],
                    model=model,
                    layer_ids=layers,
                    weights_dtype="float32" if w is not None else None,
                    meta={"source": "routing_log"},
                )
            writer.write_sequence(ids, domain=dom, weights=w)
    except BaseException:
        if writer is not None:
            writer.abort()  # the complete requests stay readable; the file is incomplete
        raise
    if writer is not None:
        writer.close()
    if writer is None:
        raise ValueError(f"{path}: the routing log has no records")
    return st
