"""The real FLAME-MoE-290M routing trace (read from ../shared; skipped when absent)."""

from __future__ import annotations

import numpy as np
import pytest

import lrc_kernels as lk


def test_flame_shape(flame_trace):
    assert flame_trace.num_sequences == 4
    assert (flame_trace.num_layers, flame_trace.num_experts, flame_trace.top_k) == (8, 64, 6)


@pytest.mark.parametrize("level", ["model", "layer", "expert"])
def test_flame_srp_cpu_equals_reference(flame_trace, level):
    # the reference counts windows one by one: two layers keep it to a few seconds
    tr = flame_trace.select(layers=[0, 5], sequences=[0, 3])
    ms = [1, 4, 37]
    a = lk.srp(tr, ms, level=level, backend="reference")
    b = lk.srp(tr, ms, level=level, backend="cpu")
    np.testing.assert_array_equal(a.value, b.value)
    np.testing.assert_array_equal(a.threshold, b.threshold)
    for ha, hb in zip(a.histogram, b.histogram, strict=True):
        np.testing.assert_array_equal(ha, hb)


@pytest.mark.parametrize("policy", ["lru", "lfu", "belady", "sch"])
def test_flame_layer_curves_cpu_equal_reference(flame_trace, policy):
    tr = flame_trace.select(layers=[1, 6], sequences=[1, 2])
    m = 16 if policy == "sch" else None
    a = lk.hit_curve(tr, policy, m=m, backend="reference")
    b = lk.hit_curve(tr, policy, m=m, backend="cpu")
    np.testing.assert_array_equal(a.stat, b.stat)
    np.testing.assert_array_equal(a.rates, b.rates)


@pytest.mark.parametrize("policy", ["sch", "lru"])
def test_flame_model_level_cpu_equals_reference(flame_trace, policy):
    tr = flame_trace.select(layers=[0, 1, 2, 3], sequences=[0])
    m = 8 if policy == "sch" else None
    a = lk.hit_curve(tr, policy, m=m, level="model", backend="reference")
    b = lk.hit_curve(tr, policy, m=m, level="model", backend="cpu")
    np.testing.assert_array_equal(a.stat, b.stat)


def test_flame_low_locality_is_visible(flame_trace):
    """FLAME is a low-consistency model: SCH at rho = 2 stays far below 1, and SRP grows
    towards 1 only as the segment shrinks to one token."""
    s = lk.sch(flame_trace, 16)
    h = s.at(2)
    assert h.shape == (8,)
    assert (h < 0.6).all() and (h > 0.15).all()
    r = lk.srp(flame_trace, [1, 4, 16, 64])
    assert float(r.value[0]) == 1.0
    assert (np.diff(r.value) < 0).all()
