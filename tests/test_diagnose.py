"""lrc_kernels.diagnose: exact small cases by hand, an independent brute force of the
working set, and one trace for each verdict."""

from __future__ import annotations

import importlib
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import traces

import lrc_kernels as lk

# the module; ``lrc_kernels.diagnose`` itself is the function
dg = importlib.import_module("lrc_kernels.diagnose")

# SPEC's worked example: one sequence, one layer, E = 4, k = 2, T = 8
EX1 = [[0, 1], [0, 1], [1, 2], [0, 1], [2, 3], [2, 3], [0, 2], [0, 1]]
# SPEC's worked example 2: two layers
EX2_L0 = [[0, 1], [0, 1], [0, 2], [1, 2], [2, 3], [2, 3], [0, 3], [2, 3]]
EX2_L1 = [[3, 2], [3, 2], [3, 1], [1, 0], [1, 0], [0, 1], [0, 2], [2, 0]]


def ex1():
    return lk.Trace(np.array(EX1)[:, None, :], num_experts=4)


def test_public_names():
    import lrc_kernels.diagnose  # noqa: F401  (the submodule must not shadow the function)

    assert lk.diagnose is dg.diagnose
    assert lk.Diagnosis is dg.Diagnosis


def test_worked_example_by_hand():
    d = lk.diagnose(ex1(), budget=2, m=2, level="layer")
    # windows of 2 tokens: {0,1} {0,1,2} {0,1,2} {0,1,2,3} {2,3} {0,2,3} {0,1,2}
    assert d.windows == 7
    assert d.working_set_histogram.tolist() == [[0, 0, 2, 4, 1]]
    assert d.working_set_mean.tolist() == [20 / 7]
    # nearest rank: 50 % -> 3 (6 of 7 windows <= 3), 90 % and 99 % -> 4
    assert d.working_set_percentiles.tolist() == [[3, 4, 4]]
    assert d.model_working_set_mean == 20 / 7
    # activations: e0 5, e1 5, e2 4, e3 2 (16); 90 % = 14.4 needs all four
    assert d.activations.tolist() == [[5, 5, 4, 2]]
    assert d.experts_for_coverage.tolist() == [4]
    assert lk.diagnose(ex1(), budget=2, m=2, coverage=0.8).experts_for_coverage[0] == 3
    assert lk.diagnose(ex1(), budget=2, m=2, coverage=0.875).experts_for_coverage[0] == 3
    h = -(2 * (5 / 16) * math.log(5 / 16) + 0.25 * math.log(0.25) + 0.125 * math.log(0.125))
    assert d.entropy[0] == pytest.approx(h / math.log(4), rel=1e-12)
    # static oracle at C = 2: experts 0 and 1, 10 of 16 activations
    assert d.static.tolist() == [10 / 16]
    # SPEC's table at C = 2: Belady 11/16, LRU 10/16
    assert d.belady.tolist() == [11 / 16]
    assert d.lru.tolist() == [10 / 16]
    assert d.rho == 1.0 and d.budget == 2
    # LRU 0.625 < 0.9, Belady 0.6875 >= 0.6, gap 0.0625 < 0.1
    assert d.verdicts == {"layer": "near bound", "per_layer": ["near bound"]}
    # reuse distances (cold-start LRU stack depth): 4 first accesses of 16
    assert d.reuse_histogram[0, -1] == 4 and d.reuse_histogram.sum() == 16
    assert d.model_belady is None


