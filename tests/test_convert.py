"""Converters: numpy / npz, vLLM arrays, Hugging Face router logits, authors' safetensors."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import FLAME
from hypothesis import given
from strategies import traces

import lrc_kernels as lk
from lrc_kernels import convert
from lrc_kernels.io import read_trace, write_trace


def same(a: lk.Trace, b: lk.Trace) -> None:
    assert a.num_experts == b.num_experts
    assert np.array_equal(a.experts, b.experts)
    assert np.array_equal(a.offsets, b.offsets)
    assert (a.domains is None) == (b.domains is None)
    if a.domains is not None:
        assert list(a.domains) == list(b.domains)


# ------------------------------------------------------------------------- numpy / npz
@given(tr=traces(max_sequences=5, max_len=12, domains=True))
def test_arrays_and_vllm_round_trip(tr):
    back = convert.from_arrays(
        convert.to_arrays(tr), num_experts=tr.num_experts, domains=list(tr.domains)
    )
    same(tr, back)
    if tr.num_experts <= 32768:
        v = convert.to_vllm(tr)
        assert all(a.dtype == np.int16 and a.shape[1:] == (tr.num_layers, tr.top_k) for a in v)
        same(tr, convert.from_vllm(v, num_experts=tr.num_experts, domains=list(tr.domains)))


@given(tr=traces(max_sequences=4, max_len=10, domains=True))
def test_npz_round_trip(tmp_path_factory, tr):
    p = tmp_path_factory.mktemp("npz") / "t.npz"
    w = np.random.default_rng(1).random(tr.experts.shape).astype(np.float32)
    tr = lk.Trace(
        tr.experts,
        tr.offsets,
        num_experts=tr.num_experts,
        domains=tr.domains,
        weights=w,
        meta={"model": "x", "layer_ids": list(range(tr.num_layers))},
    )
    convert.to_npz(p, tr, token_ids=np.arange(tr.num_tokens))
    back = convert.from_npz(p)
    same(tr, back)
    assert np.array_equal(back.weights, w)
    assert back.meta["model"] == "x"
    with np.load(p) as z:
        assert np.array_equal(z["token_ids"], np.arange(tr.num_tokens))


def test_from_arrays_shapes():
    a = np.array([[[0, 1]], [[1, 2]]])  # (T=2, L=1, k=2)
    tr = convert.from_arrays(a, num_experts=3)
    assert tr.num_sequences == 1 and tr.num_tokens == 2
    tr = convert.from_arrays(np.stack([a, a, a]), num_experts=3, domains="d")
    assert tr.num_sequences == 3 and list(tr.domains) == ["d"] * 3
    with pytest.raises(ValueError, match="same \\(layers, k\\)"):
        convert.from_arrays([a, np.zeros((2, 2, 2), int)], num_experts=3)
    with pytest.raises(ValueError, match=r"arrays\[1\] must have shape"):
        convert.from_arrays([a, np.zeros((2, 2), int)], num_experts=3)
    with pytest.raises(TypeError, match="integer"):
        convert.from_arrays(a.astype(float), num_experts=3)
    with pytest.raises(ValueError, match="empty"):
        convert.from_arrays([], num_experts=3)
    with pytest.raises(ValueError, match="same per-sequence shapes"):
        convert.from_arrays([a], num_experts=3, weights=[np.ones((1, 1, 2))])


def test_vllm_errors():
    req = np.zeros((3, 2, 2), np.int16) + np.array([0, 1], np.int16)
    bad = req.copy()
    bad[2, 1, 0] = -1
    with pytest.raises(ValueError, match="request 1: negative expert id -1 at token 2, layer 1"):
        convert.from_vllm([req, bad], num_experts=4)
    with pytest.raises(ValueError, match="expected \\(tokens, layers, k\\)"):
        convert.from_vllm([req[:, 0]], num_experts=4)
    big = lk.Trace(np.array([[[40000, 1]]]), num_experts=40001)
    with pytest.raises(ValueError, match="int16"):
        convert.to_vllm(big)
    one = convert.from_vllm(req, num_experts=4)  # a single request array
    assert one.num_sequences == 1


def test_npz_foreign_layouts(tmp_path):
    ids = np.random.default_rng(0).permuted(np.tile(np.arange(8), (10, 3, 1)), axis=2)[..., :4]
    p = tmp_path / "cap.npz"
    np.savez(
        p,
        indices=ids.astype(np.int16),
        scores=np.ones(ids.shape, np.float32),
        moe_layer_ids=np.array([2, 3, 4]),
    )
    with pytest.raises(ValueError, match="pass num_experts=E"):
        convert.from_npz(p)
    tr = convert.from_npz(p, num_experts=8, domain="web")
    assert tr.num_sequences == 1 and tr.meta["layer_ids"] == [2, 3, 4]
    assert list(tr.domains) == ["web"] and tr.weights is not None
    assert convert.from_npz(p, num_experts=8, weights=False).weights is None
    np.savez(tmp_path / "four.npz", experts=ids.reshape(2, 5, 3, 4))
    assert convert.from_npz(tmp_path / "four.npz", num_experts=8).num_sequences == 2
    np.savez(tmp_path / "none.npz", foo=ids)
    with pytest.raises(ValueError, match=r"no expert id array.*\['foo'\]"):
        convert.from_npz(tmp_path / "none.npz", num_experts=8)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable .npz"):
        convert.from_npz(tmp_path / "junk.npz")
    np.savez(tmp_path / "oob.npz", experts=ids, num_experts=np.int64(6))
    with pytest.raises(ValueError, match="oob.npz: .*expert id 6 is >= num_experts = 6"):
        convert.from_npz(tmp_path / "oob.npz")
    with pytest.raises(ValueError, match="stores 6"):
        convert.from_npz(tmp_path / "oob.npz", num_experts=8)


@pytest.mark.skipif(not FLAME.exists(), reason="real FLAME trace not present")
def test_flame_npz_to_trace_file(tmp_path):
    tr = convert.from_npz(FLAME, num_experts=64)
    assert tr.meta["layer_ids"] == list(range(2, 10))
    assert tr.weights.dtype == np.float32
    p = tmp_path / "flame.lrc.arrow"
    write_trace(p, tr.split(512), weights_dtype="float16")
    back = read_trace(p)
    assert np.array_equal(back.experts, tr.experts)
    assert back.meta["layer_ids"] == list(range(2, 10)) and back.num_sequences == 4
    assert np.array_equal(back.weights, tr.weights.astype(np.float16))


# ------------------------------------------------------------------------ Hugging Face
def test_hf_numpy_logits_topk_order():
    rng = np.random.default_rng(3)
    logits = [rng.normal(size=(2 * 5, 8)).astype(np.float32) for _ in range(3)]
    mask = np.ones((2, 5), int)
    mask[1, :2] = 0  # left padding
    tr = convert.from_hf_router_logits(
        logits, top_k=2, model_type="mixtral", attention_mask=mask, domains=["a", "b"]
    )
    assert list(tr.lengths) == [5, 3] and tr.num_layers == 3 and tr.num_experts == 8
    want = np.argsort(-logits[1].reshape(2, 5, 8)[1, 2:], axis=-1)[:, :2]
    assert np.array_equal(tr.sequence(1)[:, 1], want)
    assert tr.meta["model"] == "mixtral"
    tr3 = convert.from_hf_router_logits(
        [x.reshape(2, 5, 8) for x in logits], top_k=2, model_type="qwen3_moe"
    )
    assert list(tr3.lengths) == [5, 5]
    tr1 = convert.from_hf_router_logits(logits, top_k=2, model_type="olmoe", batch_size=2)
    assert np.array_equal(tr1.experts, tr3.experts)


def test_hf_refuses_families_where_logits_are_not_the_choice():
    x = [np.zeros((4, 8), np.float32)]
    with pytest.raises(ValueError, match="correction bias.*hook"):
        convert.from_hf_router_logits(x, top_k=2, model_type="deepseek_v3")
    with pytest.raises(ValueError, match="not known to route"):
        convert.from_hf_router_logits(x, top_k=2, model_type="my_new_moe")
    tr = convert.from_hf_router_logits(x, top_k=2, model_type="my_new_moe", trust_topk=True)
    assert tr.num_tokens == 4
    with pytest.raises(ValueError, match="batch_size=3"):
        convert.from_hf_router_logits(x, top_k=2, model_type="mixtral", batch_size=3)
    with pytest.raises(ValueError, match="top_k must lie"):
        convert.from_hf_router_logits(x, top_k=9, model_type="mixtral")
    with pytest.raises(ValueError, match="num_experts=7"):
        convert.from_hf_router_logits(x, top_k=2, model_type="mixtral", num_experts=7)
    with pytest.raises(ValueError, match="differ in shape"):
        convert.from_hf_router_logits(x + [np.zeros((4, 6))], top_k=2, model_type="mixtral")
    with pytest.raises(TypeError, match="floating-point"):
        convert.from_hf_router_logits([np.zeros((4, 8), int)], top_k=2, model_type="mixtral")


@pytest.mark.parametrize("model_type", ["qwen3_moe", "mixtral"])
def test_hf_logits_equal_the_real_choice(model_type):
    """On tiny random models, top-k of the returned logits = the router's own choice."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    cfg = transformers.AutoConfig.for_model(
        model_type,
        hidden_size=64,
        intermediate_size=64,
        moe_intermediate_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=128,
        num_experts=8,
        num_local_experts=8,
        num_experts_per_tok=2,
    )
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    routers = [m for n, m in model.named_modules() if n.endswith("mlp.gate")]
    assert len(routers) == 3
    seen = []
    hooks = [r.register_forward_hook(lambda mod, a, out: seen.append(out[2])) for r in routers]
    ids = torch.randint(0, 128, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, :3] = 0
    with torch.no_grad():
        out = model(ids, attention_mask=mask, output_router_logits=True)
    for h in hooks:
        h.remove()
    tr = convert.from_hf_router_logits(
        out.router_logits, top_k=2, model_type=model_type, attention_mask=mask
    )
    real = torch.stack(seen, dim=1).reshape(2, 9, 3, 2).numpy()  # (B, T, L, k)
    want = np.concatenate([real[0], real[1, 3:]])
    assert np.array_equal(tr.experts, want)
    assert list(tr.lengths) == [9, 6]


