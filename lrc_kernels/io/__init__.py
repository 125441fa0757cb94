"""Routing trace files: compressed Arrow IPC, written and read in bounded memory.

One row per sequence; the expert ids of its tokens are a list of ``(L, k)`` fixed-size
blocks in the narrowest unsigned integer type. Files are plain Arrow IPC *file* format with
zstd (or lz4) buffer compression, so pyarrow, polars and duckdb read them directly. The
schema, metadata and guarantees are documented in ``docs/trace-format.md``.

Public names: :func:`write_trace`, :func:`read_trace`, :class:`TraceWriter`,
:class:`TraceReader`, :func:`iter_trace_batches`, :func:`repair_trace`, the error
classes :class:`TraceFileError` and :class:`IncompleteTraceError`, and for tools that
handle one trace per model (the command line, the report) :class:`TraceSource`,
:class:`TraceInMemory`, :func:`open_sources`, :func:`as_sources` and :func:`concat_traces`.

The package knows file formats and no kernels. Its modules:

- ``_format``: format name and version, metadata keys, error classes, checksums;
- ``_schema``: the Arrow schema, built for the writer and checked for the reader;
- ``_writer``: :class:`TraceWriter`, :func:`write_trace`;
- ``_file``: one file on disk (header, index, record batches, decoding);
- ``_reader``: :class:`TraceReader`, :func:`read_trace`, :func:`iter_trace_batches`;
- ``_join``: concatenating traces; ``_repair``: :func:`repair_trace`;
- ``_sources``: :class:`TraceSource`, :class:`TraceInMemory`, :func:`open_sources`,
  :func:`as_sources`.
"""

from __future__ import annotations

from ._format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    IncompleteTraceError,
    IncompleteTraceWarning,
    TraceFileError,
)
from ._format import _jsonable as _jsonable  # convert.to_npz writes the metadata with it
from ._format import _nested as _nested  # tests build record batches with it
from ._join import concat_traces
from ._reader import TraceReader, iter_trace_batches, read_trace
from ._repair import repair_trace
from ._sources import TraceInMemory, TraceSource, as_sources, open_sources
from ._writer import TraceWriter, write_trace

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "IncompleteTraceError",
    "IncompleteTraceWarning",
    "TraceFileError",
    "TraceInMemory",
    "TraceReader",
    "TraceSource",
    "TraceWriter",
    "as_sources",
    "concat_traces",
    "iter_trace_batches",
    "open_sources",
    "read_trace",
    "repair_trace",
    "write_trace",
]
