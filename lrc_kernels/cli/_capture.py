"""``lrc capture``: record the routing of a local Hugging Face MoE model (needs torch)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._args import _add_common, _positive_int
from ._common import EXIT_OK, CLIError, _show_progress

EPILOG = """\
Runs a local Hugging Face MoE model over text files and records every router decision.
Each text file is one domain named after the file; write DOMAIN=FILE to name it.
Nothing is downloaded.

examples:
  lrc capture ./Qwen1.5-MoE-A2.7B web.txt code.txt --out qwen.lrc.arrow --seq-len 512
"""


def add_parser(sub: Any, fmt: type[argparse.HelpFormatter]) -> None:
    """Add ``lrc capture`` and its options to the sub-command parsers ``sub``."""
    p = sub.add_parser(
        "capture",
        help="record routing of a local Hugging Face MoE model",
        description="Capture a routing trace (needs torch and transformers).",
        epilog=EPILOG,
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
        from .. import torch as lk_torch
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
