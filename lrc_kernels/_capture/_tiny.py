"""Tiny randomly initialised Hugging Face MoE models, built from configs (no download).

Used by the capture tests, the capture benchmark and the sample traces in
``traces/captured/``. Every model has 8 routed experts (16 for Jamba and Llama 4, their
defaults kept small), hidden size 64 and a vocabulary of 128 tokens, and runs a forward
pass on a CPU in milliseconds.
"""

from __future__ import annotations

from typing import Any

__all__ = ["TINY_FAMILIES", "SEQ2SEQ_FAMILIES", "tiny_config", "tiny_model"]

_COMMON: dict[str, Any] = dict(
    hidden_size=64,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=128,
    max_position_embeddings=1024,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
)

# Per-family overrides on top of _COMMON: small expert counts, every layer sparse, top-k > 1
# where the family allows it (so slot order is exercised).
_FAMILY: dict[str, dict[str, Any]] = {
    "mixtral": dict(num_local_experts=8, num_experts_per_tok=2),
    "qwen2_moe": dict(
        num_experts=8,
        num_experts_per_tok=2,
        moe_intermediate_size=32,
        shared_expert_intermediate_size=32,
        decoder_sparse_step=1,
    ),
    "qwen3_moe": dict(
        num_experts=8,
        num_experts_per_tok=2,
        moe_intermediate_size=32,
        decoder_sparse_step=1,
        head_dim=16,
    ),
    "olmoe": dict(num_experts=8, num_experts_per_tok=2),
    "deepseek_v3": dict(
        n_routed_experts=8,
        num_experts_per_tok=2,
        n_group=4,
        topk_group=2,
        first_k_dense_replace=0,
        moe_intermediate_size=32,
        n_shared_experts=1,
        kv_lora_rank=16,
        q_lora_rank=32,
        qk_rope_head_dim=8,
        v_head_dim=16,
        qk_nope_head_dim=8,
        head_dim=8,
        num_key_value_heads=4,
    ),
    "phimoe": dict(num_local_experts=8, num_experts_per_tok=2),
    "granitemoe": dict(num_local_experts=8, num_experts_per_tok=2),
    "jamba": dict(
        num_experts=8,
        num_experts_per_tok=2,
        expert_layer_period=2,
        expert_layer_offset=1,
        num_hidden_layers=4,
        attn_layer_period=2,
        attn_layer_offset=0,
        mamba_dt_rank=8,
    ),
    "gpt_oss": dict(num_local_experts=8, num_experts_per_tok=2, head_dim=16, sliding_window=64),
    "llama4_text": dict(
        num_local_experts=8,
        num_experts_per_tok=2,
        intermediate_size_mlp=64,
        head_dim=16,
        moe_layers=[0, 1],
        attention_chunk_size=64,
    ),
    "jetmoe": dict(num_local_experts=8, num_experts_per_tok=2, kv_channels=16),
    "dbrx": dict(
        d_model=64,
        n_heads=4,
        n_layers=2,
        max_seq_len=1024,
        vocab_size=128,
        attn_config={"kv_n_heads": 2, "rope_theta": 10000.0, "clip_qkv": 8.0},
        ffn_config={"ffn_hidden_size": 64, "moe_num_experts": 8, "moe_top_k": 2},
    ),
    "switch_transformers": dict(
        d_model=64,
        d_kv=16,
        d_ff=64,
        num_layers=4,
        num_decoder_layers=4,
        num_heads=4,
        num_experts=8,
        encoder_sparse_step=2,
        decoder_sparse_step=2,
        num_sparse_encoder_layers=2,
        num_sparse_decoder_layers=2,
        expert_capacity=64,
        router_jitter_noise=0.0,
        decoder_start_token_id=0,
    ),
    "nllb-moe": dict(
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        num_experts=8,
        encoder_sparse_step=1,
        decoder_sparse_step=1,
        expert_capacity=64,
        encoder_layerdrop=0.0,
        decoder_layerdrop=0.0,
        decoder_start_token_id=2,
        max_position_embeddings=1024,
    ),
}

#: Families with a tiny configuration here, in the order the tests run them.
TINY_FAMILIES: tuple[str, ...] = tuple(_FAMILY)
#: Encoder-decoder families (built with ``AutoModelForSeq2SeqLM``).
SEQ2SEQ_FAMILIES: frozenset[str] = frozenset({"switch_transformers", "nllb-moe"})

_NON_COMMON = {"dbrx", "switch_transformers", "nllb-moe"}


def tiny_config(family: str, **overrides: Any) -> Any:
    """A small ``transformers`` config of one MoE family (``AutoConfig.for_model``).

    Parameters
    ----------
    family : str
        A ``model_type`` in :data:`TINY_FAMILIES`.
    **overrides
        Config attributes replacing the tiny defaults (e.g. ``expert_capacity=2``).
    """
    from transformers import AutoConfig

    if family not in _FAMILY:
        raise ValueError(f"no tiny configuration for {family!r}; known: {list(_FAMILY)}")
    kw: dict[str, Any] = {} if family in _NON_COMMON else dict(_COMMON)
    if family in _NON_COMMON:
        kw.update(pad_token_id=0, bos_token_id=1, eos_token_id=2, vocab_size=128)
    kw.update(_FAMILY[family])
    kw.update(overrides)
    return AutoConfig.for_model(family, **kw)


def tiny_model(family: str, *, seed: int = 0, **overrides: Any) -> Any:
    """A randomly initialised tiny model of one MoE family, in eval mode, on the CPU.

    Parameters
    ----------
    family : str
        A ``model_type`` in :data:`TINY_FAMILIES`.
    seed : int
        Seed for ``torch.manual_seed`` before the weights are initialised.
    **overrides
        Passed to :func:`tiny_config`.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    cfg = tiny_config(family, **overrides)
    torch.manual_seed(seed)
    auto = AutoModelForSeq2SeqLM if family in SEQ2SEQ_FAMILIES else AutoModelForCausalLM
    model = auto.from_config(cfg)
    model.eval()
    return model
