"""Scale-out on a real Dask LocalCluster (2 worker processes) over real Arrow shards:
bit-identical to one process, through faults (a worker killed mid-run, a study process
killed and restarted), and the study's cache (resume, changed files)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

import lrc_kernels as lk  # noqa: E402
from lrc_kernels.cli import main  # noqa: E402
from lrc_kernels.study import load_manifest, run_study, study_specs  # noqa: E402
from lrc_kernels.synthetic import synthetic_trace  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def client():
    with (
        distributed.LocalCluster(
            n_workers=2, processes=True, threads_per_worker=1, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """A trace with three domains, and the same sequences as 6 Arrow shards."""
    d = tmp_path_factory.mktemp("shards")
    lengths = [90, 37, 0, 250, 12, 64, 33, 5, 140, 71, 20, 48]
    tr = synthetic_trace(24, lengths * 2, 3, 32, 4, stay=0.6, seed=1, domains=["a", "b", "c"])
    cuts = [0, 3, 4, 9, 15, 16, 24]
    for i, (lo, hi) in enumerate(zip(cuts[:-1], cuts[1:], strict=True)):
        lk.write_trace(d / f"part-{i}.lrc.arrow", tr.select(sequences=range(lo, hi)))
    return tr, d


def same_srp(a, b):
    for f in ("value", "threshold", "ratio", "windows"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)
    np.testing.assert_array_equal(a.activation_ratio, b.activation_ratio)
    assert a.domains == b.domains
    assert (a.ci is None) == (b.ci is None)
    if a.ci is not None:
        np.testing.assert_array_equal(a.ci[0], b.ci[0])
        np.testing.assert_array_equal(a.ci[1], b.ci[1])


@pytest.mark.parametrize(
    "kw",
    [
        dict(level="model", bootstrap=40, seed=7),
        dict(level="layer", by_domain=True),
        dict(level="expert", by_domain=True, bootstrap=15),
        dict(level="layer", bootstrap=30),
    ],
)
def test_srp_on_cluster_equals_one_process(client, shards, kw):
    tr, d = shards
    same_srp(lk.srp(tr, [3, 17, 64], **kw), lk.srp(d, [3, 17, 64], client=client, **kw))


@pytest.mark.parametrize("level", ["layer", "model"])
def test_curves_on_cluster_equal_one_process(client, shards, level):
    tr, d = shards
    for policy, m in (("lru", None), ("lfu", None), ("belady", None), ("sch", [2, 9])):
        a = lk.hit_curve(tr, policy, m, level=level, by_domain=True)
        b = lk.hit_curve(d, policy, m, level=level, by_domain=True, client=client)
        np.testing.assert_array_equal(a.rates, b.rates)
        np.testing.assert_array_equal(a.stat, b.stat)
        np.testing.assert_array_equal(a.sequences, b.sequences)
    a, b = lk.sch(tr, 5, level=level), lk.sch(d, 5, level=level, client=client)
    np.testing.assert_array_equal(a.rates, b.rates)


def test_cluster_curves_keep_size_grids(client, shards):
    """sizes=/rho= and the per-size policies (with their parameters) run on a cluster,
    bit-identical to one process."""
    tr, d = shards
    a = lk.hit_curve(tr, "lru", level="model", rho=[1, 2])
    b = lk.hit_curve(d, "lru", level="model", rho=[1, 2], client=client)
    np.testing.assert_array_equal(a.sizes, b.sizes)
    np.testing.assert_array_equal(a.rates, b.rates)
    assert b.rates.shape == (2,)
    for policy, kw in (
        ("fifo", dict(level="layer")),
        ("lfu-decay", dict(level="layer", decay=0.8, sizes=[1, 4, 32])),
        ("s3fifo", dict(level="model", rho=[1, 2, 4])),
        ("static-prefix", dict(level="model", sizes=[8, 40], prefix=7, warm_start=False)),
    ):
        a = lk.hit_curve(tr, policy, by_domain=True, **kw)
        b = lk.hit_curve(d, policy, by_domain=True, client=client, **kw)
        for f in ("rates", "sizes", "hits", "accesses", "sequences"):
            np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f"{policy} {f}")
        assert a.params == b.params and a.domains == b.domains


def test_progress_follows_the_futures(client, shards):
    tr, d = shards
    seen = []
    lk.srp(d, 4, client=client, progress=seen.append)
    assert len(seen) == 6 and sum(p.num_tokens for p in seen) == tr.num_tokens


def test_client_needs_trace_files(client, shards):
    tr, _ = shards
    with pytest.raises(TypeError, match="client= computes over trace files"):
        lk.srp(tr, 4, client=client)


def test_cli_scheduler(client, shards, capsys):
    _, d = shards
    args = ["srp", str(d), "--m", "4", "16", "--by-domain", "--bootstrap", "20", "--json"]
    assert main(args) == 0
    alone = json.loads(capsys.readouterr().out)
    assert main([*args, "--scheduler", client.scheduler.address]) == 0
    assert json.loads(capsys.readouterr().out) == alone
    args = ["curves", str(d), "--policy", "lru", "pinned-lru", "--pinned", "0.25", "--json"]
    assert main([*args, "--level", "model"]) == 0
    alone = json.loads(capsys.readouterr().out)
    assert main([*args, "--level", "model", "--scheduler", client.scheduler.address]) == 0
    assert json.loads(capsys.readouterr().out) == alone
    assert main(["sch", str(d), "--m", "4", "--json", "--scheduler", "local:x"]) == 1
    assert "local:N" in capsys.readouterr().err


@pytest.mark.slow  # starts a LocalCluster of its own (about 8 s on 2 loaded cores)
def test_cli_local_cluster(shards, capsys):
    """--scheduler local:1 starts a LocalCluster of its own, and closes it at the end."""
    _, d = shards
    args = ["sch", str(d), "--m", "4", "--by-domain", "--json"]
    assert main(args) == 0
    alone = json.loads(capsys.readouterr().out)
    assert main([*args, "--scheduler", "local:1"]) == 0
    assert json.loads(capsys.readouterr().out) == alone


# ------------------------------------------------------------------------ studies
def _write_study(root: Path, bootstrap: int = 20) -> Path:
    """2 models x 2 domains x 4 shards = 16 trace files, and their manifest."""
    for mi, (model, E, L, k) in enumerate([("alpha", 16, 3, 2), ("beta", 24, 2, 3)]):
        (root / model).mkdir(parents=True, exist_ok=True)
        for di, dom in enumerate(["code", "math"]):
            tr = synthetic_trace(8, [40, 13, 70, 25] * 2, L, E, k, stay=0.4 + 0.2 * di, seed=mi)
            for s in range(4):
                path = root / model / f"{dom}-{s}.lrc.arrow"
                lk.write_trace(path, tr.select(sequences=range(2 * s, 2 * s + 2)))
    manifest = root / "STUDY.toml"
    manifest.write_text(
        'title = "two models"\nm = [2, 4, 8]\nsch_m = 4\nrho = [1, 2]\n'
        f"bootstrap = {bootstrap}\n"
        '[models.alpha]\ncode = "alpha/code-*.lrc.arrow"\nmath = "alpha/math-*.lrc.arrow"\n'
        '[models.beta]\ncode = "beta/code-*.lrc.arrow"\nmath = ["beta/math-*.lrc.arrow"]\n'
    )
    return manifest


def _tables(out: Path) -> dict:
    import pyarrow.parquet as pq

    return {n: pq.read_table(out / f"{n}.parquet") for n in ("srp", "curves", "summary", "domains")}


def _same_tables(a: Path, b: Path) -> None:
    ta, tb = _tables(a), _tables(b)
    for name in ta:
        assert ta[name].equals(tb[name]), name


# killed by SIGKILL when about to store its KILL_AT-th partial: a deterministic point
# in the middle of the run
_KILLED_STUDY = """
import os, signal, sys
import lrc_kernels.partial as lp
from lrc_kernels.cli import main
saved = [0]
real_save = lp.Partial.save
def save(self, path):
    if saved[0] == int(os.environ["KILL_AT"]):
        os.kill(os.getpid(), signal.SIGKILL)
    saved[0] += 1
    real_save(self, path)
