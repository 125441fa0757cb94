"""Sharded runs on a Dask LocalCluster against one process, on the same machine (issue #18).

Measures, on one trace split into shard files:

- wall time and activations/s of ``lk.srp`` (layer level, m = 4 16 64 256), ``lk.sch``
  (m = 16) and ``lk.srp`` with a 1000-resample bootstrap: in one process (Numba on 1 and on
  all usable threads) and with ``client=`` on a LocalCluster of 2 single-threaded worker
  processes (each worker's Numba on one thread);
- what stays serial on the client: listing the shard files, merging the partials and
  finishing (best thresholds; the bootstrap's resampled products);
- a study of the same shards (2 models x 2 domains x 4 shards): the first run on the
  cluster, and a resumed run where nothing changed (tables only, and with the report).

Every sharded result is checked bit-identical to the one-process result before any figure
is recorded.

Usage::

    python bench/bench_distributed.py            # full run, JSON on stdout
    python bench/bench_distributed.py --quick    # tiny sizes (timings mean nothing)

Writes ``bench/results/bench_distributed.json`` and ``.md`` unless ``--no-save``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lrc_kernels as lk  # noqa: E402
from lrc_kernels import partial as lp  # noqa: E402
from lrc_kernels.cluster import shard_paths  # noqa: E402
from lrc_kernels.study import run_study  # noqa: E402


def _best(fn, repeats):
    fn()  # warm: JIT, page cache, worker imports
    times = []
    out = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def _same(a, b):
    for f in ("value", "threshold", "rates", "stat"):
        if hasattr(a, f) and not np.array_equal(getattr(a, f), getattr(b, f)):
            raise AssertionError(f"sharded {f} differs from one process")
    if getattr(a, "ci", None) is not None:
        assert np.array_equal(a.ci[0], b.ci[0]) and np.array_equal(a.ci[1], b.ci[1])


def _write_shards(d: Path, quick: bool):
    S, T = (16, 64) if quick else (256, 512)
    L, E, k = (4, 32, 4) if quick else (16, 64, 8)
    tr = lk.synthetic_trace(S, T, L, E, k, stay=0.6, seed=1, domains=["web", "code"])
    n = 16
    per = S // n
    for i in range(n):
        lk.write_trace(
            d / f"part-{i:02d}.lrc.arrow", tr.select(sequences=range(i * per, (i + 1) * per))
        )
    return tr, n


WORK = {
    "srp_layer": lambda src, **kw: lk.srp(src, [4, 16, 64, 256], level="layer", **kw),
    "sch_16": lambda src, **kw: lk.sch(src, 16, **kw),
    "srp_bootstrap_1000": lambda src, **kw: lk.srp(src, [4, 16, 64, 256], bootstrap=1000, **kw),
}


def _serial_split(client, d: Path, repeats: int) -> dict:
    """Client-side serial parts of a sharded bootstrap SRP run."""
    from lrc_kernels.cluster import map_partials

    t_list, paths = _best(lambda: shard_paths(d), repeats)
    kw = {"m": [4, 16, 64, 256], "bootstrap": 1000}
    jobs = [(p, [("srp", kw)]) for p in paths]
    t_map, parts = _best(lambda: [r[0] for r in map_partials(client, jobs)], repeats)
    t_merge, merged = _best(lambda: lp.merge(parts), repeats)
    t_finish, _ = _best(lambda: lp.finish(merged), repeats)
    return {
        "list_files_s": t_list,
        "shard_tasks_s": t_map,
        "merge_s": t_merge,
        "finish_s": t_finish,
        "partial_bytes": sum(len(p.to_bytes()) for p in parts),
    }


def _study(client, d: Path, out: Path) -> dict:
    man = out.parent / "STUDY.toml"
    files = sorted(d.glob("*.arrow"))
    q = len(files) // 4
    groups = [files[i * q : (i + 1) * q] for i in range(4)]
    text = "m = [4, 16, 64]\nsch_m = 16\n"
    for mi, model in enumerate(("a", "b")):
        text += f"[models.{model}]\n"
        for di, dom in enumerate(("web", "code")):
            text += f"{dom} = {json.dumps([str(f) for f in groups[2 * mi + di]])}\n"
    man.write_text(text)
    t0 = time.perf_counter()
    first = run_study(man, out, client=client, report=False)
    t_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    again = run_study(man, out, client=client, report=False)
    t_again = time.perf_counter() - t0
    assert again.computed == 0
    t0 = time.perf_counter()
    run_study(man, out, client=client, report=True)
    t_report = time.perf_counter() - t0
    return {
        "files": len(files),
        "partials": first.computed,
        "first_run_s": t_first,
        "resumed_no_change_s": t_again,
        "resumed_no_change_phases_s": again.seconds,
        "resumed_no_change_with_report_s": t_report,
    }


def run(quick: bool) -> dict:
    import distributed
    import numba

    repeats = 1 if quick else 3
    res: dict = {"quick": quick, "records": []}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "shards"
        d.mkdir()
        tr, n = _write_shards(d, quick)
        acts = tr.num_tokens * tr.num_layers * tr.top_k
        res["workload"] = {
            "sequences": tr.num_sequences,
            "tokens": tr.num_tokens,
            "layers": tr.num_layers,
            "experts": tr.num_experts,
            "top_k": tr.top_k,
            "shards": n,
            "activations": acts,
        }
        one = {}
        cores = numba.config.NUMBA_NUM_THREADS
        for threads in sorted({1, cores}):
            numba.set_num_threads(threads)
            for name, fn in WORK.items():
                t, one[name] = _best(lambda fn=fn: fn(str(d)), repeats)
                res["records"].append(
                    {"run": f"1 process, {threads} thread(s)", "work": name, "seconds": t,
                     "act_per_s": acts / t}
                )  # fmt: skip
        numba.set_num_threads(cores)
        with (
            distributed.LocalCluster(
                n_workers=2,
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",
                env={"NUMBA_NUM_THREADS": "1"},
            ) as cluster,
            distributed.Client(cluster) as client,
        ):
            for name, fn in WORK.items():
                t, got = _best(lambda fn=fn: fn(str(d), client=client), repeats)
                _same(one[name], got)
                res["records"].append(
                    {"run": "LocalCluster, 2 workers x 1 thread", "work": name, "seconds": t,
                     "act_per_s": acts / t}
                )  # fmt: skip
            res["serial"] = _serial_split(client, d, repeats)
            res["study"] = _study(client, d, Path(tmp) / "results")
    res["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_avg_after": os.getloadavg(),
    }
    return res


def markdown(res: dict) -> str:
    w = res["workload"]
    lines = [
        "# Sharded runs (bench_distributed)",
        "",
        f"{w['sequences']} sequences, {w['tokens']:,} tokens, L = {w['layers']}, "
        f"E = {w['experts']}, k = {w['top_k']} ({w['activations']:,} activations) in "
        f"{w['shards']} shard files; load average after the run "
        f"{', '.join(f'{v:.1f}' for v in res['machine']['load_avg_after'])} on "
        f"{res['machine']['cpus']} CPUs.",
        "",
        "| run | work | seconds | activations/s |",
        "|---|---|---|---|",
    ]
    for r in res["records"]:
        lines.append(f"| {r['run']} | {r['work']} | {r['seconds']:.3f} | {r['act_per_s']:.3g} |")
    s = res["serial"]
    lines += [
        "",
        "Serial on the client (bootstrap SRP, 1000 resamples): listing the files "
        f"{s['list_files_s']:.3f} s, the shard tasks {s['shard_tasks_s']:.3f} s (parallel), "
        f"merging {s['merge_s']:.4f} s, finishing {s['finish_s']:.3f} s; partials "
        f"{s['partial_bytes']:,} bytes serialised.",
        "",
    ]
    st = res["study"]
    lines += [
        f"Study of the shards (2 models x 2 domains, {st['files']} files, "
        f"{st['partials']} partials): first run {st['first_run_s']:.2f} s; resumed with "
        f"nothing changed {st['resumed_no_change_s']:.2f} s (tables), "
        f"{st['resumed_no_change_with_report_s']:.2f} s with the HTML report.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-save", action="store_true")
    a = ap.parse_args()
    quick = a.quick or os.environ.get("LRC_BENCH_QUICK", "") not in ("", "0")
    res = run(quick)
    md = markdown(res)
    if not a.no_save:
        out = ROOT / "bench" / "results"
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench_distributed.json").write_text(json.dumps(res, indent=1) + "\n")
        (out / "bench_distributed.md").write_text(md + "\n")
    print(md, file=sys.stderr)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
