"""First use of the CPU kernels: one note while they compile, none once they are cached.

Each case runs a fresh Python process with ``NUMBA_CACHE_DIR`` pointing at an empty folder,
then a second process on the same folder: the second must load every kernel it uses from
the on-disk cache (no compilation) and print nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTE = "lrc_kernels: compiling CPU kernels for first use"

# srp at model level; the dispatcher stats of the kernels it used are printed at the end
CODE = """
import numpy as np, lrc_kernels as lk
from lrc_kernels.cpu import _srp
x = np.random.default_rng(0).integers(0, 8, (64, 2, 1))
r = lk.srp(x, 4, num_experts=8)
s = _srp._hist_chunks.stats
print(r.value, sum(s.cache_hits.values()), sum(s.cache_misses.values()))
"""


def _run(cache: Path, notice: str = "1") -> subprocess.CompletedProcess:
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache), LRC_COMPILE_NOTICE=notice)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-c", CODE], env=env, capture_output=True, text=True, timeout=600
    )


def test_compile_note_once_then_warm_from_disk(tmp_path):
    cold = _run(tmp_path)
    assert cold.returncode == 0, cold.stderr
    assert cold.stderr.count(NOTE) == 1, cold.stderr  # once per process, not per kernel
    assert "once per machine" in cold.stderr and str(tmp_path) in cold.stderr
    value, hits, misses = cold.stdout.split()
    assert int(misses) == 1 and int(hits) == 0

    warm = _run(tmp_path)
    assert warm.returncode == 0, warm.stderr
    assert NOTE not in warm.stderr
    value2, hits2, misses2 = warm.stdout.split()
    assert value2 == value  # same result from the cached machine code
    assert int(hits2) == 1 and int(misses2) == 0  # loaded from disk, not compiled


def test_compile_note_can_be_hidden(tmp_path):
    quiet = _run(tmp_path, notice="0")
    assert quiet.returncode == 0, quiet.stderr
    assert NOTE not in quiet.stderr
