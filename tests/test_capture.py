"""lrc_kernels.torch.capture on tiny random Hugging Face MoE models (CPU, no download).

For every family the captured ids are compared with what the experts really received,
observed independently of the capture code: the index argument of the experts module
(transformers >= 5 passes it positionally as argument 1), the router's dispatch output
where the experts take no index (Llama 4 scores, JetMoE's sorted dispatch, Switch/NLLB
capacity masks), or, in transformers 4.x, the tokens each expert of a ``ModuleList``
receives (matched to the block's input rows).

The tests run under whichever transformers is installed; families that version lacks skip
with the reason. ``.ci/capture-oldest.sh`` runs them against the oldest supported one.
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

from lrc_kernels._capture import _recorder, _sites, _steps  # noqa: E402
from lrc_kernels._capture._tiny import SEQ2SEQ_FAMILIES, TINY_FAMILIES, tiny_model  # noqa: E402
from lrc_kernels.torch import capture, capture_model, find_moe_layers  # noqa: E402

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
                check_layer(kind, chunk[:, li, :].astype(np.int64), _take(a, rows), _take(b, rows))
        assert pos == seq.shape[0]


def _take(x, rows):
    if x is None:
        return None
    return x[torch.as_tensor(rows, dtype=torch.long)]


def _prompt(B=3, S=7, seed=0, pad_left=True):
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


# --------------------------------------------------------------------------- tests
@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_discovery(family):
    m = get_model(family)
    sites = find_moe_layers(m)
    assert [s.path for s in sites] == EXPECTED_PATHS[family]
    assert all(s.num_experts == 8 for s in sites)
    k = {"switch_transformers": 1}.get(family, 2)
    assert all(s.top_k == k for s in sites)
    if family in SEQ2SEQ_FAMILIES:
        assert [s.group for s in sites] == ["encoder", "encoder", "decoder", "decoder"]


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_batch_forward_matches_experts_input(family):
    m = get_model(family)
    paths = EXPECTED_PATHS[family]
    ids, mask = _prompt(pad_left=family not in SEQ2SEQ_FAMILIES)
    B, S = ids.shape
    truth = Truth(m, family)
    try:
        with capture(m, weights=True, domain="d0") as cap, torch.no_grad():
            if family in SEQ2SEQ_FAMILIES:
                dec = torch.randint(3, 128, (B, 4), generator=torch.Generator().manual_seed(5))
                m(input_ids=ids, attention_mask=mask, decoder_input_ids=dec)
            else:
                m(input_ids=ids, attention_mask=mask)
    finally:
        truth.remove()
    mb = mask.bool().numpy()
    if family in SEQ2SEQ_FAMILIES:
        enc, dec_tr = cap.trace("encoder"), cap.trace("decoder")
        compare(enc, truth, paths[:2], [(B, S, mb)])
        compare(dec_tr, truth, paths[2:], [(B, 4, np.ones((B, 4), bool))])
        tr = enc
    else:
        tr = cap.trace()
        compare(tr, truth, paths, [(B, S, mb)])
    np.testing.assert_array_equal(tr.lengths, mask.sum(1).numpy())
    assert list(tr.domains) == ["d0"] * B
    assert tr.weights is not None and tr.weights.shape == tr.experts.shape
    assert np.isfinite(tr.weights).all() and (tr.weights >= 0).all()
    meta = tr.meta
    assert meta["producer"] == "lrc_kernels.torch"
    assert meta["model_type"] == m.config.model_type
    assert meta["num_experts"] == 8 and meta["top_k"] == tr.top_k
    first_int = [next(int(c) for c in p.split(".") if c.isdigit()) for p in paths]
    assert meta["layer_ids"] == first_int[: tr.num_layers]


def _generate(m, ids, mask, new, **kw):
    with torch.no_grad():
        extra = {} if mask is None else {"attention_mask": mask}
        m.generate(
            input_ids=ids, max_new_tokens=new, min_new_tokens=new, do_sample=False, **extra, **kw
        )


@pytest.mark.parametrize("with_mask", [True, False], ids=["padded", "nomask"])
@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_generate_records_prefill_then_decode(family, with_mask):
    """Prefill + decode, 3 rows; with a mask, rows hold 6, 5 and 4 real tokens (left pad)."""
    m = get_model(family)
    paths = EXPECTED_PATHS[family]
    B, S, new = 3, 6, 4
    ids, mask = _prompt(B=B, S=S, seed=3)
    if not with_mask:
        ids = torch.randint(3, 128, (B, S), generator=torch.Generator().manual_seed(3))
    truth = Truth(m, family)
    try:
        with capture(m) as cap:
            _generate(m, ids, mask if with_mask else None, new)
    finally:
        truth.remove()
    mb = mask.bool().numpy() if with_mask else np.ones((B, S), bool)
    if family in SEQ2SEQ_FAMILIES:
        enc, dec = cap.trace("encoder"), cap.trace("decoder")
        compare(enc, truth, paths[:2], [(B, S, mb)])
        ones = np.ones((B, 1), bool)
        # decoder: start token, then one step per new token but the last
        compare(dec, truth, paths[2:], [(B, 1, ones)] * new)
        assert list(dec.lengths) == [new] * B
    else:
        tr = cap.trace()
        steps = [(B, S, mb)] + [(B, 1, np.ones((B, 1), bool))] * (new - 1)
        compare(tr, truth, paths, steps)
        np.testing.assert_array_equal(tr.lengths, mb.sum(1) + new - 1)


DECODER_ONLY = [f for f in TINY_FAMILIES if f not in SEQ2SEQ_FAMILIES]


@pytest.mark.parametrize("family", DECODER_ONLY)
def test_generate_padding_from_the_outer_model_when_the_stack_gets_no_mask(family):
    # the mask stops at the outer model (as some versions/models do): padding must still go
    m = get_model(family)
    paths = EXPECTED_PATHS[family]
    stack = m.get_submodule(find_moe_layers(m)[0].stack_path)

    def strip(mod, args, kwargs):
        kwargs = dict(kwargs)
        kwargs.pop("attention_mask", None)
        return args, kwargs

    ids, mask = _prompt(B=3, S=6, seed=7)
    h = stack.register_forward_pre_hook(strip, with_kwargs=True)  # runs before capture's
    truth = Truth(m, family)
    try:
        with capture(m) as cap:
            _generate(m, ids, mask, 3)
    finally:
        truth.remove()
        h.remove()
    mb = mask.bool().numpy()
    steps = [(3, 6, mb)] + [(3, 1, np.ones((3, 1), bool))] * 2
    compare(cap.trace(), truth, paths, steps)
    np.testing.assert_array_equal(cap.trace().lengths, mb.sum(1) + 2)


def _cache_kw(m):
    import inspect

    return "cache" if "cache" in inspect.signature(m.forward).parameters else "past_key_values"


def _prefill_cache(m, ids):
    with torch.no_grad():
        out = m(input_ids=ids, use_cache=True)
    return out.get("cache", None) or out.get("past_key_values")


def test_decode_step_without_recorded_prefill_is_refused():
    m = get_model("mixtral")
    cache = _prefill_cache(m, torch.tensor([[5, 6, 7], [8, 9, 10]]))
    with pytest.raises(RuntimeError, match=r"MixtralForCausalLM.*forward #1.*no sequence is open"):
        with capture(m) as cap, torch.no_grad():
            m(input_ids=torch.tensor([[11], [12]]), **{_cache_kw(m): cache})
            cap.flush()


def test_cache_of_other_sequences_is_refused():
    m = get_model("mixtral")
    other = _prefill_cache(m, torch.randint(3, 128, (2, 5)))
    with pytest.raises(RuntimeError, match=r"forward #2.*holds 5 positions.*have 3 recorded"):
        with capture(m) as cap, torch.no_grad():
            m(input_ids=torch.tensor([[5, 6, 7], [8, 9, 10]]), use_cache=True)
            m(input_ids=torch.tensor([[11], [12]]), **{_cache_kw(m): other})
            cap.flush()


def test_mask_that_disagrees_with_the_cache_is_refused():
    m = get_model("mixtral")
    cache = _prefill_cache(m, torch.tensor([[5, 6, 7], [8, 9, 10]]))
    with capture(m), torch.no_grad():
        with pytest.raises(RuntimeError, match=r"MixtralForCausalLM.*holds 3 tokens.*covers 1"):
            m(
                input_ids=torch.tensor([[11], [12]]),
                attention_mask=torch.ones(2, 2, dtype=torch.long),
                **{_cache_kw(m): cache},
            )


def _static_model():
    # a model of its own: generate() keeps its static cache on the model, and transformers
    # 4.57 fails to reuse one left behind by a refused run with another batch size
    get_model("mixtral")  # skips where the family is missing
    return tiny_model("mixtral")


def _static_or_skip(m, ids, mask, new):
    try:
        _generate(m, ids, mask, new, cache_implementation="static")
    except ValueError as exc:
        if "static" in str(exc):
            pytest.skip(f"transformers {TF_VERSION}: no static cache for this model ({exc})")
        raise


def test_static_cache_generate_one_row():
    # the cache length is a device tensor: decided on the worker thread, no host sync
    m = _static_model()
    paths = EXPECTED_PATHS["mixtral"]
    ids = torch.randint(3, 128, (1, 6), generator=torch.Generator().manual_seed(2))
    truth = Truth(m, "mixtral")
    try:
        with capture(m) as cap:
            _static_or_skip(m, ids, torch.ones_like(ids), 4)
    finally:
        truth.remove()
    steps = [(1, 6, np.ones((1, 6), bool))] + [(1, 1, np.ones((1, 1), bool))] * 3
    compare(cap.trace(), truth, paths, steps)


def test_static_cache_with_padding_is_refused():
    m = _static_model()
    ids, mask = _prompt(B=2, S=5, seed=1)
    with pytest.raises(RuntimeError, match=r"cannot tell the padding of MixtralForCausalLM"):
        with capture(m):
            _static_or_skip(m, ids, mask, 2)


def test_cache_found_whatever_its_keyword():
    class FakeCache:
        def __init__(self, n):
            self.n = n

        def get_seq_length(self):
            return self.n

    class Broken:
        def get_seq_length(self):
            raise NotImplementedError

    c = _steps.find_cache({"x": torch.zeros(2), "anything": FakeCache(7)})
    assert (c.name, c.kind, c.length) == ("anything", "FakeCache", 7)
    legacy = ((torch.zeros(2, 4, 9, 16), torch.zeros(2, 4, 9, 16)),)
    c = _steps.find_cache({"past_key_values": legacy})
    assert (c.kind, c.length) == ("tuple", 9)
    t = _steps.find_cache({"cache": FakeCache(torch.tensor(4))})
    assert isinstance(t.length, torch.Tensor) and int(t.length) == 4
    assert _steps.find_cache({"cache": Broken()}).length is None
    assert _steps.find_cache({"input_ids": torch.zeros(2, 3), "use_cache": True}) is None
    names = _steps.arg_names(get_model("mixtral"))
    assert names[:2] == ["input_ids", "attention_mask"]


def test_deepseek_capture_is_the_biased_grouped_choice_not_topk_logits():
    m = get_model("deepseek_v3")
    logits_seen = []
    site = find_moe_layers(m)[0]
    h = site.router.register_forward_hook(lambda mod, a, out: logits_seen.append(out[0]))
    try:
        with capture(m) as cap, torch.no_grad():
            m(input_ids=torch.randint(3, 128, (2, 16), generator=torch.Generator().manual_seed(0)))
    finally:
        h.remove()
    got = cap.trace().experts[:, 0, :].astype(np.int64)
    naive = torch.topk(logits_seen[0], 2, dim=-1).indices.numpy()
    assert not np.array_equal(np.sort(got, 1), np.sort(naive, 1))


def test_switch_and_nllb_really_drop_tokens_in_these_tests():
    # guards the capacity branches of check_layer against being vacuous
    for fam in ("switch_transformers", "nllb-moe"):
        m = get_model(fam)
        truth = Truth(m, fam)
        try:
            with torch.no_grad():
                ids, mask = _prompt(B=3, S=7, pad_left=False)
                m(input_ids=ids, attention_mask=mask, decoder_input_ids=ids[:, :2])
        finally:
            truth.remove()
        kind, a, _ = truth.calls[EXPECTED_PATHS[fam][0]][0]
        assert (a.reshape(a.shape[0], -1).sum(1) == 0).any()


def test_several_forwards_append_sequences_in_row_order_with_domains():
    m = get_model("mixtral")
    a, ma = _prompt(B=2, S=6, seed=1)
    b, mb = _prompt(B=3, S=4, seed=2, pad_left=False)
    with capture(m) as cap, torch.no_grad():
        m(input_ids=a, attention_mask=ma)
        cap.domain = "second"
        m(input_ids=b, attention_mask=mb)
        m(input_ids=b[:1])  # no mask: every token is real
    tr = cap.trace()
    assert tr.num_sequences == 6
    np.testing.assert_array_equal(tr.lengths, np.concatenate([ma.sum(1), mb.sum(1), [4]]))
    assert list(tr.domains) == ["", "", "second", "second", "second", "second"]
    with capture(m) as cap2, torch.no_grad():
        m(input_ids=b, attention_mask=mb)
    t2 = cap2.trace()
    np.testing.assert_array_equal(t2.experts, tr.experts[tr.offsets[2] : tr.offsets[5]])


@pytest.mark.parametrize("family", ["mixtral", "llama4_text", "switch_transformers"])
def test_capture_with_autograd_enabled(family):
    # training-style forward: gate weights require grad; capture must not keep the graph
    m = get_model(family)
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 12]])
    kw = {"decoder_input_ids": ids[:, :2]} if family in SEQ2SEQ_FAMILIES else {}
    with capture(m, weights=True) as cap:
        out = m(input_ids=ids, **kw)
        out.logits.sum().backward()
    m.zero_grad(set_to_none=True)
    tr = next(iter(cap.traces().values()))
    assert tr.num_tokens == 8 and tr.weights is not None


def test_hooks_removed_on_exit_and_on_error():
    m = get_model("olmoe")

    def count():
        return sum(len(x._forward_hooks) + len(x._forward_pre_hooks) for x in m.modules())

    before = count()
    with capture(m):
        assert count() > before
    assert count() == before
    with pytest.raises(ZeroDivisionError):
        with capture(m):
            raise ZeroDivisionError
    assert count() == before
    with torch.no_grad():
        m(input_ids=torch.tensor([[5, 6, 7]]))  # runs normally after capture


def test_layers_selection_and_errors():
    m = get_model("jamba")
    with capture(m, layers=[3]) as cap, torch.no_grad():
        m(input_ids=torch.tensor([[5, 6, 7, 8]]))
    tr = cap.trace()
    assert tr.num_layers == 1 and tr.meta["layer_ids"] == [3]
    with pytest.raises(ValueError, match="not MoE layers"):
        capture(m, layers=[0])
    with pytest.raises(ValueError, match="no MoE block"):
        capture(m, layers=["model.layers.0.mamba"])
    with pytest.raises(ValueError, match="layers must be"):
        capture(m, layers="all")
    with pytest.raises(TypeError, match="torch.nn.Module"):
        capture("mixtral")
    with pytest.raises(ValueError, match="no MoE layers found"):
        capture(torch.nn.Sequential(torch.nn.Linear(4, 4)))
    s2s = get_model("switch_transformers")
    cap = capture(s2s)
    with pytest.raises(ValueError, match="layer groups"):
        cap.trace()
    with pytest.raises(ValueError, match="unknown layer group"):
        cap.trace("middle")


def test_training_layerdrop_is_reported():
    m = tiny_model("nllb-moe", encoder_layerdrop=1.0)
    m.train()
    with pytest.raises(RuntimeError, match="did not run"):
        with capture(m):
            m(input_ids=torch.tensor([[5, 6, 7]]), decoder_input_ids=torch.tensor([[2, 5]]))


def test_changed_batch_in_continuation_is_reported():
    m = get_model("mixtral")
    ids = torch.tensor([[5, 6, 7], [8, 9, 10]])
    with pytest.raises(RuntimeError, match="batch size changed"):
        with capture(m) as cap, torch.no_grad():
            out = m(input_ids=ids, use_cache=True)
            # a cached step with a different batch size than the open rows
            m(
                input_ids=torch.tensor([[11]]),
                attention_mask=torch.ones(1, 4, dtype=torch.long),
            )
            del out
            cap.flush()


# ---------------------------------------------------------------- no host sync
_SYNC_METHODS = (
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


class _SyncGuard:
    """Make host-synchronising tensor calls raise when lrc_kernels code makes them on the
    thread running the forward (the background thread may; the model itself may)."""

    def __init__(self, monkeypatch):
        self.main = threading.main_thread()
        for name in _SYNC_METHODS:
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


def test_sync_guard_catches_a_sync_in_package_code(monkeypatch):
    _SyncGuard(monkeypatch)
    src = "def bad(t):\n    return t.sum().item()\n"
    ns: dict = {}
    exec(compile(src, _recorder.__file__, "exec"), ns)
    with pytest.raises(AssertionError, match="host sync item"):
        ns["bad"](torch.ones(3))
    assert torch.ones(3).sum().item() == 3.0  # callers outside the package are untouched


@pytest.mark.parametrize(
    "family", ["mixtral", "deepseek_v3", "llama4_text", "jetmoe", "switch_transformers", "nllb-moe"]
)
def test_no_host_sync_inside_recorded_forward(monkeypatch, family):
    m = get_model(family)
    ids, mask = _prompt(B=2, S=5)
    with capture(m, weights=True) as cap, torch.no_grad():
        _SyncGuard(monkeypatch)
        m.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=3, min_new_tokens=3, do_sample=False
        )
        monkeypatch.undo()
    tr = cap.traces()
    assert all(t.num_tokens > 0 for t in tr.values())
    # one device buffer per group forward: prefill + 2 decode steps (+ 1 encoder pass)
    assert cap.stats["forwards"] == (4 if family in SEQ2SEQ_FAMILIES else 3)
    assert cap.stats["transfers"] == 0  # CPU model: the buffer already is host memory


def test_no_host_sync_with_a_static_cache(monkeypatch):
    # a static cache's length is a device tensor: it must be read on the worker thread
    m = _static_model()
    ids = torch.randint(3, 128, (1, 5), generator=torch.Generator().manual_seed(4))
    with capture(m) as cap:
        _SyncGuard(monkeypatch)
        _static_or_skip(m, ids, None, 3)
        monkeypatch.undo()
    assert list(cap.trace().lengths) == [7]


def test_reader_rules_by_shape_not_position():
    idx = torch.tensor([[1, 2], [3, 0]])
    w = torch.tensor([[0.6, 0.4], [0.7, 0.3]])
    hidden = torch.zeros(2, 2)  # same shape as the weights: must not be taken for them
    got_i, got_w = _sites.find_index_args((hidden, idx, w), {})
    assert got_i is idx and got_w is w
    got_i, got_w = _sites.find_index_args((hidden,), {"routing_weights": w, "router_indices": idx})
    assert got_i is idx and got_w is w
    assert _sites.find_index_args((hidden,), {}) == (None, None)
    # dense (T, E) scores (GPT-OSS in transformers 4.x): gathered at the indices; hidden
    # states of the same shape come first and are not taken for them
    dense = torch.tensor([[0.1, 0.6, 0.3], [0.2, 0.1, 0.7]])
    hid3, idx3 = torch.ones(2, 3), torch.tensor([[1, 2], [2, 0]])
    got_i, got_w = _sites.find_index_args(
        (hid3,), {"router_indices": idx3, "routing_weights": dense}, num_experts=3
    )
    assert got_i is idx3
    np.testing.assert_array_equal(got_w.numpy(), np.float32([[0.6, 0.3], [0.7, 0.2]]))


# ------------------------------------------------------------------- files / CLI
def test_file_output_equals_in_memory(tmp_path):
    io = pytest.importorskip("lrc_kernels.io")
    m = get_model("qwen2_moe")
    ids, mask = _prompt(B=3, S=6, seed=4)
    with capture(m, weights=True, domain="x") as mem, torch.no_grad():
        m(input_ids=ids, attention_mask=mask)
    path = tmp_path / "run.lrc.arrow"
    with capture(m, path, weights=True, domain="x") as cap, torch.no_grad():
        m(input_ids=ids, attention_mask=mask)
        with pytest.raises(RuntimeError, match="read it after"):
            cap.trace()
    a, b = mem.trace(), io.read_trace(path)
    np.testing.assert_array_equal(a.experts, b.experts)
    np.testing.assert_array_equal(a.offsets, b.offsets)
    np.testing.assert_array_equal(a.weights, b.weights)
    assert list(b.domains) == ["x"] * 3
    assert b.meta["layer_ids"] == [0, 1]
    np.testing.assert_array_equal(cap.trace().experts, a.experts)


def test_seq2seq_file_output_writes_one_file_per_group(tmp_path):
    pytest.importorskip("lrc_kernels.io")
    m = get_model("nllb-moe")
    with capture(m, tmp_path / "t.lrc.arrow") as cap, torch.no_grad():
        m(input_ids=torch.tensor([[5, 6, 7]]), decoder_input_ids=torch.tensor([[2, 9]]))
    assert sorted(p.name for p in cap.paths.values()) == [
        "t.decoder.lrc.arrow",
        "t.encoder.lrc.arrow",
    ]
    assert cap.trace("decoder").num_tokens == 2
    assert cap.trace("encoder").num_tokens == 3


def _local_model_dir(tmp_path):
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = list("abcdefghijklmnopqrstuvwxyz .,\n")
    vocab = {"[UNK]": 0, "[PAD]": 1, "[EOS]": 2}
    vocab.update({c: i + 3 for i, c in enumerate(chars)})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", eos_token="[EOS]"
    )
    d = tmp_path / "tiny-mixtral"
    get_model("mixtral").save_pretrained(d)
    fast.save_pretrained(d)
    return d


def test_capture_model_in_memory_and_file(tmp_path):
    d = _local_model_dir(tmp_path)
    (tmp_path / "code.txt").write_text("the quick brown fox jumps over the lazy dog. " * 20)
    (tmp_path / "prose.txt").write_text("lorem ipsum dolor sit amet, consectetur. " * 20)
    texts = [tmp_path / "code.txt", tmp_path / "prose.txt"]
    tr = capture_model(d, texts, None, seq_len=64, max_sequences=5, batch_size=2, progress=False)
    assert tr.num_sequences == 10 and set(tr.lengths) == {64}
    assert list(tr.domains) == ["code"] * 5 + ["prose"] * 5
    assert tr.meta["layer_ids"] == [0, 1]
    # the same tokens through the plain capture give the same ids
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(d, local_files_only=True)
    first = tok(texts[0].read_text(), add_special_tokens=False)["input_ids"][:64]
    m = get_model("mixtral")
    with capture(m) as cap, torch.no_grad():
        m(input_ids=torch.tensor([first]))
    np.testing.assert_array_equal(cap.trace().experts, tr.sequence(0))
    if pytest.importorskip("lrc_kernels.io"):
        out = capture_model(
            d,
            {"c": texts[0]},
            tmp_path / "o.lrc.arrow",
            seq_len=64,
            max_sequences=2,
            progress=False,
        )
        from lrc_kernels.io import read_trace

        back = read_trace(out)
        np.testing.assert_array_equal(back.experts, tr.experts[: 2 * 64])


def test_capture_model_never_downloads(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloads"):
        capture_model("mistralai/Mixtral-8x7B-v0.1", [__file__], None, progress=False)
    d = _local_model_dir(tmp_path)
    (tmp_path / "short.txt").write_text("abc")
    with pytest.raises(ValueError, match="fewer than seq_len"):
        capture_model(d, [tmp_path / "short.txt"], None, seq_len=64, progress=False)
    with pytest.raises(FileNotFoundError, match="not found"):
        capture_model(d, [tmp_path / "missing.txt"], None, progress=False)
