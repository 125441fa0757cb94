"""First-run cost: each workload in a fresh process, with an empty and then a warm kernel cache.

Numba compiles a kernel the first time a process needs it and stores the machine code on
disk (``cache=True``); a later process loads it instead. This script measures both, per
workload, each in a new Python process whose ``NUMBA_CACHE_DIR`` points at a temporary
folder: the *cold* run starts with the folder empty (what a new user meets once), the
*warm* run reuses it (every later run). Times are whole-process wall times, Python and
package import included; ``import`` alone is measured the same way.

Run: ``python bench/bench_startup.py [--quick] [--out FILE.json]``; prints the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRACE = ROOT / "traces" / "synthetic-high.lrc.arrow"

# each workload is the Python a user types; the trace is the shipped sample trace
WORKLOADS = {
    "import": "import lrc_kernels",
    "srp": "import lrc_kernels as lk; lk.srp(P, 16)",
    "sch_model": "import lrc_kernels as lk; lk.sch(P, 16, level='model')",
    "srp_bootstrap": "import lrc_kernels as lk; lk.srp(P, [4, 16], level='layer', bootstrap=1000)",
    "report": ("from lrc_kernels import cli; cli.main(['report', P, '--out', OUT, '--quiet'])"),
}
QUICK = ("import", "srp")


def _time(code: str, cache: str, out: str) -> tuple[float, bool]:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache, LRC_COMPILE_NOTICE="1")
    src = f"P = {str(TRACE)!r}; OUT = {out!r}\n{code}"
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", src], env=env, capture_output=True, text=True, timeout=900
    )
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"workload failed:\n{code}\n{proc.stderr}")
    return dt, "compiling CPU kernels" in proc.stderr


def run(names) -> dict:
    rows = []
    for name in names:
        with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as out:
            cold, cold_note = _time(WORKLOADS[name], cache, out)
            warm, warm_note = _time(WORKLOADS[name], cache, out)
        if name != "import" and (not cold_note or warm_note):
            raise SystemExit(
                f"{name}: the compile note must show on the cold run only "
                f"(cold: {cold_note}, warm: {warm_note})"
            )
        rows.append(
            {
                "workload": name,
                "cold_s": round(cold, 2),
                "warm_s": round(warm, 2),
                "code": WORKLOADS[name],
            }
        )
    return {
        "schema": "lrc-bench-startup/1",
        "trace": str(TRACE.relative_to(ROOT)),
        "cpus": os.cpu_count(),
        "loadavg": os.getloadavg(),
        "rows": rows,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="import and srp only")
    p.add_argument(
        "--out",
        type=Path,
        default=ROOT / "bench" / "results" / "startup.json",
        help="JSON output; a markdown table is written beside it (not in quick mode)",
    )
    a = p.parse_args()
    quick = a.quick or os.environ.get("LRC_BENCH_QUICK", "") not in ("", "0", "false", "no")
    doc = run(QUICK if quick else tuple(WORKLOADS))
    text = json.dumps(doc, indent=1)
    if not quick:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text)
        a.out.with_suffix(".md").write_text(markdown(doc))
    print(text)


def markdown(doc: dict) -> str:
    rows = [
        "Each workload runs in a new Python process on the shipped trace "
        f"`{doc['trace']}` ({doc['cpus']} CPUs, load average "
        + ", ".join(f"{v:.1f}" for v in doc["loadavg"])
        + "): *cold* with an empty kernel cache (the first run on a machine, which compiles), "
        "*warm* with the cache the cold run left (every later run). Whole-process wall time, "
        "Python start and imports included.",
        "",
        "| workload | Python | cold | warm |",
        "|---|---|---|---|",
    ]
    for r in doc["rows"]:
        rows.append(
            f"| {r['workload']} | `{r['code']}` | {r['cold_s']:.1f} s | {r['warm_s']:.1f} s |"
        )
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    main()
