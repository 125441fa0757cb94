"""Property tests: every backend equals the reference on random ragged traces, plus
invariants that follow from the definitions in docs/metrics.md."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from conftest import backends_under_test
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import segment_lengths, traces

import lrc_kernels as lk
from lrc_kernels import _backends
from lrc_kernels import reference as ref
from lrc_kernels.cpu import _srp, _stack

FAST = [b for b in backends_under_test() if b != "reference"]
POL = ["lru", "lfu", "belady", "sch"]


def _tables_equal(a, b):
    assert a.dtype == np.int64 and b.dtype == np.int64
    assert a.shape == b.shape
    assert np.array_equal(a, b)


@given(
    tr=traces(),
    ms=st.lists(segment_lengths(), min_size=1, max_size=3),
    per_expert=st.booleans(),
    n_groups=st.integers(1, 3),
    data=st.data(),
)
def test_window_tables_match_reference(tr, ms, per_expert, n_groups, data):
    group = np.asarray(
        data.draw(
            st.lists(
                st.integers(0, n_groups - 1), min_size=tr.num_sequences, max_size=tr.num_sequences
            )
        ),
        np.int64,
    )
    want = ref.window_hist_table(
        tr.experts, tr.offsets, tr.num_experts, ms, group, n_groups, per_expert
    )
    got = _srp.window_hist_table(
        tr.experts, tr.offsets, tr.num_experts, ms, group, n_groups, per_expert
    )
    _tables_equal(got, want)


@given(
    tr=traces(max_experts=40),
    ms=st.lists(segment_lengths(30), min_size=1, max_size=3),
    n_groups=st.integers(1, 3),
    data=st.data(),
)
def test_window_activation_sums_match_reference(tr, ms, n_groups, data):
    """The direct activation sums equal sum_c c * H[e][c] of the reference histograms."""
    group = np.asarray(
        data.draw(
            st.lists(
                st.integers(0, n_groups - 1), min_size=tr.num_sequences, max_size=tr.num_sequences
            )
        ),
        np.int64,
    )
    hist = ref.window_hist_table(tr.experts, tr.offsets, tr.num_experts, ms, group, n_groups, True)
    want = np.zeros(hist.shape[:3] + (len(ms),), np.int64)
    at = 0
    for i, m in enumerate(ms):
        want[..., i] = (hist[..., at : at + m + 1] * np.arange(m + 1)).sum(axis=-1)
        at += m + 1
    got = _srp.window_acts_table(tr.experts, tr.offsets, tr.num_experts, ms, group, n_groups)
    _tables_equal(got, want)
    ref_backend = _backends.get("reference", tr)
    _tables_equal(
        ref_backend.window_acts_table(
            tr.experts, tr.offsets, tr.num_experts, np.asarray(ms), group, n_groups
        ),
        want,
    )


@given(
    tr=traces(max_experts=40),
    policy=st.sampled_from(POL),
    m=segment_lengths(40),
    model_level=st.booleans(),
    warm=st.booleans(),
    unpacked=st.booleans(),
)
def test_stack_tables_match_reference(tr, policy, m, model_level, warm, unpacked):
    g = np.zeros(tr.num_sequences, np.int64)
    mm = m if policy == "sch" else None
    want = ref.stack_stats_table(
        tr.experts, tr.offsets, tr.num_experts, policy, mm, model_level, warm, g, 1
    )
    got = _stack.stack_stats_table(
        tr.experts,
        tr.offsets,
        tr.num_experts,
        policy,
        mm,
        model_level,
        warm,
        g,
        1,
        _force_unpacked=unpacked,
    )
    _tables_equal(got, want)


@settings(max_examples=15)
@given(tr=traces(max_experts=300, max_layers=2), policy=st.sampled_from(POL), m=segment_lengths())
def test_stack_tables_large_expert_counts(tr, policy, m):
    g = np.zeros(tr.num_sequences, np.int64)
    mm = m if policy == "sch" else None
    want = ref.stack_stats_table(
        tr.experts, tr.offsets, tr.num_experts, policy, mm, False, True, g, 1
    )
    got = _stack.stack_stats_table(
        tr.experts, tr.offsets, tr.num_experts, policy, mm, False, True, g, 1
    )
    _tables_equal(got, want)


def _domain_index(tr, by_domain):
    """(number of domains, domain code of each sequence), codes in order of appearance."""
    if not by_domain:
        return 1, [0] * tr.num_sequences
    names, codes = tr.domain_codes()
    return len(names), codes.tolist()


def _exact_srp(tr, m, level, by_domain):
    """SRP of one m from the reference's exact oracles only: ``window_histogram`` per
    (sequence, layer), pooled per domain and level, then ``srp_from_histogram``."""
    D, dom = _domain_index(tr, by_domain)
    L, E = tr.num_layers, tr.num_experts
    H = np.zeros((D, L, E, m + 1), dtype=object)
    win = [0] * D
    for s in range(tr.num_sequences):
        seq = tr.sequence(s)
        win[dom[s]] += max(len(seq) - m + 1, 0)
        for l in range(L):
            h = ref.window_histogram([list(map(int, t)) for t in seq[:, l]], E, m)
            H[dom[s], l] += np.asarray(h, dtype=object)
    pooled = {"model": H.sum(axis=(1, 2)), "layer": H.sum(axis=2), "expert": H}[level]
    rows = pooled.reshape(-1, m + 1)
    out = [ref.srp_from_histogram([int(v) for v in r], m) for r in rows]
    shape = pooled.shape[:-1]
    acts = (H * np.arange(m + 1)).sum(axis=-1)  # (D, L, E) exact ints
    act = [
        [
            [float(Fraction(int(a), m * win[d])) if win[d] else np.nan for a in row]
            for row in acts[d]
        ]
        for d in range(D)
    ]
    want = {
        "value": np.array([float(v) for v, _, _ in out]).reshape(shape),
        "threshold": np.array([p for _, p, _ in out], np.int64).reshape(shape),
        "ratio": np.array([np.nan if r is None else float(r) for _, _, r in out]).reshape(shape),
        "windows": np.array(win, np.int64),
        "activation_ratio": np.array(act, np.float64).reshape(D, L, E),
    }
    if not by_domain:
        want = {k: v[0] for k, v in want.items()}
    return want


@pytest.mark.parametrize("backend", backends_under_test())
@given(
    tr=traces(max_experts=40, domains=True),
    ms=st.lists(segment_lengths(30), min_size=1, max_size=2),
    level=st.sampled_from(["model", "layer", "expert"]),
    by_domain=st.booleans(),
)
def test_srp_public_api_matches_reference(backend, tr, ms, level, by_domain):
    """Every backend's public srp() equals the exact fractions of the reference's oracles
    (window_histogram, srp_from_histogram), bit for bit: one correctly rounded division."""
    got = lk.srp(tr, ms, level=level, by_domain=by_domain, backend=backend)
    for i, m in enumerate(ms):
        want = _exact_srp(tr, m, level, by_domain)
        for name, w in want.items():
            np.testing.assert_array_equal(getattr(got, name)[i], w, err_msg=name)


def _exact_curves(tr, policy, m, level, warm, by_domain):
    """Mean hit curves and summed stat from ``stack_depth_counts`` and exact ``hit_rates``."""
    D, dom = _domain_index(tr, by_domain)
    L, E, k = tr.num_layers, tr.num_experts, tr.top_k
    model = level == "model"
    n_ids = L * E if model else E
    streams = 1 if model else L
    sums = [[[Fraction(0)] * n_ids for _ in range(streams)] for _ in range(D)]
    stat = np.zeros((D, streams, n_ids + 1), np.int64)
    nseq = [0] * D
    for s in range(tr.num_sequences):
        seq = tr.sequence(s)
        if len(seq) == 0:
            continue
        nseq[dom[s]] += 1
        for u in range(streams):
            if model:
                stream = [[l * E + int(e) for l in range(L) for e in t[l]] for t in seq]
            else:
                stream = [list(map(int, t)) for t in seq[:, u]]
            st_ = ref.stack_depth_counts(stream, n_ids, policy, m, warm)
            stat[dom[s], u] += st_
            rates = ref.hit_rates(st_, len(seq) * k * (L if model else 1))
            sums[dom[s]][u] = [a + b for a, b in zip(sums[dom[s]][u], rates, strict=True)]
    rates = np.array(
        [[[float(v / nseq[d]) if nseq[d] else np.nan for v in row] for row in sums[d]]
         for d in range(D)]
    )  # fmt: skip
    if model:
        rates, stat = rates[:, 0], stat[:, 0]
    if not by_domain:
        rates, stat = rates[0], stat[0]
    return rates, stat, np.array(nseq if by_domain else nseq[0])


@pytest.mark.parametrize("backend", backends_under_test())
@given(
    tr=traces(max_experts=40, domains=True),
    policy=st.sampled_from(POL),
    m=segment_lengths(30),
    level=st.sampled_from(["layer", "model"]),
    warm=st.booleans(),
    by_domain=st.booleans(),
)
def test_hit_curve_public_api_matches_reference(backend, tr, policy, m, level, warm, by_domain):
    """Every backend's public hit_curve() equals the mean of the reference's exact
    per-sequence hit rates (stack_depth_counts, hit_rates) within 1e-12; counts exactly."""
    mm = m if policy == "sch" else None
    got = lk.hit_curve(
        tr, policy, m=mm, level=level, warm_start=warm, by_domain=by_domain, backend=backend
    )
    rates, stat, nseq = _exact_curves(tr, policy, mm, level, warm, by_domain)
    np.testing.assert_allclose(got.rates, rates, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(got.stat, stat)
    np.testing.assert_array_equal(got.sequences, nseq)


@given(
    tr=traces(max_experts=60),
    policy=st.sampled_from(POL),
    m=segment_lengths(30),
    level=st.sampled_from(["layer", "model"]),
)
def test_curve_invariants(tr, policy, m, level):
    mm = m if policy == "sch" else None
    warm = lk.hit_curve(tr, policy, m=mm, level=level)
    cold = lk.hit_curve(tr, policy, m=mm, level=level, warm_start=False)
    n_ids = tr.num_experts * (tr.num_layers if level == "model" else 1)
    assert warm.rates.shape[-1] == n_ids
    nonempty = int((tr.lengths > 0).sum())
    if nonempty == 0:
        assert np.isnan(warm.rates).all()
        return
    # non-decreasing in C, within [0, 1]
    assert (np.diff(warm.rates, axis=-1) >= -1e-12).all()
    assert (warm.rates >= 0).all() and (warm.rates <= 1 + 1e-12).all()
    # warm start: every access hits once the cache holds every id
    np.testing.assert_allclose(warm.rates[..., -1], 1.0, rtol=0, atol=1e-12)
    # cold start differs only by first accesses: never above warm start
    assert (cold.rates <= warm.rates + 1e-12).all()
    # cold start at C = N misses exactly the first access of each id in each stream
    A = tr.top_k * (tr.num_layers if level == "model" else 1)
    want = []
    for s in range(tr.num_sequences):
        seq = tr.sequence(s)
        if len(seq) == 0:
            continue
        if level == "model":
            distinct = sum(len(np.unique(seq[:, l])) for l in range(tr.num_layers))
            want.append(1 - distinct / (len(seq) * A))
        else:
            want.append(
                [1 - len(np.unique(seq[:, l])) / (len(seq) * A) for l in range(tr.num_layers)]
            )
    np.testing.assert_allclose(cold.rates[..., -1], np.mean(want, axis=0), rtol=0, atol=1e-12)
    # the model-level cache of a one-layer model is the layer-level cache
    if tr.num_layers == 1 and level == "layer":
        mod = lk.hit_curve(tr, policy, m=mm, level="model")
        np.testing.assert_array_equal(mod.rates, warm.rates[0])


@given(tr=traces(max_experts=40), m=segment_lengths(30))
def test_srp_invariants(tr, m):
    r = lk.srp(tr, [m, 1], level="expert")
    H = r.histogram[0]  # (L, E, m+1)
    win = int(r.windows[0])
    # every expert has one count per window
    assert (H.sum(axis=-1) == win).all()
    # acts counts each token once per window it lies in, for each of its k experts
    acts = (H * np.arange(m + 1)).sum(axis=(1, 2))
    per_token = 0
    for T in tr.lengths:
        if T >= m:
            t = np.arange(T)
            per_token += int((np.minimum(t, T - m) - np.maximum(0, t - m + 1) + 1).sum())
    assert (acts == tr.top_k * per_token).all()
    assert ((0 <= r.value) & (r.value <= 1)).all()
    # m = 1: the segment router with p = 1 is exact whenever the expert is ever used
    used = r.histogram[1][..., 1] > 0
    assert (r.value[1][used] == 1.0).all()
    assert (r.value[1][~used] == 0.0).all()
    # activation ratio at m = 1 is the token frequency
    if tr.num_tokens:
        freq = np.zeros((tr.num_layers, tr.num_experts))
        for l in range(tr.num_layers):
            np.add.at(freq[l], tr.experts[:, l].ravel().astype(np.int64), 1)
        np.testing.assert_allclose(r.activation_ratio[1], freq / tr.num_tokens, atol=1e-12)


@given(
    tr=traces(max_experts=30),
    policy=st.sampled_from(["lru", "lfu", "sch"]),
    m=segment_lengths(20),
    seed=st.integers(0, 1000),
)
def test_relabelling_experts_changes_nothing(tr, policy, m, seed):
    """LRU, LFU and SCH priorities never look at expert ids (Belady's never-again order
    does), and SRP pools over experts: a consistent relabelling leaves them unchanged."""
    perm = np.random.default_rng(seed).permutation(tr.num_experts)
    tr2 = lk.Trace(perm[tr.experts.astype(np.int64)], tr.offsets, num_experts=tr.num_experts)
    mm = m if policy == "sch" else None
    a = lk.hit_curve(tr, policy, m=mm)
    b = lk.hit_curve(tr2, policy, m=mm)
    np.testing.assert_array_equal(a.rates, b.rates)
    np.testing.assert_array_equal(lk.srp(tr, m).value, lk.srp(tr2, m).value)


@given(tr=traces(max_experts=30, max_sequences=5), m=segment_lengths(20), seed=st.integers(0, 99))
def test_sequence_order_and_single_domain(tr, m, seed):
    perm = np.random.default_rng(seed).permutation(tr.num_sequences)
    tr2 = tr.select(sequences=perm)
    a, b = lk.srp(tr, m, level="layer"), lk.srp(tr2, m, level="layer")
    np.testing.assert_array_equal(a.value, b.value)
    c1 = lk.sch(tr, m)
    c2 = lk.sch(tr2, m)
    np.testing.assert_allclose(c1.rates, c2.rates, rtol=0, atol=1e-12)
    one = lk.Trace(
        tr.experts, tr.offsets, num_experts=tr.num_experts, domains=["all"] * tr.num_sequences
    )
    d = lk.srp(one, m, level="layer", by_domain=True)
    np.testing.assert_array_equal(d.value[0], a.value)
    assert d.domains == ["all"]
    np.testing.assert_array_equal(lk.sch(one, m, by_domain=True).rates[0], c1.rates)


@pytest.mark.parametrize("backend", FAST)
@settings(max_examples=20)
@given(
    tr=traces(max_experts=30, domains=True),
    ms=st.lists(segment_lengths(20), min_size=1, max_size=2),
    level=st.sampled_from(["model", "layer", "expert"]),
    by_domain=st.booleans(),
    seed=st.integers(0, 50),
)
def test_bootstrap_matches_reference(backend, tr, ms, level, by_domain, seed):
    """Per-sequence tables (int32 on the CPU, int64 in the reference) give the same CI."""
    kw = dict(level=level, by_domain=by_domain, bootstrap=25, seed=seed)
    a = lk.srp(tr, ms, backend="reference", **kw)
    b = lk.srp(tr, ms, backend=backend, **kw)
    np.testing.assert_array_equal(a.value, b.value)
    np.testing.assert_array_equal(a.ci[0], b.ci[0])
    np.testing.assert_array_equal(a.ci[1], b.ci[1])


@given(
    B=st.integers(1, 60),
    R=st.integers(1, 5),
    conf=st.floats(0.01, 0.99),
    seed=st.integers(0, 1000),
    ties=st.booleans(),
)
def test_column_quantiles_equal_numpy(B, R, conf, seed, ties):
    rng = np.random.default_rng(seed)
    x = rng.random((B, R))
    if ties:
        x = np.round(x * 4) / 4
    q = [(1 - conf) / 2, (1 + conf) / 2]
    np.testing.assert_array_equal(_srp.column_quantiles(x, q), np.quantile(x, q, axis=0))
