"""Every cache policy of ``lrc_kernels.ALL_POLICIES`` through ``lk.hit_curve``.

Workload: ``synthetic_trace(1, 512, 48, 128, 8)`` (stay 0.5, skew 1), top-8: 196,608
activations. Per layer: every cache size ``C = 1 .. 128`` (the per-size policies run one
simulation per size, all in one parallel kernel; the stack policies one pass); shared cache
(model level, one cache over all 48 x 128 ids): a grid of 32 sizes ``C = 192, 384, ...,
6144`` (rho = C / (L*k) = 0.5 .. 16), ``sizes=`` of ``hit_curve``. The recorded rate is
activations x sizes per second (the trace's activations times the sizes of the call), the
work unit of a per-size policy. Default parameters (decay 0.95, window 16, prefix 64,
pinned 0.5). Every per-size kernel is first checked bit-identical against the plain
reference on small ragged traces, warm and cold.

Run: ``python bench/bench_policies.py [--quick] [--threads 1]`` (see ``bench/README.md``).
"""

from __future__ import annotations

import numpy as np
from _common import Context, digest, main, make_trace

import lrc_kernels as lk
from lrc_kernels import reference
from lrc_kernels._spec import ALL_POLICIES, SIZE_POLICIES
from lrc_kernels.cpu import _policies


def _check_small(ctx: Context) -> None:
    tr = lk.synthetic_trace(4, [30, 0, 21, 9], 2, 12, 3, stay=0.6, seed=12)
    S = tr.num_sequences
    g = np.arange(S, dtype=np.int64)
    for policy in SIZE_POLICIES:
        for model_level, sizes in ((False, range(1, 14)), (True, (1, 3, 7, 12, 24, 25))):
            for warm in (True, False):
                args = (tr.experts, tr.offsets, 12, policy, list(sizes), model_level, warm, g, S)
                ctx.check_equal(
                    f"{policy} model={model_level} warm={warm}",
                    _policies.policy_hits_table(*args),
                    reference.policy_hits_table(*args),
                )


def run(ctx: Context) -> None:
    _check_small(ctx)
    S, T, L, E = ctx.pick((1, 512, 48, 128), (1, 48, 4, 16))
    k = 8
    tr = make_trace(S, T, L, E, k, stay=0.5, skew=1.0, seed=1)
    act = tr.num_activations
    step = L * k // 2
    shared_sizes = [int(v) for v in np.arange(1, 33) * step if v <= L * E]
    params = {"S": S, "T": T, "L": L, "E": E, "k": k}
    for policy in ALL_POLICIES:
        m = 16 if policy == "sch" else None
        for level, sizes in (("layer", None), ("model", shared_sizes)):
            n_sizes = E if sizes is None else len(sizes)
            what = f"all {E} sizes" if sizes is None else f"{n_sizes} sizes"
            ctx.measure(
                "policies",
                f"{L}x{E} {'per layer' if level == 'layer' else 'shared'} {policy}, {what}",
                lambda policy=policy, m=m, level=level, sizes=sizes: (
                    lk.hit_curve(tr, policy, m, level=level, sizes=sizes, backend="cpu").hits
                ),
                activations=act * n_sizes,
                params={**params, "policy": policy, "level": level, "sizes": n_sizes},
                group=f"policies {L}x{E}, activations x sizes",
                digest_of=digest,
                repeats=3,
            )
    ctx.note(
        "Rates are activations x cache sizes per second (a per-layer call covers all E "
        "sizes, a shared call 32). The stack policies (lru, lfu, belady, sch) compute every "
        "size from one pass, so their rate per size is high; the per-size policies run one "
        "simulation per size."
    )


if __name__ == "__main__":
    main("bench_policies", run, "Every cache policy, per layer (all sizes) and shared (32 sizes)")