lp.Partial.save = save
sys.exit(main(sys.argv[1:]))
"""


def test_study_killed_and_resumed(client, tmp_path):
    manifest = _write_study(tmp_path / "traces")
    man = load_manifest(manifest)
    total = len(man.files) * len(study_specs(man))
    assert len(man.files) == 16 and total == 16 * 8
    out = tmp_path / "results"
    env = dict(os.environ, KILL_AT="50", PYTHONPATH=os.pathsep.join([str(ROOT), *sys.path]))
    args = ["study", str(manifest), "--out", str(out), "--no-report", "-q"]
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED_STUDY, *args, "--scheduler", client.scheduler.address],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    cached = list((out / "cache" / "partials").iterdir())
    assert len(cached) == 50 and all(p.suffix == ".npz" for p in cached)  # no torn file
    assert not (out / "summary.parquet").exists()

    resumed = run_study(manifest, out, client=client, report=True)
    assert (resumed.computed, resumed.reused) == (total - 50, 50)
    page = (out / "index.html").read_text()
    assert page.count("alpha") > 1 and "models compared" in page  # the cross-model figure
    assert (out / "models.png").stat().st_size > 1000

    fresh = run_study(manifest, tmp_path / "fresh", report=False)  # one process, no cluster
    assert (fresh.computed, fresh.reused) == (total, 0)
    _same_tables(out, tmp_path / "fresh")

    # the study's numbers are those of one pass over each model's files
    summary = {r["model"]: r for r in json.loads((out / "summary.json").read_text())}
    files = [f for fs in man.models["beta"].values() for f in fs]
    assert summary["beta"]["srp"] == float(lk.srp(files, 4).value)
    assert summary["beta"]["sch_rho2"] == float(np.mean(lk.sch(files, 4).at(2)))
    assert summary["beta"]["lru_rho2"] == float(np.mean(lk.hit_curve(files, "lru").at(2)))

    t0 = time.perf_counter()
    again = run_study(manifest, out, client=client, report=False)
    print(f"resumed no-change study: {time.perf_counter() - t0:.2f} s {again.seconds}")
    assert (again.computed, again.reused) == (0, total)
    _same_tables(out, tmp_path / "fresh")


def test_changed_file_gets_new_partials(tmp_path):
    manifest = _write_study(tmp_path / "traces", bootstrap=0)
    man = load_manifest(manifest)
    n_specs = len(study_specs(man))
    out = tmp_path / "results"
    first = run_study(manifest, out, report=False)
    before = json.loads((out / "summary.json").read_text())
    shard = Path(man.models["alpha"]["math"][1])
    lk.write_trace(shard, synthetic_trace(2, [50, 9], 3, 16, 2, stay=0.9, seed=99))
    second = run_study(manifest, out, report=False)
    assert (second.computed, second.reused) == (n_specs, first.computed - n_specs)
    after = json.loads((out / "summary.json").read_text())
    assert after[0] != before[0] and after[1] == before[1]  # alpha changed, beta did not
    files = [f for fs in man.models["alpha"].values() for f in fs]
    assert after[0]["srp"] == float(lk.srp(files, 4).value)


def test_manifest_errors(tmp_path):
    bad = tmp_path / "S.toml"
    bad.write_text('[models.a]\ncode = "nothing-*.arrow"\n')
    with pytest.raises(ValueError, match="matches no trace file"):
        load_manifest(bad)
    bad.write_text('colour = 1\n[models.a]\ncode = "x"\n')
    with pytest.raises(ValueError, match="unknown key 'colour'"):
        load_manifest(bad)
    bad.write_text("m = [0]\n")
    with pytest.raises(ValueError, match="models"):
        load_manifest(bad)
    bad.write_text("m = = 1\n")
    with pytest.raises(ValueError, match="not valid TOML"):
        load_manifest(bad)


# ---------------------------------------------------------------- a worker dies
def test_worker_killed_mid_run(client, tmp_path):
    """SIGKILL a worker while it holds tasks: Dask reschedules them, the nanny restarts the
    worker, and the numbers are those of one process."""
    tr = synthetic_trace(48, [300, 120, 41, 260] * 12, 4, 32, 4, stay=0.5, seed=3)
    for i in range(16):
        lk.write_trace(
            tmp_path / f"p{i:02d}.lrc.arrow", tr.select(sequences=range(3 * i, 3 * i + 3))
        )
    kw = dict(level="layer", bootstrap=50)
    want = lk.srp(tr, [4, 16], **kw)
    pids = client.run(os.getpid)
    got: dict = {}
    run = threading.Thread(
        target=lambda: got.update(r=lk.srp(tmp_path, [4, 16], client=client, **kw)),
        daemon=True,
    )
    run.start()
    victim = None
    deadline = time.monotonic() + 60
    while victim is None and time.monotonic() < deadline and run.is_alive():
        busy = {w: ks for w, ks in client.processing().items() if ks}
        if busy:
            victim = next(iter(busy))
            os.kill(pids[victim], signal.SIGKILL)
        else:
            time.sleep(0.005)
    run.join(120)
    assert not run.is_alive(), "the sharded run did not finish within 120 s of the kill"
    assert victim is not None, "the run ended before a worker could be killed"
    same_srp(want, got["r"])
    client.wait_for_workers(2, timeout=60)
    assert victim not in client.scheduler_info()["workers"]  # a new worker took its place


# ---------------------------------------------------------------- a task fails once
# run on every worker (exec'd there, so nothing of this module needs pickling): the first
# task to start, on whichever worker, raises; every later attempt computes. A file created
# with O_EXCL decides which attempt is the first across the worker processes.
_FLAKY = """
import os
import lrc_kernels.partial as lp

