"""A paper-scale analysis of one Qwen3-30B-A3B-shaped trace: every metric, timed and projected.

The workload of issue #15: 48 MoE layers x 128 experts, top-8, the paper's corpus size
(11.5M tokens, in sequences of 512 tokens), and everything a full study computes:

- SRP at m = 4, 16, 64, 256 with 1000-resample bootstrap intervals, at model and layer level;
- SCH at the same m, and LRU, LFU and Belady hit curves, each per layer and with one cache
  shared by all layers (``level="model"``).

Default mode times each metric on a slice of the corpus (``--slice`` sequences of synthetic
routing with realistic locality, ``stay = 0.5``) with every core, and projects the time to
the full corpus in proportion to tokens (every metric here costs the same per token: the
window and stack passes run per sequence, and the bootstrap's resample product grows with
the number of sequences). Before timing, each policy's model-level curve on a small trace
is checked against the plain reference.

``--full`` writes a full-size synthetic trace to an Arrow file (streamed, sequence chunk by
chunk) and runs the whole analysis streamed from that file, reporting the wall time of each
step and the peak resident memory of the process.

    python bench/bench_paper.py                 # slice + projection (a few minutes)
    python bench/bench_paper.py --quick         # tiny: checks the script works
    python bench/bench_paper.py --full --file /big/disk/qwen3-shape.lrc.arrow

Prints a JSON document and writes it (and a markdown table beside it) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lrc_kernels as lk  # noqa: E402
from lrc_kernels import reference  # noqa: E402
from lrc_kernels.cpu._jit import num_threads  # noqa: E402

L, E, K = 48, 128, 8
SEQ_LEN = 512
CORPUS_TOKENS = 11_500_000
MS = [4, 16, 64, 256]
BOOTSTRAP = 1000


def workloads(src, quick: bool):
    """(name, level, callable) of every step of the analysis, on ``src`` (trace or path)."""
    ms = MS[:2] if quick else MS
    b = 20 if quick else BOOTSTRAP
    steps = []
    for level in ("model", "layer"):
        steps.append(
            (
                f"srp m={ms} B={b}",
                level,
                lambda lv=level: lk.srp(src, ms, level=lv, bootstrap=b, seed=0),
            )
        )
    for level in ("layer", "model"):
        steps.append((f"sch m={ms}", level, lambda lv=level: lk.sch(src, ms, level=lv)))
        for pol in ("lru", "lfu", "belady"):
            steps.append((pol, level, lambda p=pol, lv=level: lk.hit_curve(src, p, level=lv)))
    return steps


def check_reference() -> list[str]:
    """Model-level curves of every policy equal the reference's, on a small shared cache."""
    tr = lk.synthetic_trace(2, [40, 27], 4, 16, 4, seed=3)
    done = []
    for pol in ("sch", "lru", "lfu", "belady"):
        for warm in (True, False):
            kw = {"m": 5} if pol == "sch" else {}
            got = lk.hit_curve(tr, pol, level="model", warm_start=warm, **kw).stat
            ref = reference.stack_stats_table(
                tr.experts,
                tr.offsets,
                tr.num_experts,
                pol,
                kw.get("m"),
                True,
                warm,
                np.zeros(tr.num_sequences, np.int64),
                1,
            )[0, 0]
            if not np.array_equal(np.asarray(got), np.asarray(ref)):
                raise SystemExit(
                    f"{pol} (warm={warm}): model-level stat differs from the reference"
                )
            done.append(f"{pol} warm={warm}")
    return done


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB on Linux


def run_slice(n_seq: int, quick: bool) -> dict:
    warm_tr = lk.synthetic_trace(2, 300, L, E, K, seed=2)
    for _, _, fn in workloads(warm_tr, True):  # compile every kernel before timing
        fn()
    tr = lk.synthetic_trace(n_seq, SEQ_LEN, L, E, K, seed=1)
    tokens = tr.num_tokens
    rows = []
    for name, level, fn in workloads(tr, quick):
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        rows.append(
            {
                "metric": name,
                "level": level,
                "slice_s": round(dt, 3),
                "act_per_s": tokens * L * K / dt,
                "projected_min": dt * CORPUS_TOKENS / tokens / 60,
            }
        )
        print(
            f"  {name:28s} {level:6s} {dt:8.2f} s  -> {rows[-1]['projected_min']:7.1f} min",
            flush=True,
        )
    return {"slice_sequences": n_seq, "slice_tokens": tokens, "rows": rows}


def write_full(path: Path, n_seq: int, chunk: int = 256) -> float:
    t0 = time.perf_counter()
    with lk.TraceWriter(
        path, num_experts=E, top_k=K, num_layers=L, model="qwen3-30b-a3b-shape (synthetic)"
    ) as w:
        for start in range(0, n_seq, chunk):
            part = lk.synthetic_trace(
                min(chunk, n_seq - start), SEQ_LEN, L, E, K, seed=10_000 + start
            )
            w.write(part)
            print(f"  wrote {start + part.num_sequences:,} / {n_seq:,} sequences", flush=True)
    return time.perf_counter() - t0


