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

from .._routing_log import (
    RoutingLogStats,
    from_routing_log,
    iter_routing_log,
    routing_log_to_file,
)
from ._arrays import from_arrays, from_npz, from_vllm, to_arrays, to_npz, to_vllm
from ._models import (
    HF_REFUSED_FAMILIES,
    HF_TOPK_FAMILIES,
    from_hf_router_logits,
    from_safetensors_topk,
)

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
