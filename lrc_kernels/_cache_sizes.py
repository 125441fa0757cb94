"""Cache-size grids and the per-size policies of :func:`lrc_kernels.hit_curve`.

:func:`lrc_kernels.hit_curve` takes ``sizes=`` or ``rho=`` for every policy, and the
parameters of the per-size policies (``decay``, ``window``, ``prefix``, ``pinned``). This
module checks them, runs a per-size policy over the stream (the backend's
``policy_hits_table``, summed per (domain, length) class of sequences), and builds the
:class:`HitCurve`; for a stack policy it only picks the requested sizes of the full curve.
Definitions: ``docs/metrics.md``, "Policies without the stack property".
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from . import _reduce
from . import _validate as _v
from ._results import HitCurve, cache_size_for
from ._spec import POLICY_PARAMS, SIZE_POLICIES
from ._stream import GroupSum, Stream
from ._trace import LabelCodes

__all__ = [
    "check_params",
    "SizeRequest",
    "accumulate",
    "size_policy_curve",
    "curve_from_tables",
    "select_sizes",
]

# what each parameter is, for messages
_PARAM_WHAT = {
    "decay": "the factor every LFU count is multiplied by after each token",
    "window": "the tokens an LFU count covers, an integer >= 1",
    "prefix": "the calibration prefix in tokens, an integer >= 1",
    "pinned": "the share of the cache pinned to the hottest experts",
}


def check_params(policy: str, given: dict[str, Any]) -> dict[str, Any]:
    """``{keyword: value}`` of the policy's parameter (its default where not given); a
    parameter given to another policy is a ``ValueError``."""
    own = POLICY_PARAMS.get(policy, (None, None))[0]
    for name, value in given.items():
        if value is not None and name != own:
            owner = next(p for p, (kw, _) in POLICY_PARAMS.items() if kw == name)
            raise ValueError(
                f"{name}= applies only to policy={owner!r}, not {policy!r}; drop {name}="
            )
    if own is None:
        return {}
    default = POLICY_PARAMS[policy][1]
    value = given.get(own)
    value = default if value is None else value
    what = _PARAM_WHAT[own]
    if own == "decay":
        value = _v.check_real(value, own, 0.0, 1.0, lo_open=True, hi_open=True, what=what)
    elif own == "pinned":
        value = _v.check_real(value, own, 0.0, 1.0, lo_open=False, hi_open=False, what=what)
    else:
        value = _v.check_int(value, own, 1, _v.MAX_WINDOW, what=what)
    return {own: value}


class SizeRequest:
    """The cache sizes asked for (``sizes=`` or ``rho=``), checked against the trace's
    shape once it is known (:meth:`resolve`)."""

    def __init__(self, policy: str, level: str, sizes: Any, rho: Any) -> None:
        if sizes is not None and rho is not None:
            raise ValueError("give sizes= (cache sizes) or rho= (cache ratios), not both")
        self.sizes = None if sizes is None else _v.check_sizes(sizes)
        self.rho = None
        if rho is not None:
            r = np.atleast_1d(np.asarray(rho))
            if r.size == 0:
                raise ValueError("rho is empty; give at least one cache ratio")
            if r.dtype == object or r.dtype == np.bool_ or not np.issubdtype(r.dtype, np.number):
                raise TypeError(f"rho must hold numbers (cache ratios), got {_v.plain(rho)}")
            self.rho = r.ravel().astype(np.float64)
        if policy in SIZE_POLICIES and level == "model" and sizes is None and rho is None:
            raise ValueError(
                f"policy={policy!r} has no stack property: each cache size is one simulation, "
                "so at level='model' (one cache over all L*E experts) give the sizes to "
                "simulate: sizes=[...] or rho=[...], e.g. a 32-size grid "
                "rho=[0.5 * i for i in range(1, 33)] (C = rho * L * k)"
            )

    def as_params(self) -> dict[str, Any]:
        """The request as JSON-able parameters (``sizes`` or ``rho``, sorted, repeats
        dropped; nothing when every size is asked for): what a partial carries."""
        if self.sizes is not None:
            return {"sizes": [int(c) for c in self.sizes]}
        if self.rho is not None:
            return {"rho": sorted({float(r) for r in self.rho})}
        return {}

    def resolve(self, num_layers: int, num_experts: int, top_k: int, level: str) -> np.ndarray:
        """The sizes as a sorted int64 array (all ``1 .. N`` when none were asked for)."""
        model = level == "model"
        n = num_experts * (num_layers if model else 1)
        per_unit = top_k * (num_layers if model else 1)
        if self.rho is not None:
            return np.unique(cache_size_for(self.rho, per_unit, n))
        if self.sizes is None:
            return np.arange(1, n + 1, dtype=np.int64)
        if int(self.sizes[-1]) > n:
            ids = "L*E" if model else "E"
            raise ValueError(
                f"sizes must be <= {n}, the experts one {level}-level cache can hold "
                f"({ids}), got {int(self.sizes[-1])}"
            )
        return self.sizes


def _check_memory(level: str, n_ids: int, Lo: int, n_sizes: int) -> None:
    threads = os.cpu_count() or 1
    _v.check_memory(
        (8 * n_ids * threads + 2 * Lo * n_sizes) * 8,
        f"the {level}-level per-size simulations ({n_ids} ids x 8 int64 per thread, and "
        f"{Lo} x {n_sizes} hit counts)",
        "use level='layer', fewer sizes, or check num_experts",
    )


def accumulate(
    stream: Stream,
    policy: str,
    request: SizeRequest,
    level: str,
    warm_start: bool,
    params: dict[str, Any],
) -> tuple[GroupSum, GroupSum, LabelCodes, np.ndarray | None]:
    """Run a per-size policy over ``stream``: per (domain, length) class of sequences, the
    hits ``(class, Lo, sizes)`` and the sequence count; the classes; the sizes (None for a
    source of no batch)."""
    model = level == "model"
    param = next(iter(params.values()), None)
    lens = LabelCodes()  # sequences are averaged per (domain, length) class: exact sums
    hits, counts = GroupSum(), GroupSum()
    sizes: np.ndarray | None = None
    for step in stream:
        b = step.batch
        if sizes is None:
            sizes = request.resolve(b.num_layers, b.num_experts, b.top_k, level)
            n_ids = b.num_experts * (b.num_layers if model else 1)
            _check_memory(level, n_ids, 1 if model else b.num_layers, sizes.size)
        group = lens.codes(zip(step.domains.tolist(), b.lengths.tolist(), strict=True))
        G = len(lens.index)
        hits.add(
            step.backend.policy_hits_table(
                step.ids,
                b.offsets,
                b.num_experts,
                policy,
                sizes,
                model,
                warm_start,
                group,
                G,
                param,
            )  # fmt: skip
        )
        counts.add(np.bincount(group, minlength=G).astype(np.int64))
    return hits, counts, lens, sizes


def size_policy_curve(
    stream: Stream,
    policy: str,
    request: SizeRequest,
    level: str,
    warm_start: bool,
    params: dict[str, Any],
) -> HitCurve:
    """Run a per-size policy over ``stream`` and return its :class:`HitCurve`."""
    hits, counts, lens, _ = accumulate(stream, policy, request, level, warm_start, params)
    return curve_from_tables(
        stream, hits.table, counts.table, lens.names, policy, request, level, warm_start, params
    )


def curve_from_tables(
    view: Any,
    hits: np.ndarray | None,
    counts: np.ndarray | None,
    keys: list[tuple[int, int]],
    policy: str,
    request: SizeRequest,
    level: str,
    warm_start: bool,
    params: dict[str, Any],
) -> HitCurve:
    """The :class:`HitCurve` of a per-size policy from its per-class tables (of
    :func:`accumulate`, or of merged partials).

    ``view`` has the trace's ``first`` batch (its shape), ``by_domain``, ``domains`` (the
    domain codes) and ``domain_names``; ``keys[g]`` is class ``g``'s (domain, length).
    """
    model = level == "model"
    first = view.first
    L, E, k = first.num_layers, first.num_experts, first.top_k
    sizes = request.resolve(L, E, k, level)
    D = len(view.domains.index) if view.by_domain else 1
    Lo = 1 if model else L
    tab = hits if hits is not None else np.zeros((0, Lo, sizes.size), np.int64)
    cnt = counts if counts is not None else np.zeros(0, np.int64)
    rates, hit_sum, acc, nseq = _reduce.curves_from_hits(tab, cnt, keys, k * (L if model else 1), D)
    if model:
        rates, hit_sum, acc = rates[:, 0], hit_sum[:, 0], acc[:, 0]
    one = not view.by_domain
    return HitCurve(
        rates=rates[0] if one else rates,
        policy=policy,
        m=None,
        level=level,
        warm_start=warm_start,
        num_experts=E,
        top_k=k,
        num_layers=L,
        domains=view.domain_names,
        sequences=nseq[0] if one else nseq,
        stat=None,
        sizes=sizes,
        hits=hit_sum[0] if one else hit_sum,
        accesses=acc[0] if one else acc,
        params=params,
    )


def select_sizes(curve: HitCurve, request: SizeRequest) -> HitCurve:
    """A stack policy's full curve restricted to the requested sizes (unchanged if none)."""
    if request.sizes is None and request.rho is None:
        return curve
    sizes = request.resolve(curve.num_layers, curve.num_experts, curve.top_k, curve.level)
    return dataclasses.replace(
        curve,
        rates=np.asarray(curve.rates)[..., sizes - 1],
        sizes=sizes,
        hits=None,
        accesses=None,
    )
