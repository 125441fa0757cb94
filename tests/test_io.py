"""Trace files: exact round trips, streaming batches, metadata, plain-pyarrow readability."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.ipc as ipc
import pytest
from conftest import FLAME
from hypothesis import given
from hypothesis import strategies as st
from strategies import traces

import lrc_kernels as lk
from lrc_kernels import reference
from lrc_kernels.io import (
    FORMAT_VERSION,
    TraceFileError,
    TraceReader,
    TraceWriter,
    iter_trace_batches,
    read_trace,
    write_trace,
)


def assert_same(a: lk.Trace, b: lk.Trace, weights: bool = True) -> None:
    assert a.num_experts == b.num_experts
    assert a.experts.dtype == b.experts.dtype
    assert np.array_equal(a.experts, b.experts)
    assert np.array_equal(a.offsets, b.offsets)
    if a.domains is None:
        assert b.domains is None
    else:
        assert list(a.domains) == list(b.domains)
    if weights:
        if a.weights is None:
            assert b.weights is None
        else:
            assert np.array_equal(a.weights, b.weights)


def concat(batches: list[lk.Trace]) -> lk.Trace:
    ids = np.concatenate([b.experts for b in batches])
    lens = np.concatenate([b.lengths for b in batches])
    dom = None
    if batches[0].domains is not None:
        dom = list(np.concatenate([b.domains for b in batches]))
    w = None
    if batches[0].weights is not None:
        w = np.concatenate([b.weights for b in batches])
    off = np.concatenate([[0], np.cumsum(lens)])
    return lk.Trace(ids, off, num_experts=batches[0].num_experts, domains=dom, weights=w)


@given(
    tr=traces(max_sequences=6, max_len=30, domains=False),
    labeled=st.booleans(),
    wdt=st.sampled_from([None, "float16", "float32"]),
    tok=st.booleans(),
    batch_tokens=st.integers(1, 80),
    max_tokens=st.integers(1, 100),
    compression=st.sampled_from(["zstd", "lz4", None]),
)
def test_round_trip_exact(
    tmp_path_factory, tr, labeled, wdt, tok, batch_tokens, max_tokens, compression
):
    rng = np.random.default_rng(tr.num_tokens)
    w = None
    if wdt is not None:
        w = rng.random(tr.experts.shape).astype(wdt)
    dom = [f"d{s % 3}" for s in range(tr.num_sequences)] if labeled else None
    tr = lk.Trace(tr.experts, tr.offsets, num_experts=tr.num_experts, domains=dom, weights=w)
    token_ids = rng.integers(-5, 50_000, tr.num_tokens) if tok else None
    path = tmp_path_factory.mktemp("rt") / "t.lrc.arrow"
    write_trace(path, tr, token_ids=token_ids, batch_tokens=batch_tokens, compression=compression)

    back = read_trace(path)
    assert_same(tr, back)
    if w is not None:
        assert back.weights.dtype == np.dtype(wdt)

    r = TraceReader(path)
    assert (r.num_experts, r.top_k, r.num_layers) == (tr.num_experts, tr.top_k, tr.num_layers)
    assert r.num_sequences == tr.num_sequences
    assert r.num_tokens == tr.num_tokens
    assert np.array_equal(r.lengths(), tr.lengths)
    assert r.domains() == (dom if labeled else [None] * tr.num_sequences)
    if tok:
        assert np.array_equal(r.token_ids(), token_ids)
    else:
        assert r.token_ids() is None

    batches = list(r.batches(max_tokens))
    if tr.num_sequences:
        assert sum(b.num_sequences for b in batches) == tr.num_sequences
        for b in batches:
            assert b.num_tokens <= max_tokens or b.num_sequences == 1
            assert b.meta["num_experts"] == tr.num_experts
        assert_same(tr, concat(batches))
    else:
        assert batches == []
    # iter_trace_batches skips weights by default (metrics never need them)
    streamed = list(iter_trace_batches(path, max_tokens=max_tokens))
    assert all(b.weights is None for b in streamed)
    if tr.num_sequences:
        assert_same(tr, concat(streamed), weights=False)


def test_batches_are_greedy_whole_sequences(tmp_path):
    tr = lk.synthetic_trace(10, [5, 1, 7, 3, 0, 2, 9, 4, 4, 1], 2, 16, 3, seed=1)
    p = tmp_path / "g.lrc.arrow"
    write_trace(p, tr, batch_tokens=6)  # record batches of whole sequences, >= 6 tokens
    got = [list(b.lengths) for b in TraceReader(p).batches(8)]
    assert got == [[5, 1], [7], [3, 0, 2], [9], [4, 4], [1]]


@pytest.mark.parametrize(
    ("E", "dtype"),
    [(1, "uint8"), (256, "uint8"), (257, "uint16"), (65536, "uint16"), (65537, "uint32")],
)
def test_narrowest_id_type(tmp_path, E, dtype):
    k = min(E, 3)
    x = np.stack([np.arange(k) + (E - k) * (t % 2) for t in range(6)])[:, None, :]
    tr = lk.Trace(x, num_experts=E)
    p = tmp_path / "n.lrc.arrow"
    write_trace(p, tr)
    schema = ipc.open_file(p).schema
    assert str(schema.field("experts").type.value_type.value_type.value_type) == dtype
    back = read_trace(p)
    assert back.experts.dtype == np.dtype(dtype)
    assert_same(tr, back)


def test_metadata_round_trip(tmp_path):
    tr = lk.synthetic_trace(3, 20, 4, 64, 8, seed=1, domains=["a", "b", "c"])
    tr = lk.Trace(
        tr.experts,
        tr.offsets,
        num_experts=64,
        domains=tr.domains,
        meta={"model_name": "org/model", "moe_layer_ids": np.array([1, 3, 5, 7]), "lr": 3e-4},
    )
    p = tmp_path / "m.lrc.arrow"
    write_trace(p, tr, meta={"run": {"step": np.int64(5)}})
    r = TraceReader(p)
    m = r.meta
    assert m["model"] == "org/model" and m["layer_ids"] == [1, 3, 5, 7]
    assert m["lr"] == 3e-4 and m["run"] == {"step": 5}
    assert m["format_version"] == FORMAT_VERSION and m["producer"] == "lrc_kernels"
    assert m["producer_version"] == lk.__version__
    assert (m["num_experts"], m["top_k"], m["num_layers"]) == (64, 8, 4)
    assert m["created"].endswith("+00:00")
    assert m["source_file"] == str(p)
    back = read_trace(p)
    assert back.meta["model"] == "org/model"
    # writing a read trace again keeps the user keys and refreshes provenance
    p2 = tmp_path / "m2.lrc.arrow"
    write_trace(p2, back)
    m2 = TraceReader(p2).meta
    assert m2["lr"] == 3e-4 and m2["layer_ids"] == [1, 3, 5, 7] and m2["model"] == "org/model"


def test_metadata_errors(tmp_path):
    tr = lk.synthetic_trace(1, 4, 2, 8, 2)
    with pytest.raises(TypeError, match=r"meta\.bad"):
        write_trace(tmp_path / "x.arrow", tr, meta={"bad": object()})
    with pytest.raises(ValueError, match="num_experts=9"):
        write_trace(tmp_path / "x.arrow", tr, meta={"num_experts": 9})
    with pytest.raises(ValueError, match="layer_ids has 3 entries"):
        TraceWriter(tmp_path / "y.arrow", num_experts=8, top_k=2, num_layers=2, layer_ids=[1, 2, 3])


def test_plain_pyarrow_reads_it(tmp_path):
    tr = lk.synthetic_trace(2, 5, 3, 10, 2, seed=3, domains=["x", "y"])
    p = tmp_path / "plain.lrc.arrow"
    write_trace(p, tr, token_ids=np.arange(10))
    table = ipc.open_file(p).read_all()
    assert table.column_names == ["domain", "length", "experts", "token_ids"]
    rows = table.to_pylist()
    assert [r["domain"] for r in rows] == ["x", "y"]
    assert [r["length"] for r in rows] == [5, 5]
    assert rows[1]["experts"] == tr.sequence(1).tolist()
    assert rows[1]["token_ids"] == list(range(5, 10))
    info = json.loads(table.schema.metadata[b"lrc_trace"])
    assert info["num_experts"] == 10


def test_many_files_and_directories(tmp_path):
    parts = [lk.synthetic_trace(3, 10 + i, 2, 16, 4, seed=i, domains=1) for i in range(3)]
    d = tmp_path / "shards"
    d.mkdir()
    for i, t in enumerate(parts):
        write_trace(d / f"part-{i:03d}.lrc.arrow", t)
    (d / "notes.txt").write_text("ignored: not an .arrow file")
    whole = concat(parts)
    assert_same(whole, read_trace(d))
    files = [d / f"part-{i:03d}.lrc.arrow" for i in (2, 0)]
    assert_same(concat([parts[2], parts[0]]), read_trace(files))
    r = TraceReader(d)
    assert r.num_sequences == 9 and len(r.files) == 3
    assert r.meta["source_files"] == r.files
    # batches never span two files
    assert [b.num_sequences for b in r.batches(10_000)] == [3, 3, 3]
    # files that disagree on the shape of the trace are refused, naming both
    write_trace(d / "part-999.lrc.arrow", lk.synthetic_trace(1, 5, 2, 32, 4))
    with pytest.raises(TraceFileError, match="part-999.*num_experts=32.*part-000"):
        TraceReader(d)


def test_source_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such trace file"):
        read_trace(tmp_path / "missing.arrow")
    with pytest.raises(FileNotFoundError, match="no \\*.arrow trace files"):
        read_trace(tmp_path)
    with pytest.raises(ValueError, match="empty list"):
        read_trace([])
    with pytest.raises(TypeError, match="path"):
        read_trace(123)


def test_writer_streaming_api(tmp_path):
    tr = lk.synthetic_trace(5, [3, 0, 4, 2, 6], 2, 12, 3, seed=7, domains=["p", "q"])
    p = tmp_path / "w.lrc.arrow"
    with TraceWriter(p, num_experts=12, top_k=3, num_layers=2, batch_tokens=4, model="m") as w:
        for s in range(2):
            w.write_sequence(tr.sequence(s).astype(np.int64), domain=tr.domains[s])
        w.write(tr.select(sequences=[2, 3, 4]))
        assert w.num_sequences == 5
        assert "open" in repr(w)
    assert w.closed
    w.close()  # idempotent
    back = read_trace(p)
    assert_same(tr, back)
    assert back.meta["model"] == "m"
    with pytest.raises(ValueError, match="closed"):
        w.write_sequence(tr.sequence(0))


def test_empty_file(tmp_path):
    p = tmp_path / "e.lrc.arrow"
    TraceWriter(p, num_experts=4, top_k=2, num_layers=3).close()
    r = TraceReader(p)
    assert r.num_sequences == 0 and r.num_tokens == 0 and list(r.batches()) == []
    back = read_trace(p)
    assert back.num_sequences == 0 and back.experts.shape == (0, 3, 2)


def _writer(tmp_path, **kw):
    args = {"num_experts": 8, "top_k": 2, "num_layers": 2}
    args.update(kw)
    return TraceWriter(tmp_path / "v.lrc.arrow", **args)


@pytest.mark.parametrize(
    ("kw", "call", "match"),
    [
        (
            {},
            {"experts": [[[0, 8], [1, 2]]]},
            r"sequence 0 .*token 0, layer 0, slot 1: expert id 8",
        ),
        ({}, {"experts": [[[0, 1], [1, 2]], [[3, 3], [1, 2]]]}, r"token 1, layer 0: expert id 3"),
        ({}, {"experts": [[[-1, 1], [1, 2]]]}, r"expert id -1 is negative; ids must lie in \[0, 8"),
        ({}, {"experts": [[0, 1], [1, 2]]}, r"shape \(tokens, 2, 2\)"),
        ({}, {"experts": [[[0.0, 1.0], [1.0, 2.0]]]}, "integer ids"),
        (
            {},
            {"experts": [[[0, 1], [1, 2]]], "weights": [[[1.0, 1.0], [1.0, 1.0]]]},
            "weights_dtype",
        ),
        ({"weights_dtype": "float16"}, {"experts": [[[0, 1], [1, 2]]]}, "pass weights"),
        (
            {"weights_dtype": "float16"},
            {"experts": [[[0, 1], [1, 2]]], "weights": [[[1e6, 1.0], [1.0, 1.0]]]},
            "overflows float16",
        ),
        (
            {"weights_dtype": "float32"},
            {"experts": [[[0, 1], [1, 2]]], "weights": [[[-1.0, 1.0], [1.0, 1.0]]]},
            "token 0, layer 0, slot 0",
        ),
        ({"token_ids": True}, {"experts": [[[0, 1], [1, 2]]]}, "pass token_ids"),
        (
            {"token_ids": True},
            {"experts": [[[0, 1], [1, 2]]], "token_ids": [1, 2]},
            r"shape \(1,\)",
        ),
        ({}, {"experts": [[[0, 1], [1, 2]]], "token_ids": [1]}, "token_ids=True"),
        ({}, {"experts": [[[0, 1], [1, 2]]], "domain": 3}, "domain must be a str"),
    ],
)
def test_write_sequence_errors(tmp_path, kw, call, match):
    with _writer(tmp_path, **kw) as w:
        with pytest.raises((ValueError, TypeError), match=match):
            w.write_sequence(np.asarray(call.pop("experts")), **call)


def test_domain_labels_all_or_none(tmp_path):
    with _writer(tmp_path) as w:
        w.write_sequence(np.zeros((1, 2, 2), int) + [[0, 1]], domain="a")
        with pytest.raises(ValueError, match="have domain labels"):
            w.write_sequence(np.zeros((1, 2, 2), int) + [[0, 1]])


def test_writer_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="top_k = 9 exceeds"):
        _writer(tmp_path, top_k=9)
    with pytest.raises(ValueError, match="weights_dtype"):
        _writer(tmp_path, weights_dtype="int8")
    with pytest.raises(ValueError, match="compression"):
        _writer(tmp_path, compression="gzip")
    with pytest.raises(TypeError, match="batch_tokens"):
        _writer(tmp_path, batch_tokens=1.5)
    tr = lk.synthetic_trace(1, 3, 2, 16, 2)
    with _writer(tmp_path) as w:
        with pytest.raises(ValueError, match="num_experts=16"):
            w.write(tr)
        with pytest.raises(TypeError, match="takes a Trace"):
            w.write(tr.experts)
    with _writer(tmp_path, num_experts=16, weights_dtype="float16") as w:
        with pytest.raises(ValueError, match="has none"):
            w.write(tr)
    with pytest.raises(ValueError, match="has no weights"):
        write_trace(tmp_path / "z.arrow", tr, weights_dtype="float32")


def test_write_trace_weights_choices(tmp_path):
    tr = lk.synthetic_trace(2, 4, 1, 8, 2)
    w = np.full(tr.experts.shape, 0.25, np.float64)
    tr = lk.Trace(tr.experts, tr.offsets, num_experts=8, weights=w)
    p = tmp_path / "w.arrow"
    write_trace(p, tr)
    assert read_trace(p).weights.dtype == np.float32
    write_trace(p, tr, weights_dtype="float16")
    assert read_trace(p).weights.dtype == np.float16
    assert np.array_equal(read_trace(p).weights, w.astype(np.float16))
    write_trace(p, tr, weights_dtype="none")
    assert read_trace(p).weights is None
    assert read_trace(p, weights=False).weights is None


def test_streamed_tables_add_up_exactly(tmp_path):
    """Window histograms and stack-depth counts of the batches sum to the whole trace's."""
    tr = lk.synthetic_trace(9, [7, 3, 12, 0, 5, 9, 1, 6, 8], 2, 6, 2, stay=0.6, seed=2)
    p = tmp_path / "s.lrc.arrow"
    write_trace(p, tr, batch_tokens=5)
    batches = list(iter_trace_batches(p, max_tokens=10))
    assert len(batches) > 3

    def hist(t):
        g = np.zeros(t.num_sequences, np.int64)
        return reference.window_hist_table(t.experts, t.offsets, 6, [1, 3, 4], g, 1, True)

    def stats(t):
        g = np.zeros(t.num_sequences, np.int64)
        return reference.stack_stats_table(t.experts, t.offsets, 6, "sch", 3, True, True, g, 1)

    assert np.array_equal(sum(hist(b) for b in batches), hist(tr))
    assert np.array_equal(sum(stats(b) for b in batches), stats(tr))


