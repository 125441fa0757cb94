"""``lrc study``: a resumable study of many models x domains x trace shards
(:mod:`lrc_kernels.study`)."""

from __future__ import annotations

import argparse
import importlib.util
from typing import Any

from ._args import _add_common
from ._common import EXIT_OK, CLIError, _show_progress, client_of
from ._output import format_table

EPILOG = """\
STUDY.toml names, per model, the trace globs of each domain (docs/studies.md):

  m = [4, 16, 64]
  sch_m = 16
  [models.mixtral]
  code = "traces/mixtral/code-*.lrc.arrow"
  math = "traces/mixtral/math-*.lrc.arrow"

Writes DIR/srp.parquet, curves.parquet, summary.parquet, domains.parquet and the
HTML report (index.html). Partials are cached in DIR/cache: run the same command
again to resume a killed study (finished files are not recomputed).

examples:
  lrc study STUDY.toml --out results/
  lrc study STUDY.toml --scheduler local:8
  lrc study STUDY.toml --scheduler tcp://scheduler:8786
"""


def add_parser(sub: Any, fmt: type[argparse.HelpFormatter]) -> None:
    """Add ``lrc study`` and its options to the sub-command parsers ``sub``."""
    p = sub.add_parser(
        "study",
        help="resumable study of many models x domains (tables + report)",
        description="Run (or resume) the study of a manifest: partial results of every "
        "trace file, cached on disk, merged per model into Parquet tables and the report.",
        epilog=EPILOG,
        formatter_class=fmt,
    )
    p.add_argument("manifest", metavar="STUDY.toml", help="the study manifest")
    p.add_argument(
        "--out", default=None, metavar="DIR", help="results folder (default: the manifest's out)"
    )
    p.add_argument(
        "--scheduler",
        metavar="ADDRESS|local:N",
        help="compute on a Dask cluster: a scheduler address or local:N worker processes",
    )
    p.add_argument("--no-report", action="store_true", help="tables only (no matplotlib)")
    _add_common(p)
    p.set_defaults(func=cmd_study)


def cmd_study(args: argparse.Namespace) -> int:
    from .. import study

    if not args.no_report and importlib.util.find_spec("matplotlib") is None:
        raise CLIError(
            "the study's report needs matplotlib: pip install matplotlib, or --no-report"
        )
    run = study.run_study(
        args.manifest,
        args.out,
        client=client_of(args),
        progress=_show_progress(args),
        report=not args.no_report,
    )
    import json

    rows = json.loads((run.out / "summary.json").read_text())
    pols = [k for k in rows[0] if k.endswith("_rho2")]
    header = ["model", f"SRP (m={rows[0]['m']})", *[k.replace("_rho2", " ρ=2") for k in pols]]
    body = [[r["model"], _f(r["srp"]), *[_f(r[k]) for k in pols]] for r in rows]
    print(format_table(header, body, [False] + [True] * (len(header) - 1)))
    print(
        f"\n{run.out}: {run.computed} partials computed, {run.reused} reused "
        f"({sum(run.seconds.values()):.1f} s)"
    )
    return EXIT_OK


def _f(v: Any) -> str:
    return "–" if v is None else f"{v:.4f}"