def test_two_layers_shared_cache():
    x = np.stack([np.array(EX2_L0), np.array(EX2_L1)], axis=1)
    t = lk.Trace(x, num_experts=4)
    d = lk.diagnose(t, rho=1.0, m=4)
    assert d.budget == 2
    # SPEC's model-level table at C = 4: Belady 26/32, LRU 24/32
    assert d.model_belady == 26 / 32 and d.model_lru == 24 / 32
    # SPEC: layer 0 at C = 2: LRU 11/16, Belady 12/16
    assert d.lru[0] == 11 / 16 and d.belady[0] == 12 / 16
    # layer 0 counts e0 4, e1 3, e2 5, e3 4; layer 1 e0 5, e1 4, e2 4, e3 3
    assert d.activations.tolist() == [[4, 3, 5, 4], [5, 4, 4, 3]]
    assert d.static.tolist() == [9 / 16, 9 / 16]
    # shared static cache of 4 pairs: 5 + 5 + 4 + 4 of 32
    assert d.model_static == 18 / 32
    # layer 0 windows of 4 tokens: {0,1,2} {0,1,2,3} {0,1,2,3} {0,1,2,3} {0,2,3}
    assert d.working_set_histogram[0].tolist() == [0, 0, 0, 2, 3]
    # layer 1: {0,1,2,3} {0,1,2,3} {0,1,3} {0,1,2} {0,1,2}
    assert d.working_set_histogram[1].tolist() == [0, 0, 0, 3, 2]
    # shared working set, window by window: 3+4, 4+4, 4+3, 4+3, 3+3 = 7 8 7 7 6
    assert d.model_working_set_mean == 35 / 5
    assert d.model_working_set_percentiles.tolist() == [7, 8, 8]
    assert set(d.verdicts) == {"layer", "per_layer", "model"}
    json.dumps(d.to_dict())


def brute_distinct(trace, layer, m):
    out = []
    for seq in trace:
        for t in range(seq.shape[0] - m + 1):
            out.append(len(set(seq[t : t + m, layer].ravel().tolist())))
    return out


@settings(max_examples=60, deadline=None)
@given(traces(max_len=30), st.integers(1, 12))
def test_working_set_matches_brute_force(t, m):
    off = np.asarray(t.offsets, dtype=np.int64)
    for layer in range(t.num_layers):
        got = dg._window_distinct(np.asarray(t.experts)[:, layer], off, m, t.num_experts)
        assert got.tolist() == brute_distinct(t, layer, m)


def cyclic(n_experts, E, T, S=2):
    """k = 1, one layer: every sequence cycles through experts 0 .. n_experts-1."""
    x = (np.arange(T) % n_experts)[:, None, None]
    return lk.Trace(np.concatenate([x] * S), [0, T, 2 * T][: S + 1], num_experts=E)


def test_each_verdict():
    # two experts used, budget 2: every access hits
    assert lk.diagnose(cyclic(2, 8, 64), budget=2).verdicts["layer"] == "fits"
    # cycle over 8 experts with room for 1: even Belady hits almost never
    d = lk.diagnose(cyclic(8, 8, 64), budget=1)
    assert d.verdicts["layer"] == d.verdicts["model"] == "working-set limit"
    assert d.belady[0] < 0.6
    # cycle over C + 1 = 5 experts with room for 4: LRU always misses, Belady ~3/4
    d = lk.diagnose(cyclic(5, 8, 200), budget=4)
    assert d.verdicts["layer"] == "policy gap"
    assert d.lru[0] < 0.05 and d.belady[0] > 0.7
    assert "POLICY GAP" in d.summary()
    # SPEC's example at C = 2: Belady 0.6875, LRU 0.625
    assert lk.diagnose(ex1(), budget=2).verdicts["model"] == "near bound"


def test_verdict_thresholds():
    assert dg.verdict(1.0, 0.9) == "fits"
    assert dg.verdict(0.95, 0.89) == "near bound"
    assert dg.verdict(0.59, 0.1) == "working-set limit"
    assert dg.verdict(0.6, 0.5) == "policy gap"
    assert dg.verdict(0.7, 0.6) == "policy gap"
    assert dg.verdict(0.7, 0.61) == "near bound"


def test_bad_input():
    t = ex1()
    with pytest.raises(ValueError, match="not both"):
        lk.diagnose(t, 2, rho=1.0)
    with pytest.raises(ValueError, match="budget must be >= 1"):
        lk.diagnose(t, 0)
    with pytest.raises(ValueError, match="budget must be <= 4"):
        lk.diagnose(t, 5)
    with pytest.raises(TypeError, match="budget"):
        lk.diagnose(t, 2.0)
    with pytest.raises(ValueError, match="whole cache size"):
        lk.diagnose(t, rho=0.75)
    with pytest.raises(ValueError, match="outside"):
        lk.diagnose(t, rho=3.0)
    with pytest.raises(ValueError, match="level"):
        lk.diagnose(t, level="both2")
    with pytest.raises(ValueError, match="m must be >= 1"):
        lk.diagnose(t, m=0)
    with pytest.raises(ValueError, match="coverage"):
        lk.diagnose(t, coverage=1.5)