real = getattr(lp.compute, "real", lp.compute)

def flaky(trace, kind, kwargs):
    try:
        os.close(os.open(MARKER, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        with open(LOG, "a") as f:
            f.write(f"ok {trace}\\n")
        return real(trace, kind, kwargs)
    with open(LOG, "a") as f:
        f.write(f"fail {trace}\\n")
    raise OSError("injected failure of a task's first attempt")

flaky.real = real
lp.compute = flaky
"""
_UNFLAKY = """
import lrc_kernels.partial as lp
lp.compute = getattr(lp.compute, "real", lp.compute)
"""


def test_failed_task_is_retried(client, shards, tmp_path):
    """A task that raises on its first attempt is retried and the run ends with the
    numbers of one process; without retries the same failure reaches the caller."""
    from lrc_kernels import cluster

    tr, d = shards
    log = tmp_path / "attempts.log"

    def arm(name):
        marker = tmp_path / name
        client.run(exec, _FLAKY, {"MARKER": str(marker), "LOG": str(log)})

    kw = dict(level="layer", by_domain=True, bootstrap=20, seed=5)
    try:
        arm("first-attempt")
        got = lk.srp(d, [4, 16], client=client, **kw)
        lines = log.read_text().split("\n")[:-1]
        failed = [ln.split(" ", 1)[1] for ln in lines if ln.startswith("fail ")]
        done = sorted(ln.split(" ", 1)[1] for ln in lines if ln.startswith("ok "))
        assert len(failed) == 1 and failed[0] in done  # one failure, then its retry
        assert done == sorted(cluster.shard_paths(d))  # every shard computed exactly once
        same_srp(lk.srp(tr, [4, 16], **kw), got)

        arm("first-attempt-again")  # a fresh marker: the next first attempt fails
        jobs = [(p, [("srp", dict(m=4))]) for p in cluster.shard_paths(d)]
        with pytest.raises(OSError, match="injected failure of a task's first attempt"):
            cluster.map_partials(client, jobs, retries=0)
    finally:
        client.run(exec, _UNFLAKY, {})
