"""Reading trace files: :class:`TraceReader` (lazy, batch by batch), :func:`read_trace`
(one in-memory :class:`~lrc_kernels.Trace`) and :func:`iter_trace_batches` (streaming)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._spec import id_dtype_for
from .._trace import Trace
from ._file import _File
from ._format import TraceFileError, _pos_int
from ._join import join_pieces


def _expand_source(source: Any) -> list[Path]:
    if isinstance(source, (str, os.PathLike)):
        items = [source]
    elif isinstance(source, Sequence) and not isinstance(source, (bytes, bytearray)):
        items = list(source)
        if not items:
            raise ValueError("got an empty list of trace files")
    else:
        raise TypeError(
            f"a trace source is a path, a list of paths or a directory; got {type(source).__name__}"
        )
    files: list[Path] = []
    for item in items:
        if not isinstance(item, (str, os.PathLike)):
            raise TypeError(f"trace source entries must be paths, got {type(item).__name__}")
        p = Path(item)
        if p.is_dir():
            shards = sorted(q for q in p.iterdir() if q.suffix == ".arrow" and q.is_file())
            if not shards:
                raise FileNotFoundError(
                    f"{p}: directory holds no *.arrow trace files (shards are read in name "
                    "order; name them e.g. part-00000.lrc.arrow)"
                )
            files.extend(shards)
        elif p.exists():
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such trace file or directory")
    return files


class TraceReader:
    """Read trace files lazily: metadata at once, data one record batch at a time.

    Parameters
    ----------
    source : path, list of paths, or directory
        One trace file, several (read in the given order), or a directory whose
        ``*.arrow`` files are read in name order. All files must agree on
        ``num_experts``, ``top_k`` and ``num_layers``.
    allow_incomplete : bool, optional
        Read the completed record batches of files whose writer never closed them (with an
        :class:`IncompleteTraceWarning`) instead of raising :class:`IncompleteTraceError`.

    Raises
    ------
    TraceFileError
        The file is not a readable lrc trace; the message names the file and the problem.
    """

    def __init__(self, source: Any, *, allow_incomplete: bool = False) -> None:
        self._files = [_File(p, allow_incomplete) for p in _expand_source(source)]
        first = self._files[0]
        for f in self._files[1:]:
            if (f.E, f.k, f.L) != (first.E, first.k, first.L):
                raise TraceFileError(
                    f"{f.name} has num_experts={f.E}, top_k={f.k}, num_layers={f.L} but "
                    f"{first.name} has {first.E}, {first.k}, {first.L}; files read together "
                    "must agree"
                )

    @property
    def files(self) -> list[str]:
        """Paths of the files read, in order."""
        return [f.name for f in self._files]

    @property
    def num_experts(self) -> int:
        return self._files[0].E

    @property
    def top_k(self) -> int:
        return self._files[0].k

    @property
    def num_layers(self) -> int:
        return self._files[0].L

    @property
    def meta(self) -> dict:
        """Metadata of the first file: model, layer_ids, format_version, producer, created,
        num_experts, top_k, num_layers, weights_dtype, token_ids, and the user's keys."""
        meta = self._files[0].meta()
        if len(self._files) > 1:
            meta.pop("source_file")
            meta["source_files"] = self.files
        return meta

    @property
    def has_weights(self) -> bool:
        return all(f.has_weights for f in self._files)

    @property
    def num_sequences(self) -> int:
        return sum(f.index()[0].shape[0] for f in self._files)

    @property
    def num_tokens(self) -> int:
        return sum(int(f.index()[0].sum()) for f in self._files)

    @property
    def num_activations(self) -> int:
        return self.num_tokens * self.num_layers * self.top_k

    def lengths(self) -> np.ndarray:
        """Tokens of every sequence, in order (int64)."""
        return np.concatenate([f.index()[0] for f in self._files])

    def domains(self) -> list[str | None]:
        """Domain label of every sequence in file order (None where a file has none)."""
        out: list[str | None] = []
        for f in self._files:
            out.extend(f.domains())
        return out

    def token_ids(self) -> np.ndarray | None:
        """Input token id of every token (int32), or None unless every file stores them."""
        if not all(f.has_tokens for f in self._files):
            return None
        parts = []
        for f in self._files:
            for _, rb, _ in f.record_batches(["token_ids"]):
                parts.append(rb.column("token_ids").flatten().to_numpy(zero_copy_only=False))
        return np.concatenate(parts) if parts else np.zeros(0, np.int32)

    def batches(self, max_tokens: int = 1_000_000, *, weights: bool = True) -> Iterator[Trace]:
        """Iterate the trace as :class:`Trace` objects of whole sequences.

        Parameters
        ----------
        max_tokens : int, optional
            Upper bound on tokens per yielded trace; a single longer sequence is yielded
            alone. Batches never span two files (each carries its file's ``meta``).
        weights : bool, optional
            Decode gate weights (when stored). Metrics do not need them; False is faster.

        Yields
        ------
        Trace
            Consecutive sequences with their domains, weights and metadata. Peak memory is
            about one record batch plus one yielded trace.
        """
        mt = _pos_int(max_tokens, "max_tokens")
        for f in self._files:
            yield from self._file_batches(f, mt, weights)

    def _file_batches(self, f: _File, max_tokens: int, weights: bool) -> Iterator[Trace]:
        meta = f.meta()
        pending: list[dict] = []
        pending_tokens = 0
        first = 0
        cols = None
        if not weights and f.has_weights:
            cols = [n for n in f.schema.names if n != "weights"]
        for i, rb, md in f.record_batches(cols):
            piece = f.decode(i, rb, md, first, weights)
            off = piece["off"]
            S = off.shape[0] - 1
            first += S
            start = 0
            while start < S:
                room = max_tokens - pending_tokens
                if pending and off[start + 1] - off[start] > room:
                    yield _assemble(pending, f, meta)
                    pending, pending_tokens = [], 0
                    room = max_tokens
                end = int(np.searchsorted(off, off[start] + room, side="right")) - 1
                end = min(max(end, start + 1), S)
                pending.append(_slice(piece, start, end))
                pending_tokens += int(off[end] - off[start])
                start = end
                if pending_tokens >= max_tokens:
                    yield _assemble(pending, f, meta)
                    pending, pending_tokens = [], 0
        if pending:
            yield _assemble(pending, f, meta)

    def read(self, *, weights: bool = True) -> Trace:
        """The whole source as one in-memory :class:`Trace` (see :func:`read_trace`)."""
        if weights and not self.has_weights and any(f.has_weights for f in self._files):
            raise TraceFileError(
                "some files store gate weights and others not; pass weights=False to read "
                "the ids of all of them"
            )
        with_w = weights and self.has_weights
        lengths = self.lengths()
        N, L, k = int(lengths.sum()), self.num_layers, self.top_k
        wdt = {f.info.get("weights_dtype") for f in self._files}
        w_type = np.float16 if wdt == {"float16"} else np.float32
        # Fill one array batch by batch (peak memory: the trace + one batch). The index
        # is checked only as each batch is decoded, so a size beyond any plausible
        # compression ratio (a damaged index) falls back to gathering batches.
        disk = sum(os.path.getsize(f.name) for f in self._files)
        prealloc = N * L * k <= 64 * disk + (1 << 20)
        ids = np.empty((N, L, k), id_dtype_for(self.num_experts)) if prealloc else None
        w = np.empty((N, L, k), w_type) if prealloc and with_w else None
        parts: list[Trace] = []
        doms: list = []
        labeled: set[bool] = set()
        pos = 0
        for tr in self.batches(1 << 20, weights=with_w):
            n = tr.num_tokens
            if not prealloc or pos + n > N:
                parts.append(tr)
            else:
                ids[pos : pos + n] = tr.experts
                if w is not None:
                    w[pos : pos + n] = tr.weights
            labeled.add(tr.domains is not None)
            if tr.domains is not None:
                doms.extend(tr.domains)
            pos += n
        if parts:
            ids = np.concatenate([p.experts for p in parts])
            if with_w:
                w = np.concatenate([p.weights.astype(w_type) for p in parts])
        if len(labeled) > 1:
            raise TraceFileError(
                "some files have domain labels and others not; read them separately or "
                "label every sequence"
            )
        if pos != N:
            raise TraceFileError(
                f"the files changed while being read ({pos} tokens read, index says {N})"
            )
        off = np.zeros(lengths.shape[0] + 1, np.int64)
        np.cumsum(lengths, out=off[1:])
        return Trace(
            ids,
            off,
            num_experts=self.num_experts,
            domains=doms if labeled == {True} else None,
            weights=w,
            meta=self.meta,
            _validated=True,
        )

    def __enter__(self) -> TraceReader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Nothing to release: files are opened only while iterating."""

    def __repr__(self) -> str:
        return (
            f"<TraceReader files={len(self._files)} E={self.num_experts} k={self.top_k} "
            f"L={self.num_layers} model={self._files[0].info.get('model')!r}>"
        )


def _slice(piece: dict, a: int, b: int) -> dict:
    off = piece["off"]
    r0, r1 = int(off[a]), int(off[b])
    return {
        "ids": piece["ids"][r0:r1],
        "off": off[a : b + 1] - off[a],
        "domains": None if piece["domains"] is None else piece["domains"][a:b],
        "weights": None if piece["weights"] is None else piece["weights"][r0:r1],
        "tokens": None if piece["tokens"] is None else piece["tokens"][r0:r1],
    }


def _assemble(pieces: list[dict], f: _File, meta: dict) -> Trace:
    return join_pieces(pieces, num_experts=f.E, meta=meta)


def read_trace(source: Any, *, allow_incomplete: bool = False, weights: bool = True) -> Trace:
    """Read a whole trace into memory.

    Parameters
    ----------
    source : path, list of paths, or directory
        See :class:`TraceReader`.
    allow_incomplete : bool, optional
        Read the complete batches of interrupted files (with a warning) instead of raising.
    weights : bool, optional
        Read gate weights when every file stores them.

    Returns
    -------
    Trace
        All sequences in order; ``meta`` holds the file metadata (model, layer_ids,
        format_version, producer, ...) and the user's keys.

    Raises
    ------
    TraceFileError
        Not an lrc trace, a newer format version, corrupt data, files that disagree.
    IncompleteTraceError
        A file's writer never finished it (unless ``allow_incomplete``).
    """
    return TraceReader(source, allow_incomplete=allow_incomplete).read(weights=weights)


def iter_trace_batches(
    source: Any,
    *,
    max_tokens: int = 1_000_000,
    allow_incomplete: bool = False,
    weights: bool = False,
) -> Iterator[Trace]:
    """Stream a trace source as :class:`Trace` batches of whole sequences.

    Parameters
    ----------
    source : path, list of paths, or directory
        See :class:`TraceReader`.
    max_tokens : int, optional
        Tokens per batch at most (a longer single sequence is one batch).
    allow_incomplete : bool, optional
        See :func:`read_trace`.
    weights : bool, optional
        Decode gate weights too (off by default: the metrics do not use them).

    Yields
    ------
    Trace
        Consecutive sequences of the source, in order, each batch from one file.

    Notes
    -----
    SRP window histograms and stack-depth counts are sums over sequences, so adding the
    integer tables of the batches gives exactly the table of the whole trace, with memory
    bounded by ``max_tokens`` whatever the file size.
    """
    reader = TraceReader(source, allow_incomplete=allow_incomplete)
    return reader.batches(max_tokens, weights=weights)
