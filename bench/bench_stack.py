"""Priority-stack benchmarks: SCH, LRU, LFU and Belady hit curves at layer and model level.

Covers the issue #2 workloads (whole layer-level curves at E=64, k=8, T=512; model-level SCH
with 16 layers x 64 experts, top-8), an SCH window sweep, cold start, and the FLAME trace.
Every kernel is first checked against the plain reference on traces it can handle.

Run: ``python bench/bench_stack.py [--quick]`` (see ``bench/README.md``).
"""

from __future__ import annotations

import numpy as np
from _common import Context, digest, flame_trace, main, make_trace

import lrc_kernels as lk
from lrc_kernels import reference
from lrc_kernels.cpu import _stack as cpu_stack

POLICIES = ("sch", "lru", "lfu", "belady")
SCH_M = 16  # SCH future window used for the policy comparisons
# the authors' code on one core, as measured in issue #2 (layer level, E=64, k=8, T=512)
BASELINE = {"sch": "about 0.25M act/s", "lru": "about 0.25M act/s", "belady": "0.33M act/s"}


def _kw(policy: str, m: int = SCH_M) -> dict:
    return {"m": m} if policy == "sch" else {}


def _curve_digest(c) -> str:
    return digest(c.stat)


def _check_against_reference(ctx: Context, tr, label: str, ms=(1, 3, 50)) -> None:
    """Stack-depth tables bit-identical to the reference; hit curves equal to 1e-12."""
    S = tr.num_sequences
    group = np.arange(S, dtype=np.int64)
    for model_level in (False, True):
        for warm in (True, False):
            for policy in POLICIES:
                for m in ms if policy == "sch" else (None,):
                    args = (
                        tr.experts,
                        tr.offsets,
                        tr.num_experts,
                        policy,
                        m,
                        model_level,
                        warm,
                        group,
                        S,
                    )
                    ctx.check_equal(
                        f"{label}: {policy} m={m} model={model_level} warm={warm} depth counts",
                        cpu_stack.stack_stats_table(*args),
                        reference.stack_stats_table(*args),
                    )
    for level in ("layer", "model"):
        for policy in POLICIES:
            a = lk.hit_curve(tr, policy, level=level, backend="cpu", **_kw(policy, ms[-1]))
            b = lk.hit_curve(tr, policy, level=level, backend="reference", **_kw(policy, ms[-1]))
            ctx.check_equal(f"{label}: {policy} {level} hit curve", a.rates, b.rates, rtol=1e-12)


def _reference_slice(ctx: Context, tr, level: str, policy: str, T_ref: int, params: dict) -> str:
    """Time the reference on sequence 0 (first ``T_ref`` tokens; one layer at layer level)."""
    layers = [0] if level == "layer" else None
    sl = tr.select(sequences=[0], layers=layers)
    sl = lk.Trace(sl.experts[:T_ref], num_experts=tr.num_experts)
    case = f"{level} {policy} slice (1 seq x {T_ref} tok{', 1 layer' if layers else ''})"
    if ctx.primary:
        ctx.measure(
            "stack",
            case,
            lambda: lk.hit_curve(sl, policy, level=level, backend="reference", **_kw(policy)),
            activations=sl.num_activations,
            backend="reference",
            group="reference",
            warm=False,
            repeats=1,
            params={**params, "S": 1, "T": T_ref, "L": sl.num_layers},
        )
    ctx.check_equal(
        f"{case}: cpu vs reference",
        lk.hit_curve(sl, policy, level=level, backend="cpu", **_kw(policy)).stat,
        lk.hit_curve(sl, policy, level=level, backend="reference", **_kw(policy)).stat,
    )
    return f"stack|{case}|reference"


