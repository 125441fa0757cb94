"""Partial results: any sharding of a trace, merged in any grouping, finishes bit for bit
into the one-pass result (SRP at every level, by domain, bootstrap; every curve)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import traces

import lrc_kernels as lk
from lrc_kernels import partial as lp
from lrc_kernels.synthetic import synthetic_trace

SRP_KW = [
    dict(level="model"),
    dict(level="layer", by_domain=True),
    dict(level="expert"),
    dict(level="model", bootstrap=25, seed=3),
    dict(level="layer", bootstrap=25, by_domain=True),
    dict(level="expert", bootstrap=10, by_domain=True, confidence=0.8),
]
CURVE_KW = [
    dict(policy="lru"),
    dict(policy="lfu", level="model"),
    dict(policy="belady", by_domain=True),
    dict(policy="sch", m=3, by_domain=True),
    dict(policy="sch", m=[1, 4], level="model", warm_start=False),
]


def assert_same_srp(a, b):
    for f in ("value", "threshold", "ratio", "windows"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)
    for ha, hb in zip(a.histograms, b.histograms, strict=True):
        np.testing.assert_array_equal(ha, hb)
    np.testing.assert_array_equal(a.activation_ratio, b.activation_ratio)
    assert a.domains == b.domains and a.m == b.m and a.level == b.level
    assert (a.ci is None) == (b.ci is None)
    if a.ci is not None:
        np.testing.assert_array_equal(a.ci[0], b.ci[0])
        np.testing.assert_array_equal(a.ci[1], b.ci[1])


def assert_same_curve(a, b):
    np.testing.assert_array_equal(a.rates, b.rates)
    np.testing.assert_array_equal(a.stat, b.stat)
    np.testing.assert_array_equal(a.sequences, b.sequences)
    assert a.domains == b.domains and a.m == b.m and a.policy == b.policy


def _shards(tr, cuts):
    bounds = [0, *sorted(cuts), tr.num_sequences]
    return [
        tr.select(sequences=range(a, b))
        for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        if b > a
    ]


def _merge_tree(parts, split):
    """Merge consecutive partials in a grouping chosen by ``split`` (associativity)."""
    if len(parts) == 1:
        return parts[0]
    i = 1 + split % (len(parts) - 1)
    return lp.merge(_merge_tree(parts[:i], split // 2), _merge_tree(parts[i:], split // 3))


@settings(max_examples=25)
@given(
    tr=traces(max_sequences=7, max_len=20, max_experts=40, domains=True),
    cuts=st.lists(st.integers(1, 6), max_size=4),
    split=st.integers(0, 100),
    kw=st.sampled_from(SRP_KW),
    m=st.sampled_from([1, 3, [2, 5]]),
    wire=st.booleans(),
)
def test_srp_of_any_sharding(tr, cuts, split, kw, m, wire):
    cuts = [c for c in cuts if c < tr.num_sequences]
    parts = [lp.srp_partial(s, m, **kw) for s in _shards(tr, cuts)]
    if wire:
        parts = [lp.from_bytes(p.to_bytes()) for p in parts]
    assert_same_srp(lk.srp(tr, m, **kw), lp.finish(_merge_tree(parts, split)))


@settings(max_examples=25)
@given(
    tr=traces(max_sequences=7, max_len=20, max_experts=40, domains=True),
    cuts=st.lists(st.integers(1, 6), max_size=4),
    split=st.integers(0, 100),
    kw=st.sampled_from(CURVE_KW),
    wire=st.booleans(),
)
def test_curves_of_any_sharding(tr, cuts, split, kw, wire):
    cuts = [c for c in cuts if c < tr.num_sequences]
    kw = dict(kw)
    policy, m = kw.pop("policy"), kw.pop("m", None)
    parts = [lp.curve_partial(s, policy, m, **kw) for s in _shards(tr, cuts)]
    if wire:
        parts = [lp.from_bytes(p.to_bytes()) for p in parts]
    merged = _merge_tree(parts, split)
    assert merged.num_tokens == tr.num_tokens
    assert merged.num_sequences == int((tr.lengths > 0).sum())
    assert_same_curve(lk.hit_curve(tr, policy, m, **kw), lp.finish(merged))


# per-size policies (one simulation per cache size), with their parameters and a grid
SIZE_KW = [
    dict(policy="fifo", by_domain=True),
    dict(policy="lfu-decay", decay=0.5, sizes="small"),
    dict(policy="static-prefix", prefix=3, by_domain=True, warm_start=False),
    dict(policy="arc", level="model", rho=[1]),
    dict(policy="pinned-lru", level="model", sizes="small", pinned=0.4, by_domain=True),
    dict(policy="lfu-window", level="model", window=2, rho=[1], warm_start=False),
]


def assert_same_size_curve(a, b):
    for f in ("rates", "sizes", "hits", "accesses", "sequences"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)
    assert b.stat is None and a.params == b.params and a.domains == b.domains
    assert (a.policy, a.level, a.warm_start) == (b.policy, b.level, b.warm_start)


@settings(max_examples=20)
@given(
    tr=traces(max_sequences=7, max_len=20, max_experts=40, domains=True),
    cuts=st.lists(st.integers(1, 6), max_size=4),
    split=st.integers(0, 100),
    kw=st.sampled_from(SIZE_KW),
    wire=st.booleans(),
)
def test_size_policy_curves_of_any_sharding(tr, cuts, split, kw, wire):
    """Per-size policies shard too: hits and sequence counts per class, sizes/rho and the
    policy's parameter carried in the partial's parameters."""
    cuts = [c for c in cuts if c < tr.num_sequences]
    kw = dict(kw)
    policy = kw.pop("policy")
    if kw.get("sizes") == "small":  # 1, 2 and the largest size, within the trace's range
        n = tr.num_experts * (tr.num_layers if kw.get("level") == "model" else 1)
        kw["sizes"] = sorted({1, min(2, n), n})
    parts = [lp.curve_partial(s, policy, **kw) for s in _shards(tr, cuts)]
    if wire:
        parts = [lp.from_bytes(p.to_bytes()) for p in parts]
    merged = _merge_tree(parts, split)
    assert merged.num_tokens == tr.num_tokens
    assert merged.num_sequences == int((tr.lengths > 0).sum())
    assert_same_size_curve(lk.hit_curve(tr, policy, **kw), lp.finish(merged))


def test_stack_curve_partials_keep_the_grid():
    """sizes=/rho= of a stack policy: the full tables are kept, finish picks the sizes."""
    tr = synthetic_trace(6, [20, 9, 31, 4, 16, 11], 2, 12, 2, stay=0.5, seed=8)
    for kw in (dict(rho=[2, 1, 2]), dict(sizes=[12, 3], level="layer")):
        parts = [lp.curve_partial(s, "sch", 4, **kw) for s in _shards(tr, [2, 5])]
        got = lp.finish(lp.merge(parts))
        want = lk.hit_curve(tr, "sch", 4, **kw)
        np.testing.assert_array_equal(want.rates, got.rates)
        np.testing.assert_array_equal(want.sizes, got.sizes)
    assert parts[0].params["sizes"] == [3, 12]
    with pytest.raises(ValueError, match="sizes must be <= 12"):
        lp.curve_partial(tr, "lru", sizes=[13])


@pytest.fixture(scope="module")
def labelled():
    """Two domains, each a trace of its own; the study's view: shards labelled afterwards."""
    a = synthetic_trace(5, [30, 7, 0, 44, 19], 2, 12, 2, stay=0.7, seed=4)
    b = synthetic_trace(4, [25, 60, 3, 30], 2, 12, 2, stay=0.3, seed=5)
    both = lk.Trace(
        np.concatenate([a.experts, b.experts]),
        np.concatenate([a.offsets, a.offsets[-1] + b.offsets[1:]]),
        num_experts=12,
        domains=["web"] * 5 + ["code"] * 4,
    )
    return a, b, both


