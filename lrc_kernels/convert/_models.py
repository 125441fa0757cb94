"""Converters for model outputs: Hugging Face router logits and the paper's top-k files."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._trace import Trace, _is_device_array, _to_numpy, _validate_num_experts
from ._arrays import from_arrays

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
    files = _safetensors_files(source)
    per_layer: list[dict[str, np.ndarray]] = []
    for f in files:
        try:
            d = load_file(str(f))
        except Exception as exc:  # safetensors raises its own error types
            raise ValueError(f"{f}: not a readable safetensors file ({exc})") from None
        for name, a in d.items():
            d[name] = _checked_topk(a, f"{f}, domain {name!r}", E, unwrap)
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


def _safetensors_files(source: Any) -> list[Path]:
    """The layer files of ``source`` (a directory, in layer-number order, or the files)."""
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
    return files


def _checked_topk(a: np.ndarray, where: str, E: int, unwrap: bool) -> np.ndarray:
    """One domain's ``(S, T, k)`` ids of one layer file, checked (int8 wrap refused or undone)."""
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
            f"{where}: negative expert id {int(a[s, t, j])} at sequence {s}, token {t}, slot {j}"
        )
    return a
