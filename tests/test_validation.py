"""Bad input gets a clear error that says what is wrong, where, and how to fix it."""

from __future__ import annotations

import numpy as np
import pytest

import lrc_kernels as lk

GOOD = np.array([[[0, 1]], [[1, 2]], [[2, 3]]])  # (T=3, L=1, k=2)


def trace(**kw):
    args = dict(num_experts=4)
    args.update(kw)
    x = args.pop("experts", GOOD)
    off = args.pop("offsets", None)
    return lk.Trace(x, off, **args)


@pytest.mark.parametrize(
    "bad,where",
    [
        (-1, "is negative"),
        (4, "is >= num_experts = 4"),
        (200, "is >= num_experts = 4"),
    ],
)
def test_ids_out_of_range_name_the_place(bad, where):
    x = GOOD.copy()
    x[2, 0, 1] = bad
    msg = rf"sequence 1, token 0, layer 0, slot 1: expert id -?\d+ {where}"
    with pytest.raises(ValueError, match=msg):
        lk.Trace(x, [0, 2, 3], num_experts=4)


def test_duplicate_within_token():
    x = np.array([[[0, 1], [2, 3]], [[1, 1], [0, 2]]])
    msg = r"sequence 0, token 1, layer 0: expert id 1 appears twice"
    with pytest.raises(ValueError, match=msg):
        lk.Trace(x, num_experts=4)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.bool_, object])
def test_non_integer_dtypes(dtype):
    with pytest.raises(TypeError, match="integer dtype"):
        lk.Trace(GOOD.astype(dtype), num_experts=4)
    with pytest.raises(TypeError, match="integer dtype"):
        lk.srp(GOOD.astype(dtype), 2, num_experts=4)


def test_float_hint_mentions_top_k():
    with pytest.raises(TypeError, match="top-k"):
        lk.sch(np.zeros((4, 2, 8), np.float32), 2, num_experts=8)


@pytest.mark.parametrize("shape", [(3,), (2, 2, 2, 2, 2)])
def test_wrong_ndim(shape):
    with pytest.raises(ValueError, match="ndim"):
        lk.srp(np.zeros(shape, np.int64), 2, num_experts=4)
    with pytest.raises(ValueError, match="ndim"):
        lk.Trace(np.zeros(shape, np.int64), num_experts=4)


def test_zero_slots_and_zero_layers():
    with pytest.raises(ValueError, match="k = 0"):
        lk.Trace(np.zeros((3, 1, 0), np.int64), num_experts=4)
    with pytest.raises(ValueError, match="0 layers"):
        lk.Trace(np.zeros((3, 0, 2), np.int64), num_experts=4)


def test_k_larger_than_num_experts():
    with pytest.raises(ValueError, match="exceeds num_experts"):
        lk.Trace(np.array([[[0, 1, 2]]]), num_experts=2)


@pytest.mark.parametrize(
    "off,msg",
    [
        ([1, 3], "start at 0"),
        ([0, 2, 1, 3], "non-decreasing"),
        ([0, 2], "end at the number of token rows N = 3"),
        ([0, 4], "end at the number of token rows"),
        ([[0, 3]], "1-D"),
        ([0.0, 3.0], "integer dtype"),
    ],
)
def test_bad_offsets(off, msg):
    with pytest.raises((ValueError, TypeError), match=msg):
        lk.Trace(GOOD, off, num_experts=4)


@pytest.mark.parametrize("E", [0, -3])
def test_num_experts_not_positive(E):
    with pytest.raises(ValueError, match="num_experts must be >= 1"):
        lk.Trace(GOOD, num_experts=E)


@pytest.mark.parametrize("E", [None, 2.0, "4", True])
def test_num_experts_wrong_type(E):
    with pytest.raises(TypeError, match="num_experts"):
        lk.Trace(GOOD, num_experts=E)


def test_num_experts_too_small():
    with pytest.raises(ValueError, match=">= num_experts = 3"):
        lk.Trace(GOOD, num_experts=3)


@pytest.mark.parametrize(
    "shape", [(4, 2), (4, 1, 2), (2, 4, 1, 2)], ids=["(T,k)", "(T,L,k)", "(S,T,L,k)"]
)
@pytest.mark.parametrize(
    "call",
    [
        lambda x: lk.srp(x, 2),
        lambda x: lk.sch(x, 2),
        lambda x: lk.hit_curve(x, "lru"),
        lambda x: lk.as_trace(x),
        lambda x: lk.load_balance(x),
    ],
    ids=["srp", "sch", "hit_curve", "as_trace", "load_balance"],
)
def test_plain_array_needs_num_experts(shape, call):
    # E is never guessed from the ids (here max id + 1 = 3 would be wrong for E = 8)
    x = np.resize(np.array([0, 1, 1, 2]), shape)
    with pytest.raises(ValueError, match=r"num_experts is required .*pass num_experts=E") as ei:
        call(x)
    assert f"shape {shape}" in str(ei.value)


