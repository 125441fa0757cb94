"""Repairing an interrupted trace file: copy its complete record batches into a new file."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc

from ._file import _File
from ._format import IncompleteTraceWarning


def repair_trace(path: str | os.PathLike, out: str | os.PathLike) -> int:
    """Copy the complete record batches of an interrupted trace file into a complete file.

    Returns the number of sequences written to ``out``. Batches, metadata and checksums
    are copied unchanged (compression as zstd).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IncompleteTraceWarning)
        f = _File(Path(path), allow_incomplete=True)
    if Path(out).resolve() == Path(path).resolve():
        raise ValueError("repair_trace writes a new file; give an output path other than path")
    n = 0
    opts = ipc.IpcWriteOptions(compression="zstd", emit_dictionary_deltas=True)
    with pa.OSFile(str(out), "wb") as sink:
        w = ipc.new_file(sink, f.schema, options=opts)
        first = 0
        for i, rb, md in f.record_batches():
            f.decode(i, rb, md, first, True)
            first += rb.num_rows
            w.write_batch(rb, custom_metadata=md)
            n += rb.num_rows
        w.close()
    return n
