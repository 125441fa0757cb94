"""``lrc info``: what each trace holds (and, with --verify, that its data decode)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from ._args import _add_common, _add_output, _add_traces
from ._common import EXIT_OK, CLIError, open_sources
from ._output import _emit, _human_bytes, _info_frame

if TYPE_CHECKING:
    from ..io import TraceSource


def add_parser(sub: Any, fmt: type[argparse.HelpFormatter]) -> None:
    """Add ``lrc info`` and its options to the sub-command parsers ``sub``."""
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
    from ..io import TraceFileError

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
