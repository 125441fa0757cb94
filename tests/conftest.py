"""Shared test configuration: hypothesis profiles and the list of backends to check."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# "quick" for CI and everyday runs; "thorough" for a long soak:
#   LRC_HYPOTHESIS_PROFILE=thorough pytest
settings.register_profile(
    "quick",
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
)
settings.register_profile(
    "thorough",
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("LRC_HYPOTHESIS_PROFILE", "quick"))

SHARED = Path(__file__).resolve().parents[2] / "shared"
FLAME = SHARED / "data" / "flame-moe-290m" / "routing-2048tok.npz"


def gpu_available() -> bool:
    try:
        from lrc_kernels import gpu
    except ImportError:
        return False
    try:
        return bool(gpu.is_available())
    except Exception:
        return False


def backends_under_test() -> list[str]:
    """Every backend that can run here: the reference, the CPU kernels, the GPU if present."""
    out = ["reference", "cpu"]
    if gpu_available():
        out.append("gpu")
    return out


@pytest.fixture(scope="session")
def flame_trace():
    """The real FLAME-MoE-290M trace from ../shared (skipped when absent), as 4 x 512 tokens."""
    if not FLAME.exists():
        pytest.skip(f"real trace not present at {FLAME}")
    import numpy as np

    import lrc_kernels as lk

    d = np.load(FLAME)
    x = d["indices"]  # (2048, 8, 6) int16
    return lk.Trace(x, num_experts=64, meta={"model": "FLAME-MoE-290M"}).split(512)
