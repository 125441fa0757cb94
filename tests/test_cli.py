"""The ``lrc`` command line: real entry point (subprocess), formats parsed back against the API.

Subprocess calls cost about a second each (imports), so the heavier combinations run
through :func:`lrc_kernels.cli.main` in-process, which is the same function the console
script calls.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

import lrc_kernels as lk
from lrc_kernels import cli
from lrc_kernels.io import TraceReader

ROOT = Path(__file__).resolve().parents[1]
FLAME = Path(__file__).resolve().parents[2] / "shared" / "data" / "flame-moe-290m"
FLAME_NPZ = FLAME / "routing-2048tok.npz"


def run_lrc(*args, check_rc=0, env_extra=None):
    """Run ``python -m lrc_kernels ARGS`` (the console script's main) and return the result."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(env_extra or {})
    proc = subprocess.run(
        [sys.executable, "-m", "lrc_kernels", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=ROOT,
    )
    if check_rc is not None:
        assert proc.returncode == check_rc, (proc.returncode, proc.stdout, proc.stderr)
    # on a cold kernel cache (a fresh CI machine) the one-time compile note is the only
    # legitimate stderr line of a quiet run; tests/test_first_run.py checks it
    proc.stderr = "".join(
        ln
        for ln in proc.stderr.splitlines(keepends=True)
        if not ln.startswith("lrc_kernels: compiling CPU kernels for first use")
    )
    return proc


def run_main(capsys, *args):
    """In-process ``main``: (exit code, stdout, stderr)."""
    rc = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def traces(tmp_path_factory):
    """Two small trace files: 'toy-a' (ragged, three domains) and an unlabelled one."""
    d = tmp_path_factory.mktemp("traces")
    lengths = [96, 80, 64, 120, 0, 40, 96, 72, 5]
    a = lk.synthetic_trace(
        len(lengths), lengths, 3, 16, 2, stay=0.7, seed=3, domains=["web", "code", "math"]
    )
    a = lk.Trace(a.experts, a.offsets, num_experts=16, domains=a.domains, meta={"model": "toy-a"})
    b = lk.synthetic_trace(6, 64, 2, 8, 2, stay=0.3, seed=4)
    pa, pb = d / "a.lrc.arrow", d / "b.lrc.arrow"
    lk.write_trace(pa, a)
    lk.write_trace(pb, b)
    return {"a": pa, "b": pb, "A": lk.read_trace(pa), "B": lk.read_trace(pb), "dir": d}


# ----------------------------------------------------------------------- entry point
def test_console_script_is_declared_to_main():
    eps = [e for e in metadata.entry_points(group="console_scripts") if e.name == "lrc"]
    if not eps:
        pytest.skip("lrc_kernels is not installed (no console scripts)")
    assert eps[0].value == "lrc_kernels.cli:main"
    assert eps[0].load() is cli.main


def test_installed_lrc_script_runs(traces):
    exe = shutil.which("lrc")
    if exe is None:
        pytest.skip("the lrc console script is not on PATH")
    proc = subprocess.run(
        [exe, "info", str(traces["a"]), "--json"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)[0]["model"] == "toy-a"


def test_help_teaches(capsys):
    proc = run_lrc("--help")
    for word in ("info", "srp", "sch", "curves", "report", "convert", "capture", "start here"):
        assert word in proc.stdout
    for cmd in ("srp", "sch", "curves", "report", "convert", "capture", "info"):
        with pytest.raises(SystemExit) as exc:
            cli.main([cmd, "--help"])
        assert exc.value.code == 0
        text = capsys.readouterr().out
        assert f"usage: lrc {cmd}" in text
        if cmd != "info":
            assert "examples:" in text
        if cmd == "convert":  # E is never guessed: the help must not promise a default
            flat = " ".join(text.split())
            assert "largest id" not in flat and "max id" not in flat
            assert "--num-experts E experts per layer; required unless the input stores" in flat


# ---------------------------------------------------------------------------- info
def test_info_json_matches_reader(traces):
    proc = run_lrc("info", traces["a"], traces["b"], "--json")
    rows = json.loads(proc.stdout)
    assert [r["model"] for r in rows] == ["toy-a", "synthetic"]
    for r, key in zip(rows, ("A", "B"), strict=True):
        tr = traces[key]
        path = traces[key.lower()]
        assert (r["num_experts"], r["top_k"], r["num_layers"]) == (
            tr.num_experts,
            tr.top_k,
            tr.num_layers,
        )
        assert r["sequences"] == tr.num_sequences and r["tokens"] == tr.num_tokens
        assert r["activations"] == tr.num_activations
        assert r["file_bytes"] == path.stat().st_size
        assert r["bytes_per_activation"] == pytest.approx(
            path.stat().st_size / tr.num_activations, rel=1e-12
        )
    assert rows[0]["domains"] == "web (3), code (3), math (3)" and rows[0]["num_domains"] == 3
    assert rows[1]["domains"] is None and rows[1]["num_domains"] == 0
    assert proc.stderr == ""  # no progress bars when stderr is not a terminal


def test_info_human(capsys, traces):
    rc, out, _ = run_main(capsys, "info", traces["a"])
    assert rc == 0
    assert "toy-a" in out and "bytes/activation" in out and "web (3)" in out
    assert "experts (E)       16" in out


# ------------------------------------------------------------------------------ SRP
def _srp_api(tr, ms, **kw):
    return lk.srp(tr, ms, **kw)


def test_srp_json_subprocess_equals_api(traces):
    proc = run_lrc("srp", traces["a"], traces["b"], "--m", 2, 16, "--level", "layer", "--json")
    rows = json.loads(proc.stdout)
    assert proc.stderr == ""
    by_model = {"toy-a": traces["A"], "synthetic": traces["B"]}
    seen = 0
    for name, tr in by_model.items():
        res = _srp_api(tr, [2, 16], level="layer")
        mine = [r for r in rows if r["model"] == name]
        assert len(mine) == 2 * tr.num_layers
        for r in mine:
            mi = [2, 16].index(r["m"])
            assert r["level"] == "layer" and "expert" not in r and "domain" not in r
            assert r["srp"] == float(res.value[mi, r["layer"]])  # JSON floats round-trip
            assert r["threshold"] == int(res.threshold[mi, r["layer"]])
            assert r["ratio"] == float(res.ratio[mi, r["layer"]])
            assert r["windows"] == int(res.windows[mi])
            assert "ci_low" not in r and "ci_high" not in r  # no bootstrap: no interval
            seen += 1
    assert seen == len(rows)


def test_srp_csv_expert_level_by_domain(capsys, traces):
    rc, out, _ = run_main(
        capsys, "srp", traces["a"], "--m", 4, "--level", "expert", "--by-domain", "--csv"
    )
    assert rc == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    cols = ["model", "level", "layer", "expert", "domain", "m", "srp", "threshold", "ratio"]
    assert list(rows[0]) == [*cols, "windows"]
    res = lk.srp(traces["A"], [4], level="expert", by_domain=True)
    assert len(rows) == len(res.domains) * 3 * 16
    for r in rows:
        d = res.domains.index(r["domain"])
        key = (0, d, int(r["layer"]), int(r["expert"]))
        want = float(res.value[key])
        assert abs(float(r["srp"]) - want) <= 1e-12
        assert int(r["threshold"]) == int(res.threshold[key])
        ratio = float(res.ratio[key])
        assert (r["ratio"] == "") if np.isnan(ratio) else abs(float(r["ratio"]) - ratio) <= 1e-12


def test_srp_parquet_with_bootstrap(capsys, traces, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "srp.parquet"
    rc, _, _ = run_main(
        capsys, "srp", traces["a"], "--m", 4, 8, "--bootstrap", 50, "--seed", 7,
        "--confidence", 0.9, "--parquet", "-o", out,
    )  # fmt: skip
    assert rc == 0
    table = pq.read_table(out)
    assert table.column_names == [
        "model", "level", "m", "srp", "threshold", "ratio", "ci_low", "ci_high", "windows",
    ]  # fmt: skip
    rows = table.to_pylist()
    res = lk.srp(traces["A"], [4, 8], bootstrap=50, seed=7, confidence=0.9)
    assert [r["m"] for r in rows] == [4, 8]
    for i, r in enumerate(rows):
        assert r["srp"] == float(res.value[i])
        assert r["ci_low"] == float(res.ci[0][i]) and r["ci_high"] == float(res.ci[1][i])
        assert r["ci_low"] <= r["ci_high"]
    assert table.schema.field("threshold").type == "int64"
    assert str(table.schema.field("model").type) in ("string", "large_string")


def test_srp_human_table(capsys, traces):
    rc, out, _ = run_main(capsys, "srp", traces["a"], traces["b"], "--m", 4, 16, "--bootstrap", 20)
    assert rc == 0
    lines = out.rstrip("\n").splitlines()
    assert lines[0].split() == ["model", "m", "SRP", "p*", "preds/acts", "95%", "CI", "windows"]
    assert set(lines[1]) <= {"-", " "}
    assert len(lines) == 2 + 4
    # aligned: every row as long as the header rule, numbers right-aligned under the header
    width = len(lines[1])
    assert all(len(line) == width for line in lines[2:])
    res = lk.srp(traces["A"], [4, 16])
    assert f"{float(res.value[1]):.4f}" in lines[3] and lines[3].startswith("toy-a")


def test_srp_m_longer_than_every_sequence(capsys, traces):
    rc, out, _ = run_main(capsys, "srp", traces["b"], "--m", 1000, "--json")
    assert rc == 0
    (row,) = json.loads(out)
    assert row["windows"] == 0 and row["srp"] == 0.0 and row["ratio"] is None


# ------------------------------------------------------------------------------ SCH
def test_sch_json_equals_api(capsys, traces):
    rc, out, _ = run_main(
        capsys, "sch", traces["a"], "--m", 4, 16, "--rho", 1, 2, 3.5, "--by-domain", "--json"
    )
    assert rc == 0
    rows = json.loads(out)
    assert list(rows[0]) == [
        "model", "policy", "level", "layer", "domain", "m", "rho", "cache_size", "hit_rate",
        "hits", "accesses", "sequences",
    ]  # fmt: skip
    curves = lk.sch(traces["A"], [4, 16], by_domain=True)
    assert len(rows) == 2 * len(curves.domains) * 3 * 3
    for r in rows:
        mi = [4, 16].index(r["m"])
        d = curves.domains.index(r["domain"])
        assert r["cache_size"] == round(r["rho"] * 2)
        want = float(np.asarray(curves.rates)[mi, d, r["layer"], r["cache_size"] - 1])
        assert r["hit_rate"] == want
    # the rates are the API's at(rho)
    sub = [r for r in rows if r["m"] == 16 and r["domain"] == "web" and r["rho"] == 2.0]
    at2 = lk.sch(traces["A"].select(domain="web"), 16).at(2)
    np.testing.assert_allclose([r["hit_rate"] for r in sub], at2, rtol=0, atol=1e-12)


def test_sch_model_level_subprocess_csv(traces):
    proc = run_lrc("sch", traces["b"], "--level", "model", "--rho", "0.5", "2", "--csv")
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    c = lk.sch(traces["B"], 16, level="model")
    assert "layer" not in rows[0]  # model level: no layer
    assert [int(r["cache_size"]) for r in rows] == [2, 8]  # rho * L * k, L = 2, k = 2
    np.testing.assert_allclose(
        [float(r["hit_rate"]) for r in rows], c.at([0.5, 2]), rtol=0, atol=1e-12
    )


def test_sch_human_has_layer_mean(capsys, traces):
    rc, out, _ = run_main(capsys, "sch", traces["a"])
    assert rc == 0
    c = lk.sch(traces["A"], 16)
    mean2 = float(np.mean(c.at(2)))
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["model", "m", "layer"]
    assert "rho=2" in lines[0]
    mean_line = next(line for line in lines if " mean " in line)
    assert f"{mean2:.4f}" in mean_line


def test_sch_default_rhos_skip_ratios_without_whole_size(capsys, tmp_path):
    tr = lk.synthetic_trace(3, 30, 1, 8, 1, seed=1)  # k = 1: rho 0.5 and 1.5 are no size
    p = tmp_path / "k1.lrc.arrow"
    lk.write_trace(p, tr)
    rc, out, _ = run_main(capsys, "sch", p, "--json")
    assert rc == 0
    assert sorted({r["rho"] for r in json.loads(out)}) == [1.0, 2.0, 3.0]


# --------------------------------------------------------------------------- curves
def test_curves_all_sizes_equal_api(capsys, traces):
    rc, out, _ = run_main(
        capsys, "curves", traces["a"], "--policy", "lru", "belady", "sch", "--m", 8, "--json"
    )
    assert rc == 0
    rows = json.loads(out)
    A = traces["A"]
    for pol in ("lru", "belady", "sch"):
        c = lk.hit_curve(A, pol, m=8 if pol == "sch" else None)
        mine = [r for r in rows if r["policy"] == pol]
        assert len(mine) == A.num_layers * A.num_experts
        got = np.zeros((A.num_layers, A.num_experts))
        for r in mine:
            got[r["layer"], r["cache_size"] - 1] = r["hit_rate"]
            assert r["rho"] == r["cache_size"] / 2
            assert r["m"] == (8 if pol == "sch" else None)
        assert np.array_equal(got, np.asarray(c.rates))
    assert {r["sequences"] for r in rows} == {8}  # the empty sequence has no curve


def test_curves_model_level_cold_start_subprocess(traces, tmp_path):
    out = tmp_path / "c.csv"
    run_lrc(
        "curves", traces["b"], "--policy", "lfu", "--level", "model", "--cold-start",
        "--rho", "1", "2", "--csv", "-o", out,
    )  # fmt: skip
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    c = lk.hit_curve(traces["B"], "lfu", level="model", warm_start=False)
    np.testing.assert_allclose(
        [float(r["hit_rate"]) for r in rows], c.at([1, 2]), rtol=0, atol=1e-12
    )


def test_curves_human_layer_mean(capsys, traces):
    rc, out, _ = run_main(capsys, "curves", traces["b"], "--policy", "lru", "sch")
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].split() == ["model", "rho", "C", "lru", "sch(m=16)"]
    lru = lk.hit_curve(traces["B"], "lru")
    row = next(line for line in lines[2:] if line.split()[1] == "2")
    assert row.split()[3] == f"{float(np.mean(lru.at(2))):.4f}"


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "args, needle",
    [
        (["srp", "{missing}"], "no such trace file"),
        (["sch", "{a}", "--rho", "0.25"], "rho"),
        (["srp", "{b}", "--by-domain"], "domain labels"),
        (["srp", "{npz}"], "lrc convert"),
        (["srp", "{text}"], "not an Arrow IPC file"),
        (["curves", "{a}", "--rho", "100"], "outside"),
        (["report", "{a}", "--out", "{text}"], "not a directory"),
    ],
)
def test_errors_are_one_line(capsys, traces, tmp_path, args, needle):
    (tmp_path / "x.npz").write_bytes(b"PK\x03\x04")
    (tmp_path / "t.txt").write_text("hello")
    fill = {
        "missing": tmp_path / "nope.lrc.arrow",
        "a": traces["a"],
        "b": traces["b"],
        "npz": tmp_path / "x.npz",
        "text": tmp_path / "t.txt",
    }
    argv = [a.format(**fill) for a in args]
    rc, out, err = run_main(capsys, *argv)
    assert rc == 1 and out == ""
    assert err.startswith("lrc: error: ") and err.count("\n") == 1, err
    assert needle in err and "Traceback" not in err


def test_error_subprocess_and_debug_traceback(traces, tmp_path):
    proc = run_lrc("srp", tmp_path / "nope.arrow", check_rc=1)
    assert proc.stderr.startswith("lrc: error: ") and proc.stderr.count("\n") == 1
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    proc = run_lrc("srp", tmp_path / "nope.arrow", "--debug", check_rc=None)
    assert proc.returncode != 0 and "Traceback" in proc.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["srp", "x", "--m", "0"],
        ["srp", "x", "--m", "2.5"],
        ["sch", "x", "--rho", "-1"],
        ["srp", "x", "--json", "--csv"],
        ["curves", "x", "--policy", "nope"],
        ["srp", "x", "--confidence", "1.5"],
        ["frobnicate"],
        [],
    ],
)
def test_usage_errors_exit_2(capsys, argv):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "usage: lrc" in err and "Traceback" not in err


