"""``lrc plan``: memory budget and link -> hit rate, bytes per token and tokens/s per
policy and placement (uniform split, optimal per-layer split, one shared cache)."""

from __future__ import annotations

import argparse
import math
from typing import Any

import lrc_kernels as lk

from .._spec import ALL_POLICIES
from ._args import (
    _add_common,
    _add_output,
    _add_policy_params,
    _add_traces,
    _positive_int,
    _ratio,
    policy_params,
)
from ._common import EXIT_OK, CLIError, metric_inputs
from ._output import _emit, _fmt, format_table

EPILOG = """\
Plans an expert-offloading deployment from a routing trace of its workload: for each
memory budget (GiB of fast memory for routed experts), policy and placement (uniform
split over layers, the optimal per-layer split, one cache shared by all layers) the hit
rate, the bytes fetched per token and the predicted decode tokens/s. The expert size comes
from the model's config.json (--config, --bits) or --expert-bytes; the link from
--link-gbps (and --base-ms, the step time with every expert resident) or from two or more
measured points of your runtime (--calibrate HIT:TOKENS_PER_S ...).

examples:
  lrc plan trace.lrc.arrow --config Qwen3-30B-A3B/config.json --bits 4.5 \\
      --budget-gib 1 2 4 8 --link-gbps 25 --base-ms 12 --target-tps 20
  lrc plan trace.lrc.arrow --expert-bytes 2654208 --budget-gib 2 4 \\
      --calibrate 0.55:9.1 0.9:21.4 --json -o plan.json
"""


