"""``hit_curve`` with every policy of ``_spec``, cache-size grids (``sizes=``, ``rho=``) and
the policy parameters: per-sequence means and exact hit counts against the reference run
sequence by sequence, streaming, ``by_domain``, the reference backend, and the errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import traces

import lrc_kernels as lk
from lrc_kernels import _backends, _stream
from lrc_kernels import reference as ref
from lrc_kernels._spec import ALL_POLICIES, POLICY_PARAMS, SIZE_POLICIES, STACK_POLICIES


@pytest.fixture(scope="module")
def tr():
    return lk.synthetic_trace(
        7, [30, 0, 21, 9, 30, 14, 21], 3, 10, 2, stay=0.6, seed=5, domains=["a", "b"]
    )


def _streams(tr, model):
    """Per sequence: the reference's streams (one per layer, or one for the model)."""
    x = np.asarray(tr.experts, np.int64)
    E, L = tr.num_experts, tr.num_layers
    for s in range(len(tr)):
        a, b = int(tr.offsets[s]), int(tr.offsets[s + 1])
        if model:
            yield s, [[[l * E + int(v) for l in range(L) for v in x[r, l]] for r in range(a, b)]]
        else:
            yield s, [[list(map(int, x[r, l])) for r in range(a, b)] for l in range(L)]


def _oracle(tr, policy, sizes, model, warm, param, domain=None):
    """Mean per-sequence rate and summed hits, sequence by sequence with the reference."""
    A = tr.top_k * (tr.num_layers if model else 1)
    Lo = 1 if model else tr.num_layers
    rate = np.zeros((Lo, len(sizes)))
    hits = np.zeros((Lo, len(sizes)), np.int64)
    n = 0
    for s, streams in _streams(tr, model):
        T = len(streams[0])
        if T == 0 or (domain is not None and tr.domains[s] != domain):
            continue
        n += 1
        for lo, stream in enumerate(streams):
            for i, C in enumerate(sizes):
                h = ref.policy_hits(stream, policy, int(C), warm, param)
                hits[lo, i] += h
                rate[lo, i] += h / (T * A)
    return (rate / n if n else rate * np.nan), hits, n


