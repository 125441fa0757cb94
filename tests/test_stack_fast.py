"""The counting stack engines (LRU at both levels, SCH at model level) against the scan.

Per-sequence ``stat`` rows (one group per sequence) must be bit-identical to the priority
stack scan of ``lrc_kernels/cpu/_stack.py`` (``_engine="scan"``) and to the plain
reference; the Fenwick bitset helpers are checked against numpy on their own.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import segment_lengths, traces

import lrc_kernels as lk
from lrc_kernels import reference as ref
from lrc_kernels.cpu import _fenwick, _stack

SCH_M = st.one_of(st.sampled_from([1, 2, 3, 5, 16, 100]), segment_lengths(60))


def _tables(tr, policy, m, model_level, warm, engines=("fast", "scan")):
    S = tr.num_sequences
    g = np.arange(S, dtype=np.int64)  # one row per sequence
    args = (tr.experts, tr.offsets, tr.num_experts, policy, m, model_level, warm, g, S)
    out = {}
    for e in engines:
        if e == "reference":
            out[e] = ref.stack_stats_table(*args)
        else:
            out[e] = _stack.stack_stats_table(*args, _engine=policy if e == "fast" else "scan")
    return out


def _all_equal(tabs):
    first = next(iter(tabs.values()))
    for name, t in tabs.items():
        assert t.dtype == np.int64 and t.shape == first.shape, name
        np.testing.assert_array_equal(t, first, err_msg=name)


@given(tr=traces(max_experts=8, max_layers=4, max_len=24), model=st.booleans(), warm=st.booleans())
def test_lru_engine_equals_scan_and_reference(tr, model, warm):
    _all_equal(_tables(tr, "lru", None, model, warm, ("fast", "scan", "reference")))


@settings(max_examples=20)
@given(tr=traces(max_experts=300, max_layers=2, max_len=40), model=st.booleans())
def test_lru_engine_large_expert_counts(tr, model):
    _all_equal(_tables(tr, "lru", None, model, True))


@given(tr=traces(max_experts=8, max_layers=4, max_len=24), m=SCH_M, warm=st.booleans())
def test_sch_engine_equals_scan_and_reference(tr, m, warm):
    _all_equal(_tables(tr, "sch", m, True, warm, ("fast", "scan", "reference")))


@settings(max_examples=60)
@given(
    tr=traces(max_sequences=3, max_experts=12, max_layers=4, max_len=60),
    m=SCH_M,
    warm=st.booleans(),
)
def test_sch_engine_equals_scan_longer_sequences(tr, m, warm):
    # long enough for the class-0 time axis to be compacted many times
    _all_equal(_tables(tr, "sch", m, True, warm))


@pytest.mark.parametrize("warm", [True, False])
def test_large_shape_against_scan(warm):
    """48 x 128 experts, top-8 (N = 6144 ids, 384 accesses per token), ragged sequences."""
    tr = lk.synthetic_trace(5, [300, 0, 217, 1, 129], 48, 128, 8, stay=0.5, seed=7)
    _all_equal(_tables(tr, "lru", None, True, warm))
    _all_equal(_tables(tr, "lru", None, False, warm))
    for m in (1, 4, 16, 64, 400):
        _all_equal(_tables(tr, "sch", m, True, warm))


def test_engine_choice():
    pick = _stack._pick_engine
    assert pick("lru", True, 6144, 13, 20, 0, 100) == "lru"
    assert pick("lru", False, 8, 3, 20, 0, 100) == "lru"
    assert pick("sch", True, 6144, 13, 20, 16, 100) == "sch"
    assert pick("sch", True, 64, 6, 20, 16, 100) == "scan"  # small shared stack
    assert pick("sch", False, 128, 7, 20, 16, 100) == "scan"
    assert pick("sch", True, 6144, -1, -1, 16, 100) == "scan"  # keys do not pack
    assert pick("sch", True, 6144, 20, 38, 16, 100) == "scan"  # 63 bits: no sentinel room
    for policy in ("lfu", "belady"):
        assert pick(policy, True, 6144, 13, 20, 0, 100) != "lru"


def test_engine_must_match_policy():
    tr = lk.synthetic_trace(2, 5, 2, 4, 2, seed=0)
    g = np.zeros(2, np.int64)
    with pytest.raises(ValueError, match="does not compute"):
        _stack.stack_stats_table(
            tr.experts, tr.offsets, 4, "lfu", None, True, True, g, 1, _engine="lru"
        )
    with pytest.raises(ValueError, match="model level"):
        _stack.stack_stats_table(
            tr.experts, tr.offsets, 4, "sch", 2, False, True, g, 1, _engine="sch"
        )


@given(
    n_bits=st.integers(1, 700),
    data=st.data(),
)
def test_fenwick_bitset_rank_select(n_bits, data):
    W = _fenwick.n_words(n_bits)
    words = np.zeros(W, np.int64)
    fen = np.zeros(W + 1, np.int64)
    members = set()
    ops = data.draw(st.lists(st.integers(0, n_bits - 1), max_size=60))
    for p in ops:  # toggle
        if p in members:
            _fenwick.bit_clear(fen, words, p)
            members.remove(p)
        else:
            _fenwick.bit_set(fen, words, p)
            members.add(p)
    srt = sorted(members)
    for r, p in enumerate(srt):
        assert _fenwick.select(fen, words, r) == p
    for p in data.draw(st.lists(st.integers(0, n_bits - 1), max_size=10)):
        assert _fenwick.rank_le(fen, words, p) == sum(1 for q in srt if q <= p)
    # compaction renumbers the members 0..n-1 in order and moves their owners along
    who = np.full(W * 64, -1, np.int64)
    mark = np.full(len(srt), -1, np.int64)
    for i, p in enumerate(srt):
        who[p] = i
    assert _fenwick.compact_marks(fen, words, who, mark) == len(srt)
    np.testing.assert_array_equal(mark, np.arange(len(srt)))
    np.testing.assert_array_equal(who[: len(srt)], np.arange(len(srt)))
    assert [_fenwick.select(fen, words, r) for r in range(len(srt))] == list(range(len(srt)))
    assert _fenwick.rank_le(fen, words, W * 64 - 1) == len(srt)


def test_bench_shared_quick(tmp_path):
    """``bench/bench_shared.py --quick`` runs and its checks against the scan pass."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "bench_shared.json"
    r = subprocess.run(
        [sys.executable, "bench/bench_shared.py", "--quick", "--threads", "1", "--out", str(out)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    doc = json.loads(out.read_text())
    names = [c["name"] for c in doc["checks"]]
    assert all(c["passed"] for c in doc["checks"]) and len(names) > 40
    assert any("counting engine == scan" in n for n in names)
    assert any("shared/per-layer" in n for n in doc["notes"])
