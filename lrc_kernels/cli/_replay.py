"""``lrc replay``: run a trace through a real two-tier expert store (torch) under the
planned allocation, and set its misses and time beside the planner's prediction."""

from __future__ import annotations

import argparse
from typing import Any

import lrc_kernels as lk

from ..offload import CACHES
from ._args import _add_common, _add_output, _add_traces, _nonneg_int, _positive_int
from ._common import EXIT_OK, CLIError, metric_inputs
from ._output import _emit, _fmt, format_table

REPLAY_POLICIES = tuple(CACHES)  # the online caches of lk.replay
PLACEMENTS = ("optimal", "uniform", "shared")

EPILOG = """\
Plans the cache for --budget expert slots (lk.plan_budget), then replays the trace through
a two-tier expert store: every expert's bytes in a slow tier (a memory-mapped file, or host
memory), a fast tier of the planned slots (host RAM, or the GPU when there is one), and a
real copy on every miss under an online cache of the policy. The replay's misses must equal
the prediction exactly; its time per token is measured.

examples:
  lrc replay traces/synthetic-high.lrc.arrow --budget 128 --policy lru lfu
  lrc replay trace.lrc.arrow --budget 256 --placement shared --expert-bytes 1048576
"""


def add_parser(sub: Any, fmt: type[argparse.HelpFormatter]) -> None:
    """Add ``lrc replay`` and its options to the sub-command parsers ``sub``."""
    p = sub.add_parser(
        "replay",
        help="replay a trace through a real two-tier expert store; check the plan",
        description="Replay a trace through a two-tier expert store.",
        epilog=EPILOG,
        formatter_class=fmt,
    )
    _add_traces(p)
    p.add_argument("--budget", type=_nonneg_int, required=True, help="total expert slots")
    p.add_argument(
        "--policy", nargs="+", choices=REPLAY_POLICIES, default=["lru"], help="(default: lru)"
    )
    p.add_argument(
        "--placement",
        nargs="+",
        choices=PLACEMENTS,
        default=["optimal", "uniform"],
        help="per-layer split (optimal, uniform) or one shared cache (default: optimal uniform)",
    )
    p.add_argument(
        "--expert-bytes",
        type=_positive_int,
        default=65536,
        help="bytes per expert (default: 65536)",
    )
    p.add_argument(
        "--slow",
        choices=("mmap", "host", "pinned"),
        default="mmap",
        help="slow tier: memory-mapped file, host or pinned memory (default: mmap)",
    )
    p.add_argument(
        "--fast",
        default="auto",
        help="torch device of the fast tier (default: auto: CUDA if present)",
    )
    p.add_argument("--cold-start", action="store_true", help="first accesses are misses")
    _add_output(p)
    _add_common(p)
    p.set_defaults(func=cmd_replay)


def _one(path: str, policy: str, placement: str, args: argparse.Namespace) -> dict:
    warm = not args.cold_start
    plan = lk.plan_budget(path, args.budget, policy, shared=placement == "shared", warm_start=warm)
    if placement == "shared":
        alloc, level, predicted = plan.shared_size, "model", plan.shared_misses
    else:
        alloc = plan.allocation if placement == "optimal" else plan.uniform_allocation
        level = "layer"
        predicted = int((plan.misses if placement == "optimal" else plan.uniform_misses).sum())
    r = lk.replay(
        path, policy, alloc, level=level, expert_bytes=args.expert_bytes, slow=args.slow,
        fast=args.fast, warm_start=warm,
    )  # fmt: skip
    misses = int(r.misses.sum())
    return {
        "policy": policy, "placement": placement, "slots": int(r.sizes.sum()),
        "hit_rate": r.hit_rate, "predicted_misses": predicted, "misses": misses,
        "exact": misses == predicted, "bytes_moved": r.bytes_moved, "tokens": r.tokens,
        "ms_per_token": r.ms_per_token, "tokens_per_s": r.tokens_per_s,
        "expert_bytes": r.expert_bytes, "slow": r.slow, "device": r.device,
    }  # fmt: skip


def cmd_replay(args: argparse.Namespace) -> int:
    sources, _ = metric_inputs(args)
    rows = []
    for s in sources:
        for policy in dict.fromkeys(args.policy):
            for placement in dict.fromkeys(args.placement):
                try:
                    rows.append({"model": s.name, **_one(s.path, policy, placement, args)})
                except ValueError as e:
                    raise CLIError(f"{s.path}: {policy}: {e}") from None

    def frame() -> Any:
        import pandas as pd

        return pd.DataFrame(rows)

    def human() -> str:
        head = ["model", "policy", "placement", "slots", "hit", "predicted", "misses", "exact",
                "MB moved", "ms/token"]  # fmt: skip
        body = [
            [r["model"], r["policy"], r["placement"], r["slots"], _fmt(r["hit_rate"]),
             r["predicted_misses"], r["misses"], "yes" if r["exact"] else "NO",
             f"{r['bytes_moved'] / 1e6:.1f}", f"{r['ms_per_token']:.4f}"]
            for r in rows
        ]  # fmt: skip
        num = [False, False, False, True, True, True, True, False, True, True]
        r0 = rows[0]
        return format_table(head, body, num) + (
            f"\n(expert {r0['expert_bytes']:,} B; slow tier {r0['slow']}, fast tier "
            f"{r0['device']}; misses predicted by lk.plan_budget from the hit curves)"
        )

    _emit(args, frame, human)
    return EXIT_OK if all(r["exact"] for r in rows) else 1
