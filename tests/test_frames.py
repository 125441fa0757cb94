"""``SRPResult.to_pandas()`` and ``HitCurve.to_pandas()``: every number of the frame is the
result object's, row by row, and the CLI's tidy output is exactly these frames."""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import lrc_kernels as lk
from lrc_kernels import cli

pd = pytest.importorskip("pandas")

ROOT = Path(__file__).resolve().parents[1]
LENGTHS = [40, 0, 33, 12, 40, 5, 27]  # ragged, one empty sequence, short ones (no window)


@pytest.fixture(scope="module")
def trace():
    return lk.synthetic_trace(
        len(LENGTHS), LENGTHS, 3, 6, 2, stay=0.6, seed=5, domains=["web", "code"]
    )


def _same(a: float, b: float) -> bool:
    """Equal, or both NaN (the frame holds the result's NaN as NaN)."""
    return (math.isnan(a) and math.isnan(b)) or a == b


SRP_CASES = [
    (m, level, by_domain, boot)
    for m in (4, [2, 4, 64])
    for level in ("model", "layer", "expert")
    for by_domain in (False, True)
    for boot in (0, 7)
]


@pytest.mark.parametrize("m, level, by_domain, boot", SRP_CASES)
def test_srp_frame_holds_exactly_the_result(trace, m, level, by_domain, boot):
    res = lk.srp(trace, m, level=level, by_domain=by_domain, bootstrap=boot, seed=1)
    df = res.to_pandas()
    ms = m if isinstance(m, list) else [m]
    want_cols = ["level"]
    want_cols += {"model": [], "layer": ["layer"], "expert": ["layer", "expert"]}[level]
    want_cols += ["domain"] if by_domain else []
    want_cols += ["m", "srp", "threshold", "ratio"]
    want_cols += ["ci_low", "ci_high"] if boot else []
    assert list(df.columns) == [*want_cols, "windows"]
    value = np.asarray(res.value)
    assert len(df) == value.size
    seen = set()
    for row in df.itertuples(index=False):
        r = row._asdict()
        key = []
        if isinstance(m, list):
            key.append(ms.index(r["m"]))
        else:
            assert r["m"] == m
        if by_domain:
            key.append(res.domains.index(r["domain"]))
        wkey = tuple(key)
        if level != "model":
            key.append(r["layer"])
        if level == "expert":
            key.append(r["expert"])
        key = tuple(key)
        seen.add(key)
        assert r["level"] == level
        assert r["srp"] == value[key]
        assert r["threshold"] == np.asarray(res.threshold)[key]
        assert _same(r["ratio"], np.asarray(res.ratio)[key])
        assert r["windows"] == np.asarray(res.windows)[wkey]
        if boot:
            assert _same(r["ci_low"], np.asarray(res.ci[0])[key])
            assert _same(r["ci_high"], np.asarray(res.ci[1])[key])
    assert len(seen) == value.size  # every number once
    assert df["threshold"].dtype == np.int64 and df["windows"].dtype == np.int64
    assert df["srp"].dtype == np.float64


CURVE_CASES = [
    (policy, m, level, by_domain)
    for policy, m in (("lru", None), ("belady", None), ("sch", 8), ("sch", [1, 8]))
    for level in ("layer", "model")
    for by_domain in (False, True)
]


@pytest.mark.parametrize("policy, m, level, by_domain", CURVE_CASES)
def test_curve_frame_holds_exactly_the_result(trace, policy, m, level, by_domain):
    c = lk.hit_curve(trace, policy, m=m, level=level, by_domain=by_domain)
    df = c.to_pandas()
    rates, stat = np.asarray(c.rates), np.asarray(c.stat)
    want = ["policy", "level"] + (["layer"] if level == "layer" else [])
    want += (["domain"] if by_domain else []) + (["m"] if m is not None else [])
    want += ["rho", "cache_size", "hit_rate", "hits", "accesses", "sequences"]
    assert list(df.columns) == want
    assert len(df) == rates.size
    seen = set()
    for r in (row._asdict() for row in df.itertuples(index=False)):
        key = []
        if isinstance(m, list):
            key.append(m.index(r["m"]))
        elif m is not None:
            assert r["m"] == m
        if by_domain:
            key.append(c.domains.index(r["domain"]))
        dkey = key[-1] if by_domain else ()
        if level == "layer":
            key.append(r["layer"])
        C = r["cache_size"]
        seen.add((*key, C))
        assert (r["policy"], r["level"]) == (policy, level)
        assert _same(r["hit_rate"], rates[(*key, C - 1)])
        assert r["hits"] == stat[tuple(key)][:C].sum()
        assert r["accesses"] == stat[tuple(key)].sum()
        assert r["rho"] == C / c.per_unit
        assert r["sequences"] == np.asarray(c.sequences)[dkey]
    assert len(seen) == rates.size


