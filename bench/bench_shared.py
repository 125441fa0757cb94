"""Shared cache (model level) against per-layer caches: LRU and SCH, same trace, same run.

The issue #15 workload: ``synthetic_trace(3, 2048, L, E, 8, seed=1)`` (stay 0.5, skew 1)
at 48 x 128 and 58 x 256 experts, top-8. For each policy the shared-cache curve
(``level="model"``, one cache for all L*E ids, the counting engines of
``lrc_kernels/cpu/_stack_lru.py`` and ``_stack_sch.py``) is timed next to the per-layer
curves (``level="layer"``) in the same process, and the ratio shared / per-layer is noted.
Per-layer LRU also uses the counting engine now, so the ratio to the per-layer scan (the
engine before issue #15) is noted too. Every shared-cache table is first checked
bit-identical against the scan engine (``_engine="scan"``), and the small traces against
the plain reference.

Run: ``python bench/bench_shared.py [--quick] [--threads 1,2]`` (see ``bench/README.md``).
"""

from __future__ import annotations

import numpy as np
from _common import Context, digest, main, make_trace

import lrc_kernels as lk
from lrc_kernels import reference
from lrc_kernels.cpu import _stack as cpu_stack

SCH_MS = (4, 16, 64, 256)


def _table(tr, policy, m, model_level, engine=None):
    S = tr.num_sequences
    g = np.arange(S, dtype=np.int64)  # one row per sequence: the strictest comparison
    return cpu_stack.stack_stats_table(
        tr.experts, tr.offsets, tr.num_experts, policy, m, model_level, True, g, S, _engine=engine
    )


def _check_small(ctx: Context) -> None:
    """Counting engines == scan == reference on small ragged traces, warm and cold."""
    for tr in (
        lk.synthetic_trace(5, [40, 25, 3, 48, 0], 3, 12, 3, stay=0.6, seed=12),
        lk.synthetic_trace(3, [17, 1, 9], 2, 4, 4, stay=0.3, seed=13),  # k = E
    ):
        S = tr.num_sequences
        g = np.arange(S, dtype=np.int64)
        for warm in (True, False):
            for policy, model_level, m in [("lru", True, None), ("lru", False, None)] + [
                ("sch", True, m) for m in (1, 3, 50)
            ]:
                args = (tr.experts, tr.offsets, tr.num_experts, policy, m, model_level, warm, g, S)
                want = reference.stack_stats_table(*args)
                name = f"{policy} m={m} model={model_level} warm={warm} (E={tr.num_experts})"
                ctx.check_equal(f"{name}: fast engine", cpu_stack.stack_stats_table(*args), want)
                ctx.check_equal(
                    f"{name}: scan", cpu_stack.stack_stats_table(*args, _engine="scan"), want
                )


def _shape(ctx: Context, L: int, E: int, S: int, T: int) -> None:
    tr = make_trace(S, T, L, E, 8, stay=0.5, skew=1.0, seed=1)
    act = tr.num_activations
    shape = f"{L}x{E}"
    params = {"S": S, "T": T, "L": L, "E": E, "k": 8}
    group = f"shared vs per-layer {shape}"
    cases = [("lru", None)] + [("sch", m) for m in SCH_MS]
    for policy, m in cases:
        tag = policy if m is None else f"{policy} m={m}"
        p = {**params, "policy": policy, **({"m": m} if m else {})}
        if ctx.primary:  # the old engine: exactness oracle (and its speed, one call)
            old = ctx.measure(
                "stack",
                f"{shape} shared {tag} (scan engine)",
                lambda policy=policy, m=m: _table(tr, policy, m, True, "scan"),
                activations=act,
                params={**p, "level": "model", "engine": "scan"},
                group=group,
                warm=False,
                repeats=1,
            )
            new = _table(tr, policy, m, True)
            ctx.check_equal(f"{shape} shared {tag}: counting engine == scan", new, old)
        rates = {}
        for level, engine in (("layer", None), ("model", None), ("layer", "scan")):
            if engine == "scan" and policy != "lru":
                continue  # per-layer SCH already runs the scan
            name = f"{shape} {'shared' if level == 'model' else 'per-layer'} {tag}"
            if engine:
                name += " (scan engine)"
            ctx.measure(
                "stack",
                name,
                lambda policy=policy, m=m, level=level, engine=engine: _table(
                    tr, policy, m, level == "model", engine
                ),
                activations=act,
                params={**p, "level": level, **({"engine": engine} if engine else {})},
                group=group,
                digest_of=digest,
            )
            rates[(level, engine)] = ctx.records[-1]["rate"]
        text = (
            f"{shape} {tag}, {ctx.threads} thread(s): shared {rates[('model', None)] / 1e6:.3g}M "
            f"act/s, per-layer {rates[('layer', None)] / 1e6:.3g}M act/s, "
            f"shared/per-layer = {rates[('model', None)] / rates[('layer', None)]:.2f}"
        )
        if ("layer", "scan") in rates:
            r = rates[("model", None)] / rates[("layer", "scan")]
            text += f" (vs the per-layer scan {rates[('layer', 'scan')] / 1e6:.3g}M: {r:.2f})"
        ctx.note(text)
        print(text, flush=True)


def run(ctx: Context) -> None:
    _check_small(ctx)
    S, T = ctx.pick((3, 2048), (3, 48))
    for L, E in ctx.pick(((48, 128), (58, 256)), ((4, 16),)):
        _shape(ctx, L, E, S, T)
    # thread scaling of every curve: parallel over sequences (and layers, per layer)
    S8, T8, L8, E8 = ctx.pick((8, 768, 48, 128), (4, 24, 4, 16))
    tr = make_trace(S8, T8, L8, E8, 8, stay=0.5, skew=1.0, seed=2)
    long = make_trace(1, S8 * T8, L8, E8, 8, stay=0.5, skew=1.0, seed=2)  # same tokens
    for policy, m in (("lru", None), ("lfu", None), ("belady", None), ("sch", 16)):
        for level in ("layer", "model"):
            for t, what in ((tr, f"{S8} sequences"), (long, "1 long sequence")):
                kind = "shared" if level == "model" else "per-layer"
                ctx.measure(
                    "stack",
                    f"{L8}x{E8} {kind} {policy}{f' m={m}' if m else ''}, {what}",
                    lambda t=t, policy=policy, m=m, level=level: _table(
                        t, policy, m, level == "model"
                    ),
                    activations=t.num_activations,
                    params={
                        "S": t.num_sequences,
                        "T": t.num_tokens // t.num_sequences,
                        "L": L8,
                        "E": E8,
                        "k": 8,
                        "policy": policy,
                        "m": m,
                        "level": level,
                    },
                    group="curves: threads",
                    digest_of=digest,
                )
    ctx.note(
        "Every curve runs in parallel over chunks of sequences, and per-layer curves over "
        "(chunk, layer) units too: with 3 equal sequences two threads can gain at most 1.5x "
        "(the 'threads' group uses 8). One very long sequence is one unit at model level: "
        "its shared curve runs on one thread (2T/1T about 1), while its per-layer curves "
        "still split over the layers."
    )


if __name__ == "__main__":
    main("bench_shared", run, "Shared cache vs per-layer caches (LRU, SCH), issue #15")