def run(ctx: Context) -> None:
    one = ctx.threads == 1
    # -------------------------------------------------------------- correctness first
    small = lk.synthetic_trace(5, [40, 25, 3, 48, 0], 3, 12, 3, stay=0.6, seed=12)
    _check_against_reference(ctx, small, "synthetic ragged")
    edge = lk.synthetic_trace(3, [17, 1, 9], 2, 4, 4, stay=0.3, seed=13)  # k = E
    _check_against_reference(ctx, edge, "k = E", ms=(2,))

    # ------------------------------------------ issue #2: layer level, E=64, k=8, T=512
    S, T, L, E, k = ctx.pick((256, 512, 4, 64, 8), (6, 64, 2, 16, 4))
    tr = make_trace(S, T, L, E, k, stay=0.5, skew=1.0, seed=1)
    params = {"S": S, "T": T, "L": L, "E": E, "k": k}
    for policy in POLICIES:
        p = {**params, "level": "layer", "policy": policy, **_kw(policy)}
        ref = _reference_slice(ctx, tr, "layer", policy, T, p)
        goal = (
            {
                "text": f"layer-level {policy.upper()} whole curve, one core",
                "min_rate": 30e6,
                "baseline": BASELINE.get(policy, "not stated"),
            }
            if one
            else None
        )
        ctx.measure(
            "stack",
            f"layer {policy}",
            lambda policy=policy: lk.hit_curve(tr, policy, level="layer", **_kw(policy)),
            activations=tr.num_activations,
            params=p,
            group="issue2 layer level",
            ref=ref,
            goal=goal,
            digest_of=_curve_digest,
        )
    ctx.measure(
        "stack",
        "layer lru cold start",
        lambda: lk.hit_curve(tr, "lru", level="layer", warm_start=False),
        activations=tr.num_activations,
        params={**params, "level": "layer", "policy": "lru", "warm_start": False},
        group="issue2 layer level",
        digest_of=_curve_digest,
    )

    # ---------------------------------- issue #2: model level, 16 layers x 64 experts, top-8
    S2, T2, L2, E2, k2 = ctx.pick((64, 512, 16, 64, 8), (3, 48, 4, 16, 4))
    tr2 = make_trace(S2, T2, L2, E2, k2, stay=0.5, skew=1.0, seed=3)
    params2 = {"S": S2, "T": T2, "L": L2, "E": E2, "k": k2}
    T_ref = ctx.pick(128, 24)
    for policy in POLICIES:
        p = {**params2, "level": "model", "policy": policy, **_kw(policy)}
        ref = _reference_slice(ctx, tr2, "model", policy, T_ref, p)
        goal = (
            {
                "text": "model-level SCH (16 x 64 experts, top-8), one core",
                "min_rate": 3e6,
                "baseline": "about 30k act/s",
            }
            if one and policy == "sch"
            else None
        )
        ctx.measure(
            "stack",
            f"model {policy}",
            lambda policy=policy: lk.hit_curve(tr2, policy, level="model", **_kw(policy)),
            activations=tr2.num_activations,
            params=p,
            group="issue2 model level",
            ref=ref,
            goal=goal,
            digest_of=_curve_digest,
        )

    # --------------------------------------------------------- SCH window sweep
    S3 = ctx.pick(64, 4)
    tr3 = make_trace(S3, T, L, E, k, stay=0.5, seed=4)
    for m in ctx.pick([1, 4, 16, 64, 256, 512], [1, 4, 16]):
        ctx.measure(
            "stack",
            f"layer sch m={m}",
            lambda m=m: lk.sch(tr3, m),
            activations=tr3.num_activations,
            params={"S": S3, "T": T, "L": L, "E": E, "k": k, "level": "layer", "m": m},
            group="SCH m sweep",
            sweep=("SCH m (layer level)", m),
            digest_of=_curve_digest,
        )

    # ---------------------------------------------------------------- real trace
    fl = flame_trace(512)
    if fl is None:
        if ctx.primary:
            ctx.note("FLAME trace absent: real-trace hit-curve figures skipped")
        return
    fsl = lk.Trace(fl.experts[: ctx.pick(64, 24), :3], num_experts=64)
    _check_against_reference(ctx, fsl, "FLAME slice", ms=(4,))
    fparams = {"S": fl.num_sequences, "T": 512, "L": fl.num_layers, "E": 64, "k": 6}
    for level in ("layer", "model"):
        for policy in POLICIES:
            ctx.measure(
                "stack",
                f"FLAME {level} {policy}",
                lambda policy=policy, level=level: lk.hit_curve(
                    fl, policy, level=level, **_kw(policy)
                ),
                activations=fl.num_activations,
                params={**fparams, "level": level, "policy": policy, **_kw(policy)},
                group="FLAME-MoE-290M",
                digest_of=_curve_digest,
            )
    if ctx.primary:
        parts = []
        for policy in POLICIES:
            c = lk.hit_curve(fl, policy, level="model", **_kw(policy))
            parts.append(f"{policy} {float(c.at(2)):.4f}")
        ctx.note("FLAME-MoE-290M model-level hit rate at rho = 2 (SCH m=16): " + ", ".join(parts))


if __name__ == "__main__":
    main("bench_stack", run, "Priority-stack hit curves (SCH, LRU, LFU, Belady)")
