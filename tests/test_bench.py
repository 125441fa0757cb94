"""The benchmarks still work: quick mode runs every code path and its correctness checks.

No timing is asserted. The benchmark scripts run in subprocesses exactly as a user runs them
(``python bench/run.py --quick``); the report helpers are also tested directly.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
OURS = ("bench_srp", "bench_stack", "bench_scaling")

sys.path.insert(0, str(BENCH))
import _common  # noqa: E402
import run as bench_run  # noqa: E402


def _run(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """``bench/run.py --quick`` over our scripts: srp and stack on one thread, scaling on
    one and two threads (the cross-thread comparison path)."""
    res = tmp_path_factory.mktemp("bench")
    r1 = _run(
        [
            "bench/run.py",
            "--quick",
            "--only",
            "bench_srp,bench_stack",
            "--threads",
            "1",
            "--results",
            str(res),
        ]
    )
    assert r1.returncode == 0, r1.stdout[-3000:] + r1.stderr[-3000:]
    scal = _run(
        [
            "bench/bench_scaling.py",
            "--quick",
            "--threads",
            "1,2",
            "--out",
            str(res / "bench_scaling.json"),
        ]
    )
    assert scal.returncode == 0, scal.stdout[-3000:] + scal.stderr[-3000:]
    docs = {n: json.loads((res / f"{n}.json").read_text()) for n in OURS}
    return res, docs


@pytest.mark.parametrize("name", OURS)
def test_quick_results_are_complete(quick_run, name):
    _, docs = quick_run
    d = docs[name]
    assert d["schema"] == _common.SCHEMA
    assert d["quick"] is True
    assert d["machine"]["cpu_model"] and d["machine"]["usable_cpus"] >= 1
    assert d["records"], "no measurement recorded"
    for r in d["records"]:
        assert r["seconds"] > 0 and r["rate"] > 0, r
        assert r["activations"] > 0 and r["repeats"] >= 1
    # every script checks against the reference before it measures, and all checks passed
    assert d["checks"] and all(c["passed"] for c in d["checks"])
    # the plain reference was timed in the same run (first child process)
    assert any(r["backend"] == "reference" for r in d["records"])


def test_quick_srp_and_stack_cover_the_issue2_workloads(quick_run):
    _, docs = quick_run
    srp_cases = {r["case"] for r in docs["bench_srp"]["records"]}
    assert {"issue2 model + CI", "issue2 expert + CI", "issue2 all levels + CI"} <= srp_cases
    stack_cases = {r["case"] for r in docs["bench_stack"]["records"]}
    for policy in ("sch", "lru", "lfu", "belady"):
        assert f"layer {policy}" in stack_cases and f"model {policy}" in stack_cases
    goals = [g["text"] for d in docs.values() for g in d["derived"]["goals"]]
    assert any("model-level SRP" in g for g in goals)
    assert any("model-level SCH" in g for g in goals)
    # speed-ups against the reference were measured in the same run
    for name in ("bench_srp", "bench_stack"):
        assert docs[name]["derived"]["speedup"], name


def test_quick_scaling_two_threads_same_results(quick_run):
    _, docs = quick_run
    d = docs["bench_scaling"]
    assert d["threads"] == [1, 2]
    ratios = d["derived"]["thread_ratio"]
    assert ratios and all(t["same_result"] is True for t in ratios)
    sweeps = {s["sweep"] for s in d["derived"]["scaling"]}
    assert {"tokens", "E (k=4)", "k (E=64)", "layers"} <= sweeps
    assert all(s["exponent"] is not None for s in d["derived"]["scaling"] if len(s["sizes"]) > 1)


def test_quick_markdown_report(quick_run):
    res, _ = quick_run
    md = (res / "benchmarks-quick.md").read_text()
    assert "Quick mode" in md and "## Machine" in md
    assert "## bench_srp" in md and "## bench_stack" in md
    assert "Issue #2 performance goals" in md
    summary = json.loads((res / "summary.json").read_text())
    assert [s["script"] for s in summary["scripts"]] == ["bench_srp", "bench_stack"]
    # the real report is never overwritten by a quick run
    real = ROOT / "docs" / "benchmarks.md"
    assert not real.exists() or "Quick mode" not in real.read_text()


def test_render_only_rebuilds_the_report(quick_run, tmp_path):
    res, _ = quick_run
    md = tmp_path / "again.md"
    r = _run(
        [
            "bench/run.py",
            "--render-only",
            "--only",
            "bench_srp,bench_stack",
            "--results",
            str(res),
            "--markdown",
            str(md),
        ],
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    text = md.read_text()
    assert "## bench_srp" in text and "## bench_stack" in text and "Quick mode" in text
    assert "--render-only" in text.splitlines()[2]


def test_render_from_recorded_results(quick_run):
    _, docs = quick_run
    md = bench_run.render(list(docs.values()), docs["bench_srp"]["machine"], False, "x")
    assert "## bench_scaling" in md and "Scaling exponents" in md
    assert "2T/1T" in md and "Quick mode" not in md


# ------------------------------------------------------------------ helpers, directly
def test_fit_exponent_recovers_power_laws():
    n = np.array([1e3, 1e4, 1e5, 1e6])
    for p in (0.0, 1.0, 1.5):
        assert _common.fit_exponent(n, 3e-7 * n**p) == pytest.approx(p, abs=1e-9)
    assert _common.fit_exponent([10], [1.0]) is None
    assert _common.fit_exponent([10, 10], [1.0, 2.0]) is None


def test_check_equal_detects_a_difference():
    ctx = _common.Context(quick=True, threads=1, primary=True)
    ctx.check_equal("same", np.arange(5), np.arange(5))
    with pytest.raises(_common.BenchCheckError, match="1 entries differ"):
        ctx.check_equal("int", np.array([1, 2, 3]), np.array([1, 2, 4]))
    with pytest.raises(_common.BenchCheckError, match="shape"):
        ctx.check_equal("shape", np.zeros(3), np.zeros(4))
    with pytest.raises(_common.BenchCheckError, match="tolerance"):
        ctx.check_equal("float", np.array([0.5]), np.array([0.5 + 1e-9]), rtol=1e-12)
    ctx.check_equal("nan", np.array([np.nan, 1.0]), np.array([np.nan, 1.0]), rtol=1e-12)
    assert [c["passed"] for c in ctx.checks] == [True, False, False, False, True]


def test_derive_ratios_speedups_goals():
    def rec(key, threads, seconds, backend="cpu", **kw):
        bench, case, _ = key.split("|")
        return {
            "key": key,
            "bench": bench,
            "case": case,
            "group": "g",
            "backend": backend,
            "threads": threads,
            "params": {},
            "activations": 1000,
            "seconds": seconds,
            "rate": 1000 / seconds,
            **kw,
        }

    records = [
        rec("k|ref|reference", 1, 10.0, backend="reference"),
        rec(
            "k|a|cpu",
            1,
            0.1,
            ref="k|ref|reference",
            digest="x",
            goal={"text": "fast", "max_seconds": 0.2},
        ),
        rec("k|a|cpu", 2, 0.05, ref="k|ref|reference", digest="x"),
        rec("k|b|cpu", 1, 1.0, goal={"text": "rate", "min_rate": 2000.0}, digest="y"),
        rec("k|b|cpu", 2, 0.8, digest="z"),
    ]
    for size, s in ((10, 1.0), (100, 10.0), (1000, 100.0)):
        records.append(rec(f"s|n={size}|cpu", 1, s, sweep="n", size=size))
    d = _common.derive(records)
    ratio = {(t["key"], t["threads"]): t for t in d["thread_ratio"]}
    assert ratio[("k|a|cpu", 2)]["speedup"] == pytest.approx(2.0)
    assert ratio[("k|a|cpu", 2)]["same_result"] is True
    assert ratio[("k|b|cpu", 2)]["same_result"] is False
    sp = {(s["key"], s["threads"]): s["speedup"] for s in d["speedup"]}
    assert sp[("k|a|cpu", 1)] == pytest.approx(100.0)
    assert sp[("k|a|cpu", 2)] == pytest.approx(200.0)
    goals = {g["text"]: g["met"] for g in d["goals"]}
    assert goals == {"fast": True, "rate": False}
    (sc,) = d["scaling"]
    assert sc["exponent"] == pytest.approx(1.0)


def test_foreign_script_output_is_collected(tmp_path):
    """A script not built on _common: its printed JSON is collected and reported."""
    script = tmp_path / "bench_fake.py"
    script.write_text(
        "import json, os\n"
        "print('some log line')\n"
        "print(json.dumps({'quick': os.environ['LRC_BENCH_QUICK'], 'rate': 12.5}))\n"
    )
    res = tmp_path / "res"
    res.mkdir()
    doc = bench_run.run_script(script, True, res, None, 60)
    assert doc["output"]["stdout"] == {"quick": "1", "rate": 12.5}
    assert json.loads((res / "bench_fake.run.json").read_text())["output"] == doc["output"]
    md = bench_run.render([doc], {}, True, "cmd")
    assert "## bench_fake" in md and "`stdout.rate`" in md

    bad = tmp_path / "bench_bad.py"
    bad.write_text("raise SystemExit(3)\n")
    doc = bench_run.run_script(bad, True, res, None, 60)
    assert doc["failed"] and doc["exit"] == 3
    assert "Failed scripts" in bench_run.render([doc], {}, True, "cmd")


def test_foreign_script_files_are_collected(tmp_path):
    """JSON and markdown a script writes into the results folder end up in the report."""
    res = tmp_path / "res"
    res.mkdir()
    (res / "old.json").write_text("{}")  # not written by this run: ignored
    script = tmp_path / "bench_writer.py"
    script.write_text(
        "import json, pathlib\n"
        f"res = pathlib.Path({str(res)!r})\n"
        "(res / 'bench_writer.json').write_text(json.dumps({'reads_per_s': 2e8}))\n"
        "md = '# Trace IO\\n\\n## Sizes\\n\\n| a |\\n|---|\\n| 1 |\\n'\n"
        "(res / 'bench_writer.md').write_text(md)\n"
    )
    doc = bench_run.run_script(script, False, res, None, 60)
    key = str(res / "bench_writer.json")
    assert doc["files"] == [key] and doc["output"] == {key: {"reads_per_s": 2e8}}
    md = bench_run.render([doc], {}, False, "cmd")
    assert "### Trace IO" in md and "### Sizes" in md and "| 1 |" in md
    assert "old.json" not in md
    # the script's own JSON is left as it wrote it; the wrapper has its own name
    assert json.loads((res / "bench_writer.json").read_text()) == {"reads_per_s": 2e8}
    assert (res / "bench_writer.run.json").exists()


def test_parse_stdout_variants():
    assert bench_run._parse_stdout('{"a": 1}') == {"a": 1}
    assert bench_run._parse_stdout('log\n{\n "a": [1, 2]\n}\n') == {"a": [1, 2]}
    assert bench_run._parse_stdout("no json here") is None
    assert bench_run._parse_stdout("") is None


def test_unknown_script_name_is_a_clear_error():
    r = _run(["bench/run.py", "--quick", "--only", "bench_nope"], timeout=60)
    assert r.returncode != 0 and "unknown script" in r.stderr and "bench_srp" in r.stderr


def test_report_cites_no_uncommitted_path(tmp_path):
    """bench/results/ is not committed: the report names no file under it."""
    res = tmp_path / "res"
    res.mkdir()
    script = tmp_path / "bench_writer.py"
    script.write_text(
        "import json, pathlib\n"
        f"res = pathlib.Path({str(res)!r})\n"
        "(res / 'writer.json').write_text(json.dumps({'overhead_pct': 1.5}))\n"
    )
    doc = bench_run.run_script(script, False, res, None, 60)
    md = bench_run.render([doc], {}, False, "cmd")
    assert "`writer.overhead_pct` | 1.5" in md
    assert str(res) not in md and "bench/results" not in md


def test_only_run_replaces_just_its_sections():
    head = "# Benchmarks\n\nGenerated by {}.\n\n## Machine\n\n{} box\n\n"
    old = head.format("x", "old") + "## bench_a\n\nA1\n\n## bench_b\n\nB1\n"
    new = head.format("y", "new") + "## bench_b\n\nB2\n\n## bench_c\n\nC2\n"
    out = bench_run.merge_sections(old, new)
    assert "A1" in out and "B2" in out and "B1" not in out and "C2" in out
    assert "old box" in out and "new box" not in out  # the full run's machine stays
    assert out.index("## bench_a") < out.index("## bench_b") < out.index("## bench_c")
    note = next(ln for ln in out.splitlines() if ln.startswith("Sections rerun on"))
    assert "bench_b (" in note and "bench_c (" in note and "bench_a" not in note
    # merging again keeps one note, and earlier reruns stay listed once each
    head = "# Benchmarks\n\nGenerated by z.\n\n"
    again = bench_run.merge_sections(out, head + "## bench_a\n\nA3\n")
    notes = [ln for ln in again.splitlines() if ln.startswith("Sections rerun on")]
    assert len(notes) == 1 and "A3" in again and "B2" in again
    assert all(notes[0].count(f"{n} (") == 1 for n in ("bench_a", "bench_b", "bench_c"))


def test_only_run_keeps_the_goals_of_scripts_that_did_not_run():
    top = "| goal | authors' code | target | measured | met |\n|---|---|---|---|---|\n"
    head = "# Benchmarks\n\nGenerated by x.\n\n" + bench_run.GOALS_HEADING + "\n\nText.\n\n"
    old = (
        head + top + "| srp fast | - | 1 | 2 | no |\n| sch fast | - | 1 | 3 | yes |\n\n## bench_a\n"
    )
    new = head + top + "| srp fast | - | 1 | 0.5 | yes |\n| lfu fast | - | 1 | 4 | yes |\n"
    out = bench_run.merge_sections(old, new)
    rows = [ln for ln in out.splitlines() if ln.startswith("| ") and "goal" not in ln]
    assert rows == [
        "| srp fast | - | 1 | 0.5 | yes |",  # rerun: replaced in place
        "| sch fast | - | 1 | 3 | yes |",  # not rerun: kept
        "| lfu fast | - | 1 | 4 | yes |",  # new goal: appended
    ]
    assert out.count(bench_run.GOALS_HEADING) == 1 and "## bench_a" in out
