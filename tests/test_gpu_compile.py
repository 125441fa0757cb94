"""Compile-only checks of every CUDA source, for sm_80 and sm_90, warnings as errors.

No GPU or driver is needed: NVRTC (the compiler CuPy uses at run time, reached here through
a small ctypes binding of the ``nvidia-cuda-nvrtc`` wheel, so CuPy need not be installed)
and nvcc both compile to a cubin offline. NVRTC gets the exact text
and options the runtime loader uses (``_plan.read_source``, ``_plan.NVRTC_OPTIONS``); nvcc
compiles the files as they are on disk. Each check is shown to reject a planted warning.
"""

from __future__ import annotations

import shutil
import subprocess

import _nvrtc
import pytest

from lrc_kernels.gpu import _plan

ARCHS = ("sm_80", "sm_90")
PLANTED = 'extern "C" __global__ void planted(int* a) { int unused; a[threadIdx.x] = 1; }\n'

try:
    _nvrtc.load()
    _NVRTC_MISSING = None
except OSError as exc:  # the compile checks skip cleanly where NVRTC is absent
    _NVRTC_MISSING = str(exc)
needs_nvrtc = pytest.mark.skipif(_NVRTC_MISSING is not None, reason=f"{_NVRTC_MISSING}")
NVCC = shutil.which("nvcc")


def _nvrtc_compile(src: str, name: str, arch: str) -> bytes:
    opts = [*_plan.NVRTC_OPTIONS, f"-arch={arch}", "-Werror=all-warnings"]
    try:
        return _nvrtc.compile_cubin(src, name, opts)
    except _nvrtc.NVRTCError as exc:
        raise AssertionError(f"{name} ({arch}):\n{exc}") from exc


@needs_nvrtc
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("source", _plan.SOURCES)
def test_nvrtc_compiles(source, arch):
    cubin = _nvrtc_compile(_plan.read_source(source), source, arch)
    assert cubin[:4] == b"\x7fELF"


@needs_nvrtc
@pytest.mark.parametrize("arch", ARCHS)
def test_nvrtc_rejects_warnings(arch):
    with pytest.raises(AssertionError, match="declared but never referenced"):
        _nvrtc_compile(PLANTED, "planted.cu", arch)


def _nvcc(path, arch, tmp_path):
    out = tmp_path / f"{path.stem}.{arch}.cubin"
    return subprocess.run(
        [
            NVCC,
            "-cubin",
            f"-arch={arch}",
            "-std=c++17",
            "-Werror",
            "all-warnings",
            f"-I{_plan.KERNEL_DIR}",
            "-o",
            str(out),
            str(path),
        ],
        capture_output=True,
        text=True,
    ), out


@pytest.mark.skipif(NVCC is None, reason="nvcc not on PATH")
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("source", _plan.SOURCES)
def test_nvcc_compiles(source, arch, tmp_path):
    res, out = _nvcc(_plan.KERNEL_DIR / source, arch, tmp_path)
    assert res.returncode == 0, res.stderr
    assert out.read_bytes()[:4] == b"\x7fELF"


@pytest.mark.skipif(NVCC is None, reason="nvcc not on PATH")
def test_nvcc_rejects_warnings(tmp_path):
    p = tmp_path / "planted.cu"
    p.write_text(PLANTED)
    res, _ = _nvcc(p, "sm_90", tmp_path)
    assert res.returncode != 0 and "never referenced" in res.stderr


def test_runtime_source_is_self_contained():
    for source in _plan.SOURCES:
        text = _plan.read_source(source)
        assert "#include" not in text
        assert "typedef long long i64;" in text
        for dtype in ("u8", "u16", "u32"):
            stem = {
                "srp.cu": "srp_hist",
                "stack.cu": "stack_stats",
                "validate.cu": "first_duplicate",
            }[source]
            assert f"ENTRY(lrc_{stem}_{dtype}," in text
