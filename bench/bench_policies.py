"""Per-size policies without the stack property: fifo, clock, sieve, s3fifo, arc.

Workload: ``synthetic_trace(1, 2048, 48, 128, 8)`` (stay 0.5, skew 1), top-8. Per layer:
every cache size ``C = 1 .. 128`` (one simulation each, all in one parallel kernel);
shared cache (model level, one cache over all 48 x 128 ids): a grid of 32 sizes
``C = 192, 384, ..., 6144`` (rho = C / (L*k) = 0.5 .. 16). Activations/s counts the
trace's activations once per call (all sizes of a call together). Every kernel is first
checked bit-identical against the plain reference on small ragged traces, warm and cold.

Run: ``python bench/bench_policies.py [--quick] [--threads 1]`` (see ``bench/README.md``).
"""

from __future__ import annotations

import numpy as np
from _common import Context, digest, main, make_trace

import lrc_kernels as lk
from lrc_kernels import reference
from lrc_kernels._spec import SIZE_POLICIES
from lrc_kernels.cpu import _policies


def _table(tr, policy, sizes, model_level, warm=True):
    g = np.zeros(tr.num_sequences, dtype=np.int64)
    return _policies.policy_hits_table(
        tr.experts, tr.offsets, tr.num_experts, policy, sizes, model_level, warm, g, 1
    )


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
    S, T, L, E = ctx.pick((1, 2048, 48, 128), (1, 48, 4, 16))
    k = 8
    tr = make_trace(S, T, L, E, k, stay=0.5, skew=1.0, seed=1)
    act = tr.num_activations
    layer_sizes = np.arange(1, E + 1)
    step = L * k // 2
    shared_sizes = np.arange(1, 33) * step
    params = {"S": S, "T": T, "L": L, "E": E, "k": k}
    for policy in SIZE_POLICIES:
        ctx.measure(
            "policies",
            f"{L}x{E} per layer {policy}, all {E} sizes",
            lambda policy=policy: _table(tr, policy, layer_sizes, False),
            activations=act,
            params={**params, "policy": policy, "level": "layer", "sizes": int(E)},
            group=f"per-size policies {L}x{E}",
            digest_of=digest,
        )
        ctx.measure(
            "policies",
            f"{L}x{E} shared {policy}, 32 sizes",
            lambda policy=policy: _table(tr, policy, shared_sizes, True),
            activations=act,
            params={**params, "policy": policy, "level": "model", "sizes": 32},
            group=f"per-size policies {L}x{E}",
            digest_of=digest,
        )
    ctx.note(
        "One simulation per cache size: a per-layer call runs E simulations per layer, a "
        "shared call 32; activations/s counts each activation once per call."
    )


if __name__ == "__main__":
    main("bench_policies", run, "Per-size policies (fifo, clock, sieve, s3fifo, arc)")
