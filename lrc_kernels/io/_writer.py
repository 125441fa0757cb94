"""Writing trace files: :class:`TraceWriter` (sequence by sequence) and :func:`write_trace`."""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from .. import _validate as _v
from .._spec import id_dtype_for
from .._trace import Trace, _to_numpy, _validate_num_experts, as_trace
from ._format import (
    _CRC_KEY,
    _DEFAULT_BATCH_ACTIVATIONS,
    _FIRST_KEY,
    _MAX_BATCH_TOKENS,
    _SHAPE_KEYS,
    FORMAT_NAME,
    FORMAT_VERSION,
    _codec,
    _crc,
    _crc_bytes,
    _domain_bytes,
    _jsonable,
    _nested,
    _pos_int,
    _producer_version,
    _split_meta,
    _weights_dtype,
)
from ._schema import build_schema


class TraceWriter:
    """Write a trace file sequence by sequence, in bounded memory.

    Sequences are buffered and written as Arrow record batches of whole sequences once
    ``batch_tokens`` tokens are buffered. Each batch is handed to the operating system as
    it is written, so if the writing process dies, every completed batch stays readable
    (see :class:`IncompleteTraceError`).

    Parameters
    ----------
    path : str or path-like
        File to create (overwritten if it exists). Suggested suffix: ``.lrc.arrow``.
    num_experts : int
        Routed experts per MoE layer ``E``; ids are stored as uint8 (E <= 256), uint16
        (E <= 65536) or uint32.
    top_k : int
        Experts per token ``k`` (``1 <= k <= E``).
    num_layers : int
        MoE layers ``L`` recorded per token.
    model : str, optional
        Model name (e.g. a Hugging Face id).
    layer_ids : sequence of int, optional
        The model's layer index of each of the ``L`` MoE layers.
    weights_dtype : {None, "float16", "float32"}, optional
        Store gate weights in this type; None stores none.
    token_ids : bool, optional
        Store one input token id (int32) per token.
    meta : mapping, optional
        Free-form JSON-serialisable metadata.
    compression : {"zstd", "lz4", None}, optional
        Arrow IPC buffer compression. zstd is much smaller for ids (lz4 has no entropy
        coder); None writes uncompressed buffers.
    compression_level : int, optional
        Codec level (zstd default 1: higher levels save only ~1-2 % on ids).
    batch_tokens : int, optional
        Tokens per record batch (a batch holds whole sequences, so one longer sequence is
        one larger batch). Default: about 16M activations per batch.

    Examples
    --------
    >>> with TraceWriter("run.lrc.arrow", num_experts=64, top_k=8, num_layers=16) as w:
    ...     for seq, dom in produce():  # doctest: +SKIP
    ...         w.write_sequence(seq, domain=dom)
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        num_experts: int,
        top_k: int,
        num_layers: int,
        model: str | None = None,
        layer_ids: Sequence[int] | None = None,
        weights_dtype: str | None = None,
        token_ids: bool = False,
        meta: Mapping[str, Any] | None = None,
        compression: str | None = "zstd",
        compression_level: int | None = None,
        batch_tokens: int | None = None,
    ) -> None:
        E, k, L, layer_ids = _checked_shape(num_experts, top_k, num_layers, layer_ids, model)
        self._wdtype = _weights_dtype(weights_dtype)
        self._tok = bool(token_ids)
        if batch_tokens is None:
            batch_tokens = max(1, _DEFAULT_BATCH_ACTIVATIONS // (L * k))
        self._batch_tokens = min(_pos_int(batch_tokens, "batch_tokens"), _MAX_BATCH_TOKENS)
        self._E, self._L, self._k = E, L, k
        self._id_dtype = id_dtype_for(E)
        info = _file_info(E, k, L, model, layer_ids, self._wdtype, self._tok, meta)
        w_type = None if self._wdtype is None else pa.from_numpy_dtype(self._wdtype)
        self.schema = build_schema(info, pa.from_numpy_dtype(self._id_dtype), w_type, self._tok)
        self.path = Path(path)
        options = ipc.IpcWriteOptions(
            compression=_codec(compression, compression_level), emit_dictionary_deltas=True
        )
        self._sink = pa.OSFile(str(self.path), "wb")
        try:
            self._writer = ipc.new_file(self._sink, self.schema, options=options)
        except BaseException:
            self._sink.close()
            raise
        self._labels: dict[str, int] = {}
        self._labeled: bool | None = None
        self._buf: list[tuple] = []
        self._buf_tokens = 0
        self._written = 0  # sequences in flushed batches
        self._tokens = 0
        self._closed = False

    # ---------------------------------------------------------------- properties
    @property
    def num_sequences(self) -> int:
        """Sequences accepted so far (written or buffered)."""
        return self._written + len(self._buf)

    @property
    def closed(self) -> bool:
        return self._closed

    # -------------------------------------------------------------------- input
    def write_sequence(
        self,
        experts: Any,
        *,
        domain: str | None = None,
        weights: Any = None,
        token_ids: Any = None,
    ) -> None:
        """Append one sequence.

        Parameters
        ----------
        experts : array_like of int, shape (T, L, k)
            Expert ids of the sequence's tokens, in router order. Copied.
        domain : str, optional
            Domain / data-set label. Either every sequence of a file has one or none does.
        weights : array_like of float, shape (T, L, k), optional
            Gate weights; required when the writer stores weights, refused otherwise.
        token_ids : array_like of int, shape (T,), optional
            Input token ids; required when the writer stores them, refused otherwise.
        """
        self._check_open()
        n = self.num_sequences
        x = _to_numpy(experts, "experts")
        where = f"write_sequence (sequence {n} of {self.path.name})"
        if x.dtype == np.bool_ or not np.issubdtype(x.dtype, np.integer):
            raise TypeError(f"{where}: experts must be integer ids, got dtype {x.dtype}")
        if x.ndim != 3 or x.shape[1:] != (self._L, self._k):
            raise ValueError(
                f"{where}: experts must have shape (tokens, {self._L}, {self._k}) for this "
                f"writer (num_layers={self._L}, top_k={self._k}); got {x.shape}"
            )
        ids = _checked_ids(x, self._E, lambda t: f"{where}: token {t}")
        self._append(ids, domain, weights, token_ids, where)

    def write(self, trace: Trace, *, token_ids: Any = None) -> None:
        """Append every sequence of a :class:`Trace` (its domains and weights too).

        ``token_ids`` (shape ``(trace.num_tokens,)``) is required when the writer stores
        token ids. The trace's weights are stored when the writer stores weights (a trace
        without weights is then refused) and dropped otherwise.
        """
        self._check_open()
        if not isinstance(trace, Trace):
            raise TypeError(f"write() takes a Trace, got {type(trace).__name__}")
        got = (trace.num_experts, trace.num_layers, trace.top_k)
        if got != (self._E, self._L, self._k):
            raise ValueError(
                f"trace has num_experts={got[0]}, num_layers={got[1]}, top_k={got[2]} but "
                f"this writer was opened for {self._E}, {self._L}, {self._k}"
            )
        if self._wdtype is not None and trace.weights is None:
            raise ValueError(
                "this writer stores gate weights (weights_dtype="
                f"{self._wdtype.name!r}) but the trace has none"
            )
        tok = None
        if token_ids is not None:
            tok = _to_numpy(token_ids, "token_ids")
            if tok.shape != (trace.num_tokens,):
                raise ValueError(
                    f"token_ids must have shape ({trace.num_tokens},), one per token row of "
                    f"the trace; got {tok.shape}"
                )
        off = trace.offsets
        doms = trace.domains
        for s in range(trace.num_sequences):
            a, b = int(off[s]), int(off[s + 1])
            where = f"write (trace sequence {s}, file sequence {self.num_sequences})"
            w = None
            if self._wdtype is not None:
                w = trace.weights[a:b]
            self._append(
                np.array(trace.experts[a:b], dtype=self._id_dtype),
                None if doms is None else doms[s],
                w,
                None if tok is None else tok[a:b],
                where,
            )

    def _append(self, ids, domain, weights, token_ids, where) -> None:
        T = ids.shape[0]
        if T > _MAX_BATCH_TOKENS:
            raise ValueError(f"{where}: a sequence of {T} tokens exceeds 2**31 - 1; split it")
        if domain is not None and not isinstance(domain, str):
            raise TypeError(f"{where}: domain must be a str or None, got {type(domain).__name__}")
        labeled = domain is not None
        if self._labeled is None:
            self._labeled = labeled
        elif labeled != self._labeled:
            have = "have domain labels" if self._labeled else "have no domain label"
            raise ValueError(
                f"{where}: earlier sequences of this file {have}; give every sequence a "
                "domain or none"
            )
        w = None
        if self._wdtype is not None:
            if weights is None:
                raise ValueError(
                    f"{where}: this writer stores gate weights (weights_dtype="
                    f"{self._wdtype.name!r}); pass weights=..."
                )
            w = _checked_weights(weights, ids.shape, self._wdtype, where)
        elif weights is not None:
            raise ValueError(
                f"{where}: got weights but this writer stores none; open it with "
                "weights_dtype='float16' or 'float32'"
            )
        tok = None
        if self._tok:
            if token_ids is None:
                raise ValueError(f"{where}: this writer stores token ids; pass token_ids=...")
            tok = _checked_token_ids(token_ids, T, where)
        elif token_ids is not None:
            raise ValueError(
                f"{where}: got token_ids but this writer stores none; open it with token_ids=True"
            )
        code = -1
        if labeled:
            code = self._labels.setdefault(domain, len(self._labels))
        if self._buf and self._buf_tokens + T > self._batch_tokens:
            self.flush()
        self._buf.append((ids, code, w, tok))
        self._buf_tokens += T
        if self._buf_tokens >= self._batch_tokens:
            self.flush()

    # ------------------------------------------------------------------- output
    def flush(self) -> None:
        """Write the buffered sequences as one record batch (no-op when none are buffered)."""
        self._check_open()
        if not self._buf:
            return
        labels = list(self._labels) if self._labeled else None
        batch, md, tokens = _record_batch(self._buf, self.schema, labels, self._written)
        self._writer.write_batch(batch, custom_metadata=md)
        self._written += len(self._buf)
        self._tokens += tokens
        self._buf = []
        self._buf_tokens = 0

    def close(self) -> None:
        """Flush, write the Arrow footer and close the file. Idempotent."""
        if self._closed:
            return
        try:
            self.flush()
            self._writer.close()
        finally:
            self._sink.close()
            self._closed = True

    def abort(self) -> None:
        """Flush the buffered (complete) sequences and close the file *without* its footer.

        Readers then report the file as incomplete, the same as after a crash. Used by the
        context manager when the ``with`` block raises.
        """
        if self._closed:
            return
        try:
            self.flush()
        finally:
            self._sink.close()
            self._closed = True

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"TraceWriter for {self.path} is closed")

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (
            f"<TraceWriter {str(self.path)!r} {state} sequences={self.num_sequences} "
            f"E={self._E} L={self._L} k={self._k}>"
        )


def _checked_shape(
    num_experts: Any, top_k: Any, num_layers: Any, layer_ids: Any, model: Any
) -> tuple[int, int, int, list[int] | None]:
    """(E, k, L, layer ids as ints) of a writer, checked."""
    E = _validate_num_experts(num_experts)
    k = _pos_int(top_k, "top_k")
    L = _pos_int(num_layers, "num_layers")
    if k > E:
        raise ValueError(f"top_k = {k} exceeds num_experts = {E}; ids in a token are distinct")
    if layer_ids is not None:
        layer_ids = [int(v) for v in _to_numpy(layer_ids, "layer_ids").reshape(-1)]
        if len(layer_ids) != L:
            raise ValueError(
                f"layer_ids has {len(layer_ids)} entries but num_layers = {L}; give the "
                "model layer index of each MoE layer"
            )
    if model is not None and not isinstance(model, str):
        raise TypeError(f"model must be a str or None, got {type(model).__name__}")
    return E, k, L, layer_ids


def _file_info(
    E: int,
    k: int,
    L: int,
    model: str | None,
    layer_ids: list[int] | None,
    wdtype: np.dtype | None,
    tok: bool,
    meta: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The file's metadata (stored as JSON in the schema; see docs/trace-format.md)."""
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "num_experts": E,
        "top_k": k,
        "num_layers": L,
        "model": model,
        "layer_ids": layer_ids,
        "producer": "lrc_kernels",
        "producer_version": _producer_version(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "weights_dtype": None if wdtype is None else wdtype.name,
        "token_ids": tok,
        "user": _jsonable(dict(meta or {}), "meta"),
    }