PYTHON_WORDS = ("=True", "=False", "domains=[", "lrc_kernels.", "Trace(", "np.", "array(")


@pytest.mark.parametrize("cmd", ["srp", "sch", "curves"])
def test_by_domain_without_labels_names_the_convert_option(capsys, traces, cmd):
    rc, out, err = run_main(capsys, cmd, traces["b"], "--by-domain")
    assert rc == 1 and out == "" and err.count("\n") == 1
    assert f"lrc {cmd} --by-domain: {traces['b']} has no domain labels" in err
    assert "lrc convert" in err and "--domain LABEL" in err
    assert not any(w in err for w in PYTHON_WORDS), err


def test_api_advice_is_translated_for_the_command_line(tmp_path):
    """The API's Python advice, reached past the CLI's own checks, reads as CLI advice."""
    plain = lk.synthetic_trace(2, 8, 1, 4, 2, seed=1)
    with pytest.raises(ValueError) as exc:
        lk.srp(plain, 2, by_domain=True)
    line = cli._error_line(exc.value)
    assert "--by-domain needs domain labels" in line and "lrc convert" in line
    assert not any(w in line for w in PYTHON_WORDS), line
    d = tmp_path / "mixed"
    d.mkdir()
    w = np.full(plain.experts.shape, 0.5, np.float32)
    lk.write_trace(d / "a.lrc.arrow", lk.Trace(plain.experts, plain.offsets, num_experts=4,
                                               weights=w))  # fmt: skip
    lk.write_trace(d / "b.lrc.arrow", plain)
    with pytest.raises(ValueError) as exc:
        lk.read_trace(d)
    line = cli._error_line(exc.value)
    assert "--no-weights" in line
    assert not any(w in line for w in PYTHON_WORDS), line