def _point(text: str) -> tuple[float, float]:
    try:
        h, t = (float(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HIT_RATE:TOKENS_PER_S, got {text!r}") from None
    if not (0 <= h <= 1 and math.isfinite(t) and t > 0):
        raise argparse.ArgumentTypeError(f"need 0 <= hit rate <= 1 and tokens/s > 0: {text!r}")
    return h, t


def _gib(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of GiB, got {text!r}") from None
    if not math.isfinite(v) or v < 0:
        raise argparse.ArgumentTypeError(f"a memory budget must be >= 0 GiB, got {text!r}")
    return v


def add_parser(sub: Any, fmt: type[argparse.HelpFormatter]) -> None:
    """Add ``lrc plan`` and its options to the sub-command parsers ``sub``."""
    p = sub.add_parser(
        "plan",
        help="memory budget + link -> hit rate and predicted decode tokens/s",
        description="Plan an expert-offloading deployment.",
        epilog=EPILOG,
        formatter_class=fmt,
    )
    _add_traces(p)
    size = p.add_argument_group("expert size (one of)")
    size.add_argument("--config", metavar="CONFIG", help="the model's config.json (or folder)")
    size.add_argument("--expert-bytes", type=_positive_int, help="bytes of one routed expert")
    size.add_argument("--bits", type=_ratio, default=16.0, help="bits per weight (default: 16)")
    p.add_argument(
        "--budget-gib",
        nargs="+",
        type=_gib,
        required=True,
        metavar="GIB",
        help="fast-memory budgets for routed experts, GiB",
    )
    link = p.add_argument_group("decode model")
    link.add_argument("--link-gbps", type=_ratio, help="host-to-fast-memory bandwidth, GB/s")
    link.add_argument(
        "--base-ms",
        type=float,
        default=None,
        help="step time with every expert resident, ms (default 0)",
    )
    link.add_argument(
        "--calibrate",
        nargs="+",
        type=_point,
        metavar="HIT:TPS",
        help="measured (hit rate, tokens/s) points; fits --base-ms and the link",
    )
    link.add_argument(
        "--overlap",
        type=float,
        default=0.0,
        help="share of the resident time transfers hide behind (0..1, default 0)",
    )
    link.add_argument(
        "--host-ms",
        type=float,
        default=None,
        help="ms to compute one missed expert on the host instead of fetching",
    )
    link.add_argument(
        "--batch-size", type=_positive_int, default=1, help="tokens per step (default: 1)"
    )
    p.add_argument("--target-tps", type=_ratio, help="report the smallest budget reaching this")
    p.add_argument(
        "--policy",
        nargs="+",
        choices=ALL_POLICIES,
        default=["lru", "lfu"],
        metavar="POLICY",
        help=f"replacement policies, of: {', '.join(ALL_POLICIES)} (default: lru lfu)",
    )
    _add_policy_params(p)
    p.add_argument("--m", type=_positive_int, default=16, help="SCH's future window (default: 16)")
    p.add_argument("--no-shared", action="store_true", help="skip the shared-cache option")
    p.add_argument("--cold-start", action="store_true", help="first accesses are misses")
    _add_output(p)
    _add_common(p)
    p.set_defaults(func=cmd_plan)


def _expert_bytes(args: argparse.Namespace, src: Any) -> int:
    if (args.config is None) == (args.expert_bytes is None):
        raise CLIError("lrc plan needs one of --config CONFIG.json or --expert-bytes N")
    if args.expert_bytes is not None:
        return int(args.expert_bytes)
    try:
        cfg = lk.moe_config(args.config)
        eb = lk.expert_bytes(args.config, bits=args.bits)
    except (OSError, ValueError) as e:
        raise CLIError(f"--config {args.config}: {e}") from None
    r = src.reader
    if (cfg["num_experts"], cfg["top_k"]) != (r.num_experts, r.top_k):
        raise CLIError(
            f"{src.path} has E = {r.num_experts}, k = {r.top_k} but {args.config} says "
            f"E = {cfg['num_experts']}, k = {cfg['top_k']}: trace and config differ"
        )
    return eb


def _decode(args: argparse.Namespace) -> dict:
    if (args.link_gbps is None) == (args.calibrate is None):
        raise CLIError("lrc plan needs one of --link-gbps GBPS or --calibrate HIT:TPS ...")
    d: dict = {"overlap": args.overlap, "host_ms": args.host_ms, "batch_size": args.batch_size}
    if args.calibrate is not None:
        if args.base_ms is not None:
            raise CLIError("--calibrate fits --base-ms; give one of them")
        d["calibrate"] = args.calibrate
    else:
        d["link_gbps"], d["base_ms"] = args.link_gbps, args.base_ms
    return d


def cmd_plan(args: argparse.Namespace) -> int:
    sources, _ = metric_inputs(args)
    params = policy_params(args, args.policy)
    rows, targets = [], []
    for s in sources:
        eb = _expert_bytes(args, s)
        decode = _decode(args)
        if args.batch_size > 1:
            decode["num_experts"] = s.reader.num_experts
        try:
            r, t, fit = lk.plan_deployment(
                s.path, args.budget_gib, expert_bytes=eb, policies=args.policy, m=args.m,
                shared=not args.no_shared, target_tps=args.target_tps, decode=decode,
                warm_start=not args.cold_start,
                **{k: v for p in args.policy for k, v in params[p].items()},
            )  # fmt: skip
        except ValueError as e:
            raise CLIError(f"{s.path}: {e}") from None
        extra = {"model": s.name, "expert_bytes": eb, "base_ms": fit.get("base_ms") or 0.0,
                 "link_gbps": fit["link_gbps"]}  # fmt: skip
        rows += [{**extra, **x} for x in r]
        targets += [{"model": s.name, **x} for x in t]
    _emit(args, lambda: _frame(rows, targets), lambda: _human(rows, targets, args))
    return EXIT_OK


def _frame(rows: list[dict], targets: list[dict]) -> Any:
    import pandas as pd

    df = pd.DataFrame([{"kind": "budget", **r} for r in rows])
    if targets:
        t = pd.DataFrame([{"kind": "target", **x} for x in targets])
        df = pd.concat([df, t], ignore_index=True)
    return df


def _human(rows: list[dict], targets: list[dict], args: argparse.Namespace) -> str:
    header = ["model", "policy", "GiB", "slots", "placement", "hit", "MB/token", "tokens/s"]
    body = [
        [r["model"], r["policy"], f"{r['budget_gib']:g}", r["slots"], r["option"],
         _fmt(r["hit_rate"]), f"{r['bytes_per_token'] / 1e6:.2f}", f"{r['tokens_per_s']:.2f}"]
        for r in rows
    ]  # fmt: skip
    text = format_table(header, body, [False, False, True, True, False, True, True, True])
    r0 = rows[0] if rows else None
    if r0 is not None:
        text += (
            f"\n(expert {r0['expert_bytes']:,} B; link {r0['link_gbps']:.3g} GB/s, "
            f"resident step {r0['base_ms']:.3g} ms"
            + (", fitted to --calibrate" if args.calibrate else "")
            + ")"
        )
    if targets:
        head = ["model", "policy", "placement", f"GiB for {args.target_tps:g} tok/s", "slots"]
        tb = [
            [t["model"], t["policy"], t["option"],
             "unreachable" if t["min_slots"] < 0 else f"{t['min_budget_gib']:.3f}",
             t["min_slots"]]
            for t in targets
        ]  # fmt: skip
        text += "\n\n" + format_table(head, tb, [False, False, False, True, True])
    return text
