"""Replay against the decode model: measured time per token vs ``predict_decode``.

The planner's speed model is checked on the one deployment we can run for real: the
replay's two-tier store (``lk.replay``). Its two parameters come from this machine, not
from the replay figures being predicted:

- ``link_gbps``: ``lk.measure_copy_bandwidth`` (expert-sized copies, slow tier to fast tier,
  one copy call per expert, as the replay copies);
- ``base_ms``: the replay's time per token with every expert resident (all hits: the
  bookkeeping of the online caches, the runtime's "resident time").

Then for several budgets and policies (optimal per-layer allocation from ``plan_budget``)
the replay's measured ms/token is set beside ``1000 / predict_decode(plan.hit_rate, ...)``.
Each replay's misses are first checked equal to the plan's (a mismatch aborts). A second
block shows the calibration workflow: fit ``base_ms`` and the link to two measured budgets
(``calibrate=``) and predict the others.

Run: ``python bench/bench_replay.py [--quick] [--out FILE.json]``; prints the JSON and
writes a markdown table beside it (not in quick mode).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lrc_kernels as lk  # noqa: E402

FULL = dict(S=2, T=256, L=8, E=32, k=4, eb=1 << 20, per_layer=(2, 4, 8, 16, 24))
QUICK = dict(S=2, T=24, L=2, E=8, k=2, eb=1 << 12, per_layer=(2, 4))
POLICIES = ("lru", "lfu")


REPEATS = 3  # each figure is the best of 3 runs: the machine is shared with other work


def _replay(tr, policy, alloc, eb, slow):
    """Best-of-REPEATS wall and CPU ms per token, and one run's result (for the counts)."""
    runs = [lk.replay(tr, policy, alloc, expert_bytes=eb, slow=slow) for _ in range(REPEATS)]
    wall = min(r.ms_per_token for r in runs)
    cpu = min(r.cpu_ms_per_token for r in runs)
    return runs[0], wall, cpu


def _bandwidth(eb, L, E, slow, clock):
    return max(
        lk.measure_copy_bandwidth(
            eb, copies=512, rows=L * E, slots=L * E // 4, slow=slow, clock=clock
        )
        for _ in range(REPEATS)
    )


def run(cfg: dict, slow: str) -> dict:
    tr = lk.synthetic_trace(cfg["S"], cfg["T"], cfg["L"], cfg["E"], cfg["k"], stay=0.6, seed=7)
    L, E, k, eb = cfg["L"], cfg["E"], cfg["k"], cfg["eb"]
    load0 = os.getloadavg()
    gbps = {c: _bandwidth(eb, L, E, slow, c) for c in ("wall", "cpu")}
    base, base_wall, base_cpu = _replay(tr, "lru", E, eb, slow)  # every expert resident
    if base.misses.sum() != 0:
        raise SystemExit("the all-resident replay missed")
    base_ms = {"wall": base_wall, "cpu": base_cpu}
    rows = []
    for policy in POLICIES:
        for c in cfg["per_layer"]:
            plan = lk.plan_budget(tr, c * L, policy, shared=False)
            r, wall, cpu = _replay(tr, policy, plan, eb, slow)
            if not np.array_equal(r.misses, plan.misses):
                raise SystemExit(f"{policy} {c * L}: replay misses differ from the plan")
            row = {"policy": policy, "slots": c * L, "hit_rate": plan.hit_rate,
                   "misses": int(r.misses.sum())}  # fmt: skip
            for clock, got in (("wall", wall), ("cpu", cpu)):
                pred = 1000.0 / lk.predict_decode(
                    plan.hit_rate, num_layers=L, top_k=k, expert_bytes=eb,
                    link_gbps=gbps[clock], base_ms=base_ms[clock],
                )  # fmt: skip
                row[f"{clock}_ms"], row[f"{clock}_predicted_ms"] = got, pred
                row[f"{clock}_error"] = got / pred - 1.0
            rows.append(row)
    cal = _calibration(rows, L, k, eb)
    return {
        "schema": "lrc-bench/replay-1",
        "config": {**{k_: v for k_, v in cfg.items() if k_ != "per_layer"}, "slow": slow},
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "load_before": load0,
        "load_after": os.getloadavg(),
        "copy_gbps": gbps,
        "base_ms": base_ms,
        "rows": rows,
        "calibration": cal,
        "max_abs_error": {c: max(abs(r[f"{c}_error"]) for r in rows) for c in ("wall", "cpu")},
        "within_25pct": {
            c: all(abs(r[f"{c}_error"]) <= 0.25 for r in rows) for c in ("wall", "cpu")
        },
    }


