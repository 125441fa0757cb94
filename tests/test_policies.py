"""Per-size policies (fifo, clock, sieve, s3fifo, arc, lfu-decay, lfu-window, static-oracle,
static-prefix, pinned-lru): the Numba kernels equal the plain reference on hypothesis
traces, at layer and model level, warm and cold, with drawn parameters; the per-size
simulation run with LRU and perfect LFU equals the stack engine at every size; and the
new policies meet their limits (a window or prefix longer than the sequence, a pinned
share of 0 or 1) and SPEC's worked example by hand (docs/metrics.md, "Policies without the
stack property")."""

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

ALL = list(SIZE_POLICIES) + ["lru", "lfu"]
# parameters drawn per policy (None: the default)
PARAMS = {
    "lfu-decay": st.sampled_from([None, 0.5, 0.8, 0.99, 1e-3]),
    "lfu-window": st.one_of(st.none(), st.integers(1, 6), st.integers(1, 30)),
    "static-prefix": st.one_of(st.none(), st.integers(1, 6), st.integers(1, 30)),
    "pinned-lru": st.sampled_from([None, 0.0, 0.25, 0.5, 0.7, 1.0]),
}


def _both(tr, policy, sizes, model, warm, group, n_groups, param=None):
    args = (tr.experts, tr.offsets, tr.num_experts, policy, sizes, model, warm, group, n_groups)
    a = _policies.policy_hits_table(*args, param)
    b = ref.policy_hits_table(*args, param)
    assert a.dtype == np.int64 and b.dtype == np.int64
    assert a.shape == b.shape == (n_groups, 1 if model else tr.num_layers, len(sizes))
    assert np.array_equal(a, b), (policy, model, warm, param)
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
        param = data.draw(PARAMS[policy]) if policy in PARAMS else None
        for warm in (False, True):
            _both(tr, policy, sizes, model, warm, group, n_groups, param)


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


def _from_stack(tr, policy, model, warm, sizes):
    g = np.zeros(len(tr), np.int64)
    stat = ref.stack_stats_table(
        tr.experts, tr.offsets, tr.num_experts, policy, None, model, warm, g, 1
    )
    cum = np.cumsum(stat[..., :-1], axis=-1)
    return cum[..., np.asarray(sizes) - 1]


@settings(max_examples=30)
@given(
    tr=traces(max_sequences=3, max_len=20, max_layers=2, max_experts=24, max_k=4),
    model=st.booleans(),
)
def test_per_size_lru_and_lfu_equal_stack_engine(tr, model):
    n_ids = tr.num_experts * (tr.num_layers if model else 1)
    sizes = list(range(1, n_ids + 1))
    g = np.zeros(len(tr), np.int64)
    for policy in ("lru", "lfu"):
        for warm in (False, True):
            args = (tr.experts, tr.offsets, tr.num_experts, policy, sizes, model, warm, g, 1)
            want = _from_stack(tr, policy, model, warm, sizes)
            assert np.array_equal(ref.policy_hits_table(*args), want), policy
            assert np.array_equal(_policies.policy_hits_table(*args), want), policy


@settings(max_examples=25)
@given(
    tr=traces(max_sequences=3, max_len=20, max_layers=2, max_experts=24, max_k=4),
    model=st.booleans(),
)
def test_new_policies_at_their_limits(tr, model):
    """lfu-window over >= T tokens is perfect LFU (the stack engine's), over one token it is
    LRU (counts of the current token protect only its own ids); pinned-lru with
    share 0 is LRU, with share 1 static-oracle; static-prefix over >= T tokens is
    static-oracle; and static-oracle's hits are the top-C counts (warm) minus one per used
    placed id (cold)."""
    n_ids = tr.num_experts * (tr.num_layers if model else 1)
    sizes = list(range(1, n_ids + 1))
    S = len(tr)
    g = np.zeros(S, np.int64)
    long = int(np.diff(tr.offsets).max(initial=0)) + 1
    for warm in (False, True):
        args = (tr.experts, tr.offsets, tr.num_experts)
        tail = (sizes, model, warm, g, 1)
        k = _policies.policy_hits_table
        lfu = _from_stack(tr, "lfu", model, warm, sizes)
        lru = _from_stack(tr, "lru", model, warm, sizes)
        oracle = k(*args, "static-oracle", *tail)
        assert np.array_equal(k(*args, "lfu-window", *tail, long), lfu)
        assert np.array_equal(k(*args, "lfu-window", *tail, 1), lru)
        assert np.array_equal(k(*args, "pinned-lru", *tail, 0.0), lru)
        assert np.array_equal(k(*args, "pinned-lru", *tail, 1.0), oracle)
        assert np.array_equal(k(*args, "static-prefix", *tail, long), oracle)
        assert np.array_equal(oracle, _static_by_counts(tr, model, warm, sizes))


def _static_by_counts(tr, model, warm, sizes):
    """static-oracle from per-sequence counts alone (an independent formula)."""
    E, L = tr.num_experts, tr.num_layers
    x = np.asarray(tr.experts, np.int64)
    out = np.zeros((1, 1 if model else L, len(sizes)), np.int64)
    for s in range(len(tr)):
        a, b = int(tr.offsets[s]), int(tr.offsets[s + 1])
        streams = [x[a:b] + (np.arange(L) * E)[None, :, None]] if model else None
        streams = streams or [x[a:b, l] for l in range(L)]
        for lo, ids in enumerate(streams):
            c = np.bincount(ids.ravel(), minlength=E * (L if model else 1))
            order = np.lexsort((np.arange(c.size), -c))
            gain = c[order] if warm else np.maximum(c[order] - 1, 0)
            out[0, lo] += np.cumsum(gain)[np.asarray(sizes) - 1]
    return out


# SPEC's worked example (one sequence, E = 4, k = 2), hits at C = 1..4 checked by hand in
# docs/metrics.md ("Worked example"): counts 0: 5, 1: 5, 2: 4, 3: 2 tokens.
SPEC_TRACE = [[0, 1], [0, 1], [1, 2], [0, 1], [2, 3], [2, 3], [0, 2], [0, 1]]
BY_HAND = {
    ("static-oracle", None, True): [5, 10, 14, 16],
    ("static-oracle", None, False): [4, 8, 11, 12],
    # prefix of 2 tokens: 0 and 1 twice, then 2, 3 by id
    ("static-prefix", 2, True): [5, 10, 14, 16],
    # prefix of 3 tokens: 1 three times, 0 twice, 2 once
    ("static-prefix", 3, True): [5, 10, 14, 16],
    # C = 1: P = 0, plain LRU; C = 2, 3: expert 0 pinned, LRU of 1, 2 slots over 1, 2, 3
    ("pinned-lru", 0.5, True): [4, 9, 14, 16],
    ("pinned-lru", 0.5, False): [3, 7, 11, 12],
    # a one-token window is LRU (SPEC's LRU row)
    ("lfu-window", 1, True): [4, 10, 13, 16],
    ("lfu-decay", 0.5, True): [4, 10, 13, 16],
}


@pytest.mark.parametrize("key", list(BY_HAND))
def test_spec_worked_example_by_hand(key):
    policy, param, warm = key
    tr = _trace(SPEC_TRACE, [8], 4)
    h = _both(tr, policy, [1, 2, 3, 4], False, warm, np.zeros(1, np.int64), 1, param)
    assert h[0, 0].tolist() == BY_HAND[key]


def test_bad_input():  # the kernels' own guards; the public checks are in test_hit_curve_sizes
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
