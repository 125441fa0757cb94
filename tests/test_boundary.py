"""Regression tests for the boundary holes a 2,200-case fuzz found (issue #14), one per case.

Each case once crashed the process, returned a silently wrong result or failed with an
unclear error. The contract (docs/api.md, "Errors"): a documented exception with a message
of plain numbers, raised before any kernel or allocation, or the exact result.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pytest

import lrc_kernels as lk
from lrc_kernels import _validate as v
from lrc_kernels import cli, io

SMALL = lk.synthetic_trace(2, 12, 2, 8, 2, seed=3)


def _outcome(code: str) -> dict:
    """Run ``code`` (which sets ``call``) in a fresh interpreter: a crash cannot take pytest."""
    script = textwrap.dedent(
        """
        import json, sys
        import numpy as np
        import lrc_kernels as lk
        tr = lk.synthetic_trace(2, 12, 2, 8, 2, seed=3)
        try:
            {code}
            print(json.dumps({{"ok": True}}))
        except Exception as exc:
            print(json.dumps({{"type": type(exc).__name__, "msg": str(exc)}}))
        """
    ).format(code=code)
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------ windows (m)
@pytest.mark.parametrize("fn", ["sch", "srp"])
def test_huge_window_is_a_clear_error_not_a_crash(fn):
    # once: int64 overflow of t + m in the stack kernel -> SIGSEGV
    out = _outcome(f"lk.{fn}(tr, 2**63 - 1)")
    assert out["type"] == "ValueError", out
    assert f"m must be <= {v.MAX_WINDOW}" in out["msg"]


@pytest.mark.parametrize("m", [2**64, -(2**64), [4, 2**64]])
def test_window_beyond_int64_is_a_value_error(m):
    # once: a raw OverflowError from the int64 cast
    with pytest.raises(ValueError, match=r"m must be (<=|>=)"):
        lk.sch(SMALL, m)


def test_largest_window_still_computes_exactly():
    # every window at least the sequence length gives the same curve
    a = lk.sch(SMALL, v.MAX_WINDOW)
    b = lk.sch(SMALL, 12)
    np.testing.assert_array_equal(a.rates, b.rates)
    np.testing.assert_array_equal(a.stat, b.stat)


@pytest.mark.parametrize("m", [True, 2.0, np.float64(3), "4", None])
def test_window_type_errors(m):
    with pytest.raises(TypeError, match="m must be an integer"):
        lk.srp(SMALL, m)


# ---------------------------------------------------------------- expert ids
def test_id_beyond_uint32_is_never_wrapped():
    # once: the id 2**32 + 1 was silently stored as 1
    with pytest.raises(ValueError, match=r"num_experts = 8589934592 exceeds the limit"):
        lk.Trace(np.array([[[2**32 + 1]]]), num_experts=2**33)
    with pytest.raises(ValueError, match=r"expert id 4294967297 is >= num_experts = 4294967296"):
        lk.Trace(np.array([[[2**32 + 1]]], np.uint64), num_experts=2**32)


def test_largest_num_experts_keeps_ids_exact():
    x = np.array([[[2**32 - 1, 0]], [[7, 2**31]]], np.int64)
    tr = lk.Trace(x, num_experts=2**32)
    assert tr.experts.dtype == np.uint32
    np.testing.assert_array_equal(tr.experts.astype(np.int64), x)


@pytest.mark.parametrize("E", [True, 4.0, np.float32(4), "4"])
def test_num_experts_type_errors(E):
    with pytest.raises(TypeError, match="num_experts"):
        lk.Trace(np.zeros((1, 1, 1), np.int64), num_experts=E)


# ------------------------------------------------------------ memory needs
def test_srp_refuses_a_huge_num_experts_before_allocating():
    # once: a 48 TiB MemoryError, a Numba SystemError/TypingError or "array is too big"
    tr = lk.Trace(np.array([[[0, 1]], [[2, 3]]]), num_experts=2**32)
    with pytest.raises(ValueError, match=r"needs \d+ bytes .*check num_experts"):
        lk.srp(tr, 16)
    with pytest.raises(ValueError, match="beyond the stack engine's limit"):
        lk.sch(tr, 2)


def test_srp_refuses_a_huge_window_table_naming_m(monkeypatch):
    with pytest.raises(ValueError, match=r"needs \d+ bytes .*lower m"):
        lk.srp(SMALL, 2**39)
    # the limit is the physical memory unless LRC_MEMORY_LIMIT says otherwise
    monkeypatch.setenv("LRC_MEMORY_LIMIT", "1000")
    with pytest.raises(ValueError, match=r"needs \d+ bytes .*limit of 1000 bytes"):
        lk.srp(SMALL, 16)


def test_bootstrap_weights_are_refused_before_allocating():
    with pytest.raises(ValueError, match=r"bootstrap resample weights .* lower bootstrap"):
        lk.srp(SMALL, 4, bootstrap=2**60)


def test_hit_curve_tables_are_refused_before_allocating(monkeypatch):
    monkeypatch.setenv("LRC_MEMORY_LIMIT", "100")
    with pytest.raises(ValueError, match=r"stack-depth tables .* needs \d+ bytes"):
        lk.hit_curve(SMALL, "lru")


# ------------------------------------------------------------ Trace methods
def test_select_refuses_float_indices():
    # once: sequences=[0.9] silently selected sequence 0
    with pytest.raises(TypeError, match=r"sequences must be an integer, got 0.9 \(float\)"):
        SMALL.select(sequences=[0.9])
    with pytest.raises(TypeError, match=r"layers must be an integer, got the float 1.0"):
        SMALL.select(layers=[1.0])
    with pytest.raises(TypeError, match="got True"):
        SMALL.select(sequences=[True])
    with pytest.raises(TypeError, match="integer dtype"):  # arrays: by dtype
        SMALL.select(sequences=np.array([0.0]))


def test_select_out_of_range_and_empty():
    # once: raw NumPy errors
    with pytest.raises(
        IndexError, match=r"sequences \[5\] out of range \[0, 2\): sequences\[0\] = 5"
    ):
        SMALL.select(sequences=[5])
    with pytest.raises(
        IndexError, match=r"layers \[0, -3\] out of range \[0, 2\): layers\[1\] = -3"
    ):
        SMALL.select(layers=[0, -3])
    with pytest.raises(ValueError, match=r"sequences \[-3\] out of range"):  # both types
        SMALL.select(sequences=[-3])
    with pytest.raises(ValueError, match="layers is empty"):
        SMALL.select(layers=[])
    # negative indices count from the end, as for sequence()
    a, b = SMALL.select(sequences=[-1], layers=[-1]), SMALL.select(sequences=[1], layers=[1])
    np.testing.assert_array_equal(a.experts, b.experts)
    assert SMALL.select(sequences=[]).num_sequences == 0


def test_sequence_index_must_be_an_integer():
    with pytest.raises(TypeError, match="sequence index must be an integer, got 0.5"):
        SMALL.sequence(0.5)
    with pytest.raises(TypeError, match="got True"):
        SMALL[True]
    with pytest.raises(IndexError, match="sequence index 2 out of range"):
        SMALL.sequence(2)
    np.testing.assert_array_equal(SMALL.sequence(-1), SMALL.sequence(1))


def test_split_refuses_bool_and_float():
    # once: split(True) split into pieces of one token
    with pytest.raises(TypeError, match="split length must be a positive integer"):
        SMALL.split(True)
    with pytest.raises(TypeError, match="split length must be a positive integer"):
        SMALL.split(4.0)
    with pytest.raises(ValueError, match="split length must be >= 1"):
        SMALL.split(0)
    assert SMALL.split(5).num_sequences == 6


def test_meta_must_be_a_mapping():
    with pytest.raises(TypeError, match="meta must be a mapping"):
        lk.Trace(SMALL.experts, num_experts=8, meta=5)


@pytest.mark.parametrize(
    ("codec", "level", "exc", "match"),
    [
        ("zstd", 99, ValueError, r"compression_level must be <= 22"),
        ("lz4", 0, ValueError, r"compression_level must be >= 1"),
        ("zstd", 3.0, TypeError, r"compression_level must be an integer"),
        ("zstd", True, TypeError, r"compression_level must be an integer"),
    ],
)
def test_compression_level_is_checked(tmp_path, codec, level, exc, match):
    with pytest.raises(exc, match=match):
        lk.write_trace(tmp_path / "t.arrow", SMALL, compression=codec, compression_level=level)
    assert not (tmp_path / "t.arrow").exists()


def test_seq_len_type_error_in_capture():
    pytest.importorskip("torch")
    from lrc_kernels import torch as lt

    with pytest.raises(TypeError, match="seq_len must be an integer"):
        lt.capture_model("nowhere", ["x"], None, seq_len=True)


# ---------------------------------------------------------------- lrc info
def _crafted(tmp_path, transform):
    """SMALL written to a file, then copied with ``transform`` applied to each batch."""
    src = tmp_path / "ok.lrc.arrow"
    lk.write_trace(src, SMALL, batch_tokens=12, compression=None)
    r = pa.ipc.open_file(src)
    dst = tmp_path / "bad.lrc.arrow"
    with pa.ipc.new_file(dst, r.schema) as w:
        for i in range(r.num_record_batches):
            rb, md = r.get_batch_with_custom_metadata(i)
            new = transform(i, rb)
            w.write_batch(new, md if new is rb else None)  # crafted: no checksum
    return src, dst


def _set_ids(i, rb, value):
    if i != 1:
        return rb
    ex = rb.column("experts")
    ids = ex.flatten().flatten().flatten().to_numpy().reshape(-1, 2, 2).copy()
    ids[3, 1, 0] = ids[3, 1, 1] if value is None else value  # None: a repeated id
    cols = list(rb.columns)
    cols[rb.schema.get_field_index("experts")] = io._nested(ids, 2, 2, ex.offsets.to_numpy())
    return pa.record_batch(cols, schema=rb.schema)


def _set_length(i, rb):
    if i != 0:
        return rb
    cols = list(rb.columns)
    j = rb.schema.get_field_index("length")
    cols[j] = pa.array(rb.column(j).to_numpy() + 1, pa.int64())
    return pa.record_batch(cols, schema=rb.schema)


@pytest.mark.parametrize(
    ("transform", "match"),
    [
        (lambda i, rb: _set_ids(i, rb, 200), r"record batch 1, .*expert id 200 is >= num_experts"),
        (
            lambda i, rb: _set_ids(i, rb, None),
            r"record batch 1, .*layer 1: expert id \d+ appears twice",
        ),
        (_set_length, r"record batch 0\b.*disagrees"),
    ],
)
def test_info_says_unverified_and_verify_finds_the_bad_place(tmp_path, capsys, transform, match):
    good, bad = _crafted(tmp_path, transform)
    rc = cli.main(["info", str(good), "--verify"])
    out = capsys.readouterr().out
    assert rc == 0 and "data" in out and "verified (every batch" in out
    # the footer alone looks fine: info says so, and that it did not read the data
    rc = cli.main(["info", str(bad)])
    out = capsys.readouterr().out
    assert rc == 0 and "not verified" in out
    rc = cli.main(["info", str(bad), "--verify"])
    err = capsys.readouterr().err
    assert rc != 0
    assert "verification failed" in err
    import re

    assert re.search(match, err), err


def test_info_json_reports_verified(tmp_path, capsys):
    good, _ = _crafted(tmp_path, lambda i, rb: rb)
    for flag, want in (([], False), (["--verify"], True)):
        rc = cli.main(["info", str(good), "--json", *flag])
        assert rc == 0
        rows = json.loads(capsys.readouterr().out)
        rows = rows if isinstance(rows, list) else rows["rows"]
        assert rows[0]["verified"] is want
