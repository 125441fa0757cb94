"""SRP benchmarks: the issue #2 workload, an m sweep with and without bootstrap, FLAME.

Every measured kernel is first checked against the plain reference (``backend="reference"``)
on a trace the reference can handle; a mismatch stops the script.

Run: ``python bench/bench_srp.py [--quick]`` (see ``bench/README.md``).
"""

from __future__ import annotations

import numpy as np
from _common import Context, digest, flame_trace, main, make_trace

import lrc_kernels as lk
from lrc_kernels import reference
from lrc_kernels.cpu import _srp as cpu_srp

LEVELS = ("model", "layer", "expert")


def _srp_digest(res) -> str:
    hists = res.histogram if isinstance(res.histogram, list) else [res.histogram]
    parts = [*hists, np.asarray(res.value), np.asarray(res.threshold)]
    if res.ci is not None:
        parts += [np.asarray(res.ci[0]), np.asarray(res.ci[1])]
    return digest(*parts)


def _check_against_reference(ctx: Context, tr, ms, B: int, label: str) -> None:
    """CPU tables bit-identical to the reference; SRP values, thresholds, ratios and CIs equal."""
    S = tr.num_sequences
    group = np.arange(S, dtype=np.int64)
    for per_expert in (True, False):
        got = cpu_srp.window_hist_table(
            tr.experts, tr.offsets, tr.num_experts, ms, group, S, per_expert
        )
        want = reference.window_hist_table(
            tr.experts, tr.offsets, tr.num_experts, ms, group, S, per_expert
        )
        ctx.check_equal(f"{label}: window histograms per_expert={per_expert}", got, want)
    for level in LEVELS:
        kw = dict(level=level, bootstrap=B, seed=3)
        a = lk.srp(tr, list(ms), backend="cpu", **kw)
        b = lk.srp(tr, list(ms), backend="reference", **kw)
        ctx.check_equal(f"{label}: SRP {level}", a.value, b.value, rtol=1e-12)
        ctx.check_equal(f"{label}: threshold {level}", a.threshold, b.threshold)
        ctx.check_equal(f"{label}: preds/acts {level}", a.ratio, b.ratio, rtol=1e-12)
        if B:
            ctx.check_equal(f"{label}: CI {level}", np.stack(a.ci), np.stack(b.ci), rtol=1e-12)