# ------------------------------------------------------------------------ safetensors
def _save_layers(tmp_path, per_layer, names=None):
    from safetensors.numpy import save_file

    d = tmp_path / "topk"
    d.mkdir(exist_ok=True)
    for i, layer in enumerate(per_layer):
        name = names[i] if names else f"layer_{i * 5}.safetensors"
        save_file(layer, str(d / name))
    return d


def _layers(rng, E, L, doms, S=2, T=6, k=3):
    return [
        {
            d: np.stack([np.stack([rng.permutation(E)[:k] for _ in range(T)]) for _ in range(S)])
            for d in doms
        }
        for _ in range(L)
    ]


def test_safetensors_layout(tmp_path):
    rng = np.random.default_rng(0)
    per = _layers(rng, 100, 12, ["web", "code"])  # 12 layers: file names sort naturally
    d = _save_layers(tmp_path, [{k: v.astype(np.int8) for k, v in x.items()} for x in per])
    tr = convert.from_safetensors_topk(d, num_experts=100)
    assert tr.num_layers == 12 and tr.num_sequences == 4 and tr.top_k == 3
    assert list(tr.domains) == ["code", "code", "web", "web"]
    assert tr.meta["layer_ids"] == [5 * i for i in range(12)]
    # sequence 3 = web sequence 1; layer 11 = layer_55 file
    assert np.array_equal(tr.sequence(3)[:, 11], per[11]["web"][1])
    files = [d / f"layer_{5 * i}.safetensors" for i in (1, 0)]
    tr2 = convert.from_safetensors_topk(files, num_experts=100, layer_ids=[7, 6])
    assert tr2.meta["layer_ids"] == [7, 6]
    assert np.array_equal(tr2.experts[:, 0], tr.experts[:, 1])


