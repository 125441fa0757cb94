"""The reductions of ``lrc_kernels._reduce`` against the reference's exact-fraction oracles.

Random histograms and stack-depth tables go through ``_reduce`` (with the NumPy reductions
of the reference backend and the Numba reductions of the CPU/GPU backends); the expected
side is :func:`lrc_kernels.reference.srp_from_histogram` and
:func:`lrc_kernels.reference.hit_rates`, exact fractions. SRP values and ratios are one
correctly rounded division, so they must equal ``float(fraction)`` bit for bit; mean hit
curves within 1e-12.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lrc_kernels import _reduce
from lrc_kernels import reference as ref
from lrc_kernels._backends import NumbaReductions, NumpyReductions, reductions

REDS = [NumpyReductions(), NumbaReductions()]
IDS = ["numpy", "numba"]


@st.composite
def histograms(draw, max_rows: int = 6, max_m: int = 40):
    """(rows, m + 1) int64 counts: sparse, dense, all-zero rows, large counts."""
    m = draw(st.integers(1, max_m))
    rows = draw(st.integers(0, max_rows))
    hi = draw(st.sampled_from([3, 1000, 2**31]))
    zero_p = draw(st.sampled_from([0.0, 0.5, 0.9, 1.0]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    H = rng.integers(0, hi, size=(rows, m + 1), dtype=np.int64)
    H[rng.random(H.shape) < zero_p] = 0
    return H, m


def _oracle(H, m):
    out = [ref.srp_from_histogram([int(v) for v in row], m) for row in H]
    f1 = [float(v) for v, _, _ in out]
    thr = [p for _, p, _ in out]
    ratio = [float("nan") if r is None else float(r) for _, _, r in out]
    return f1, thr, ratio


@pytest.mark.parametrize("red", REDS, ids=IDS)
@given(hm=histograms())
def test_best_equals_exact_srp_from_histogram(red, hm):
    H, m = hm
    f1, thr, ratio = _reduce.best(H, m, red)
    want_f1, want_thr, want_ratio = _oracle(H, m)
    assert f1.tolist() == want_f1
    assert thr.tolist() == want_thr
    np.testing.assert_array_equal(ratio, np.asarray(want_ratio, np.float64))


@given(hm=histograms(max_rows=4, max_m=12), lead=st.sampled_from([(), (2,), (2, 3)]))
def test_best_keeps_leading_axes(hm, lead):
    H, m = hm
    H = np.resize(H if H.size else np.zeros((1, m + 1), np.int64), lead + (m + 1,))
    f1, thr, ratio = _reduce.best(H, m, NumpyReductions())
    assert f1.shape == thr.shape == ratio.shape == lead
    want_f1, want_thr, _ = _oracle(H.reshape(-1, m + 1), m)
    assert f1.ravel().tolist() == want_f1
    assert thr.ravel().tolist() == want_thr


def test_best_all_zero_histogram_is_zero_with_nan_ratio():
    for red in REDS:
        f1, thr, ratio = _reduce.best(np.zeros((1, 5), np.int64), 4, red)
        assert f1.tolist() == [0.0] and thr.tolist() == [0] and np.isnan(ratio).all()


@st.composite
def class_tables(draw):
    """Per-sequence stack-depth vectors grouped in (domain, length) classes.

    Returns the class tables and keys ``curves`` reads, plus every sequence's
    (domain, length, stat) for the oracle.
    """
    L = draw(st.integers(1, 3))
    n_ids = draw(st.integers(1, 10))
    A = draw(st.integers(1, 4))
    D = draw(st.integers(1, 3))
    S = draw(st.integers(1, 8))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    seqs = []
    for _ in range(S):
        d = int(rng.integers(0, D))
        T = int(rng.integers(0, 6))
        stat = np.stack(
            [rng.multinomial(T * A, rng.dirichlet(np.ones(n_ids + 1))) for _ in range(L)]
        )
        seqs.append((d, T, stat.astype(np.int64)))
    keys: list[tuple[int, int]] = []
    for d, T, _ in seqs:
        if (d, T) not in keys:
            keys.append((d, T))
    tab = np.zeros((len(keys), L, n_ids + 1), np.int64)
    for d, T, stat in seqs:
        tab[keys.index((d, T))] += stat
    return tab, keys, A, D, L, n_ids, seqs


@given(ct=class_tables())
def test_curves_equal_mean_of_exact_hit_rates(ct):
    tab, keys, A, D, L, n_ids, seqs = ct
    rates, stat_sum, nseq = _reduce.curves(tab, keys, A, D, False, L, n_ids)
    assert rates.shape == (D, L, n_ids)
    for d in range(D):
        mine = [(T, stat) for dd, T, stat in seqs if dd == d and T > 0]
        assert int(nseq[d]) == len(mine)
        if not mine:
            assert np.isnan(rates[d]).all()
            continue
        for l in range(L):
            per_seq = [ref.hit_rates(stat[l].tolist(), T * A) for T, stat in mine]
            mean = [sum(col, Fraction(0)) / len(mine) for col in zip(*per_seq, strict=True)]
            np.testing.assert_allclose(rates[d, l], [float(v) for v in mean], rtol=0, atol=1e-12)
        want_stat = sum(stat for _, stat in mine)
        np.testing.assert_array_equal(stat_sum[d], want_stat)


@given(ct=class_tables())
def test_curves_model_level_drops_the_layer_axis(ct):
    tab, keys, A, D, L, n_ids, seqs = ct
    one = tab[:, :1]
    rates, stat_sum, _ = _reduce.curves(one, keys, A, D, True, L, n_ids)
    lay, lay_stat, _ = _reduce.curves(one, keys, A, D, False, 1, n_ids)
    np.testing.assert_array_equal(rates, lay[:, 0])
    np.testing.assert_array_equal(stat_sum, lay_stat[:, 0])


@st.composite
def per_sequence_tables(draw):
    """(S, L, E, m + 1) per-sequence histograms of sequences with consistent windows."""
    S = draw(st.integers(1, 6))
    L = draw(st.integers(1, 2))
    E = draw(st.integers(1, 3))
    m = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    wl = rng.integers(0, 8, size=S)
    tab = np.zeros((S, L, E, m + 1), np.int64)
    for s in range(S):
        for l in range(L):
            for e in range(E):
                tab[s, l, e] = rng.multinomial(wl[s], rng.dirichlet(np.ones(m + 1)))
    return tab, wl.astype(np.int64), m


@pytest.mark.parametrize("level", ["model", "layer", "expert"])
@given(
    pt=per_sequence_tables(),
    B=st.integers(1, 30),
    seed=st.integers(0, 100),
    conf=st.sampled_from([0.5, 0.9, 0.95]),
)
def test_bootstrap_ci_equals_exact_resampled_srp(level, pt, B, seed, conf):
    """Each resample's SRP is the exact oracle of the resampled histogram; the interval is
    the basic bootstrap of those values, for the NumPy and the Numba reductions alike."""
    tab, wl, m = pt
    S = tab.shape[0]
    rows = _reduce.level_rows(tab.sum(axis=0)[None], level)  # (1, rows..., m+1)
    est, _, _ = _reduce.best(rows, m, NumpyReductions())
    W = _reduce.bootstrap_weights(S, B, seed)
    dom = np.zeros(S, np.int64)
    got = [
        _reduce.bootstrap_ci(tab, 0, rows, W, dom, level, m, wl, est, conf, False, red)
        for red in REDS
    ]
    np.testing.assert_array_equal(got[0][0], got[1][0])
    np.testing.assert_array_equal(got[0][1], got[1][1])
    lo, hi = got[0]
    flat_rows = rows[0].reshape(-1, m + 1).shape[0]
    vals = np.empty((B, flat_rows))
    for b in range(B):
        res = np.tensordot(W[b], tab, axes=1)[None]  # (1, L, E, m+1)
        res_rows = _reduce.level_rows(res, level)[0].reshape(-1, m + 1)
        vals[b] = [float(ref.srp_from_histogram(r.tolist(), m)[0]) for r in res_rows]
    q = np.quantile(vals, [(1 - conf) / 2, (1 + conf) / 2], axis=0)
    e = est[0].reshape(-1)
    np.testing.assert_array_equal(np.asarray(lo).reshape(-1), 2 * e - q[1])
    np.testing.assert_array_equal(np.asarray(hi).reshape(-1), 2 * e - q[0])


def test_weights_are_the_seeded_draws():
    W = _reduce.bootstrap_weights(5, 3, 7)
    draws = np.random.default_rng(7).integers(0, 5, size=(3, 5))
    for b in range(3):
        assert W[b].tolist() == np.bincount(draws[b], minlength=5).tolist()


def test_activation_ratio_is_acts_over_m_windows():
    tab = np.array([[[[1, 4, 2], [2, 2, 3]]]], np.int64)  # (D=1, L=1, E=2, m+1=3)
    r = _reduce.activation_ratio(tab, 2, np.array([7]), False)
    assert r.tolist() == [[float(Fraction(8, 14)), float(Fraction(8, 14))]]


def test_reductions_by_backend_name():
    assert isinstance(reductions("reference"), NumpyReductions)
    assert isinstance(reductions("cpu"), NumbaReductions)


def test_stratified_bootstrap_keeps_each_domain_size():
    strata = np.array([0, 0, 1, 2, 2, 2, 1, 0])
    W = _reduce.bootstrap_weights(strata.size, 200, 7, strata)
    for d in range(3):
        assert (W[:, strata == d].sum(axis=1) == (strata == d).sum()).all()
    # without strata: the historical draw, bit for bit (results of non-domain calls unchanged)
    rng = np.random.default_rng(7)
    draws = rng.integers(0, 8, size=(200, 8))
    old = np.bincount((draws + (np.arange(200) * 8)[:, None]).ravel(), minlength=1600)
    assert np.array_equal(_reduce.bootstrap_weights(8, 200, 7), old.reshape(200, 8))


def test_by_domain_interval_is_taken_within_domains():
    import lrc_kernels as lk

    # two sequences per domain: drawing all six together leaves a domain out of about 9 %
    # of the resamples, whose SRP of 0 pushed the upper bound to about 2 * estimate
    tr = lk.synthetic_trace(6, 40, 2, 8, 2, seed=1, domains=["a", "b", "c"])  # 2 each
    r = lk.srp(tr, 4, by_domain=True, bootstrap=200, seed=0)
    lo, hi = r.ci
    assert (hi <= 1).all() and (lo <= r.value).all() and (r.value <= hi).all()
    # a domain's interval depends only on that domain's sequences
    only_a = tr.select(sequences=[0, 1])
    ra = lk.srp(only_a, 4, bootstrap=200, seed=0)
    assert ra.value == r.value[0]


@given(
    R=st.integers(1, 12),
    m=st.integers(1, 9),
    B=st.integers(1, 40),
    S=st.integers(1, 6),
    block=st.integers(1, 20),
    seed=st.integers(0, 2**32 - 1),
)
def test_fused_resample_f1_equals_product_then_f1(R, m, B, S, block, seed):
    """The blocked, fused product + F1 of the CPU gives the unfused bits for any cut."""
    from lrc_kernels.cpu._srp import resample_best_f1

    rng = np.random.default_rng(seed)
    nb = rng.integers(0, m + 2, size=R)  # kept bins per row, some rows empty
    row_ptr = np.concatenate([[0], np.cumsum(nb)]).astype(np.int64)
    col_c = np.concatenate([np.sort(rng.choice(m + 1, n, replace=False)) for n in nb] + [[]])
    col_c = col_c.astype(np.int64)
    H = rng.integers(0, 50, size=(S, int(row_ptr[-1]))).astype(np.float32)
    W = rng.integers(0, 4, size=(B, S))
    want = NumpyReductions().resample_best_f1(W, H, row_ptr, col_c, m)
    got = resample_best_f1(W, H, row_ptr, col_c, m, block=block)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(NumbaReductions().resample_best_f1(W, H, row_ptr, col_c, m), want)


@given(
    shape=st.lists(st.integers(0, 5), min_size=1, max_size=3),
    S=st.integers(0, 9),
    seed=st.integers(0, 2**32 - 1),
)
def test_sum_sequences_cpu_equals_numpy(shape, S, seed):
    rng = np.random.default_rng(seed)
    t = rng.integers(0, 2**31 - 1, size=(S, *shape), dtype=np.int64).astype(np.int32)
    want = NumpyReductions().sum_sequences(t)
    got = NumbaReductions().sum_sequences(t)
    assert got.dtype == want.dtype == np.int64
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(want, t.astype(np.int64).sum(axis=0))


def test_sum_sequences_spans_several_column_blocks():
    t = np.arange(3 * 9000, dtype=np.int32).reshape(3, 9000)
    np.testing.assert_array_equal(NumbaReductions().sum_sequences(t), t.sum(axis=0))


def test_bootstrap_weights_are_drawn_once_and_read_only():
    strata = np.array([0, 1, 1, 0, 2])
    a = _reduce.bootstrap_weights(5, 30, 4, strata)
    b = _reduce.bootstrap_weights(5, 30, 4, strata.copy())
    assert a is b and not a.flags.writeable
    other = np.array([0, 1, 1, 0, 0])
    c = _reduce.bootstrap_weights(5, 30, 4, other)
    assert c is not a
    np.testing.assert_array_equal(c, _reduce._draw_weights(5, 30, 4, other))
    np.testing.assert_array_equal(a, _reduce._draw_weights(5, 30, 4, strata))


@pytest.mark.parametrize("serial_below", [0, 1 << 62], ids=["parallel", "serial"])
def test_serial_and_parallel_twins_agree_with_numpy(monkeypatch, serial_below):
    """Small calls run the serial twin of a kernel, large ones the parallel one: both exact."""
    from lrc_kernels.cpu import _srp

    monkeypatch.setattr(_srp, "_SERIAL_BELOW", serial_below)
    rng = np.random.default_rng(5)
    npr, nbr = NumpyReductions(), NumbaReductions()
    H = rng.integers(0, 30, size=(37, 6))
    for a, b in zip(nbr.best_f1_rows(H, 5), npr.best_f1_rows(H, 5), strict=True):
        np.testing.assert_array_equal(a, b)
    tab = rng.integers(0, 9, size=(7, 5, 12)).astype(np.int32)
    keep = np.array([0, 3, 4, 9, 20, 24], np.int64)
    np.testing.assert_array_equal(
        nbr.gather_bins(tab, 2, 4, keep, np.float32), npr.gather_bins(tab, 2, 4, keep, np.float32)
    )
    np.testing.assert_array_equal(nbr.sum_sequences(tab), npr.sum_sequences(tab))
    x = rng.random((41, 9))
    np.testing.assert_array_equal(
        nbr.column_quantiles(x, [0.025, 0.975]), npr.column_quantiles(x, [0.025, 0.975])
    )
