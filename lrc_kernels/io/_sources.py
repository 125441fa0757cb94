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
        meta = r.meta
        doms = r.domains()
        counts: dict[str, int] = {}
        for d in doms:
            if d is not None:
                counts[str(d)] = counts.get(str(d), 0) + 1
        acts = r.num_activations
        size = self.file_bytes
        layer_ids = meta.get("layer_ids")
        return {
            "model": self.name,
            "path": self.path,
            "files": len(r.files),
            "num_experts": r.num_experts,
            "top_k": r.top_k,
            "num_layers": r.num_layers,
            "layer_ids": None if layer_ids is None else " ".join(str(v) for v in layer_ids),
            "sequences": r.num_sequences,
            "tokens": r.num_tokens,
            "activations": acts,
            "domains": ", ".join(f"{k} ({v})" for k, v in counts.items()) or None,
            "num_domains": len(counts),
            "file_bytes": size,
            "bytes_per_activation": (size / acts) if acts else None,
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
    out = []
    for p in map(os.fspath, paths):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", IncompleteTraceWarning)
            reader = TraceReader(p, allow_incomplete=allow_incomplete)
        out.append(TraceSource(p, _model_name(reader, p), reader))
    # the same model name twice (two runs of one model): add the file name, else the path
    names = [s.name for s in out]
    dup = [names.count(n) > 1 for n in names]
    for s, d in zip(out, dup, strict=True):
        if d:
            s.name = f"{s.name} ({_file_stem(s.path)})"
    names = [s.name for s in out]
    for s, n in zip(out, names, strict=True):
        if names.count(n) > 1:
            s.name = f"{n.rsplit(' (', 1)[0]} ({s.path})"
    return out