def test_short_sequences_have_no_windows():
    d = lk.diagnose(ex1(), budget=2, m=9, level="layer")
    assert d.windows == 0 and d.working_set_percentiles.tolist() == [[-1, -1, -1]]
    assert "windows" in d.summary()


# ------------------------------------------------------------------ lrc diagnose
def test_cli_diagnose(tmp_path):
    from test_cli import run_lrc

    p = tmp_path / "ex.lrc.arrow"
    lk.write_trace(p, ex1())
    out = run_lrc("diagnose", p, "--budget", "2", "--m", "2", "--level", "layer").stdout
    assert "verdict (one cache per layer (layer means)): NEAR BOUND" in out
    assert "Belady 0.688  LRU 0.625  static 0.625" in out
    assert "one shared cache" not in out
    rows = json.loads(run_lrc("diagnose", p, p, "--rho", "1", "--m", "2", "--json").stdout)
    assert len(rows) == 2 and rows[0]["trace"] == str(p)
    assert rows[0]["budget"] == 2 and rows[0]["belady"] == [11 / 16]
    assert rows[0]["verdicts"]["model"] == "near bound"
    assert rows[0]["working_set_histogram"] == [[0, 0, 2, 4, 1]]
    err = run_lrc("diagnose", p, "--budget", "5", check_rc=1).stderr
    assert "budget must be <= 4" in err and str(p) in err
    err = run_lrc("diagnose", p, "--budget", "2", "--rho", "1", check_rc=2).stderr
    assert "not allowed with argument" in err


@settings(max_examples=40, deadline=None)
@given(traces(max_len=20), st.integers(1, 20), st.data())
def test_edges_of_random_traces(t, m, data):
    """Ragged traces with empty sequences, E = 1, k = E, m > T: exact counts, rates in
    [0, 1], and the hit rates are those of hit_curve at the budget."""
    if t.num_tokens == 0:
        with pytest.raises(ValueError, match="no tokens"):
            lk.diagnose(t, 1)
        return
    E, k, L = t.num_experts, t.top_k, t.num_layers
    C = data.draw(st.integers(1, E))
    d = lk.diagnose(t, C, m=m)
    lengths = np.diff(t.offsets)
    assert d.windows == int(np.maximum(lengths - m + 1, 0).sum())
    assert (d.working_set_histogram.sum(axis=1) == d.windows).all()
    assert d.activations.sum() == t.num_tokens * k * L
    assert (d.reuse_histogram.sum(axis=1) == t.num_tokens * k).all()
    assert ((1 <= d.experts_for_coverage) & (d.experts_for_coverage <= E)).all()
    assert ((0 <= d.entropy) & (d.entropy <= 1 + 1e-12)).all()
    for v in (d.static, d.belady, d.lru, [d.model_static, d.model_belady, d.model_lru]):
        assert all(0 <= x <= 1 for x in v)
    assert d.belady.tolist() == lk.hit_curve(t, "belady").at(C / k).tolist()
    assert d.model_lru == float(lk.hit_curve(t, "lru", level="model").at(C / k))
    if C == E:  # everything fits: the static oracle holds every expert
        assert d.static.tolist() == [1.0] * L and d.model_static == 1.0
    d.summary()
    json.dumps(d.to_dict())


@pytest.mark.parametrize("bad", [0.5, "2", None, True, np.float64(2.0), 2**70, -1])
def test_odd_budgets_are_refused_clearly(bad):
    if bad is None:  # the default: rho = 2
        assert lk.diagnose(ex1(), bad).budget == 4
        # k = E = 2: rho = 2 would need 4 experts; the default caps C at E
        assert lk.diagnose(np.array([[0, 1]]), num_experts=2).budget == 2
        return
    with pytest.raises((TypeError, ValueError), match="budget"):
        lk.diagnose(ex1(), bad)