def _joined(buf: list[tuple], i: int) -> np.ndarray:
    return np.concatenate([b[i] for b in buf]) if len(buf) > 1 else buf[0][i]


def _record_batch(
    buf: list[tuple], schema: pa.Schema, labels: list[str] | None, first: int
) -> tuple[pa.RecordBatch, dict[str, str], int]:
    """(record batch, its checksum metadata, tokens) of buffered ``(ids, domain code,
    weights, token ids)`` sequences; ``labels`` are the domain names by code (None: no
    domains), ``first`` the file index of the first sequence."""
    layers = schema.field("experts").type.value_type  # fixed_size_list<..., L>
    L, k = layers.list_size, layers.value_type.list_size
    lengths = np.array([b[0].shape[0] for b in buf], dtype=np.int64)
    off = np.zeros(len(buf) + 1, dtype=np.int64)
    np.cumsum(lengths, out=off[1:])
    ids = _joined(buf, 0)
    w = _joined(buf, 2) if "weights" in schema.names else None
    tok = _joined(buf, 3) if "token_ids" in schema.names else None
    codes = np.array([b[1] for b in buf], dtype=np.int32)
    if labels is not None:
        dom = pa.DictionaryArray.from_arrays(pa.array(codes), pa.array(labels, pa.string()))
    else:
        dom = pa.DictionaryArray.from_arrays(
            pa.array(np.zeros(len(buf), np.int32), mask=np.ones(len(buf), bool)),
            pa.array([], pa.string()),
        )
    cols = [dom, pa.array(lengths), _nested(ids, L, k, off)]
    if w is not None:
        cols.append(_nested(w, L, k, off))
    if tok is not None:
        cols.append(pa.ListArray.from_arrays(pa.array(off, pa.int32()), pa.array(tok)))
    batch = pa.record_batch(cols, schema=schema)
    md = {f"{_CRC_KEY}.experts": _crc(lengths, ids), _FIRST_KEY: str(first)}
    if w is not None:
        md[f"{_CRC_KEY}.weights"] = _crc(w)
    if tok is not None:
        md[f"{_CRC_KEY}.token_ids"] = _crc(tok)
    if labels is not None:
        md[f"{_CRC_KEY}.domain"] = _crc_bytes(_domain_bytes([labels[c] for c in codes]))
    return batch, md, int(off[-1])


