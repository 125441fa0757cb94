"""Finding the MoE layers of a Hugging Face model and reading the routing decision they make.

Discovery is by module structure, not by class name: an MoE block is a module with a router
child (``router`` or ``gate``) next to an ``experts`` child (or JetMoE's ``input_linear``).
Each block gets one *reading mode*, chosen from what its modules accept and return:

``"experts"``
    The experts module is called as ``experts(hidden, top_k_index, top_k_weights)``
    (transformers >= 5 for Mixtral, Qwen2/3-MoE, OLMoE, DeepSeek-V2/V3, PhiMoE, GraniteMoE,
    Jamba, GPT-OSS, DBRX, ...). A forward pre-hook on it reads the index tensor the experts
    really receive, found by dtype and shape (an integer ``(T, k)`` tensor), not by position.
    This is right where the choice is not ``topk(logits)`` (biased / group-limited routing).
``"switch"``
    Switch-Transformers top-1 routing with expert capacity: the choice is the router's
    argmax; a token dropped by the capacity limit keeps its choice in the trace.
``"nllb"``
    NLLB-MoE top-2 routing with capacity: top-1 and top-2 exactly as the router forms them.
``"router"``
    Everything else: a forward hook on the router whose output is recognised by dtype and
    shape. An integer ``(T, k)`` tensor is taken as the indices (a float tensor of the same
    shape as their weights). Otherwise the router returned scores: two ``(T, E)`` float
    tensors (Llama 4: sigmoid scores, logits) give ``topk(logits)``, the router's own
    selection; one ``(T, E)`` float tensor (a plain linear gate, as in transformers 4.x)
    gives ``topk(softmax(logits))``, or ``topk(logits)`` for JetMoE-style gates that
    select on raw logits.

Every reading is a handful of device operations: no host synchronisation.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = ["MoESite", "find_moe_sites", "read_router_output", "find_index_args"]

# Router classes that select on raw logits (``logits.topk(k)``) rather than on softmax
# probabilities, when all they hand back is logits. Only the order of tied scores depends on
# this; the set of experts is the same either way.
_RAW_LOGIT_SELECTORS = ("JetMoeTopKGating", "Llama4Router", "GraniteMoeTopKGating")


@dataclass
class MoESite:
    """One MoE block of a model and how its routing decision is read.

    Attributes
    ----------
    path : str
        Module path of the MoE block (``model.layers.3.mlp``).
    layer_id : int
        The model's layer number (first integer in ``path``).
    group : str
        Layer group: ``"encoder"`` / ``"decoder"`` for encoder-decoder models, else the
        name of the layer stack module (``"model"``, ``"transformer"``).
    stack_path : str
        Module path of the layer stack whose forward marks one step of this group.
    mode : str
        ``"experts"``, ``"router"``, ``"switch"`` or ``"nllb"`` (see module docstring).
    num_experts : int
        Routed experts of this block.
    top_k : int
        Experts per token.
    """

    path: str
    layer_id: int
    group: str
    stack_path: str
    mode: str
    num_experts: int
    top_k: int
    block: nn.Module = field(repr=False)
    router: nn.Module = field(repr=False)
    experts: nn.Module | None = field(repr=False, default=None)


def _int_attr(obj: Any, *names: str) -> int | None:
    for n in names:
        v = getattr(obj, n, None)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    return None


def _router_num_experts(router: nn.Module, experts: nn.Module | None) -> int | None:
    n = _int_attr(router, "num_experts", "n_routed_experts", "num_local_experts")
    if n is not None:
        return n
    if isinstance(router, nn.Linear):
        return int(router.out_features)
    w = getattr(router, "weight", None)
    if isinstance(w, torch.Tensor) and w.ndim == 2:
        return int(w.shape[0])
    for sub in router.children():
        if isinstance(sub, nn.Linear):
            return int(sub.out_features)
    if experts is not None:
        n = _int_attr(experts, "num_experts")
        if n is not None:
            return n
        if isinstance(experts, (nn.ModuleList, nn.ModuleDict)):
            return len(experts)
    return None


def _config_top_k(config: Any) -> int | None:
    if config is None:
        return None
    for name in ("num_experts_per_tok", "moe_top_k", "num_selected_experts"):
        v = getattr(config, name, None)
        if isinstance(v, int) and v > 0:
            return v
    ffn = getattr(config, "ffn_config", None)  # DBRX
    if ffn is not None and ffn is not config:
        v = _config_top_k(ffn)
        if v is not None:
            return v
    # last: transformers 4.x configs also carry top_k = 50, a sampling default
    v = getattr(config, "top_k", None)
    return v if isinstance(v, int) and v > 0 else None


def _accepts_index_args(experts: nn.Module) -> bool:
    """True when ``experts(...)`` takes the hidden states plus indices and weights."""
    if isinstance(experts, (nn.ModuleList, nn.ModuleDict)) and type(experts).forward in (
        nn.ModuleList.forward,
        nn.ModuleDict.forward,
        nn.Module.forward,
    ):
        return False
    try:
        params = list(inspect.signature(experts.forward).parameters.values())
    except (TypeError, ValueError):
        return False
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        return True
    positional = [
        p
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    return len(positional) >= 3


def _stack_of(model: nn.Module, path: str) -> str:
    """Path of the module holding the first ``ModuleList`` on ``path`` (the layer stack)."""
    parts = path.split(".")
    for i in range(1, len(parts)):
        prefix = ".".join(parts[:i])
        if isinstance(model.get_submodule(prefix), nn.ModuleList):
            return ".".join(parts[: i - 1])
    return ""


def _group_name(stack_path: str) -> str:
    last = stack_path.rsplit(".", 1)[-1] if stack_path else ""
    return last or "model"


def find_moe_sites(model: nn.Module, layers: Any = "auto") -> list[MoESite]:
    """Find the MoE blocks of ``model`` (see the module docstring for the rules).

    Parameters
    ----------
    model : torch.nn.Module
        A Hugging Face (or structurally similar) MoE model.
    layers : "auto", iterable of int, or iterable of str
        ``"auto"``: every feed-forward MoE block (mixture-of-attention blocks, such as
        JetMoE's, are skipped). Integers select model layer numbers; strings select
        module paths of MoE blocks.

    Returns
    -------
    list of MoESite
        In module order (encoder before decoder, layer 0 first).
    """
    config = getattr(model, "config", None)
    sites: list[MoESite] = []
    for path, mod in model.named_modules():
        router = None
        for attr in ("router", "gate"):
            c = mod._modules.get(attr)
            if isinstance(c, nn.Module):
                router = c
                break
        if router is None:
            continue
        experts = mod._modules.get("experts")
        if experts is None and "input_linear" not in mod._modules:
            continue
        parts = path.split(".")
        if any("attn" in p or "attention" in p for p in parts):
            continue  # mixture-of-attention heads (JetMoE MoA), not a feed-forward MoE
        E = _router_num_experts(router, experts)
        if E is None or E < 2:
            continue
        mode, k = _routing_mode(path, mod, router, experts, config)
        m = re.search(r"(?:^|\.)(\d+)(?:\.|$)", path)
        layer_id = int(m.group(1)) if m else len(sites)
        stack = _stack_of(model, path)
        sites.append(
            MoESite(
                path=path,
                layer_id=layer_id,
                group=_group_name(stack),
                stack_path=stack,
                mode=mode,
                num_experts=E,
                top_k=int(k),
                block=mod,
                router=router,
                experts=experts,
            )
        )
    return _select_sites(sites, layers)


# ---------------------------------------------------------------------------- readers
def _is_int(t: torch.Tensor) -> bool:
    return not (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool)


def find_index_args(
    args: tuple, kwargs: dict, num_experts: int | None = None
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The ``(T, k)`` integer index tensor and its ``(T, k)`` float weights in a call.

    Weights given densely as ``(T, num_experts)`` scores (GPT-OSS in transformers 4.x)
    are gathered at the indices.
    """
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    tensors += [v for v in kwargs.values() if isinstance(v, torch.Tensor)]
    pos = next((i for i, t in enumerate(tensors) if t.ndim == 2 and _is_int(t)), None)
    if pos is None:
        return None, None
    idx = tensors[pos]
    # the weights sit next to the indices in every known signature (after them, or just
    # before them in keyword calls); the hidden states come first, so look at the nearest
    # tensors first: hidden states of width k are never mistaken for weights
    order = tensors[pos + 1 :] + tensors[:pos][::-1]
    w = next((t for t in order if t.is_floating_point() and t.shape == idx.shape), None)
    if w is None and num_experts is not None:
        dense = (idx.shape[0], num_experts)
        d = next((t for t in order if t.is_floating_point() and tuple(t.shape) == dense), None)
        if d is not None:
            w = d.gather(1, idx.long())
    return idx, w


def _flat_tensors(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for t in out if isinstance(t, torch.Tensor)]
    return []


def read_router_output(
    site: MoESite, router: nn.Module, out: Any, args: tuple = ()
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Indices ``(T, k)`` and weights ``(T, k)`` (or None) from a router's output.

    ``args`` are the router's inputs: NLLB-MoE's router in transformers 4.x returns no
    logits, which are then formed again with its ``classifier`` from the hidden states.
    """
    k, E = site.top_k, site.num_experts
    if site.mode == "switch":
        probs, logits = out[1], out[2]
        p = torch.softmax(logits, dim=-1, dtype=getattr(router, "dtype", torch.float32))
        p = p.to(getattr(router, "input_dtype", p.dtype))
        ids = p.argmax(dim=-1).reshape(-1, 1)
        return ids, probs.reshape(-1, 1)
    if site.mode == "nllb":
        combine = out[1]
        if len(out) >= 3:
            logits = out[2]
        else:  # transformers 4.x: (top-1 mask, combine weights); the same logits again
            h = args[0]
            logits = router.classifier(h.reshape(-1, h.shape[-1]).to(router.dtype))
        p = torch.softmax(logits, dim=-1, dtype=getattr(router, "dtype", torch.float32))
        p = p.to(getattr(router, "input_dtype", p.dtype))
        top1 = p.argmax(dim=-1)
        first = torch.nn.functional.one_hot(top1, num_classes=logits.shape[-1]).bool()
        top2 = logits.masked_fill(first, float("-inf")).argmax(dim=-1)
        ids = torch.stack((top1, top2), dim=1)
        return ids, combine.reshape(ids.shape[0], -1).gather(1, ids)
    tensors = _flat_tensors(out)
    idx = next((t for t in tensors if t.ndim == 2 and _is_int(t) and t.shape[-1] == k), None)
    if idx is not None:
        w = next((t for t in tensors if t.is_floating_point() and t.shape == idx.shape), None)
        return idx, w
    scores = [t for t in tensors if t.is_floating_point() and t.ndim >= 2 and t.shape[-1] == E]
    scores = [t.reshape(-1, E) for t in scores]
    if len(scores) >= 2:
        # Llama 4: (sigmoid scores scattered on the top-k, raw logits); the router's own
        # selection is topk(logits), the weights are the scores there.
        sc, logits = scores[0], scores[-1]
        ids = torch.topk(logits, k, dim=1).indices
        return ids, sc.gather(1, ids)
    if len(scores) == 1:
        logits = scores[0]
        if type(router).__name__ in _RAW_LOGIT_SELECTORS:
            vals, ids = logits.topk(k, dim=1)
            return ids, torch.softmax(vals, dim=1)
        probs = torch.softmax(logits, dim=-1, dtype=torch.float32)
        vals, ids = torch.topk(probs, k, dim=-1)
        return ids, vals
    return None, None


def _routing_mode(path: str, mod: nn.Module, router: nn.Module, experts: Any, config: Any):
    """How a block's choice is read (``switch``, ``nllb``, ``experts`` or ``router``), and k."""
    if getattr(router, "expert_capacity", None) is not None or hasattr(router, "route_tokens"):
        if hasattr(router, "route_tokens"):
            mode, k = "nllb", 2
            policy = getattr(router, "second_expert_policy", "all")
            if policy == "sampling":
                raise NotImplementedError(
                    f"{path}: NLLB-MoE second_expert_policy='sampling' adds noise to the "
                    "router logits in place, so the top-1 choice cannot be read back "
                    "exactly; use second_expert_policy='all' (the released models' "
                    "setting) to capture"
                )
        else:
            mode, k = "switch", 1
    else:
        mode = "experts" if experts is not None and _accepts_index_args(experts) else "router"
        k = (
            _int_attr(router, "top_k", "topk", "num_experts_per_tok", "moe_top_k")
            or _int_attr(mod, "top_k", "num_experts_per_tok")
            or _config_top_k(config)
        )
        if k is None:
            raise ValueError(
                f"{path}: cannot tell how many experts each token uses (no top_k on the "
                "router, the block or the config); set config.num_experts_per_tok"
            )
    return mode, k


def _select_sites(sites: list[MoESite], layers: Any) -> list[MoESite]:
    """The sites ``layers`` asks for (``"auto"``, model layer numbers or module paths)."""
    if isinstance(layers, str):
        if layers != "auto":
            raise ValueError(
                f"layers must be 'auto' or a list of layer ids / paths, got {layers!r}"
            )
        return sites
    wanted = list(layers)
    if all(isinstance(w, str) for w in wanted):
        known = {s.path for s in sites}
        missing = [w for w in wanted if w not in known]
        if missing:
            raise ValueError(f"no MoE block at {missing}; MoE blocks: {sorted(known)}")
        return [s for s in sites if s.path in set(wanted)]
    if all(isinstance(w, int) and not isinstance(w, bool) for w in wanted):
        known_ids = {s.layer_id for s in sites}
        missing_ids = [w for w in wanted if w not in known_ids]
        if missing_ids:
            raise ValueError(
                f"layers {missing_ids} are not MoE layers; MoE layer ids: {sorted(known_ids)}"
            )
        return [s for s in sites if s.layer_id in set(wanted)]
    raise TypeError(f"layers must be 'auto', a list of ints or a list of str, got {layers!r}")
