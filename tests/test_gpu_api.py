"""The GPU backend's Python side that needs no device: availability, errors, planning."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from lrc_kernels import gpu
from lrc_kernels.gpu import _plan


def _no_launch(spec):  # pragma: no cover - reaching it is the failure
    raise AssertionError(f"kernel {spec.name} launched on invalid input")


def test_is_available_never_raises_and_is_bool():
    assert isinstance(gpu.is_available(), bool)


def test_missing_cupy_is_reported_with_the_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # makes `import cupy` raise ImportError
    assert gpu.is_available() is False
    with pytest.raises(ImportError, match=r"pip install 'lrc-kernels\[gpu\]'"):
        gpu.require()
    with pytest.raises(ImportError, match="backend='cpu'"):
        gpu.window_hist_table(np.zeros((1, 1, 1), np.uint8), [0, 1], 1, [1], [0], 1, True)


@pytest.mark.skipif(gpu.is_available(), reason="a CUDA device is present")
def test_no_device_is_reported_with_the_fix():
    pytest.importorskip("cupy")
    with pytest.raises(RuntimeError, match="needs a CUDA device.*backend='cpu'"):
        gpu.require()
    with pytest.raises(RuntimeError, match="nvidia-smi"):
        gpu.stack_stats_table(
            np.zeros((1, 1, 1), np.uint8), [0, 1], 1, "lru", None, False, True, [0], 1
        )
    with pytest.raises(RuntimeError, match="needs a CUDA device"):
        gpu.validate_ids(np.zeros((1, 1, 1), np.uint8), None, 1)


def test_geometry():
    assert _plan.geometry(1, 100) == (1, 1)
    assert _plan.geometry(1000, 100) == (8, 128)
    assert _plan.geometry(1000, 100, block=256) == (4, 256)
    # scratch budget caps the threads; items then go through the grid-stride loop
    assert _plan.geometry(1000, 100, budget=100 * 300) == (3, 128)
    assert _plan.geometry(1000, 100, budget=1) == (1, 1)
    grid, block = _plan.geometry(10**7, 4 * (5 * 64 + 1))
    assert grid * block * 4 * (5 * 64 + 1) <= _plan.DEFAULT_SCRATCH_BUDGET + block * 4 * 321
    with pytest.raises(ValueError, match="n_items >= 1"):
        _plan.geometry(0, 8)


X = np.array([[[0, 1]], [[1, 2]], [[2, 0]]], np.uint8)
OFF = np.array([0, 3], np.int64)
G = np.zeros(1, np.int64)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"ms": []}, "non-empty list of integers >= 1"),
        ({"ms": [0]}, "integers >= 1"),
        ({"experts": X.astype(np.float32)}, "integer dtype"),
        ({"experts": X[:, 0]}, r"shape \(tokens, layers, k\)"),
        ({"experts": X + 3}, r"token row 0, .*expert id \d is >= num_experts = 3"),
        ({"experts": X.astype(np.int64) - 1}, r"expert id -1 is negative"),
        ({"offsets": [0, 2]}, "sequence boundaries from 0 to 3"),
        ({"offsets": [0, 2, 1, 3]}, "non-decreasing"),
        ({"group": [0, 0]}, "group has 2 entries but there are 1 sequences"),
        ({"group": [1]}, r"group values must lie in \[0, 1\)"),
    ],
)
def test_window_hist_table_argument_errors(kwargs, match):
    args = {"experts": X, "offsets": OFF, "ms": [2], "group": G}
    args.update(kwargs)
    with pytest.raises((TypeError, ValueError), match=match):
        _plan.window_hist_table(
            args["experts"],
            args["offsets"],
            3,
            args["ms"],
            args["group"],
            1,
            True,
            xp=np,
            launch=_no_launch,
        )


@pytest.mark.parametrize(
    ("policy", "m", "match"),
    [
        ("fifo", None, "unknown policy 'fifo'"),
        ("sch", None, "needs an integer future window"),
        ("sch", 2.5, "needs an integer future window"),
    ],
)
def test_stack_stats_table_argument_errors(policy, m, match):
    with pytest.raises(ValueError, match=match):
        _plan.stack_stats_table(X, OFF, 3, policy, m, False, True, G, 1, xp=np, launch=_no_launch)


def test_stack_stats_table_rejects_int32_overflow():
    # 2**28 tokens x 8 accesses: positions do not fit int32; refused before any scan or launch
    off = np.array([0, 2**28], np.int64)
    x = np.broadcast_to(np.arange(8, dtype=np.uint8), (2**28, 1, 8))  # a view, no memory
    with pytest.raises(ValueError, match=r"trace.split\(4096\)"):
        _plan.stack_stats_table(x, off, 8, "lru", None, False, True, G, 1, xp=np, launch=_no_launch)


def test_empty_inputs_launch_nothing():
    x = np.zeros((0, 2, 3), np.uint8)
    off = np.array([0, 0, 0], np.int64)
    g = np.array([0, 1], np.int64)
    t = _plan.window_hist_table(x, off, 5, [1, 3], g, 2, True, xp=np, launch=_no_launch)
    assert t.shape == (2, 2, 5, 6) and not t.any()
    t = _plan.stack_stats_table(x, off, 5, "sch", 4, True, True, g, 2, xp=np, launch=_no_launch)
    assert t.shape == (2, 1, 11) and not t.any()
