"""Argument types and the option groups several commands share."""

from __future__ import annotations

import argparse
import math
from typing import Any

from .._spec import BACKENDS, LEVELS_CACHE, POLICY_PARAMS


def _whole_at_least(text: str, lo: int) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v < lo:
        raise argparse.ArgumentTypeError(f"expected a whole number >= {lo}, got {v}")
    return v


def _positive_int(text: str) -> int:
    return _whole_at_least(text, 1)


def _nonneg_int(text: str) -> int:
    return _whole_at_least(text, 0)


def _ratio(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise argparse.ArgumentTypeError(f"a cache ratio must be a number > 0, got {text!r}")
    return v


def _confidence(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < v < 1:
        raise argparse.ArgumentTypeError(f"confidence must lie strictly between 0 and 1, got {v}")
    return v


def _add_common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("general")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    g.add_argument("--debug", action="store_true", help="show the full traceback on errors")


def _add_output(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "output", "default: an aligned table for people; these give tidy rows for programs"
    )
    x = g.add_mutually_exclusive_group()
    x.add_argument(
        "--json", dest="format", action="store_const", const="json", help="JSON list of row objects"
    )
    x.add_argument(
        "--csv", dest="format", action="store_const", const="csv", help="CSV with a header line"
    )
    x.add_argument(
        "--parquet",
        dest="format",
        action="store_const",
        const="parquet",
        help="Parquet table (needs -o FILE or a redirected stdout)",
    )
    g.add_argument(
        "-o", "--output", metavar="FILE", help="write to FILE instead of stdout ('-' is stdout)"
    )


def _add_traces(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "traces",
        nargs="+",
        metavar="TRACE",
        help="trace file (.lrc.arrow), or a directory of shards; each TRACE is one model",
    )


def _add_cache_options(p: argparse.ArgumentParser) -> None:
    """--level and --cold-start, shared by the cache commands (sch, curves)."""
    p.add_argument(
        "--level",
        default="layer",
        choices=LEVELS_CACHE,
        help="one cache per layer, or one shared by all layers (default: layer)",
    )
    p.add_argument(
        "--cold-start",
        action="store_true",
        help="count first accesses as misses (default: warm start, as the paper)",
    )


def _add_compute(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--by-domain", action="store_true", help="one result per domain label of the sequences"
    )
    p.add_argument(
        "--backend",
        default="auto",
        choices=BACKENDS,
        help="compute backend (default: auto)",
    )
    p.add_argument(
        "--scheduler",
        metavar="ADDRESS|local:N",
        help="compute on a Dask cluster, one task per trace file: a scheduler address "
        "(tcp://host:8786) or local:N for N worker processes on this machine (needs the "
        "distributed extra; docs/studies.md)",
    )


def _add_policy_params(p: argparse.ArgumentParser) -> None:
    """The one parameter of each parameterised policy (defaults in ``_spec.POLICY_PARAMS``)."""
    p.add_argument("--decay", type=float, default=None, help="lfu-decay: factor per token (0.95)")
    p.add_argument("--window", type=int, default=None, help="lfu-window: tokens counted (16)")
    p.add_argument(
        "--prefix", type=int, default=None, help="static-prefix: calibration tokens (64)"
    )
    p.add_argument(
        "--pinned", type=float, default=None, help="pinned-lru: pinned share of the cache (0.5)"
    )


def policy_params(args: argparse.Namespace, policies: list[str]) -> dict[str, dict[str, Any]]:
    """Each policy's keyword arguments for its parameter; a parameter for a policy that is
    not asked for is an error (``ValueError``: the command reports it)."""
    owners = {kw: p for p, (kw, _) in POLICY_PARAMS.items()}
    for kw, owner in owners.items():
        if getattr(args, kw) is not None and owner not in policies:
            raise ValueError(f"--{kw} applies to --policy {owner}, which is not asked for")
    return {
        p: {POLICY_PARAMS[p][0]: getattr(args, POLICY_PARAMS[p][0])} if p in POLICY_PARAMS else {}
        for p in policies
    }
