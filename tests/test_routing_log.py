"""Routing logs (JSONL / CSV) to traces: round trips, malformed lines, bounded memory."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

import lrc_kernels as lk
from lrc_kernels import convert
from lrc_kernels.io import read_trace


def make_trace(seed=0, S=5, L=3, E=16, k=4, weights=True, domains=True):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 20, S)
    N = int(lengths.sum())
    ids = np.stack([[rng.choice(E, k, replace=False) for _ in range(L)] for _ in range(N)])
    off = np.concatenate([[0], np.cumsum(lengths)])
    w = rng.random((N, L, k)).astype(np.float32) if weights else None
    dom = [f"d{s % 2}" for s in range(S)] if domains else None
    return lk.Trace(ids, off, num_experts=E, weights=w, domains=dom)


def records(t, shuffle_within=None):
    """One dict per (sequence, position, layer), grouped by request."""
    out = []
    for s in range(t.num_sequences):
        a, b = t.offsets[s], t.offsets[s + 1]
        group = []
        for pos in range(b - a):
            for lay in range(t.num_layers):
                r = {
                    "request_id": f"req-{s}",
                    "position": pos,
                    "layer": lay,
                    "experts": t.experts[a + pos, lay].tolist(),
                }
                if t.weights is not None:
                    r["weights"] = [float(x) for x in t.weights[a + pos, lay]]
                if t.domains is not None:
                    r["domain"] = str(t.domains[s])
                group.append(r)
        if shuffle_within is not None:
            shuffle_within.shuffle(group)
        out.extend(group)
    return out


def write_jsonl(path, recs):
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def write_csv(path, recs, sep=" "):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        cols = list(recs[0])
        w.writerow(cols)
        for r in recs:
            w.writerow(
                [sep.join(repr(x) for x in r[c]) if isinstance(r[c], list) else r[c] for c in cols]
            )
    return path


def same(a, b):
    assert np.array_equal(np.asarray(a.experts), np.asarray(b.experts))
    assert a.experts.dtype == b.experts.dtype
    assert np.array_equal(a.offsets, b.offsets)
    assert a.num_experts == b.num_experts
    if a.weights is None:
        assert b.weights is None
    else:
        assert np.array_equal(a.weights, b.weights)
    if a.domains is not None:
        assert list(a.domains) == list(b.domains)


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_round_trip_bit_identical(tmp_path, fmt, seed):
    t = make_trace(seed, weights=seed != 1, domains=seed != 2)
    recs = records(t, shuffle_within=np.random.default_rng(seed))  # any order in a group
    p = (write_jsonl if fmt == "jsonl" else write_csv)(tmp_path / f"log.{fmt}", recs)
    same(t, convert.from_routing_log(p, num_experts=t.num_experts))
    out = tmp_path / "t.lrc.arrow"
    st = convert.routing_log_to_file(p, out, num_experts=t.num_experts)
    assert (st.requests, st.tokens, st.records) == (
        t.num_sequences,
        t.num_tokens,
        t.num_tokens * t.num_layers,
    )
    same(t, read_trace(out))


def test_csv_list_spellings_and_aliases(tmp_path):
    p = tmp_path / "log.csv"
    p.write_text(
        "req_id,token_idx,layer_id,topk_ids,topk_weights\n"
        'a,0,0,"[3, 1]","[0.5, 0.25]"\n'
        "a,0,1,2;0,0.5;0.5\n"
        "a,1,0,1|3,1|0\n"
        "a,1,1,0 2,0 1\n"
    )
    t = convert.from_routing_log(p, num_experts=4)
    assert t.experts.tolist() == [[[3, 1], [2, 0]], [[1, 3], [0, 2]]]
    assert t.weights[0, 0].tolist() == [0.5, 0.25]


def test_layer_ids_kept(tmp_path):
    recs = [{"request_id": 0, "position": 0, "layer": lay, "experts": [1]} for lay in (1, 3, 5)]
    t = convert.from_routing_log(write_jsonl(tmp_path / "l.jsonl", recs), num_experts=2)
    assert t.num_layers == 3 and t.meta["layer_ids"] == [1, 3, 5]


GOOD = {"request_id": "r", "position": 0, "layer": 0, "experts": [0, 1]}


def line(**kw):
    r = dict(GOOD, **kw)
    return json.dumps({k: v for k, v in r.items() if v is not None})


@pytest.mark.parametrize(
    ("lines", "match"),
    [
        ([line(), "{not json"], r"line 2: not valid JSON"),
        ([line(), line(position=1, experts=None)], r"line 2: missing field 'experts'"),
        ([line(experts=[0, 4])], r"line 1: field 'experts': id 4 is outside \[0, 4\)"),
        ([line(experts=[-1, 0])], r"line 1: field 'experts': id -1"),
        ([line(experts=[2, 2])], r"line 1: field 'experts': expert 2 appears twice"),
        ([line(), line(position="x")], r"line 2: field 'position' must be an integer"),
        ([line(), line(experts=[0, 1, 2], position=1)], r"line 2: field 'experts' has 3 ids"),
        ([line(), line(position=2)], r"lines 1-2\): no record for position 1, layer 0"),
        (
            [line(), line(layer=1), line(position=1)],
            r"lines 1-3\): no record for position 1, layer 1",
        ),
        ([line(), line()], r"line 2: request 'r' has a second record for position 0"),
        (
            [line(), line(request_id="s"), line(position=1)],
            r"line 3: request 'r' reappears after it was closed",
        ),
        ([line(weights=[0.5, 0.5]), line(position=1)], r"line 2: field 'weights' is missing"),
        ([line(weights=[0.5])], r"line 1: field 'weights' has 1 values for 2 experts"),
        (['{"position": 0, "layer": 0, "experts": [1]}'], r"line 1: no field 'request_id'"),
        (["[1, 2]"], r"line 1: a record must be a JSON object"),
    ],
)
def test_malformed_lines_name_the_line(tmp_path, lines, match):
    p = tmp_path / "bad.jsonl"
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=match):
        convert.from_routing_log(p, num_experts=4)


def test_malformed_csv(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("request_id,position,layer,experts\nr,0,0,0 1\nr,1,0\n")
    with pytest.raises(ValueError, match=r"line 3: 3 fields, the header has 4"):
        convert.from_routing_log(p, num_experts=4)
    p.write_text("request_id,position,layer,experts\nr,0,0,0 x\n")
    with pytest.raises(ValueError, match=r"line 2: field 'experts' must be an integer"):
        convert.from_routing_log(p, num_experts=4)


def test_memory_bounded_by_open_requests(tmp_path):
    # 2000 requests, grouped: never more than one open
    rng = np.random.default_rng(5)
    recs = []
    for r in range(2000):
        for pos in range(3):
            recs.append(
                {"request_id": r, "position": pos, "layer": 0, "experts": [int(rng.integers(8))]}
            )
    p = write_jsonl(tmp_path / "many.jsonl", recs)
    st = convert.RoutingLogStats()
    t = convert.from_routing_log(p, num_experts=8, stats=st)
    assert st.peak_open == 1 and st.requests == 2000 and t.num_sequences == 2000
    # the same requests interleaved four at a time: max_open=4 buffers them, 1 refuses
    inter = []
    for block in range(0, 2000, 4):
        for pos in range(3):
            inter.extend(recs[(block + j) * 3 + pos] for j in range(4))
    q = write_jsonl(tmp_path / "inter.jsonl", inter)
    st = convert.RoutingLogStats()
    t2 = convert.from_routing_log(q, num_experts=8, max_open=4, stats=st)
    assert st.peak_open == 4
    same(t, t2)
    with pytest.raises(ValueError, match=r"line 5: request '0' reappears.*max_open \(now 1\)"):
        convert.from_routing_log(q, num_experts=8)


def test_failed_file_conversion_leaves_complete_requests(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text("\n".join([line(), line(request_id="s"), line(request_id="s", experts=[9, 0])]))
    out = tmp_path / "t.lrc.arrow"
    with pytest.raises(ValueError, match="line 3"):
        convert.routing_log_to_file(p, out, num_experts=4)
    with pytest.warns(lk.IncompleteTraceWarning):
        t = read_trace(out, allow_incomplete=True)
    assert t.num_sequences == 1


def test_bad_arguments(tmp_path):
    p = write_jsonl(tmp_path / "x.log", [GOOD])
    with pytest.raises(ValueError, match="format='jsonl'"):
        convert.from_routing_log(p, num_experts=4)
    assert convert.from_routing_log(p, num_experts=4, format="jsonl").num_tokens == 1
    with pytest.raises(ValueError, match="format"):
        convert.from_routing_log(p, num_experts=4, format="xml")
    with pytest.raises(ValueError, match="max_open must be >= 1"):
        convert.from_routing_log(p, num_experts=4, format="jsonl", max_open=0)
    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(ValueError, match="no records"):
        convert.from_routing_log(tmp_path / "e.jsonl", num_experts=4)


# ------------------------------------------------------------------ lrc convert
@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_cli_convert_routing_log(tmp_path, fmt):
    from test_cli import run_lrc

    t = make_trace(7)
    recs = records(t)
    p = (write_jsonl if fmt == "jsonl" else write_csv)(tmp_path / f"log.{fmt}", recs)
    out = tmp_path / "t.lrc.arrow"
    r = run_lrc("convert", p, "--out", out, "--num-experts", t.num_experts)
    assert "at most 1 open at once" in r.stderr
    same(t, read_trace(out))
    # with another input (not streamed): concatenated in memory
    out2 = tmp_path / "t2.lrc.arrow"
    run_lrc("convert", p, p, "--out", out2, "--num-experts", t.num_experts)
    assert read_trace(out2).num_sequences == 2 * t.num_sequences
    err = run_lrc("convert", p, "--out", tmp_path / "x.lrc.arrow", check_rc=1).stderr
    assert "needs --num-experts" in err


def test_cli_convert_bad_log(tmp_path):
    from test_cli import run_lrc

    p = tmp_path / "bad.jsonl"
    p.write_text(line() + "\n" + line(position=1, experts=[0, 7]) + "\n")
    err = run_lrc(
        "convert", p, "--out", tmp_path / "t.lrc.arrow", "--num-experts", 4, check_rc=1
    ).stderr
    assert "line 2: field 'experts': id 7 is outside [0, 4)" in err


def test_gzip_and_ndjson(tmp_path):
    import gzip

    t = make_trace(3)
    text = "".join(json.dumps(r) + "\n" for r in records(t))
    with gzip.open(tmp_path / "log.jsonl.gz", "wt") as f:
        f.write(text)
    (tmp_path / "log.ndjson").write_text(text)
    same(t, convert.from_routing_log(tmp_path / "log.jsonl.gz", num_experts=t.num_experts))
    same(t, convert.from_routing_log(tmp_path / "log.ndjson", num_experts=t.num_experts))
