"""The LFU (count classes) and Belady (run list) stack engines equal the linear scan.

Each engine is forced on (``_FAST_MIN_IDS`` set to 0) and compared, one group per
sequence so every sequence's row is checked on its own, with ``_engine="scan"`` (today's
``_stream_packed``) and with the plain reference, bit for bit.
"""

from __future__ import annotations

import json
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import make_ids, traces

import lrc_kernels as lk
from lrc_kernels import reference as ref
from lrc_kernels.cpu import _stack

POLICIES = ["lfu", "belady"]


@contextmanager
def fast_everywhere():
    """The LFU and Belady engines serve every shape, however small."""
    with mock.patch.dict(_stack._FAST_MIN_IDS, {key: 0 for key in _stack._FAST_MIN_IDS}):
        yield


def per_sequence(tr, policy, model_level, warm, **kw):
    S = tr.num_sequences
    return _stack.stack_stats_table(
        tr.experts, tr.offsets, tr.num_experts, policy, None, model_level, warm,
        np.arange(S), S, **kw,
    )  # fmt: skip


def check_engines(tr, policy, model_level, warm, with_reference=True):
    with fast_everywhere():
        got = per_sequence(tr, policy, model_level, warm)
    want = per_sequence(tr, policy, model_level, warm, _engine="scan")
    assert got.dtype == np.int64 and got.shape == want.shape
    assert np.array_equal(got, want)
    if with_reference:
        S = tr.num_sequences
        r = ref.stack_stats_table(
            tr.experts, tr.offsets, tr.num_experts, policy, None, model_level, warm,
            np.arange(S), S,
        )  # fmt: skip
        assert np.array_equal(got, r)


@settings(max_examples=150)
@given(
    tr=traces(max_layers=4, max_experts=64, max_len=24),
    policy=st.sampled_from(POLICIES),
    model_level=st.booleans(),
    warm=st.booleans(),
)
def test_fast_engines_match_scan_and_reference(tr, policy, model_level, warm):
    check_engines(tr, policy, model_level, warm)


def _trace(lengths, L, E, k, stay, seed):
    rng = np.random.default_rng(seed)
    ids = make_ids(rng, int(sum(lengths)), L, E, k, stay)
    return lk.Trace(ids, np.concatenate([[0], np.cumsum(lengths)]), num_experts=E)


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize(
    ("L", "E", "k"), [(1, 1, 1), (3, 1, 1), (2, 4, 4), (4, 6, 6), (4, 8, 3), (1, 16, 2)]
)
def test_edges(policy, L, E, k):
    """E = 1, k = E, one layer, four layers; empty and one-token sequences among them."""
    tr = _trace([0, 1, 7, 0, 30, 2], L, E, k, 0.5, seed=L * 100 + E * 10 + k)
    for model_level in (True, False):
        for warm in (True, False):
            check_engines(tr, policy, model_level, warm)


@pytest.mark.parametrize("policy", POLICIES)
def test_large_shared_cache_matches_scan(policy):
    """48 layers x 128 experts, top-8 (N = 6144 ids), ragged sequences, warm and cold."""
    tr = lk.synthetic_trace(4, 160, 48, 128, 8, seed=3)
    lengths = [160, 0, 97, 160, 3, 200, 160]
    ids = np.concatenate([tr.experts, tr.experts[:140]])
    tr = lk.Trace(ids, np.concatenate([[0], np.cumsum(lengths)]), num_experts=128)
    n_ids = 48 * 128
    assert _stack._fast_engine(policy, True, n_ids, 48 * 8, 160, 20, "auto") == policy
    for warm in (True, False):
        got = per_sequence(tr, policy, True, warm)  # "auto" picks the new engine here
        want = per_sequence(tr, policy, True, warm, _engine="scan")
        assert np.array_equal(got, want)
        assert got[:, 0].sum() == 48 * 8 * sum(lengths)


@pytest.mark.parametrize("levels", [1, 3])
def test_lfu_wide_tree_keys(levels):
    """The int64 class-top keys (huge N) and deeper trees give the same tables."""
    from lrc_kernels.cpu import _stack_lfu

    real = _stack_lfu.lfu_tree_shape

    def wide(max_len, n_ids):
        h, cb, _ = real(max_len, n_ids)
        return max(h, levels), cb, np.int64

    tr = _trace([0, 40, 9, 33], 4, 8, 3, 0.5, seed=7)
    with mock.patch.object(_stack_lfu, "lfu_tree_shape", wide):
        for model_level in (True, False):
            for warm in (True, False):
                check_engines(tr, "lfu", model_level, warm)


def test_engine_keyword_is_checked():
    tr = _trace([3], 2, 4, 2, 0.5, seed=0)
    with pytest.raises(ValueError, match="_engine"):
        per_sequence(tr, "lfu", True, True, _engine="fast")


def test_scan_stays_below_threshold():
    """Small shapes keep the scan (the dispatch is by id count, per policy and level)."""
    assert _stack._fast_engine("lfu", True, 64, 8, 100, 6, "auto") is None
    assert _stack._fast_engine("belady", False, 256, 8, 100, 8, "auto") is None
    assert _stack._fast_engine("lru", True, 10**6, 8, 100, 20, "auto") is None
    assert _stack._fast_engine("belady", True, 10**5, 8, 100, -1, "auto") is None
    assert _stack._fast_engine("lfu", True, 10**5, 8, 100, 17, "scan") is None


def test_bench_quick_mode(tmp_path):
    """bench/bench_shared_lfu_belady.py runs and its checks pass (no timing asserted)."""
    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "shared.json"
    r = subprocess.run(
        [sys.executable, "bench/bench_shared_lfu_belady.py", "--quick", "--threads", "1"]
        + ["--out", str(out)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert doc["checks"] and all(c["passed"] for c in doc["checks"])
    assert "ratio" in r.stdout
