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

FULL = dict(S=2, T=128, L=8, E=32, k=4, eb=1 << 20, per_layer=(2, 4, 8, 16, 24))
QUICK = dict(S=2, T=24, L=2, E=8, k=2, eb=1 << 12, per_layer=(2, 4))
POLICIES = ("lru", "lfu")
ROUNDS = 5  # interleaved rounds; each figure is the median over the rounds
CLOCKS = ("wall", "cpu")


def _round(tr, plans, cfg, slow):
    """One round: this moment's copy bandwidth and all-resident time, then every replay.

    The machine is shared with other work whose load drifts, so the two calibration
    measurements are repeated next to the replays they predict, in every round.
    """
    L, E, eb = cfg["L"], cfg["E"], cfg["eb"]
    gbps = {
        c: lk.measure_copy_bandwidth(eb, copies=128, rows=L * E, slots=L * E // 4, slow=slow,
                                     clock=c)
        for c in CLOCKS
    }  # fmt: skip
    base_ms = {}
    for policy in POLICIES:  # every expert resident: the policy's own bookkeeping only
        base = lk.replay(tr, policy, E, expert_bytes=eb, slow=slow)
        if base.misses.sum() != 0:
            raise SystemExit("the all-resident replay missed")
        base_ms[policy] = {"wall": base.ms_per_token, "cpu": base.cpu_ms_per_token}
    out = []
    for (policy, slots), plan in plans.items():
        r = lk.replay(tr, policy, plan, expert_bytes=eb, slow=slow)
        if not np.array_equal(r.misses, plan.misses):
            raise SystemExit(f"{policy} {slots}: replay misses differ from the plan")
        got = {"wall": r.ms_per_token, "cpu": r.cpu_ms_per_token}
        row = {}
        for c in CLOCKS:
            pred = 1000.0 / lk.predict_decode(
                plan.hit_rate, num_layers=L, top_k=cfg["k"], expert_bytes=eb,
                link_gbps=gbps[c], base_ms=base_ms[policy][c],
            )  # fmt: skip
            row[c] = (got[c], pred, got[c] / pred - 1.0)
        out.append(row)
    return gbps, base_ms, out


def run(cfg: dict, slow: str) -> dict:
    tr = lk.synthetic_trace(cfg["S"], cfg["T"], cfg["L"], cfg["E"], cfg["k"], stay=0.6, seed=7)
    L = cfg["L"]
    load0 = os.getloadavg()
    plans = {
        (p, c * L): lk.plan_budget(tr, c * L, p, shared=False)
        for p in POLICIES
        for c in cfg["per_layer"]
    }
    rounds = [_round(tr, plans, cfg, slow) for _ in range(1 if cfg is QUICK else ROUNDS)]
    med = np.median
    rows = []
    for i, ((policy, slots), plan) in enumerate(plans.items()):
        row = {"policy": policy, "slots": slots, "hit_rate": plan.hit_rate,
               "misses": int(plan.misses.sum())}  # fmt: skip
        for c in CLOCKS:
            got, pred, err = (np.array([rd[2][i][c][j] for rd in rounds]) for j in range(3))
            row[f"{c}_ms"], row[f"{c}_predicted_ms"] = float(med(got)), float(med(pred))
            row[f"{c}_error"] = float(med(err))
            row[f"{c}_errors"] = err.tolist()
        rows.append(row)
    cal = _calibration(rows, L, cfg["k"], cfg["eb"])
    return {
        "schema": "lrc-bench/replay-1",
        "config": {**{k_: v for k_, v in cfg.items() if k_ != "per_layer"}, "slow": slow},
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "rounds": len(rounds),
        "load_before": load0,
        "load_after": os.getloadavg(),
        "copy_gbps": {c: [rd[0][c] for rd in rounds] for c in CLOCKS},
        "base_ms": {p: {c: [rd[1][p][c] for rd in rounds] for c in CLOCKS} for p in POLICIES},
        "rows": rows,
        "calibration": cal,
        "max_abs_error": {c: max(abs(r[f"{c}_error"]) for r in rows) for c in CLOCKS},
        "within_25pct": {c: all(abs(r[f"{c}_error"]) <= 0.25 for r in rows) for c in CLOCKS},
    }


def _calibration(rows: list[dict], L: int, k: int, eb: int) -> dict:
    """Per policy: fit to its smallest and largest budget (CPU time); predict every row."""
    out: dict = {"errors": [], "fits": {}}
    for policy in POLICIES:
        mine = [r for r in rows if r["policy"] == policy]
        pts = [(r["hit_rate"], 1000.0 / r["cpu_ms"]) for r in (mine[0], mine[-1])]
        base, gbps = lk.calibrate_decode(pts, num_layers=L, top_k=k, expert_bytes=eb)
        out["fits"][policy] = {"points": pts, "base_ms": base, "link_gbps": gbps}
        for r in mine:
            p = 1000.0 / lk.predict_decode(
                r["hit_rate"], num_layers=L, top_k=k, expert_bytes=eb, calibrate=pts
            )
            out["errors"].append(r["cpu_ms"] / p - 1.0)
    return out


def markdown(doc: dict) -> str:
    c = doc["config"]
    g, b = doc["copy_gbps"], doc["base_ms"]

    def span(v: list, fmt: str) -> str:
        return f"{min(v):{fmt}}-{max(v):{fmt}}"

    lines = [
        f"Replay of a synthetic trace ({c['S']} x {c['T']} tokens, {c['L']} layers x {c['E']} "
        f"experts, top-{c['k']}), experts of {c['eb']:,} B, slow tier `{c['slow']}`, fast tier "
        f"host RAM; {doc['rounds']} interleaved rounds, medians shown. Copy bandwidth measured "
        f"in each round: {span(g['cpu'], '.2f')} GB/s in CPU time, {span(g['wall'], '.2f')} "
        "wall; all-resident replay (per policy) "
        + ", ".join(f"{p} {span(v['cpu'], '.3f')}" for p, v in b.items())
        + " ms/token CPU. Load (1-min) "
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
    fits = "; ".join(
        f"{p}: base {f['base_ms']:.3f} ms, link {f['link_gbps']:.2f} GB/s"
        for p, f in cal["fits"].items()
    )
    lines += [
        "",
        "Calibrated instead on each policy's smallest and largest budget (CPU times; the "
        f"calibration workflow): {fits}. Errors of every row, in table order: "
        + ", ".join(f"{100 * e:+.1f} %" for e in cal["errors"])
        + " (the two fitted rows of each policy are 0 by construction).",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes: the code path only")
    p.add_argument("--slow", default="host", choices=("mmap", "host"))
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
