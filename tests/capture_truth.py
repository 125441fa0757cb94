"""Shared by the capture tests: tiny models, the independent ground truth, the sync guard.

For every family the captured ids are compared with what the experts really received,
observed independently of the capture code: the index argument of the experts module
(transformers >= 5 passes it positionally as argument 1), the router's dispatch output
where the experts take no index (Llama 4 scores, JetMoE's sorted dispatch, Switch/NLLB
capacity masks), or, in transformers 4.x, the tokens each expert of a ``ModuleList``
receives (matched to the block's input rows).
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
os.environ["HF_HUB_OFFLINE"] = "1"
TF_VERSION = transformers.__version__
TF_MAJOR = int(TF_VERSION.split(".")[0])

from lrc_kernels._capture import _recorder  # noqa: E402
from lrc_kernels._capture._tiny import TINY_FAMILIES, tiny_model  # noqa: E402
from lrc_kernels.torch import find_moe_layers  # noqa: E402

PKG_DIR = str(Path(_recorder.__file__).resolve().parents[1])

# Where each family's MoE blocks live (checked independently of the discovery code).
EXPECTED_PATHS = {
    "mixtral": ["model.layers.0.mlp", "model.layers.1.mlp"],
    "qwen2_moe": ["model.layers.0.mlp", "model.layers.1.mlp"],
    "qwen3_moe": ["model.layers.0.mlp", "model.layers.1.mlp"],
    "olmoe": ["model.layers.0.mlp", "model.layers.1.mlp"],
    "deepseek_v3": ["model.layers.0.mlp", "model.layers.1.mlp"],
    "phimoe": ["model.layers.0.mlp", "model.layers.1.mlp"],
    "granitemoe": ["model.layers.0.block_sparse_moe", "model.layers.1.block_sparse_moe"],
    "jamba": ["model.layers.1.feed_forward", "model.layers.3.feed_forward"],
    "gpt_oss": ["model.layers.0.mlp", "model.layers.1.mlp"],
    "llama4_text": ["model.layers.0.feed_forward", "model.layers.1.feed_forward"],
    "dbrx": ["transformer.blocks.0.ffn", "transformer.blocks.1.ffn"],
    "jetmoe": ["model.layers.0.mlp", "model.layers.1.mlp"],
    "switch_transformers": [
        "encoder.block.1.layer.1.mlp",
        "encoder.block.3.layer.1.mlp",
        "decoder.block.1.layer.2.mlp",
        "decoder.block.3.layer.2.mlp",
    ],
    "nllb-moe": [
        "model.encoder.layers.0.ffn",
        "model.encoder.layers.1.ffn",
        "model.decoder.layers.0.ffn",
        "model.decoder.layers.1.ffn",
    ],
}
# Families whose index tensor is argument 1 of the experts module.
EXPERTS_ARG = {
    "mixtral",
    "qwen2_moe",
    "qwen3_moe",
    "olmoe",
    "deepseek_v3",
    "phimoe",
    "granitemoe",
    "jamba",
    "gpt_oss",
    "dbrx",
}
assert set(EXPECTED_PATHS) == set(TINY_FAMILIES)
if TF_MAJOR < 5:  # transformers 4.x module names
    EXPECTED_PATHS["mixtral"] = [
        "model.layers.0.block_sparse_moe",
        "model.layers.1.block_sparse_moe",
    ]
    EXPECTED_PATHS["phimoe"] = [
        "model.layers.0.block_sparse_moe",
        "model.layers.1.block_sparse_moe",
    ]
# transformers 4.x: where the experts module of these receives the indices
EXPERTS_ARG_4X = {"dbrx": 3, "gpt_oss": "router_indices"}
# transformers 4.x: the router returns JetMoE's 5-tuple
ROUTER_5TUPLE = {"jetmoe"} | ({"granitemoe"} if TF_MAJOR < 5 else set())

# Small capacities so that Switch/NLLB really drop tokens in the tests.
OVERRIDES = {
    "switch_transformers": {"expert_capacity": 2},
    "nllb-moe": {"expert_capacity": 2, "moe_eval_capacity_token_fraction": 0.1},
}

_MODELS: dict[str, object] = {}


def get_model(family):
    """Each tiny model is built once per test session (a few ms each after the first).

    Skips when the installed transformers has no such family, or cannot run it here.
    """
    if family not in _MODELS:
        try:
            m = tiny_model(family, **OVERRIDES.get(family, {}))
        except (ValueError, KeyError) as exc:
            if family in str(exc) or "Unrecognized" in str(exc):
                pytest.skip(f"transformers {TF_VERSION} has no {family!r} models")
            raise
        if TF_MAJOR < 5 and family == "phimoe":
            pytest.skip("transformers 4.x PhiMoE routes with sparsemixer, not reproduced")
        if family == "jamba":
            try:
                with torch.no_grad():
                    m(input_ids=torch.tensor([[5, 6]]))
            except ValueError as exc:  # 4.x: the mamba mixer needs its CUDA kernels
                pytest.skip(f"transformers {TF_VERSION} Jamba cannot run on a CPU: {exc}")
        if family == "deepseek_v3":
            # a real correction bias: the grouped, biased choice differs from topk(logits)
            g = torch.Generator().manual_seed(1)
            for site in find_moe_layers(m):
                b = site.router.e_score_correction_bias
                b.copy_(torch.randn(b.shape, generator=g) * 2.0)
        _MODELS[family] = m
    return _MODELS[family]


# ------------------------------------------------------------------ ground truth
class Truth:
    """Per MoE block, per call: what the experts received (independent observation)."""

    def __init__(self, model, family):
        self.family = family
        self.handles = []
        paths = EXPECTED_PATHS[family]
        self.calls = {p: [] for p in paths}
        for p in paths:
            block = model.get_submodule(p)
            experts = getattr(block, "experts", None)
            if TF_MAJOR >= 5 and family in EXPERTS_ARG:
                h = block.experts.register_forward_pre_hook(self._experts(p, 1))
                self.handles.append(h)
            elif TF_MAJOR < 5 and family in EXPERTS_ARG_4X:
                h = block.experts.register_forward_pre_hook(
                    self._experts(p, EXPERTS_ARG_4X[family]), with_kwargs=True
                )
                self.handles.append(h)
            elif isinstance(experts, torch.nn.ModuleList):
                self._members(p, block)
            else:
                self.handles.append(block.router.register_forward_hook(self._router(p)))

    def _experts(self, p, pos):
        def hook(mod, args, kwargs=None):
            idx = args[pos] if isinstance(pos, int) else kwargs[pos]
            self.calls[p].append(("exact", idx.detach().clone(), None))

        return hook

    def _members(self, p, block):
        """transformers 4.x loop over a ModuleList: which tokens each expert receives."""
        state = {}
        gate = block._modules.get("gate") or block._modules.get("router")

        def pre_block(mod, args, kwargs):
            h = (args[0] if args else kwargs["hidden_states"]).detach()
            state["h"] = h.reshape(-1, h.shape[-1])
            sel = torch.zeros(state["h"].shape[0], len(block.experts), dtype=torch.bool)
            self.calls[p].append(("set", sel, None))

        def on_gate(mod, args, out):
            if isinstance(out, torch.Tensor):  # plain logits: the slot order is checked too
                kind, sel, _ = self.calls[p][-1]
                self.calls[p][-1] = (kind, sel, out.detach().reshape(sel.shape).clone())

        def on_expert(e):
            def hook(mod, args):
                x = args[0].detach().reshape(-1, state["h"].shape[-1])
                hit = (x[:, None, :] == state["h"][None, :, :]).all(-1).any(0)
                self.calls[p][-1][1][:, e] |= hit

            return hook

        self.handles.append(block.register_forward_pre_hook(pre_block, with_kwargs=True))
        self.handles.append(gate.register_forward_hook(on_gate))
        for e, ex in enumerate(block.experts):
            self.handles.append(ex.register_forward_pre_hook(on_expert(e)))

    def _router(self, p):
        fam = self.family

        def hook(mod, args, out):
            if fam == "llama4_text":
                scores = out[0].detach()
                self.calls[p].append(("set", scores > 0, scores.clone()))
            elif fam in ROUTER_5TUPLE:
                index_sorted, _, _, expert_size, logits = out
                T, k = logits.shape[0], index_sorted.numel() // logits.shape[0]
                sorted_exp = torch.repeat_interleave(
                    torch.arange(len(expert_size)), torch.tensor(expert_size)
                )
                flat = torch.empty(T * k, dtype=torch.long)
                flat[index_sorted] = sorted_exp
                self.calls[p].append(("exact", flat.view(T, k), None))
            elif fam == "switch_transformers":
                dispatch = out[0].detach().reshape(-1, out[0].shape[-1])
                logits = out[2].detach().reshape(-1, out[2].shape[-1])
                self.calls[p].append(("switch", dispatch.clone(), logits.clone()))
            elif fam == "nllb-moe":
                top1 = out[0].detach().reshape(-1, out[1].shape[-1])
                self.calls[p].append(("nllb", top1.clone(), out[1].detach().clone()))

        return hook

    def remove(self):
        for h in self.handles:
            h.remove()


def check_layer(kind, got, a, b):
    """Compare captured ids ``got`` (T, k) with one observed call."""
    if kind == "exact":
        np.testing.assert_array_equal(got, a.numpy())
    elif kind == "set":
        sel = a.numpy()
        assert (sel.sum(1) == got.shape[1]).all()
        for t in range(got.shape[0]):
            assert set(got[t]) == set(np.flatnonzero(sel[t]))
            if b is not None:
                sc = b.numpy()[t, got[t]]
                assert (np.diff(sc) <= 0).all(), "slots must be in descending score order"
    elif kind == "switch":
        dispatch, logits = a.numpy(), b.numpy()
        kept = dispatch.sum(1) > 0
        np.testing.assert_array_equal(got[kept, 0], dispatch[kept].argmax(1))
        np.testing.assert_array_equal(got[~kept, 0], logits[~kept].argmax(1))
    elif kind == "nllb":
        top1, combine = a.numpy(), b.numpy()
        kept1 = top1.sum(1) > 0
        np.testing.assert_array_equal(got[kept1, 0], top1[kept1].argmax(1))
        for t in range(got.shape[0]):
            nz = set(np.flatnonzero(combine[t]))
            # every expert that received the token is among the captured two, top-1 first
            assert nz <= set(got[t]), (t, nz, got[t])
            if kept1[t] and len(nz) == 2:
                assert set(got[t]) == nz


def compare(trace, truth, paths, steps):
    """Check ``trace`` against the observed calls.

    ``steps``: one (B, S, mask (B, S) bool) per forward call, in call order; all of them
    extend the same B rows (one forward, or a generate() prefill and its decode steps).
    """
    B = steps[0][0]
    assert trace.num_layers == len(paths)
    assert trace.num_sequences == B
    for p in paths:
        assert len(truth.calls[p]) == len(steps)
    for r in range(B):
        seq = trace.sequence(r)
        pos = 0
        for si, (Bs, S, mask) in enumerate(steps):
            assert Bs == B
            m = mask[r]
            n = int(m.sum())
            chunk = seq[pos : pos + n]
            pos += n
            for li, p in enumerate(paths):
                kind, a, b = truth.calls[p][si]
                assert a.shape[0] == B * S
                rows = np.arange(r * S, (r + 1) * S)[m]
                check_layer(kind, chunk[:, li, :].astype(np.int64), take(a, rows), take(b, rows))
        assert pos == seq.shape[0]


def take(x, rows):
    if x is None:
        return None
    return x[torch.as_tensor(rows, dtype=torch.long)]


def prompt(B=3, S=7, seed=0, pad_left=True):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 128, (B, S), generator=g)
    mask = torch.ones(B, S, dtype=torch.long)
    for r in range(B):
        n = r  # row r has r padding tokens
        if n:
            if pad_left:
                mask[r, :n] = 0
                ids[r, :n] = 0
            else:
                mask[r, S - n :] = 0
                ids[r, S - n :] = 0
    return ids, mask


# ---------------------------------------------------------------- no host sync
SYNC_METHODS = (
    "cpu",
    "item",
    "tolist",
    "numpy",
    "__bool__",
    "__int__",
    "__float__",
    "__index__",
    "nonzero",
    "__array__",
)


class SyncGuard:
    """Make host-synchronising tensor calls raise when lrc_kernels code makes them on the
    thread running the forward (the background thread may; the model itself may)."""

    def __init__(self, monkeypatch):
        self.main = threading.main_thread()
        for name in SYNC_METHODS:
            orig = getattr(torch.Tensor, name)
            monkeypatch.setattr(torch.Tensor, name, self._wrap(orig, name))
        monkeypatch.setattr(torch.cuda, "synchronize", self._wrap(torch.cuda.synchronize, "sync"))

    def _wrap(self, orig, name):
        main = self.main

        def guarded(*a, **k):
            caller = sys._getframe(1).f_code.co_filename
            if threading.current_thread() is main and caller.startswith(PKG_DIR):
                raise AssertionError(f"host sync {name}() called from {caller}")
            return orig(*a, **k)

        return guarded
