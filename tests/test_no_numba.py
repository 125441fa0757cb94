"""The reference backend runs where Numba is not installed.

A subprocess makes ``import numba`` fail (``sys.modules["numba"] = None`` before anything
else is imported) and then computes the SPEC worked examples with ``backend="reference"``:
SRP, SCH and hit curves, with a bootstrap, by domain, and id validation (whose duplicate
scan falls back to NumPy). The values must be SPEC's exact fractions.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]

HIDE = "import sys; sys.modules['numba'] = None\n"

SCRIPT = textwrap.dedent(
    """
    from fractions import Fraction as F

    import numpy as np

    import lrc_kernels as lk

    try:
        import numba  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("numba is importable: the test does not hide it")

    EX1 = np.array([[0, 1], [0, 1], [1, 2], [0, 1], [2, 3], [2, 3], [0, 2], [0, 1]])
    L0 = [[0, 1], [0, 1], [0, 2], [1, 2], [2, 3], [2, 3], [0, 3], [2, 3]]
    L1 = [[3, 2], [3, 2], [3, 1], [1, 0], [1, 0], [0, 1], [0, 2], [2, 0]]
    EX2 = np.stack([np.array(L0), np.array(L1)], axis=1)
    R = "reference"

    def exact(values, fractions):
        got = np.asarray(values, dtype=np.float64).ravel().tolist()
        want = [float(f) for f in fractions]
        assert got == want, (got, want)

    lay = lk.srp(EX1, 2, level="layer", num_experts=4, backend=R)
    exact(lay.value, [F(14, 17)])
    assert lay.threshold.tolist() == [1]
    exact(lay.ratio, [F(40, 28)])
    ex = lk.srp(EX1, 4, level="expert", num_experts=4, backend=R)
    exact(ex.value, [F(9, 13), F(18, 23), F(11, 14), F(12, 19)])
    both = lk.srp(EX2, [4, 2], num_experts=4, backend=R)
    exact(both.value, [F(7, 9), F(7, 8)])
    s = lk.sch(EX2, 4, num_experts=4, backend=R)
    exact(s.rates[0], [F(7, 16), F(12, 16), F(15, 16), F(1)])
    exact(s.rates[1], [F(6, 16), F(13, 16), F(15, 16), F(1)])
    for policy, sixteenths in [("lru", [4, 10, 13, 16]), ("belady", [4, 11, 14, 16])]:
        c = lk.hit_curve(EX1, policy, num_experts=4, backend=R)
        exact(c.rates, [F(v, 16) for v in sixteenths])
    mod = lk.hit_curve(EX2, "sch", 4, level="model", num_experts=4, backend=R)
    exact(mod.rates, [F(v, 32) for v in [6, 14, 21, 26, 28, 30, 31, 32]])

    # six copies of one sequence: every resample is the sample, a zero-width interval
    tr = lk.Trace(np.concatenate([EX2] * 6), np.arange(7) * 8, num_experts=4,
                  domains=["a", "b"] * 3)
    d = lk.srp(tr, 4, level="layer", by_domain=True, backend=R)
    exact(d.value, [F(17, 22), F(18, 23)] * 2)
    np.testing.assert_array_equal(d.activation_ratio.sum(axis=-1), 2.0)
    b = lk.srp(tr, 4, level="layer", bootstrap=20, backend=R)
    exact(b.value, [F(17, 22), F(18, 23)])
    np.testing.assert_array_equal(b.ci[0], b.value)
    np.testing.assert_array_equal(b.ci[1], b.value)

    # a trace file is written, read and streamed without Numba
    lk.write_trace("t.lrc.arrow", tr)
    f = lk.srp("t.lrc.arrow", 4, level="layer", by_domain=True, backend=R)
    np.testing.assert_array_equal(f.value, d.value)
    np.testing.assert_array_equal(lk.read_trace("t.lrc.arrow").experts, tr.experts)

    # id validation without the Numba duplicate scan
    try:
        lk.srp(np.array([[0, 0], [1, 2]]), 1, num_experts=3, backend=R)
    except ValueError as exc:
        assert "appears twice" in str(exc), exc
    else:
        raise SystemExit("a repeated id was accepted")

    import sys
    assert "numba" not in [m for m, v in sys.modules.items() if v is not None], "numba loaded"
    print("ok")
    """
)


def test_reference_backend_without_numba(tmp_path):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    res = subprocess.run(
        [sys.executable, "-c", HIDE + SCRIPT],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.strip() == "ok"


def test_cpu_backend_without_numba_says_so(tmp_path):
    """Asking for the CPU backend without Numba fails with an ImportError naming numba."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    code = HIDE + (
        "import numpy as np, lrc_kernels as lk\n"
        "try:\n"
        "    lk.srp(np.array([[0, 1], [1, 2]]), 1, num_experts=3, backend='cpu')\n"
        "except ImportError as exc:\n"
        "    print('numba' in str(exc))\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "True"


@given(
    N=st.integers(0, 12),
    L=st.integers(1, 3),
    k=st.integers(1, 5),
    E=st.integers(5, 300),
    seed=st.integers(0, 2**32 - 1),
    dups=st.integers(0, 3),
)
def test_numpy_duplicate_scan_equals_numba(N, L, k, E, seed, dups):
    """The NumPy fallback of id validation finds the same first repeated slot."""
    from lrc_kernels._validate import first_duplicate_numpy
    from lrc_kernels.cpu._validate import first_duplicate

    rng = np.random.default_rng(seed)
    x = (
        np.stack([rng.permutation(E)[:k] for _ in range(N * L)]).reshape(N, L, k)
        if N
        else (np.zeros((0, L, k), np.int64))
    )
    for _ in range(dups if N and k > 1 else 0):
        r, l = rng.integers(0, N), rng.integers(0, L)
        i, j = rng.choice(k, size=2, replace=False)
        x[r, l, j] = x[r, l, i]
    y = np.ascontiguousarray(x.astype(np.uint16))
    assert first_duplicate_numpy(y, E) == first_duplicate(y, E)
