"""Build and drive the CUDA sources of ``lrc_kernels/gpu`` on the CPU.

``build()`` compiles every ``.cu`` file with g++ as C++ (``-include shim.h``), with
AddressSanitizer and UndefinedBehaviorSanitizer, into one shared library, cached by a hash
of the sources and flags (one build per machine and source version). ``ShimKernels.launch``
runs a :class:`lrc_kernels.gpu._plan.Launch`, the same object the CuPy wrapper launches,
by calling the kernel once per (block, thread) of its geometry.

An ASan-instrumented library only loads into a process that has the ASan runtime first in
its library list, so the kernels run in a child Python started by :func:`sanitizer_env`.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from lrc_kernels.gpu._plan import KERNEL_DIR, SOURCES, Launch

HERE = Path(__file__).resolve().parent
CXX = os.environ.get("CXX", "g++")
CXXFLAGS = (
    "-std=c++17",
    "-O1",
    "-g",
    "-fPIC",
    "-shared",
    "-fno-omit-frame-pointer",
    "-fsanitize=address,undefined",
    "-fno-sanitize-recover=all",
    "-Wall",
    "-Wextra",
    "-Werror",
)


def have_compiler() -> bool:
    return shutil.which(CXX) is not None


def _runtime(name: str) -> str:
    out = subprocess.run(
        [CXX, f"-print-file-name={name}"], capture_output=True, text=True, check=True
    ).stdout.strip()
    return out


def sanitizer_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a child process that can load the sanitized library."""
    env = dict(os.environ if base is None else base)
    env["LD_PRELOAD"] = _runtime("libasan.so")
    # Python's own allocations are not leaks worth reporting; every error is fatal.
    env["ASAN_OPTIONS"] = "detect_leaks=0:halt_on_error=1:abort_on_error=0"
    env["UBSAN_OPTIONS"] = "halt_on_error=1:print_stacktrace=1"
    return env


def build(
    cache_dir: str | os.PathLike[str] | None = None, extra_sources: dict | None = None
) -> Path:
    """Compile the kernels (and optional extra ``{name: text}`` sources) into a cached .so."""
    srcs = [KERNEL_DIR / s for s in SOURCES]
    h = hashlib.sha256()
    for p in [HERE / "shim.h", HERE / "shim.cpp", KERNEL_DIR / "common.cuh", *srcs]:
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    for name, text in sorted((extra_sources or {}).items()):
        h.update(name.encode() + b"\0" + text.encode())
    h.update(" ".join((CXX, *CXXFLAGS)).encode())
    root = Path(cache_dir or os.environ.get("LRC_SHIM_CACHE") or tempfile.gettempdir())
    out_dir = root / "lrc_kernels_shim" / h.hexdigest()[:16]
    lib = out_dir / "libkernels.so"
    if lib.exists():
        return lib
    out_dir.mkdir(parents=True, exist_ok=True)
    extra_paths = []
    for name, text in (extra_sources or {}).items():
        p = out_dir / name
        p.write_text(text)
        extra_paths.append(str(p))
    tmp = out_dir / f"libkernels.{os.getpid()}.so"
    cmd = [
        CXX,
        *CXXFLAGS,
        f"-I{KERNEL_DIR}",
        f"-I{HERE}",
        "-x",
        "c++",
        "-include",
        str(HERE / "shim.h"),
        *map(str, srcs),
        *extra_paths,
        "-x",
        "none",
        str(HERE / "shim.cpp"),
        "-o",
        str(tmp),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"host build failed:\n{' '.join(cmd)}\n{res.stderr}")
    os.replace(tmp, lib)  # atomic: concurrent builders never see a partial library
    return lib


def _c_arg(a: object) -> object:
    if isinstance(a, np.ndarray):
        if not a.flags.c_contiguous:
            raise ValueError("kernel array arguments must be C-contiguous")
        return ctypes.c_void_p(a.ctypes.data)
    if isinstance(a, np.int32):
        return ctypes.c_int32(int(a))
    if isinstance(a, np.int64):
        return ctypes.c_int64(int(a))
    raise TypeError(f"unsupported kernel argument type {type(a).__name__}")


class ShimKernels:
    """The host-built kernels; ``launch`` replays a :class:`Launch` thread by thread."""

    def __init__(self, path: str | os.PathLike[str]):
        self.lib = ctypes.CDLL(str(path))
        self.lib.lrc_shim_set.restype = None
        self.lib.lrc_shim_set.argtypes = [ctypes.c_uint] * 4
        self.launches: list[tuple[str, int, int]] = []

    def launch(self, spec: Launch) -> None:
        fn = getattr(self.lib, spec.name)
        fn.restype = None
        args = [_c_arg(a) for a in spec.args]
        self.launches.append((spec.name, spec.grid, spec.block))
        for b in range(spec.grid):
            for t in range(spec.block):
                self.lib.lrc_shim_set(spec.grid, spec.block, b, t)
                fn(*args)
