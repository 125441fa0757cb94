"""``lrc srp``: segment routing best performance (SRP) for segment lengths m."""

from __future__ import annotations

import argparse
from typing import Any

import lrc_kernels as lk

from .._spec import LEVELS_SRP
from ._args import (
    _add_common,
    _add_compute,
    _add_output,
    _add_traces,
    _confidence,
    _nonneg_int,
    _positive_int,
)
from ._common import EXIT_OK, client_of, metric_inputs
from ._output import _emit, _fmt, _model_frame, _rows, format_table

DEFAULT_SRP_M = (4, 16, 64, 256)


EPILOG = """\
SRP (segment routing best performance) is the F1 of the best segment router that
assigns each expert to a whole window of m tokens when it is used by at least p* of
them. Higher SRP means routing that stays put over m tokens (good for offloading).
Columns: srp, threshold (p*), ratio (preds/acts: experts kept per real activation),
ci_low/ci_high (basic bootstrap interval, with --bootstrap).

examples:
  lrc srp traces/model.lrc.arrow
  lrc srp a.lrc.arrow b.lrc.arrow --m 1 4 16 64 --level layer --csv > srp.csv
  lrc srp model.lrc.arrow --m 16 --by-domain --bootstrap 1000
"""


def add_parser(sub: Any, fmt: type[argparse.HelpFormatter]) -> None:
    """Add ``lrc srp`` and its options to the sub-command parsers ``sub``."""
    p = sub.add_parser(
        "srp",
        help="segment routing best performance (SRP) for segment lengths m",
        description="Segment routing best performance (SRP).",
        epilog=EPILOG,
        formatter_class=fmt,
    )
    _add_traces(p)
    p.add_argument(
        "--m",
        nargs="+",
        type=_positive_int,
        default=list(DEFAULT_SRP_M),
        metavar="M",
        help="segment lengths (default: 4 16 64 256)",
    )
    p.add_argument(
        "--level",
        default="model",
        choices=LEVELS_SRP,
        help="pool histograms over the whole model, each layer or each expert (default: model)",
    )
    p.add_argument(
        "--bootstrap",
        type=_nonneg_int,
        default=0,
        metavar="B",
        help="bootstrap resamples of the sequences for a confidence interval "
        "(the paper: 1000; default 0 = none)",
    )
    p.add_argument(
        "--confidence",
        type=_confidence,
        default=0.95,
        help="confidence level of the interval (default 0.95)",
    )
    p.add_argument("--seed", type=_nonneg_int, default=0, help="bootstrap seed (default 0)")
    _add_compute(p)
    _add_output(p)
    _add_common(p)
    p.set_defaults(func=cmd_srp)


def cmd_srp(args: argparse.Namespace) -> int:
    sources, prog = metric_inputs(args)
    results = []
    for s in sources:
        with prog.pass_over(s, "SRP") as bar:
            res = lk.srp(
                s.path,
                list(args.m),
                level=args.level,
                by_domain=args.by_domain,
                bootstrap=args.bootstrap,
                confidence=args.confidence,
                seed=args.seed,
                backend=args.backend,
                progress=bar,
                client=client_of(args),
            )
        results.append((s.name, res))
    rows = [r for name, res in results for r in _rows(name, res._columns())]

    def human() -> str:
        header = ["model"]
        if args.level != "model":
            header.append("layer")
        if args.level == "expert":
            header.append("expert")
        if args.by_domain:
            header.append("domain")
        header += ["m", "SRP", "p*", "preds/acts"]
        if args.bootstrap:
            header.append(f"{args.confidence:.0%} CI")
        header.append("windows")
        body = []
        for r in rows:
            line = [r["model"]]
            if args.level != "model":
                line.append(r["layer"])
            if args.level == "expert":
                line.append(r["expert"])
            if args.by_domain:
                line.append(r["domain"])
            line += [r["m"], _fmt(r["srp"]), r["threshold"], _fmt(r["ratio"], 3)]
            if args.bootstrap:
                line.append(f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]")
            line.append(f"{r['windows']:,}")
            body.append(line)
        numeric = [h not in ("model", "domain") for h in header]
        return format_table(header, body, numeric)

    _emit(args, lambda: _model_frame([(n, res.to_pandas()) for n, res in results]), human)
    return EXIT_OK
