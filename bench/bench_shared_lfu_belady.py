"""Shared-cache LFU and Belady: model-level hit curves against per-layer ones (issue #15).

For 48 layers x 128 experts and 58 x 256, top-8, on ``synthetic_trace(3, 2048, L, E, 8,
seed=1)`` (stay 0.5, skew 1): activations/s of the per-layer curves (the scan) and of the
shared-cache curves (``level="model"``: count classes for LFU, the run-list scan for
Belady), their ratio, and today's linear scan at model level for comparison. The new
engines are first checked bit-identical to the scan (per sequence, warm and cold).

Run: ``NUMBA_NUM_THREADS`` is set per child; ``python bench/bench_shared_lfu_belady.py``
(one and all threads) or ``--threads 1`` (see ``bench/README.md``).
"""

from __future__ import annotations

import numpy as np
from _common import Context, digest, main, make_trace

import lrc_kernels as lk
from lrc_kernels.cpu import _stack as cpu_stack

POLICIES = ("lfu", "belady")


def _table(tr, policy: str, warm: bool, engine: str = "auto"):
    S = tr.num_sequences
    return cpu_stack.stack_stats_table(
        tr.experts, tr.offsets, tr.num_experts, policy, None, True, warm,
        np.arange(S), S, _engine=engine,
    )  # fmt: skip


def _case(L: int, E: int, policy: str, what: str) -> str:
    return f"{L}x{E} top-8 {policy} {what}"


def run(ctx: Context) -> None:
    S, T = ctx.pick((3, 2048), (2, 48))
    for L, E in ctx.pick(((48, 128), (58, 256)), ((9, 256),)):
        tr = make_trace(S, T, L, E, 8, stay=0.5, skew=1.0, seed=1)
        params = {"S": S, "T": T, "L": L, "E": E, "k": 8}
        for policy in POLICIES:
            for warm in (True, False):
                ctx.check_equal(
                    f"{_case(L, E, policy, 'shared')} warm={warm}: new engine vs scan",
                    _table(tr, policy, warm),
                    _table(tr, policy, warm, "scan"),
                )
            for level, what in (("layer", "per-layer"), ("model", "shared")):
                ctx.measure(
                    "shared",
                    _case(L, E, policy, what),
                    lambda tr=tr, policy=policy, level=level: lk.hit_curve(tr, policy, level=level),
                    activations=tr.num_activations,
                    params={**params, "policy": policy, "level": level},
                    group=f"{L}x{E}",
                    repeats=3,
                    digest_of=lambda c: digest(c.stat),
                )
            if ctx.threads == 1:  # today's scan at model level, once (compiled above)
                ctx.measure(
                    "shared",
                    _case(L, E, policy, "shared, old scan"),
                    lambda tr=tr, policy=policy: _table(tr, policy, True, "scan"),
                    activations=tr.num_activations,
                    params={**params, "policy": policy, "level": "model", "engine": "scan"},
                    group=f"{L}x{E}",
                    repeats=1,
                    warm=False,
                )


def ratios(doc: dict) -> list[str]:
    """One line per (shape, policy): shared / per-layer on one thread, 2-thread speed-up."""
    rate = {(r["case"], r["threads"]): r["rate"] for r in doc["records"]}
    speed = {t["key"]: t["speedup"] for t in doc["derived"]["thread_ratio"]}
    lines = []
    for case, t in sorted(rate):
        if t != 1 or not case.endswith(" per-layer"):
            continue
        stem = case[: -len(" per-layer")]
        layer = rate[case, 1]
        shared = rate.get((stem + " shared", 1))
        old = rate.get((stem + " shared, old scan", 1))
        sp = speed.get(f"shared|{stem} shared|cpu")
        lines.append(
            f"{stem}: per-layer {layer / 1e6:.2f} M/s, shared {shared / 1e6:.2f} M/s, "
            f"ratio {shared / layer:.3f}"
            + (f", old shared scan {old / 1e6:.2f} M/s ({shared / old:.1f}x)" if old else "")
            + (f", shared on {max(doc['threads'])} threads {sp:.2f}x" if sp else "")
        )
    return lines


if __name__ == "__main__":
    doc = main(
        "bench_shared_lfu_belady",
        run,
        "shared-cache (model-level) LFU and Belady hit curves against per-layer ones",
    )
    if doc is not None:
        for line in ratios(doc):
            print(line)
