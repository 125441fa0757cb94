"""Benchmark of the GPU backend against the CPU backend, with the results checked.

For each trace size of the sweep (synthetic, fixed seeds, E = 64, k = 6, L = 8, 512-token
sequences: the paper's setting) the script

1. records the launch geometry and scratch memory the CuPy wrapper plans (no GPU needed);
2. if a CUDA device is present, times ``lrc_kernels.gpu`` (device-resident input, first
   call excluded: it compiles/loads the kernels) and the Numba CPU backend, and asserts
   that the integer tables are identical.

Output: ``bench_gpu.json`` (machine-readable) and ``bench_gpu.md`` (a table with the
hardware stated) in ``--out``. ``--quick`` runs one tiny size (CI: never rots).

    python bench/bench_gpu.py --out bench/results
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

import lrc_kernels as lk
from lrc_kernels import gpu
from lrc_kernels.cpu import _srp, _stack
from lrc_kernels.gpu import _plan

E, K, L, T = 64, 6, 8, 512
MS = [1, 16, 64]
CASES = [
    ("srp_layer", dict(kind="srp", per_expert=False)),
    ("srp_expert", dict(kind="srp", per_expert=True)),
    ("sch16_layer", dict(kind="stack", policy="sch", m=16, model_level=False)),
    ("lru_layer", dict(kind="stack", policy="lru", m=None, model_level=False)),
    ("belady_layer", dict(kind="stack", policy="belady", m=None, model_level=False)),
    ("sch16_model", dict(kind="stack", policy="sch", m=16, model_level=True)),
]


def _trace(S: int) -> lk.Trace:
    return lk.synthetic_trace(S, T, L, E, K, stay=0.6, seed=1234)


def _table(backend, x, tr, case):
    group = np.zeros(tr.num_sequences, np.int64)
    if case["kind"] == "srp":
        return backend.window_hist_table(x, tr.offsets, E, MS, group, 1, case["per_expert"])
    return backend.stack_stats_table(
        x, tr.offsets, E, case["policy"], case["m"], case["model_level"], True, group, 1
    )


def _planned(tr, case):
    """Launches the wrapper would make (recorded, not run; numpy stands in for cupy)."""
    seen = []
    group = np.zeros(tr.num_sequences, np.int64)
    if case["kind"] == "srp":
        _plan.window_hist_table(
            tr.experts, tr.offsets, E, MS, group, 1, case["per_expert"], xp=np, launch=seen.append
        )
    else:
        _plan.stack_stats_table(
            tr.experts,
            tr.offsets,
            E,
            case["policy"],
            case["m"],
            case["model_level"],
            True,
            group,
            1,
            xp=np,
            launch=seen.append,
        )
    main = [s for s in seen if "first_duplicate" not in s.name][0]
    scratch = main.args[12 if case["kind"] == "srp" else 11]  # see the kernels' signatures
    return {
        "kernel": main.name,
        "grid": main.grid,
        "block": main.block,
        "scratch_bytes": int(scratch.nbytes),
    }


def _best_of(fn, repeat):
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=[16, 128, 1024],
        help="numbers of 512-token sequences",
    )
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("bench/results"))
    ap.add_argument("--quick", action="store_true", help="one tiny size, checks only")
    args = ap.parse_args()
    sizes = [2] if args.quick else args.sizes
    have_gpu = gpu.is_available()
    rows = []
    for S in sizes:
        tr = _trace(S)
        xd = None
        if have_gpu:
            import cupy as cp

            xd = cp.asarray(tr.experts)
        for name, case in CASES:
            row = {
                "case": name,
                "sequences": S,
                "activations": tr.num_activations,
                **_planned(tr, case),
            }
            cpu = _table(_srp if case["kind"] == "srp" else _stack, tr.experts, tr, case)
            t_cpu = _best_of(
                lambda c=case, t=tr: _table(
                    _srp if c["kind"] == "srp" else _stack, t.experts, t, c
                ),
                1 if args.quick else args.repeat,
            )
            row["cpu_s"] = t_cpu
            if have_gpu:
                got = _table(gpu, xd, tr, case)  # first call: loads the module
                assert np.array_equal(got, cpu), f"GPU != CPU for {name}, S={S}"

                def run(c=case, x=xd, t=tr):
                    _table(gpu, x, t, c)
                    cp.cuda.Device().synchronize()

                row["gpu_s"] = _best_of(run, 1 if args.quick else args.repeat)
                row["gpu_ns_per_activation"] = 1e9 * row["gpu_s"] / tr.num_activations
            rows.append(row)
            print(row)
    hw = {
        "cpu": platform.processor() or platform.machine(),
        "cpu_threads": os.cpu_count(),
        "numba_threads": __import__("numba").get_num_threads(),
        "gpu": None,
    }
    if have_gpu:
        import cupy as cp

        hw["gpu"] = cp.cuda.runtime.getDeviceProperties(0)["name"].decode()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_gpu.json").write_text(json.dumps({"hardware": hw, "rows": rows}, indent=1))
    lines = [
        f"Hardware: CPU {hw['cpu']} ({hw['numba_threads']} Numba threads); GPU {hw['gpu']}",
        "",
        "| case | seqs | activations | kernel | grid x block | scratch MiB | CPU s | GPU s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        gpu_s = f"{r['gpu_s']:.4f}" if "gpu_s" in r else "n/a"
        lines.append(
            f"| {r['case']} | {r['sequences']} | {r['activations']} | {r['kernel']} | "
            f"{r['grid']} x {r['block']} | {r['scratch_bytes'] / 2**20:.1f} | "
            f"{r['cpu_s']:.4f} | {gpu_s} |"
        )
    (args.out / "bench_gpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
