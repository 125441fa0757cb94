"""Public API behaviour: result shapes, domains, bootstrap, Trace helpers."""

from __future__ import annotations

import inspect
from fractions import Fraction

import numpy as np
import pytest
from strategies import make_ids

import lrc_kernels as lk


@pytest.fixture(scope="module")
def small():
    rng = np.random.default_rng(7)
    lengths = [40, 33, 0, 52, 40, 12]
    x = make_ids(rng, sum(lengths), 3, 16, 4, stay=0.7)
    off = np.concatenate([[0], np.cumsum(lengths)])
    dom = ["web", "code", "web", "math", "code", "web"]
    return lk.Trace(x, off, num_experts=16, domains=dom, meta={"model": "toy"})


def test_trace_properties(small):
    assert small.num_sequences == 6 and len(small) == 6
    assert small.num_layers == 3 and small.top_k == 4 and small.num_experts == 16
    assert small.num_tokens == 177 and small.num_activations == 177 * 3 * 4
    assert small.experts.dtype == np.uint8
    assert [len(s) for s in small] == [40, 33, 0, 52, 40, 12]
    assert small[3].shape == (52, 3, 4)
    names, codes = small.domain_codes()
    assert names == ["web", "code", "math"] and codes.tolist() == [0, 1, 0, 2, 1, 0]
    assert "sequences=6" in repr(small) and "toy" in repr(small)
    with pytest.raises(IndexError):
        small.sequence(6)


def test_select_and_split(small):
    web = small.select(domain="web")
    assert web.num_sequences == 3 and set(web.domains) == {"web"}
    np.testing.assert_array_equal(web[0], small[0])
    two = small.select(layers=[2])
    assert two.num_layers == 1
    np.testing.assert_array_equal(two.experts[:, 0], small.experts[:, 2])
    sp = small.split(20)
    assert sp.lengths.tolist() == [20, 20, 20, 13, 20, 20, 12, 20, 20, 12]
    assert sp.domains.tolist()[:3] == ["web", "web", "code"]
    with pytest.raises(ValueError, match="no sequence has domain"):
        small.select(domain="law")


def test_array_forms_agree(small):
    x = small.experts[:120].reshape(3, 40, 3, 4)
    four = lk.srp(x, 8, level="layer", num_experts=16)
    as_trace = lk.srp(
        lk.Trace(x.reshape(120, 3, 4), [0, 40, 80, 120], num_experts=16), 8, level="layer"
    )
    np.testing.assert_array_equal(four.value, as_trace.value)
    one_layer = lk.sch(small[0][:, 1], 4, num_experts=16)
    np.testing.assert_array_equal(
        one_layer.rates[0], lk.sch(small.select(sequences=[0]), 4).rates[1]
    )


@pytest.mark.parametrize("level,shape", [("model", ()), ("layer", (3,)), ("expert", (3, 16))])
def test_srp_shapes(small, level, shape):
    r = lk.srp(small, 4, level=level)
    assert np.shape(r.value) == shape and np.shape(r.threshold) == shape
    assert np.shape(r.ratio) == shape
    assert r.activation_ratio.shape == (3, 16)
    r2 = lk.srp(small, [2, 4, 7], level=level, by_domain=True)
    assert np.shape(r2.value) == (3, 3) + shape
    assert r2.domains == ["web", "code", "math"]
    assert r2.activation_ratio.shape == (3, 3, 3, 16)
    np.testing.assert_array_equal(r2.value[1], lk.srp(small, 4, level=level, by_domain=True).value)
    np.testing.assert_array_equal(
        r2.value[1, 2], lk.srp(small.select(domain="math"), 4, level=level).value
    )


def test_activation_ratio_sums_to_k(small):
    r = lk.srp(small, 5, level="expert")
    np.testing.assert_allclose(r.activation_ratio.sum(axis=-1), small.top_k, atol=1e-12)


def _exact_activation_ratio(tr, m):
    """acts / (m * windows) per (layer, expert), counted token by token: token t of a
    sequence of T tokens lies in ``min(t, T-m) - max(0, t-m+1) + 1`` windows."""
    acts = np.zeros((tr.num_layers, tr.num_experts), dtype=object)
    windows = 0
    for s in range(tr.num_sequences):
        seq = tr.sequence(s)
        T = len(seq)
        if T < m:
            continue
        windows += T - m + 1
        for t in range(T):
            n = min(t, T - m) - max(0, t - m + 1) + 1
            for l in range(tr.num_layers):
                for e in seq[t, l]:
                    acts[l, int(e)] += n
    return np.array([[float(Fraction(int(a), m * windows)) for a in row] for row in acts])


