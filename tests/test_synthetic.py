"""The synthetic trace generator: valid, deterministic, and its knobs do what they say."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import lrc_kernels as lk
from lrc_kernels.synthetic import synthetic_trace


def _revalidate(tr: lk.Trace) -> None:
    # the public constructor runs every range and duplicate check the generator skipped
    lk.Trace(tr.experts, tr.offsets, num_experts=tr.num_experts, domains=tr.domains)


def _overlap(tr: lk.Trace) -> float:
    """Mean share of a token's experts that the previous token of its sequence also used."""
    x = tr.experts.astype(np.int64)
    E = tr.num_experts
    onehot = np.zeros((x.shape[0], x.shape[1], E), bool)
    np.put_along_axis(onehot, x, True, axis=2)
    same = (onehot[1:] & onehot[:-1]).sum(axis=2)  # (N-1, L)
    starts = tr.offsets[1:-1]
    keep = np.ones(x.shape[0] - 1, bool)
    keep[starts[(starts > 0) & (starts < x.shape[0])] - 1] = False  # pairs across sequences
    return float(same[keep].mean() / tr.top_k)


@given(
    S=st.integers(0, 4),
    lengths=st.lists(st.integers(0, 40), min_size=4, max_size=4),
    L=st.integers(1, 3),
    E=st.sampled_from([1, 2, 7, 64, 256, 257, 1000]),
    kf=st.floats(0, 1),
    stay=st.sampled_from([0.0, 0.3, 1.0]),
    skew=st.sampled_from([0.0, 1.0, 3.0]),
    seed=st.integers(0, 2**40),
)
def test_valid_and_deterministic(S, lengths, L, E, kf, stay, skew, seed):
    k = max(1, int(round(kf * min(E, 12))))
    lens = lengths[:S]
    a = synthetic_trace(S, lens, L, E, k, stay=stay, skew=skew, seed=seed)
    b = synthetic_trace(S, lens, L, E, k, stay=stay, skew=skew, seed=seed)
    assert a.experts.shape == (sum(lens), L, k)
    assert a.experts.dtype == np.dtype(np.uint8 if E <= 256 else np.uint16)
    assert list(a.lengths) == lens
    _revalidate(a)
    assert np.array_equal(a.experts, b.experts)


def test_seed_changes_trace():
    a = synthetic_trace(4, 64, 2, 64, 8, seed=1)
    b = synthetic_trace(4, 64, 2, 64, 8, seed=2)
    assert not np.array_equal(a.experts, b.experts)


def test_independent_of_thread_count():
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = synthetic_trace(9, 100, 3, 32, 4, stay=0.6, seed=5)
        numba.set_num_threads(before)
        many = synthetic_trace(9, 100, 3, 32, 4, stay=0.6, seed=5)
    finally:
        numba.set_num_threads(before)
    assert np.array_equal(one.experts, many.experts)


def test_stay_one_keeps_the_expert_set():
    tr = synthetic_trace(3, 50, 2, 64, 6, stay=1.0, seed=3)
    for seq in tr:
        sets = np.sort(seq.astype(int), axis=2)
        assert (sets == sets[:1]).all()
    # ... but the router order is still shuffled token by token
    assert not (tr.experts == tr.experts[:1]).all()


def test_locality_grows_with_stay():
    ov = [
        _overlap(synthetic_trace(40, 256, 2, 64, 8, stay=s, skew=0.0, seed=11))
        for s in (0.0, 0.5, 0.9)
    ]
    # fresh draws from a uniform popularity repeat a previous expert with chance about k/E
    assert ov[0] == pytest.approx(8 / 64, abs=0.02)
    assert ov[1] == pytest.approx(0.5 + 0.5 * 8 / 64, abs=0.03)
    assert ov[2] >= 0.9 - 0.01
    assert ov[0] < ov[1] < ov[2]


def test_skew_concentrates_popularity():
    flat = synthetic_trace(50, 200, 1, 32, 2, stay=0.0, skew=0.0, seed=2)
    steep = synthetic_trace(50, 200, 1, 32, 2, stay=0.0, skew=2.0, seed=2)
    cf = np.bincount(flat.experts.ravel(), minlength=32) / flat.experts.size
    cs = np.bincount(steep.experts.ravel(), minlength=32) / steep.experts.size
    assert cf.max() < 1.3 / 32 and cf.min() > 0.7 / 32
    assert cs.max() > 0.2  # the top expert of a Zipf(2) over 32 experts, k = 2


def test_k_equals_e_is_a_permutation():
    tr = synthetic_trace(2, 30, 2, 5, 5, stay=0.5, skew=3.0, seed=0)
    assert (np.sort(tr.experts, axis=2) == np.arange(5)).all()


def test_domains_blocks_and_labels():
    tr = synthetic_trace(7, 10, 1, 16, 2, domains=["web", "code"], seed=0)
    assert list(tr.domains) == ["web"] * 4 + ["code"] * 3
    tr = synthetic_trace(4, 10, 1, 16, 2, domains=2, seed=0)
    assert list(tr.domains) == ["domain0", "domain0", "domain1", "domain1"]
    assert synthetic_trace(4, 10, 1, 16, 2).domains is None


def test_domains_have_their_own_popularity():
    tr = synthetic_trace(40, 200, 1, 32, 2, stay=0.0, skew=2.0, seed=4, domains=2)
    a, b = tr.select(domain="domain0"), tr.select(domain="domain1")
    top_a = np.bincount(a.experts.ravel(), minlength=32).argmax()
    top_b = np.bincount(b.experts.ravel(), minlength=32).argmax()
    assert top_a != top_b  # the two domain rankings for seed 4 differ at the top


def test_meta_records_the_arguments():
    tr = synthetic_trace(1, 5, 1, 8, 2, stay=0.25, skew=0.5, seed=9)
    assert tr.meta["generator_args"] == {
        "stay": 0.25,
        "skew": 0.5,
        "seed": 9,
        "num_layers": 1,
        "num_experts": 8,
        "top_k": 2,
    }


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"top_k": 9}, "top_k"),
        ({"top_k": 0}, "top_k"),
        ({"num_layers": 0}, "num_layers"),
        ({"stay": 1.5}, "stay"),
        ({"skew": -1.0}, "skew"),
        ({"skew": float("nan")}, "skew"),
        ({"seq_len": [5, 5]}, "seq_len"),
        ({"seq_len": -1}, "seq_len"),
        ({"seed": -3}, "seed"),
        ({"domains": ["a", "a"]}, "distinct"),
        ({"domains": 0}, "domains"),
    ],
)
def test_bad_arguments(kwargs, match):
    args = {"num_sequences": 3, "seq_len": 5, "num_layers": 1, "num_experts": 8, "top_k": 2}
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=match):
        synthetic_trace(**args)


def test_exported_lazily():
    assert lk.synthetic_trace is synthetic_trace
