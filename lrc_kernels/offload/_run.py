"""The replay: a trace run token by token through online caches over a real expert store.

Counting follows ``docs/metrics.md`` exactly, so the integer misses equal what the hit
curves predict: a token's look-ups are answered against the cache as it was before the
token, then its experts are served in stored order; every sequence starts with empty
caches; with ``warm_start`` a first access is free while fewer than C distinct experts
were first-accessed before it in the sequence (a *warm fill*). With ``prefill`` those warm
fills are copied before the sequence's decode starts (a runtime's prefill), untimed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

import lrc_kernels as lk

from .._validate import check_bool, check_choice, check_int, check_real
from ._caches import CACHES, HIT, WARM, make_cache
from ._store import SLOW_TIERS, TwoTierStore

__all__ = ["ReplayResult", "replay"]


@dataclass(repr=False, eq=False)
class ReplayResult:
    """What :func:`replay` counted and measured.

    Attributes
    ----------
    policy, level : str
        The online cache's policy; ``"layer"`` (one cache per layer) or ``"model"`` (one
        shared cache).
    sizes : ndarray of int64
        Cache slots of every cache (L at layer level, 1 at model level).
    accesses, hits, warm_fills, misses : ndarray of int64
        Per cache, summed over sequences: look-ups, look-ups served from the fast tier,
        warm fills (free first accesses while the cache fills; hits of the hit curves),
        and misses (``accesses - hits - warm_fills``: each copied once).
    bytes_moved : int
        ``misses * expert_bytes``: bytes copied for misses.
    fill_bytes : int
        Bytes copied for warm fills and for static placements loaded before a sequence
        (untimed with ``prefill``; a static placement is always loaded before).
    hit_rate : float
        Mean over caches of the mean over sequences of ``(hits + warm_fills) / accesses``,
        as :class:`~lrc_kernels.HitCurve` averages.
    tokens : int
        Decode steps timed (one token through every layer).
    seconds : float
        Wall time of those steps.
    token_seconds : ndarray of float64
        Wall time of every step.
    cpu_seconds : float
        CPU time of this thread over those steps (user + system): the replay's own work,
        unaffected by other processes competing for the cores (on a host fast tier the
        copies are this thread's work; a GPU's transfers are not in it).
    expert_bytes : int
    slow, device : str
        The tiers used.
    """

    policy: str
    level: str
    sizes: np.ndarray
    accesses: np.ndarray
    hits: np.ndarray
    warm_fills: np.ndarray
    misses: np.ndarray
    bytes_moved: int
    fill_bytes: int
    hit_rate: float
    tokens: int
    seconds: float
    token_seconds: np.ndarray
    cpu_seconds: float
    expert_bytes: int
    slow: str
    device: str

    @property
    def ms_per_token(self) -> float:
        return 1000.0 * self.seconds / max(self.tokens, 1)

    @property
    def cpu_ms_per_token(self) -> float:
        return 1000.0 * self.cpu_seconds / max(self.tokens, 1)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else float("inf")

    def __repr__(self) -> str:
        return (
            f"ReplayResult(policy={self.policy!r}, level={self.level!r}, "
            f"misses={int(self.misses.sum())}, bytes_moved={self.bytes_moved}, "
            f"ms_per_token={self.ms_per_token:.4f})"
        )


def _sizes(allocation: Any, level: str, L: int, E: int) -> np.ndarray:
    """Cache slots per cache from an int, a per-layer array or a BudgetPlan."""
    if hasattr(allocation, "allocation") and hasattr(allocation, "shared_size"):
        allocation = allocation.allocation if level == "layer" else allocation.shared_size
    n_ids = E if level == "layer" else L * E
    if level == "model":
        return np.array([check_int(allocation, "allocation", 0, n_ids)], np.int64)
    if isinstance(allocation, (int, np.integer)) and not isinstance(allocation, bool):
        return np.full(L, check_int(allocation, "allocation", 0, n_ids), np.int64)
    a = np.asarray(allocation)
    if a.shape != (L,) or a.dtype.kind not in "iu":
        raise ValueError(f"allocation must be an int or L = {L} integer cache sizes")
    if a.size and (a.min() < 0 or a.max() > E):
        raise ValueError(f"per-layer cache sizes must lie in [0, {E}]")
    return a.astype(np.int64)


def _streams(ids: np.ndarray, level: str, E: int) -> list[np.ndarray]:
    """Per cache, the (T, A) look-ups of one sequence (shared ids ``l * E + e``)."""
    if level == "layer":
        return [ids[:, layer, :].astype(np.int64) for layer in range(ids.shape[1])]
    L = ids.shape[1]
    return [(ids.astype(np.int64) + (np.arange(L) * E)[None, :, None]).reshape(ids.shape[0], -1)]


class _Unit:
    """One cache during one sequence: the online policy plus where each expert's bytes lie."""

    def __init__(self, cache: Any, base: int, row0: int, store: TwoTierStore) -> None:
        self.cache = cache
        self.C, self.base, self.row0, self.store = cache.capacity, base, row0, store
        self.phys: dict[int, int] = {}  # expert -> fast slot (local)
        self.free = list(range(self.C - 1, -1, -1))
        self.counts = np.zeros(4, np.int64)  # hits, warm fills, misses, fill copies

    def prefill(self, stream: list[list[int]]) -> None:
        for x in self.cache.prefill(stream):
            self._place(x)
            self.counts[3] += 1

    def _place(self, x: int) -> None:
        slot = self.free.pop()
        self.phys[x] = slot
        self.store.copy(self.row0 + x, self.base + slot)

    def step(self, token: list[int], warm: bool, verify: bool) -> None:
        """Serve one token: look-ups first, then the policy, then the byte copies."""
        cache = self.cache
        status = cache.lookup(token, warm)  # 1. look-ups against the cache before the token
        if verify:
            for x, st in zip(token, status, strict=True):
                if st == HIT and not self.store.holds(self.row0 + x, self.base + self.phys[x]):
                    raise AssertionError(f"fast slot of expert {x} holds other bytes")
        evicted = [y for y in map(cache.access, token) if y is not None]  # 2. the policy
        for y in evicted:  # 3. slots of experts that left
            if y not in cache and y in self.phys:
                self.free.append(self.phys.pop(y))
        for x, st in zip(token, status, strict=True):  # 4. bytes of the misses
            self.counts[st] += 1
            if st == HIT or x in self.phys:  # resident, or placed by the prefill
                continue
            if st == WARM:
                self.counts[3] += 1
            if x in cache:
                self._place(x)
            else:  # used once and not kept: through the staging slot
                self.store.copy(self.row0 + x, -1)