def test_cli_numbers_in_errors_are_plain(capsys, traces):
    rc, _, err = run_main(capsys, "sch", traces["a"], "--rho", "0.75")
    assert rc == 1 and "rho = 0.75 does not give a whole cache size (rho * 2 = 1.5)" in err
    assert "np." not in err


def test_internal_errors_say_so(capsys, traces, monkeypatch):
    def boom(*a, **k):
        raise KeyError("x")

    monkeypatch.setattr(lk, "srp", boom)
    rc, _, err = run_main(capsys, "srp", traces["a"])
    assert rc == 1 and "internal error: KeyError" in err and "--debug" in err
    with pytest.raises(KeyError):
        cli.main(["srp", str(traces["a"]), "--debug"])


def test_parquet_refuses_a_terminal(capsys, traces, monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    rc, out, err = run_main(capsys, "srp", traces["a"], "--parquet")
    assert rc == 1 and "-o/--output" in err and out == ""


# ------------------------------------------------------------------------- progress
def test_progress_only_for_a_terminal(monkeypatch, traces):
    import argparse

    ns = argparse.Namespace(quiet=False)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert cli._show_progress(ns) is False
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert cli._show_progress(ns) is True
    assert cli._show_progress(argparse.Namespace(quiet=True)) is False
    monkeypatch.setattr(cli.importlib.util, "find_spec", lambda name: None)
    assert cli._show_progress(ns) is False  # no tqdm: no bars, no crash


@pytest.mark.parametrize("missing", ["matplotlib", "pandas"])
def test_report_without_its_extra_says_what_to_install(
    capsys, traces, monkeypatch, tmp_path, missing
):
    real = cli.importlib.util.find_spec
    monkeypatch.setattr(
        cli.importlib.util, "find_spec", lambda n: None if n == missing else real(n)
    )
    rc, _, err = run_main(capsys, "report", traces["a"], "--out", tmp_path / "r")
    assert rc == 1 and "lrc-kernels[report]" in err and err.count("\n") == 1
    assert missing in err


def test_progress_bar_counts_every_token_after_its_batch(traces, tmp_path):
    d = tmp_path / "shards"
    d.mkdir()
    A = traces["A"]
    lk.write_trace(d / "p0.lrc.arrow", A.select(sequences=range(4)))
    lk.write_trace(d / "p1.lrc.arrow", A.select(sequences=range(4, A.num_sequences)))
    (src,) = cli.open_sources([str(d)])
    with cli.Progress(True).pass_over(src, "SRP") as bar:
        res = lk.srp(src.path, 4, progress=bar)
        # a batch is counted when the next starts: the last one is still pending here
        assert bar.bar.n == A.lengths[:4].sum() and bar.pending == A.lengths[4:].sum()
    assert bar.bar.n == bar.tokens == A.num_tokens and bar.pending == 0
    assert res.value == lk.srp(A, 4).value
    with cli.Progress(False).pass_over(src, "SRP") as off:
        assert off is False


def test_same_model_twice_gets_distinct_names(capsys, traces, tmp_path):
    copy = tmp_path / "again.lrc.arrow"
    shutil.copy(traces["a"], copy)
    rc, out, _ = run_main(capsys, "srp", traces["a"], copy, "--m", 4, "--json")
    names = [r["model"] for r in json.loads(out)]
    assert rc == 0 and names == ["toy-a (a)", "toy-a (again)"]
    # the same file name in two directories: the path tells them apart
    (tmp_path / "x").mkdir()
    shutil.copy(traces["a"], tmp_path / "x" / "a.lrc.arrow")
    srcs = cli.open_sources([str(traces["a"]), str(tmp_path / "x" / "a.lrc.arrow")])
    assert [s.name for s in srcs] == [f"toy-a ({traces['a']})", f"toy-a ({tmp_path}/x/a.lrc.arrow)"]


def test_directory_of_shards_is_one_model(capsys, traces, tmp_path):
    d = tmp_path / "shards"
    d.mkdir()
    A = traces["A"]
    lk.write_trace(d / "part-0.lrc.arrow", A.select(sequences=range(5)))
    lk.write_trace(d / "part-1.lrc.arrow", A.select(sequences=range(5, A.num_sequences)))
    rc, out, _ = run_main(capsys, "srp", d, "--m", 4, 16, "--json")
    assert rc == 0
    rows = json.loads(out)
    np.testing.assert_array_equal([r["srp"] for r in rows], lk.srp(A, [4, 16]).value)


def test_shipped_sample_traces(tmp_path):
    """The commands of traces/README.md on the traces the repository ships."""
    shipped = sorted((ROOT / "traces").glob("*.lrc.arrow"))
    if not shipped:
        pytest.skip("no sample traces in traces/")
    rel = [p.relative_to(ROOT) for p in shipped]
    info = json.loads(run_lrc("info", *rel, "--json").stdout)
    assert [r["tokens"] for r in info] == [TraceReader(p).num_tokens for p in shipped]
    rows = json.loads(run_lrc("srp", *rel, "--m", 4, 16, 64, "--json").stdout)
    want = [float(v) for p in shipped for v in lk.srp(str(p), [4, 16, 64]).value]
    assert [r["srp"] for r in rows] == want
    assert len({r["model"] for r in rows}) == len(shipped)


# -------------------------------------------------------------------------- convert
def test_convert_npz_split_and_back(capsys, tmp_path):
    rng = np.random.default_rng(0)
    ids = np.stack([rng.permutation(12)[:3] for _ in range(100 * 2)]).reshape(100, 2, 3)
    scores = rng.random(ids.shape).astype(np.float32)
    np.savez(tmp_path / "r.npz", indices=ids.astype(np.int16), scores=scores,
             moe_layer_ids=np.array([3, 5]), token_ids=np.arange(100, dtype=np.int32))  # fmt: skip
    out = tmp_path / "r.lrc.arrow"
    rc, _, err = run_main(
        capsys, "convert", tmp_path / "r.npz", "--out", out, "--num-experts", 16,
        "--split", 32, "--model", "toy-npz", "--domain", "web",
    )  # fmt: skip
    assert rc == 0 and "wrote" in err
    back = lk.read_trace(out)
    assert back.num_experts == 16 and back.meta["model"] == "toy-npz"
    assert back.meta["layer_ids"] == [3, 5]
    assert back.lengths.tolist() == [32, 32, 32, 4]
    assert list(back.domains) == ["web"] * 4
    np.testing.assert_array_equal(back.experts, ids)
    np.testing.assert_array_equal(back.weights, scores)
    np.testing.assert_array_equal(TraceReader(out).token_ids(), np.arange(100))
    # merging two trace files keeps everything in order
    out2 = tmp_path / "merged.lrc.arrow"
    rc, _, _ = run_main(capsys, "convert", out, out, "--out", out2, "--quiet", "--no-weights")
    assert rc == 0
    m = lk.read_trace(out2)
    assert m.num_sequences == 8 and m.weights is None and m.meta["model"] == "toy-npz"
    np.testing.assert_array_equal(m.experts, np.concatenate([ids, ids]))


def test_convert_labels_an_unlabelled_trace_file(capsys, traces, tmp_path):
    out = tmp_path / "labelled.lrc.arrow"
    rc, _, err = run_main(capsys, "convert", traces["b"], "--out", out, "--domain", "chat", "-q")
    assert rc == 0, err
    got, src = lk.read_trace(out), traces["B"]
    assert list(got.domains) == ["chat"] * src.num_sequences
    np.testing.assert_array_equal(got.experts, src.experts)
    np.testing.assert_array_equal(got.offsets, src.offsets)
    # a labelled file is never relabelled silently
    rc, _, err = run_main(capsys, "convert", traces["a"], "--out", out, "--domain", "chat")
    assert rc == 1 and "already labels its sequences" in err


def test_convert_errors(capsys, tmp_path):
    out = tmp_path / "o.lrc.arrow"

    def fails(*args):
        rc, _, err = run_main(capsys, "convert", *args, "--out", out)
        assert rc == 1 and err.startswith("lrc: error: ") and err.count("\n") == 1, err
        assert "Traceback" not in err
        return err

    np.savez(tmp_path / "two.npz", a=np.zeros((3, 1, 1)), b=np.zeros(3))
    assert "no expert id array" in fails(tmp_path / "two.npz", "--num-experts", 4)
    np.savez(tmp_path / "ok.npz", indices=np.zeros((3, 1, 1), np.int64))
    assert "--num-experts E" in fails(tmp_path / "ok.npz")  # E is never guessed
    np.save(tmp_path / "neg.npy", -np.ones((4, 1, 2), np.int64))
    assert "--num-experts" in fails(tmp_path / "neg.npy")
    assert "negative" in fails(tmp_path / "neg.npy", "--num-experts", 4)
    assert "no such file" in fails(tmp_path / "gone.npz")
    assert not out.exists()


def test_convert_safetensors_topk_directory(capsys, tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    rng = np.random.default_rng(1)
    d = tmp_path / "topk"
    d.mkdir()
    for layer in (2, 10):  # ordered by the number in the name, not as text
        data = {
            dom: np.stack([rng.permutation(16)[:2] for _ in range(3 * 20)])
            .reshape(3, 20, 2)
            .astype(np.int8)
            for dom in ("code", "web")
        }
        st.save_file(data, str(d / f"layer_{layer}.safetensors"))
    out = tmp_path / "st.lrc.arrow"
    rc, _, _ = run_main(capsys, "convert", d, "--out", out, "--num-experts", 16, "-q")
    assert rc == 0
    back = lk.read_trace(out)
    from lrc_kernels.convert import from_safetensors_topk

    want = from_safetensors_topk(d, num_experts=16)
    np.testing.assert_array_equal(back.experts, want.experts)
    assert list(back.domains) == list(want.domains) and back.meta["layer_ids"] == [2, 10]


def test_interrupted_trace_file(capsys, tmp_path):
    tr = lk.synthetic_trace(30, 50, 2, 8, 2, seed=9)
    full = tmp_path / "full.lrc.arrow"
    with lk.TraceWriter(full, num_experts=8, top_k=2, num_layers=2, batch_tokens=200) as w:
        w.write(tr)
    data = full.read_bytes()
    cut = tmp_path / "cut.lrc.arrow"
    cut.write_bytes(data[: len(data) // 2])  # the writer died half way
    rc, _, err = run_main(capsys, "srp", cut)
    assert rc == 1 and err.count("\n") == 1 and "--allow-incomplete" in err
    assert "allow_incomplete=True" not in err and "repair_trace" not in err  # CLI advice only
    rc, out, _ = run_main(capsys, "info", cut, "--allow-incomplete", "--json")
    (row,) = json.loads(out)
    n = row["sequences"]
    assert rc == 0 and 0 < n < 30 and row["tokens"] == 50 * n
    fixed = tmp_path / "fixed.lrc.arrow"
    rc, _, err = run_main(capsys, "convert", cut, "--allow-incomplete", "--out", fixed)
    assert rc == 0 and f"converting its {n} complete sequences" in err
    back = lk.read_trace(fixed)
    np.testing.assert_array_equal(back.experts, tr.experts[: 50 * n])


@pytest.mark.skipif(not FLAME_NPZ.exists(), reason="real FLAME-MoE trace not present")
def test_flame_convert_then_srp_sch_subprocess(tmp_path):
    out = tmp_path / "flame.lrc.arrow"
    run_lrc(
        "convert", FLAME_NPZ, "--out", out, "--num-experts", 64, "--split", 512,
        "--model", "flame-moe-290m",
    )  # fmt: skip
    d = np.load(FLAME_NPZ)
    tr = lk.Trace(d["indices"].astype(np.int64), num_experts=64).split(512)
    rows = json.loads(run_lrc("srp", out, "--m", 4, 16, 64, "--json").stdout)
    res = lk.srp(tr, [4, 16, 64])
    assert [r["model"] for r in rows] == ["flame-moe-290m"] * 3
    assert [r["srp"] for r in rows] == [float(v) for v in res.value]
    rows = json.loads(run_lrc("sch", out, "--rho", 2, "--json").stdout)
    np.testing.assert_allclose(
        [r["hit_rate"] for r in rows], lk.sch(tr, 16).at(2), rtol=0, atol=1e-12
    )


# -------------------------------------------------------------------------- capture
def _tiny_model_dir(tmp_path):
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from lrc_kernels._capture._tiny import tiny_model

    letters = list("abcdefghijklmnopqrstuvwxyz .,")
    vocab = {"<unk>": 0, "<pad>": 1, "</s>": 2, **{c: 3 + i for i, c in enumerate(letters)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", eos_token="</s>"
    )
    d = tmp_path / "tiny-moe"
    tiny_model("mixtral", seed=1).save_pretrained(d)
    fast.save_pretrained(d)
    return d


def test_capture_command(capsys, tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("tokenizers")
    d = _tiny_model_dir(tmp_path)
    (tmp_path / "web.txt").write_text("the cat sat on the mat, and then it slept. " * 12)
    (tmp_path / "b.txt").write_text("lorem ipsum dolor sit amet, consectetur adipiscing. " * 12)
    out = tmp_path / "cap.lrc.arrow"
    rc, stdout, _ = run_main(
        capsys, "capture", d, tmp_path / "web.txt", f"prose={tmp_path / 'b.txt'}",
        "--out", out, "--seq-len", 32, "--max-sequences", 3, "--batch-size", 2, "--quiet",
    )  # fmt: skip
    assert rc == 0 and stdout.strip() == str(out)
    tr = lk.read_trace(out)
    assert tr.num_sequences == 6 and set(tr.lengths.tolist()) == {32}
    assert sorted(set(tr.domains)) == ["prose", "web"]
    assert tr.num_experts == 8 and tr.top_k == 2
    rc, _, err = run_main(capsys, "capture", tmp_path / "nomodel", tmp_path / "web.txt",
                          "--out", out)  # fmt: skip
    assert rc == 1 and "not a local model directory" in err and err.count("\n") == 1


def test_help_shows_every_default():
    """Every option with a default says it in --help; capture's say it for None too."""
    import argparse

    sub = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, p in sub.choices.items():
        for a in p._actions:
            if not a.option_strings or a.help in (None, argparse.SUPPRESS):
                continue
            given = a.default not in (None, False) or (name == "capture" and not a.required)
            if given and a.dest not in ("help", "quiet", "debug", "format"):
                assert "default" in a.help, (name, a.option_strings, a.help)
