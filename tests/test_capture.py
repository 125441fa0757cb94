"""lrc_kernels.torch.capture on tiny random Hugging Face MoE models (CPU, no download):
discovery, batch forwards, errors, no host sync, files and the CLI helper.

The ground truth each capture is compared with is observed independently of the capture
code (``capture_truth.py``). The tests run under whichever transformers is installed;
families that version lacks skip with the reason. ``.ci/capture-oldest.sh`` runs them
against the oldest supported one. ``test_capture_generate.py`` covers ``generate()``.
"""

from __future__ import annotations

import numpy as np
import pytest
from capture_truth import (
    EXPECTED_PATHS,
    SyncGuard,
    Truth,
    compare,
    get_model,
    prompt,
    torch,
)

from lrc_kernels._capture import _recorder, _sites
from lrc_kernels._capture._tiny import SEQ2SEQ_FAMILIES, TINY_FAMILIES, tiny_model
from lrc_kernels.torch import capture, capture_model, find_moe_layers


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
    ids, mask = prompt(pad_left=family not in SEQ2SEQ_FAMILIES)
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
                ids, mask = prompt(B=3, S=7, pad_left=False)
                m(input_ids=ids, attention_mask=mask, decoder_input_ids=ids[:, :2])
        finally:
            truth.remove()
        kind, a, _ = truth.calls[EXPECTED_PATHS[fam][0]][0]
        assert (a.reshape(a.shape[0], -1).sum(1) == 0).any()


def test_several_forwards_append_sequences_in_row_order_with_domains():
    m = get_model("mixtral")
    a, ma = prompt(B=2, S=6, seed=1)
    b, mb = prompt(B=3, S=4, seed=2, pad_left=False)
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


def test_sync_guard_catches_a_sync_in_package_code(monkeypatch):
    SyncGuard(monkeypatch)
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
    ids, mask = prompt(B=2, S=5)
    with capture(m, weights=True) as cap, torch.no_grad():
        SyncGuard(monkeypatch)
        m.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=3, min_new_tokens=3, do_sample=False
        )
        monkeypatch.undo()
    tr = cap.traces()
    assert all(t.num_tokens > 0 for t in tr.values())
    # one device buffer per group forward: prefill + 2 decode steps (+ 1 encoder pass)
    assert cap.stats["forwards"] == (4 if family in SEQ2SEQ_FAMILIES else 3)
    assert cap.stats["transfers"] == 0  # CPU model: the buffer already is host memory


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
    ids, mask = prompt(B=3, S=6, seed=4)
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
