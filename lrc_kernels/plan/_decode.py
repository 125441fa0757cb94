"""Decode speed from a hit rate: the link model, its options and its calibration.

Per decode step (``batch_size`` tokens), every MoE layer needs ``d`` distinct experts
(``d = k`` for one token); a share ``1 - hit_rate`` of them is not resident and crosses
the link (``expert_bytes`` at ``link_gbps``) or, with ``host_ms``, is computed on the host
when that is cheaper. The resident time ``base_ms`` (attention, resident experts, the
rest of the step) is added, less the part of the transfer hidden behind it (``overlap``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._validate import check_int, check_real

__all__ = ["predict_decode", "calibrate_decode", "experts_per_step"]


def experts_per_step(top_k: int, batch_size: int = 1, num_experts: int | None = None) -> float:
    """Expected distinct experts one layer needs for a step of ``batch_size`` tokens.

    One token: ``top_k``. A batch: ``E * (1 - (1 - k/E) ** B)``, the expectation for
    tokens routed independently and uniformly (an upper bound when routing is local;
    measure it on your trace where that matters). Needs ``num_experts`` for ``B > 1``.
    """
    k = check_int(top_k, "top_k", 1)
    B = check_int(batch_size, "batch_size", 1)
    if B == 1:
        return float(k)
    if num_experts is None:
        raise ValueError("batch_size > 1 needs num_experts (distinct experts per step)")
    E = check_int(num_experts, "num_experts", k)
    return E * (1.0 - (1.0 - k / E) ** B)


def _fetched(hit: Any, num_layers: int, d: float) -> np.ndarray:
    h = np.asarray(hit, dtype=np.float64)
    if np.any(~np.isfinite(h)) or np.any((h < 0) | (h > 1)):
        raise ValueError("hit_rate must lie in [0, 1]")
    return (1.0 - h) * num_layers * d


def calibrate_decode(
    points: Any,
    *,
    num_layers: int,
    top_k: int,
    expert_bytes: int,
    batch_size: int = 1,
    num_experts: int | None = None,
) -> tuple[float, float]:
    """Fit ``base_ms`` and the effective ``link_gbps`` to measured decode speeds.

    Parameters
    ----------
    points : sequence of (hit_rate, tokens_per_s)
        Two or more measurements of one deployment at different cache budgets (hit rates
        from :func:`plan_budget` or :func:`lrc_kernels.hit_curve` on a trace of the same
        workload). At least two distinct hit rates.
    num_layers, top_k, expert_bytes, batch_size, num_experts
        As for :func:`predict_decode`.

    Returns
    -------
    (base_ms, link_gbps) : tuple of float
        Least-squares fit of ``ms per step = base_ms + bytes / link`` (the serial model;
        the effective bandwidth absorbs whatever overlap the runtime achieves).
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or pts.shape[0] < 2:
        raise ValueError("calibrate needs two or more (hit_rate, tokens_per_s) pairs")
    if np.any(pts[:, 1] <= 0) or not np.all(np.isfinite(pts)):
        raise ValueError("calibration tokens_per_s must be positive and finite")
    L = check_int(num_layers, "num_layers", 1)
    eb = check_int(expert_bytes, "expert_bytes", 1)
    d = experts_per_step(top_k, batch_size, num_experts)
    x = _fetched(pts[:, 0], L, d) * eb  # bytes per step
    t = 1000.0 * batch_size / pts[:, 1]  # ms per step
    if np.ptp(x) == 0:
        raise ValueError("calibration needs at least two different hit rates")
    slope, base = np.polyfit(x, t, 1)
    if slope <= 0:
        raise ValueError(
            "the calibration points do not get slower as the hit rate falls (fitted "
            f"{slope * 1e6:.3g} ms per MB); check the measurements"
        )
    if base < 0:
        raise ValueError(
            f"the calibration fit gives a negative resident time ({base:.3g} ms per step); "
            "measure points further apart or more precisely"
        )
    return float(base), float(1.0 / (slope * 1e6))