def test_plain_array_with_num_experts_keeps_e():
    x = np.array([[0, 1], [1, 2]])
    c = lk.sch(x, 2, num_experts=8)
    assert c.rates.shape == (1, 8) and c.num_experts == 8
    assert lk.srp(x[:, None, :], 2, num_experts=8).histogram.shape[-1] == 3


def test_num_experts_disagrees_with_trace():
    with pytest.raises(ValueError, match="disagrees"):
        lk.srp(trace(), 2, num_experts=5)


@pytest.mark.parametrize("m", [0, -1])
def test_m_below_one(m):
    with pytest.raises(ValueError, match="m must be >= 1"):
        lk.srp(trace(), m)
    with pytest.raises(ValueError, match="m must be >= 1"):
        lk.sch(trace(), m)


@pytest.mark.parametrize("m", [2.0, 2.5, "2", None, True])
def test_m_not_an_integer(m):
    with pytest.raises((TypeError, ValueError), match="m"):
        lk.srp(trace(), m)


def test_m_list_checks_every_entry():
    with pytest.raises(ValueError, match="m must be >= 1"):
        lk.srp(trace(), [2, 0])
    with pytest.raises(ValueError, match="empty"):
        lk.srp(trace(), [])


def test_unknown_level_policy_backend():
    with pytest.raises(ValueError, match="unknown level 'token'"):
        lk.srp(trace(), 2, level="token")
    with pytest.raises(ValueError, match="unknown level 'expert'"):
        lk.sch(trace(), 2, level="expert")
    with pytest.raises(ValueError, match="unknown policy 'opt'"):
        lk.hit_curve(trace(), "opt")
    with pytest.raises(ValueError, match="unknown backend 'tpu'"):
        lk.srp(trace(), 2, backend="tpu")
    with pytest.raises(ValueError, match="unknown backend"):
        lk.sch(trace(), 2, backend="CPU")


def test_sch_policy_needs_m_and_others_refuse_it():
    with pytest.raises(ValueError, match="needs the future window m"):
        lk.hit_curve(trace(), "sch")
    with pytest.raises(ValueError, match="only to policy='sch'"):
        lk.hit_curve(trace(), "lru", m=4)


@pytest.mark.parametrize("rho", [0, -1, 2.5, 3, float("nan"), 0.25])
def test_rho_outside_range_or_not_whole(rho):
    c = lk.sch(trace(), 2)  # E = 4, k = 2: rho in {0.5, 1, 1.5, 2}
    with pytest.raises(ValueError, match="rho"):
        c.at(rho)
    assert c.at(2).shape == (1,)
    assert c.at([0.5, 1, 1.5, 2]).shape == (1, 4)


def test_model_level_rho_uses_all_layers():
    x = np.array([[[0, 1], [2, 3]], [[1, 2], [0, 1]]])
    c = lk.sch(x, 2, level="model", num_experts=4)
    assert c.rates.shape == (8,)
    assert float(c.at(2)) == c.rates[-1]  # rho = 2 is C = L*k*2 = 8
    with pytest.raises(ValueError, match="rho"):
        c.at(2.5)


@pytest.mark.parametrize("w", [np.nan, -0.1, np.inf])
def test_bad_weights(w):
    weights = np.full(GOOD.shape, 0.5)
    weights[1, 0, 0] = w
    with pytest.raises(ValueError, match="sequence 0, token 1, layer 0, slot 0"):
        trace(weights=weights)


def test_weights_shape_and_dtype():
    with pytest.raises(ValueError, match="shape"):
        trace(weights=np.ones((3, 1, 3)))
    with pytest.raises(TypeError, match="floating"):
        trace(weights=np.ones(GOOD.shape, np.int64))


def test_domains_wrong_length():
    with pytest.raises(ValueError, match="2 labels but the trace has 1 sequences"):
        trace(domains=["a", "b"])


def test_by_domain_without_labels():
    with pytest.raises(ValueError, match="domain labels"):
        lk.srp(trace(), 2, by_domain=True)


def test_bootstrap_confidence_seed_arguments():
    with pytest.raises(ValueError, match="bootstrap must be >= 0"):
        lk.srp(trace(), 2, bootstrap=-1)
    with pytest.raises(TypeError, match="bootstrap"):
        lk.srp(trace(), 2, bootstrap=10.5)
    for conf in (0, 1, 1.5, -0.2):
        with pytest.raises(ValueError, match="confidence"):
            lk.srp(trace(), 2, bootstrap=10, confidence=conf)
    with pytest.raises(ValueError, match="seed"):
        lk.srp(trace(), 2, bootstrap=10, seed=-1)


def test_warm_start_must_be_bool():
    with pytest.raises(TypeError, match="warm_start"):
        lk.sch(trace(), 2, warm_start="no")


def test_path_given_to_as_trace():
    with pytest.raises(TypeError, match="read_trace"):
        lk.as_trace("some/file.arrow")