def run_full(path: Path, quick: bool, tokens: int = CORPUS_TOKENS, only=None) -> dict:
    n_seq = 8 if quick else -(-tokens // SEQ_LEN)
    write_s = write_full(path, n_seq)
    rows = []
    for name, level, fn in workloads(str(path), quick):
        if only and name.split()[0] not in only:
            continue
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        rows.append(
            {
                "metric": name,
                "level": level,
                "wall_s": round(dt, 1),
                "peak_rss_gib": round(peak_rss_gib(), 2),
            }
        )
        print(f"  {name:28s} {level:6s} {dt:8.1f} s  peak RSS {peak_rss_gib():.2f} GiB", flush=True)
    return {
        "file": str(path),
        "file_bytes": path.stat().st_size,
        "sequences": n_seq,
        "tokens": n_seq * SEQ_LEN,
        "write_s": round(write_s, 1),
        "rows": rows,
        "total_min": sum(r["wall_s"] for r in rows) / 60,
        "peak_rss_gib": round(peak_rss_gib(), 2),
    }


def markdown(doc: dict) -> str:
    out = [
        f"Shape {L} layers x {E} experts, top-{K}, sequences of {SEQ_LEN} tokens; corpus "
        f"{CORPUS_TOKENS / 1e6:.1f}M tokens; {doc['threads']} threads; load average "
        + ", ".join(f"{v:.1f}" for v in doc["loadavg"])
        + ".",
        "",
    ]
    s = doc.get("slice")
    if s:
        out += [
            f"Timed on a slice of {s['slice_sequences']} sequences ({s['slice_tokens']:,} tokens), "
            "projected in proportion to tokens:",
            "",
            "| metric | level | slice | act/s | projected, full corpus |",
            "|---|---|---|---|---|",
        ]
        for r in s["rows"]:
            out.append(
                f"| {r['metric']} | {r['level']} | {r['slice_s']:.2f} s | "
                f"{r['act_per_s'] / 1e6:.2f}M | {r['projected_min']:.1f} min |"
            )
        tot = sum(r["projected_min"] for r in s["rows"])
        shared = sum(
            r["projected_min"]
            for r in s["rows"]
            if r["level"] == "model" and not r["metric"].startswith("srp")
        )
        out += [
            "",
            f"**Projected total: {tot:.1f} min** (shared-cache curves {shared:.1f} min of it).",
            "",
        ]
    f = doc.get("full")
    if f:
        out += [
            f"Full run streamed from a {f['file_bytes'] / 2**30:.2f} GiB trace file "
            f"({f['sequences']:,} sequences, written in {f['write_s']:.0f} s):",
            "",
            "| metric | level | wall | peak RSS so far |",
            "|---|---|---|---|",
        ]
        out += [
            f"| {r['metric']} | {r['level']} | {r['wall_s']:.0f} s | {r['peak_rss_gib']:.2f} GiB |"
            for r in f["rows"]
        ]
        out += [
            "",
            f"**Total {f['total_min']:.1f} min, peak RSS {f['peak_rss_gib']:.2f} GiB.**",
            "",
        ]
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--quick", action="store_true", help="tiny sizes: the script works, timings mean nothing"
    )
    p.add_argument(
        "--slice",
        type=int,
        default=48,
        help="sequences of the timed slice (default 48; 0 skips the slice)",
    )
    p.add_argument(
        "--full",
        action="store_true",
        help="write the full-size trace and run everything streamed from it",
    )
    p.add_argument(
        "--file",
        type=Path,
        default=Path("/tmp/lrc-paper-scale.lrc.arrow"),
        help="trace file of --full",
    )
    p.add_argument(
        "--tokens",
        type=int,
        default=CORPUS_TOKENS,
        help="tokens of the --full trace (default: the paper's corpus, 11.5M); smaller sizes "
        "show how time and peak memory grow with the trace",
    )
    p.add_argument(
        "--metrics",
        default="",
        help="--full only: comma-separated subset of srp,sch,lru,lfu,belady (default: all)",
    )
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "paper.json")
    a = p.parse_args()
    quick = a.quick or os.environ.get("LRC_BENCH_QUICK", "") not in ("", "0", "false", "no")
    doc = {
        "schema": "lrc-bench-paper/1",
        "python": platform.python_version(),
        "checked": check_reference(),
    }
    doc["threads"] = num_threads()
    if a.slice > 0 or quick:
        print(f"slice ({'quick' if quick else a.slice} sequences):", flush=True)
        doc["slice"] = run_slice(2 if quick else a.slice, quick)
    if a.full:
        print(f"full run, file {a.file}:", flush=True)
        try:
            only = set(a.metrics.split(",")) if a.metrics else None
            doc["full"] = run_full(a.file, quick, a.tokens, only)
        finally:
            a.file.unlink(missing_ok=True)
    doc["loadavg"] = list(os.getloadavg())
    text = json.dumps(doc, indent=1)
    if not quick:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text)
        a.out.with_suffix(".md").write_text(markdown(doc))
    print(markdown(doc))
    print(text)


if __name__ == "__main__":
    main()
