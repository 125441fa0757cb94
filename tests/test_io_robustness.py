"""Damaged trace files: killed writers, truncation, flipped bytes, foreign and crafted files.

The contract: every completed record batch of an interrupted file stays readable, and a
damaged or foreign file gives a TraceFileError naming the file and the problem. Never a
crash, never a silently different trace.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pytest

import lrc_kernels as lk
from lrc_kernels import io
from lrc_kernels.io import (
    IncompleteTraceError,
    IncompleteTraceWarning,
    TraceFileError,
    TraceReader,
    read_trace,
    repair_trace,
    write_trace,
)

ROOT = Path(__file__).resolve().parents[1]


def _read_quietly(path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IncompleteTraceWarning)
        return read_trace(path, allow_incomplete=True, **kw)


def _same(a: lk.Trace, b: lk.Trace) -> bool:
    same_dom = (a.domains is None and b.domains is None) or (
        a.domains is not None and b.domains is not None and list(a.domains) == list(b.domains)
    )
    same_w = (a.weights is None and b.weights is None) or (
        a.weights is not None and b.weights is not None and np.array_equal(a.weights, b.weights)
    )
    return (
        a.num_experts == b.num_experts
        and a.experts.shape == b.experts.shape
        and np.array_equal(a.experts, b.experts)
        and np.array_equal(a.offsets, b.offsets)
        and same_dom
        and same_w
    )


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A small file of 6 record batches (2 sequences each) with weights and domains."""
    tr = lk.synthetic_trace(12, 8, 2, 16, 3, stay=0.5, seed=4, domains=["a", "b", "c"])
    w = np.random.default_rng(0).random(tr.experts.shape).astype(np.float16)
    tr = lk.Trace(tr.experts, tr.offsets, num_experts=16, domains=tr.domains, weights=w)
    p = tmp_path_factory.mktemp("small") / "small.lrc.arrow"
    write_trace(p, tr, batch_tokens=16)
    return tr, p, p.read_bytes()


# ------------------------------------------------------------------ killed writer
WRITER = textwrap.dedent(
    """
    import sys
    import lrc_kernels as lk
    from lrc_kernels.io import TraceWriter

    tr = lk.synthetic_trace(50, 256, 4, 64, 8, seed=1)
    with TraceWriter(sys.argv[1], num_experts=64, top_k=8, num_layers=4,
                     batch_tokens=512) as w:
        i = 0
        while True:  # until killed
            w.write_sequence(tr.sequence(i % 50), domain=f"d{i % 3}")
            i += 1
            if i % 2 == 0:  # 2 sequences of 256 tokens fill a batch, flushed on the spot
                print("flushed", i, flush=True)
    """
)


def test_killed_writer_keeps_completed_batches(tmp_path):
    path = tmp_path / "killed.lrc.arrow"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, env=env, text=True
    )
    try:
        seen = 0
        for _ in range(20):
            line = proc.stdout.readline()
            assert line.startswith("flushed"), line
            seen = int(line.split()[1])
        proc.send_signal(signal.SIGKILL)  # no cleanup: no footer, maybe half a batch
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    with pytest.raises(IncompleteTraceError, match=r"killed\.lrc\.arrow.*incomplete"):
        read_trace(path)
    with pytest.warns(IncompleteTraceWarning, match="complete record batches"):
        got = read_trace(path, allow_incomplete=True)
    assert got.num_sequences >= seen and got.num_sequences % 2 == 0
    tr = lk.synthetic_trace(50, 256, 4, 64, 8, seed=1)
    for s in range(got.num_sequences):
        assert np.array_equal(got.sequence(s), tr.sequence(s % 50))
        assert got.domains[s] == f"d{s % 3}"
    fixed = tmp_path / "fixed.lrc.arrow"
    assert repair_trace(path, fixed) == got.num_sequences
    assert _same(read_trace(fixed), got)


