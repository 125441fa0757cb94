"""The code stays ruff-clean (lint and format), as STYLE asks; skipped without ruff."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUFF = shutil.which("ruff")
PY_DIRS = ["lrc_kernels", "tests", "bench", "docs", "traces"]


@pytest.mark.skipif(RUFF is None, reason="ruff is not installed")
def test_ruff_check():
    r = subprocess.run([RUFF, "check", *PY_DIRS], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.skipif(RUFF is None, reason="ruff is not installed")
def test_ruff_format():
    files = [str(p.relative_to(ROOT)) for d in PY_DIRS for p in (ROOT / d).rglob("*.py")]
    r = subprocess.run(
        [RUFF, "format", "--check", *files], cwd=ROOT, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout + r.stderr
