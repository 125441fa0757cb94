"""``lrc sch``: segment cache best hit rate (SCH) at cache ratios rho."""

from __future__ import annotations

import argparse
from typing import Any

import lrc_kernels as lk

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
    CLIError,
    _fmt_rho,
    _layer_mean,
    _valid_rhos,
    client_of,
    metric_inputs,
)
from ._output import _emit, _fmt, _model_frame, _rows, format_table

DEFAULT_RHO = (0.5, 1.0, 1.5, 2.0, 3.0)


EPILOG = """\
SCH (segment cache best hit rate) is the hit rate of an expert cache that knows the
next m tokens' routing, at cache ratio rho = C / k (C / (L*k) at model level); the
paper recommends rho = 2. At layer level each MoE layer has its own cache; the table
adds the mean over layers.

examples:
  lrc sch traces/model.lrc.arrow
  lrc sch model.lrc.arrow --m 4 16 --rho 1 2 4 --json
"""


def add_parser(sub: Any, fmt: type[argparse.HelpFormatter]) -> None:
    """Add ``lrc sch`` and its options to the sub-command parsers ``sub``."""
    p = sub.add_parser(
        "sch",
        help="segment cache best hit rate (SCH) at cache ratios rho",
        description="Segment cache best hit rate (SCH).",
        epilog=EPILOG,
        formatter_class=fmt,
    )
    _add_traces(p)
    p.add_argument(
        "--m",
        nargs="+",
        type=_positive_int,
        default=[16],
        metavar="M",
        help="future window(s) of the oracle cache (default: 16)",
    )
    p.add_argument(
        "--rho",
        nargs="+",
        type=_ratio,
        default=None,
        metavar="RHO",
        help="cache ratios C/k (default: 0.5 1 1.5 2 3, those that give a whole cache size)",
    )
    _add_cache_options(p)
    _add_compute(p)
    _add_output(p)
    _add_common(p)
    p.set_defaults(func=cmd_sch)


def cmd_sch(args: argparse.Namespace) -> int:
    sources, prog = metric_inputs(args)
    results = []
    rho_cols: list[float] = []
    for s in sources:
        with prog.pass_over(s, "SCH") as bar:
            curves = lk.sch(
                s.path,
                list(args.m),
                level=args.level,
                warm_start=not args.cold_start,
                by_domain=args.by_domain,
                backend=args.backend,
                progress=bar,
                client=client_of(args),
            )
        rhos = _valid_rhos(curves, args.rho, DEFAULT_RHO)
        if not rhos:
            raise CLIError(
                f"{s.name}: none of the default cache ratios {list(DEFAULT_RHO)} gives a "
                f"whole cache size for k = {curves.per_unit}; pass --rho"
            )
        results.append((s.name, curves, rhos))
        rho_cols.extend(v for v in rhos if v not in rho_cols)
    rows = [r for name, c, rhos in results for r in _rows(name, c._columns(rhos))]

    def human() -> str:
        rho_sorted = sorted(rho_cols)
        header = ["model"] + (["domain"] if args.by_domain else []) + ["m", "layer"]
        header += [f"rho={_fmt_rho(r)}" for r in rho_sorted]
        cell = {
            (r["model"], r["domain"], r["m"], r["layer"], r["rho"]): r["hit_rate"] for r in rows
        }
        groups: list[tuple] = []
        for r in rows:
            g = (r["model"], r["domain"], r["m"])
            if g not in groups:
                groups.append(g)
        means = _layer_mean(rows, ("model", "domain", "m", "rho"))
        body = []
        for model, dom, m in groups:
            layers = sorted(
                {r["layer"] for r in rows if (r["model"], r["domain"], r["m"]) == (model, dom, m)},
                key=lambda v: -1 if v is None else v,
            )
            for layer in layers:
                line = [model] + ([dom] if args.by_domain else []) + [m]
                line.append("all" if layer is None else layer)
                line += [_fmt(cell.get((model, dom, m, layer, rho))) for rho in rho_sorted]
                body.append(line)
            if args.level == "layer" and len(layers) > 1:
                line = [model] + ([dom] if args.by_domain else []) + [m, "mean"]
                line += [_fmt(means.get((model, dom, m, rho))) for rho in rho_sorted]
                body.append(line)
        numeric = [h not in ("model", "domain") for h in header]
        note = (
            ""
            if args.level == "model"
            else "\n(layer level: one cache per MoE layer; 'mean' averages the layers)"
        )
        return format_table(header, body, numeric) + note

    _emit(args, lambda: _model_frame([(n, c.to_pandas(rho)) for n, c, rho in results]), human)
    return EXIT_OK