def _run_sequence(
    streams: list[np.ndarray], units: list[_Unit], warm: bool, prefill: bool, verify: bool
) -> tuple[list[float], float]:
    """Replay one sequence; the wall time of every decode step, and their CPU time."""
    store = units[0].store
    tokens = [s.tolist() for s in streams]
    if warm:
        for u, tok in zip(units, tokens, strict=True):
            if prefill or u.cache.static:  # a placement is loaded before the sequence
                u.prefill(tok)
        store.sync()
    times = []
    clock = time.perf_counter
    cpu = 0.0
    for t in range(streams[0].shape[0]):
        c0 = time.thread_time()
        t0 = clock()
        for u, tok in zip(units, tokens, strict=True):
            u.step(tok[t], warm, verify)
        store.sync()
        times.append(clock() - t0)
        cpu += time.thread_time() - c0
    return times, cpu


def _tally(units: list[_Unit], per_seq: list[np.ndarray]) -> None:
    """Per-sequence counts of each cache (rows: caches; columns: hits, warm, misses)."""
    per_seq.append(np.stack([u.counts for u in units]))


def replay(
    trace: Any,
    policy: str = "lru",
    allocation: Any = None,
    *,
    level: str = "layer",
    expert_bytes: int = 4096,
    slow: str = "mmap",
    fast: str = "auto",
    warm_start: bool = True,
    prefill: bool = True,
    verify: bool = False,
    directory: str | None = None,
    **policy_params: Any,
) -> ReplayResult:
    """Run a trace through a real two-tier expert store under an online cache policy.

    Parameters
    ----------
    trace : Trace or path
        The routing trace (a path is read with :func:`lrc_kernels.read_trace`).
    policy : {"lru", "lfu", "fifo", "static-oracle", "static-prefix", "pinned-lru"}
        Policy of the online caches (written independently of the metric kernels);
        ``prefix=`` and ``pinned=`` as for :func:`lrc_kernels.hit_curve`.
    allocation : int, sequence of int, or BudgetPlan
        Layer level: slots per layer (one int for all, or L sizes 0 .. E; a
        :class:`~lrc_kernels.plan.BudgetPlan` gives its optimal ``allocation``). Model
        level: the slots of the shared cache (a BudgetPlan gives ``shared_size``).
    level : {"layer", "model"}
        One cache per layer, or one shared by all layers.
    expert_bytes : int
        Bytes of one expert in the store (>= 4; every expert's bytes are distinct).
    slow : {"mmap", "host", "pinned"}
        The slow tier: a memory-mapped temporary file (in ``directory``), host memory, or
        pinned host memory (CUDA only).
    fast : str
        The fast tier's torch device: ``"auto"`` (CUDA when present, else ``"cpu"``).
    warm_start : bool
        As for :func:`lrc_kernels.hit_curve`; it must match the curves compared against.
    prefill : bool
        Copy each sequence's warm fills before its decode (untimed); False copies them
        when first accessed (timed).
    verify : bool
        Check on every hit that the fast slot holds that expert's bytes (slow; for tests).
    directory : str, optional
        Folder of the memory-mapped slow tier's temporary file (default: the system's).
    **policy_params
        ``prefix`` (static-prefix) or ``pinned`` (pinned-lru).

    Returns
    -------
    ReplayResult
    """
    check_choice(policy, "policy", tuple(CACHES))
    if "prefix" in policy_params:
        check_int(policy_params["prefix"], "prefix", 1)
    if "pinned" in policy_params:
        check_real(policy_params["pinned"], "pinned", 0.0, 1.0)
    make_cache(policy, 0, [], 0, **policy_params)  # a parameter of another policy: error
    check_choice(level, "level", ("layer", "model"))
    check_choice(slow, "slow", SLOW_TIERS)
    eb = check_int(expert_bytes, "expert_bytes", 4)
    warm = check_bool(warm_start, "warm_start")
    prefill, verify = check_bool(prefill, "prefill"), check_bool(verify, "verify")
    tr = lk.read_trace(trace) if isinstance(trace, str) or hasattr(trace, "__fspath__") else trace
    tr = lk.as_trace(tr)
    L, E = tr.num_layers, tr.num_experts
    if allocation is None:
        raise ValueError("replay needs allocation= (cache slots; e.g. plan.allocation)")
    sizes = _sizes(allocation, level, L, E)
    store = TwoTierStore(L * E, eb, int(sizes.sum()), slow=slow, fast=fast, directory=directory)
    try:
        per_seq, times = _replay_all(
            tr, policy, policy_params, level, sizes, store, warm, prefill, verify
        )
    finally:
        device = str(store.device)
        store.close()
    return _result(policy, level, sizes, per_seq, times, eb, slow, device)


