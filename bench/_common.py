"""Shared machinery of the benchmark scripts in ``bench/``.

A benchmark script defines ``run(ctx)`` and ends with ``main("bench_name", run)``. ``main``
parses the command line, runs ``run`` once per thread count in a fresh child process (so the
thread count of Numba *and* of the BLAS library is fixed before either is imported), merges
what the children recorded, derives the figures (thread ratios, speed-ups against the
reference, scaling exponents, the issue #2 goals) and writes one JSON file.

Command line of every script built on this module::

    python bench/bench_srp.py [--quick] [--out FILE.json] [--threads 1,2]

``--quick`` (or the environment variable ``LRC_BENCH_QUICK=1``) runs every code path on tiny
sizes with one timed repeat: it checks that the benchmarks still work and that their
correctness checks pass, and its timings mean nothing.

Inside ``run(ctx)``:

- ``ctx.measure(...)`` warms the callable (JIT compilation, caches), times it, and records
  activations per second; ``ctx.check(...)`` records a correctness check (a failed check
  raises, so a wrong kernel can never produce a benchmark figure).
- ``ctx.threads`` is the thread count of this child; ``ctx.primary`` is true in the first
  child only (run the plain-Python reference there, once).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = "lrc-bench/1"
FLAME = ROOT.parent / "shared" / "data" / "flame-moe-290m" / "routing-2048tok.npz"
# environment variables that fix the thread count of every threading layer we may load
THREAD_VARS = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

__all__ = [
    "ROOT",
    "FLAME",
    "Context",
    "BenchCheckError",
    "main",
    "machine_info",
    "digest",
    "fit_exponent",
    "make_trace",
    "flame_trace",
    "quick_from_env",
]


class BenchCheckError(AssertionError):
    """A benchmark's result differs from the reference: no figure is recorded."""


def quick_from_env() -> bool:
    return os.environ.get("LRC_BENCH_QUICK", "") not in ("", "0", "false", "no")


