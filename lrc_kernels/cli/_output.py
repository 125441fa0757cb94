"""Output of every command: aligned tables for people, JSON / CSV / Parquet rows for programs."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ._common import CLIError


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
    from .._results import PANDAS_EXTRA

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


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover
