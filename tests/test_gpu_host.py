"""The CUDA kernels executed on the CPU (no GPU needed): host shim + sanitizers.

The cases themselves are in ``tests/gpu_host/shim_cases.py``; they need the ASan runtime
preloaded, so they run here in a child pytest process. The other tests show that the
harness can fail: a planted out-of-bounds write is reported by AddressSanitizer at its
source line, and cooperation between threads (``__syncthreads``) does not compile.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "gpu_host"))

import hostshim  # noqa: E402

pytestmark = pytest.mark.skipif(not hostshim.have_compiler(), reason="needs g++")

ROOT = HERE.parent


def _child(args: list[str], timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=hostshim.sanitizer_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_host_shim_cases_pass_under_sanitizers():
    hostshim.build()
    res = _child(["-m", "pytest", "tests/gpu_host/shim_cases.py", "-q", "-p", "no:cacheprovider"])
    tail = (res.stdout + res.stderr)[-6000:]
    assert res.returncode == 0, tail
    passed = re.search(r"(\d+) passed", res.stdout)
    assert passed is not None, tail
    assert "failed" not in res.stdout and "error" not in res.stdout.lower(), tail
    # every case ran (none skipped), except the real-trace ones when the data is absent
    assert int(passed.group(1)) >= 23, tail


PLANTED = textwrap.dedent(
    """\
    #include "common.cuh"
    extern "C" __global__ void lrc_planted_off_by_one(i64* out, i64 n) {
        for (i64 w = lrc_thread_id(); w <= n; w += lrc_thread_count()) out[w] = w;
    }
    """
)


def test_sanitizer_reports_planted_out_of_bounds_write():
    lib = hostshim.build(extra_sources={"planted.cu": PLANTED})
    script = textwrap.dedent(
        f"""\
        import sys
        sys.path.insert(0, {str(HERE / "gpu_host")!r})
        import numpy as np, hostshim
        from lrc_kernels.gpu._plan import Launch
        k = hostshim.ShimKernels({str(lib)!r})
        out = np.zeros(37, np.int64)
        k.launch(Launch("planted.cu", "lrc_planted_off_by_one", 2, 8, (out, np.int64(37))))
        print("NOT DETECTED")
        """
    )
    res = _child(["-c", script], timeout=120)
    assert res.returncode != 0
    assert "NOT DETECTED" not in res.stdout
    assert "heap-buffer-overflow" in res.stderr
    assert "planted.cu:3" in res.stderr


def test_shim_rejects_thread_cooperation(tmp_path):
    src = tmp_path / "coop.cu"
    src.write_text(
        'extern "C" __global__ void coop(int* a) { a[threadIdx.x] = 1; __syncthreads(); }\n'
    )
    res = subprocess.run(
        [
            hostshim.CXX,
            "-std=c++17",
            "-fsyntax-only",
            "-x",
            "c++",
            "-include",
            str(HERE / "gpu_host" / "shim.h"),
            str(src),
        ],
        capture_output=True,
        text=True,
    )
    assert res.returncode != 0
    assert "__syncthreads" in res.stderr
