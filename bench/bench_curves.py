"""Every cache curve: per-layer curves at large E, and the 2-thread speed-up of each curve.

Two sections (issue #15, items 2 and 3):

- **per-layer at large E**: per-layer hit curves (``level="layer"``) of SCH (m = 16), LRU,
  LFU and Belady at E = 128, 256 and 512 experts, top-8, 8 layers, on
  ``synthetic_trace(16, 2048, 8, E, 8, seed=3)``. Shows which engine
  ``lrc_kernels.cpu._stack._pick_engine`` gives each case (LRU: the counting engine;
  the others: the scan below E = 2048 / 4096) and its activations/s.
- **every curve: threads**: SCH (m = 16), LRU, LFU and Belady, per-layer and shared
  (``level="model"``), on 16 sequences x 2048 tokens at 48 x 128, top-8. All engines are
  parallel over chunks of sequences (and layers at layer level); run with ``--threads 1,2``
  to get the 2-thread speed-up of each curve (the *2T/1T* column).

Every timed table is first checked bit-identical to the scan engine (``_engine="scan"``)
on a 2-sequence slice of the same trace, and the digests must agree across thread counts.

Run: ``python bench/bench_curves.py --threads 1,2`` (see ``bench/README.md``).
"""

from __future__ import annotations

import numpy as np
from _common import Context, digest, main, make_trace

from lrc_kernels.cpu import _stack as cpu_stack

LEVEL = {False: "layer", True: "model"}
CURVES = (("sch", 16), ("lru", None), ("lfu", None), ("belady", None))


def _table(tr, policy, m, model_level, engine=None):
    S = tr.num_sequences
    g = np.arange(S, dtype=np.int64)  # one row per sequence: the strictest comparison
    return cpu_stack.stack_stats_table(
        tr.experts, tr.offsets, tr.num_experts, policy, m, model_level, True, g, S, _engine=engine
    )


def _engine_of(tr, policy, m, model_level) -> str:
    """The engine ``stack_stats_table`` picks for this call (same inputs as its own pick)."""
    L, k = tr.experts.shape[1:]
    n_ids = L * tr.num_experts if model_level else tr.num_experts
    accesses = k * (L if model_level else 1)
    max_len = int(np.diff(tr.offsets).max())
    mm = int(m or 0)
    id_bits, ts_bits = cpu_stack._packing(policy, n_ids, accesses, max_len, mm)
    return cpu_stack._pick_engine(
        policy, model_level, n_ids, id_bits, ts_bits, mm, max_len, accesses
    )


def _tag(policy, m) -> str:
    return policy if m is None else f"{policy} m={m}"


def _check_vs_scan(ctx: Context, tr, label: str, levels) -> None:
    small = tr.select(sequences=[0, 1])
    for policy, m in CURVES:
        for model_level in levels:
            ctx.check_equal(
                f"{label} {_tag(policy, m)} model={model_level}: engine == scan",
                _table(small, policy, m, model_level),
                _table(small, policy, m, model_level, "scan"),
            )


def _per_layer_large_e(ctx: Context) -> None:
    S, T, L = ctx.pick((16, 2048, 8), (3, 48, 2))
    base = {"S": S, "T": T, "L": L, "k": 8, "level": "layer"}
    for E in ctx.pick((128, 256, 512), (16, 64)):
        tr = make_trace(S, T, L, E, 8, stay=0.5, skew=1.0, seed=3)
        if ctx.primary:
            _check_vs_scan(ctx, tr, f"{L}x{E}", (False,))
        for policy, m in CURVES:
            engine = _engine_of(tr, policy, m, False)
            ctx.measure(
                "stack",
                f"per-layer E={E} {_tag(policy, m)} ({engine})",
                lambda tr=tr, policy=policy, m=m: _table(tr, policy, m, False),
                activations=tr.num_activations,
                params={**base, "E": E, "policy": policy, "m": m, "engine": engine},
                group="per-layer at large E",
                digest_of=digest,
            )


def _every_curve_threads(ctx: Context) -> None:
    S, T, L, E = ctx.pick((16, 2048, 48, 128), (4, 24, 4, 16))
    tr = make_trace(S, T, L, E, 8, stay=0.5, skew=1.0, seed=4)
    base = {"S": S, "T": T, "L": L, "E": E, "k": 8}
    if ctx.primary:
        _check_vs_scan(ctx, tr, f"{L}x{E}", (False, True))
    for policy, m in CURVES:
        for model_level in (False, True):
            engine = _engine_of(tr, policy, m, model_level)
            where = "shared" if model_level else "per-layer"
            ctx.measure(
                "stack",
                f"{L}x{E} {where} {_tag(policy, m)} ({engine}), {S} sequences",
                lambda policy=policy, m=m, model_level=model_level: _table(
                    tr, policy, m, model_level
                ),
                activations=tr.num_activations,
                params={
                    **base,
                    "policy": policy,
                    "m": m,
                    "level": LEVEL[model_level],
                    "engine": engine,
                },
                group="every curve: threads",
                digest_of=digest,
            )
    ctx.note(
        "Every engine runs in parallel over chunks of sequences (and layers at layer level, "
        "so per-layer curves have S x L work units); one sequence is never split, so a "
        "shared-cache curve of one very long sequence runs on one thread."
    )


def run(ctx: Context) -> None:
    _per_layer_large_e(ctx)
    _every_curve_threads(ctx)


if __name__ == "__main__":
    main("bench_curves", run, "Per-layer curves at large E; 2-thread speed-up of every curve")
