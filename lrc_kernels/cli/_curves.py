"""``lrc curves``: hit rate against cache ratio for LRU / LFU / Belady / SCH caches."""

from __future__ import annotations

import argparse
from typing import Any

import lrc_kernels as lk

from .._spec import POLICIES
from ._args import (
    _add_cache_options,
    _add_common,
    _add_compute,
    _add_output,
    _add_traces,
    _positive_int,
    _ratio,
)
from ._common import (
    EXIT_OK,
    _fmt_rho,
    _layer_mean,
    _valid_rhos,
    client_of,
    metric_inputs,
)
from ._output import _emit, _fmt, _model_frame, _rows, format_table

CURVE_RHO = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)


EPILOG = """\
Hit rate against cache ratio for LRU, LFU, Belady (optimal offline) and SCH (m-token
oracle) caches. Tidy output has one row per cache size (or per --rho); the table shows
the layer mean at common ratios.

examples:
  lrc curves traces/model.lrc.arrow
  lrc curves model.lrc.arrow --policy lru sch --m 16 --csv -o curves.csv
"""


def add_parser(sub: Any, fmt: type[argparse.HelpFormatter]) -> None:
    """Add ``lrc curves`` and its options to the sub-command parsers ``sub``."""
    p = sub.add_parser(
        "curves",
        help="hit rate against cache ratio for LRU/LFU/Belady/SCH",
        description="Expert-cache hit curves.",
        epilog=EPILOG,
        formatter_class=fmt,
    )
    _add_traces(p)
    p.add_argument(
        "--policy",
        nargs="+",
        choices=POLICIES,
        default=list(POLICIES),
        help="replacement policies (default: all four)",
    )
    p.add_argument(
        "--m", type=_positive_int, default=16, help="future window of the SCH policy (default: 16)"
    )
    p.add_argument(
        "--rho",
        nargs="+",
        type=_ratio,
        default=None,
        metavar="RHO",
        help="only these cache ratios (default: every cache size)",
    )
    _add_cache_options(p)
    _add_compute(p)
    _add_output(p)
    _add_common(p)
    p.set_defaults(func=cmd_curves)


def cmd_curves(args: argparse.Namespace) -> int:
    sources, prog = metric_inputs(args)
    results = []
    shown: dict[str, list[float]] = {}
    policies = list(dict.fromkeys(args.policy))
    for s in sources:
        for pol in policies:
            with prog.pass_over(s, pol.upper()) as bar:
                curve = lk.hit_curve(
                    s.path,
                    pol,
                    m=args.m if pol == "sch" else None,
                    level=args.level,
                    warm_start=not args.cold_start,
                    by_domain=args.by_domain,
                    backend=args.backend,
                    progress=bar,
                    client=client_of(args),
                )
            rhos = _valid_rhos(curve, args.rho, CURVE_RHO) if args.rho is not None else None
            results.append((s.name, curve, rhos))
            shown[s.name] = _valid_rhos(curve, args.rho, CURVE_RHO)
    rows = [r for name, c, rhos in results for r in _rows(name, c._columns(rhos))]

    def human() -> str:
        names = [f"sch(m={args.m})" if p == "sch" else p for p in policies]
        header = ["model"] + (["domain"] if args.by_domain else []) + ["rho", "C"] + names
        means = _layer_mean(rows, ("model", "domain", "policy", "rho"))
        sizes = {(r["model"], r["rho"]): r["cache_size"] for r in rows}
        groups: list[tuple] = []
        for r in rows:
            if (r["model"], r["domain"]) not in groups:
                groups.append((r["model"], r["domain"]))
        body = []
        for model, dom in groups:
            for rho in shown[model]:
                C = sizes.get((model, rho))
                line = [model] + ([dom] if args.by_domain else []) + [_fmt_rho(rho), C]
                line += [_fmt(means.get((model, dom, p, rho))) for p in policies]
                body.append(line)
        numeric = [h not in ("model", "domain") for h in header]
        note = (
            "\n(layer level: hit rates averaged over the MoE layers; C = rho * k)"
            if args.level == "layer"
            else "\n(model level: one cache; C = rho * L * k)"
        )
        return format_table(header, body, numeric) + note

    _emit(args, lambda: _model_frame([(n, c.to_pandas(rho)) for n, c, rho in results]), human)
    return EXIT_OK