@settings(max_examples=12)
@given(
    trace=traces(max_sequences=3, max_len=16, max_layers=2, max_experts=12, max_k=3),
    policy=st.sampled_from(SIZE_POLICIES),
    model=st.booleans(),
    warm=st.booleans(),
    data=st.data(),
)
def test_size_policy_equals_reference_per_sequence(trace, policy, model, warm, data):
    n_ids = trace.num_experts * (trace.num_layers if model else 1)
    sizes = sorted(set(data.draw(st.lists(st.integers(1, n_ids), min_size=1, max_size=5))))
    kw = {}
    if policy in POLICY_PARAMS:
        name = POLICY_PARAMS[policy][0]
        kw[name] = {"decay": 0.7, "window": 3, "prefix": 4, "pinned": 0.5}[name]
    level = "model" if model else "layer"
    c = lk.hit_curve(trace, policy, level=level, warm_start=warm, sizes=sizes, **kw)
    rate, hits, n = _oracle(trace, policy, sizes, model, warm, next(iter(kw.values()), None))
    assert c.sizes.tolist() == sizes
    assert int(c.sequences) == n
    if n == 0:
        assert np.isnan(c.rates).all()
        return
    want = rate[0] if model else rate
    np.testing.assert_allclose(c.rates, want, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(c.hits, hits[0] if model else hits)
    assert c.params == kw


@pytest.mark.parametrize("policy", SIZE_POLICIES)
def test_layer_default_all_sizes_and_frames(tr, policy):
    c = lk.hit_curve(tr, policy)
    assert c.sizes.tolist() == list(range(1, 11))
    assert c.rates.shape == c.hits.shape == (3, 10)
    rate, hits, n = _oracle(tr, policy, list(range(1, 11)), False, True, None)
    np.testing.assert_allclose(c.rates, rate, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(c.hits, hits)
    df = c._columns()
    assert df["hits"].tolist() == hits.ravel().tolist()
    assert set(df["accesses"].tolist()) == {int(np.diff(tr.offsets).sum()) * 2}
    np.testing.assert_array_equal(c.at([0.5, 2]), c.rates[:, [0, 3]])
    r = lk.hit_curve(tr, policy, backend="reference")
    np.testing.assert_array_equal(c.rates, r.rates)
    np.testing.assert_array_equal(c.hits, r.hits)


def test_per_size_curve_means_like_the_stack_engine(tr):
    """static-oracle through hit_curve averages exactly as the stack engine's curves do:
    pinned-lru with share 0 is LRU, bit for bit, rates included."""
    for level, kw in (("layer", {}), ("model", {"sizes": list(range(1, 31))})):
        a = lk.hit_curve(tr, "pinned-lru", pinned=0.0, level=level, by_domain=True, **kw)
        b = lk.hit_curve(tr, "lru", level=level, by_domain=True, **kw)
        np.testing.assert_array_equal(a.rates, b.rates)
        np.testing.assert_array_equal(a.hits, b.hits)
        np.testing.assert_array_equal(a.accesses, b.accesses)
        np.testing.assert_array_equal(a.sequences, b.sequences)


def test_by_domain(tr):
    c = lk.hit_curve(tr, "lfu-window", window=2, level="model", rho=[1, 2.5], by_domain=True)
    assert c.domains == ["a", "b"] and c.rates.shape == (2, 2)
    for d, name in enumerate(c.domains):
        rate, hits, n = _oracle(tr, "lfu-window", c.sizes, True, True, 2, domain=name)
        np.testing.assert_allclose(c.rates[d], rate[0], rtol=0, atol=1e-12)
        np.testing.assert_array_equal(c.hits[d], hits[0])
        assert c.sequences[d] == n
    df = c.to_pandas()
    assert list(df.columns[:5]) == ["policy", "level", "domain", "window", "rho"]
    assert df["window"].tolist() == [2] * 4


@pytest.mark.parametrize("batch", [None, 40])
@pytest.mark.parametrize("policy", ["arc", "lfu-decay", "static-prefix"])
def test_streams_exactly(tr, tmp_path, monkeypatch, batch, policy):
    monkeypatch.setattr(_stream, "STREAM_BATCH_TOKENS", batch)
    path = tmp_path / "t.lrc.arrow"
    lk.write_trace(path, tr)
    for level, kw in (("layer", {}), ("model", {"sizes": [2, 7, 30]})):
        a = lk.hit_curve(tr, policy, level=level, by_domain=True, **kw)
        b = lk.hit_curve(path, policy, level=level, by_domain=True, **kw)
        np.testing.assert_array_equal(a.rates, b.rates)
        np.testing.assert_array_equal(a.hits, b.hits)
        np.testing.assert_array_equal(a.accesses, b.accesses)


@pytest.mark.parametrize("policy", STACK_POLICIES)
def test_stack_policies_take_grids(tr, policy):
    m = 4 if policy == "sch" else None
    full = lk.hit_curve(tr, policy, m, level="model")
    grid = lk.hit_curve(tr, policy, m, level="model", sizes=[12, 3, 3, 30])
    assert grid.sizes.tolist() == [3, 12, 30]
    np.testing.assert_array_equal(grid.rates, full.rates[[2, 11, 29]])
    np.testing.assert_array_equal(grid.stat, full.stat)
    np.testing.assert_array_equal(grid.hits, np.cumsum(full.stat[:-1])[[2, 11, 29]])
    byrho = lk.hit_curve(tr, policy, m, level="model", rho=[0.5, 2])  # C = rho * 6
    assert byrho.sizes.tolist() == [3, 12]
    assert byrho.at(2) == full.at(2)
    f = grid.to_pandas(rho=[0.5, 2])
    assert f["cache_size"].tolist() == [3, 12] and f["hits"].tolist() == grid.hits[:2].tolist()


def test_errors(tr):
    with pytest.raises(ValueError, match="sizes= .* or rho=.*not both"):
        lk.hit_curve(tr, "lru", sizes=[1], rho=[1])
    with pytest.raises(ValueError, match="level='model'.*sizes=.*rho=.*32-size"):
        lk.hit_curve(tr, "fifo", level="model")
    with pytest.raises(ValueError, match="sizes must be <= 10"):
        lk.hit_curve(tr, "fifo", sizes=[11])
    with pytest.raises(ValueError, match="sizes must be <= 30"):
        lk.hit_curve(tr, "lru", level="model", sizes=[31])
    with pytest.raises(ValueError, match="sizes must be >= 1"):
        lk.hit_curve(tr, "fifo", sizes=[0, 2])
    with pytest.raises(TypeError, match="sizes"):
        lk.hit_curve(tr, "fifo", sizes=[2.0])
    with pytest.raises(ValueError, match="sizes is empty"):
        lk.hit_curve(tr, "fifo", sizes=[])
    with pytest.raises(ValueError, match="whole cache size"):
        lk.hit_curve(tr, "fifo", rho=[0.25])
    owners = (("decay", "lfu-decay"), ("window", "lfu-window"), ("pinned", "pinned-lru"))
    for name, policy in owners:
        with pytest.raises(ValueError, match=f"{name}= applies only to policy='{policy}'"):
            lk.hit_curve(tr, "fifo", **{name: 1})
    with pytest.raises(ValueError, match="prefix= applies only to policy='static-prefix'"):
        lk.hit_curve(tr, "static-oracle", prefix=4)
    for bad in (0, 1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"decay must be in \(0, 1\)"):
            lk.hit_curve(tr, "lfu-decay", decay=bad)
    with pytest.raises(TypeError, match="decay"):
        lk.hit_curve(tr, "lfu-decay", decay=True)
    with pytest.raises(ValueError, match=r"pinned must be in \[0, 1\]"):
        lk.hit_curve(tr, "pinned-lru", pinned=1.01)
    with pytest.raises(ValueError, match="window must be >= 1"):
        lk.hit_curve(tr, "lfu-window", window=0)
    with pytest.raises(TypeError, match="prefix"):
        lk.hit_curve(tr, "static-prefix", prefix=4.0)
    with pytest.raises(ValueError, match="m applies only"):
        lk.hit_curve(tr, "fifo", m=4)
    c = lk.hit_curve(tr, "arc", level="model", rho=[1, 2])
    with pytest.raises(ValueError, match=r"C = 18 \(rho = 3\) is not in this curve's sizes"):
        c.at(3)
    assert set(ALL_POLICIES) == set(STACK_POLICIES) | set(SIZE_POLICIES)


def test_gpu_backend_refuses_size_policies(tr):
    with pytest.raises(ValueError, match="no GPU kernel.*backend='cpu'"):
        _backends.GpuBackend().policy_hits_table(
            tr.experts, tr.offsets, 10, "fifo", np.arange(1, 3), False, True, None, 1
        )


def _cli_rows(argv, capsys):
    from lrc_kernels import cli

    assert cli.main(argv) == 0
    import json

    return json.loads(capsys.readouterr().out)


def test_cli_curves_every_policy(tr, tmp_path, capsys):
    path = str(tmp_path / "t.lrc.arrow")
    lk.write_trace(path, tr)
    # a per-size policy at model level defaults to the table's ratios (whole sizes only)
    rows = _cli_rows(["curves", path, "--policy", "fifo", "--level", "model", "--json"], capsys)
    want = lk.hit_curve(tr, "fifo", level="model", rho=[0.5, 1, 1.5, 2, 3, 4])
    assert [r["cache_size"] for r in rows] == want.sizes.tolist() == [3, 6, 9, 12, 18, 24]
    assert [r["hits"] for r in rows] == want.hits.tolist()
    # parameters reach their policy, and appear as a column
    argv = ["curves", path, "--policy", "lru", "pinned-lru", "--pinned", "0.3", "--sizes", "2", "5"]
    rows = _cli_rows(argv + ["--json"], capsys)
    pin = [r for r in rows if r["policy"] == "pinned-lru"]
    want = lk.hit_curve(tr, "pinned-lru", pinned=0.3, sizes=[2, 5])
    assert [r["hit_rate"] for r in pin] == want.rates.ravel().tolist()
    assert {r["pinned"] for r in pin} == {0.3}
    from lrc_kernels import cli

    assert cli.main(argv) == 0
    assert "pinned-lru(pinned=0.3)" in capsys.readouterr().out
    for bad, msg in (
        (["--policy", "lru", "--decay", "0.5"], "--decay applies to --policy lfu-decay"),
        (["--policy", "fifo", "--sizes", "2", "--rho", "1"], "--sizes or --rho"),
        (["--policy", "lfu-decay", "--decay", "2"], r"decay must be in \(0, 1\)"),
    ):
        assert cli.main(["curves", path, *bad]) != 0
        assert msg.replace("\\", "") in capsys.readouterr().err


def test_per_size_policy_on_the_gpu_backend_is_refused_before_any_work():
    tr = lk.synthetic_trace(2, 8, 2, 6, 2, seed=0)
    for policy in ("fifo", "static-oracle"):
        with pytest.raises(ValueError, match=f"policy='{policy}' has no GPU kernel"):
            lk.hit_curve(tr, policy, backend="gpu")
