"""What one forward of a layer stack is: its batch shape, its real tokens, its place in a sequence.

Transformers moves these facts between keywords from version to version (the KV cache
arrives as ``past_key_values=`` in 4.x and as ``cache=`` in 5.x; the attention mask reaches
the inner model or stops at the outer one; a static cache reports its length as a tensor),
so nothing here depends on a keyword name except the attention masks':

- a **cache** is any argument with a ``get_seq_length()`` method (every transformers
  ``Cache``), or a legacy tuple of per-layer ``(key, value, ...)`` tensors of rank 4 whose
  axis -2 is the cached length;
- the **past length** of a step is what its 2-D attention mask covers beyond the step's
  own tokens (``mask.shape[1] - S``: the mask grows with the sequence) and what the cache
  holds; where both are known they must agree;
- the **real tokens** are those with a 1 in the step's part of the 2-D attention mask that
  the stack receives, or, when it receives none, the mask the outer model received
  (``attention_mask``; ``decoder_attention_mask`` for the decoder of an encoder-decoder).

Only host metadata is read here (shapes, Python ints): no host synchronisation. A cache
whose length is a device tensor (static caches) is handed on as that tensor; the recorder
copies ``length != 0`` into its buffer and decides on the worker thread.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

__all__ = ["arg_names", "bind", "batch_shape", "find_cache", "find_masks", "CacheInfo"]


def arg_names(module: nn.Module) -> list[str]:
    """Names of the positional parameters of ``module.forward`` (to bind positional args)."""
    try:
        params = inspect.signature(module.forward).parameters.values()
    except (TypeError, ValueError):
        return []
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p.name for p in params if p.kind in kinds]


def bind(names: list[str], args: tuple, kwargs: dict) -> dict[str, Any]:
    """The call's arguments by name (positional ones named after the signature)."""
    kw = dict(zip(names, args, strict=False)) if args else {}
    extra = args[len(names) :] if args else ()
    for i, a in enumerate(extra):  # unnamed positional arguments still count for the scan
        kw[f"*{i}"] = a
    kw.update(kwargs)
    return kw


def batch_shape(kw: dict[str, Any]) -> tuple[int | None, int | None]:
    """``(B, S)`` of a stack call from ``input_ids`` or ``inputs_embeds``."""
    x = kw.get("input_ids")
    if not isinstance(x, torch.Tensor):
        x = kw.get("inputs_embeds")
    if isinstance(x, torch.Tensor) and x.ndim >= 2:
        return int(x.shape[0]), int(x.shape[1])
    return None, None


class CacheInfo:
    """A KV cache found among a call's arguments.

    Attributes
    ----------
    name : str
        The argument it arrived as (for messages only).
    kind : str
        Its type name.
    length : int, torch.Tensor or None
        Tokens it holds before this step: a Python int, a device scalar tensor (static
        caches), or None when it could not be read.
    """

    __slots__ = ("name", "kind", "length")

    def __init__(self, name: str, kind: str, length: int | torch.Tensor | None):
        self.name, self.kind, self.length = name, kind, length


def _legacy_length(v: Any) -> int | None:
    if not (isinstance(v, (tuple, list)) and v and isinstance(v[0], (tuple, list)) and v[0]):
        return None
    t = v[0][0]
    if isinstance(t, torch.Tensor) and t.ndim == 4:
        return int(t.shape[-2])
    return None


def find_cache(kw: dict[str, Any]) -> CacheInfo | None:
    """The first argument that is a KV cache, whatever its keyword (see module docstring)."""
    for name, v in kw.items():
        if v is None or isinstance(v, (torch.Tensor, nn.Module, str, bool, int, float)):
            continue
        getter = getattr(v, "get_seq_length", None)
        if callable(getter):
            try:
                n = getter()
            except Exception:  # an exotic cache: its length is unknown, not zero
                return CacheInfo(name, type(v).__name__, None)
            if isinstance(n, torch.Tensor) and n.numel() == 1:
                return CacheInfo(name, type(v).__name__, n.reshape(()))
            if isinstance(n, int) and not isinstance(n, bool):
                return CacheInfo(name, type(v).__name__, n)
            return CacheInfo(name, type(v).__name__, None)
        n = _legacy_length(v)
        if n is not None:
            return CacheInfo(name, "tuple", n)
    return None


def _mask2d(m: Any, B: int, S: int) -> torch.Tensor | None:
    if isinstance(m, torch.Tensor) and m.ndim == 2 and m.shape[0] == B and m.shape[1] >= S:
        return m
    return None


def find_masks(
    kw: dict[str, Any], B: int, S: int, outer: torch.Tensor | None
) -> tuple[torch.Tensor | None, bool]:
    """The step's 2-D attention mask ``(B, past + S)``, and whether a 4-D mask came instead.

    The stack's own 2-D ``attention_mask`` comes first, then ``outer`` (the mask the outer
    model received for this layer group).
    """
    own = kw.get("attention_mask")
    m = _mask2d(own, B, S)
    if m is None:
        m = _mask2d(outer, B, S)
    if m is not None:
        return m, False
    # 4-D masks (static caches), or 5.x's one mask per attention type in a dict
    four_d = any(
        (isinstance(x, torch.Tensor) and x.ndim == 4) or isinstance(x, dict) for x in (own, outer)
    )
    return None, four_d
