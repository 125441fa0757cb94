"""``lrc``: the command line tool for routing traces.

Every metric command takes one or more trace files (each one model), computes the metric
with the public API (:func:`lrc_kernels.srp`, :func:`lrc_kernels.sch`,
:func:`lrc_kernels.hit_curve`) and prints an aligned table, or tidy rows with ``--json``,
``--csv`` or ``--parquet``. ``docs/cli.md`` documents every command and column.

Errors are one line on stderr and a non-zero exit status (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .io import TraceSource

__all__ = [
    "main",
    "build_parser",
    "open_sources",
    "CLIError",
]

PROG = "lrc"
DEFAULT_SRP_M = (4, 16, 64, 256)
DEFAULT_RHO = (0.5, 1.0, 1.5, 2.0, 3.0)
CURVE_RHO = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)
POLICIES = ("lru", "lfu", "belady", "sch")

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
    from . import io as trace_io

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


# -------------------------------------------------------------------------- output
def _fmt(v: Any, digits: int = 4) -> str:
    """One table cell: numbers with ``digits`` decimals, NaN and None as ``-``."""
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):
        v = v.item()
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def format_table(
    header: Sequence[str], rows: Sequence[Sequence[Any]], numeric: Sequence[bool]
) -> str:
    """Aligned plain-text table: text columns left-aligned, numbers right-aligned."""
    cells = [[str(c) for c in r] for r in rows]
    widths = [len(h) for h in header]
    for r in cells:
        for i, c in enumerate(r):
            widths[i] = max(widths[i], len(c))

    def line(vals: Sequence[str]) -> str:
        parts = [
            v.rjust(widths[i]) if numeric[i] else v.ljust(widths[i]) for i, v in enumerate(vals)
        ]
        return "  ".join(parts).rstrip()

    out = [line(header), "  ".join("-" * w for w in widths)]
    out.extend(line(r) for r in cells)
    return "\n".join(out)


def _out_format(args: argparse.Namespace) -> str:
    return getattr(args, "format", None) or "table"


def _require_pandas(args: argparse.Namespace) -> None:
    """--json/--csv/--parquet write through pandas: say so before computing anything."""
    from ._results import PANDAS_EXTRA

    try:
        import pandas  # noqa: F401
    except ImportError:
        raise CLIError(
            f"lrc {args.command} --{_out_format(args)} writes its rows with pandas, which is "
            f"not installed: {PANDAS_EXTRA} (or leave out --{_out_format(args)} for a table)"
        ) from None


def _rows(name: str, cols: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows (plain Python values, with a ``model`` key) of a result's tidy columns, for the
    human tables; the same columns ``to_pandas()`` makes into a frame. Keys a level or
    option does not have (layer, expert, domain, m) are None."""
    keys = list(cols)
    base = {"model": name, "layer": None, "expert": None, "domain": None, "m": None}
    values = zip(*(cols[k].tolist() for k in keys), strict=True)
    return [{**base, **dict(zip(keys, v, strict=True))} for v in values]


def _model_frame(frames: Sequence[tuple[str, Any]]) -> Any:
    """The frames of several models as one: a ``model`` column first, then the union of the
    columns in the frames' order (an integer column some frames lack becomes nullable)."""
    import pandas as pd

    order: list[str] = ["model"]
    for _, f in frames:
        prev = "model"
        for c in f.columns:
            if c not in order:
                order.insert(order.index(prev) + 1, c)
            prev = c
    parts = [f.assign(model=name) for name, f in frames]
    out = pd.concat(parts, ignore_index=True)[order]
    for c in order:
        ints = [pd.api.types.is_integer_dtype(f[c]) for _, f in frames if c in f.columns]
        if ints and all(ints) and len(ints) < len(frames):
            out[c] = out[c].astype("Int64")
    return out


def _info_frame(rows: list[dict[str, Any]]) -> Any:
    """The ``lrc info`` rows as a frame: whole-number columns stay integers beside nulls."""
    import pandas as pd

    df = pd.DataFrame(rows, columns=list(rows[0]) if rows else None)
    for c in df.columns:
        vals = [r[c] for r in rows if r[c] is not None]
        if vals and all(isinstance(v, int) and not isinstance(v, bool) for v in vals):
            df[c] = pd.array([r[c] for r in rows], dtype="Int64")
    return df