def test_exception_in_with_block_leaves_incomplete_file(tmp_path):
    p = tmp_path / "aborted.lrc.arrow"
    tr = lk.synthetic_trace(3, 4, 1, 8, 2)
    with pytest.raises(RuntimeError, match="producer failed"):
        with io.TraceWriter(p, num_experts=8, top_k=2, num_layers=1) as w:
            w.write(tr)
            raise RuntimeError("producer failed")
    with pytest.raises(IncompleteTraceError, match="3 sequences, 12 tokens"):
        read_trace(p)
    assert _same(_read_quietly(p), tr)  # the buffered, complete sequences were kept


# ---------------------------------------------------------------------- truncation
def _batch_ends(data: bytes) -> list[int]:
    """Byte offset just after each record batch message of the stream part of a file."""
    reader = ipc.MessageReader.open_stream(pa.py_buffer(data[8:]))
    ends, pos = [], 8
    while True:
        try:
            msg = reader.read_next_message()
        except StopIteration:
            break
        pos += msg.serialize().size
        if msg.type == "record batch":
            ends.append(pos)
    return ends


def test_truncation_reads_exactly_the_complete_batches(tmp_path, small):
    tr, _, data = small
    ends = _batch_ends(data)
    assert len(ends) == 6
    cuts = sorted(set(range(0, len(data), 23)) | set(ends) | {e - 1 for e in ends})
    p = tmp_path / "cut.lrc.arrow"
    for cut in cuts:
        p.write_bytes(data[:cut])
        with pytest.raises(TraceFileError, match="cut.lrc.arrow"):
            read_trace(p)
        complete = sum(e <= cut for e in ends)
        if cut < 8 or complete == 0:
            try:
                got = _read_quietly(p)
            except TraceFileError:
                continue
            assert got.num_sequences == 0
            continue
        got = _read_quietly(p)
        want = tr.select(sequences=range(2 * complete))
        assert _same(got, want), cut


def test_truncation_error_says_what_is_readable(tmp_path, small):
    _, _, data = small
    ends = _batch_ends(data)
    p = tmp_path / "t.lrc.arrow"
    p.write_bytes(data[: ends[2] + 10])
    with pytest.raises(IncompleteTraceError) as ei:
        read_trace(p)
    msg = str(ei.value)
    assert "3 complete record batches (6 sequences, 48 tokens)" in msg
    assert "allow_incomplete=True" in msg and "repair_trace" in msg
    with pytest.warns(IncompleteTraceWarning):
        r = TraceReader(p, allow_incomplete=True)
    assert r.num_sequences == 6
    assert [b.num_sequences for b in r.batches(16)] == [2, 2, 2]


# ------------------------------------------------------------------- flipped bytes
def test_every_flipped_byte_is_caught_or_harmless(tmp_path):
    """Flip bytes: the read fails with TraceFileError or gives the very same trace.

    Every 3rd byte by default (all byte offsets modulo 8 and every part of the file are
    hit); every byte with LRC_HYPOTHESIS_PROFILE=thorough.
    """
    tr = lk.synthetic_trace(4, 8, 2, 16, 3, stay=0.5, seed=4, domains=["a", "b"])
    w = np.random.default_rng(0).random(tr.experts.shape).astype(np.float16)
    tr = lk.Trace(tr.experts, tr.offsets, num_experts=16, domains=tr.domains, weights=w)
    p = tmp_path / "flip.lrc.arrow"
    write_trace(p, tr, batch_tokens=16, token_ids=np.arange(tr.num_tokens))
    data = p.read_bytes()
    step = 1 if os.environ.get("LRC_HYPOTHESIS_PROFILE") == "thorough" else 3
    caught = harmless = 0
    for pos in range(0, len(data), step):
        bad = bytearray(data)
        bad[pos] ^= 0x5A
        p.write_bytes(bytes(bad))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", IncompleteTraceWarning)
                r = TraceReader(p, allow_incomplete=True)
                got = r.read()
                meta = r.meta
        except TraceFileError:
            caught += 1
            continue
        # a flip in padding, or in the footer (then read as an incomplete file)
        assert _same(got, tr) or (
            got.num_sequences < tr.num_sequences
            and _same(got, tr.select(sequences=range(got.num_sequences)))
        ), pos
        assert (meta["num_experts"], meta["top_k"], meta["num_layers"]) == (16, 3, 2)
        harmless += 1
    assert caught > harmless


