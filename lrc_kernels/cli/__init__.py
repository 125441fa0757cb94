"""``lrc``: the command line tool for routing traces.

Every metric command takes one or more trace files (each one model), computes the metric
with the public API (:func:`lrc_kernels.srp`, :func:`lrc_kernels.sch`,
:func:`lrc_kernels.hit_curve`) and prints an aligned table, or tidy rows with ``--json``,
``--csv`` or ``--parquet``. ``docs/cli.md`` documents every command and column.

Errors are one line on stderr and a non-zero exit status (``--debug`` shows the traceback).
"""

from __future__ import annotations

import importlib.util  # noqa: F401  (tests patch cli.importlib.util.find_spec)
import os
import sys
from collections.abc import Sequence
from typing import Any

from ._common import (
    _DOMAIN_ADVICE,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    PROG,
    CLIError,
    close_client,
)
from ._common import EXIT_USAGE as EXIT_USAGE
from ._common import Progress as Progress
from ._common import _show_progress as _show_progress
from ._common import open_sources as open_sources
from ._output import _out_format, _require_pandas
from ._output import format_table as format_table
from ._output import write_frame as write_frame
from ._parser import build_parser

__all__ = [
    "main",
    "build_parser",
    "TraceSource",
    "open_sources",
    "CLIError",
]

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
    finally:
        close_client(args)


def __getattr__(name: str) -> Any:
    # TraceSource lives in lrc_kernels.io (shared with the report); imported on first use
    # so that ``lrc --help`` does not load pyarrow
    if name == "TraceSource":
        from ..io import TraceSource

        return TraceSource
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