def test_lazy_activation_ratio_with_bootstrap(small):
    """A layer-level bootstrap keeps no per-expert tables: the activation ratio is computed
    on first access, and equals the exact per-expert ratio."""
    lazy = lk.srp(small, [3, 6], level="layer", bootstrap=20)
    assert lazy._activation_ratio is None and lazy._activation_fn is not None
    got = lazy.activation_ratio
    assert got.shape == (2, small.num_layers, small.num_experts)
    for i, m in enumerate((3, 6)):
        np.testing.assert_array_equal(got[i], _exact_activation_ratio(small, m))


def test_bootstrap_is_seeded_paired_and_brackets_estimate(small):
    a = lk.srp(small, [4, 8], level="layer", bootstrap=200, seed=3)
    b = lk.srp(small, [4, 8], level="layer", bootstrap=200, seed=3)
    c = lk.srp(small, [4, 8], level="layer", bootstrap=200, seed=4)
    lo, hi = a.ci
    np.testing.assert_array_equal(lo, b.ci[0])
    assert not np.array_equal(lo, c.ci[0])
    assert lo.shape == hi.shape == (2, 3)
    assert (lo <= hi).all()
    # point estimates do not depend on the bootstrap
    np.testing.assert_array_equal(a.value, lk.srp(small, [4, 8], level="layer").value)
    # paired: the model-level CI of one call equals a separate call's (same seed, same S)
    m = lk.srp(small, [4, 8], level="model", bootstrap=200, seed=3)
    m1 = lk.srp(small, 8, level="model", bootstrap=200, seed=3)
    assert float(m.ci[0][1]) == float(m1.ci[0])


def test_bootstrap_matches_a_direct_resample(small):
    """The CI equals resampling sequences by hand with the same draws."""
    B, seed, mm = 50, 11, 6
    r = lk.srp(small, mm, level="model", bootstrap=B, seed=seed)
    S = small.num_sequences
    draws = np.random.default_rng(seed).integers(0, S, size=(B, S))
    vals = []
    for row in draws:
        vals.append(float(lk.srp(small.select(sequences=row), mm).value))
    qlo, qhi = np.quantile(vals, [0.025, 0.975])
    est = float(r.value)
    assert float(r.ci[0]) == pytest.approx(2 * est - qhi, abs=1e-12)
    assert float(r.ci[1]) == pytest.approx(2 * est - qlo, abs=1e-12)


def test_identical_sequences_give_a_zero_width_interval():
    x = np.array([[[0, 1]], [[0, 2]], [[1, 2]], [[0, 1]]])
    tr = lk.Trace(np.concatenate([x] * 6), np.arange(7) * 4, num_experts=3)
    r = lk.srp(tr, 2, level="expert", bootstrap=30)
    np.testing.assert_array_equal(r.ci[0], r.value)
    np.testing.assert_array_equal(r.ci[1], r.value)


def test_bootstrap_by_domain(small):
    r = lk.srp(small, 4, level="layer", by_domain=True, bootstrap=50)
    assert r.ci[0].shape == (3, 3)
    assert np.isfinite(r.ci[0]).all()


def test_hit_curve_shapes_and_at(small):
    c = lk.sch(small, [1, 4, 16])
    assert c.rates.shape == (3, 3, 16)
    assert c.at(2).shape == (3, 3)
    np.testing.assert_array_equal(c.at(2), c.rates[..., 7])
    assert c.cache_sizes.tolist() == list(range(1, 17))
    np.testing.assert_allclose(c.rho, np.arange(1, 17) / 4)
    assert c.sequences == 5  # the empty sequence has no curve
    mod = lk.hit_curve(small, "belady", level="model", by_domain=True)
    assert mod.rates.shape == (3, 48) and mod.domains == ["web", "code", "math"]
    assert mod.at(1).shape == (3,)
    assert mod.sequences.tolist() == [2, 2, 1]
    np.testing.assert_array_equal(
        mod.rates[2], lk.hit_curve(small.select(domain="math"), "belady", level="model").rates
    )