# ----------------------------------------------------------------- foreign files
def test_foreign_files(tmp_path):
    cases = {
        "empty.arrow": (b"", "empty file"),
        "z.npz": (b"PK\x03\x04rest", "from_npz"),
        "junk.arrow": (b"hello world, not arrow", "not an Arrow IPC file"),
        "short.arrow": (b"ARR", "truncated after 3 bytes"),
        "magic-only.arrow": (b"ARROW1\x00\x00", "truncated before its schema"),
    }
    for name, (content, match) in cases.items():
        p = tmp_path / name
        p.write_bytes(content)
        with pytest.raises(TraceFileError, match=match):
            read_trace(p, allow_incomplete=True)
    # an Arrow IPC stream, and an Arrow file that is not a trace
    table = pa.table({"x": [1, 2, 3]})
    with ipc.new_stream(tmp_path / "s.arrow", table.schema) as w:
        w.write_table(table)
    with pytest.raises(TraceFileError, match="IPC \\*stream\\*"):
        read_trace(tmp_path / "s.arrow")
    with ipc.new_file(tmp_path / "f.arrow", table.schema) as w:
        w.write_table(table)
    with pytest.raises(TraceFileError, match="not an lrc trace.*columns: \\['x'\\]"):
        read_trace(tmp_path / "f.arrow")


def _rewrite(src: Path, dst: Path, *, info=None, transform=None, keep_crc=False, schema=None):
    """Copy a trace file batch by batch, editing its metadata and/or batches."""
    r = ipc.open_file(src)
    md = dict(r.schema.metadata)
    if info is not None:
        d = json.loads(md[b"lrc_trace"])
        d.update(info)
        md[b"lrc_trace"] = json.dumps(d).encode()
        md.pop(b"lrc_trace.crc32")
    sch = (schema or r.schema).with_metadata(md)
    with ipc.new_file(dst, sch) as w:
        for i in range(r.num_record_batches):
            rb, cmd = r.get_batch_with_custom_metadata(i)
            if transform is not None:
                rb = transform(rb)
            w.write_batch(pa.record_batch(rb.columns, schema=sch), cmd if keep_crc else None)


def _with_ids(rb: pa.RecordBatch, ids: np.ndarray) -> pa.RecordBatch:
    ex = rb.column("experts")
    L, k = ids.shape[1], ids.shape[2]
    cols = list(rb.columns)
    cols[rb.schema.get_field_index("experts")] = io._nested(ids, L, k, ex.offsets.to_numpy())
    return pa.record_batch(cols, schema=rb.schema)


def _ids(rb):
    ex = rb.column("experts")
    return (
        ex.flatten()
        .flatten()
        .flatten()
        .to_numpy()
        .reshape(-1, ex.type.value_type.list_size, ex.type.value_type.value_type.list_size)
    )


def test_newer_format_version(tmp_path, small):
    _, p, _ = small
    _rewrite(p, tmp_path / "v2.arrow", info={"format_version": 2, "producer_version": "9.0"})
    with pytest.raises(TraceFileError, match="format version 2 .*reads versions up to 1.*Upgrade"):
        read_trace(tmp_path / "v2.arrow")


@pytest.mark.parametrize(
    ("info", "match"),
    [
        ({"format": "other"}, "does not name format"),
        ({"format_version": "1"}, "invalid format_version"),
        ({"num_experts": 0}, "invalid trace metadata.*num_experts"),
        ({"top_k": 20}, "top_k=20 exceeds num_experts=16"),
        ({"top_k": 2}, r"column 'experts' has type .*top_k=2"),
        ({"num_experts": 300}, "cannot hold ids up to"),
    ],
)
def test_inconsistent_metadata(tmp_path, small, info, match):
    _, p, _ = small
    _rewrite(p, tmp_path / "m.arrow", info=info)
    with pytest.raises(TraceFileError, match=match):
        read_trace(tmp_path / "m.arrow")


