"""Concatenating traces: the one place that joins sequences of several pieces into a Trace.

The reader joins the decoded pieces of a record batch stream (:func:`join_pieces`); ``lrc
convert`` joins whole input traces (:func:`concat_traces`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .._trace import Trace


def join_pieces(pieces: Sequence[Mapping[str, Any]], *, num_experts: int, meta: Any) -> Trace:
    """One :class:`~lrc_kernels.Trace` of consecutive, already checked pieces.

    Each piece maps ``ids`` (tokens, L, k), ``off`` (its sequence offsets from 0),
    ``domains`` and ``weights`` (None or arrays; the first piece decides whether the result
    has them, so pieces must agree).
    """
    if len(pieces) == 1:
        p = pieces[0]
        ids, off, doms, w = p["ids"], p["off"], p["domains"], p["weights"]
    else:
        ids = np.concatenate([p["ids"] for p in pieces])
        lens = np.concatenate([np.diff(p["off"]) for p in pieces])
        off = np.zeros(lens.shape[0] + 1, np.int64)
        np.cumsum(lens, out=off[1:])
        doms = None
        if pieces[0]["domains"] is not None:
            doms = np.concatenate([p["domains"] for p in pieces])
        w = None
        if pieces[0]["weights"] is not None:
            w = np.concatenate([p["weights"] for p in pieces])
    return Trace(
        ids,
        np.ascontiguousarray(off),
        num_experts=num_experts,
        domains=doms,
        weights=w,
        meta=meta,
        _validated=True,
    )


def concat_traces(traces: Sequence[Trace]) -> Trace:
    """The sequences of several traces, in order, as one trace (meta of the first).

    The traces must agree on ``(num_experts, num_layers, top_k)``, and either all or none
    have domain labels; gate weights are kept when every trace has them.

    Raises
    ------
    ValueError
        The traces disagree on their shape, or only some have domain labels.
    """
    traces = list(traces)
    if not traces:
        raise ValueError("concat_traces needs at least one trace")
    if len(traces) == 1:
        return traces[0]
    if len({(t.num_experts, t.num_layers, t.top_k) for t in traces}) > 1:
        raise ValueError(
            "traces disagree on their shape (num_experts, num_layers, top_k): "
            + "; ".join(f"({t.num_experts}, {t.num_layers}, {t.top_k})" for t in traces)
        )
    labeled = [t.domains is not None for t in traces]
    if any(labeled) and not all(labeled):
        raise ValueError("some traces have domain labels and others not")
    weights = all(t.weights is not None for t in traces)
    pieces = [
        {
            "ids": t.experts,
            "off": t.offsets,
            "domains": t.domains,
            "weights": t.weights if weights else None,
        }
        for t in traces
    ]
    return join_pieces(pieces, num_experts=traces[0].num_experts, meta=traces[0].meta)