def test_mean_over_sequences_weighs_each_sequence_equally(small):
    per = [lk.sch(small.select(sequences=[s]), 4).rates for s in (0, 1, 3, 4, 5)]
    np.testing.assert_allclose(lk.sch(small, 4).rates, np.mean(per, axis=0), atol=1e-12)


def test_load_balance_and_domain_specialization(small):
    lb = lk.load_balance(small, m=16)
    r = lk.srp(small, 16, level="expert")
    assert lb == pytest.approx(np.std(r.activation_ratio.ravel(), ddof=1), abs=1e-15)
    ds, per_expert = lk.domain_specialization(small, m=16)
    assert per_expert.shape == (3, 16)
    a = lk.srp(small, 16, level="expert", by_domain=True).activation_ratio
    l, e = np.argwhere(np.isfinite(per_expert))[0]
    col = a[:, l, e]
    col = col[col > 1e-5]
    assert per_expert[l, e] == pytest.approx(np.std(col, ddof=1) / np.mean(col), rel=1e-12)
    assert ds == pytest.approx(np.nanmean(per_expert), rel=1e-12)


def test_results_repr(small):
    assert "SRPResult(level='model', m=4, value=0." in repr(lk.srp(small, 4))
    assert "HitCurve(policy='sch', m=4" in repr(lk.sch(small, 4))


def test_srp_from_histogram_pools_like_srp(small):
    lay = lk.srp(small, [3, 9], level="layer")
    mod = lk.srp(small, [3, 9], level="model")
    for i, m in enumerate([3, 9]):
        v, p, r = lk.srp_from_histogram(lay.histogram[i].sum(axis=0), m)
        assert v == mod.value[i] and p == mod.threshold[i] and r == mod.ratio[i]
    # SPEC example 1, m = 2: layer histogram [8, 12, 8] gives 14/17 at p* = 1
    v, p, r = lk.srp_from_histogram([8, 12, 8], 2)
    assert v == 14 / 17 and p == 1 and r == 40 / 28
    with pytest.raises(ValueError, match="m \\+ 1 = 3 bins"):
        lk.srp_from_histogram([1, 2], 2)
    with pytest.raises(TypeError, match="integer counts"):
        lk.srp_from_histogram([1.0, 2.0, 3.0], 2)
    with pytest.raises(ValueError, match=">= 0"):
        lk.srp_from_histogram([1, -2, 3], 2)


def test_m_and_level_are_passed_the_same_way(small):
    """m: positional or keyword in srp, sch and hit_curve; level: keyword-only in all."""
    a = lk.hit_curve(small, "sch", 4)
    for c in (lk.hit_curve(small, "sch", m=4), lk.sch(small, 4), lk.sch(small, m=4)):
        np.testing.assert_array_equal(c.rates, a.rates)
    np.testing.assert_array_equal(lk.srp(small, m=4).value, lk.srp(small, 4).value)
    for call in (
        lambda: lk.srp(small, 4, "layer"),
        lambda: lk.sch(small, 4, "model"),
        lambda: lk.hit_curve(small, "sch", 4, "model"),
    ):
        with pytest.raises(TypeError):
            call()
    params = {f: inspect.signature(f).parameters for f in (lk.srp, lk.sch, lk.hit_curve)}
    for f, ps in params.items():
        assert ps["m"].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD, f
        assert ps["level"].kind is inspect.Parameter.KEYWORD_ONLY, f
    # the documented defaults (unchanged: a new default would change numbers silently)
    assert params[lk.srp]["level"].default == "model"
    assert params[lk.sch]["level"].default == params[lk.hit_curve]["level"].default == "layer"


def test_histograms_is_a_list_whatever_the_number_of_m(small):
    one = lk.srp(small, 4, level="layer")
    two = lk.srp(small, [4, 2], level="layer")
    assert isinstance(one.histograms, list) and isinstance(two.histograms, list)
    assert len(one.histograms) == 1 and len(two.histograms) == 2
    np.testing.assert_array_equal(one.histograms[0], one.histogram)
    np.testing.assert_array_equal(two.histograms[0], one.histogram)
    assert two.histograms[1].shape == (small.num_layers, 3)
