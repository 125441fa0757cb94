"""``lrc plan`` and ``lrc replay`` (issue #17)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import lrc_kernels as lk
from lrc_kernels import cli


def run_main(capsys, *args):
    rc = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def trace_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("plan")
    tr = lk.synthetic_trace(3, [50, 40, 30], 3, 8, 2, stay=0.6, seed=4)
    path = d / "toy.lrc.arrow"
    lk.write_trace(path, tr)
    cfg = d / "config.json"
    cfg.write_text(json.dumps({
        "model_type": "qwen3_moe", "hidden_size": 64, "moe_intermediate_size": 32,
        "num_hidden_layers": 3, "num_experts": 8, "num_experts_per_tok": 2,
    }))  # fmt: skip
    return tr, path, cfg


def test_plan_json_matches_the_api(capsys, trace_file):
    tr, path, cfg = trace_file
    eb = 3 * 64 * 32 * 2
    gib = 5 * eb / 2**30  # five slots
    rc, out, _ = run_main(
        capsys, "plan", path, "--config", cfg, "--budget-gib", gib, "--link-gbps", "2",
        "--base-ms", "1", "--target-tps", "300", "--policy", "lru", "lfu", "--json",
    )  # fmt: skip
    assert rc == 0
    rows = json.loads(out)
    budget = [r for r in rows if r["kind"] == "budget"]
    assert {(r["policy"], r["option"]) for r in budget} == {
        (p, o) for p in ("lru", "lfu") for o in ("uniform", "optimal", "shared")
    }
    for r in budget:
        plan = lk.plan_budget(tr, 5, r["policy"])
        h = {"optimal": plan.hit_rate, "uniform": plan.uniform_hit_rate,
             "shared": plan.shared_hit_rate}[r["option"]]  # fmt: skip
        assert r["slots"] == 5 and r["hit_rate"] == pytest.approx(h, abs=1e-12)
        want = lk.predict_decode(h, num_layers=3, top_k=2, expert_bytes=eb, link_gbps=2, base_ms=1)
        assert r["tokens_per_s"] == pytest.approx(want)
        assert r["bytes_per_token"] == pytest.approx((1 - h) * 3 * 2 * eb)
    targets = [r for r in rows if r["kind"] == "target"]
    assert len(targets) == 6 and all(r["target_tps"] == 300 for r in targets)


def test_plan_per_size_policies_and_their_parameters(capsys, trace_file):
    """Every policy of hit_curve plans from the CLI; a parameter reaches its own policy only."""
    tr, path, _ = trace_file
    eb = 4096
    rc, out, _ = run_main(
        capsys, "plan", path, "--expert-bytes", eb, "--budget-gib", 7 * eb / 2**30,
        "--link-gbps", "2", "--policy", "fifo", "pinned-lru", "lfu-decay", "--pinned", "0.25",
        "--decay", "0.5", "--json",
    )  # fmt: skip
    assert rc == 0
    rows = [r for r in json.loads(out) if r["kind"] == "budget"]
    cases = (("fifo", {}), ("pinned-lru", {"pinned": 0.25}), ("lfu-decay", {"decay": 0.5}))
    for policy, kw in cases:
        plan = lk.plan_budget(tr, 7, policy, **kw)
        got = {r["option"]: r["hit_rate"] for r in rows if r["policy"] == policy}
        assert got == pytest.approx(
            {"optimal": plan.hit_rate, "uniform": plan.uniform_hit_rate,
             "shared": plan.shared_hit_rate}, abs=1e-12
        )  # fmt: skip
    rc, _, err = run_main(
        capsys, "plan", path, "--expert-bytes", eb, "--budget-gib", 1, "--link-gbps", 1,
        "--policy", "lru", "--window", 4,
    )  # fmt: skip
    assert rc != 0 and "--window applies to --policy lfu-window" in err


def test_plan_table_and_calibration(capsys, trace_file):
    _, path, _ = trace_file
    rc, out, _ = run_main(
        capsys, "plan", path, "--expert-bytes", 4096, "--budget-gib", 0, 0.00002,
        "--calibrate", "0.2:50", "0.9:200", "--policy", "lru", "--no-shared",
    )  # fmt: skip
    assert rc == 0 and "placement" in out and "fitted to --calibrate" in out
    assert "shared" not in out.split("(expert")[0]


@pytest.mark.parametrize(
    ("extra", "msg"),
    [
        ((), "needs one of --config"),
        (("--expert-bytes", 10, "--config", "x.json"), "needs one of --config"),
        (("--expert-bytes", 10), "needs one of --link-gbps"),
        (("--expert-bytes", 10, "--link-gbps", 1, "--calibrate", "0.1:1", "0.5:2"), "needs one"),
        (("--config", "missing.json", "--link-gbps", 1), "no config.json"),
    ],
)
def test_plan_errors(capsys, trace_file, extra, msg):
    _, path, _ = trace_file
    rc, _, err = run_main(capsys, "plan", path, "--budget-gib", 1, *extra)
    assert rc != 0 and msg in err


def test_plan_refuses_a_config_of_another_shape(capsys, trace_file, tmp_path):
    _, path, _ = trace_file
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({
        "model_type": "mixtral", "hidden_size": 64, "intermediate_size": 32,
        "num_hidden_layers": 3, "num_local_experts": 16, "num_experts_per_tok": 2,
    }))  # fmt: skip
    rc, _, err = run_main(capsys, "plan", path, "--budget-gib", 1, "--config", cfg,
                          "--link-gbps", 1)  # fmt: skip
    assert rc != 0 and "trace and config differ" in err


def test_replay_cli_is_exact(capsys, trace_file):
    pytest.importorskip("torch")
    tr, path, _ = trace_file
    rc, out, _ = run_main(
        capsys, "replay", path, "--budget", 7, "--policy", "lru", "lfu",
        "--placement", "optimal", "uniform", "shared", "--expert-bytes", 64, "--slow", "host",
        "--json",
    )  # fmt: skip
    assert rc == 0
    rows = json.loads(out)
    assert len(rows) == 6 and all(r["exact"] for r in rows)
    lru = next(r for r in rows if r["policy"] == "lru" and r["placement"] == "optimal")
    assert lru["misses"] == int(lk.plan_budget(tr, 7, "lru").misses.sum())
    assert lru["bytes_moved"] == lru["misses"] * 64
    rc, out, _ = run_main(capsys, "replay", path, "--budget", 3, "--expert-bytes", 64)
    assert rc == 0 and "yes" in out and "NO" not in out
    assert np.isfinite(float(out.split("\n")[2].split()[-1]))
