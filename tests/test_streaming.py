"""Metrics over trace files stream batch by batch and equal the in-memory results exactly."""

from __future__ import annotations

import numpy as np
import pytest

import lrc_kernels as lk
from lrc_kernels import _stream
from lrc_kernels.synthetic import synthetic_trace


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("stream")
    tr = synthetic_trace(
        24, [90, 37, 0, 250, 12, 64] * 4, 3, 32, 4, stay=0.6, seed=1, domains=["a", "b", "c"]
    )
    whole = d / "whole.arrow"
    lk.write_trace(whole, tr)
    shards = d / "shards"
    shards.mkdir()
    lk.write_trace(shards / "part-0.arrow", tr.select(sequences=range(0, 10)))
    lk.write_trace(shards / "part-1.arrow", tr.select(sequences=range(10, 24)))
    return tr, whole, shards


@pytest.fixture(params=[None, 100], ids=["default-batches", "many-batches"])
def batch_tokens(request, monkeypatch):
    monkeypatch.setattr(_stream, "STREAM_BATCH_TOKENS", request.param)
    return request.param


@pytest.mark.parametrize(
    "kw",
    [
        dict(level="expert"),
        dict(level="layer", by_domain=True),
        dict(level="model", bootstrap=40),
        dict(level="layer", bootstrap=40, by_domain=True),
        dict(level="expert", bootstrap=20),
    ],
)
def test_srp_streams_exactly(files, batch_tokens, kw):
    tr, whole, shards = files
    a = lk.srp(tr, [3, 17], **kw)
    for src in (whole, shards, [str(p) for p in sorted(shards.iterdir())]):
        b = lk.srp(src, [3, 17], **kw)
        np.testing.assert_array_equal(a.value, b.value)
        np.testing.assert_array_equal(a.threshold, b.threshold)
        np.testing.assert_array_equal(a.activation_ratio, b.activation_ratio)
        assert a.domains == b.domains
        if a.ci is not None:
            np.testing.assert_array_equal(a.ci[0], b.ci[0])
            np.testing.assert_array_equal(a.ci[1], b.ci[1])


@pytest.mark.parametrize("policy", ["lru", "lfu", "belady", "sch"])
@pytest.mark.parametrize("level", ["layer", "model"])
def test_hit_curves_stream_exactly(files, batch_tokens, policy, level):
    tr, whole, shards = files
    m = 5 if policy == "sch" else None
    a = lk.hit_curve(tr, policy, m=m, level=level, by_domain=True)
    b = lk.hit_curve(whole, policy, m=m, level=level, by_domain=True)
    c = lk.hit_curve(shards, policy, m=m, level=level, by_domain=True)
    np.testing.assert_array_equal(a.rates, b.rates)
    np.testing.assert_array_equal(a.rates, c.rates)
    np.testing.assert_array_equal(a.stat, c.stat)


def test_progress_callback_sees_every_batch(files, monkeypatch):
    tr, whole, _ = files
    monkeypatch.setattr(_stream, "STREAM_BATCH_TOKENS", 200)
    seen = []
    lk.sch(whole, 4, progress=lambda b: seen.append(b.num_tokens))
    assert len(seen) > 3 and sum(seen) == tr.num_tokens
