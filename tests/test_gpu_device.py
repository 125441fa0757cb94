"""Real GPU runs (marker ``gpu``): every result compared with the reference and CPU backends.

Skipped automatically when CuPy or a CUDA device is missing. Inputs are CuPy arrays, CUDA
torch tensors (DLPack) and host arrays; outputs must be bit-identical integer tables.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import segment_lengths, traces

import lrc_kernels as lk
from lrc_kernels import gpu
from lrc_kernels import reference as R

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not gpu.is_available(), reason="needs CuPy and a CUDA device"),
]


def _cp():
    import cupy

    return cupy


def _inputs(x):
    """The same ids as a host array, a CuPy array and (if torch has CUDA) a torch tensor."""
    cp = _cp()
    out = [("numpy", x), ("cupy", cp.asarray(x))]
    try:
        import torch

        if torch.cuda.is_available():
            out.append(("torch", torch.as_tensor(x.astype(np.int64), device="cuda")))
    except ImportError:
        pass
    return out


@given(
    tr=traces(),
    ms=st.lists(segment_lengths(), min_size=1, max_size=3),
    per_expert=st.booleans(),
)
def test_window_hist_table_matches_reference(tr, ms, per_expert):
    S = tr.num_sequences
    group = np.arange(S, dtype=np.int64) % 2
    want = R.window_hist_table(tr.experts, tr.offsets, tr.num_experts, ms, group, 2, per_expert)
    for name, x in _inputs(tr.experts):
        got = gpu.window_hist_table(x, tr.offsets, tr.num_experts, ms, group, 2, per_expert)
        assert isinstance(got, np.ndarray) and got.dtype == np.int64, name
        np.testing.assert_array_equal(got, want, err_msg=name)


@given(
    tr=traces(max_len=20),
    policy=st.sampled_from(R.POLICIES),
    m=segment_lengths(max_m=30),
    model_level=st.booleans(),
    warm_start=st.booleans(),
)
def test_stack_stats_table_matches_reference(tr, policy, m, model_level, warm_start):
    S = tr.num_sequences
    group = np.arange(S, dtype=np.int64) % 2
    mm = m if policy == "sch" else None
    want = R.stack_stats_table(
        tr.experts, tr.offsets, tr.num_experts, policy, mm, model_level, warm_start, group, 2
    )
    for name, x in _inputs(tr.experts):
        got = gpu.stack_stats_table(
            x, tr.offsets, tr.num_experts, policy, mm, model_level, warm_start, group, 2
        )
        np.testing.assert_array_equal(got, want, err_msg=name)


@given(tr=traces(), kind=st.sampled_from(["ok", "negative", "high", "dup"]), data=st.data())
def test_validate_ids_matches_host_trace(tr, kind, data):
    x = tr.experts.astype(np.int64)
    if x.size and kind != "ok" and not (kind == "dup" and x.shape[2] < 2):
        r = data.draw(st.integers(0, x.shape[0] - 1))
        l = data.draw(st.integers(0, x.shape[1] - 1))
        j = data.draw(st.integers(0, x.shape[2] - 1))
        x[r, l, j] = {"negative": -1, "high": tr.num_experts, "dup": x[r, l, (j + 1) % x.shape[2]]}[
            kind
        ]
    try:
        host = lk.Trace(x, tr.offsets, num_experts=tr.num_experts)
        host_err = None
    except (TypeError, ValueError) as exc:
        host, host_err = None, exc
    for name, dx in _inputs(x)[1:]:
        if host_err is None:
            y, off = gpu.validate_ids(dx, tr.offsets, tr.num_experts)
            assert y.dtype == host.experts.dtype, name
            np.testing.assert_array_equal(y.get(), host.experts)
            np.testing.assert_array_equal(off, host.offsets)
        else:
            with pytest.raises(type(host_err)) as got:
                gpu.validate_ids(dx, tr.offsets, tr.num_experts)
            assert str(got.value) == str(host_err), name


def test_torch_tensor_is_not_copied():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch without CUDA")
    t = torch.zeros((4, 1, 2), dtype=torch.uint8, device="cuda")
    a = gpu.as_device_array(t)
    assert a.data.ptr == t.data_ptr()


def test_module_loaded_once_per_device():
    cp = _cp()
    x = cp.asarray(np.array([[[0, 1]], [[1, 2]]], np.uint8))
    gpu.window_hist_table(x, [0, 2], 3, [1], [0], 1, True)
    n = len(gpu._MODULES)
    gpu.window_hist_table(x, [0, 2], 3, [2], [0], 1, False)
    assert len(gpu._MODULES) == n


def test_public_api_gpu_equals_cpu(flame_trace):
    """srp / sch / hit curves through the public API: GPU == CPU on the real trace."""
    cp = _cp()
    host = flame_trace
    dev = lk.Trace(cp.asarray(host.experts), host.offsets, num_experts=host.num_experts)
    for level in ("layer", "model", "expert"):
        a = lk.srp(host, 16, level=level, backend="cpu")
        b = lk.srp(dev, 16, level=level, backend="gpu")
        np.testing.assert_array_equal(np.asarray(a.value), np.asarray(b.value))
    auto = lk.srp(dev, [1, 16, 64], level="layer")  # "auto" picks the GPU for device data
    cpu = lk.srp(host, [1, 16, 64], level="layer", backend="cpu")
    np.testing.assert_array_equal(np.asarray(auto.value), np.asarray(cpu.value))
    for level in ("layer", "model"):
        for policy in ("lru", "lfu", "belady"):
            a = lk.hit_curve(host, policy, level=level, backend="cpu")
            b = lk.hit_curve(dev, policy, level=level, backend="gpu")
            np.testing.assert_array_equal(np.asarray(a.rates), np.asarray(b.rates))
        a = lk.sch(host, 16, level=level, backend="cpu")
        b = lk.sch(dev, 16, level=level, backend="gpu")
        np.testing.assert_array_equal(np.asarray(a.rates), np.asarray(b.rates))
