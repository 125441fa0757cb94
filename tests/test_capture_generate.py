"""lrc_kernels.torch.capture under generate(): prefill + decode on every family that can
generate, padding, and the forwards that cannot be attributed (see docs/capture.md).

Runs under whichever transformers is installed (``.ci/capture-oldest.sh`` for the oldest
supported); families that version lacks skip with the reason.
"""

from __future__ import annotations

import numpy as np
import pytest
from capture_truth import (
    EXPECTED_PATHS,
    TF_VERSION,
    SyncGuard,
    Truth,
    compare,
    get_model,
    prompt,
    torch,
)

from lrc_kernels._capture import _steps
from lrc_kernels._capture._tiny import SEQ2SEQ_FAMILIES, TINY_FAMILIES, tiny_model
from lrc_kernels.torch import capture, find_moe_layers


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
    ids, mask = prompt(B=B, S=S, seed=3)
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

    ids, mask = prompt(B=3, S=6, seed=7)
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
    ids, mask = prompt(B=2, S=5, seed=1)
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


def test_no_host_sync_with_a_static_cache(monkeypatch):
    # a static cache's length is a device tensor: it must be read on the worker thread
    m = _static_model()
    ids = torch.randint(3, 128, (1, 5), generator=torch.Generator().manual_seed(4))
    with capture(m) as cap:
        SyncGuard(monkeypatch)
        _static_or_skip(m, ids, None, 3)
        monkeypatch.undo()
    assert list(cap.trace().lengths) == [7]