def write_frame(df: Any, args: argparse.Namespace) -> None:
    """Write a tidy frame as JSON, CSV or Parquet to ``--output`` (or stdout).

    CSV is ``df.to_csv(index=False)`` (NaN: empty cell); JSON a list of row objects and
    Parquet a table, both through Arrow (NaN and missing values: null).
    """
    import pyarrow as pa

    fmt = _out_format(args)
    target = getattr(args, "output", None)
    to_stdout = target in (None, "-")
    if fmt == "csv":
        text = df.to_csv(index=False, lineterminator="\n")
    else:
        table = pa.Table.from_pandas(df, preserve_index=False).replace_schema_metadata(None)
        if fmt == "parquet":
            import pyarrow.parquet as pq

            if not to_stdout:
                pq.write_table(table, target)
                return
            if sys.stdout.isatty():
                raise CLIError(
                    "--parquet writes binary data: give a file with -o/--output FILE.parquet "
                    "or redirect stdout"
                )
            buf = pa.BufferOutputStream()
            pq.write_table(table, buf)
            sys.stdout.flush()
            sys.stdout.buffer.write(buf.getvalue().to_pybytes())
            sys.stdout.buffer.flush()
            return
        text = json.dumps(table.to_pylist(), indent=1, allow_nan=False) + "\n"
    if to_stdout:
        sys.stdout.write(text)
    else:
        Path(target).write_text(text, encoding="utf-8")


def _emit(args: argparse.Namespace, frame: Callable[[], Any], human: Callable[[], str]) -> None:
    """Print the human table, or write ``frame()`` with --json/--csv/--parquet."""
    if _out_format(args) == "table":
        text = human()
        if getattr(args, "output", None) not in (None, "-"):
            Path(args.output).write_text(text + "\n", encoding="utf-8")
        else:
            print(text)
    else:
        write_frame(frame(), args)


# ---------------------------------------------------------------------- arguments
def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {v}")
    return v


def _nonneg_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {v}")
    return v


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
        choices=("layer", "model"),
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
        choices=("auto", "cpu", "gpu", "reference"),
        help="compute backend (default: auto)",
    )


_EPILOG_SRP = """\
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

_EPILOG_SCH = """\
SCH (segment cache best hit rate) is the hit rate of an expert cache that knows the
next m tokens' routing, at cache ratio rho = C / k (C / (L*k) at model level); the
paper recommends rho = 2. At layer level each MoE layer has its own cache; the table
adds the mean over layers.

examples:
  lrc sch traces/model.lrc.arrow
  lrc sch model.lrc.arrow --m 4 16 --rho 1 2 4 --json
"""

_EPILOG_CURVES = """\
Hit rate against cache ratio for LRU, LFU, Belady (optimal offline) and SCH (m-token
oracle) caches. Tidy output has one row per cache size (or per --rho); the table shows
the layer mean at common ratios.

examples:
  lrc curves traces/model.lrc.arrow
  lrc curves model.lrc.arrow --policy lru sch --m 16 --csv -o curves.csv
"""

_EPILOG_REPORT = """\
Writes DIR/index.html (self-contained: figures embedded), the figures as PNG files
and the numbers as report.json. Several traces appear side by side.