def test_with_domain_and_pooled(labelled):
    a, b, both = labelled
    kw = dict(level="layer", bootstrap=20)
    pa = lp.srp_partial(a.select(sequences=range(3)), [2, 8], **kw)
    pa2 = lp.srp_partial(a.select(sequences=range(3, 5)), [2, 8], **kw)
    pb = lp.srp_partial(b, [2, 8], **kw)
    merged = lp.merge([pa.with_domain("web"), pa2.with_domain("web"), pb.with_domain("code")])
    assert merged.domains == ["web", "code"]
    assert_same_srp(lk.srp(both, [2, 8], by_domain=True, **kw), lp.finish(merged))
    assert_same_srp(lk.srp(both, [2, 8], **kw), lp.finish(merged.pooled()))
    for pol, m in (("lru", None), ("sch", 4)):
        ca, cb = lp.curve_partial(a, pol, m), lp.curve_partial(b, pol, m)
        cm = lp.merge(ca.with_domain("web"), cb.with_domain("code"))
        assert_same_curve(lk.hit_curve(both, pol, m, by_domain=True), lp.finish(cm))
        assert_same_curve(lk.hit_curve(both, pol, m), lp.finish(cm.pooled()))
    with pytest.raises(ValueError, match="already has domain labels"):
        merged.with_domain("x")
    ca, cb = (lp.curve_partial(t, "clock", level="model", rho=[1, 2]) for t in (a, b))
    cm = lp.merge(ca.with_domain("web"), cb.with_domain("code"))
    kw = dict(level="model", rho=[1, 2])
    assert_same_size_curve(lk.hit_curve(both, "clock", by_domain=True, **kw), lp.finish(cm))
    assert_same_size_curve(lk.hit_curve(both, "clock", **kw), lp.finish(cm.pooled()))