def _checked_ids(x: np.ndarray, E: int, where) -> np.ndarray:
    """Ids in the canonical dtype (always a fresh, contiguous array) after range/duplicate
    checks; ``where(t)`` names token row ``t`` in messages."""
    return _v.check_ids(x, E, where, copy=True)


def _checked_weights(weights: Any, shape: tuple, dtype: np.dtype, where: str) -> np.ndarray:
    w = _to_numpy(weights, "weights")
    return _v.check_weights(w, shape, lambda t: f"token {t}", dtype, prefix=f"{where}: ")


def _checked_token_ids(token_ids: Any, T: int, where: str) -> np.ndarray:
    tok = _to_numpy(token_ids, "token_ids")
    if tok.dtype == np.bool_ or not np.issubdtype(tok.dtype, np.integer):
        raise TypeError(f"{where}: token_ids must be integers, got {tok.dtype}")
    if tok.shape != (T,):
        raise ValueError(f"{where}: token_ids must have shape ({T},), got {tok.shape}")
    if tok.size and (tok.min() < -(2**31) or tok.max() >= 2**31):
        raise ValueError(f"{where}: token ids must fit in int32")
    return np.array(tok, dtype=np.int32, copy=True)


def write_trace(
    path: str | os.PathLike,
    trace: Any,
    *,
    compression: str | None = "zstd",
    weights_dtype: str | None = None,
    token_ids: Any = None,
    meta: Mapping[str, Any] | None = None,
    compression_level: int | None = None,
    batch_tokens: int | None = None,
) -> None:
    """Write a whole trace to one file.

    Parameters
    ----------
    path : str or path-like
        Output file (suggested suffix ``.lrc.arrow``); overwritten if it exists.
    trace : Trace or array_like
        The trace (anything :func:`lrc_kernels.as_trace` accepts). Its ``meta`` keys
        ``model`` (or ``model_name``) and ``layer_ids`` (or ``moe_layer_ids``) fill the
        file's fields of those names; its other keys are stored as user metadata.
    compression : {"zstd", "lz4", None}, optional
        Arrow buffer compression.
    weights_dtype : {None, "float16", "float32", "none"}, optional
        Type of stored gate weights. None stores the trace's weights, if any, as float32
        (float16 if they already are); "none" drops them.
    token_ids : array_like of int, shape (N,), optional
        Input token id of every token row.
    meta : mapping, optional
        Extra user metadata (overrides keys of ``trace.meta``).
    compression_level, batch_tokens : int, optional
        See :class:`TraceWriter`.

    Notes
    -----
    ``docs/trace-format.md`` documents the schema.
    """
    tr = as_trace(trace)
    if weights_dtype == "none" or tr.weights is None:
        if weights_dtype not in (None, "none") and tr.weights is None:
            raise ValueError(f"weights_dtype={weights_dtype!r} but the trace has no weights")
        wd = None
    elif weights_dtype is None:
        wd = "float16" if tr.weights.dtype == np.float16 else "float32"
    else:
        wd = weights_dtype
    described, user = _split_meta(tr.meta)
    extra_desc, extra_user = _split_meta(meta)
    described.update(extra_desc)
    user.update(extra_user)
    for key in _SHAPE_KEYS:
        if key in described and described[key] != getattr(tr, key):
            raise ValueError(
                f"metadata says {key}={described[key]!r} but the trace has {key}={getattr(tr, key)}"
            )
    with TraceWriter(
        path,
        num_experts=tr.num_experts,
        top_k=tr.top_k,
        num_layers=tr.num_layers,
        model=described.get("model"),
        layer_ids=described.get("layer_ids"),
        weights_dtype=wd,
        token_ids=token_ids is not None,
        meta=user,
        compression=compression,
        compression_level=compression_level,
        batch_tokens=batch_tokens,
    ) as w:
        w.write(tr, token_ids=token_ids)
