"""Expert sizes from a Hugging Face ``config.json``: the MoE shape of a model family.

The keys are those of the transformers configuration classes (read from transformers
5.x: ``Qwen3MoeConfig``, ``Qwen2MoeConfig``, ``MixtralConfig``, ``DeepseekV3Config``,
``OlmoeConfig``) and of their modelling code for which layers are MoE layers. A routed
expert is a gated MLP: ``gate_up_proj`` (2 * I x H) and ``down_proj`` (H x I), so
``3 * H * I`` weights.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .._validate import check_real

__all__ = ["moe_config", "expert_bytes", "FAMILIES"]

# model_type -> (experts key and its attribute_map alias, intermediate-size key, how MoE
# layers are chosen). A config.json from the Hub spells the first key; transformers 5's
# to_dict() may store the alias (Qwen3MoeConfig maps num_experts to num_local_experts).
FAMILIES: dict[str, tuple[tuple[str, str], str, str]] = {
    "qwen3_moe": (("num_experts", "num_local_experts"), "moe_intermediate_size", "sparse_step"),
    "qwen2_moe": (("num_experts", "num_local_experts"), "moe_intermediate_size", "sparse_step"),
    "mixtral": (("num_local_experts", "num_experts"), "intermediate_size", "all"),
    "deepseek_v3": (
        ("n_routed_experts", "num_local_experts"),
        "moe_intermediate_size",
        "first_k_dense",
    ),
    "olmoe": (("num_experts", "num_local_experts"), "intermediate_size", "all"),
}
# defaults of the optional keys, as the transformers configuration classes set them
_DEFAULTS = {"decoder_sparse_step": 1, "mlp_only_layers": None, "first_k_dense_replace": 3}


def _load(config: Any) -> dict:
    if isinstance(config, dict):
        return config
    if hasattr(config, "to_dict"):  # a transformers PretrainedConfig
        return config.to_dict()
    if isinstance(config, (str, Path)):
        p = Path(config)
        if p.is_dir():
            p = p / "config.json"
        if not p.is_file():
            raise FileNotFoundError(f"no config.json at {config}")
        return json.loads(p.read_text(encoding="utf-8"))
    raise TypeError(
        "config must be a dict, a config.json path or a transformers config, got "
        f"{type(config).__name__}"
    )


def _need(cfg: dict, key: str, family: str) -> int:
    if key not in cfg or cfg[key] is None:
        raise ValueError(f"{family} config has no {key!r}")
    return int(cfg[key])


def _moe_layers(cfg: dict, how: str, n_layers: int) -> list[int]:
    if how == "all":
        return list(range(n_layers))
    if how == "first_k_dense":
        k0 = cfg.get("first_k_dense_replace", _DEFAULTS["first_k_dense_replace"])
        return list(range(int(k0 or 0), n_layers))
    step = int(cfg.get("decoder_sparse_step") or _DEFAULTS["decoder_sparse_step"])
    dense = set(cfg.get("mlp_only_layers") or [])
    return [i for i in range(n_layers) if i not in dense and (i + 1) % step == 0]


def moe_config(config: Any) -> dict:
    """The MoE shape of a Hugging Face model configuration.

    Parameters
    ----------
    config : dict, path or transformers config
        The parsed ``config.json``, its path (or the model folder), or a
        ``PretrainedConfig``. ``model_type`` must be one of :data:`FAMILIES`.

    Returns
    -------
    dict
        ``model_type``, ``num_layers`` (MoE layers), ``moe_layers`` (their indices),
        ``num_experts`` (routed, per layer), ``top_k``, ``hidden_size``,
        ``intermediate_size`` (of one routed expert) and ``expert_params`` (``3 * H * I``).
    """
    cfg = _load(config)
    family = cfg.get("model_type")
    if family not in FAMILIES:
        raise ValueError(
            f"unknown model_type {family!r}; known MoE families: {', '.join(FAMILIES)} "
            "(give expert_bytes directly for others)"
        )
    e_key, i_key, how = FAMILIES[family]
    H, I = _need(cfg, "hidden_size", family), _need(cfg, i_key, family)
    layers = _moe_layers(cfg, how, _need(cfg, "num_hidden_layers", family))
    return {
        "model_type": family,
        "num_layers": len(layers),
        "moe_layers": layers,
        "num_experts": _need(cfg, e_key[0] if e_key[0] in cfg else e_key[1], family),
        "top_k": _need(cfg, "num_experts_per_tok", family),
        "hidden_size": H,
        "intermediate_size": I,
        "expert_params": 3 * H * I,
    }


def expert_bytes(config: Any, bits: float = 16.0) -> int:
    """Bytes of one routed expert's weights at ``bits`` per weight (rounded up).

    Parameters
    ----------
    config : dict, path or transformers config
        As for :func:`moe_config`.
    bits : float
        Bits per weight, scales and zero points included (16 for bf16, about 4.5 for a
        4-bit quantisation with group scales).

    Returns
    -------
    int
    """
    bits = check_real(bits, "bits", 0.0, 64.0, lo_open=True)
    return int(math.ceil(moe_config(config)["expert_params"] * bits / 8))