def test_serialisation_is_compact_and_exact(labelled, tmp_path):
    a, _, _ = labelled
    p = lp.srp_partial(a, [4, 16], level="expert", bootstrap=5)
    raw = p.to_bytes()
    assert len(raw) < sum(v.nbytes for v in p.arrays.values()) / 4  # narrow + zlib
    q = lp.from_bytes(raw)
    assert q.params == p.params and q.shape == p.shape and q.domains == p.domains
    for k, v in p.arrays.items():
        assert q.arrays[k].dtype == v.dtype
        np.testing.assert_array_equal(q.arrays[k], v)
    p.save(tmp_path / "p.npz")
    assert_same_srp(lp.finish(p), lp.finish(lp.load(tmp_path / "p.npz")))
    assert not list(tmp_path.glob("*.tmp"))
    with pytest.raises(ValueError, match="not a serialised lrc_kernels partial"):
        lp.from_bytes(raw[: len(raw) // 2])


def test_empty_shards(labelled):
    _, _, a = labelled
    empty = a.select(sequences=[])
    for kw in (dict(), dict(by_domain=True), dict(bootstrap=4, level="layer")):
        e = lp.srp_partial(empty, [3, 4], **kw)
        assert_same_srp(lk.srp(empty, [3, 4], **kw), lp.finish(e))
        whole = lp.merge(e, lp.srp_partial(a, [3, 4], **kw), e)
        assert_same_srp(lk.srp(a, [3, 4], **kw), lp.finish(whole))
    c = lp.curve_partial(empty, "lru")
    assert_same_curve(lk.hit_curve(empty, "lru"), lp.finish(c))
    assert_same_curve(lk.hit_curve(a, "lru"), lp.finish(lp.merge(c, lp.curve_partial(a, "lru"))))


def test_bad_merges_are_refused(labelled):
    a, b, _ = labelled
    p = lp.srp_partial(a, 4)
    with pytest.raises(ValueError, match="only partials of one computation merge"):
        lp.merge(p, lp.srp_partial(b, 5))
    with pytest.raises(ValueError, match="only partials of one computation merge"):
        lp.merge(p, lp.curve_partial(b, "lru"))
    other = synthetic_trace(2, 10, 3, 12, 2, seed=1)
    with pytest.raises(ValueError, match="disagree on the trace shape"):
        lp.merge(p, lp.srp_partial(other, 4))
    f = lp.curve_partial(a, "fifo", level="model", sizes=[1, 2])
    with pytest.raises(ValueError, match=r"\(they differ in sizes\)"):
        lp.merge(f, lp.curve_partial(b, "fifo", level="model", sizes=[1, 3]))
    with pytest.raises(ValueError, match=r"\(they differ in sizes, rho\)"):
        lp.merge(f, lp.curve_partial(b, "fifo", level="model", rho=[1]))
    w = lp.curve_partial(a, "lfu-window", window=4)
    with pytest.raises(ValueError, match=r"\(they differ in window\)"):
        lp.merge(w, lp.curve_partial(b, "lfu-window"))
    with pytest.raises(ValueError, match=r"\(they differ in policy, window\)"):
        lp.merge(w, lp.curve_partial(b, "lfu"))
    with pytest.raises(TypeError, match="item 1 is int"):
        lp.merge(p, 3)
    with pytest.raises(ValueError, match="at least one partial"):
        lp.merge([])
    with pytest.raises(ValueError, match="holds no sequences"):
        lp.finish(lp.Partial("srp", p.params, None, [], {}))
    with pytest.raises(ValueError, match="kind must be one of"):
        lp.compute(a, "mystery", {})