def test_safetensors_wrapped_ids(tmp_path):
    rng = np.random.default_rng(1)
    per = _layers(rng, 200, 2, ["web"])
    d = _save_layers(tmp_path, [{k: v.astype(np.int8) for k, v in x.items()} for x in per])
    with pytest.raises(ValueError, match=r"wrapped past 127.*unwrap=True"):
        convert.from_safetensors_topk(d, num_experts=200)
    tr = convert.from_safetensors_topk(d, num_experts=200, unwrap=True)
    assert np.array_equal(tr.experts[:, 1], per[1]["web"].reshape(-1, 3))
    with pytest.raises(ValueError, match="cannot be a wrapped id"):
        convert.from_safetensors_topk(d, num_experts=120)
    with pytest.raises(ValueError, match="int8.*> 256.*cannot be recovered"):
        convert.from_safetensors_topk(d, num_experts=300)


def test_safetensors_disagreeing_files(tmp_path):
    rng = np.random.default_rng(2)
    a = _layers(rng, 16, 1, ["web", "code"])[0]
    b = _layers(rng, 16, 1, ["web"])[0]
    d = _save_layers(tmp_path, [a, b], names=["l0.safetensors", "l1.safetensors"])
    with pytest.raises(ValueError, match="l1.safetensors: domains"):
        convert.from_safetensors_topk(d, num_experts=16)
    c = _layers(rng, 16, 1, ["web", "code"], T=5)[0]
    _save_layers(tmp_path, [c], names=["l1.safetensors"])
    with pytest.raises(ValueError, match="shape"):
        convert.from_safetensors_topk(d, num_experts=16)
    with pytest.raises(FileNotFoundError):
        convert.from_safetensors_topk(tmp_path / "nothing-here", num_experts=16)
