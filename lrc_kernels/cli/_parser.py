"""The ``lrc`` argument parser: the program's options, then one sub-command per module."""

from __future__ import annotations

import argparse

from . import (
    _capture,
    _convert,
    _curves,
    _diagnose,
    _info,
    _plan,
    _replay,
    _report,
    _sch,
    _srp,
    _study,
)
from ._common import PROG

# sub-commands in the order ``lrc --help`` lists them
COMMANDS = (
    _info, _srp, _sch, _curves, _diagnose, _plan, _replay, _report, _study, _convert, _capture,
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The ``lrc`` argument parser (one sub-command per task)."""
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog=PROG,
        formatter_class=fmt,
        description=(
            "Local routing consistency of Mixture-of-Experts models (arXiv 2505.16056):\n"
            "SRP, SCH and LRU/LFU/Belady hit curves from routing traces."
        ),
        epilog=(
            "start here:\n"
            "  lrc info traces/*.lrc.arrow            what is in a trace\n"
            "  lrc srp traces/*.lrc.arrow             segment routing best performance\n"
            "  lrc sch traces/*.lrc.arrow             oracle expert-cache hit rate at rho\n"
            "  lrc report traces/*.lrc.arrow --out r  HTML report with the paper's figures\n"
            "\n'lrc COMMAND --help' explains each command; docs/cli.md has the details."
        ),
    )
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"lrc_kernels {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    for command in COMMANDS:
        command.add_parser(sub, fmt)
    return parser
