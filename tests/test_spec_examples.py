"""The worked examples of SPEC (docs/metrics.md) as exact tests, through the public API,
for every backend available. Expected values are the SPEC's fractions; each computed
float must equal the correctly rounded fraction exactly."""

from __future__ import annotations

from fractions import Fraction as F

import numpy as np
import pytest
from conftest import backends_under_test

import lrc_kernels as lk

BACKENDS = backends_under_test()

EX1 = np.array([[0, 1], [0, 1], [1, 2], [0, 1], [2, 3], [2, 3], [0, 2], [0, 1]])
L0 = [[0, 1], [0, 1], [0, 2], [1, 2], [2, 3], [2, 3], [0, 3], [2, 3]]
L1 = [[3, 2], [3, 2], [3, 1], [1, 0], [1, 0], [0, 1], [0, 2], [2, 0]]
EX2 = np.stack([np.array(L0), np.array(L1)], axis=1)  # (T=8, L=2, k=2)


def exact(values, fractions):
    """Every float equals float(fraction): same correctly rounded value, bit for bit."""
    got = np.asarray(values, dtype=np.float64).ravel().tolist()
    want = [float(f) for f in fractions]
    assert got == want, f"{got} != {want}"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "policy,m,sixteenths",
    [
        ("lru", None, [4, 10, 13, 16]),
        ("lfu", None, [4, 8, 13, 16]),
        ("belady", None, [4, 11, 14, 16]),
        ("sch", 1, [4, 10, 13, 16]),
        ("sch", 2, [4, 11, 14, 16]),
        ("sch", 4, [4, 11, 14, 16]),
    ],
)
def test_example1_hit_curves(backend, policy, m, sixteenths):
    c = lk.hit_curve(EX1, policy, m=m, num_experts=4, backend=backend)
    assert c.rates.shape == (1, 4)
    exact(c.rates, [F(v, 16) for v in sixteenths])
    if policy == "sch":
        exact(lk.sch(EX1, m, num_experts=4, backend=backend).rates, [F(v, 16) for v in sixteenths])


@pytest.mark.parametrize("backend", BACKENDS)
def test_example1_srp_m2(backend):
    r = lk.srp(EX1, 2, level="expert", num_experts=4, backend=backend)
    assert r.histogram[0].tolist() == [[1, 4, 2], [2, 2, 3], [1, 4, 2], [4, 2, 1]]
    exact(r.value, [F(4, 5), F(8, 9), F(4, 5), F(4, 5)])
    lay = lk.srp(EX1, 2, level="layer", num_experts=4, backend=backend)
    assert lay.histogram.tolist() == [[8, 12, 8]]
    exact(lay.value, [F(14, 17)])
    assert lay.threshold.tolist() == [1]
    # preds(1) / acts = 40 / 28
    exact(lay.ratio, [F(40, 28)])
    # one layer: the model level is the layer level
    mod = lk.srp(EX1, 2, level="model", num_experts=4, backend=backend)
    exact([mod.value], [F(14, 17)])


@pytest.mark.parametrize("backend", BACKENDS)
def test_example1_srp_m4(backend):
    lay = lk.srp(EX1, 4, level="layer", num_experts=4, backend=backend)
    assert lay.histogram.tolist() == [[1, 5, 8, 5, 1]]
    exact(lay.value, [F(35, 48)])
    assert lay.threshold.tolist() == [2]
    exact(lay.ratio, [F(56, 40)])
    ex = lk.srp(EX1, 4, level="expert", num_experts=4, backend=backend)
    exact(ex.value, [F(9, 13), F(18, 23), F(11, 14), F(12, 19)])


@pytest.mark.parametrize("backend", BACKENDS)
def test_example2_srp(backend):
    r4 = lk.srp(EX2, 4, level="layer", num_experts=4, backend=backend)
    exact(r4.value, [F(17, 22), F(18, 23)])
    assert r4.threshold.tolist() == [2, 2]
    exact(r4.ratio[:1], [F(6, 5)])
    m4 = lk.srp(EX2, 4, level="model", num_experts=4, backend=backend)
    assert m4.value.shape == ()
    exact([m4.value], [F(7, 9)])
    assert int(m4.threshold) == 2
    exact([m4.ratio], [F(5, 4)])
    assert m4.histogram.tolist() == [5, 10, 10, 10, 5]
    ex = lk.srp(EX2, 4, level="expert", num_experts=4, backend=backend)
    exact(ex.value[0], [F(5, 8), F(2, 3), F(6, 7), F(9, 11)])
    r2 = lk.srp(EX2, 2, level="layer", num_experts=4, backend=backend)
    exact(r2.value, [F(28, 33), F(28, 31)])
    m2 = lk.srp(EX2, 2, num_experts=4, backend=backend)
    exact([m2.value], [F(7, 8)])
    assert int(m2.threshold) == 1
    # a list of m adds a leading axis, in the order given
    both = lk.srp(EX2, [4, 2], num_experts=4, backend=backend)
    exact(both.value, [F(7, 9), F(7, 8)])


@pytest.mark.parametrize("backend", BACKENDS)
def test_example2_layer_level_caches(backend):
    s = lk.sch(EX2, 4, num_experts=4, backend=backend)
    assert s.rates.shape == (2, 4)
    exact(s.rates[0], [F(7, 16), F(12, 16), F(15, 16), F(1)])
    exact(s.rates[1], [F(6, 16), F(13, 16), F(15, 16), F(1)])
    for policy, v in [("lru", 11), ("lfu", 11), ("belady", 12)]:
        c = lk.hit_curve(EX2, policy, num_experts=4, backend=backend)
        exact([c.rates[0, 1]], [F(v, 16)])
        exact([c.at(1)[0]], [F(v, 16)])  # rho = 1 is C = k = 2


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "policy,m,in32",
    [
        ("sch", 4, [6, 14, 21, 26, 28, 30, 31, 32]),
        ("lru", None, [6, 13, 20, 24, 25, 28, 30, 32]),
        ("lfu", None, [6, 11, 15, 18, 22, 27, 29, 32]),
        ("belady", None, [6, 14, 21, 26, 28, 30, 31, 32]),
    ],
)
def test_example2_model_level(backend, policy, m, in32):
    c = lk.hit_curve(EX2, policy, m=m, level="model", num_experts=4, backend=backend)
    assert c.rates.shape == (8,)
    exact(c.rates, [F(v, 32) for v in in32])


@pytest.mark.parametrize("backend", BACKENDS)
def test_example2_model_sch_at_rho1_is_not_layer_mean(backend):
    mod = lk.sch(EX2, 4, level="model", num_experts=4, backend=backend)
    lay = lk.sch(EX2, 4, level="layer", num_experts=4, backend=backend)
    assert float(mod.at(1)) == 0.8125
    assert float(np.mean(lay.at(1))) == 0.78125
