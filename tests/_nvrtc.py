"""A minimal ctypes binding of NVRTC, for compile-only checks of the CUDA sources.

The compile checks need only the NVRTC shared library (the ``nvidia-cuda-nvrtc`` wheel,
about 140 MB), not CuPy: this keeps CuPy and the other CUDA runtime packages out of the
test environment of CPU-only machines. The library is looked for in the wheel's folder,
then on the loader's path.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import importlib.util
import os

__all__ = ["NVRTCError", "compile_cubin", "find_library", "load"]


class NVRTCError(RuntimeError):
    """NVRTC refused a program; the message holds the compile log."""


def find_library() -> str | None:
    """Path of ``libnvrtc.so``: the nvidia-cuda-nvrtc wheel first, then the loader path."""
    spec = importlib.util.find_spec("nvidia")
    for root in list(spec.submodule_search_locations or []) if spec else []:
        hits = sorted(glob.glob(os.path.join(root, "*", "lib", "libnvrtc.so*")))
        hits = [h for h in hits if "builtins" not in os.path.basename(h)]
        if hits:
            return hits[-1]
    return ctypes.util.find_library("nvrtc")


_LIB: ctypes.CDLL | None = None


def load() -> ctypes.CDLL:
    """Load NVRTC once; ``OSError`` when it is not installed."""
    global _LIB
    if _LIB is None:
        path = find_library()
        if path is None:
            raise OSError("libnvrtc not found (pip install nvidia-cuda-nvrtc)")
        lib = ctypes.CDLL(path)
        lib.nvrtcGetErrorString.restype = ctypes.c_char_p
        _LIB = lib
    return _LIB


def _check(lib: ctypes.CDLL, status: int, what: str) -> None:
    if status != 0:
        raise NVRTCError(f"{what}: {lib.nvrtcGetErrorString(status).decode()}")


def compile_cubin(src: str, name: str, options: list[str]) -> bytes:
    """Compile ``src`` to a cubin; :class:`NVRTCError` with the log when NVRTC refuses it."""
    lib = load()
    prog = ctypes.c_void_p()
    _check(
        lib,
        lib.nvrtcCreateProgram(ctypes.byref(prog), src.encode(), name.encode(), 0, None, None),
        "nvrtcCreateProgram",
    )
    try:
        opts = (ctypes.c_char_p * len(options))(*[o.encode() for o in options])
        status = lib.nvrtcCompileProgram(prog, len(options), opts)
        if status != 0:
            size = ctypes.c_size_t()
            _check(lib, lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size)), "log size")
            log = ctypes.create_string_buffer(size.value)
            _check(lib, lib.nvrtcGetProgramLog(prog, log), "log")
            raise NVRTCError(f"{name}: {log.value.decode(errors='replace')}")
        size = ctypes.c_size_t()
        _check(lib, lib.nvrtcGetCUBINSize(prog, ctypes.byref(size)), "nvrtcGetCUBINSize")
        buf = ctypes.create_string_buffer(size.value)
        _check(lib, lib.nvrtcGetCUBIN(prog, buf), "nvrtcGetCUBIN")
        return buf.raw
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))
