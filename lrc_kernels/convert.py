"""Converters between routing traces and the layouts other tools produce.

- numpy arrays and ``.npz`` files (:func:`from_arrays`, :func:`to_arrays`,
  :func:`from_npz`, :func:`to_npz`);
- vLLM's per-request routed experts, one ``(tokens, layers, k)`` int16 array per request
  (:func:`from_vllm`, :func:`to_vllm`);
- Hugging Face ``router_logits`` (``output_router_logits=True``), for the model families
  whose routing choice is the top-k of those logits (:func:`from_hf_router_logits`);
- the per-layer safetensors top-k files of the paper's code, ``{domain: (S, T, k)}`` int8
  per layer (:func:`from_safetensors_topk`), refusing ids that wrapped past 127.

Every converter returns a validated :class:`lrc_kernels.Trace`; write it with
:func:`lrc_kernels.write_trace`. See ``docs/trace-format.md`` ("Converters").
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._trace import Trace, _is_device_array, _to_numpy, _validate_num_experts

__all__ = [
    "HF_TOPK_FAMILIES",
    "HF_REFUSED_FAMILIES",
    "from_arrays",
    "to_arrays",
    "from_npz",
    "to_npz",
    "from_vllm",
    "to_vllm",
    "from_hf_router_logits",
    "from_safetensors_topk",
    "from_routing_log",
    "routing_log_to_file",
    "iter_routing_log",
    "RoutingLogStats",
]


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
    from .io import _jsonable

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


# ------------------------------------------------------------------ Hugging Face
#: Families whose routing choice is the top-k of the router logits (softmax is monotonic),
#: so ``output_router_logits=True`` recovers it exactly (see shared notes on routers).
HF_TOPK_FAMILIES = frozenset(
    {
        "mixtral",
        "qwen2_moe",
        "qwen3_moe",
        "qwen3_next",
        "olmoe",
        "flex_olmo",
        "minimax",
        "granitemoe",
        "granitemoeshared",
        "granitemoehybrid",
        "jamba",
        "dbrx",
        "gpt_oss",
        "jetmoe",
    }
)

#: Families where the logits do not determine the choice, with the reason.
HF_REFUSED_FAMILIES = {
    "deepseek_v2": "group-limited selection: the logits alone do not give the choice",
    "deepseek_v3": "sigmoid scores plus a correction bias and group-limited choice",
    "glm4_moe": "sigmoid scores plus a correction bias (DeepSeek-V3 style)",
    "dots1": "sigmoid scores plus a correction bias (DeepSeek-V3 style)",
    "llama4": "the router's scores, not its logits, pick the experts",
    "llama4_text": "the router's scores, not its logits, pick the experts",
    "switch_transformers": "expert capacity drops tokens: the logits do not say which",
    "nllb_moe": "capacity-limited top-2: the logits do not say which tokens were dropped",
    "nllb-moe": "capacity-limited top-2: the logits do not say which tokens were dropped",
    "phimoe": "sparsemixer selection with jitter masking, not a plain top-k",
    "ernie4_5_moe": "a correction bias enters the selection",
}


def _logits_numpy(x: Any, what: str) -> np.ndarray:
    if type(x).__module__.startswith("torch"):
        x = x.detach().float().cpu().numpy()  # bfloat16 has no numpy type
    a = np.asarray(x) if not _is_device_array(x) else _to_numpy(x, what)
    if not np.issubdtype(a.dtype, np.floating):
        raise TypeError(f"{what} must be floating-point router logits, got {a.dtype}")
    return a.astype(np.float32, copy=False)


def _topk_of_softmax(logits: np.ndarray, k: int) -> np.ndarray:
    """Top-k experts of softmax(logits) in float32, highest first (ties: lower id first)."""
    z = logits - logits.max(axis=-1, keepdims=True)
    p = np.exp(z, dtype=np.float32)
    p /= p.sum(axis=-1, keepdims=True, dtype=np.float32)
    return np.argsort(-p, axis=-1, kind="stable")[..., :k]


def from_hf_router_logits(
    router_logits: Sequence[Any],
    *,
    top_k: int,
    model_type: str,
    attention_mask: Any = None,
    batch_size: int | None = None,
    num_experts: int | None = None,
    domains: Sequence[str] | str | None = None,
    meta: Mapping[str, Any] | None = None,
    trust_topk: bool = False,
) -> Trace:
    """A trace from Hugging Face ``router_logits`` (``output_router_logits=True``).

    Parameters
    ----------
    router_logits : sequence of tensors or arrays
        One entry per MoE layer, each ``(batch * seq, E)`` (as transformers returns it) or
        ``(batch, seq, E)``; torch tensors of any float dtype (bf16 too) or numpy arrays.
    top_k : int
        The model's ``num_experts_per_tok``.
    model_type : str
        ``model.config.model_type``. Only families in :data:`HF_TOPK_FAMILIES` are
        converted: for them the router's choice is the top-k of the logits. Families in
        :data:`HF_REFUSED_FAMILIES` are refused with the reason; capture them with hooks
        (the capture module) instead.
    attention_mask : array_like of int, shape (batch, seq), optional
        Tokens with mask 0 (padding, either side) are dropped; each batch row is one
        sequence of its unmasked tokens, in order.
    batch_size : int, optional
        Rows of a flattened ``(batch * seq, E)`` input when no mask is given (default 1).
    num_experts : int, optional
        Defaults to the logits' last dimension (and must equal it when given).
    domains, meta : optional
        Per-sequence labels and metadata (``model`` is filled from ``model_type`` when
        absent).
    trust_topk : bool, optional
        Convert an unlisted or refused family anyway (you checked that its choice is the
        top-k of the logits).

    Returns
    -------
    Trace
        Ids in the router's order: highest probability first. For torch tensors the ids are
        ``torch.topk(softmax(logits, dtype=float32), k)``, the very computation of those
        families' routers; for numpy input the same in numpy, with exact ties broken
        towards the lower expert id (torch may order exact ties differently).

    Notes
    -----
    Capture during ``generate()`` hands back one tuple per forward call (prefill, then one
    token per step); convert the calls separately or concatenate their logits per layer.
    """
    mt = str(model_type).lower()
    if not trust_topk:
        if mt in HF_REFUSED_FAMILIES:
            raise ValueError(
                f"model_type {model_type!r}: router logits do not give the routing choice "
                f"({HF_REFUSED_FAMILIES[mt]}). Capture the chosen ids with a hook instead "
                "(lrc_kernels capture), or pass trust_topk=True if you are sure."
            )
        if mt not in HF_TOPK_FAMILIES:
            raise ValueError(
                f"model_type {model_type!r} is not known to route by the top-k of its "
                f"logits (known: {sorted(HF_TOPK_FAMILIES)}). Check the model's router and "
                "pass trust_topk=True, or capture the chosen ids with a hook."
            )
    if not isinstance(router_logits, (list, tuple)) or not router_logits:
        raise TypeError("router_logits must be a non-empty tuple/list, one entry per MoE layer")
    k = int(top_k)
    use_torch = all(type(x).__module__.startswith("torch") for x in router_logits)
    if use_torch:
        layers = list(router_logits)
        for i, x in enumerate(layers):
            if not x.is_floating_point():
                raise TypeError(f"router_logits[{i}] must be floating point, got {x.dtype}")
    else:
        layers = [_logits_numpy(x, f"router_logits[{i}]") for i, x in enumerate(router_logits)]
    shapes = {a.shape for a in layers}
    if len(shapes) != 1:
        raise ValueError(f"router_logits entries differ in shape: {sorted(shapes)}")
    shape = layers[0].shape
    E = shape[-1]
    if num_experts is not None and _validate_num_experts(num_experts) != E:
        raise ValueError(f"num_experts={num_experts} but the logits have {E} experts")
    if not 1 <= k <= E:
        raise ValueError(f"top_k must lie in [1, {E}], got {top_k}")
    mask = None
    if attention_mask is not None:
        mask = _to_numpy(attention_mask, "attention_mask")
        if mask.ndim != 2:
            raise ValueError(f"attention_mask must be (batch, seq), got shape {mask.shape}")
        B, T = mask.shape
    elif len(shape) == 3:
        B, T = shape[:2]
    else:
        B = 1 if batch_size is None else int(batch_size)
        if B < 1 or shape[0] % B:
            raise ValueError(f"{shape[0]} logit rows cannot be split into batch_size={B} rows")
        T = shape[0] // B
    if len(shape) == 3 and shape[:2] != (B, T) or len(shape) == 2 and shape[0] != B * T:
        raise ValueError(
            f"logits of shape {shape} do not match (batch, seq) = ({B}, {T}) of the "
            "attention mask / batch_size"
        )
    if use_torch:
        import torch

        with torch.no_grad():
            stacked = torch.stack([a.detach().reshape(B, T, E) for a in layers], dim=2)
            # exactly what those routers do: float32 softmax, then torch.topk
            probs = torch.softmax(stacked, dim=-1, dtype=torch.float)
            ids = torch.topk(probs, k, dim=-1).indices.cpu().numpy()
    else:
        stacked = np.stack([a.reshape(B, T, E) for a in layers], axis=2)  # (B, T, L, E)
        ids = _topk_of_softmax(stacked, k)  # (B, T, L, k)
    if mask is None:
        seqs = list(ids)
    else:
        keep = mask.astype(bool)
        seqs = [ids[b][keep[b]] for b in range(B)]
    m = dict(meta or {})
    m.setdefault("model", mt)
    m.setdefault("source", "hf_router_logits")
    return from_arrays(seqs, num_experts=E, domains=domains, meta=m)


# ------------------------------------------------------------------ safetensors
def _layer_number(p: Path) -> int | None:
    nums = re.findall(r"\d+", p.stem)
    return int(nums[-1]) if nums else None


def from_safetensors_topk(
    source: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    num_experts: int,
    layer_ids: Sequence[int] | None = None,
    unwrap: bool = False,
    meta: Mapping[str, Any] | None = None,
) -> Trace:
    """A trace from the paper code's per-layer safetensors top-k files.

    Each file holds one MoE layer: ``{domain: (S, T, k)}`` expert ids (int8 in the
    original code). Sequence ``s`` of domain ``d`` becomes one trace sequence with all
    layers; domains are taken in sorted name order.

    Parameters
    ----------
    source : directory or sequence of paths
        A directory of ``*.safetensors`` files, ordered by the last number in each file
        name (``layer_3.safetensors`` before ``layer_12.safetensors``), or the files in
        layer order.
    num_experts : int
        Routed experts per layer.
    layer_ids : sequence of int, optional
        Model layer index of each file; default: the numbers in the file names.
    unwrap : bool, optional
        Recover ids 128..255 stored as negative int8 values (``id - 256``), possible only
        when ``num_experts <= 256``. Off by default: such ids are refused.
    meta : mapping, optional
        Extra metadata.

    Raises
    ------
    ValueError
        Wrapped ids (negative int8 values, or int8 storage of more than 256 experts, where
        ids collided irrecoverably), files that disagree on domains or shapes.
    """
    from safetensors.numpy import load_file

    E = _validate_num_experts(num_experts)
    if isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
        files = sorted(
            Path(source).glob("*.safetensors"),
            key=lambda p: (_layer_number(p) is None, _layer_number(p) or 0, p.name),
        )
        if not files:
            raise FileNotFoundError(f"{source}: no *.safetensors files")
    elif isinstance(source, (str, os.PathLike)):
        files = [Path(source)]
    else:
        files = [Path(p) for p in source]
        if not files:
            raise ValueError("got an empty list of safetensors files")
    for f in files:
        if not f.is_file():
            raise FileNotFoundError(f"{f}: no such safetensors file")
    per_layer: list[dict[str, np.ndarray]] = []
    for f in files:
        try:
            d = load_file(str(f))
        except Exception as exc:  # safetensors raises its own error types
            raise ValueError(f"{f}: not a readable safetensors file ({exc})") from None
        for name, a in d.items():
            where = f"{f}, domain {name!r}"
            if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.integer):
                raise TypeError(f"{where}: expected integer expert ids, got {a.dtype}")
            if a.ndim != 3:
                raise ValueError(f"{where}: expected shape (S, T, k), got {a.shape}")
            if a.dtype == np.int8:
                if E > 256:
                    raise ValueError(
                        f"{where}: ids are stored as int8, which cannot hold ids of "
                        f"num_experts = {E} > 256 experts; ids >= 256 collided with smaller "
                        "ones and cannot be recovered. Re-capture with int16 ids."
                    )
                if a.size and a.min() < 0:
                    s, t, j = (int(v) for v in np.argwhere(a < 0)[0])
                    v = int(a[s, t, j])
                    if E <= 128:
                        raise ValueError(
                            f"{where}: negative expert id {v} at sequence {s}, token {t}, slot "
                            f"{j}, but num_experts = {E} <= 128, so it cannot be a wrapped id "
                            "(padding or a corrupt file?)"
                        )
                    if not unwrap:
                        raise ValueError(
                            f"{where}: expert id {v} at sequence {s}, token {t}, slot {j}: ids "
                            "wrapped past 127 (int8 holds 0..127; id 128 + x was stored as "
                            f"x - 128, so {v} is id {v + 256}). With num_experts = {E} <= "
                            "256 the wrap is reversible: pass unwrap=True to recover the ids."
                        )
                    a = a.view(np.uint8)
            elif a.size and a.min() < 0:
                s, t, j = (int(v) for v in np.argwhere(a < 0)[0])
                raise ValueError(
                    f"{where}: negative expert id {int(a[s, t, j])} at sequence {s}, token {t}, "
                    f"slot {j}"
                )
            d[name] = a
        per_layer.append(d)
    names = sorted(per_layer[0])
    for f, d in zip(files[1:], per_layer[1:], strict=True):
        if sorted(d) != names:
            raise ValueError(f"{f}: domains {sorted(d)} differ from {files[0]}'s {names}")
        for n in names:
            if d[n].shape != per_layer[0][n].shape:
                raise ValueError(
                    f"{f}, domain {n!r}: shape {d[n].shape} differs from "
                    f"{files[0]}'s {per_layer[0][n].shape}"
                )
    blocks, doms, lengths = [], [], []
    for n in names:
        S, T, _ = per_layer[0][n].shape
        block = np.stack([d[n] for d in per_layer], axis=2)  # (S, T, L, k)
        blocks.append(block.reshape(S * T, len(files), -1))
        doms.extend([n] * S)
        lengths.extend([T] * S)
    if layer_ids is None:
        nums = [_layer_number(f) for f in files]
        layer_ids = nums if all(v is not None for v in nums) else None
    m = dict(meta or {})
    if layer_ids is not None:
        m.setdefault("layer_ids", [int(v) for v in layer_ids])
    m.setdefault("source", "safetensors_topk")
    ids = np.concatenate(blocks) if blocks else np.zeros((0, len(files), 1), np.uint8)
    off = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=off[1:])
    try:
        return Trace(ids, off, num_experts=E, domains=doms, meta=m)
    except ValueError as exc:
        raise ValueError(f"{files[0].parent}: {exc}") from None


# routing logs (JSONL / CSV records, one per token and layer): lrc_kernels/_routing_log.py
from ._routing_log import (  # noqa: E402
    RoutingLogStats,
    from_routing_log,
    iter_routing_log,
    routing_log_to_file,
)
