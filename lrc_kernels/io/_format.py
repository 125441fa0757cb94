"""The lrc trace file format: names, metadata keys, error classes, checksums, JSON metadata.

Everything the writer, the reader and the repair tool agree on, and nothing that reads or
writes a file. ``docs/trace-format.md`` documents the format.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from .. import _validate as _v

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


def _producer_version() -> str:
    from .. import __version__

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


def _pos_int(v: Any, name: str) -> int:
    return _v.check_int(v, name, 1, what="a positive integer")


def _labels(col: pa.Array, where: str) -> list:
    """The domain labels of a record batch's ``domain`` column, checked."""
    try:
        col.validate(full=True)
        return col.to_pylist()
    except (pa.ArrowException, ValueError, IndexError, UnicodeDecodeError) as exc:
        raise TraceFileError(f"{where}: malformed 'domain' column ({exc})") from None
