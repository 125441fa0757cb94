"""Per-size policies (fifo, clock, sieve, s3fifo, arc): the Numba kernels equal the plain
reference on hypothesis traces, at layer and model level, warm and cold; and the per-size
simulation, run with LRU, equals the stack engine at every size (docs/metrics.md,
"Policies without the stack property")."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import traces

import lrc_kernels as lk
from lrc_kernels import reference as ref
from lrc_kernels._spec import SIZE_POLICIES
from lrc_kernels.cpu import _policies

ALL = list(SIZE_POLICIES) + ["lru"]


def _both(tr, policy, sizes, model, warm, group, n_groups):
    args = (tr.experts, tr.offsets, tr.num_experts, policy, sizes, model, warm, group, n_groups)
    a = _policies.policy_hits_table(*args)
    b = ref.policy_hits_table(*args)
    assert a.dtype == np.int64 and b.dtype == np.int64
    assert a.shape == b.shape == (n_groups, 1 if model else tr.num_layers, len(sizes))
    assert np.array_equal(a, b), (policy, model, warm)
    return a


@settings(max_examples=30)
@given(
    tr=traces(max_sequences=3, max_len=20, max_layers=2, max_experts=24, max_k=4),
    model=st.booleans(),
    n_groups=st.integers(1, 2),
    data=st.data(),
)
def test_kernel_equals_reference(tr, model, n_groups, data):
    n_ids = tr.num_experts * (tr.num_layers if model else 1)
    group = np.asarray(
        data.draw(st.lists(st.integers(0, n_groups - 1), min_size=len(tr), max_size=len(tr))),
        np.int64,
    )
    # every size at layer level (and one past the number of ids); a grid at model level
    if model:
        sizes = data.draw(st.lists(st.integers(1, n_ids + 2), min_size=1, max_size=8))
    else:
        sizes = list(range(1, n_ids + 2))
    for policy in ALL:
        for warm in (False, True):
            _both(tr, policy, sizes, model, warm, group, n_groups)


def _trace(rows, lengths, E):
    x = np.asarray(rows, np.int64).reshape(len(rows), 1, -1) if rows else np.zeros((0, 1, 1))
    off = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    return lk.Trace(x.astype(np.int64), off, num_experts=E)


@pytest.mark.parametrize("policy", ALL)
def test_edges(policy):
    rng = np.random.default_rng(7)
    # k = E: every token holds every expert; C = 1 .. E+1
    E = 5
    rows = [rng.permutation(E) for _ in range(12)]
    tr = _trace(rows, [12], E)
    for warm in (False, True):
        h = _both(tr, policy, list(range(1, E + 2)), False, warm, np.zeros(1, np.int64), 1)
        # from C = E on, everything stays cached after the first token
        assert h[0, 0, E - 1] == h[0, 0, E] == 11 * E + (E if warm else 0)
    # E = 1: one id; C = 1 holds it
    tr = _trace([[0]] * 6, [2, 0, 4], 1)
    for warm in (False, True):
        h = _both(tr, policy, [1, 2], False, warm, np.zeros(3, np.int64), 1)
        assert h.tolist() == [[[4 + 2 * warm, 4 + 2 * warm]]]
    # ragged with empty sequences, C = 1, C >= number of ids
    rows = [[int(v)] for v in rng.integers(0, 9, 40)]
    tr = _trace(rows, [0, 17, 0, 23, 0], 9)
    for warm in (False, True):
        h = _both(tr, policy, [1, 9, 12], False, warm, np.arange(5) % 2, 2)
        assert h[0].sum() == 0  # groups 0 holds only empty sequences
        distinct = len({r[0] for r in rows[:17]}) + len({r[0] for r in rows[17:]})
        assert h[1, 0, 1] == h[1, 0, 2] == 40 - (0 if warm else distinct)


def _lru_from_stack(tr, model, warm, sizes):
    g = np.zeros(len(tr), np.int64)
    stat = ref.stack_stats_table(
        tr.experts, tr.offsets, tr.num_experts, "lru", None, model, warm, g, 1
    )
    cum = np.cumsum(stat[..., :-1], axis=-1)
    return cum[..., np.asarray(sizes) - 1]


@settings(max_examples=30)
@given(
    tr=traces(max_sequences=3, max_len=20, max_layers=2, max_experts=24, max_k=4),
    model=st.booleans(),
)
def test_per_size_lru_equals_stack_engine(tr, model):
    n_ids = tr.num_experts * (tr.num_layers if model else 1)
    sizes = list(range(1, n_ids + 1))
    g = np.zeros(len(tr), np.int64)
    for warm in (False, True):
        args = (tr.experts, tr.offsets, tr.num_experts, "lru", sizes, model, warm, g, 1)
        want = _lru_from_stack(tr, model, warm, sizes)
        assert np.array_equal(ref.policy_hits_table(*args), want)
        assert np.array_equal(_policies.policy_hits_table(*args), want)


def test_bad_input():
    tr = _trace([[0], [1]], [2], 2)
    args = (tr.experts, tr.offsets, 2)
    g = np.zeros(1, np.int64)
    with pytest.raises(ValueError, match="policy"):
        _policies.policy_hits_table(*args, "nope", [1], False, False, g, 1)
    with pytest.raises(ValueError, match="sizes"):
        _policies.policy_hits_table(*args, "fifo", [0], False, False, g, 1)
    with pytest.raises(ValueError, match="policy"):
        ref.policy_hits_table(*args, "nope", [1], False, False, g, 1)
    with pytest.raises(ValueError, match="size"):
        ref.policy_hits_table(*args, "fifo", [0], False, False, g, 1)
