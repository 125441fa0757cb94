"""The CUDA kernels, compiled for the host, against the reference (run by test_gpu_host.py).

Each case prepares its launch with ``lrc_kernels.gpu._plan`` (the code path of the CuPy
wrapper, with numpy as the array namespace) and runs the kernels of ``lrc_kernels/gpu/*.cu``
built by g++ with AddressSanitizer and UBSan, one (block, thread) after another. Launch
geometries include the wrapper's default and forced small ones (one thread doing every
item, blocks of 1 or 3 threads), so the grid-stride loops and scratch offsets are exercised.

This file only runs in a process with the ASan runtime preloaded; tests/test_gpu_host.py
starts one. Run it by hand with::

    LD_PRELOAD=$(g++ -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0 \\
        python -m pytest tests/gpu_host/shim_cases.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))


def _asan_loaded() -> bool:
    try:
        return "libasan" in Path("/proc/self/maps").read_text()
    except OSError:  # pragma: no cover - not Linux
        return False


if not _asan_loaded():
    pytest.skip(
        "host-shim cases need the ASan runtime preloaded; tests/test_gpu_host.py runs them",
        allow_module_level=True,
    )

import hostshim  # noqa: E402
from strategies import segment_lengths, traces  # noqa: E402

import lrc_kernels as lk  # noqa: E402
from lrc_kernels import reference as R  # noqa: E402
from lrc_kernels.gpu import _plan as P  # noqa: E402

KERNELS = hostshim.ShimKernels(hostshim.build())
LAUNCH = KERNELS.launch

# (block, budget): the wrapper's default, one thread for everything, tiny blocks, a few threads
GEOMETRIES = [
    (P.BLOCK, P.DEFAULT_SCRATCH_BUDGET),
    (P.BLOCK, 1),
    (1, P.DEFAULT_SCRATCH_BUDGET),
    (3, 20_000),
]
geometries = st.sampled_from(GEOMETRIES)


def _groups(data, S):
    n_groups = data.draw(st.integers(1, 3), label="n_groups")
    group = np.asarray(
        data.draw(st.lists(st.integers(0, n_groups - 1), min_size=S, max_size=S), label="group"),
        dtype=np.int64,
    )
    return group, n_groups


# --------------------------------------------------------------- worked examples (SPEC)
EX1 = [[0, 1], [0, 1], [1, 2], [0, 1], [2, 3], [2, 3], [0, 2], [0, 1]]


def _one(tokens):
    x = np.asarray(tokens, dtype=np.uint8)[:, None, :]
    return x, np.array([0, x.shape[0]], np.int64), np.zeros(1, np.int64)


def test_worked_example_srp():
    x, off, g = _one(EX1)
    t = P.window_hist_table(x, off, 4, [2, 4], g, 1, True, xp=np, launch=LAUNCH)
    assert t[0, 0, :, :3].tolist() == [[1, 4, 2], [2, 2, 3], [1, 4, 2], [4, 2, 1]]
    t = P.window_hist_table(x, off, 4, [2, 4], g, 1, False, xp=np, launch=LAUNCH)
    assert t[0, 0, 0, :3].tolist() == [8, 12, 8]
    assert t[0, 0, 0, 3:].tolist() == [1, 5, 8, 5, 1]


@pytest.mark.parametrize(
    ("policy", "m", "hits"),
    [
        ("lru", None, [4, 10, 13, 16]),
        ("lfu", None, [4, 8, 13, 16]),
        ("belady", None, [4, 11, 14, 16]),
        ("sch", 1, [4, 10, 13, 16]),
        ("sch", 2, [4, 11, 14, 16]),
        ("sch", 4, [4, 11, 14, 16]),
    ],
)
def test_worked_example_stack(policy, m, hits):
    x, off, g = _one(EX1)
    t = P.stack_stats_table(x, off, 4, policy, m, False, True, g, 1, xp=np, launch=LAUNCH)
    assert np.cumsum(t[0, 0, :4]).tolist() == hits
    assert t[0, 0, 4] == 0


def test_worked_example_model_level():
    l0 = [[0, 1], [0, 1], [0, 2], [1, 2], [2, 3], [2, 3], [0, 3], [2, 3]]
    l1 = [[3, 2], [3, 2], [3, 1], [1, 0], [1, 0], [0, 1], [0, 2], [2, 0]]
    x = np.stack([np.asarray(l0), np.asarray(l1)], axis=1).astype(np.uint8)
    off, g = np.array([0, 8], np.int64), np.zeros(1, np.int64)
    expect = {
        "sch": [6, 14, 21, 26, 28, 30, 31, 32],
        "lru": [6, 13, 20, 24, 25, 28, 30, 32],
        "lfu": [6, 11, 15, 18, 22, 27, 29, 32],
        "belady": [6, 14, 21, 26, 28, 30, 31, 32],
    }
    for policy, hits in expect.items():
        t = P.stack_stats_table(x, off, 4, policy, 4, True, True, g, 1, xp=np, launch=LAUNCH)
        assert np.cumsum(t[0, 0, :8]).tolist() == hits, policy
    t = P.window_hist_table(x, off, 4, [4], g, 1, False, xp=np, launch=LAUNCH)
    assert t[0].sum(axis=(0, 1)).tolist() == [5, 10, 10, 10, 5]


# ----------------------------------------------------------- properties vs reference
@given(
    tr=traces(),
    ms=st.lists(segment_lengths(), min_size=1, max_size=3),
    per_expert=st.booleans(),
    geo=geometries,
    data=st.data(),
)
def test_window_hist_table_matches_reference(tr, ms, per_expert, geo, data):
    group, G = _groups(data, tr.num_sequences)
    raw = data.draw(st.booleans(), label="raw_dtype")
    x = tr.experts.astype(np.int64) if raw else tr.experts  # the cast path of the wrapper
    got = P.window_hist_table(
        x,
        tr.offsets,
        tr.num_experts,
        ms,
        group,
        G,
        per_expert,
        xp=np,
        launch=LAUNCH,
        block=geo[0],
        budget=geo[1],
    )
    want = R.window_hist_table(tr.experts, tr.offsets, tr.num_experts, ms, group, G, per_expert)
    assert got.dtype == np.int64 and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


@given(
    E=st.integers(1, 300),
    k=st.integers(1, 8),
    m=st.integers(150, 300),
    extra=st.integers(-2, 6),
    per_expert=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_window_hist_table_long_segments(E, k, m, extra, per_expert, seed):
    """m up to 300 with sequences just shorter and just longer than m."""
    from strategies import make_ids

    k = min(k, E)
    rng = np.random.default_rng(seed)
    lengths = [m + extra, m - 1, m]
    x = make_ids(rng, sum(lengths), 1, E, k, 0.7).astype(lk._trace.id_dtype_for(E))
    off = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    g = np.array([0, 1, 0], np.int64)
    ms = [m, 1]
    got = P.window_hist_table(x, off, E, ms, g, 2, per_expert, xp=np, launch=LAUNCH)
    want = R.window_hist_table(x, off, E, ms, g, 2, per_expert)
    np.testing.assert_array_equal(got, want)


@given(
    tr=traces(max_len=20),
    policy=st.sampled_from(R.POLICIES),
    m=segment_lengths(max_m=30),
    model_level=st.booleans(),
    warm_start=st.booleans(),
    geo=geometries,
    data=st.data(),
)
def test_stack_stats_table_matches_reference(tr, policy, m, model_level, warm_start, geo, data):
    group, G = _groups(data, tr.num_sequences)
    mm = m if policy == "sch" else None
    got = P.stack_stats_table(
        tr.experts,
        tr.offsets,
        tr.num_experts,
        policy,
        mm,
        model_level,
        warm_start,
        group,
        G,
        xp=np,
        launch=LAUNCH,
        block=geo[0],
        budget=geo[1],
    )
    want = R.stack_stats_table(
        tr.experts, tr.offsets, tr.num_experts, policy, mm, model_level, warm_start, group, G
    )
    assert got.dtype == np.int64 and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


# ------------------------------------------------------------------------ validation
def _host_error(x, off, E):
    with pytest.raises((TypeError, ValueError)) as exc:
        lk.Trace(x, off, num_experts=E)
    return exc


@given(tr=traces(), kind=st.sampled_from(["negative", "high", "dup"]), data=st.data())
def test_validate_ids_same_errors_as_trace(tr, kind, data):
    x = tr.experts.astype(np.int64)
    E = tr.num_experts
    if x.size == 0 or (kind == "dup" and x.shape[2] < 2):
        return
    n = data.draw(st.integers(1, 3), label="n_bad")
    for _ in range(n):
        r = data.draw(st.integers(0, x.shape[0] - 1), label="row")
        l = data.draw(st.integers(0, x.shape[1] - 1), label="layer")
        j = data.draw(st.integers(0, x.shape[2] - 1), label="slot")
        if kind == "negative":
            x[r, l, j] = -1 - j
        elif kind == "high":
            x[r, l, j] = E + r
        else:
            i = (j + 1) % x.shape[2]
            x[r, l, j] = x[r, l, i]
    want = _host_error(x, tr.offsets, E)
    with pytest.raises(want.type) as got:
        P.validate_ids(x, tr.offsets, E, xp=np, launch=LAUNCH)
    assert str(got.value) == str(want.value)


@given(tr=traces())
def test_validate_ids_accepts_valid_traces(tr):
    y, off = P.validate_ids(
        tr.experts.astype(np.int64), tr.offsets, tr.num_experts, xp=np, launch=LAUNCH
    )
    assert y.dtype == lk._trace.id_dtype_for(tr.num_experts) and y.flags.c_contiguous
    np.testing.assert_array_equal(y, tr.experts)
    np.testing.assert_array_equal(off, tr.offsets)


@pytest.mark.parametrize(
    ("x", "off", "E"),
    [
        (np.zeros((3, 1, 2), np.float32), None, 4),
        (np.zeros((3, 2), np.int64), None, 4),
        (np.zeros((3, 0, 2), np.int64), None, 4),
        (np.zeros((3, 1, 0), np.int64), None, 4),
        (np.zeros((3, 1, 5), np.int64), None, 4),
        (np.array([[[0, 1]], [[1, 2]]]), [0, 3], 4),
        (np.array([[[0, 1]], [[1, 2]]]), [1, 2], 4),
        (np.array([[[0, 1]], [[1, 2]]]), [0, 2, 1, 2], 4),
        (np.array([[[0, 1]], [[1, 1]]]), [0, 1, 2], 4),
    ],
)
def test_validate_ids_shape_errors_as_trace(x, off, E):
    want = _host_error(x, off, E)
    with pytest.raises(want.type) as got:
        P.validate_ids(x, off, E, xp=np, launch=LAUNCH)
    assert str(got.value) == str(want.value)


def test_tables_reject_invalid_ids_before_launch():
    x = np.array([[[0, 0]], [[1, 2]]], np.uint8)
    off, g = np.array([0, 2], np.int64), np.zeros(1, np.int64)
    with pytest.raises(ValueError, match="token row 0, layer 0: expert id 0 appears twice"):
        P.window_hist_table(x, off, 3, [1], g, 1, True, xp=np, launch=LAUNCH)
    with pytest.raises(ValueError, match="appears twice"):
        P.stack_stats_table(x, off, 3, "lru", None, False, True, g, 1, xp=np, launch=LAUNCH)


# --------------------------------------------------------------------- real trace
def test_real_trace_matches_cpu_backend(flame_trace):
    """FLAME-MoE-290M, 4 x 512 tokens, 8 layers, E = 64, k = 6: all tables vs the CPU backend."""
    from lrc_kernels.cpu import _srp, _stack

    tr = flame_trace
    g = np.array([0, 1, 0, 1], np.int64)
    ms = [1, 16, 300]
    for per_expert in (True, False):
        got = P.window_hist_table(
            tr.experts, tr.offsets, 64, ms, g, 2, per_expert, xp=np, launch=LAUNCH
        )
        want = _srp.window_hist_table(tr.experts, tr.offsets, 64, ms, g, 2, per_expert)
        np.testing.assert_array_equal(got, want)
    for policy in R.POLICIES:
        for model_level in (False, True):
            got = P.stack_stats_table(
                tr.experts,
                tr.offsets,
                64,
                policy,
                16,
                model_level,
                True,
                g,
                2,
                xp=np,
                launch=LAUNCH,
            )
            want = _stack.stack_stats_table(
                tr.experts, tr.offsets, 64, policy, 16, model_level, True, g, 2
            )
            np.testing.assert_array_equal(got, want)


def test_real_trace_slice_matches_reference(flame_trace):
    """A short slice of the real trace against the plain reference itself."""
    x = np.ascontiguousarray(flame_trace.experts[:96, :3])
    off = np.array([0, 40, 96], np.int64)
    g = np.zeros(2, np.int64)
    got = P.window_hist_table(x, off, 64, [4, 16], g, 1, True, xp=np, launch=LAUNCH)
    np.testing.assert_array_equal(got, R.window_hist_table(x, off, 64, [4, 16], g, 1, True))
    for policy in R.POLICIES:
        got = P.stack_stats_table(x, off, 64, policy, 8, True, True, g, 1, xp=np, launch=LAUNCH)
        want = R.stack_stats_table(x, off, 64, policy, 8, True, True, g, 1)
        np.testing.assert_array_equal(got, want)