# ---------------------------------------------------------------------- the machine
def _lscpu() -> dict[str, str]:
    try:
        text = subprocess.run(
            ["lscpu"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    out = {}
    for line in text.splitlines():
        if ":" in line:
            key, _, value = line.partition(":")
            out[key.strip()] = value.strip()
    return out


def _mem_total_gib() -> float | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _git_commit() -> str | None:
    try:
        r = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() or None


def _gpu_name() -> str | None:
    try:
        from lrc_kernels import gpu

        if not gpu.is_available():
            return None
        import cupy

        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        name = props.get("name", b"")
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # noqa: BLE001 - any failure means "no usable GPU"
        return None


def machine_info() -> dict[str, Any]:
    """What the figures were measured on: CPU model and cores, memory, software versions."""
    import numba

    import lrc_kernels

    cpu = _lscpu()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count()
    return {
        "cpu_model": cpu.get("Model name") or platform.processor() or "unknown",
        "cpu_vendor": cpu.get("Vendor ID"),
        "hypervisor": cpu.get("Hypervisor vendor"),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "cores_per_socket": cpu.get("Core(s) per socket"),
        "threads_per_core": cpu.get("Thread(s) per core"),
        "memory_gib": _mem_total_gib(),
        "gpu": _gpu_name(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "lrc_kernels": lrc_kernels.__version__,
        "git_commit": _git_commit(),
    }


# ---------------------------------------------------------------------------- helpers
def digest(*arrays: Any) -> str:
    """Short fingerprint of integer tables (to compare results across thread counts)."""
    h = hashlib.sha1()
    for a in arrays:
        a = np.ascontiguousarray(np.asarray(a))
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def fit_exponent(sizes: Sequence[float], seconds: Sequence[float]) -> float | None:
    """Least-squares slope of log(seconds) against log(size): time grows as size**slope."""
    x = np.log(np.asarray(sizes, dtype=np.float64))
    y = np.log(np.asarray(seconds, dtype=np.float64))
    if x.size < 2 or np.ptp(x) == 0 or not np.all(np.isfinite(y)):
        return None
    slope = np.polyfit(x, y, 1)[0]
    return float(slope)


def make_trace(
    num_sequences: int,
    seq_len: int,
    num_layers: int,
    num_experts: int,
    top_k: int,
    *,
    stay: float = 0.5,
    skew: float = 1.0,
    seed: int = 0,
):
    """A synthetic trace with realistic locality (``lrc_kernels.synthetic_trace``)."""
    from lrc_kernels.synthetic import synthetic_trace

    return synthetic_trace(
        num_sequences, seq_len, num_layers, num_experts, top_k, stay=stay, skew=skew, seed=seed
    )


def flame_trace(seq_len: int = 512):
    """The real FLAME-MoE-290M trace (8 layers, E=64, k=6) cut into ``seq_len``-token
    sequences, or None when the shared data is absent. Read in place, never copied."""
    if not FLAME.exists():
        return None
    import lrc_kernels as lk

    with np.load(FLAME) as d:
        x = np.asarray(d["indices"])
    return lk.Trace(x, num_experts=64, meta={"model": "FLAME-MoE-290M"}).split(seq_len)


# ---------------------------------------------------------------------------- context
class Context:
    """Passed to a script's ``run``: records measurements and checks of one child."""

    def __init__(self, quick: bool, threads: int, primary: bool) -> None:
        self.quick = quick
        self.threads = threads
        self.primary = primary
        self.records: list[dict[str, Any]] = []
        self.checks: list[dict[str, Any]] = []
        self.notes: list[str] = []

    # -- sizes ------------------------------------------------------------------
    def pick(self, full: Any, quick: Any) -> Any:
        """``quick`` in quick mode, else ``full``."""
        return quick if self.quick else full

    # -- timing -----------------------------------------------------------------
    def measure(
        self,
        bench: str,
        case: str,
        fn: Callable[[], Any],
        *,
        activations: int,
        backend: str = "cpu",
        params: dict[str, Any] | None = None,
        group: str = "main",
        repeats: int = 5,
        budget_s: float = 3.0,
        warm: bool = True,
        ref: str | None = None,
        sweep: tuple[str, float] | None = None,
        goal: dict[str, Any] | None = None,
        digest_of: Callable[[Any], str] | None = None,
    ) -> Any:
        """Warm ``fn`` up, time it, and record the best and median wall time.

        Parameters
        ----------
        bench, case : str
            What is measured (``bench`` names the kernel, ``case`` the workload).
        fn : callable
            The work, called with no argument; its result is returned.
        activations : int
            Routing decisions (tokens x layers x k) processed by one call.
        backend : str
            ``"cpu"``, ``"reference"``, ``"gpu"``...
        repeats, budget_s : int, float
            Timed calls: at least ``min(repeats, 2)`` and up to ``repeats`` while the time
            spent stays under ``budget_s`` (quick mode: one).
        warm : bool
            Call once untimed first (JIT compilation, caches). The plain reference is not
            warmed: it has nothing to compile and is slow.
        ref : str, optional
            Key of the reference record this one is compared with (speed-up).
        sweep : (name, size), optional
            Member of a size sweep; the scaling exponent is fitted per sweep.
        goal : dict, optional
            ``{"text": ..., "max_seconds": x}`` or ``{"text": ..., "min_rate": x}``.
        digest_of : callable, optional
            Fingerprint of the result (integer tables) to compare across thread counts.
        """
        result = fn() if warm else None
        times: list[float] = []
        n_max = 1 if self.quick else max(int(repeats), 1)
        n_min = 1 if self.quick else min(2, n_max)
        spent = 0.0
        while len(times) < n_max and (len(times) < n_min or spent < budget_s):
            t0 = time.perf_counter()
            result = fn()
            dt = time.perf_counter() - t0
            times.append(dt)
            spent += dt
        best = min(times)
        rec = {
            "key": f"{bench}|{case}|{backend}",
            "bench": bench,
            "case": case,
            "group": group,
            "backend": backend,
            "threads": 1 if backend == "reference" else self.threads,
            "params": params or {},
            "activations": int(activations),
            "seconds": best,
            "median_seconds": float(np.median(times)),
            "repeats": len(times),
            "rate": activations / best if best > 0 else None,
        }
        if ref is not None:
            rec["ref"] = ref
        if sweep is not None:
            rec["sweep"] = sweep[0]
            rec["size"] = float(sweep[1])
        if goal is not None:
            rec["goal"] = goal
        if digest_of is not None:
            rec["digest"] = digest_of(result)
        self.records.append(rec)
        return result

    # -- correctness ------------------------------------------------------------
    def check(self, name: str, ok: bool, detail: str = "") -> None:
        """Record a correctness check; a failure raises :class:`BenchCheckError`."""
        self.checks.append(
            {"name": name, "passed": bool(ok), "detail": detail, "threads": self.threads}
        )
        if not ok:
            raise BenchCheckError(f"{name}: {detail}")

    def check_equal(self, name: str, got: Any, want: Any, *, rtol: float = 0.0) -> None:
        """Integer tables bit-identical (``rtol=0``) or floats within ``rtol`` (NaN == NaN)."""
        g = np.asarray(got)
        w = np.asarray(want)
        if g.shape != w.shape:
            self.check(name, False, f"shape {g.shape} != reference {w.shape}")
            return
        if rtol == 0.0:
            ok = bool(np.array_equal(g, w, equal_nan=g.dtype.kind == "f"))
            detail = "bit-identical" if ok else f"{int((g != w).sum())} entries differ"
        else:
            ok = bool(np.allclose(g, w, rtol=rtol, atol=rtol, equal_nan=True))
            diff = np.nanmax(np.abs(g.astype(np.float64) - w)) if g.size else 0.0
            detail = f"max |diff| = {diff:.3g} (tolerance {rtol:g})"
        self.check(name, ok, f"{detail}; shape {g.shape}")

    def note(self, text: str) -> None:
        self.notes.append(text)


# ----------------------------------------------------------------------- derived figures
def derive(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Thread ratios, speed-ups, scaling exponents and goals from the merged records."""
    by_key: dict[tuple[str, int], dict[str, Any]] = {(r["key"], r["threads"]): r for r in records}
    refs = {r["key"]: r for r in records if r["backend"] == "reference"}

    thread_ratio = []
    keys = sorted({r["key"] for r in records if r["backend"] != "reference"})
    for key in keys:
        counts = sorted(t for (k, t) in by_key if k == key)
        if len(counts) > 1 and counts[0] == 1:
            one = by_key[(key, 1)]
            for t in counts[1:]:
                other = by_key[(key, t)]
                thread_ratio.append(
                    {
                        "key": key,
                        "threads": t,
                        "speedup": one["seconds"] / other["seconds"],
                        "same_result": (
                            one.get("digest") == other.get("digest") if "digest" in one else None
                        ),
                    }
                )

    speedup = []
    for r in records:
        ref = refs.get(r.get("ref", ""))
        if ref is None or not ref.get("rate") or not r.get("rate"):
            continue
        speedup.append(
            {
                "key": r["key"],
                "threads": r["threads"],
                "ref_key": ref["key"],
                "speedup": r["rate"] / ref["rate"],
            }
        )

    scaling = []
    sweeps: dict[tuple[str, str, str, int], list[dict[str, Any]]] = {}
    for r in records:
        if "sweep" in r:
            sweeps.setdefault((r["sweep"], r["bench"], r["backend"], r["threads"]), []).append(r)
    for (name, bench, backend, threads), rs in sorted(sweeps.items()):
        rs = sorted(rs, key=lambda r: r["size"])
        scaling.append(
            {
                "sweep": name,
                "bench": bench,
                "backend": backend,
                "threads": threads,
                "sizes": [r["size"] for r in rs],
                "seconds": [r["seconds"] for r in rs],
                "exponent": fit_exponent([r["size"] for r in rs], [r["seconds"] for r in rs]),
            }
        )

    goals = []
    for r in records:
        g = r.get("goal")
        if not g:
            continue
        if "max_seconds" in g:
            met = r["seconds"] <= g["max_seconds"]
            target = f"<= {g['max_seconds']:g} s"
            measured = f"{r['seconds']:.3g} s"
        else:
            met = (r["rate"] or 0) >= g["min_rate"]
            target = f">= {g['min_rate'] / 1e6:g}M act/s"
            measured = f"{(r['rate'] or 0) / 1e6:.3g}M act/s"
        goals.append(
            {
                "key": r["key"],
                "threads": r["threads"],
                "text": g["text"],
                "target": target,
                "measured": measured,
                "met": bool(met),
                "baseline": g.get("baseline"),
            }
        )
    return {"thread_ratio": thread_ratio, "speedup": speedup, "scaling": scaling, "goals": goals}


# ------------------------------------------------------------------------------ driver
def _child(run: Callable[[Context], None], quick: bool, threads: int, primary: bool) -> dict:
    import numba

    if numba.config.NUMBA_NUM_THREADS >= threads:
        numba.set_num_threads(threads)
    ctx = Context(quick, int(numba.get_num_threads()), primary)
    load0 = _loadavg()
    run(ctx)
    load = {"start": load0, "end": _loadavg()}
    return {"records": ctx.records, "checks": ctx.checks, "notes": ctx.notes, "load": load}


def _loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:  # pragma: no cover - not available
        return None


def _best_over_rounds(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per (key, threads): the fastest round, with the median over all calls."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["key"], r["threads"]), []).append(r)
    out = []
    for (key, threads), rs in groups.items():
        if len({r.get("digest") for r in rs}) > 1:
            raise SystemExit(f"{key} with {threads} thread(s) gave different results across rounds")
        best = dict(min(rs, key=lambda r: r["seconds"]))
        best["rounds"] = len(rs)
        best["median_seconds"] = float(np.median([r["median_seconds"] for r in rs]))
        out.append(best)
    return out


def _spawn(script: Path, quick: bool, threads: int, primary: bool, out: Path) -> dict:
    env = dict(os.environ)
    for var in THREAD_VARS:
        env[var] = str(threads)
    env["LRC_BENCH_QUICK"] = "1" if quick else "0"
    cmd = [sys.executable, str(script), "--child", str(out), "--threads", str(threads)]
    if primary:
        cmd.append("--primary")
    if quick:
        cmd.append("--quick")
    r = subprocess.run(cmd, env=env, cwd=ROOT, check=False)
    if r.returncode != 0:
        raise SystemExit(f"{script.name} with {threads} thread(s) failed (exit {r.returncode})")
    return json.loads(out.read_text())


def main(name: str, run: Callable[[Context], None], description: str = "") -> dict | None:
    """Command-line entry point of a benchmark script (see the module docstring)."""
    p = argparse.ArgumentParser(prog=f"{name}.py", description=description)
    p.add_argument("--quick", action="store_true", help="tiny sizes: check the script works")
    p.add_argument("--out", type=Path, help="JSON output (default: bench/results/NAME.json)")
    p.add_argument(
        "--threads",
        default=None,
        help="thread counts, comma-separated, one child process each (default: 1 and all cores)",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="runs of every thread count, alternating; best time kept (quick mode: 1)",
    )
    p.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--primary", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    quick = a.quick or quick_from_env()

    if a.child is not None:  # one thread count, in this process
        res = _child(run, quick, int(a.threads), a.primary)
        a.child.write_text(json.dumps(res))
        return None

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if a.threads:
        threads = [int(t) for t in a.threads.split(",")]
    else:
        threads = sorted({1, max(int(cores or 1), 1)})
    started = _dt.datetime.now(_dt.timezone.utc)
    t0 = time.perf_counter()
    script = Path(sys.argv[0]).resolve()
    merged: dict[str, list] = {"records": [], "checks": [], "notes": []}
    loads: list[dict[str, Any]] = []
    tmp = ROOT / "bench" / "results" / f".{name}.{os.getpid()}"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    rounds = 1 if quick else max(int(a.rounds), 1)
    try:
        # thread counts alternate over the rounds, so a burst of other work on a shared
        # machine does not bias one thread count; each figure is the best over the rounds
        for rnd in range(rounds):
            for i, t in enumerate(threads):
                part = _spawn(script, quick, t, i == 0 and rnd == 0, tmp.with_suffix(f".{t}.json"))
                for key in merged:
                    merged[key].extend(part[key])
                loads.append({"round": rnd, "threads": t, **part["load"]})
    finally:
        for t in threads:
            tmp.with_suffix(f".{t}.json").unlink(missing_ok=True)
    merged["records"] = _best_over_rounds(merged["records"])
    merged["notes"] = list(dict.fromkeys(merged["notes"]))
    derived = derive(merged["records"])
    for tr in derived["thread_ratio"]:
        if tr["same_result"] is False:
            raise SystemExit(f"{name}: {tr['key']} differs between 1 and {tr['threads']} threads")
    doc = {
        "schema": SCHEMA,
        "script": name,
        "description": description,
        "quick": quick,
        "command": " ".join(["python", f"bench/{name}.py", *sys.argv[1:]]),
        "started_utc": started.isoformat(timespec="seconds"),
        "elapsed_s": round(time.perf_counter() - t0, 2),
        "threads": threads,
        "rounds": rounds,
        "machine": machine_info(),
        "load_average": loads,
        **merged,
        "derived": derived,
    }
    out = a.out or (ROOT / "bench" / "results" / f"{name}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n")
    n_ok = sum(c["passed"] for c in merged["checks"])
    print(
        f"{name}: {len(merged['records'])} measurements, {n_ok}/{len(merged['checks'])} checks "
        f"passed, {doc['elapsed_s']} s -> {out}"
    )
    return doc