def test_gpu_backend_without_device_is_a_clear_error():
    from conftest import gpu_available

    if gpu_available():
        pytest.skip("a GPU is present")
    with pytest.raises((RuntimeError, ImportError), match="(?i)gpu|cupy|cuda"):
        lk.srp(trace(), 2, backend="gpu")


def test_empty_trace_and_short_sequences_have_defined_results():
    empty = lk.Trace(np.zeros((0, 2, 2), np.int64), num_experts=4)
    r = lk.srp(empty, 3, level="layer")
    assert r.value.tolist() == [0.0, 0.0] and np.isnan(r.ratio).all()
    assert int(r.windows) == 0
    c = lk.sch(empty, 3)
    assert c.rates.shape == (2, 4) and np.isnan(c.rates).all()
    short = lk.srp(trace(), 10)  # T = 3 < m
    assert float(short.value) == 0.0 and int(short.windows) == 0
    assert lk.sch(trace(), 10).rates[0, -1] == 1.0  # m > T is fine for SCH


def test_no_input_crashes_the_interpreter_on_out_of_range_after_construction():
    """Ids are validated before any kernel runs: an id >= E never reaches Numba."""
    x = GOOD.copy()
    x[0, 0, 0] = 1000
    for fn in (lambda: lk.srp(x, 2, num_experts=4), lambda: lk.sch(x, 2, num_experts=4)):
        with pytest.raises(ValueError, match="1000"):
            fn()


def test_trace_without_sequences():
    t = lk.Trace(np.zeros((0, 2, 2), np.int64), [0], num_experts=4, domains=[])
    assert t.num_sequences == 0
    assert lk.srp(t, [2, 3]).value.tolist() == [0.0, 0.0]
    r = lk.srp(t, [2, 3], by_domain=True, level="layer", bootstrap=5)
    assert r.value.shape == (2, 0, 2) and r.ci[0].shape == (2, 0, 2)
    assert r.domains == []
    assert lk.sch(t, 2, by_domain=True).rates.shape == (0, 2, 4)
    assert np.isnan(lk.sch(t, 2).rates).all()


def test_absurd_expert_counts_are_refused_before_allocating():
    x = np.array([[[0, 1]], [[1, 2]]])
    with pytest.raises(ValueError, match="beyond the stack engine's limit"):
        lk.sch(x, 2, num_experts=1 << 25)
    with pytest.raises(ValueError, match="beyond the stack engine's limit"):
        lk.hit_curve(np.stack([x[:, 0]] * 3, axis=1), "lru", level="model", num_experts=1 << 23)


def _message(call):
    with pytest.raises((TypeError, ValueError)) as exc:
        call()
    return str(exc.value)


@pytest.mark.parametrize(
    "call, plain",
    [
        (lambda c, t: c.at(np.float64(0.75)), "rho = 0.75 does not give a whole cache size "
         "(rho * 2 = 1.5)"),
        (lambda c, t: c.at(np.array([0.5, 1.25])), "rho = 1.25 does not"),
        (lambda c, t: c.at([1, np.float64(2.5)]), "rho = 2.5 is outside (0, 2]"),
        (lambda c, t: c.at(np.array([np.inf])), "rho must be a finite number, got inf"),
        (lambda c, t: lk.srp(t, np.float64(2.5)), "m must be an integer, got 2.5"),
        (lambda c, t: lk.srp(t, np.float64(2.0)), "got the float 2.0; use int(2.0)"),
        (lambda c, t: lk.srp(t, [np.int64(0)]), "m must be >= 1, got 0"),
        (lambda c, t: lk.srp(t, 2, confidence=np.float64(1.79)), "and 1, got 1.79"),
        (lambda c, t: lk.srp(t, 2, bootstrap=np.int64(-2)), "bootstrap must be >= 0, got -2"),
        (lambda c, t: trace(num_experts=np.float64(4.0)), "positive integer, got 4.0"),
        (lambda c, t: t.split(np.float64(2.5)), "positive integer, got 2.5"),
        (lambda c, t: t.select(layers=np.array([3])), "layers [3] out of range"),
        (lambda c, t: lk.synthetic_trace(np.float64(2), 8, 1, 4, 2), "got the float 2.0"),
    ],
)  # fmt: skip
def test_errors_print_plain_numbers(call, plain):
    """NumPy values in a message print as numbers, never np.float64(...) or array(...)."""
    t = trace()
    msg = _message(lambda: call(lk.sch(t, 2), t))
    assert plain in msg
    assert "np." not in msg and "array(" not in msg and "int64" not in msg


def test_overflowing_gate_weight_prints_a_plain_number(tmp_path):
    weights = np.full(GOOD.shape, 0.5, np.float32)
    weights[1, 0, 0] = 70000.0  # beyond float16
    t = trace(weights=weights)
    opts = dict(num_experts=4, top_k=2, num_layers=1, weights_dtype="float16")
    with lk.TraceWriter(tmp_path / "w.lrc.arrow", **opts) as w:
        msg = _message(lambda: w.write(t))
    assert "gate weight 70000.0 at token 1, layer 0, slot 0" in msg and "np." not in msg
