"""One trace file on disk: header and schema checks, the sequence index, record batches.

:class:`_File` reads a complete file through its Arrow footer and an interrupted one (no
footer) as a stream up to the cut; :meth:`_File.decode` turns a record batch into checked
arrays. :class:`~lrc_kernels.io.TraceReader` and :func:`~lrc_kernels.io.repair_trace` sit
on it.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from .. import _validate as _v
from ._format import (
    _CRC_KEY,
    _MAGIC,
    _RESERVED,
    IncompleteTraceError,
    IncompleteTraceWarning,
    TraceFileError,
    _crc,
    _crc_bytes,
    _domain_bytes,
    _labels,
)
from ._schema import check_columns, not_arrow_message, read_info


class _File:
    """One trace file: header checks, an index of sequences, record batch iteration."""

    def __init__(self, path: Path, allow_incomplete: bool) -> None:
        self.path = path
        self.name = str(path)
        with open(path, "rb") as fh:
            head = fh.read(8)
        if head != _MAGIC:
            raise TraceFileError(not_arrow_message(self.name, head))
        self.complete = True
        self.tail_error = ""
        self.stop_reason = ""
        try:
            with pa.OSFile(self.name) as f:
                reader = ipc.open_file(f)
                schema = reader.schema
                self.num_batches = reader.num_record_batches
        except (pa.ArrowException, OSError) as exc:
            self.complete = False
            self.tail_error = str(exc)
            schema = self._stream_schema()
            self.num_batches = None  # counted by the index scan
        try:
            self.info, self.E, self.k, self.L = read_info(schema, self.name)
            self.has_weights = "weights" in schema.names
            self.has_tokens = "token_ids" in schema.names
            self.id_dtype = check_columns(schema, self.info, self.E, self.k, self.L, self.name)
            self.schema = schema
        except (pa.ArrowException, UnicodeDecodeError) as exc:
            raise TraceFileError(f"{self.name}: malformed Arrow schema ({exc})") from None
        self._index: tuple[np.ndarray, list] | None = None
        if not self.complete:
            lengths, _ = self.index()
            msg = (
                f"{self.name}: the trace file is incomplete (no valid Arrow footer: its writer "
                "was interrupted before close(), or the footer is damaged). "
                f"{self.num_batches} complete record batches ({lengths.shape[0]} sequences, "
                f"{int(lengths.sum())} tokens) are readable; "
                f"the tail after them is cut or missing ({self.stop_reason})."
            )
            if not allow_incomplete:
                raise IncompleteTraceError(
                    msg + " Pass allow_incomplete=True to read them, or call "
                    "lrc_kernels.io.repair_trace(path, out) to write a complete file."
                )
            warnings.warn(msg + " Reading those batches only.", IncompleteTraceWarning, 2)

    # ------------------------------------------------------------------ header
    def _open_stream(self):
        f = pa.OSFile(self.name)
        f.seek(8)
        return f, ipc.open_stream(f)

    def _stream_schema(self) -> pa.Schema:
        f = None
        try:
            f, r = self._open_stream()
            return r.schema
        except (pa.ArrowException, OSError) as exc:
            raise IncompleteTraceError(
                f"{self.name}: the trace file is truncated before its schema ended; it holds "
                f"no readable data ({exc})"
            ) from None
        finally:
            if f is not None:
                f.close()

    # ---------------------------------------------------------------- batches
    def record_batches(self, columns: Sequence[str] | None = None) -> Iterator[tuple]:
        """(index, RecordBatch, custom metadata) of every complete batch."""
        if self.complete:
            yield from self._footer_batches(columns)
        else:
            yield from self._stream_batches(columns)

    def _footer_batches(self, columns: Sequence[str] | None) -> Iterator[tuple]:
        """The batches of a complete file, through its footer, one batch read ahead."""
        opts = None
        if columns is not None:
            idx = [self.schema.get_field_index(c) for c in columns]
            opts = ipc.IpcReadOptions(included_fields=idx)
        with pa.OSFile(self.name) as f:
            try:
                r = ipc.open_file(f, options=opts)
            except (pa.ArrowException, OSError) as exc:
                raise TraceFileError(f"{self.name}: cannot open: {exc}") from None
            n = r.num_record_batches

            def fetch(i: int):
                try:
                    return r.get_batch_with_custom_metadata(i), None
                except (pa.ArrowException, OSError) as exc:
                    return None, exc

            # decode the next batch in a thread (pyarrow releases the GIL) while the
            # caller works on this one: one batch of read-ahead
            with ThreadPoolExecutor(1) as pool:
                nxt = pool.submit(fetch, 0) if n else None
                for i in range(n):
                    got, exc = nxt.result()
                    if i + 1 < n:
                        nxt = pool.submit(fetch, i + 1)
                    if exc is not None:
                        raise TraceFileError(
                            f"{self.name}: record batch {i} is corrupt and cannot be "
                            f"decoded ({exc})"
                        )
                    yield i, got[0], got[1]

    def _stream_batches(self, columns: Sequence[str] | None) -> Iterator[tuple]:
        """The complete batches of a file without a footer, read as a stream up to the cut."""
        f, r = self._open_stream()
        try:
            limit = self.num_batches
            i = 0
            while limit is None or i < limit:
                try:
                    rb, md = r.read_next_batch_with_custom_metadata()
                except StopIteration:
                    self.stop_reason = "the file ends after the last complete batch"
                    break
                except (pa.ArrowException, OSError) as exc:
                    self.stop_reason = f"batch {i} is cut: {exc}"
                    break
                if columns is not None:
                    rb = rb.select(list(columns))
                yield i, rb, md
                i += 1
            if self.num_batches is None:
                self.num_batches = i
        finally:
            f.close()

    def index(self) -> tuple[np.ndarray, list]:
        """(lengths of all sequences, per-batch sequence counts)."""
        if self._index is None:
            lens, counts = [], []
            for i, rb, _ in self.record_batches(["domain", "length"]):
                col = rb.column("length")
                if col.null_count:
                    raise TraceFileError(f"{self.name}: record batch {i} has null lengths")
                lens.append(col.to_numpy())
                counts.append(rb.num_rows)
            lengths = np.concatenate(lens) if lens else np.zeros(0, np.int64)
            if lengths.size and lengths.min() < 0:
                raise TraceFileError(f"{self.name}: negative sequence length in the index")
            self._index = (lengths, counts)
        return self._index

    def domains(self) -> list[str | None]:
        out: list[str | None] = []
        for i, rb, _ in self.record_batches(["domain"]):
            out.extend(_labels(rb.column("domain"), f"{self.name}: record batch {i}"))
        return out

    def _nested_column(self, rb: pa.RecordBatch, name: str, where: str):
        """(sequence offsets, values shaped (tokens, L, k)) of a nested column, checked."""
        col = rb.column(name)
        col.validate(full=True)
        lay = col.values
        if col.null_count or lay.null_count or lay.values.null_count:
            raise TraceFileError(f"{where}: null entries in '{name}'")
        off = col.offsets.to_numpy().astype(np.int64)
        off -= off[0]
        flat = col.flatten().flatten().flatten()
        if flat.null_count or len(flat) != off[-1] * self.L * self.k:
            raise TraceFileError(f"{where}: '{name}' has the wrong number of values")
        vals = flat.to_numpy(zero_copy_only=False).reshape(-1, self.L, self.k)
        return off, vals

    def decode(self, i: int, rb: pa.RecordBatch, md: Any, first: int, weights: bool) -> dict:
        """Arrays of one record batch, checked; ``first`` = file index of its first sequence."""
        where = f"{self.name}: record batch {i}"
        try:
            lengths, off, ids, w, tok = self._batch_arrays(rb, where, weights)
        except TraceFileError:
            raise
        except (pa.ArrowException, ValueError, IndexError) as exc:
            raise TraceFileError(f"{where}: malformed record batch ({exc})") from None
        stored = md or {}
        for key, arrays in (
            ("experts", (lengths, ids)),
            ("weights", (w,)),
            ("token_ids", (tok,)),
        ):
            want = stored.get(f"{_CRC_KEY}.{key}".encode())
            if want is None or any(a is None for a in arrays):
                continue  # column not stored or not decoded
            if _crc(*arrays).encode() != want:
                raise TraceFileError(
                    f"{where} (file sequences {first}..{first + lengths.shape[0] - 1}): "
                    f"checksum mismatch in '{key}': the stored data changed after it was "
                    "written (corrupt file)"
                )
        doms = _batch_domains(rb, stored, where)

        def in_file(r: int) -> str:
            s = int(np.searchsorted(off, r, side="right") - 1)
            return f"file sequence {first + s}, token {r - off[s]}"

        def at(r: int) -> str:
            return f"{where}, {in_file(r)}"

        try:
            ids = _v.check_ids(ids, self.E, at, hint="(corrupt or mislabelled file)")
            if w is not None:
                w = _v.check_weights(w, ids.shape, in_file, copy=False, prefix=f"{where}: ")
        except (TypeError, ValueError) as exc:
            raise TraceFileError(str(exc)) from None
        return {"ids": ids, "off": off, "domains": doms, "weights": w, "tokens": tok}

    def _batch_arrays(self, rb: pa.RecordBatch, where: str, weights: bool) -> tuple:
        """(lengths, offsets, ids, weights or None, token ids or None) of a record batch,
        lined up with each other (ranges and checksums are checked by :meth:`decode`)."""
        lengths = rb.column("length")
        if lengths.null_count:
            raise TraceFileError(f"{where}: null entries in 'length'")
        lengths = lengths.to_numpy()
        off, ids = self._nested_column(rb, "experts", where)
        if not np.array_equal(np.diff(off), lengths):
            raise TraceFileError(f"{where}: the 'length' column disagrees with 'experts'")
        w = None
        if weights and self.has_weights:
            w_off, w = self._nested_column(rb, "weights", where)
            if not np.array_equal(w_off, off):
                raise TraceFileError(f"{where}: 'weights' do not line up with 'experts'")
        tok = None
        if self.has_tokens and "token_ids" in rb.schema.names:
            tc = rb.column("token_ids")
            tc.validate(full=True)
            t_off = tc.offsets.to_numpy().astype(np.int64)
            tok = tc.flatten()
            if tc.null_count or tok.null_count or not np.array_equal(t_off - t_off[0], off):
                raise TraceFileError(f"{where}: 'token_ids' do not line up with 'experts'")
            tok = tok.to_numpy(zero_copy_only=False)
        return lengths, off, ids, w, tok

    def meta(self) -> dict:
        info = self.info
        meta = dict(info.get("user") or {})
        for key in _RESERVED:
            if key in info:
                meta[key] = info[key]
        meta["source_file"] = self.name
        return meta


def _batch_domains(rb: pa.RecordBatch, md: Any, where: str) -> np.ndarray | None:
    """Domain labels of a record batch (checked against their checksum), or None."""
    dom_col = rb.column("domain")
    if dom_col.null_count == len(dom_col):
        return None
    if dom_col.null_count:
        raise TraceFileError(f"{where}: some sequences have a domain label, others not")
    labels = _labels(dom_col, where)
    want = md.get(f"{_CRC_KEY}.domain".encode())
    if want is not None and _crc_bytes(_domain_bytes(labels)).encode() != want:
        raise TraceFileError(f"{where}: checksum mismatch in 'domain' (corrupt file)")
    return np.asarray(labels, dtype=object)