def _replay_all(tr, policy, params, level, sizes, store, warm, prefill, verify):  # noqa: ANN001, ANN202
    """Every non-empty sequence, fresh caches each."""
    E = tr.num_experts
    universe = E if level == "layer" else E * tr.num_layers
    bases = np.concatenate([[0], np.cumsum(sizes)[:-1]]).tolist()
    per_seq: list[np.ndarray] = []
    times: list[float] = []
    cpu = 0.0
    for s in range(tr.num_sequences):
        ids = tr.sequence(s)
        if ids.shape[0] == 0:
            continue
        streams = _streams(ids, level, E)
        units = [
            _Unit(
                make_cache(policy, int(C), st.tolist(), universe, **params),
                b,
                (u * E if level == "layer" else 0),
                store,
            )
            for u, (C, b, st) in enumerate(zip(sizes.tolist(), bases, streams, strict=True))
        ]
        t, c = _run_sequence(streams, units, warm, prefill, verify)
        times += t
        cpu += c
        _tally(units, per_seq)
    return per_seq, (times, cpu)


def _result(policy, level, sizes, per_seq, times, eb, slow, device) -> ReplayResult:  # noqa: ANN001
    n = len(sizes)
    counts = np.stack(per_seq) if per_seq else np.zeros((0, n, 4), np.int64)
    acc_seq = counts[..., :3].sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = (counts[..., 0] + counts[..., 1]) / acc_seq
    tot = counts.sum(0)
    misses = tot[:, 2]
    return ReplayResult(
        policy=policy,
        level=level,
        sizes=sizes,
        accesses=tot[:, :3].sum(-1),
        hits=tot[:, 0],
        warm_fills=tot[:, 1],
        misses=misses,
        bytes_moved=int(misses.sum()) * eb,
        fill_bytes=int(tot[:, 3].sum()) * eb,
        hit_rate=float(rates.mean(0).mean()) if counts.shape[0] else float("nan"),
        tokens=len(times[0]),
        seconds=float(sum(times[0])),
        token_seconds=np.asarray(times[0]),
        cpu_seconds=float(times[1]),
        expert_bytes=eb,
        slow=slow,
        device=device,
    )