def test_curve_frame_rho_selects_sizes(trace):
    c = lk.sch(trace, [4, 16], by_domain=True)
    df = c.to_pandas(rho=[0.5, 2])
    assert sorted(set(df["cache_size"])) == [1, 4] and sorted(set(df["rho"])) == [0.5, 2.0]
    for mi, m in enumerate([4, 16]):
        for d, dom in enumerate(c.domains):
            sub = df[(df["m"] == m) & (df["domain"] == dom) & (df["rho"] == 2.0)]
            np.testing.assert_array_equal(sub["layer"], np.arange(trace.num_layers))
            np.testing.assert_array_equal(sub["hit_rate"], np.asarray(c.rates)[mi, d, :, 3])
    one = c.to_pandas(rho=2)  # a scalar ratio too
    assert set(one["cache_size"]) == {4}
    with pytest.raises(ValueError, match="whole cache size"):
        c.to_pandas(rho=0.75)


def test_to_pandas_without_pandas_names_the_extra(trace, monkeypatch):
    res = lk.srp(trace, 4)
    curve = lk.hit_curve(trace, "lru")
    monkeypatch.setitem(sys.modules, "pandas", None)  # `import pandas` now fails
    for obj in (res, curve):
        with pytest.raises(ImportError, match=r"pip install 'lrc-kernels\[pandas\]'"):
            obj.to_pandas()


# ------------------------------------------------------------------------------ CLI
@pytest.fixture(scope="module")
def trace_file(tmp_path_factory, trace):
    p = tmp_path_factory.mktemp("frames") / "t.lrc.arrow"
    meta = {"model": "toy"}
    lk.write_trace(p, lk.Trace(trace.experts, trace.offsets, num_experts=6,
                               domains=trace.domains, meta=meta))  # fmt: skip
    return p


def _with_model(df, name="toy"):
    df.insert(0, "model", name)
    return df


def test_cli_csv_is_to_pandas_to_csv(trace_file, trace):
    """Through the real entry point: the CSV is the frame's to_csv, byte for byte."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    args = ["srp", str(trace_file), "--m", "2", "4", "64", "--level", "layer", "--by-domain",
            "--bootstrap", "9", "--seed", "3", "--csv"]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "lrc_kernels", *args],
        capture_output=True, text=True, env=env, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    res = lk.srp(trace, [2, 4, 64], level="layer", by_domain=True, bootstrap=9, seed=3)
    assert proc.stdout == _with_model(res.to_pandas()).to_csv(index=False)
    assert ",," in proc.stdout  # m = 64 has no window in short sequences: empty NaN cells


def test_cli_sch_csv_and_json_are_the_frames(capsys, trace_file, trace):
    rc = cli.main(["sch", str(trace_file), "--m", "4", "16", "--rho", "1", "2", "--csv"])
    out = capsys.readouterr().out
    want = _with_model(lk.sch(trace, [4, 16]).to_pandas(rho=[1, 2]))
    assert rc == 0 and out == want.to_csv(index=False)
    rc = cli.main(["sch", str(trace_file), "--m", "4", "16", "--rho", "1", "2", "--json"])
    rows = json.loads(capsys.readouterr().out)
    assert rc == 0 and rows == want.to_dict(orient="records")


def test_cli_curves_mixed_policies_keep_integer_m(capsys, trace_file, trace):
    rc = cli.main(["curves", str(trace_file), "--policy", "lru", "sch", "--m", "8", "--csv"])
    out = capsys.readouterr().out
    assert rc == 0
    got = pd.read_csv(io.StringIO(out), keep_default_na=True)
    lru = lk.hit_curve(trace, "lru").to_pandas()
    sch = lk.hit_curve(trace, "sch", m=8).to_pandas()
    assert list(got.columns) == ["model", *sch.columns]
    cells = [line.split(",") for line in out.splitlines()]
    assert cells[0][:5] == ["model", "policy", "level", "layer", "m"]
    assert {(c[1], c[4]) for c in cells[1 : 1 + len(lru)]} == {("lru", "")}  # no m: empty
    assert {(c[1], c[4]) for c in cells[1 + len(lru) :]} == {("sch", "8")}  # not 8.0
    for part, want in ((got.iloc[: len(lru)], lru), (got.iloc[len(lru) :], sch)):
        for col in want.columns:
            np.testing.assert_array_equal(part[col].to_numpy(), want[col].to_numpy())


def test_cli_table_needs_no_pandas_but_csv_says_what_to_install(capsys, trace_file, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    rc = cli.main(["srp", str(trace_file), "--m", "4"])
    out, _ = capsys.readouterr()
    assert rc == 0 and "toy" in out
    rc = cli.main(["srp", str(trace_file), "--m", "4", "--csv"])
    out, err = capsys.readouterr()
    assert rc == 1 and out == "" and err.count("\n") == 1
    assert "lrc srp --csv" in err and "pip install 'lrc-kernels[pandas]'" in err
