"""What every command shares: exit codes, the error class, trace sources, progress bars,
the domain-label check and cache-ratio helpers."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..io import TraceSource

PROG = "lrc"

# exit codes
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class CLIError(Exception):
    """A problem with the user's input, reported as one line without a traceback."""


# ------------------------------------------------------------------------- sources
def open_sources(paths: Sequence[str], *, allow_incomplete: bool = False) -> list[TraceSource]:
    """:func:`lrc_kernels.io.open_sources`, refusing numpy arrays with the convert command."""
    from .. import io as trace_io

    for p in paths:
        if p.endswith((".npz", ".npy")) and Path(p).is_file():
            raise CLIError(
                f"{p}: numpy arrays are not a trace file; convert it first: "
                f"lrc convert {p} --out {Path(p).stem}.lrc.arrow (add --num-experts E)"
            )
    return trace_io.open_sources(paths, allow_incomplete=allow_incomplete)


# ------------------------------------------------------------------------ progress
def _show_progress(args: argparse.Namespace) -> bool:
    """Bars only for a person watching: not with --quiet and only when stderr is a terminal."""
    if getattr(args, "quiet", False):
        return False
    try:
        if not sys.stderr.isatty():
            return False
    except (AttributeError, ValueError):
        return False
    return importlib.util.find_spec("tqdm") is not None  # bars are optional


class _TokenBar:
    """The API's ``progress=`` callback: it is called as each batch *starts*, so a batch
    counts as done when the next one starts, and the last one when the pass ends."""

    def __init__(self, bar: Any) -> None:
        self.bar = bar
        self.pending = 0
        self.tokens = 0

    def __call__(self, batch: Any) -> None:
        self.bar.update(self.pending)
        self.pending = batch.num_tokens
        self.tokens += batch.num_tokens

    def close(self) -> None:
        self.bar.update(self.pending)
        self.pending = 0
        self.bar.close()


class Progress:
    """Token progress bars (tqdm, on stderr) for streaming passes over trace files.

    ``Progress(False)`` hands out ``False`` (no bar) from :meth:`pass_over`, so the code
    paths are the same with and without bars.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    @contextmanager
    def pass_over(self, source: TraceSource, what: str) -> Iterator[_TokenBar | bool]:
        """A ``progress=`` callback advancing a bar over ``source``'s tokens (or False)."""
        if not self.enabled:
            yield False
            return
        from tqdm.auto import tqdm

        bar = tqdm(
            total=source.reader.num_tokens,
            unit="tok",
            unit_scale=True,
            leave=False,
            desc=f"{source.name}: {what}",
            delay=0.5,
            file=sys.stderr,
        )
        cb = _TokenBar(bar)
        try:
            yield cb
        finally:
            cb.close()


# ------------------------------------------------------------------ domains, ratios
_DOMAIN_ADVICE = (
    "label the sequences when converting: lrc convert PART.npz --domain LABEL --out "
    "PART.lrc.arrow for each domain's arrays (or store a 'domains' array in the .npz), then "
    "lrc convert PART1.lrc.arrow PART2.lrc.arrow --out ALL.lrc.arrow; lrc capture names a "
    "domain after each text file"
)

# the API's advice in Python terms (a substring of its message) -> the same in CLI terms


def _check_domains(args: argparse.Namespace, sources: Sequence[TraceSource]) -> None:
    """--by-domain on a trace without labels: say so before computing, in CLI terms."""
    if not getattr(args, "by_domain", False):
        return
    for s in sources:
        doms = s.reader.domains()
        missing = sum(d is None for d in doms)
        if missing:
            which = (
                "no domain labels" if missing == len(doms) else f"{missing:,} unlabelled sequences"
            )
            raise CLIError(
                f"lrc {args.command} --by-domain: {s.path} has {which}; {_DOMAIN_ADVICE}"
            )


def _valid_rhos(curve: Any, rhos: Sequence[float] | None, default: Sequence[float]) -> list[float]:
    """The user's ratios (each must give a whole cache size: an error names the bad one), or
    the defaults that do and are among the curve's sizes."""
    from .._results import cache_size_for

    n = curve.num_experts * (curve.num_layers if curve.level == "model" else 1)
    if rhos is not None:
        for r in rhos:
            cache_size_for(r, curve.per_unit, n)
        return list(rhos)
    out = []
    for r in default:
        try:
            C = cache_size_for(r, curve.per_unit, n)
        except ValueError:
            continue
        if int(C) in set(curve.sizes.tolist()):  # a curve on a grid: only its sizes
            out.append(r)
    return out


def _layer_mean(rows: list[dict[str, Any]], keys: Sequence[str]) -> dict[tuple, float]:
    """Mean hit rate over layers for each combination of ``keys`` (NaN-free rows)."""
    acc: dict[tuple, list[float]] = {}
    for r in rows:
        k = tuple(r[c] for c in keys)
        acc.setdefault(k, []).append(r["hit_rate"])
    return {k: (sum(v) / len(v)) for k, v in acc.items()}


def _fmt_rho(r: float) -> str:
    return f"{r:g}"


def client_of(args: argparse.Namespace) -> Any:
    """The Dask client of ``--scheduler`` (None without it): made on first use, closed by
    :func:`close_client` when the command ends."""
    spec = getattr(args, "scheduler", None)
    if spec is None:
        return None
    if getattr(args, "_client", None) is None:
        if importlib.util.find_spec("distributed") is None:
            raise CLIError(
                "--scheduler needs Dask distributed: pip install 'lrc-kernels[distributed]'"
            )
        from ..cluster import connect

        args._client = connect(spec)
    return args._client


def close_client(args: argparse.Namespace) -> None:
    """Close the client of ``--scheduler`` (and its LocalCluster with ``local:N``)."""
    client = getattr(args, "_client", None)
    if client is not None:
        args._client = None
        client.close()


def metric_inputs(args: argparse.Namespace) -> tuple[list[TraceSource], Progress]:
    """The trace sources of a metric command (checked for ``--by-domain``) and its bars."""
    sources = open_sources(args.traces)
    _check_domains(args, sources)
    return sources, Progress(_show_progress(args))
