"""``lrc report``: the HTML report with figures and tables (:mod:`lrc_kernels.report`)."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from typing import Any

from .._spec import BACKENDS
from ._args import _add_common, _add_traces, _nonneg_int, _positive_int, _ratio
from ._common import EXIT_OK, CLIError, Progress, _show_progress, open_sources

EPILOG = """\
Writes DIR/index.html (self-contained: figures embedded), the figures as PNG files
and the numbers as report.json. Several traces appear side by side.

examples:
  lrc report traces/*.lrc.arrow --out report/
"""


def add_parser(sub: Any, fmt: type[argparse.HelpFormatter]) -> None:
    """Add ``lrc report`` and its options to the sub-command parsers ``sub``."""
    p = sub.add_parser(
        "report",
        help="HTML report with figures and tables",
        description="Write a self-contained HTML report with PNG figures: SRP "
        "against m, hit rate against rho (SCH, LRU, LFU, Belady), a per-layer "
        "SRP heatmap, per-domain bars, tables and trace metadata.",
        epilog=EPILOG,
        formatter_class=fmt,
    )
    _add_traces(p)
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument(
        "--m",
        nargs="+",
        type=_positive_int,
        default=None,
        metavar="M",
        help="segment lengths for SRP (default: 2 4 8 ... 256; SRP at m = 1 is always 1)",
    )
    p.add_argument(
        "--sch-m",
        type=_positive_int,
        default=16,
        metavar="M",
        help="future window of SCH and the m of per-domain bars (default: 16)",
    )
    p.add_argument(
        "--bootstrap",
        type=_nonneg_int,
        default=0,
        metavar="B",
        help="bootstrap resamples for SRP confidence bands (default: 0)",
    )
    p.add_argument("--title", default=None, help="report title")
    dep = p.add_argument_group("Deployment section (predicted decode tokens/s)")
    dep.add_argument("--expert-bytes", type=_positive_int, help="bytes of one routed expert")
    dep.add_argument("--link-gbps", type=_ratio, help="host-to-fast-memory link, GB/s")
    dep.add_argument("--base-ms", type=float, help="ms per token with every expert resident")
    p.add_argument(
        "--all-policies",
        action="store_true",
        help="per-size policies at every cache size per layer, and every policy on a shared "
        "cache (one simulation per size: slower; default: per-size policies at rho = 2)",
    )
    p.add_argument(
        "--backend",
        default="auto",
        choices=BACKENDS,
        help="compute backend (default: auto)",
    )
    _add_common(p)
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    for mod, why in (("matplotlib", "draws its figures"), ("pandas", "writes report.json")):
        if importlib.util.find_spec(mod) is None:
            raise CLIError(
                f"lrc report {why} with {mod}, which is not installed: "
                "pip install 'lrc-kernels[report]'"
            )
    from .. import report

    sources = open_sources(args.traces)
    prog = Progress(_show_progress(args))
    path = report.write_report(
        sources,
        args.out,
        ms=args.m,
        sch_m=args.sch_m,
        bootstrap=args.bootstrap,
        title=args.title,
        backend=args.backend,
        progress=prog,
        all_policies=args.all_policies,
        deployment={
            k: v
            for k, v in (
                ("expert_bytes", args.expert_bytes),
                ("link_gbps", args.link_gbps),
                ("base_ms", args.base_ms),
            )
            if v is not None
        },
    )
    if not args.quiet:
        print(f"wrote {path}", file=sys.stderr)
    print(path)
    return EXIT_OK
