"""Converters for numpy arrays, ``.npz`` files and vLLM's per-request arrays."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._trace import Trace, _to_numpy, _validate_num_experts


# ------------------------------------------------------------------------- numpy
def _as_int_array(x: Any, what: str) -> np.ndarray:
    a = _to_numpy(x, what)
    if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"{what} must hold integer expert ids, got dtype {a.dtype}")
    return a


def from_arrays(
    arrays: Any,
    *,
    num_experts: int,
    domains: Sequence[str] | str | None = None,
    weights: Any = None,
    meta: Mapping[str, Any] | None = None,
) -> Trace:
    """A trace from per-sequence arrays (ragged) or one stacked array.

    Parameters
    ----------
    arrays : array_like or sequence of array_like
        One ``(T_s, L, k)`` integer array per sequence (lengths may differ), or a single
        array ``(S, T, L, k)`` (S equal-length sequences) or ``(T, L, k)`` (one sequence).
    num_experts : int
        Routed experts per layer ``E`` (never inferred: the highest experts may be unused).
    domains : str or sequence of str, optional
        One label per sequence (a single str labels them all).
    weights : array_like or sequence of array_like, optional
        Gate weights in the same layout as ``arrays``.
    meta : mapping, optional
        Metadata (model, layer_ids, ...).

    Returns
    -------
    Trace
    """
    E = _validate_num_experts(num_experts)
    seqs, what = _sequences(arrays, "arrays")
    off = np.zeros(len(seqs) + 1, dtype=np.int64)
    np.cumsum([s.shape[0] for s in seqs], out=off[1:])
    ids = _stack(seqs, what)
    w = None
    if weights is not None:
        wseqs, _ = _sequences(weights, "weights", integer=False)
        if [x.shape for x in wseqs] != [x.shape for x in seqs]:
            raise ValueError("weights must have the same per-sequence shapes as the expert ids")
        w = _stack(wseqs, "weights")
    return Trace(ids, off, num_experts=E, domains=domains, weights=w, meta=meta)


def _sequences(arrays: Any, what: str, integer: bool = True) -> tuple[list[np.ndarray], str]:
    conv = _as_int_array if integer else _to_numpy
    if isinstance(arrays, (list, tuple)):
        seqs = [conv(a, f"{what}[{i}]") for i, a in enumerate(arrays)]
        for i, a in enumerate(seqs):
            if a.ndim != 3:
                raise ValueError(f"{what}[{i}] must have shape (tokens, layers, k), got {a.shape}")
        return seqs, what
    a = conv(arrays, what)
    if a.ndim == 4:
        return list(a), what
    if a.ndim == 3:
        return [a], what
    raise ValueError(
        f"{what} must be a list of (tokens, layers, k) arrays, one (S, T, L, k) array or one "
        f"(T, L, k) array; got shape {a.shape}"
    )


def _stack(seqs: list[np.ndarray], what: str) -> np.ndarray:
    if not seqs:
        raise ValueError(f"{what} is empty; give at least one sequence")
    shapes = {s.shape[1:] for s in seqs}
    if len(shapes) > 1:
        raise ValueError(
            f"all sequences must have the same (layers, k); {what} has {sorted(shapes)}"
        )
    return np.concatenate(seqs) if len(seqs) > 1 else seqs[0]


def to_arrays(trace: Trace, dtype: Any = None) -> list[np.ndarray]:
    """One ``(T_s, L, k)`` array per sequence (views unless ``dtype`` asks for a copy)."""
    if dtype is None:
        return [trace.sequence(s) for s in range(trace.num_sequences)]
    return [trace.sequence(s).astype(dtype) for s in range(trace.num_sequences)]


def to_npz(
    path: str | os.PathLike, trace: Trace, *, token_ids: Any = None, compressed: bool = True
) -> None:
    """Save a trace as ``.npz`` (arrays: experts, offsets, num_experts, meta, and domains,
    weights, token_ids when present). Readable by :func:`from_npz` and plain numpy.
    """
    if not isinstance(trace, Trace):
        raise TypeError(f"to_npz takes a Trace, got {type(trace).__name__}")
    from ..io import _jsonable

    arrays: dict[str, np.ndarray] = {
        "experts": trace.experts,
        "offsets": trace.offsets,
        "num_experts": np.asarray(trace.num_experts, dtype=np.int64),
        "meta": np.asarray(json.dumps(_jsonable(trace.meta, "meta"))),
    }
    if trace.domains is not None:
        arrays["domains"] = np.asarray([str(d) for d in trace.domains], dtype=str)
    if trace.weights is not None:
        arrays["weights"] = trace.weights
    if token_ids is not None:
        tok = _as_int_array(token_ids, "token_ids")
        if tok.shape != (trace.num_tokens,):
            raise ValueError(f"token_ids must have shape ({trace.num_tokens},), got {tok.shape}")
        arrays["token_ids"] = tok
    (np.savez_compressed if compressed else np.savez)(path, **arrays)


_ID_KEYS = ("experts", "indices", "expert_ids", "topk_ids", "ids")


def from_npz(
    path: str | os.PathLike,
    *,
    num_experts: int | None = None,
    weights: bool = True,
    domain: str | None = None,
) -> Trace:
    """Load a trace from ``.npz``.

    Reads files written by :func:`to_npz` and plain captures: an id array named
    ``experts``, ``indices``, ``expert_ids``, ``topk_ids`` or ``ids`` of shape ``(T, L, k)``
    (one sequence) or ``(S, T, L, k)``, with optional ``offsets`` (sequence boundaries),
    ``scores`` or ``weights`` (gate weights), ``domains`` and ``moe_layer_ids`` /
    ``layer_ids``.

    Parameters
    ----------
    path : str or path-like
        The ``.npz`` file (never unpickled).
    num_experts : int, optional
        Required unless the file stores it (it cannot be inferred safely from the ids).
    weights : bool, optional
        Load gate weights when present.
    domain : str, optional
        Label every sequence with this domain (files without ``domains``).
    """
    path = Path(path)
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable .npz file ({exc})") from None
    with z:
        keys = list(z.keys())
        key = next((k for k in _ID_KEYS if k in z), None)
        if key is None:
            raise ValueError(
                f"{path}: no expert id array; expected one named {' / '.join(_ID_KEYS)} "
                f"(arrays here: {keys})"
            )
        ids = z[key]
        stored_E = int(z["num_experts"]) if "num_experts" in z else None
        if num_experts is None:
            if stored_E is None:
                raise ValueError(
                    f"{path}: the file does not store num_experts; pass num_experts=E (it "
                    "cannot be inferred safely: the highest experts may never be chosen)"
                )
            num_experts = stored_E
        elif stored_E is not None and stored_E != num_experts:
            raise ValueError(f"{path}: num_experts={num_experts} but the file stores {stored_E}")
        off = z["offsets"] if "offsets" in z else None
        w = None
        if weights:
            wk = next((k for k in ("weights", "scores") if k in z), None)
            w = None if wk is None else z[wk]
        doms = [str(d) for d in z["domains"]] if "domains" in z else None
        meta: dict[str, Any] = {}
        if "meta" in z:
            try:
                meta = json.loads(str(z["meta"]))
            except ValueError as exc:
                raise ValueError(f"{path}: 'meta' is not valid JSON ({exc})") from None
        for lk in ("moe_layer_ids", "layer_ids"):
            if lk in z:
                meta["layer_ids"] = [int(v) for v in z[lk].ravel()]
                break
    if doms is None and domain is not None:
        doms = domain
    try:
        if ids.ndim == 4:
            if off is not None:
                raise ValueError("an (S, T, L, k) id array cannot come with offsets")
            S, T = ids.shape[:2]
            ids = ids.reshape(S * T, *ids.shape[2:])
            w = None if w is None else np.asarray(w).reshape(ids.shape)
            off = np.arange(S + 1, dtype=np.int64) * T
        if ids.ndim != 3:
            raise ValueError(f"'{key}' must have shape (T, L, k) or (S, T, L, k), got {ids.shape}")
        if w is not None and np.asarray(w).shape != ids.shape:
            raise ValueError(f"weights shape {np.asarray(w).shape} differs from ids {ids.shape}")
        return Trace(ids, off, num_experts=num_experts, domains=doms, weights=w, meta=meta)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{path}: {exc}") from None


# ---------------------------------------------------------------------------- vLLM
def from_vllm(
    routed_experts: Any,
    *,
    num_experts: int,
    domains: Sequence[str] | str | None = None,
    meta: Mapping[str, Any] | None = None,
) -> Trace:
    """A trace from vLLM-style routed experts: one ``(tokens, layers, k)`` array per request.

    vLLM (and SGLang's per-token recorder) return int16 ids; any integer dtype is accepted.
    Each request becomes one sequence, in the given order. Padding or negative ids are
    refused with their request, token, layer and slot.
    """
    if not isinstance(routed_experts, (list, tuple)):
        routed_experts = [routed_experts]
    seqs = []
    for i, a in enumerate(routed_experts):
        x = _as_int_array(a, f"request {i}")
        if x.ndim != 3:
            raise ValueError(f"request {i}: expected (tokens, layers, k), got shape {x.shape}")
        if x.size and x.min() < 0:
            t, l, j = (int(v) for v in np.argwhere(x < 0)[0])
            raise ValueError(
                f"request {i}: negative expert id {int(x[t, l, j])} at token {t}, layer {l}, "
                f"slot {j} (padding? drop unrouted tokens before converting)"
            )
        seqs.append(x)
    return from_arrays(seqs, num_experts=num_experts, domains=domains, meta=meta)


def to_vllm(trace: Trace) -> list[np.ndarray]:
    """One ``(tokens, layers, k)`` int16 array per sequence (the vLLM layout)."""
    if trace.num_experts > 32768:
        raise ValueError(
            f"num_experts = {trace.num_experts} does not fit int16 ids (at most 32768 experts)"
        )
    return to_arrays(trace, np.int16)