def test_public_metrics_stream_files_exactly(tmp_path):
    """srp / sch / hit_curve on a path equal the in-memory results (lead's streaming API)."""
    tr = lk.synthetic_trace(12, 64, 3, 16, 4, stay=0.7, seed=5, domains=["a", "b"])
    p = tmp_path / "api.lrc.arrow"
    write_trace(p, tr, batch_tokens=100)
    a, b = lk.srp(tr, [2, 8], level="layer"), lk.srp(p, [2, 8], level="layer")
    assert np.array_equal(a.value, b.value) and np.array_equal(a.threshold, b.threshold)
    a, b = lk.srp(tr, 4, by_domain=True), lk.srp(p, 4, by_domain=True)
    assert np.array_equal(a.value, b.value)
    for lvl in ("layer", "model"):
        a, b = lk.sch(tr, 4, level=lvl), lk.sch(p, 4, level=lvl)
        assert np.array_equal(a.stat, b.stat) and np.array_equal(a.rates, b.rates)
    a, b = lk.hit_curve(tr, "lru"), lk.hit_curve(p, "lru")
    assert np.array_equal(a.stat, b.stat) and np.array_equal(a.rates, b.rates)


@pytest.mark.skipif(not FLAME.exists(), reason="real FLAME trace not present")
def test_flame_trace_compresses_below_0_8_bytes(tmp_path, flame_trace):
    p = tmp_path / "flame.lrc.arrow"
    write_trace(p, flame_trace)
    back = read_trace(p)
    assert_same(flame_trace, back)
    # whole file (ids, lengths, schema, footer) per routing decision
    assert p.stat().st_size / flame_trace.num_activations < 0.8


