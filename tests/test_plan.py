"""The offloading planner: exact budgets, the decode model, expert sizes (issue #17)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from strategies import traces

import lrc_kernels as lk
from lrc_kernels import _spec
from lrc_kernels.plan import layer_tables, optimal_allocation

ALL = getattr(_spec, "ALL_POLICIES", _spec.POLICIES)  # every policy hit_curve takes
# policy parameters the planner passes through to hit_curve
PARAMS = {"sch": {"m": 2}, "static-prefix": {"prefix": 3}, "pinned-lru": {"pinned": 0.5}}


def _hits(curve):
    """Integer hits per size and accesses, from whichever tables the HitCurve carries."""
    if getattr(curve, "hits", None) is not None:
        return np.asarray(curve.hits), np.asarray(curve.accesses)
    stat = np.asarray(curve.stat)
    return np.cumsum(stat[..., :-1], axis=-1), stat.sum(-1)


def _brute(rates: np.ndarray, budget: int) -> float:
    """Best summed rate over every allocation (sizes 0 .. N per layer, sum <= budget)."""
    L, n1 = rates.shape
    best = 0.0
    for alloc in itertools.product(range(n1), repeat=L):
        if sum(alloc) <= budget:
            v = 0.0
            for layer, c in enumerate(alloc):  # same summation order as the planner
                v += rates[layer, c]
            best = max(best, v)
    return best


def test_dp_beats_greedy_on_a_non_concave_table():
    # one layer gains nothing until 3 slots, then everything: greedy on marginal gains
    # spends the budget elsewhere
    rates = np.array([[0, 0.0, 0.0, 0.9], [0, 0.5, 0.55, 0.6]])
    alloc, val = optimal_allocation(rates, 4)
    assert alloc.tolist() == [3, 1] and val[4] == pytest.approx(1.4)
    assert val[3] == pytest.approx(0.9) and val[2] == pytest.approx(0.55)


@settings(max_examples=60)
@given(st.integers(0, 2**32 - 1), st.integers(1, 3), st.integers(1, 5), st.integers(0, 16))
def test_dp_equals_brute_force_on_arbitrary_tables(seed, L, N, budget):
    rng = np.random.default_rng(seed)
    rates = np.hstack([np.zeros((L, 1)), rng.random((L, N))])  # neither concave nor monotone
    if seed % 3 == 0:
        rates = np.round(rates, 1)  # ties
    alloc, val = optimal_allocation(rates, budget)
    assert alloc.sum() <= budget and np.all((alloc >= 0) & (alloc <= N))
    got = 0.0
    for layer, c in enumerate(alloc.tolist()):
        got += rates[layer, c]
    assert got == val[budget] == _brute(rates, budget)
    assert np.all(np.diff(val) >= 0)
    for b in range(budget + 1):
        assert val[b] == _brute(rates, b)


@pytest.mark.parametrize("policy", ALL)
@settings(max_examples=8)
@given(trace=traces(max_sequences=3, max_len=12, max_layers=3, max_experts=5, max_k=3))
def test_plan_budget_is_the_brute_force_optimum(policy, trace):
    assume(trace.num_tokens > 0)
    kw = PARAMS.get(policy, {})
    curve = lk.hit_curve(trace, policy, level="layer", **kw)
    L, E = trace.num_layers, trace.num_experts
    rates = np.hstack([np.zeros((L, 1)), np.asarray(curve.rates)])
    for budget in sorted({0, 1, E, L * E // 2, L * E, L * E + 2}):
        plan = lk.plan_budget(trace, budget, policy, shared=budget <= 2, **kw)
        assert plan.allocation.sum() <= budget
        assert plan.hit_rate * L == pytest.approx(_brute(rates, budget), abs=1e-12)
        np.testing.assert_array_equal(plan.layer_rates, rates[np.arange(L), plan.allocation])
        h, acc = _hits(curve)
        hits = [h[layer, c - 1] if c else 0 for layer, c in enumerate(plan.allocation)]
        np.testing.assert_array_equal(plan.misses, acc - hits)
        assert plan.hit_rate >= plan.uniform_hit_rate - 1e-12


def test_plan_budget_reports_uniform_and_shared():
    tr = lk.synthetic_trace(4, 30, 3, 6, 2, stay=0.6, seed=3)
    plan = lk.plan_budget(tr, 8, "lru")
    assert plan.uniform_allocation.tolist() == [2, 2, 2]
    lay = lk.hit_curve(tr, "lru")
    assert plan.uniform_hit_rate == pytest.approx(float(np.mean(np.asarray(lay.rates)[:, 1])))
    model = lk.hit_curve(tr, "lru", level="model")
    assert plan.shared_size == 8
    assert plan.shared_hit_rate == float(np.asarray(model.rates)[7])
    stat = np.asarray(model.stat)
    assert plan.shared_misses == stat.sum() - stat[:8].sum()
    again = lk.plan_budget(lay, 8, shared=model)  # from curves computed once
    assert again.allocation.tolist() == plan.allocation.tolist()
    assert again.shared_hit_rate == plan.shared_hit_rate
    assert plan.smallest_budget(plan.hit_rate) <= 8
    assert plan.smallest_budget(1.01) == -1
    assert "BudgetPlan(policy='lru', budget=8" in repr(plan)


def test_plan_budget_errors():
    tr = lk.synthetic_trace(2, 10, 2, 4, 2, seed=0)
    with pytest.raises(ValueError, match="budget must be >= 0"):
        lk.plan_budget(tr, -1)
    with pytest.raises(TypeError, match="budget must be an integer"):
        lk.plan_budget(tr, 2.0)
    with pytest.raises(ValueError, match="shared=True needs the trace"):
        lk.plan_budget(lk.hit_curve(tr, "lru"), 3)
    with pytest.raises(ValueError, match="need a layer-level hit curve"):
        lk.plan_budget(lk.hit_curve(tr, "lru", level="model"), 3)
    with pytest.raises(ValueError, match="policy"):
        lk.plan_budget(tr, 3, "nope")
    empty = lk.Trace(np.zeros((0, 1, 1), np.uint8), [0, 0], num_experts=1)
    with pytest.raises(ValueError, match="no tokens"):
        lk.plan_budget(empty, 1)


def test_layer_tables_match_the_curve():
    tr = lk.synthetic_trace(3, [9, 0, 14], 2, 5, 2, seed=1)
    curve = lk.hit_curve(tr, "lfu")
    rates, hits, acc = layer_tables(curve)
    np.testing.assert_array_equal(rates[:, 1:], curve.rates)
    np.testing.assert_array_equal(hits[:, 1:], np.cumsum(curve.stat[:, :-1], axis=1))
    assert hits[:, 0].tolist() == [0, 0] and acc.tolist() == [46, 46]


# ---------------------------------------------------------------- decode model
def test_predict_decode_by_hand():
    # 2 layers x 4 experts x 1 MB, 40 % misses: 3.2 experts = 3.2 MB at 1 GB/s = 3.2 ms
    kw = dict(num_layers=2, top_k=4, expert_bytes=10**6)
    assert lk.predict_decode(0.6, link_gbps=1.0, **kw) == pytest.approx(1000 / 3.2)
    assert lk.predict_decode(0.6, link_gbps=1.0, base_ms=1.8, **kw) == pytest.approx(200.0)
    full = lk.predict_decode(0.6, link_gbps=1.0, base_ms=1.8, overlap=1.0, **kw)
    assert full == pytest.approx(1000 / 3.2)  # max(1.8, 3.2)
    half = lk.predict_decode(0.6, link_gbps=1.0, base_ms=1.8, overlap=0.5, **kw)
    assert half == pytest.approx(1000 / (1.8 + 3.2 - 0.9))
    host = lk.predict_decode(0.6, link_gbps=1.0, base_ms=1.8, host_ms=0.5, **kw)
    assert host == pytest.approx(1000 / (1.8 + 3.2 * 0.5))
    out = lk.predict_decode(np.array([[1.0, 0.6]]), link_gbps=1.0, base_ms=1.8, **kw)
    assert out.shape == (1, 2) and out[0, 0] == pytest.approx(1000 / 1.8)
    # a batch of 2 tokens over E = 8: 8 * (1 - (1/2)**2) = 6 distinct experts per layer
    b2 = lk.predict_decode(0.5, link_gbps=1.0, batch_size=2, num_experts=8, **kw)
    assert b2 == pytest.approx(2000 / (0.5 * 2 * 6 * 1.0))


def test_calibration_recovers_the_model():
    kw = dict(num_layers=48, top_k=8, expert_bytes=2_654_208)
    hits = [0.37, 0.6, 0.81, 0.96]
    tps = lk.predict_decode(hits, link_gbps=12.5, base_ms=9.0, **kw)
    base, gbps = lk.calibrate_decode(list(zip(hits[:2], tps[:2], strict=True)), **kw)
    assert base == pytest.approx(9.0) and gbps == pytest.approx(12.5)
    pred = lk.predict_decode(hits, calibrate=list(zip(hits[:2], tps[:2], strict=True)), **kw)
    np.testing.assert_allclose(pred, tps)


def test_decode_errors():
    kw = dict(num_layers=2, top_k=2, expert_bytes=1000)
    with pytest.raises(ValueError, match="needs link_gbps"):
        lk.predict_decode(0.5, **kw)
    with pytest.raises(ValueError, match="not both"):
        lk.predict_decode(0.5, link_gbps=1.0, calibrate=[(0.1, 5), (0.9, 9)], **kw)
    with pytest.raises(ValueError, match=r"hit_rate must lie in \[0, 1\]"):
        lk.predict_decode(1.5, link_gbps=1.0, **kw)
    with pytest.raises(ValueError, match="link_gbps must be > 0"):
        lk.predict_decode(0.5, link_gbps=0, **kw)
    with pytest.raises(TypeError, match="overlap must be a real number"):
        lk.predict_decode(0.5, link_gbps=1.0, overlap=True, **kw)
    with pytest.raises(ValueError, match=r"overlap must be in \[0, 1\]"):
        lk.predict_decode(0.5, link_gbps=1.0, overlap=2, **kw)
    with pytest.raises(ValueError, match="needs num_experts"):
        lk.predict_decode(0.5, link_gbps=1.0, batch_size=4, **kw)
    with pytest.raises(ValueError, match="two or more"):
        lk.calibrate_decode([(0.5, 10.0)], **kw)
    with pytest.raises(ValueError, match="two different hit rates"):
        lk.calibrate_decode([(0.5, 10.0), (0.5, 11.0)], **kw)
    with pytest.raises(ValueError, match="do not get slower"):
        lk.calibrate_decode([(0.2, 10.0), (0.9, 5.0)], **kw)


# ---------------------------------------------------------------- expert sizes
QWEN3_30B = {  # Qwen/Qwen3-30B-A3B config.json (the keys the planner reads)
    "model_type": "qwen3_moe",
    "hidden_size": 2048,
    "moe_intermediate_size": 768,
    "num_hidden_layers": 48,
    "num_experts": 128,
    "num_experts_per_tok": 8,
    "decoder_sparse_step": 1,
    "mlp_only_layers": [],
}


def test_expert_bytes_of_the_families(tmp_path):
    import json

    assert lk.expert_bytes(QWEN3_30B, bits=16) == 3 * 2048 * 768 * 2
    assert lk.expert_bytes(QWEN3_30B, bits=4.5) == int(np.ceil(3 * 2048 * 768 * 4.5 / 8))
    cfg = lk.moe_config(QWEN3_30B)
    assert (cfg["num_layers"], cfg["num_experts"], cfg["top_k"]) == (48, 128, 8)
    mixtral = {
        "model_type": "mixtral", "hidden_size": 4096, "intermediate_size": 14336,
        "num_hidden_layers": 32, "num_local_experts": 8, "num_experts_per_tok": 2,
    }  # fmt: skip
    assert lk.expert_bytes(mixtral) == 3 * 4096 * 14336 * 2
    v3 = {
        "model_type": "deepseek_v3", "hidden_size": 7168, "moe_intermediate_size": 2048,
        "num_hidden_layers": 61, "n_routed_experts": 256, "num_experts_per_tok": 8,
        "first_k_dense_replace": 3,
    }  # fmt: skip
    cfg = lk.moe_config(v3)
    assert cfg["num_layers"] == 58 and cfg["moe_layers"][0] == 3
    assert lk.expert_bytes(v3, bits=8) == 3 * 7168 * 2048
    sparse = {**QWEN3_30B, "decoder_sparse_step": 2, "mlp_only_layers": [1, 5]}
    assert lk.moe_config(sparse)["moe_layers"][:3] == [3, 7, 9]
    p = tmp_path / "config.json"
    p.write_text(json.dumps(QWEN3_30B))
    assert lk.expert_bytes(p) == lk.expert_bytes(str(tmp_path)) == 3 * 2048 * 768 * 2
    with pytest.raises(ValueError, match="unknown model_type 'llama'"):
        lk.expert_bytes({"model_type": "llama"})
    with pytest.raises(ValueError, match="has no 'moe_intermediate_size'"):
        lk.expert_bytes({k: v for k, v in QWEN3_30B.items() if k != "moe_intermediate_size"})
    with pytest.raises(ValueError, match=r"bits must be in \(0, 64\]"):
        lk.expert_bytes(QWEN3_30B, bits=0)


def test_expert_bytes_reads_transformers_configs():
    transformers = pytest.importorskip("transformers")
    for cls in ("Qwen3MoeConfig", "MixtralConfig", "DeepseekV3Config", "OlmoeConfig"):
        config = getattr(transformers, cls)()
        cfg = lk.moe_config(config)
        assert cfg["expert_params"] > 0 and cfg["num_layers"] >= 1
    d = transformers.DeepseekV3Config()
    assert lk.moe_config(d)["num_layers"] == d.num_hidden_layers - d.first_k_dense_replace
    assert lk.moe_config(d)["num_experts"] == d.n_routed_experts
