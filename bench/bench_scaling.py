"""How the cost grows: sweeps over trace size (tokens), experts E, top-k and layers L.

For each sweep the scaling exponent of time against the swept size is fitted (log-log least
squares) in ``bench/run.py``'s report. Each configuration is first checked against the
plain reference on a small trace with the same E, k and L.

Run: ``python bench/bench_scaling.py [--quick]`` (see ``bench/README.md``).
"""

from __future__ import annotations

import numpy as np
from _common import Context, digest, main, make_trace

import lrc_kernels as lk

T = 500  # tokens per sequence in the token sweep


def _check(ctx: Context, E: int, k: int, L: int, label: str, model: bool = False) -> None:
    """SRP and SCH (layer, and model when asked) equal to the reference at this E, k, L."""
    tr = make_trace(2, [24, 13], L, E, k, stay=0.5, seed=5)
    a = lk.srp(tr, [1, 4, 16], level="expert", backend="cpu")
    b = lk.srp(tr, [1, 4, 16], level="expert", backend="reference")
    ctx.check_equal(f"{label}: SRP histograms", np.stack(a.histogram[1]), np.stack(b.histogram[1]))
    ctx.check_equal(f"{label}: SRP values", a.value, b.value, rtol=1e-12)
    levels = ("layer", "model") if model else ("layer",)
    for level in levels:
        for policy, kw in (("sch", {"m": 4}), ("lru", {})):
            c = lk.hit_curve(tr, policy, level=level, backend="cpu", **kw)
            d = lk.hit_curve(tr, policy, level=level, backend="reference", **kw)
            ctx.check_equal(f"{label}: {policy} {level} depth counts", c.stat, d.stat)


def _srp_digest(r) -> str:
    return digest(r.histogram)


def _stat_digest(c) -> str:
    return digest(c.stat)


def run(ctx: Context) -> None:
    # ------------------------------------------------------------- tokens 1e3 .. 1e7
    E, k = 64, 8
    sizes = ctx.pick([1_000, 10_000, 100_000, 1_000_000, 10_000_000], [1_000, 3_000])
    _check(ctx, E, k, 1, f"E={E} k={k} L=1")
    big = make_trace(max(sizes) // T, T, 1, E, k, stay=0.5, seed=6)
    ref_sizes = ctx.pick([1_000, 10_000], [1_000])
    for n in sizes:
        tr = big.select(sequences=np.arange(n // T))
        p = {"tokens": n, "T": T, "L": 1, "E": E, "k": k}
        ref_srp = ref_sch = None
        if ctx.primary and n in ref_sizes:
            ctx.measure(
                "srp m=16",
                f"tokens={n}",
                lambda tr=tr: lk.srp(tr, 16, backend="reference"),
                activations=tr.num_activations,
                backend="reference",
                params=p,
                group="tokens",
                sweep=("tokens", n),
                warm=False,
                repeats=1,
            )
            ctx.measure(
                "sch m=16 layer",
                f"tokens={n}",
                lambda tr=tr: lk.sch(tr, 16, backend="reference"),
                activations=tr.num_activations,
                backend="reference",
                params=p,
                group="tokens",
                sweep=("tokens", n),
                warm=False,
                repeats=1,
            )
        if n in ref_sizes:
            ref_srp = f"srp m=16|tokens={n}|reference"
            ref_sch = f"sch m=16 layer|tokens={n}|reference"
        ctx.measure(
            "srp m=16",
            f"tokens={n}",
            lambda tr=tr: lk.srp(tr, 16),
            activations=tr.num_activations,
            params=p,
            group="tokens",
            sweep=("tokens", n),
            ref=ref_srp,
            digest_of=_srp_digest,
            budget_s=2.0,
        )
        ctx.measure(
            "sch m=16 layer",
            f"tokens={n}",
            lambda tr=tr: lk.sch(tr, 16),
            activations=tr.num_activations,
            params=p,
            group="tokens",
            sweep=("tokens", n),
            ref=ref_sch,
            digest_of=_stat_digest,
            budget_s=2.0,
        )
        ctx.measure(
            "lru layer",
            f"tokens={n}",
            lambda tr=tr: lk.hit_curve(tr, "lru"),
            activations=tr.num_activations,
            params=p,
            group="tokens",
            sweep=("tokens", n),
            digest_of=_stat_digest,
            budget_s=2.0,
        )
    del big

    # ------------------------------------------------------------------- E 8 .. 256
    S = ctx.pick(256, 4)
    Tn = ctx.pick(512, 64)

    def srp_and_sch(E: int, k: int, seed: int, group: str, case: str, sweep) -> None:
        """Expert-level SRP and layer-level SCH on one single-layer trace."""
        _check(ctx, E, k, 1, f"E={E} k={k} L=1")
        tr = make_trace(S, Tn, 1, E, k, stay=0.5, seed=seed)
        p = {"S": S, "T": Tn, "L": 1, "E": E, "k": k}
        for kernel, fn, digest_fn in (
            ("srp m=16 expert level", lambda tr=tr: lk.srp(tr, 16, level="expert"), _srp_digest),
            ("sch m=16 layer", lambda tr=tr: lk.sch(tr, 16), _stat_digest),
        ):
            ctx.measure(
                kernel,
                case,
                fn,
                activations=tr.num_activations,
                params=p,
                group=group,
                sweep=sweep,
                digest_of=digest_fn,
            )

    for E in ctx.pick([8, 16, 32, 64, 128, 256], [8, 16]):
        srp_and_sch(E, 4, 7, "E", f"E={E}", ("E (k=4)", E))

    # --------------------------------------------------------------------- k 1 .. 8
    for k in ctx.pick([1, 2, 4, 8], [1, 2]):
        srp_and_sch(64, k, 8, "k", f"k={k}", ("k (E=64)", k))

    # ---------------------------------------------------------------- layers 1 .. 48
    S = ctx.pick(16, 2)
    for L in ctx.pick([1, 4, 12, 24, 48], [1, 2]):
        E, k = 64, 8
        if L <= 12 or ctx.quick:  # the model-level reference is too slow beyond this
            _check(ctx, E, k, L, f"E={E} k={k} L={L}", model=True)
        tr = make_trace(S, Tn, L, E, k, stay=0.5, seed=9)
        p = {"S": S, "T": Tn, "L": L, "E": E, "k": k}
        ctx.measure(
            "srp m=16 model level",
            f"L={L}",
            lambda tr=tr: lk.srp(tr, 16),
            activations=tr.num_activations,
            params=p,
            group="L",
            sweep=("layers", L),
            digest_of=_srp_digest,
        )
        ctx.measure(
            "sch m=16 model level",
            f"L={L}",
            lambda tr=tr: lk.sch(tr, 16, level="model"),
            activations=tr.num_activations,
            params=p,
            group="L",
            sweep=("layers", L),
            digest_of=_stat_digest,
        )


if __name__ == "__main__":
    main("bench_scaling", run, "Cost growth with trace size, E, k and layers")
