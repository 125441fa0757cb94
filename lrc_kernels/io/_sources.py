"""Trace sources: one model's trace file (or shard directory) with a display name.

The command line and the report share them: :func:`open_sources` opens every trace given,
reads only metadata and the sequence index, and names each model distinctly.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._trace import Trace
from ._format import IncompleteTraceWarning
from ._reader import TraceReader


@dataclass
class TraceSource:
    """One model's trace: a file, a list of shards or a directory, read lazily.

    Attributes
    ----------
    path : str
        The path as given (on the command line, or to :func:`open_sources`).
    name : str
        The model name shown in tables: the file's ``model`` metadata, else the file name.
    reader : lrc_kernels.io.TraceReader
        Metadata and sizes without reading the data.
    """

    path: str
    name: str
    reader: Any

    @property
    def file_bytes(self) -> int:
        return sum(os.path.getsize(f) for f in self.reader.files)

    def info(self) -> dict[str, Any]:
        """Metadata row: model, shape, sizes, domains (one pass over the index, no ids)."""
        r = self.reader
        return info_row(
            name=self.name,
            path=self.path,
            files=len(r.files),
            shape=(r.num_experts, r.top_k, r.num_layers),
            meta=r.meta,
            domains=r.domains(),
            sequences=r.num_sequences,
            tokens=r.num_tokens,
            file_bytes=self.file_bytes,
        )


@dataclass
class TraceInMemory:
    """A :class:`~lrc_kernels.Trace` given directly (no file), with a display name.

    Answers :meth:`info` like :class:`TraceSource` (no files, no file size).
    """

    path: str
    name: str
    trace: Trace

    def info(self) -> dict[str, Any]:
        """Metadata row with the keys of :meth:`TraceSource.info`."""
        t = self.trace
        return info_row(
            name=self.name,
            path=self.path,
            files=0,
            shape=(t.num_experts, t.top_k, t.num_layers),
            meta=t.meta,
            domains=[None] * t.num_sequences if t.domains is None else list(t.domains),
            sequences=t.num_sequences,
            tokens=t.num_tokens,
            file_bytes=None,
        )


def info_row(
    *,
    name: str,
    path: str,
    files: int,
    shape: tuple[int, int, int],
    meta: dict[str, Any],
    domains: Sequence[Any],
    sequences: int,
    tokens: int,
    file_bytes: int | None,
) -> dict[str, Any]:
    """The ``lrc info`` row of a trace: model, path, shape ``(E, k, L)``, sizes, domains."""
    counts: dict[str, int] = {}
    for d in domains:
        if d is not None:
            counts[str(d)] = counts.get(str(d), 0) + 1
    E, k, L = shape
    acts = tokens * L * k
    layer_ids = meta.get("layer_ids")
    return {
        "model": name,
        "path": path,
        "files": files,
        "num_experts": E,
        "top_k": k,
        "num_layers": L,
        "layer_ids": None if layer_ids is None else " ".join(str(v) for v in layer_ids),
        "sequences": sequences,
        "tokens": tokens,
        "activations": acts,
        "domains": ", ".join(f"{k} ({v})" for k, v in counts.items()) or None,
        "num_domains": len(counts),
        "file_bytes": file_bytes,
        "bytes_per_activation": (file_bytes / acts) if acts and file_bytes is not None else None,
        "format_version": meta.get("format_version"),
        "producer": meta.get("producer"),
        "created": meta.get("created"),
    }


def _file_stem(path: str) -> str:
    base = Path(path).name
    for suffix in (".lrc.arrow", ".arrow"):
        if base.endswith(suffix):
            return base[: -len(suffix)] or base
    return base


def _model_name(reader: Any, path: str) -> str:
    name = reader.meta.get("model")
    if isinstance(name, str) and name:
        return name
    return _file_stem(path)


def open_sources(
    paths: Sequence[str | os.PathLike], *, allow_incomplete: bool = False
) -> list[TraceSource]:
    """Open every trace (one model each) and give each a distinct display name.

    Parameters
    ----------
    paths : sequence of str
        Trace files or shard directories, one model each.
    allow_incomplete : bool, optional
        Open files whose writer never finished them (``lrc info`` on a capture in
        progress), reading their complete record batches only (no warning).

    Returns
    -------
    list of TraceSource
        In the order given; a model name that occurs twice gets the file name added, and
        the path where that is not enough.
    """
    out = [_open(p, allow_incomplete) for p in map(os.fspath, paths)]
    _distinct_names(out)
    return out


def as_sources(items: Sequence[Any]) -> list[TraceSource | TraceInMemory]:
    """Sources of paths, :class:`~lrc_kernels.Trace` objects or sources, in order.

    A path (file or shard directory) is opened as :func:`open_sources` opens it; a Trace is
    named by its ``model`` metadata, else ``trace N`` (its place in ``items``, from 1); a
    source is used as it is (its name unchanged). The names of the sources made here are
    made distinct as in :func:`open_sources`.
    """
    if isinstance(items, (str, os.PathLike, Trace)):
        items = [items]
    out: list[Any] = []
    for i, item in enumerate(items, 1):
        if isinstance(item, (TraceSource, TraceInMemory)):
            out.append(item)
        elif isinstance(item, Trace):
            name = item.meta.get("model")
            if not (isinstance(name, str) and name):
                name = f"trace {i}"
            out.append(TraceInMemory(f"<trace {i}>", name, item))
        elif isinstance(item, (str, os.PathLike)):
            out.append(_open(os.fspath(item), False))
        else:
            raise TypeError(
                f"a trace source is a trace file path, a Trace or a TraceSource; item {i} "
                f"has type {type(item).__name__}"
            )
    made = [s for s, item in zip(out, items, strict=True) if s is not item]
    if made:  # sources given as such keep their names
        _distinct_names(out if len(made) == len(out) else made)
    return out


def _open(path: str, allow_incomplete: bool) -> TraceSource:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IncompleteTraceWarning)
        reader = TraceReader(path, allow_incomplete=allow_incomplete)
    return TraceSource(path, _model_name(reader, path), reader)


def _distinct_names(sources: Sequence[Any]) -> None:
    """The same model name twice (two runs of one model): add the file name, else the path."""
    names = [s.name for s in sources]
    dup = [names.count(n) > 1 for n in names]
    for s, d in zip(sources, dup, strict=True):
        if d:
            s.name = f"{s.name} ({_file_stem(s.path)})"
    names = [s.name for s in sources]
    for s, n in zip(sources, names, strict=True):
        if names.count(n) > 1:
            s.name = f"{n.rsplit(' (', 1)[0]} ({s.path})"
