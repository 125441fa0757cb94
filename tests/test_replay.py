"""Replay (issue #17): the online caches over a real two-tier store count exactly the
misses the hit curves predict, at layer and shared level, warm and cold start."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from strategies import traces

import lrc_kernels as lk
from lrc_kernels import reference
from lrc_kernels._spec import POLICIES

pytest.importorskip("torch")


from lrc_kernels import _spec

ALL = getattr(_spec, "ALL_POLICIES", POLICIES)  # every policy hit_curve takes
# the parameters the replay and hit_curve are given for the parameterised policies
REPLAY_PARAMS = {"static-prefix": {"prefix": 3}, "pinned-lru": {"pinned": 0.5}}


def _hits(curve):
    """Integer hits per size and accesses, from whichever tables the HitCurve carries."""
    if getattr(curve, "hits", None) is not None:
        return np.asarray(curve.hits), np.asarray(curve.accesses)
    stat = np.asarray(curve.stat)
    return np.cumsum(stat[..., :-1], axis=-1), stat.sum(-1)


def _expected_misses(trace, policy, sizes, level, warm):
    """Integer misses per cache from the hit curves (sizes: per layer, or [shared])."""
    kw = REPLAY_PARAMS.get(policy, {})
    if policy in ALL:  # through the public API
        if level == "layer":
            hits, acc = _hits(lk.hit_curve(trace, policy, level=level, warm_start=warm, **kw))
            rows = zip(hits, acc, sizes, strict=True)
            return np.array([a - (h[c - 1] if c else 0) for h, a, c in rows])
        c = sizes[0]
        if c == 0:
            return np.array([trace.num_tokens * trace.top_k * trace.num_layers])
        extra = {"sizes": [c]} if policy not in POLICIES else {}
        curve = lk.hit_curve(trace, policy, level=level, warm_start=warm, **kw, **extra)
        hits, acc = _hits(curve)
        return np.array([acc - hits[0 if extra else c - 1]])
    if policy != "fifo":
        pytest.skip(f"hit_curve has no {policy!r} on this branch yet")
    # fifo before the public API takes it: the reference's table
    L = trace.num_layers
    offsets = np.asarray(trace.offsets)
    S = len(offsets) - 1
    acc = np.diff(offsets).sum() * trace.top_k * (L if level == "model" else 1)
    out = []
    for row, c in enumerate(sizes):
        if c == 0:
            out.append(acc)
            continue
        tab = reference.policy_hits_table(
            trace.experts, offsets, trace.num_experts, policy, [int(c)], level == "model",
            warm, np.zeros(S, np.int64), 1,
        )  # fmt: skip
        out.append(acc - tab[0, row if level == "layer" else 0, 0])
    return np.array(out)


@pytest.mark.parametrize(
    "policy", ["lru", "lfu", "fifo", "static-oracle", "static-prefix", "pinned-lru"]
)
@pytest.mark.parametrize("level", ["layer", "model"])
@settings(max_examples=15)
@given(
    trace=traces(max_sequences=3, max_len=16, max_layers=3, max_experts=8, max_k=4),
    warm=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_replay_counts_the_predicted_misses(policy, level, trace, warm, seed):
    assume(trace.num_tokens > 0)
    L, E = trace.num_layers, trace.num_experts
    rng = np.random.default_rng(seed)
    if level == "layer":
        sizes = rng.integers(0, E + 1, L)
        alloc = sizes
    else:
        sizes = np.array([rng.integers(0, L * E + 1)])
        alloc = int(sizes[0])
    want = _expected_misses(trace, policy, sizes.tolist(), level, warm)
    r = lk.replay(
        trace, policy, alloc, level=level, expert_bytes=8, slow="host", warm_start=warm,
        verify=True, **REPLAY_PARAMS.get(policy, {}),
    )  # fmt: skip
    np.testing.assert_array_equal(r.misses, want)
    assert r.bytes_moved == int(want.sum()) * 8
    assert r.accesses.sum() == trace.num_tokens * trace.top_k * L
    if not warm:
        assert r.warm_fills.sum() == 0
    assert r.tokens == trace.num_tokens


@pytest.mark.parametrize("policy", ["lru", "lfu"])
def test_replay_matches_the_plan(policy, tmp_path):
    tr = lk.synthetic_trace(3, [60, 41, 50], 4, 16, 4, stay=0.6, skew=1.0, seed=5)
    plan = lk.plan_budget(tr, 23, policy)
    lay = lk.replay(tr, policy, plan, expert_bytes=256, directory=str(tmp_path), verify=True)
    np.testing.assert_array_equal(lay.misses, plan.misses)
    np.testing.assert_array_equal(lay.sizes, plan.allocation)
    assert lay.hit_rate == pytest.approx(plan.hit_rate, abs=1e-12)
    assert lay.bytes_moved == int(plan.misses.sum()) * 256
    shared = lk.replay(tr, policy, plan, level="model", expert_bytes=256, slow="mmap")
    assert int(shared.misses[0]) == plan.shared_misses
    assert shared.hit_rate == pytest.approx(plan.shared_hit_rate, abs=1e-12)
    assert list(tmp_path.iterdir()) == []  # the memory-mapped slow tier is removed


def test_prefill_moves_warm_fills_out_of_the_timed_steps():
    tr = lk.synthetic_trace(2, 30, 2, 8, 2, stay=0.5, seed=2)
    a = lk.replay(tr, "lru", 3, expert_bytes=64, slow="host", prefill=True, verify=True)
    b = lk.replay(tr, "lru", 3, expert_bytes=64, slow="host", prefill=False, verify=True)
    for f in ("misses", "hits", "warm_fills"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    assert a.warm_fills.sum() == 2 * 2 * 3  # 2 sequences x 2 layers x 3 slots
    assert a.fill_bytes == 12 * 64 and a.token_seconds.shape == (60,)
    assert a.ms_per_token > 0 and a.tokens_per_s > 0 and "ReplayResult(" in repr(a)


def test_online_caches_by_hand():
    from lrc_kernels.offload import make_cache

    lru, fifo, lfu = make_cache("lru", 2), make_cache("fifo", 2), make_cache("lfu", 2)
    for c in (lru, fifo, lfu):
        assert [c.access(x) for x in (1, 2, 1)] == [None, None, None]
    assert lru.access(3) == 2 and fifo.access(3) == 1 and lfu.access(3) == 2
    assert lfu.access(2) == 3  # 2 comes back with 2 accesses; 3 has 1, 1 has 2
    zero = make_cache("lru", 0)
    assert zero.access(5) is None and 5 not in zero and len(zero) == 0


def test_replay_errors():
    tr = lk.synthetic_trace(1, 5, 2, 4, 2, seed=0)
    with pytest.raises(ValueError, match="needs allocation"):
        lk.replay(tr, "lru")
    with pytest.raises(ValueError, match="unknown policy 'belady'"):
        lk.replay(tr, "belady", 2)
    with pytest.raises(ValueError, match=r"per-layer cache sizes must lie in \[0, 4\]"):
        lk.replay(tr, "lru", [1, 5])
    with pytest.raises(ValueError, match="L = 2 integer cache sizes"):
        lk.replay(tr, "lru", [1, 2, 3])
    with pytest.raises(ValueError, match="allocation must be <= 8"):
        lk.replay(tr, "lru", 9, level="model")
    with pytest.raises(ValueError, match="expert_bytes must be >= 4"):
        lk.replay(tr, "lru", 2, expert_bytes=2)
    with pytest.raises(ValueError, match="unknown slow"):
        lk.replay(tr, "lru", 2, slow="disk")


def test_copy_bandwidth_is_measured():
    gbps = lk.measure_copy_bandwidth(1 << 16, copies=32, rows=8, slots=4, slow="host")
    assert gbps > 0


def test_store_restores_torch_threads_and_refuses_pinned_without_cuda():
    import torch

    before = torch.get_num_threads()
    lk.replay(lk.synthetic_trace(1, 5, 1, 4, 2, seed=0), "lru", 2, expert_bytes=8, slow="host")
    assert torch.get_num_threads() == before
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="needs CUDA"):
            lk.replay(lk.synthetic_trace(1, 5, 1, 4, 2, seed=0), "lru", 2, slow="pinned")
        assert torch.get_num_threads() == before


# SPEC's worked example (one sequence, one layer, E = 4, k = 2): hits at C = 1..4 of the
# static placements, by hand (docs/metrics.md, "Frequency and static policies")
SPEC_TRACE = [[0, 1], [0, 1], [1, 2], [0, 1], [2, 3], [2, 3], [0, 2], [0, 1]]
STATIC_BY_HAND = {
    ("static-oracle", None, True): [5, 10, 14, 16],
    ("static-oracle", None, False): [4, 8, 11, 12],
    ("static-prefix", 2, True): [5, 10, 14, 16],
    ("static-prefix", 3, True): [5, 10, 14, 16],
    ("pinned-lru", 0.5, True): [4, 9, 14, 16],
    ("pinned-lru", 0.5, False): [3, 7, 11, 12],
}


@pytest.mark.parametrize("key", list(STATIC_BY_HAND))
def test_static_placements_by_hand(key):
    policy, param, warm = key
    tr = lk.Trace(np.array(SPEC_TRACE).reshape(8, 1, 2), num_experts=4)
    kw = {} if param is None else {"prefix" if policy == "static-prefix" else "pinned": param}
    hits = []
    for C in (1, 2, 3, 4):
        r = lk.replay(tr, policy, C, expert_bytes=8, slow="host", warm_start=warm, verify=True,
                      **kw)  # fmt: skip
        assert r.accesses[0] == 16
        hits.append(16 - int(r.misses[0]))
    assert hits == STATIC_BY_HAND[key]


@pytest.mark.parametrize("level", ["layer", "model"])
@settings(max_examples=10)
@given(
    trace=traces(max_sequences=3, max_len=12, max_layers=2, max_experts=6, max_k=3),
    warm=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_static_placements_equal_their_definitions(level, trace, warm, seed):
    """static-oracle from the sequences' counts alone (the sum of the C largest counts,
    minus one per used member when cold); pinned-lru at share 0 is LRU, at 1 static-oracle;
    static-prefix over the whole sequence is static-oracle."""
    assume(trace.num_tokens > 0)
    L, E = trace.num_layers, trace.num_experts
    C = int(np.random.default_rng(seed).integers(1, (E if level == "layer" else L * E) + 1))
    kw = dict(level=level, expert_bytes=8, slow="host", warm_start=warm)
    oracle = lk.replay(trace, "static-oracle", C, verify=True, **kw)
    want = []
    off = np.asarray(trace.offsets)
    x = np.asarray(trace.experts, np.int64)
    units = range(L) if level == "layer" else [None]
    for u in units:
        hits = 0
        for s in range(len(off) - 1):
            ids = x[off[s] : off[s + 1]]
            ids = ids[:, u] if u is not None else ids + (np.arange(L) * E)[None, :, None]
            c = np.sort(np.bincount(ids.ravel(), minlength=E * L))[::-1][:C]
            hits += int(c.sum()) if warm else int(np.maximum(c - 1, 0).sum())
        want.append(oracle.accesses[len(want)] - hits)
    np.testing.assert_array_equal(oracle.misses, want)
    np.testing.assert_array_equal(
        lk.replay(trace, "pinned-lru", C, pinned=1.0, **kw).misses, oracle.misses
    )
    np.testing.assert_array_equal(
        lk.replay(trace, "static-prefix", C, prefix=10**6, **kw).misses, oracle.misses
    )
    np.testing.assert_array_equal(
        lk.replay(trace, "pinned-lru", C, pinned=0.0, verify=True, **kw).misses,
        lk.replay(trace, "lru", C, **kw).misses,
    )


def test_policy_parameters_are_checked():
    tr = lk.synthetic_trace(1, 5, 1, 4, 2, seed=0)
    with pytest.raises(ValueError, match="takes no parameter 'pinned'"):
        lk.replay(tr, "lru", 2, pinned=0.5)
    with pytest.raises(ValueError, match=r"pinned must be in \[0, 1\]"):
        lk.replay(tr, "pinned-lru", 2, pinned=1.5)
    with pytest.raises(ValueError, match="prefix must be >= 1"):
        lk.replay(tr, "static-prefix", 2, prefix=0)