def test_reader_meta_and_repr(tmp_path):
    p = tmp_path / "r.lrc.arrow"
    write_trace(p, lk.synthetic_trace(2, 3, 1, 4, 2))
    with TraceReader(p) as r:
        assert "E=4" in repr(r)
        assert r.num_activations == 2 * 3 * 1 * 2
        assert r.meta["model"] == "synthetic"
        assert Path(r.files[0]) == p


def test_lazy_exports():
    import lrc_kernels.io as io

    for name in ("read_trace", "write_trace", "TraceWriter", "TraceReader", "iter_trace_batches"):
        assert getattr(lk, name) is getattr(io, name)


@given(
    E=st.sampled_from([2, 5, 64, 300]),
    k=st.integers(2, 6),
    n=st.integers(1, 700),
    L=st.integers(1, 3),
    seed=st.integers(0, 2**32 - 1),
    dups=st.integers(0, 3),
)
def test_fast_duplicate_scan_matches_the_plain_one(E, k, n, L, seed, dups):
    from lrc_kernels.cpu._validate import _first_duplicate_pairwise, _first_duplicate_stamped

    k = min(k, E)
    rng = np.random.default_rng(seed)
    x = np.argsort(rng.random((n, L, E)), axis=2)[:, :, :k].astype(np.uint16)
    for _ in range(dups):  # plant repeats
        r, l, j = rng.integers(n), rng.integers(L), rng.integers(1, k)
        x[r, l, j] = x[r, l, rng.integers(j)]
    assert _first_duplicate_stamped(x, E) == _first_duplicate_pairwise(x)
