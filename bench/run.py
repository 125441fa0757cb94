"""Run every benchmark script in ``bench/`` and write the JSON results and the markdown report.

    python bench/run.py                 # full run: bench/results/*.json + docs/benchmarks.md
    python bench/run.py --quick         # tiny sizes: checks that everything still works
    python bench/run.py --only bench_srp,bench_stack

Scripts built on ``bench/_common.py`` (``main(name, run)``) are run with ``--out``; any other
``bench/bench_*.py`` is run as it is (with ``LRC_BENCH_QUICK=1`` in its environment, and
``--quick`` when its source mentions that flag) and the JSON it prints, or writes to
``bench/results/NAME.json``, is collected. A script that fails is reported and makes the
exit status non-zero; the others are still reported.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine_info  # noqa: E402

BENCH = ROOT / "bench"


# ------------------------------------------------------------------------ running
def _discover() -> list[Path]:
    return sorted(BENCH.glob("bench_*.py"))


def _is_ours(src: str) -> bool:
    return "from _common import" in src and "main(" in src


def _parse_stdout(text: str) -> Any:
    """The JSON document a script printed: all of stdout, or the last JSON block in it."""
    text = text.strip()
    if not text:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    lines = text.splitlines()
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].lstrip().startswith(("{", "[")):
            try:
                return json.loads("\n".join(lines[i:]))
            except json.JSONDecodeError:
                continue
    return None


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def _json_mtimes(folders: set[Path]) -> dict[Path, float]:
    """Modification times of the JSON and markdown files in the results folders."""
    out = {}
    for folder in folders:
        if folder.is_dir():
            for f in [*folder.glob("*.json"), *folder.glob("*.md")]:
                if not f.name.startswith(("benchmarks", "summary", ".")):
                    out[f.resolve()] = f.stat().st_mtime
    return out


def run_script(
    path: Path, quick: bool, results: Path, threads: str | None, timeout: float
) -> dict[str, Any]:
    """Run one script; return its JSON document (or a failure record)."""
    name = path.stem
    src = path.read_text()
    out = (results / f"{name}.json").resolve()
    env = dict(os.environ)
    env["LRC_BENCH_QUICK"] = "1" if quick else "0"
    cmd = [sys.executable, str(path)]
    ours = _is_ours(src)
    if ours:
        cmd += ["--out", _rel(out)]
        if threads:
            cmd += ["--threads", threads]
    if quick and (ours or "--quick" in src):
        cmd.append("--quick")
    shown = " ".join(["python", _rel(path), *cmd[2:]])
    print(f"[run] {shown}", flush=True)
    watch = {BENCH / "results", results}
    before = _json_mtimes(watch)
    t0 = time.perf_counter()
    try:
        r = subprocess.run(
            cmd,
            cwd=ROOT,
            env=env,
            capture_output=not ours,
            text=True,
            timeout=timeout,
            check=False,
        )
        rc, stdout, stderr = r.returncode, r.stdout or "", r.stderr or ""
    except subprocess.TimeoutExpired as exc:
        rc, stdout, stderr = -1, "", f"timed out after {timeout:g} s ({exc})"
    elapsed = round(time.perf_counter() - t0, 2)
    if rc != 0:
        tail = (stderr or stdout)[-2000:]
        print(f"[run] {name} FAILED (exit {rc})\n{tail}", flush=True)
        return {
            "script": name,
            "failed": True,
            "exit": rc,
            "error": tail,
            "elapsed_s": elapsed,
            "command": shown,
        }
    if ours:
        return json.loads(out.read_text())
    # another engineer's script: collect the JSON it wrote (any new or changed file in the
    # results folders) and any JSON document it printed
    files, tables = {}, {}
    wrapper = out.with_name(f"{name}.run.json")
    for f, mtime in sorted(_json_mtimes(watch).items()):
        if before.get(f) == mtime or f == wrapper:
            continue
        try:
            if f.suffix == ".md":
                tables[_rel(f)] = f.read_text()
            else:
                files[_rel(f)] = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError):
            continue
    printed = _parse_stdout(stdout)
    output: dict[str, Any] = dict(files)
    if printed is not None:
        output["stdout"] = printed
    wrapped = {
        "schema": "lrc-bench/foreign",
        "script": name,
        "quick": quick,
        "command": shown,
        "elapsed_s": elapsed,
        "files": sorted(files),
        "output": output or None,
        "markdown": tables,
    }
    if not output and not tables:
        wrapped["stdout_tail"] = stdout[-4000:]
    # the script may own RESULTS/NAME.json itself: the wrapper gets its own name
    wrapper.write_text(json.dumps(wrapped, indent=1) + "\n")
    return wrapped


# ----------------------------------------------------------------------- markdown
def _fmt_rate(r: float | None) -> str:
    if not r:
        return "-"
    if r >= 1e6:
        return f"{r / 1e6:.3g}M"
    if r >= 1e3:
        return f"{r / 1e3:.3g}k"
    return f"{r:.3g}"


def _fmt_s(s: float | None) -> str:
    if s is None:
        return "-"
    if s >= 1:
        return f"{s:.3g} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3g} ms"
    return f"{s * 1e6:.3g} us"


def _fmt_x(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:,.0f}x" if x >= 100 else f"{x:.3g}x"


def _fmt_params(p: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in p.items()).replace("|", "/")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


def _machine_section(m: dict[str, Any]) -> list[str]:
    rows = [
        [
            "CPU",
            f"{m.get('cpu_model')} ({m.get('cpu_vendor') or '?'}"
            f"{', ' + m['hypervisor'] + ' guest' if m.get('hypervisor') else ''})",
        ],
        ["cores usable", f"{m.get('usable_cpus')} (threads per core: {m.get('threads_per_core')})"],
        ["memory", f"{m.get('memory_gib')} GiB"],
        ["GPU", m.get("gpu") or "none"],
        ["OS", m.get("os")],
        [
            "software",
            f"Python {m.get('python')}, NumPy {m.get('numpy')}, Numba "
            f"{m.get('numba')}, lrc_kernels {m.get('lrc_kernels')}",
        ],
        ["commit", m.get("git_commit") or "?"],
    ]
    return ["## Machine", "", *_table(["", ""], rows), ""]


def _goal_rows(docs: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for d in docs:
        if d.get("failed") or "derived" not in d:
            continue
        ratios = {(t["key"], t["threads"]): t["speedup"] for t in d["derived"]["thread_ratio"]}
        for g in d["derived"]["goals"]:
            met = "yes" if g["met"] else "**no**"
            rows.append([g["text"], g.get("baseline") or "-", g["target"], g["measured"], met])
            for (key, t), sp in sorted(ratios.items()):
                if key == g["key"]:
                    rows.append(
                        [
                            f"{g['text'].replace(', one core', '')}: {t} cores vs one",
                            "-",
                            ">= 1.7x",
                            f"{sp:.2f}x",
                            "yes" if sp >= 1.7 else "**no**",
                        ]
                    )
    return rows


def _load_text(d: dict[str, Any]) -> str:
    vals = [v for x in d.get("load_average", []) for v in (x.get("start"), x.get("end")) if v]
    if not vals:
        return ""
    one = [v[0] for v in vals]
    return (
        f" One-minute load average during the run: {min(one):.1f} to {max(one):.1f} "
        f"on {d['machine'].get('usable_cpus')} cores."
    )


def _ours_section(d: dict[str, Any]) -> list[str]:
    name = d["script"]
    lines = [
        f"## {name}",
        "",
        d.get("description", ""),
        "",
        f"Command: `{d['command']}`, started {d.get('started_utc', '?')}, took "
        f"{d['elapsed_s']} s; thread counts {d['threads']}, {d.get('rounds', 1)} round(s) "
        f"each, best kept.{_load_text(d)}",
        "",
    ]
    recs = d["records"]
    der = d["derived"]
    ratio = {(t["key"], t["threads"]): t for t in der["thread_ratio"]}
    speed = {(s["key"], s["threads"]): s["speedup"] for s in der["speedup"]}
    threads = [t for t in d["threads"] if t != 1]
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in recs:
        groups.setdefault(r["group"], []).append(r)
    for group, rs in groups.items():
        lines += [f"### {group}", ""]
        header = ["kernel", "case", "workload", "backend", "1 thread", "act/s", "vs reference"]
        for t in threads:
            header += [f"{t} threads", f"{t}T/1T"]
        rows = []
        seen = set()
        for r in rs:
            if r["key"] in seen:
                continue
            seen.add(r["key"])
            one = next((x for x in rs if x["key"] == r["key"] and x["threads"] == 1), r)
            row = [
                r["bench"],
                r["case"],
                _fmt_params(r["params"]),
                r["backend"],
                _fmt_s(one["seconds"]),
                _fmt_rate(one["rate"]),
                _fmt_x(speed.get((r["key"], 1))),
            ]
            for t in threads:
                other = next((x for x in rs if x["key"] == r["key"] and x["threads"] == t), None)
                tr = ratio.get((r["key"], t))
                row += [
                    _fmt_s(other["seconds"]) if other else "-",
                    f"{tr['speedup']:.2f}x" if tr else "-",
                ]
            rows.append(row)
        lines += _table(header, rows) + [""]
    if der["scaling"]:
        lines += [
            "### Scaling exponents",
            "",
            "Slope of log(time) against log(size), least squares over all sizes and over "
            "the three largest (where fixed overheads matter least).",
            "",
        ]
        rows = []
        for s in der["scaling"]:
            top = None
            if len(s["sizes"]) > 3:
                from _common import fit_exponent

                top = fit_exponent(s["sizes"][-3:], s["seconds"][-3:])
            fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
            sizes = ", ".join(f"{v:g}" for v in s["sizes"])
            rows.append(
                [
                    s["sweep"],
                    s["bench"],
                    s["backend"],
                    s["threads"],
                    sizes,
                    fmt(s["exponent"]),
                    fmt(top),
                ]
            )
        lines += _table(
            ["sweep", "kernel", "backend", "threads", "sizes", "exponent", "exponent (largest 3)"],
            rows,
        ) + [""]
    checks = d["checks"]
    n_ok = sum(c["passed"] for c in checks)
    lines += [
        f"Correctness checks against the reference: {n_ok}/{len(checks)} passed "
        "(integer tables bit-identical, rates within 1e-12).",
        "",
    ]
    for note in d.get("notes", []):
        lines += [f"- {note}"]
    if d.get("notes"):
        lines.append("")
    return lines


def _flatten(obj: Any, prefix: str = "", out: list | None = None, limit: int = 80) -> list:
    out = [] if out is None else out
    if len(out) >= limit:
        return out
    if isinstance(obj, dict):
        for k, v in obj.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out, limit)
    elif isinstance(obj, list) and obj and all(isinstance(v, (dict, list)) for v in obj):
        for i, v in enumerate(obj):
            _flatten(v, f"{prefix}[{i}]", out, limit)
    else:
        text = json.dumps(obj) if not isinstance(obj, str) else obj
        if len(text) > 120:
            text = text[:117] + "..."
        out.append([f"`{prefix}`", text.replace("|", "/")])
    return out


def _foreign_section(d: dict[str, Any]) -> list[str]:
    name = d["script"]
    lines = [
        f"## {name}",
        "",
        f"Command: `{d.get('command')}`; {d.get('elapsed_s')} s.",
        "",
    ]
    tables = d.get("markdown") or {}
    for text in tables.values():
        # the script's own markdown report, headings moved below this section's
        body = [
            ("###" + ln[1:]) if ln.startswith("# ") else ("#" + ln if ln.startswith("##") else ln)
            for ln in text.strip().splitlines()
        ]
        lines += [*body, ""]
    doc = d.get("output")
    if doc is None:
        if not tables:
            lines += ["(no JSON output found)", ""]
        return lines
    if tables:
        lines += ["Its JSON output holds every figure of the run, repeats included.", ""]
        return lines
    # name each field by the JSON file's stem, not its (uncommitted) path
    doc = {Path(k).name.split(".")[0] if k != "stdout" else k: v for k, v in doc.items()}
    lines += ["Its JSON output, flattened:", ""]
    lines += _table(["field", "value"], _flatten(doc)) + [""]
    return lines


GOALS_HEADING = "## Issue #2 performance goals"


def _merge_goal_rows(old: list[str], new: list[str]) -> list[str]:
    """The goals table of a partial rerun: the new rows replace their namesakes (same goal
    text), the goals of scripts that did not run keep their rows, in the old order."""

    def rows(lines: list[str]) -> dict[str, str]:
        return {
            ln.split("|")[1].strip(): ln
            for ln in lines
            if ln.startswith("| ") and not ln.startswith("| goal ")
        }

    fresh = rows(new)
    out = [fresh.pop(ln.split("|")[1].strip(), ln) if ln in rows(old).values() else ln
           for ln in old]  # fmt: skip
    last = max(i for i, ln in enumerate(out) if ln.startswith("|"))
    return out[: last + 1] + list(fresh.values()) + out[last + 1 :]


def merge_sections(old: str, new: str) -> str:
    """``old`` with each ``## `` section of ``new`` put in place of its namesake.

    Used when only some scripts ran (``--only``): the report keeps the sections of the
    scripts that did not run, and the new ones replace theirs (or are appended).
    """

    def split(text: str) -> tuple[list[str], dict[str, list[str]], list[str]]:
        head: list[str] = []
        secs: dict[str, list[str]] = {}
        order: list[str] = []
        cur: list[str] = head
        for ln in text.splitlines():
            if ln.startswith("## "):
                cur = secs.setdefault(ln, [])
                order.append(ln)
            cur.append(ln)
        return head, secs, order

    head, old_secs, order = split(old)
    _, new_secs, new_order = split(new)
    rerun = [h[3:] for h in new_order if h.startswith("## bench_")]
    for h in new_order:
        if h == "## Machine" and h in old_secs:
            continue  # the machine of the full run stays; each section states its own load
        if h == GOALS_HEADING and h in old_secs:
            old_secs[h] = _merge_goal_rows(old_secs[h], new_secs[h])
            continue
        if h not in old_secs:
            order.append(h)
        old_secs[h] = new_secs[h]
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    # earlier partial reruns stay listed (each with its time) unless rerun again now
    earlier = [
        part.strip()
        for ln in head
        if ln.startswith("Sections rerun on ")
        for part in ln.split(": ", 1)[1].rstrip(".").split("; ")
        if part.split(" (", 1)[0] not in rerun
    ]
    note = (
        "Sections rerun on their own with `--only`: "
        + "; ".join([*earlier, *(f"{r} ({now})" for r in rerun)])
        + "."
    )
    head = [ln for ln in head if not ln.startswith("Sections rerun on ")]
    head.insert(min(3, len(head)), note)
    head.insert(min(4, len(head)), "")
    out = head + [ln for h in order for ln in old_secs[h]]
    return "\n".join(out).rstrip() + "\n"


def render(
    docs: list[dict[str, Any]], machine: dict[str, Any], quick: bool, command: str, note: str = ""
) -> str:
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `{command}` on {now}. {note + ' ' if note else ''}Do not edit by hand: "
        "rerun the command.",
        "",
    ]
    if quick:
        lines += [
            '!!! warning "Quick mode"',
            "    These figures come from `--quick`: tiny sizes "
            "that only check the benchmarks work. The timings mean nothing.",
            "",
        ]
    lines += [
        "How to read the tables: an *activation* is one routing decision (token x layer x "
        "slot), so a trace of S sequences of T tokens, L layers and top-k has S*T*L*k. "
        "*act/s* is activations divided by the best wall time of several calls after a "
        "warm-up call (JIT compilation excluded), on one thread unless stated. *vs reference* "
        "compares that throughput with the plain-Python reference "
        "(`lrc_kernels/reference.py`) measured in the same run on a one-sequence slice of the "
        "same shape (its cost per activation does not depend on the number of sequences). "
        "*2T/1T* is the one-thread time over the two-thread time. Each thread count runs in "
        "its own process with Numba and BLAS limited to that many threads. The machine is "
        "shared with other work (each section states the load average during its run), so "
        "small differences are noise. The run also writes every figure with its full workload "
        "and all repeat times as JSON (see `bench/README.md`).",
        "",
    ]
    lines += _machine_section(machine)
    goals = _goal_rows(docs)
    if goals:
        lines += [
            GOALS_HEADING,
            "",
            "Measured here, never asserted in tests. *Authors' code*: the paper's implementation "
            "on one core of the project's machine, as stated in issue #2.",
            "",
        ]
        lines += _table(["goal", "authors' code", "target", "measured", "met"], goals) + [""]
    failed = [d for d in docs if d.get("failed")]
    if failed:
        lines += ["## Failed scripts", ""]
        for d in failed:
            lines += [f"- `{d['script']}` (exit {d['exit']}): `{d['command']}`"]
        lines.append("")
    for d in docs:
        if d.get("failed"):
            continue
        if d.get("schema") == "lrc-bench/1":
            lines += _ours_section(d)
        else:
            lines += _foreign_section(d)
    return "\n".join(lines).rstrip() + "\n"


def _load_result(name: str, results: Path) -> dict[str, Any] | None:
    """The recorded result of one script (ours: NAME.json; others: NAME.run.json)."""
    for f in (results / f"{name}.json", results / f"{name}.run.json"):
        if f.exists():
            try:
                d = json.loads(f.read_text())
            except json.JSONDecodeError:
                continue
            if d.get("schema", "").startswith("lrc-bench/"):
                return d
    print(f"[run] no recorded result for {name} in {results}; left out", flush=True)
    return None


# -------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes: check that they still work")
    p.add_argument("--only", help="comma-separated script names (bench_srp,...)")
    p.add_argument("--skip", help="comma-separated script names to leave out")
    p.add_argument("--threads", help="thread counts for the _common scripts, e.g. 1,2")
    p.add_argument("--results", type=Path, default=BENCH / "results", help="JSON folder")
    p.add_argument(
        "--markdown",
        type=Path,
        default=None,
        help="report file (default docs/benchmarks.md; quick mode: RESULTS/"
        "benchmarks-quick.md, so a quick run never overwrites the real report)",
    )
    p.add_argument("--timeout", type=float, default=None, help="seconds per script")
    p.add_argument(
        "--render-only",
        action="store_true",
        help="run nothing: rebuild the markdown report from the JSON already in --results",
    )
    a = p.parse_args(argv)

    scripts = _discover()
    names = [s.stem for s in scripts]
    if a.only:
        want = [n.strip() for n in a.only.split(",") if n.strip()]
        unknown = sorted(set(want) - set(names))
        if unknown:
            p.error(f"unknown script(s) {unknown}; available: {names}")
        scripts = [s for s in scripts if s.stem in want]
    if a.skip:
        drop = {n.strip() for n in a.skip.split(",")}
        scripts = [s for s in scripts if s.stem not in drop]
    a.results.mkdir(parents=True, exist_ok=True)
    timeout = a.timeout or (600.0 if a.quick else 3600.0)
    if a.render_only:
        docs = [_load_result(s.stem, a.results) for s in scripts]
        docs = [d for d in docs if d is not None]
        a.quick = any(d.get("quick") for d in docs)
    else:
        docs = [run_script(s, a.quick, a.results, a.threads, timeout) for s in scripts]
    machine = machine_info()
    args = list(argv if argv is not None else sys.argv[1:])
    command = " ".join(["python bench/run.py", *(x for x in args if x != "--render-only")])
    note = "Report rebuilt from the recorded JSON with `--render-only`." if a.render_only else ""
    md = a.markdown or (
        a.results / "benchmarks-quick.md" if a.quick else ROOT / "docs" / "benchmarks.md"
    )
    md.parent.mkdir(parents=True, exist_ok=True)
    text = render(docs, machine, a.quick, command, note)
    if a.only and md.exists() and not a.quick:
        text = merge_sections(md.read_text(), text)
    md.write_text(text)
    (a.results / "summary.json").write_text(
        json.dumps(
            {
                "machine": machine,
                "quick": a.quick,
                "scripts": [
                    {
                        "script": d["script"],
                        "failed": bool(d.get("failed")),
                        "goals": d.get("derived", {}).get("goals", []),
                    }
                    for d in docs
                ],
            },
            indent=1,
        )
        + "\n"
    )
    n_fail = sum(bool(d.get("failed")) for d in docs)
    print(f"[run] {len(docs) - n_fail}/{len(docs)} scripts ok -> {md}")
    return 1 if n_fail else 0


if __name__ == "__main__":
    sys.exit(main())