examples:
  lrc report traces/*.lrc.arrow --out report/
"""

_EPILOG_CONVERT = """\
Writes one trace file from (through lrc_kernels.convert):
  .npz          an id array named experts / indices / expert_ids / topk_ids / ids,
                (T, L, k) or (S, T, L, k), optional offsets, scores or weights,
                domains, moe_layer_ids, token_ids
  .npy          one id array (T, L, k) or (S, T, L, k); needs --num-experts
  .safetensors  the paper code's per-layer top-k files (a directory of them, one per
                layer, or the files in layer order); needs --num-experts
  .lrc.arrow    trace files or shard directories: merged and recompressed
Several inputs are concatenated in order; they must agree on E, L and k.
--num-experts is required unless the input stores it: the highest experts may never
be chosen, so E cannot be inferred from the ids.

examples:
  lrc convert routing.npz --out model.lrc.arrow --num-experts 64 --split 512 --model my-moe
  lrc convert topk_dir/ --out paper.lrc.arrow --num-experts 64
  lrc convert shards/ --out merged.lrc.arrow
"""

_EPILOG_CAPTURE = """\
Runs a local Hugging Face MoE model over text files and records every router decision.
Each text file is one domain named after the file; write DOMAIN=FILE to name it.
Nothing is downloaded.

examples:
  lrc capture ./Qwen1.5-MoE-A2.7B web.txt code.txt --out qwen.lrc.arrow --seq-len 512
"""


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
    from . import __version__

    parser.add_argument("--version", action="version", version=f"lrc_kernels {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser(
        "info",
        help="model, shape, sizes and domains of traces",
        description="Show what each trace holds: model, E, k, layers, "
        "sequences, tokens, domains, file size and bytes per activation.",
        formatter_class=fmt,
    )
    _add_traces(p)
    p.add_argument(
        "--allow-incomplete",
        action="store_true",
        help="read the complete part of files still being written (or interrupted)",
    )
    p.add_argument(
        "--verify",
        action="store_true",
        help="read every record batch and check ids, offsets, weights and domains "
        "(exit 1 at the first bad place); without it only the footer is read",
    )
    _add_output(p)
    _add_common(p)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser(
        "srp",
        help="segment routing best performance (SRP) for segment lengths m",
        description="Segment routing best performance (SRP).",
        epilog=_EPILOG_SRP,
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
        choices=("model", "layer", "expert"),
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

    p = sub.add_parser(
        "sch",
        help="segment cache best hit rate (SCH) at cache ratios rho",
        description="Segment cache best hit rate (SCH).",
        epilog=_EPILOG_SCH,
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

    p = sub.add_parser(
        "curves",
        help="hit rate against cache ratio for LRU/LFU/Belady/SCH",
        description="Expert-cache hit curves.",
        epilog=_EPILOG_CURVES,
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

    p = sub.add_parser(
        "report",
        help="HTML report with figures and tables",
        description="Write a self-contained HTML report with PNG figures: SRP "
        "against m, hit rate against rho (SCH, LRU, LFU, Belady), a per-layer "
        "SRP heatmap, per-domain bars, tables and trace metadata.",
        epilog=_EPILOG_REPORT,
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
    p.add_argument(
        "--backend",
        default="auto",
        choices=("auto", "cpu", "gpu", "reference"),
        help="compute backend (default: auto)",
    )
    _add_common(p)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser(
        "convert",
        help="numpy routing arrays (or trace shards) to a trace file",
        description="Write a trace file (.lrc.arrow) from numpy arrays or existing trace files.",
        epilog=_EPILOG_CONVERT,
        formatter_class=fmt,
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help=".npz/.npy arrays or trace files")
    p.add_argument("--out", required=True, metavar="FILE", help="trace file to write")
    p.add_argument(
        "--num-experts",
        type=_positive_int,
        default=None,
        metavar="E",
        help="experts per layer; required unless the input stores it (.npz with "
        "num_experts, trace files); never guessed from the ids",
    )
    p.add_argument(
        "--split",
        type=_positive_int,
        default=None,
        metavar="T",
        help="cut sequences into pieces of T tokens (the paper uses 512)",
    )
    p.add_argument("--model", default=None, help="model name to store in the metadata")
    p.add_argument(
        "--domain",
        default=None,
        help="domain label for every sequence of numpy inputs and of unlabelled trace files",
    )
    p.add_argument("--no-weights", action="store_true", help="do not store gate weights")
    p.add_argument(
        "--unwrap-int8",
        action="store_true",
        help="safetensors int8 ids: read negative values as ids 128..255 (E <= 256)",
    )
    p.add_argument(
        "--allow-incomplete",
        action="store_true",
        help="trace files whose writer was interrupted: convert their complete batches",
    )
    _add_common(p)
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser(
        "capture",
        help="record routing of a local Hugging Face MoE model",
        description="Capture a routing trace (needs torch and transformers).",
        epilog=_EPILOG_CAPTURE,
        formatter_class=fmt,
    )
    p.add_argument("model_dir", metavar="MODEL_DIR", help="local transformers model directory")
    p.add_argument(
        "texts",
        nargs="+",
        metavar="TEXT",
        help="UTF-8 text files, one domain each (DOMAIN=FILE names the domain)",
    )
    p.add_argument("--out", required=True, metavar="FILE", help="trace file to write")
    p.add_argument(
        "--seq-len",
        type=_positive_int,
        default=512,
        metavar="T",
        help="tokens per sequence; a shorter last piece of a text is dropped "
        "(default: 512, as the paper)",
    )
    p.add_argument(
        "--max-sequences",
        type=_positive_int,
        default=None,
        metavar="N",
        help="at most N sequences per domain (default: every whole sequence of the text)",
    )
    p.add_argument(
        "--batch-size",
        type=_positive_int,
        default=8,
        metavar="B",
        help="sequences per forward pass (default: 8)",
    )
    p.add_argument(
        "--device", default="cpu", help="torch device: cpu, cuda, cuda:1, ... (default: cpu)"
    )
    p.add_argument(
        "--dtype",
        default=None,
        help="load the weights in this dtype, e.g. bfloat16 (default: the checkpoint's dtype)",
    )
    p.add_argument(
        "--weights", action="store_true", help="also record gate weights (default: ids only)"
    )
    _add_common(p)
    p.set_defaults(func=cmd_capture)
    return parser


# ------------------------------------------------------------------------ commands
def cmd_info(args: argparse.Namespace) -> int:
    sources = open_sources(args.traces, allow_incomplete=args.allow_incomplete)
    rows = [s.info() for s in sources]
    for s, r in zip(sources, rows, strict=True):
        r["verified"] = _verify_source(s, r) if getattr(args, "verify", False) else False

    def human() -> str:
        blocks = []
        for r in rows:
            bpa = r["bytes_per_activation"]
            pairs = [
                ("model", r["model"]),
                ("path", r["path"] + (f" ({r['files']} files)" if r["files"] > 1 else "")),
                ("experts (E)", r["num_experts"]),
                ("top-k (k)", r["top_k"]),
                (
                    "MoE layers (L)",
                    r["num_layers"]
                    if r["layer_ids"] is None
                    else f"{r['num_layers']} (model layers {r['layer_ids']})",
                ),
                ("sequences", f"{r['sequences']:,}"),
                ("tokens", f"{r['tokens']:,}"),
                ("activations", f"{r['activations']:,} (tokens x L x k)"),
                ("domains", r["domains"] or "none"),
                ("file size", _human_bytes(r["file_bytes"])),
                ("bytes/activation", "-" if bpa is None else f"{bpa:.3f}"),
                ("created", r["created"] or "-"),
                (
                    "data",
                    "verified (every batch read and checked)"
                    if r["verified"]
                    else "not verified (metadata and index only; lrc info --verify reads the data)",
                ),
            ]
            w = max(len(k) for k, _ in pairs)
            blocks.append("\n".join(f"{k.ljust(w)}  {v}" for k, v in pairs))
        return "\n\n".join(blocks)

    _emit(args, lambda: _info_frame(rows), human)
    return EXIT_OK


def _verify_source(source: TraceSource, row: dict[str, Any]) -> bool:
    """Decode every record batch (ids, offsets, weights, domains checked); raise at the first
    bad place, or when the data disagree with the index the footer figures come from."""
    from .io import TraceFileError

    tokens = sequences = 0
    try:
        for b in source.reader.batches(1 << 20, weights=True):
            tokens += b.num_tokens
            sequences += b.num_sequences
    except (TraceFileError, ValueError, TypeError) as exc:
        raise CLIError(f"{source.path}: verification failed: {exc}") from None
    if (tokens, sequences) != (row["tokens"], row["sequences"]):
        raise CLIError(
            f"{source.path}: verification failed: the data hold {sequences} sequences and "
            f"{tokens} tokens but the index says {row['sequences']} and {row['tokens']}"
        )
    return True


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def cmd_srp(args: argparse.Namespace) -> int:
    import lrc_kernels as lk

    sources = open_sources(args.traces)
    _check_domains(args, sources)
    prog = Progress(_show_progress(args))
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


def _valid_rhos(curve: Any, rhos: Sequence[float] | None, default: Sequence[float]) -> list[float]:
    """The user's ratios (each must give a whole cache size: an error names the bad one), or
    the defaults that do."""
    from ._results import cache_size_for

    n = curve.num_sizes
    if rhos is not None:
        for r in rhos:
            cache_size_for(r, curve.per_unit, n)
        return list(rhos)
    out = []
    for r in default:
        try:
            cache_size_for(r, curve.per_unit, n)
        except ValueError:
            continue
        out.append(r)
    return out


def _layer_mean(rows: list[dict[str, Any]], keys: Sequence[str]) -> dict[tuple, float]:
    """Mean hit rate over layers for each combination of ``keys`` (NaN-free rows)."""
    acc: dict[tuple, list[float]] = {}
    for r in rows:
        k = tuple(r[c] for c in keys)
        acc.setdefault(k, []).append(r["hit_rate"])
    return {k: (sum(v) / len(v)) for k, v in acc.items()}


def cmd_sch(args: argparse.Namespace) -> int:
    import lrc_kernels as lk

    sources = open_sources(args.traces)
    _check_domains(args, sources)
    prog = Progress(_show_progress(args))
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


def _fmt_rho(r: float) -> str:
    return f"{r:g}"


def cmd_curves(args: argparse.Namespace) -> int:
    import lrc_kernels as lk

    sources = open_sources(args.traces)
    _check_domains(args, sources)
    prog = Progress(_show_progress(args))
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


def cmd_report(args: argparse.Namespace) -> int:
    for mod, why in (("matplotlib", "draws its figures"), ("pandas", "writes report.json")):
        if importlib.util.find_spec(mod) is None:
            raise CLIError(
                f"lrc report {why} with {mod}, which is not installed: "
                "pip install 'lrc-kernels[report]'"
            )
    from . import report

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
    )
    if not args.quiet:
        print(f"wrote {path}", file=sys.stderr)
    print(path)
    return EXIT_OK


# ------------------------------------------------------------------------- convert
# metadata keys a trace file writer sets itself (not carried over when converting)
_FILE_KEYS = (
    "source_file",
    "source_files",
    "format",
    "format_version",
    "producer",
    "producer_version",
    "created",
    "weights_dtype",
    "token_ids",
    "num_experts",
    "top_k",
    "num_layers",
)


def _need_e(exc: Exception, path: Path) -> CLIError:
    """A converter's error as a CLI error, pointing at --num-experts where that is the fix."""
    msg = str(exc)
    if "num_experts" in msg and "--num-experts" not in msg:
        msg += " (lrc convert: give --num-experts E)"
    if str(path) not in msg:
        msg = f"{path}: {msg}"
    return CLIError(msg)


def _load_input(path: Path, args: argparse.Namespace) -> tuple[Any, Any]:
    """(Trace, token ids or None) of one convert input, through :mod:`lrc_kernels.convert`."""
    import numpy as np

    from . import convert
    from . import io as trace_io

    weights = not args.no_weights
    if path.suffix == ".npz":
        try:
            tr = convert.from_npz(
                path, num_experts=args.num_experts, weights=weights, domain=args.domain
            )
        except (ValueError, TypeError) as exc:
            raise _need_e(exc, path) from None
        with np.load(path, allow_pickle=False) as z:
            tok = z["token_ids"] if "token_ids" in z else None
        if tok is not None and tok.size != tr.num_tokens:
            tok = None
        return tr, tok
    if path.suffix == ".npy":
        if args.num_experts is None:
            raise CLIError(f"{path}: a bare .npy array needs --num-experts E")
        ids = np.load(path, allow_pickle=False)
        try:
            tr = convert.from_arrays(ids, num_experts=args.num_experts, domains=args.domain)
        except (ValueError, TypeError) as exc:
            raise _need_e(exc, path) from None
        return tr, None
    if path.suffix == ".safetensors" or (
        path.is_dir() and any(path.glob("*.safetensors")) and not any(path.glob("*.arrow"))
    ):
        if args.num_experts is None:
            raise CLIError(f"{path}: safetensors top-k files need --num-experts E")
        tr = convert.from_safetensors_topk(
            path, num_experts=args.num_experts, unwrap=args.unwrap_int8
        )
        if args.domain is not None:
            raise CLIError("--domain applies to numpy inputs; safetensors files name domains")
        return tr, None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", trace_io.IncompleteTraceWarning)
        tr = trace_io.read_trace(path, weights=weights, allow_incomplete=args.allow_incomplete)
        reader = trace_io.TraceReader(path, allow_incomplete=args.allow_incomplete)
        tok = reader.token_ids()
    if any(issubclass(w.category, trace_io.IncompleteTraceWarning) for w in caught):
        print(
            f"lrc: note: {path} is incomplete; converting its {tr.num_sequences:,} complete "
            "sequences",
            file=sys.stderr,
        )
    if args.num_experts is not None and args.num_experts != tr.num_experts:
        raise CLIError(
            f"{path}: --num-experts {args.num_experts} but the trace file says "
            f"num_experts = {tr.num_experts}"
        )
    if args.domain is not None:
        if tr.domains is not None:
            raise CLIError(
                f"{path}: the trace file already labels its sequences with domains; "
                "--domain would overwrite them (drop --domain)"
            )
        from ._trace import Trace

        tr = Trace(
            tr.experts,
            tr.offsets,
            num_experts=tr.num_experts,
            domains=[args.domain] * tr.num_sequences,
            weights=tr.weights,
            meta=tr.meta,
        )
    return tr, tok


def _concat(traces: list[Any]) -> Any:
    """The inputs as one trace (:func:`lrc_kernels.io.concat_traces`), refusing in CLI terms
    inputs that disagree on their shape or their domain labels."""
    from . import io as trace_io

    if len({(t.num_experts, t.num_layers, t.top_k) for t in traces}) > 1:
        raise CLIError(
            "inputs disagree on their shape (num_experts, num_layers, top_k): "
            + "; ".join(f"({t.num_experts}, {t.num_layers}, {t.top_k})" for t in traces)
            + ". Convert them to separate files"
        )
    labeled = [t.domains is not None for t in traces]
    if any(labeled) and not all(labeled):
        raise CLIError(
            "some inputs have domain labels and others not; give --domain or "
            "convert them separately"
        )
    return trace_io.concat_traces(traces)


def cmd_convert(args: argparse.Namespace) -> int:
    from . import io as trace_io

    out = Path(args.out)
    inputs = [Path(p) for p in args.inputs]
    for p in inputs:
        if not p.exists():
            raise CLIError(f"{p}: no such file or directory")
        if p.resolve() == out.resolve():
            raise CLIError(f"{p}: --out must differ from the inputs")
    traces, tokens = [], []
    for p in inputs:
        tr, tok = _load_input(p, args)
        traces.append(tr)
        tokens.append(tok)
    tr = _concat(traces)
    tok = None
    if all(t is not None for t in tokens):
        import numpy as np

        tok = np.concatenate(tokens)
    if args.split is not None:
        tr = tr.split(args.split)
    meta = {k: v for k, v in tr.meta.items() if k not in _FILE_KEYS and v is not None}
    if args.model is not None:
        meta["model"] = args.model
    meta["converted_from"] = [str(p) for p in inputs]
    from ._trace import Trace

    tr = Trace(
        tr.experts,
        tr.offsets,
        num_experts=tr.num_experts,
        domains=tr.domains,
        weights=None if args.no_weights else tr.weights,
        meta=meta,
        _validated=True,
    )
    trace_io.write_trace(out, tr, token_ids=tok)
    if not args.quiet:
        print(
            f"wrote {out}: {tr.num_sequences:,} sequences, {tr.num_tokens:,} tokens, "
            f"L={tr.num_layers}, E={tr.num_experts}, k={tr.top_k}, "
            f"{_human_bytes(out.stat().st_size)}",
            file=sys.stderr,
        )
    return EXIT_OK


# ------------------------------------------------------------------------- capture
def _texts_arg(items: Sequence[str]) -> Any:
    """Text arguments: FILE (domain named after the file) or DOMAIN=FILE."""
    named: dict[str, list[str]] = {}
    plain: list[str] = []
    for item in items:
        if "=" in item and not Path(item).exists():
            dom, _, f = item.partition("=")
            if not dom or not f:
                raise CLIError(f"{item!r}: write DOMAIN=FILE (both parts non-empty)")
            named.setdefault(dom, []).append(f)
        else:
            plain.append(item)
    if named and plain:
        for f in plain:
            named.setdefault(Path(f).name.split(".")[0] or Path(f).name, []).append(f)
        return named
    return named or plain


def cmd_capture(args: argparse.Namespace) -> int:
    try:
        from . import torch as lk_torch
    except ImportError as exc:
        raise CLIError(
            f"lrc capture needs torch and transformers ({exc}); install them with "
            "pip install 'lrc-kernels[torch]'"
        ) from None
    path = lk_torch.capture_model(
        args.model_dir,
        _texts_arg(args.texts),
        args.out,
        seq_len=args.seq_len,
        max_sequences=args.max_sequences,
        batch_size=args.batch_size,
        device=args.device,
        dtype=args.dtype,
        weights=args.weights,
        progress=_show_progress(args),
    )
    paths = list(path.values()) if isinstance(path, dict) else [path]
    for p in paths:
        print(p)
    return EXIT_OK


# ---------------------------------------------------------------------------- main
_DOMAIN_ADVICE = (
    "label the sequences when converting: lrc convert PART.npz --domain LABEL --out "
    "PART.lrc.arrow for each domain's arrays (or store a 'domains' array in the .npz), then "
    "lrc convert PART1.lrc.arrow PART2.lrc.arrow --out ALL.lrc.arrow; lrc capture names a "
    "domain after each text file"
)

# the API's advice in Python terms (a substring of its message) -> the same in CLI terms
_CLI_ADVICE = (
    (
        "Pass allow_incomplete=True to read them, or call "
        "lrc_kernels.io.repair_trace(path, out) to write a complete file.",
        "lrc convert FILE --allow-incomplete --out NEW.lrc.arrow writes the complete part "
        "to a new file (lrc info takes --allow-incomplete too).",
    ),
    (
        "pass weights=False to read the ids of all of them",
        "give lrc convert --no-weights to convert the ids of all of them",
    ),
    (
        "by_domain=True needs domain labels: build the Trace with domains=[...] (one label "
        "per sequence), or write them into the trace file",
        f"--by-domain needs domain labels: {_DOMAIN_ADVICE}",
    ),
)


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


def _error_line(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()
    text = " ".join(line.strip() for line in msg) if msg else type(exc).__name__
    for python, cli_words in _CLI_ADVICE:
        text = text.replace(python, cli_words)
    if isinstance(exc, (CLIError, ValueError, TypeError, OSError, MemoryError, RuntimeError)):
        if isinstance(exc, FileNotFoundError) and exc.filename and not msg:
            text = f"{exc.filename}: no such file"
        return f"{PROG}: error: {text}"
    return (
        f"{PROG}: internal error: {type(exc).__name__}: {text} "
        "(rerun with --debug for the traceback and please report it)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``lrc`` command line; returns the exit status.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        0 on success, 1 on an error (one line on stderr), 2 on a usage error, 130 when
        interrupted.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    try:
        if _out_format(args) != "table":
            _require_pandas(args)
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader went away (e.g. `lrc srp ... | head`): not an error
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        except OSError:
            pass
        return EXIT_OK
    except Exception as exc:
        if debug:
            raise
        print(_error_line(exc), file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
