"""``lrc diagnose``: what limits the expert-cache hit rate at one budget (policy or memory)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import lrc_kernels as lk

from ._args import _add_common, _add_traces, _positive_int, _ratio
from ._common import EXIT_OK, CLIError, open_sources

EPILOG = """\
At one memory budget (experts in fast memory per layer: --budget C, or the cache ratio
--rho C/k; default rho 2), compares Belady (the offline optimum), a static oracle (the
most used experts, pinned) and LRU, and gives a verdict:
  fits               LRU >= 0.90: the budget already holds the working set
  working-set limit  Belady < 0.60: no policy can do much better; only more memory helps
  policy gap         Belady - LRU >= 0.10: a better (predictive) policy would help
  near bound         otherwise: LRU is close to the optimum
with the working set (distinct experts per window of m tokens), the experts that take
90 % of the activations, the routing entropy and the reuse distances behind it.

examples:
  lrc diagnose traces/synthetic-low.lrc.arrow
  lrc diagnose model.lrc.arrow --budget 8 --m 32 --level layer --json
"""


def add_parser(sub: Any, fmt: type[argparse.HelpFormatter]) -> None:
    """Add ``lrc diagnose`` and its options to the sub-command parsers ``sub``."""
    p = sub.add_parser(
        "diagnose",
        help="policy gap or working-set limit? the cache hit rates at one budget, explained",
        description="Diagnose what limits the expert-cache hit rate at one memory budget.",
        epilog=EPILOG,
        formatter_class=fmt,
    )
    _add_traces(p)
    b = p.add_mutually_exclusive_group()
    b.add_argument(
        "--budget",
        type=_positive_int,
        default=None,
        metavar="C",
        help="experts in fast memory per layer (the shared cache holds L*C)",
    )
    b.add_argument(
        "--rho",
        type=_ratio,
        default=None,
        metavar="R",
        help="budget as C / k (default: 2, capped at E / k)",
    )
    p.add_argument(
        "--m", type=_positive_int, default=16, help="working-set window in tokens (default: 16)"
    )
    p.add_argument(
        "--level",
        default="both",
        choices=("layer", "model", "both"),
        help="one cache per layer, one shared cache, or both (default: both)",
    )
    p.add_argument(
        "--json", dest="as_json", action="store_true", help="every number as JSON on stdout"
    )
    _add_common(p)
    p.set_defaults(func=cmd_diagnose)


def cmd_diagnose(args: argparse.Namespace) -> int:
    sources = open_sources(args.traces)
    found = []
    for s in sources:
        try:
            d = lk.diagnose(s.path, args.budget, rho=args.rho, m=args.m, level=args.level)
        except ValueError as exc:
            raise CLIError(f"{s.path}: {exc}") from None
        found.append((s.path, d))
    if args.as_json:
        json.dump([{"trace": n, **d.to_dict()} for n, d in found], sys.stdout, indent=1)
        print()
        return EXIT_OK
    for i, (name, d) in enumerate(found):
        if i:
            print()
        print(f"== {name}: E={d.num_experts} k={d.top_k} L={d.num_layers} tokens={d.num_tokens:,}")
        print(d.summary())
    return EXIT_OK