def _calibration(rows: list[dict], L: int, k: int, eb: int) -> dict:
    """Fit to the LRU rows of the smallest and largest budget; predict every row."""
    lru = [r for r in rows if r["policy"] == "lru"]
    pts = [(r["hit_rate"], 1000.0 / r["cpu_ms"]) for r in (lru[0], lru[-1])]
    base, gbps = lk.calibrate_decode(pts, num_layers=L, top_k=k, expert_bytes=eb)
    errs = []
    for r in rows:
        p = 1000.0 / lk.predict_decode(
            r["hit_rate"], num_layers=L, top_k=k, expert_bytes=eb, calibrate=pts
        )
        errs.append(r["cpu_ms"] / p - 1.0)
    return {"points": pts, "base_ms": base, "link_gbps": gbps, "errors": errs}


def markdown(doc: dict) -> str:
    c = doc["config"]
    lines = [
        f"Replay of a synthetic trace ({c['S']} x {c['T']} tokens, {c['L']} layers x {c['E']} "
        f"experts, top-{c['k']}), experts of {c['eb']:,} B, slow tier `{c['slow']}`, fast tier "
        "host RAM. Measured copy bandwidth "
        f"{doc['copy_gbps']['cpu']:.2f} GB/s in CPU time ({doc['copy_gbps']['wall']:.2f} wall); "
        f"all-resident replay {doc['base_ms']['cpu']:.3f} ms/token CPU "
        f"({doc['base_ms']['wall']:.3f} wall). Best of {REPEATS} runs each. Load (1-min) "
        f"{doc['load_before'][0]:.2f} before, {doc['load_after'][0]:.2f} after.",
        "",
        "| policy | slots | hit rate | misses | CPU ms/token | predicted | error "
        "| wall ms/token | predicted | error |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in doc["rows"]:
        lines.append(
            f"| {r['policy']} | {r['slots']} | {r['hit_rate']:.4f} | {r['misses']:,} | "
            f"{r['cpu_ms']:.3f} | {r['cpu_predicted_ms']:.3f} | {100 * r['cpu_error']:+.1f} % | "
            f"{r['wall_ms']:.3f} | {r['wall_predicted_ms']:.3f} | {100 * r['wall_error']:+.1f} % |"
        )
    cal = doc["calibration"]
    lines += [
        "",
        f"Calibrated on two LRU budgets' CPU times instead: base {cal['base_ms']:.3f} ms, link "
        f"{cal['link_gbps']:.2f} GB/s; errors "
        + ", ".join(f"{100 * e:+.1f} %" for e in cal["errors"])
        + ".",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes: the code path only")
    p.add_argument("--slow", default="mmap", choices=("mmap", "host"))
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "replay.json")
    a = p.parse_args()
    quick = a.quick or os.environ.get("LRC_BENCH_QUICK", "") not in ("", "0", "false", "no")
    t0 = time.perf_counter()
    doc = run(QUICK if quick else FULL, a.slow)
    doc["quick"] = quick
    doc["elapsed_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(doc, indent=1))
    if not quick:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(doc, indent=1) + "\n")
        a.out.with_suffix(".md").write_text(markdown(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