def predict_decode(
    hit_rate: Any,
    *,
    num_layers: int,
    top_k: int,
    expert_bytes: int,
    link_gbps: float | None = None,
    base_ms: float | None = None,
    calibrate: Any = None,
    overlap: float = 0.0,
    host_ms: float | None = None,
    batch_size: int = 1,
    num_experts: int | None = None,
) -> Any:
    """Predicted decode tokens/s at a cache hit rate.

    Parameters
    ----------
    hit_rate : float or array_like
        Hit rate(s) in [0, 1] (mean over layers, as :func:`plan_budget` reports it).
    num_layers, top_k : int
        MoE layers and experts per token.
    expert_bytes : int
        Bytes of one routed expert (:func:`expert_bytes`).
    link_gbps : float, optional
        Host-to-fast-memory bandwidth in GB/s (1e9 bytes/s). Needed unless ``calibrate``.
    base_ms : float, optional
        Time per step with every expert resident, in ms. Default 0 (the link-only bound,
        an upper limit on tokens/s). Fitted by ``calibrate``.
    calibrate : sequence of (hit_rate, tokens_per_s), optional
        Measured points of a real deployment: fits ``base_ms`` and ``link_gbps``
        (:func:`calibrate_decode`) instead of taking them.
    overlap : float
        Share in [0, 1] of the resident time the transfers can hide behind (prefetching
        while computing). Default 0: serial, as a runtime that fetches on demand.
        1: ``step = max(base, transfer)``.
    host_ms : float, optional
        Time to compute one missed expert on the host instead of fetching it, in ms. Each
        missed expert then costs ``min(fetch, host_ms)`` (the runtime takes the cheaper
        path). Default None: every miss is fetched.
    batch_size : int
        Tokens per decode step (default 1); distinct experts per step from
        :func:`experts_per_step` (needs ``num_experts``).
    num_experts : int, optional
        Routed experts per layer, for ``batch_size > 1``.

    Returns
    -------
    float or ndarray
        Tokens per second, the shape of ``hit_rate`` (``inf`` where nothing is fetched and
        ``base_ms`` is 0).

    Notes
    -----
    ``ms per step = base_ms + T - overlap * min(base_ms, T)`` with
    ``T = (1 - hit_rate) * num_layers * d * cost``, ``cost = expert_bytes / link`` (or
    ``min`` with ``host_ms``); tokens/s ``= 1000 * batch_size / ms per step``. The hit rate
    per access is taken to hold per distinct expert of a batched step.
    """
    L = check_int(num_layers, "num_layers", 1)
    eb = check_int(expert_bytes, "expert_bytes", 1)
    B = check_int(batch_size, "batch_size", 1)
    f = check_real(overlap, "overlap", 0.0, 1.0)
    d = experts_per_step(top_k, B, num_experts)
    if calibrate is not None:
        if link_gbps is not None or base_ms is not None:
            raise ValueError("give calibrate= or link_gbps=/base_ms=, not both")
        base_ms, link_gbps = calibrate_decode(
            calibrate, num_layers=L, top_k=top_k, expert_bytes=eb, batch_size=B,
            num_experts=num_experts,
        )  # fmt: skip
    if link_gbps is None:
        raise ValueError("predict_decode needs link_gbps= (GB/s) or calibrate= points")
    bw = check_real(link_gbps, "link_gbps", 0.0, lo_open=True)
    base = 0.0 if base_ms is None else check_real(base_ms, "base_ms", 0.0)
    cost = eb / (bw * 1e6)  # ms per fetched expert
    if host_ms is not None:
        cost = min(cost, check_real(host_ms, "host_ms", 0.0))
    T = _fetched(hit_rate, L, d) * cost
    step = base + T - f * np.minimum(base, T)
    with np.errstate(divide="ignore"):
        out = 1000.0 * B / step  # inf: nothing to fetch and no resident time
    return float(out) if np.ndim(out) == 0 else out