def test_metadata_checksum(tmp_path, small):
    _, p, _ = small
    r = ipc.open_file(p)
    md = dict(r.schema.metadata)
    md[b"lrc_trace"] = md[b"lrc_trace"].replace(b'"num_experts": 16', b'"num_experts": 17')
    sch = r.schema.with_metadata(md)
    with ipc.new_file(tmp_path / "c.arrow", sch) as w:
        w.write_table(r.read_all().cast(sch))
    with pytest.raises(TraceFileError, match="checksum mismatch in the trace metadata"):
        read_trace(tmp_path / "c.arrow")


def test_ids_out_of_range_in_file(tmp_path, small):
    _, p, _ = small

    def bump(rb):
        ids = _ids(rb).copy()
        if rb.column("length").to_numpy().sum() and rb.num_rows == 2:
            ids[9, 1, 2] = 16  # second sequence of the batch, token 1
        return _with_ids(rb, ids)

    _rewrite(p, tmp_path / "r.arrow", transform=bump)
    with pytest.raises(
        TraceFileError,
        match=r"r\.arrow: record batch 0, file sequence 1, token 1, layer 1, slot 2: "
        r"expert id 16 is >= num_experts = 16",
    ):
        read_trace(tmp_path / "r.arrow")


def test_duplicate_ids_in_file(tmp_path, small):
    _, p, _ = small
    state = {"n": 0}

    def dup(rb):
        ids = _ids(rb).copy()
        if state["n"] == 3:
            ids[4, 0, 1] = ids[4, 0, 0]
        state["n"] += 1
        return _with_ids(rb, ids)

    _rewrite(p, tmp_path / "d.arrow", transform=dup)
    with pytest.raises(
        TraceFileError, match=r"record batch 3, file sequence 6, token 4, layer 0: expert id"
    ):
        read_trace(tmp_path / "d.arrow")
    # streaming reports it when it reaches that batch
    it = TraceReader(tmp_path / "d.arrow").batches(16)
    assert next(it).num_sequences == 2
    with pytest.raises(TraceFileError, match="appears twice"):
        list(it)


def test_checksum_catches_changed_data(tmp_path, small):
    _, p, _ = small

    def swap(rb):  # a valid but different trace: the checksum is what notices
        ids = _ids(rb).copy()
        ids[0, 0] = ids[0, 0][::-1]
        return _with_ids(rb, ids)

    _rewrite(p, tmp_path / "x.arrow", transform=swap, keep_crc=True)
    with pytest.raises(TraceFileError, match=r"batch 0 \(file sequences 0..1\): checksum mismatch"):
        read_trace(tmp_path / "x.arrow")


def test_length_column_must_agree(tmp_path, small):
    _, p, _ = small

    def lie(rb):
        cols = list(rb.columns)
        cols[1] = pa.array(np.array([3, 13], np.int64))
        return pa.record_batch(cols, schema=rb.schema)

    _rewrite(p, tmp_path / "l.arrow", transform=lie)
    with pytest.raises(TraceFileError, match="'length' column disagrees"):
        read_trace(tmp_path / "l.arrow")


def test_missing_column(tmp_path, small):
    _, p, _ = small
    r = ipc.open_file(p)
    t = r.read_all().drop_columns(["length"])
    with ipc.new_file(tmp_path / "c.arrow", t.schema) as w:
        w.write_table(t)
    with pytest.raises(TraceFileError, match="lacks the 'length' column"):
        read_trace(tmp_path / "c.arrow")


def test_repair_refuses_in_place(tmp_path, small):
    _, p, _ = small
    with pytest.raises(ValueError, match="other than path"):
        repair_trace(p, p)
