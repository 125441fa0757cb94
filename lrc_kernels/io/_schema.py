"""The Arrow schema of a trace file: built for the writer, checked for the reader.

:func:`build_schema` is the schema a :class:`~lrc_kernels.io.TraceWriter` writes;
:func:`read_info` and :func:`check_columns` check a schema read from a file against it, and
:func:`not_arrow_message` says what a file that is not an Arrow IPC file is instead.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa

from .._trace import _validate_num_experts
from ._format import (
    _MAGIC,
    FORMAT_NAME,
    FORMAT_VERSION,
    META_CRC_KEY,
    META_KEY,
    TraceFileError,
    _crc_bytes,
    _pos_int,
    _producer_version,
)


def build_schema(
    info: dict, id_type: pa.DataType, w_type: pa.DataType | None, tok: bool
) -> pa.Schema:
    """The schema of a trace file with metadata ``info`` (its JSON and CRC in the metadata)."""
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


def not_arrow_message(name: str, head: bytes) -> str:
    """Why file ``name``, starting with the bytes ``head``, is not an Arrow IPC file."""
    if not head:
        return f"{name}: empty file (0 bytes); it holds no trace"
    if head[:2] == b"PK":
        return (
            f"{name}: this is a zip/.npz file, not an Arrow trace; read it with "
            "lrc_kernels.convert.from_npz()"
        )
    if head[:4] == b"\xff\xff\xff\xff":
        return (
            f"{name}: this is an Arrow IPC *stream*, not an IPC file; trace files "
            "use the file format (pyarrow.ipc.new_file)"
        )
    if len(head) < 8 and _MAGIC.startswith(head):
        return f"{name}: truncated after {len(head)} bytes; it holds no trace"
    return (
        f"{name}: not an Arrow IPC file (it does not start with the ARROW1 magic "
        "bytes); write traces with lrc_kernels.write_trace or convert them with "
        "lrc_kernels.convert"
    )


def read_info(schema: pa.Schema, name: str) -> tuple[dict, int, int, int]:
    """(metadata, E, k, L) of a file's schema after the format, version and shape checks."""
    md = schema.metadata or {}
    if META_KEY not in md:
        raise TraceFileError(
            f"{name}: an Arrow file but not an lrc trace (no '{META_KEY.decode()}' "
            f"schema metadata; columns: {schema.names}). Write traces with "
            "lrc_kernels.write_trace or convert with lrc_kernels.convert."
        )
    if META_CRC_KEY in md and _crc_bytes(md[META_KEY]).encode() != md[META_CRC_KEY]:
        raise TraceFileError(f"{name}: checksum mismatch in the trace metadata (corrupt file)")
    try:
        info = json.loads(md[META_KEY])
    except ValueError as exc:
        raise TraceFileError(f"{name}: trace metadata is not valid JSON ({exc})") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT_NAME:
        raise TraceFileError(f"{name}: trace metadata does not name format {FORMAT_NAME!r}")
    version = info.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise TraceFileError(f"{name}: invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise TraceFileError(
            f"{name}: written with trace format version {version} by "
            f"{info.get('producer')} {info.get('producer_version')}; this lrc_kernels "
            f"({_producer_version()}) reads versions up to {FORMAT_VERSION}. Upgrade "
            "lrc_kernels to read it."
        )
    try:
        E = _validate_num_experts(info.get("num_experts"))
        k = _pos_int(info.get("top_k"), "top_k")
        L = _pos_int(info.get("num_layers"), "num_layers")
    except (TypeError, ValueError) as exc:
        raise TraceFileError(f"{name}: invalid trace metadata: {exc}") from None
    if k > E:
        raise TraceFileError(f"{name}: metadata top_k={k} exceeds num_experts={E}")
    return info, E, k, L


def _nested_leaf(schema: pa.Schema, col: str, L: int, k: int, name: str) -> pa.DataType:
    """Value type of a ``list<fixed_size_list<fixed_size_list<_, k>, L>>`` column."""
    t = schema.field(col).type
    ok = (
        pa.types.is_list(t)
        and pa.types.is_fixed_size_list(t.value_type)
        and t.value_type.list_size == L
        and pa.types.is_fixed_size_list(t.value_type.value_type)
        and t.value_type.value_type.list_size == k
    )
    if not ok:
        raise TraceFileError(
            f"{name}: column '{col}' has type {t}; expected "
            f"list<fixed_size_list<fixed_size_list<_, {k}>, {L}>> for "
            f"num_layers={L}, top_k={k}"
        )
    return t.value_type.value_type.value_type


def check_columns(schema: pa.Schema, info: dict[str, Any], E: int, k: int, L: int, name: str):
    """The columns and types a file with metadata ``info`` must have; returns the id dtype."""
    want = ["domain", "length", "experts"]
    wdt = info.get("weights_dtype")
    if wdt is not None:
        want.append("weights")
    if info.get("token_ids"):
        want.append("token_ids")
    for col in want:
        if col not in schema.names:
            raise TraceFileError(f"{name}: trace file lacks the '{col}' column")
    extra = [c for c in schema.names if c not in want]
    if extra:
        raise TraceFileError(
            f"{name}: unexpected columns {extra} for trace format version "
            f"{FORMAT_VERSION} (expected {want})"
        )
    leaf = _nested_leaf(schema, "experts", L, k, name)
    if not pa.types.is_unsigned_integer(leaf) or np.iinfo(leaf.to_pandas_dtype()).max < (E - 1):
        raise TraceFileError(
            f"{name}: expert ids are stored as {leaf}, which cannot hold ids up to "
            f"num_experts - 1 = {E - 1}"
        )
    if "weights" in schema.names and str(_nested_leaf(schema, "weights", L, k, name)) != {
        "float16": "halffloat",
        "float32": "float",
    }.get(wdt):
        raise TraceFileError(f"{name}: 'weights' column type does not match weights_dtype={wdt!r}")
    dt = schema.field("domain").type
    if not (pa.types.is_dictionary(dt) and pa.types.is_string(dt.value_type)):
        raise TraceFileError(f"{name}: 'domain' column has type {dt}, expected dictionary<string>")
    if not pa.types.is_int64(schema.field("length").type):
        raise TraceFileError(f"{name}: 'length' column must be int64")
    if "token_ids" in schema.names:
        tt = schema.field("token_ids").type
        if not (pa.types.is_list(tt) and pa.types.is_integer(tt.value_type)):
            raise TraceFileError(f"{name}: 'token_ids' column has type {tt}")
    return np.dtype(leaf.to_pandas_dtype())