def run(ctx: Context) -> None:
    # -------------------------------------------------------------- correctness first
    small = lk.synthetic_trace(5, [48, 30, 5, 64, 0], 2, 16, 4, stay=0.6, seed=11)
    _check_against_reference(ctx, small, np.array([1, 3, 4, 16, 50]), 40, "synthetic ragged")

    # ------------------------------------------------------- issue #2 SRP workload
    S, T, L, E, k = ctx.pick((256, 512, 4, 64, 8), (8, 64, 2, 16, 4))
    ms = ctx.pick([4, 16, 64, 256], [2, 4, 8])
    B = ctx.pick(1000, 20)
    tr = make_trace(S, T, L, E, k, stay=0.5, skew=1.0, seed=1)
    acts = tr.num_activations
    params = {"S": S, "T": T, "L": L, "E": E, "k": k, "m": ms, "bootstrap": B}
    one = ctx.threads == 1

    # the reference on a one-sequence, one-layer slice of the same shape (its cost per
    # activation does not depend on the number of sequences or layers)
    sl = tr.select(sequences=[0], layers=[0])
    ref_key = "srp|issue2 slice (1 seq, 1 layer)|reference"
    if ctx.primary:
        ctx.measure(
            "srp",
            "issue2 slice (1 seq, 1 layer)",
            lambda: lk.srp(sl, ms, level="expert", backend="reference"),
            activations=sl.num_activations,
            backend="reference",
            group="issue2",
            warm=False,
            repeats=1,
            params={**params, "S": 1, "L": 1, "bootstrap": 0},
        )
    ctx.check_equal(
        "issue2 slice: SRP expert level vs reference",
        lk.srp(sl, ms, level="expert", backend="cpu").value,
        lk.srp(sl, ms, level="expert", backend="reference").value,
        rtol=1e-12,
    )

    goals = {
        "model": {
            "text": "model-level SRP with CI, one core",
            "max_seconds": 0.09,
            "baseline": "8.6 s",
        },
        "all": {
            "text": "all levels down to per-expert CIs, one core",
            "max_seconds": 0.9,
            "baseline": "8.6 s",
        },
    }
    for level in LEVELS:
        ctx.measure(
            "srp",
            f"issue2 {level} + CI",
            lambda level=level: lk.srp(tr, ms, level=level, bootstrap=B, seed=0),
            activations=acts,
            params={**params, "level": level},
            group="issue2",
            ref=ref_key,
            goal=goals.get(level) if one else None,
            digest_of=_srp_digest,
        )

    def all_levels():
        return [lk.srp(tr, ms, level=lv, bootstrap=B, seed=0) for lv in LEVELS]

    ctx.measure(
        "srp",
        "issue2 all levels + CI",
        all_levels,
        activations=acts,
        params={**params, "level": "model+layer+expert"},
        group="issue2",
        ref=ref_key,
        goal=goals["all"] if one else None,
        digest_of=lambda rs: digest(*[np.asarray(r.ci) for r in rs]),
    )
    for level in ("model", "expert"):
        ctx.measure(
            "srp",
            f"issue2 {level} (no CI)",
            lambda level=level: lk.srp(tr, ms, level=level),
            activations=acts,
            params={**params, "level": level, "bootstrap": 0},
            group="issue2",
            ref=ref_key,
            digest_of=_srp_digest,
        )

    # ------------------------------------------------------------------ m sweep
    S2 = ctx.pick(64, 4)
    tr2 = make_trace(S2, T, L, E, k, stay=0.5, seed=2)
    m_values = ctx.pick([1, 2, 4, 8, 16, 32, 64, 128, 256, 512], [1, 4, 16])
    base = {"S": S2, "T": T, "L": L, "E": E, "k": k, "level": "model"}
    for m in m_values:
        ctx.measure(
            "srp",
            f"m={m} (no CI)",
            lambda m=m: lk.srp(tr2, m),
            activations=tr2.num_activations,
            params={**base, "m": m, "bootstrap": 0},
            group="m sweep",
            sweep=("m (no CI)", m),
            digest_of=_srp_digest,
        )
        ctx.measure(
            "srp",
            f"m={m} (B={B})",
            lambda m=m: lk.srp(tr2, m, bootstrap=B),
            activations=tr2.num_activations,
            params={**base, "m": m, "bootstrap": B},
            group="m sweep",
            sweep=(f"m (B={B})", m),
            digest_of=_srp_digest,
        )

    # --------------------------------------------------------------- real trace
    fl = flame_trace(512)
    if fl is None:
        if ctx.primary:
            ctx.note("FLAME trace absent: real-trace SRP figures skipped")
        return
    fsl = fl.select(sequences=[0], layers=[0, 1])
    _check_against_reference(ctx, fsl, np.array([4, 16]), 0, "FLAME slice")
    fms = ctx.pick([4, 16, 64, 256], [4, 16])
    fparams = {
        "S": fl.num_sequences,
        "T": 512,
        "L": fl.num_layers,
        "E": 64,
        "k": 6,
        "m": fms,
        "bootstrap": B,
    }
    for level in ("model", "expert"):
        ctx.measure(
            "srp",
            f"FLAME {level} + CI",
            lambda level=level: lk.srp(fl, fms, level=level, bootstrap=B),
            activations=fl.num_activations,
            params={**fparams, "level": level},
            group="FLAME-MoE-290M",
            digest_of=_srp_digest,
        )
    res = lk.srp(fl, fms, level="model", bootstrap=B)
    if ctx.primary:
        ctx.note(
            "FLAME-MoE-290M model-level SRP (95% CI): "
            + ", ".join(
                f"m={m}: {v:.4f} [{lo:.4f}, {hi:.4f}]"
                for m, v, lo, hi in zip(fms, res.value, res.ci[0], res.ci[1], strict=True)
            )
        )


if __name__ == "__main__":
    main("bench_srp", run, "SRP (segment routing best performance) benchmarks")
