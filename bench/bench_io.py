"""Trace file benchmark: size, throughput, and streaming metrics in bounded memory.

Measures
- bytes per routing decision (activation) of id-only files: the sample traces in
  ``traces/``, the real FLAME-MoE trace in ``../shared/data`` (when present), and the big
  generated trace;
- write and read throughput in activations/s (read = decode, checksum and validate);
- streaming ``lrc_kernels.srp(path)`` and ``lrc_kernels.sch(path)`` on a generated trace
  larger than 2 GB uncompressed, written by a streaming TraceWriter (never held whole in
  memory), each in a fresh process whose peak RSS is recorded;
- exactness: the streamed results equal the in-memory results bit for bit, on a small
  trace always and on the big trace itself with ``--full-check`` (needs RAM for it).

Usage::

    python bench/bench_io.py                      # full run (> 2 GB trace), JSON to stdout
    python bench/bench_io.py --gb 0.05 --quick    # CI smoke run (small; no timing claims)

Writes ``bench/results/bench_io.json`` and ``bench/results/bench_io.md`` unless ``--no-save``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lrc_kernels as lk  # noqa: E402
from lrc_kernels.io import TraceWriter, iter_trace_batches, write_trace  # noqa: E402

FLAME = ROOT.parent / "shared" / "data" / "flame-moe-290m" / "routing-2048tok.npz"
SHAPE = {"num_layers": 16, "num_experts": 64, "top_k": 8, "seq_len": 512}
MS = [1, 4, 16, 64]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ------------------------------------------------------------------ child stages
def _summary_srp(r) -> dict:
    return {
        "value": np.asarray(r.value).tolist(),
        "threshold": np.asarray(r.threshold).tolist(),
        "ratio": np.asarray(r.ratio).tolist(),
    }


def _summary_curve(r) -> dict:
    return {"stat": np.asarray(r.stat).tolist(), "rates": np.asarray(r.rates).tolist()}


def stage(name: str, path: str, out: str) -> None:
    """Run one measured stage in this (fresh) process and write a JSON result."""
    warm = lk.synthetic_trace(2, 64, 2, 8, 2, seed=0)  # compile kernels before timing
    lk.srp(warm, MS, level="layer")
    lk.sch(warm, 16, level="layer")
    list(iter_trace_batches(_tiny_file(warm)))
    base = peak_rss_mb()
    t0 = time.perf_counter()
    res: dict = {}
    if name == "read":
        acts = 0
        for b in iter_trace_batches(path):
            acts += b.num_activations
        res["activations"] = acts
    elif name == "srp_stream":
        res["result"] = _summary_srp(lk.srp(path, MS, level="layer"))
    elif name == "sch_stream":
        res["result"] = _summary_curve(lk.sch(path, 16, level="layer"))
    elif name == "srp_memory":
        tr = lk.read_trace(path, weights=False)
        t0 = time.perf_counter()
        res["result"] = _summary_srp(lk.srp(tr, MS, level="layer"))
    elif name == "sch_memory":
        tr = lk.read_trace(path, weights=False)
        t0 = time.perf_counter()
        res["result"] = _summary_curve(lk.sch(tr, 16, level="layer"))
    else:
        raise SystemExit(f"unknown stage {name}")
    res["seconds"] = time.perf_counter() - t0
    res["peak_rss_mb"] = peak_rss_mb()
    res["rss_before_mb"] = base
    Path(out).write_text(json.dumps(res))


def _tiny_file(tr) -> str:
    p = Path(tempfile.gettempdir()) / f"lrc-bench-warm-{os.getpid()}.lrc.arrow"
    write_trace(p, tr)
    return str(p)


def run_stage(name: str, path: Path, tmp: Path) -> dict:
    out = tmp / f"{name}.json"
    cmd = [sys.executable, __file__, "--stage", name, "--path", str(path), "--out", str(out)]
    subprocess.run(cmd, check=True)
    return json.loads(out.read_text())


# ---------------------------------------------------------------------- main run
def write_big(path: Path, target_bytes: float, chunk_sequences: int) -> dict:
    """Generate and stream-write a trace of about ``target_bytes`` uint8 ids."""
    L, E, k, T = (SHAPE[x] for x in ("num_layers", "num_experts", "top_k", "seq_len"))
    per_seq = T * L * k
    n_seq = int(np.ceil(target_bytes / per_seq))
    gen_s = write_s = 0.0
    done = 0
    with TraceWriter(
        path, num_experts=E, top_k=k, num_layers=L, model="synthetic", meta={"bench": True}
    ) as w:
        chunk = 0
        while done < n_seq:
            n = min(chunk_sequences, n_seq - done)
            t = time.perf_counter()
            tr = lk.synthetic_trace(
                n, T, L, E, k, stay=0.6, skew=1.0, seed=chunk, domains=["web", "code"]
            )
            gen_s += time.perf_counter() - t
            t = time.perf_counter()
            w.write(tr)
            write_s += time.perf_counter() - t
            done += n
            chunk += 1
            del tr
    acts = n_seq * per_seq
    return {
        "sequences": n_seq,
        "activations": acts,
        "uncompressed_id_bytes": acts,  # uint8 ids
        "file_bytes": path.stat().st_size,
        "bytes_per_activation": path.stat().st_size / acts,
        "generate_seconds": gen_s,
        "write_seconds": write_s,
        "write_activations_per_s": acts / write_s,
        "writer_peak_rss_mb": peak_rss_mb(),
    }


def bytes_per_activation(tmp: Path) -> dict:
    out = {}
    for p in sorted((ROOT / "traces").glob("*.arrow")):
        r = lk.TraceReader(p)
        out[p.name] = p.stat().st_size / r.num_activations
    if FLAME.exists():
        from lrc_kernels.convert import from_npz

        tr = from_npz(FLAME, num_experts=64, weights=False).split(512)
        f = tmp / "flame.lrc.arrow"
        write_trace(f, tr)
        out["flame-moe-290m (ids only)"] = f.stat().st_size / tr.num_activations
    return out


def small_exactness(tmp: Path) -> bool:
    tr = lk.synthetic_trace(64, 300, 4, 32, 4, stay=0.7, seed=9, domains=["a", "b"])
    p = tmp / "small.lrc.arrow"
    write_trace(p, tr, batch_tokens=1000)
    ok = True
    for level in ("layer", "model", "expert"):
        a, b = lk.srp(tr, MS, level=level), lk.srp(p, MS, level=level)
        ok &= np.array_equal(a.value, b.value) and np.array_equal(a.threshold, b.threshold)
    for level in ("layer", "model"):
        a, b = lk.sch(tr, 16, level=level), lk.sch(p, 16, level=level)
        ok &= np.array_equal(a.stat, b.stat) and np.array_equal(a.rates, b.rates)
    return bool(ok)


def markdown(res: dict) -> str:
    big = res["big_trace"]
    lines = [
        "# bench_io",
        "",
        f"Machine: {res['machine']}",
        "",
        f"Big trace: {big['sequences']:,} sequences x {SHAPE['seq_len']} tokens, "
        f"L={SHAPE['num_layers']}, E={SHAPE['num_experts']}, k={SHAPE['top_k']}: "
        f"{big['uncompressed_id_bytes'] / 1e9:.2f} GB of ids uncompressed, "
        f"{big['file_bytes'] / 1e9:.2f} GB on disk.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| write throughput | {big['write_activations_per_s'] / 1e6:.0f} M activations/s |",
        f"| read throughput (decode + checks) | {res['read']['activations_per_s'] / 1e6:.0f}"
        " M activations/s |",
        f"| srp(path) streaming: time, peak RSS | {res['srp_stream']['seconds']:.1f} s, "
        f"{res['srp_stream']['peak_rss_mb']:.0f} MB |",
        f"| sch(path) streaming: time, peak RSS | {res['sch_stream']['seconds']:.1f} s, "
        f"{res['sch_stream']['peak_rss_mb']:.0f} MB |",
        f"| writer peak RSS | {big['writer_peak_rss_mb']:.0f} MB |",
        f"| streamed == in-memory (small trace) | {res['exact_small']} |",
        f"| streamed == in-memory (big trace) | {res.get('exact_big', 'not run')} |",
        "",
        "Bytes per activation (whole file, ids only):",
        "",
        "| trace | bytes / activation |",
        "|---|---|",
    ]
    for name, v in res["bytes_per_activation"].items():
        lines.append(f"| {name} | {v:.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gb", type=float, default=2.2, help="uncompressed id GB to generate")
    ap.add_argument("--chunk", type=int, default=1024, help="sequences generated at once")
    ap.add_argument("--full-check", action="store_true", help="also compare on the big trace")
    ap.add_argument("--quick", action="store_true", help="smoke run: skip the RSS assertion")
    ap.add_argument("--no-save", action="store_true")
    ap.add_argument("--dir", default=None, help="scratch directory (default: a temp dir)")
    ap.add_argument("--stage", help=argparse.SUPPRESS)
    ap.add_argument("--path", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if os.environ.get("LRC_BENCH_QUICK", "") not in ("", "0", "false", "no"):  # run.py --quick
        args.quick = True
        args.gb = min(args.gb, 0.05)
    if args.stage:
        stage(args.stage, args.path, args.out)
        return

    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        tmp = Path(d)
        big = tmp / "big.lrc.arrow"
        res: dict = {
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
            f"Python {platform.python_version()}, numpy {np.__version__}",
            "shape": SHAPE,
            "ms": MS,
        }
        res["exact_small"] = small_exactness(tmp)
        res["big_trace"] = write_big(big, args.gb * 1e9, args.chunk)
        read = run_stage("read", big, tmp)
        read["activations_per_s"] = read["activations"] / read["seconds"]
        res["read"] = read
        res["srp_stream"] = run_stage("srp_stream", big, tmp)
        res["sch_stream"] = run_stage("sch_stream", big, tmp)
        if args.full_check:
            sm = run_stage("srp_memory", big, tmp)
            cm = run_stage("sch_memory", big, tmp)
            res["srp_memory"] = {k: v for k, v in sm.items() if k != "result"}
            res["sch_memory"] = {k: v for k, v in cm.items() if k != "result"}
            res["exact_big"] = (
                sm["result"] == res["srp_stream"]["result"]
                and cm["result"] == res["sch_stream"]["result"]
            )
        for key in ("srp_stream", "sch_stream"):
            res[key]["result_crc32"] = zlib.crc32(json.dumps(res[key].pop("result")).encode())
        res["bytes_per_activation"] = bytes_per_activation(tmp)

    assert res["exact_small"], "streamed results differ from the in-memory ones"
    if "exact_big" in res:
        assert res["exact_big"], "streamed results differ from in-memory ones on the big trace"
    if not args.quick:
        for key in ("srp_stream", "sch_stream", "read"):
            assert res[key]["peak_rss_mb"] < 1024, f"{key} peak RSS over 1 GB"
    print(json.dumps(res, indent=2))
    if not args.no_save:
        out = ROOT / "bench" / "results"
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench_io.json").write_text(json.dumps(res, indent=2) + "\n")
        (out / "bench_io.md").write_text(markdown(res))


if __name__ == "__main__":
    main()
