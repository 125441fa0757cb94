"""Routing trace files: compressed Arrow IPC, written and read in bounded memory.

One row per sequence; the expert ids of its tokens are a list of ``(L, k)`` fixed-size
blocks in the narrowest unsigned integer type. Files are plain Arrow IPC *file* format with
zstd (or lz4) buffer compression, so pyarrow, polars and duckdb read them directly. The
schema, metadata and guarantees are documented in ``docs/trace-format.md``.

Public names: :func:`write_trace`, :func:`read_trace`, :class:`TraceWriter`,
:class:`TraceReader`, :func:`iter_trace_batches`, :func:`repair_trace`, and the error
classes :class:`TraceFileError` and :class:`IncompleteTraceError`.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import warnings
import zlib
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from . import _validate as _v
from ._trace import Trace, _to_numpy, _validate_num_experts, id_dtype_for

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "IncompleteTraceError",
    "IncompleteTraceWarning",
    "TraceFileError",
    "TraceReader",
    "TraceWriter",
    "iter_trace_batches",
    "read_trace",
    "repair_trace",
    "write_trace",
]

FORMAT_NAME = "lrc-trace"
FORMAT_VERSION = 1
META_KEY = b"lrc_trace"
META_CRC_KEY = b"lrc_trace.crc32"
_MAGIC = b"ARROW1\x00\x00"
_CRC_KEY = "lrc.crc32"
_FIRST_KEY = "lrc.first_sequence"
# metadata keys the writer owns; a user value is replaced (provenance) or checked (shape)
_SHAPE_KEYS = ("num_experts", "top_k", "num_layers")
_PROVENANCE_KEYS = (
    "format",
    "format_version",
    "producer",
    "producer_version",
    "created",
    "weights_dtype",
    "token_ids",
)
_DESCRIBED_KEYS = ("model", "layer_ids")
_RESERVED = (*_SHAPE_KEYS, *_PROVENANCE_KEYS, *_DESCRIBED_KEYS)
_DEFAULT_BATCH_ACTIVATIONS = 1 << 24
_MAX_BATCH_TOKENS = (1 << 31) - 1
_WEIGHT_TYPES = {"float16": np.dtype(np.float16), "float32": np.dtype(np.float32)}


class TraceFileError(ValueError):
    """A trace file is not readable as an lrc trace: wrong format, schema, corrupt data."""


class IncompleteTraceError(TraceFileError):
    """A trace file has no Arrow footer: its writer stopped before ``close()``."""


class IncompleteTraceWarning(UserWarning):
    """Reading only the completed record batches of an incomplete trace file."""


# ----------------------------------------------------------------------------- helpers
def _producer_version() -> str:
    from . import __version__

    return __version__


def _jsonable(obj: Any, where: str) -> Any:
    """A JSON-ready copy of ``obj`` (numpy scalars and arrays become Python values)."""
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist(), where)
    if isinstance(obj, np.generic):
        return _jsonable(obj.item(), where)
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        if not np.isfinite(obj):
            raise ValueError(f"metadata value at {where} is {obj}; JSON cannot store it")
        return obj
    if isinstance(obj, Mapping):
        out = {}
        for key, val in obj.items():
            if not isinstance(key, str):
                raise TypeError(f"metadata key {key!r} at {where} must be a str")
            out[key] = _jsonable(val, f"{where}.{key}")
        return out
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    raise TypeError(
        f"metadata value at {where} has type {type(obj).__name__}, which JSON cannot store; "
        "use str, int, float, bool, None, lists and dicts"
    )


def _weights_dtype(value: Any) -> np.dtype | None:
    if value is None:
        return None
    key = np.dtype(value).name if not isinstance(value, str) else value
    if key not in _WEIGHT_TYPES:
        raise ValueError(f"weights_dtype must be None, 'float16' or 'float32', got {value!r}")
    return _WEIGHT_TYPES[key]


def _codec(compression: str | None, level: int | None) -> str | pa.Codec | None:
    if compression in (None, "none", "uncompressed"):
        if level is not None:
            raise ValueError("compression_level needs a compression codec")
        return None
    if compression not in ("zstd", "lz4"):
        raise ValueError(f"compression must be 'zstd', 'lz4' or None, got {compression!r}")
    if level is None:
        return compression
    lo = pa.Codec.minimum_compression_level(compression)
    hi = pa.Codec.maximum_compression_level(compression)
    level = _v.check_int(level, "compression_level", lo, hi)
    return pa.Codec(compression, compression_level=level)


def _schema(info: dict, id_type: pa.DataType, w_type: pa.DataType | None, tok: bool) -> pa.Schema:
    L, k = info["num_layers"], info["top_k"]
    fields = [
        pa.field("domain", pa.dictionary(pa.int32(), pa.string())),
        pa.field("length", pa.int64(), nullable=False),
        pa.field("experts", pa.list_(pa.list_(pa.list_(id_type, k), L)), nullable=False),
    ]
    if w_type is not None:
        fields.append(pa.field("weights", pa.list_(pa.list_(pa.list_(w_type, k), L))))
    if tok:
        fields.append(pa.field("token_ids", pa.list_(pa.int32())))
    meta = json.dumps(info, sort_keys=True).encode()
    return pa.schema(fields, metadata={META_KEY: meta, META_CRC_KEY: _crc_bytes(meta).encode()})


def _crc_bytes(data: bytes) -> str:
    return f"{zlib.crc32(data):08x}"


def _domain_bytes(labels: Sequence[str]) -> bytes:
    return "\x1f".join(labels).encode()


def _crc(*arrays: np.ndarray | None) -> str:
    c = 0
    for a in arrays:
        if a is not None and a.size:
            c = zlib.crc32(memoryview(np.ascontiguousarray(a)).cast("B"), c)
    return f"{c:08x}"


def _nested(values: np.ndarray, L: int, k: int, offsets: np.ndarray) -> pa.ListArray:
    inner = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), k)
    tokens = pa.FixedSizeListArray.from_arrays(inner, L)
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), tokens)


def _split_meta(meta: Mapping[str, Any] | None) -> tuple[dict, dict]:
    """(described keys: model/layer_ids/shape keys found, free-form user keys)."""
    described: dict = {}
    user: dict = {}
    for key, val in (meta or {}).items():
        if key in ("model", "model_name"):
            described["model"] = val
        elif key in ("layer_ids", "moe_layer_ids"):
            described["layer_ids"] = val
        elif key in _SHAPE_KEYS:
            described[key] = val
        elif key in _PROVENANCE_KEYS or key in ("source_files",):
            continue  # rewritten by this writer
        else:
            user[key] = val
    return described, user


# ------------------------------------------------------------------------------ writer
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
        self._wdtype = _weights_dtype(weights_dtype)
        self._tok = bool(token_ids)
        if batch_tokens is None:
            batch_tokens = max(1, _DEFAULT_BATCH_ACTIVATIONS // (L * k))
        self._batch_tokens = min(_pos_int(batch_tokens, "batch_tokens"), _MAX_BATCH_TOKENS)
        self._E, self._L, self._k = E, L, k
        self._id_dtype = id_dtype_for(E)
        info = {
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
            "weights_dtype": None if self._wdtype is None else self._wdtype.name,
            "token_ids": self._tok,
            "user": _jsonable(dict(meta or {}), "meta"),
        }
        w_type = None if self._wdtype is None else pa.from_numpy_dtype(self._wdtype)
        self.schema = _schema(info, pa.from_numpy_dtype(self._id_dtype), w_type, self._tok)
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
        buf = self._buf
        lengths = np.array([b[0].shape[0] for b in buf], dtype=np.int64)
        off = np.zeros(len(buf) + 1, dtype=np.int64)
        np.cumsum(lengths, out=off[1:])
        ids = np.concatenate([b[0] for b in buf]) if len(buf) > 1 else buf[0][0]
        w = None
        if self._wdtype is not None:
            w = np.concatenate([b[2] for b in buf]) if len(buf) > 1 else buf[0][2]
        tok = None
        if self._tok:
            tok = np.concatenate([b[3] for b in buf]) if len(buf) > 1 else buf[0][3]
        codes = np.array([b[1] for b in buf], dtype=np.int32)
        if self._labeled:
            dom = pa.DictionaryArray.from_arrays(
                pa.array(codes), pa.array(list(self._labels), pa.string())
            )
        else:
            dom = pa.DictionaryArray.from_arrays(
                pa.array(np.zeros(len(buf), np.int32), mask=np.ones(len(buf), bool)),
                pa.array([], pa.string()),
            )
        cols = [dom, pa.array(lengths), _nested(ids, self._L, self._k, off)]
        if w is not None:
            cols.append(_nested(w, self._L, self._k, off))
        if tok is not None:
            cols.append(pa.ListArray.from_arrays(pa.array(off, pa.int32()), pa.array(tok)))
        batch = pa.record_batch(cols, schema=self.schema)
        md = {f"{_CRC_KEY}.experts": _crc(lengths, ids), _FIRST_KEY: str(self._written)}
        if w is not None:
            md[f"{_CRC_KEY}.weights"] = _crc(w)
        if tok is not None:
            md[f"{_CRC_KEY}.token_ids"] = _crc(tok)
        if self._labeled:
            names = list(self._labels)
            md[f"{_CRC_KEY}.domain"] = _crc_bytes(_domain_bytes([names[c] for c in codes]))
        self._writer.write_batch(batch, custom_metadata=md)
        self._written += len(buf)
        self._tokens += int(off[-1])
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


def _pos_int(v: Any, name: str) -> int:
    return _v.check_int(v, name, 1, what="a positive integer")


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
    from ._trace import as_trace

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


# ------------------------------------------------------------------------------ reader
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


class _File:
    """One trace file: header checks, an index of sequences, record batch iteration."""

    def __init__(self, path: Path, allow_incomplete: bool) -> None:
        self.path = path
        self.name = str(path)
        with open(path, "rb") as fh:
            head = fh.read(8)
        if head != _MAGIC:
            raise TraceFileError(self._not_arrow(head))
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
            self._parse_schema(schema)
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
    def _not_arrow(self, head: bytes) -> str:
        if not head:
            return f"{self.name}: empty file (0 bytes); it holds no trace"
        if head[:2] == b"PK":
            return (
                f"{self.name}: this is a zip/.npz file, not an Arrow trace; read it with "
                "lrc_kernels.convert.from_npz()"
            )
        if head[:4] == b"\xff\xff\xff\xff":
            return (
                f"{self.name}: this is an Arrow IPC *stream*, not an IPC file; trace files "
                "use the file format (pyarrow.ipc.new_file)"
            )
        if len(head) < 8 and _MAGIC.startswith(head):
            return f"{self.name}: truncated after {len(head)} bytes; it holds no trace"
        return (
            f"{self.name}: not an Arrow IPC file (it does not start with the ARROW1 magic "
            "bytes); write traces with lrc_kernels.write_trace or convert them with "
            "lrc_kernels.convert"
        )

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

    def _parse_schema(self, schema: pa.Schema) -> None:
        md = schema.metadata or {}
        if META_KEY not in md:
            raise TraceFileError(
                f"{self.name}: an Arrow file but not an lrc trace (no '{META_KEY.decode()}' "
                f"schema metadata; columns: {schema.names}). Write traces with "
                "lrc_kernels.write_trace or convert with lrc_kernels.convert."
            )
        if META_CRC_KEY in md and _crc_bytes(md[META_KEY]).encode() != md[META_CRC_KEY]:
            raise TraceFileError(
                f"{self.name}: checksum mismatch in the trace metadata (corrupt file)"
            )
        try:
            info = json.loads(md[META_KEY])
        except ValueError as exc:
            raise TraceFileError(f"{self.name}: trace metadata is not valid JSON ({exc})") from None
        if not isinstance(info, dict) or info.get("format") != FORMAT_NAME:
            raise TraceFileError(
                f"{self.name}: trace metadata does not name format {FORMAT_NAME!r}"
            )
        version = info.get("format_version")
        if not isinstance(version, int) or version < 1:
            raise TraceFileError(f"{self.name}: invalid format_version {version!r}")
        if version > FORMAT_VERSION:
            raise TraceFileError(
                f"{self.name}: written with trace format version {version} by "
                f"{info.get('producer')} {info.get('producer_version')}; this lrc_kernels "
                f"({_producer_version()}) reads versions up to {FORMAT_VERSION}. Upgrade "
                "lrc_kernels to read it."
            )
        try:
            E = _validate_num_experts(info.get("num_experts"))
            k = _pos_int(info.get("top_k"), "top_k")
            L = _pos_int(info.get("num_layers"), "num_layers")
        except (TypeError, ValueError) as exc:
            raise TraceFileError(f"{self.name}: invalid trace metadata: {exc}") from None
        if k > E:
            raise TraceFileError(f"{self.name}: metadata top_k={k} exceeds num_experts={E}")
        self.E, self.k, self.L = E, k, L
        self.info = info
        self.has_weights = "weights" in schema.names
        self.has_tokens = "token_ids" in schema.names
        self._check_fields(schema)

    def _check_fields(self, schema: pa.Schema) -> None:
        def nested_leaf(name: str) -> pa.DataType:
            t = schema.field(name).type
            ok = (
                pa.types.is_list(t)
                and pa.types.is_fixed_size_list(t.value_type)
                and t.value_type.list_size == self.L
                and pa.types.is_fixed_size_list(t.value_type.value_type)
                and t.value_type.value_type.list_size == self.k
            )
            if not ok:
                raise TraceFileError(
                    f"{self.name}: column '{name}' has type {t}; expected "
                    f"list<fixed_size_list<fixed_size_list<_, {self.k}>, {self.L}>> for "
                    f"num_layers={self.L}, top_k={self.k}"
                )
            return t.value_type.value_type.value_type

        want = ["domain", "length", "experts"]
        wdt = self.info.get("weights_dtype")
        if wdt is not None:
            want.append("weights")
        if self.info.get("token_ids"):
            want.append("token_ids")
        for col in want:
            if col not in schema.names:
                raise TraceFileError(f"{self.name}: trace file lacks the '{col}' column")
        extra = [c for c in schema.names if c not in want]
        if extra:
            raise TraceFileError(
                f"{self.name}: unexpected columns {extra} for trace format version "
                f"{FORMAT_VERSION} (expected {want})"
            )
        leaf = nested_leaf("experts")
        if not pa.types.is_unsigned_integer(leaf) or np.iinfo(leaf.to_pandas_dtype()).max < (
            self.E - 1
        ):
            raise TraceFileError(
                f"{self.name}: expert ids are stored as {leaf}, which cannot hold ids up to "
                f"num_experts - 1 = {self.E - 1}"
            )
        self.id_dtype = np.dtype(leaf.to_pandas_dtype())
        if self.has_weights and str(nested_leaf("weights")) != {
            "float16": "halffloat",
            "float32": "float",
        }.get(wdt):
            raise TraceFileError(
                f"{self.name}: 'weights' column type does not match weights_dtype={wdt!r}"
            )
        dt = schema.field("domain").type
        if not (pa.types.is_dictionary(dt) and pa.types.is_string(dt.value_type)):
            raise TraceFileError(
                f"{self.name}: 'domain' column has type {dt}, expected dictionary<string>"
            )
        if not pa.types.is_int64(schema.field("length").type):
            raise TraceFileError(f"{self.name}: 'length' column must be int64")
        if self.has_tokens:
            tt = schema.field("token_ids").type
            if not (pa.types.is_list(tt) and pa.types.is_integer(tt.value_type)):
                raise TraceFileError(f"{self.name}: 'token_ids' column has type {tt}")
        self.schema = schema

    # ---------------------------------------------------------------- batches
    def record_batches(self, columns: Sequence[str] | None = None) -> Iterator[tuple]:
        """(index, RecordBatch, custom metadata) of every complete batch."""
        if self.complete:
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
            return
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
        dom_col = rb.column("domain")
        if dom_col.null_count == len(dom_col):
            doms = None
        elif dom_col.null_count:
            raise TraceFileError(f"{where}: some sequences have a domain label, others not")
        else:
            labels = _labels(dom_col, where)
            want = (md or {}).get(f"{_CRC_KEY}.domain".encode())
            if want is not None and _crc_bytes(_domain_bytes(labels)).encode() != want:
                raise TraceFileError(f"{where}: checksum mismatch in 'domain' (corrupt file)")
            doms = np.asarray(labels, dtype=object)

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

    def meta(self) -> dict:
        info = self.info
        meta = dict(info.get("user") or {})
        for key in _RESERVED:
            if key in info:
                meta[key] = info[key]
        meta["source_file"] = self.name
        return meta


def _labels(col: pa.Array, where: str) -> list:
    try:
        col.validate(full=True)
        return col.to_pylist()
    except (pa.ArrowException, ValueError, IndexError, UnicodeDecodeError) as exc:
        raise TraceFileError(f"{where}: malformed 'domain' column ({exc})") from None


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
    if len(pieces) == 1:
        p = pieces[0]
        ids, off, doms, w = p["ids"], p["off"], p["domains"], p["weights"]
    else:
        ids = np.concatenate([p["ids"] for p in pieces])
        lens = np.concatenate([np.diff(p["off"]) for p in pieces])
        off = np.zeros(lens.shape[0] + 1, np.int64)
        np.cumsum(lens, out=off[1:])
        doms = None
        if pieces[0]["domains"] is not None:
            doms = np.concatenate([p["domains"] for p in pieces])
        w = None
        if pieces[0]["weights"] is not None:
            w = np.concatenate([p["weights"] for p in pieces])
    return Trace(
        ids,
        np.ascontiguousarray(off),
        num_experts=f.E,
        domains=doms,
        weights=w,
        meta=meta,
        _validated=True,
    )


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
