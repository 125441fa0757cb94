"""One place that owns every Numba option, so no kernel hard-codes them.

- ``cache=True``: compiled kernels are stored next to the sources (or in
  ``NUMBA_CACHE_DIR``), so only the first run on a machine pays the compile time.
- ``fastmath`` stays off: every kernel works on integer counts, and results must be
  bit-identical to the reference.
- ``error_model="numpy"``: no Python exception machinery inside kernels.
"""

from __future__ import annotations

import os
import sys
import threading

import numba
from numba.core import event as _event

__all__ = ["jit", "prange", "num_threads", "compile_notice"]

prange = numba.prange

_NOTICE_ENV = "LRC_COMPILE_NOTICE"


def _cache_dir(dispatcher) -> str | None:
    try:  # numba's private cache locator; only used for the message
        return str(dispatcher._cache._cache_path)
    except Exception:
        return None


class _CompileNotice(_event.Listener):
    """Say once per process, on stderr, that kernels are being compiled.

    Numba fires ``numba:compile`` only for a real compilation (a cache miss), never when a
    kernel is loaded from its on-disk cache, so a warm process prints nothing.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.shown = False

    def on_start(self, event) -> None:
        if self.shown or os.environ.get(_NOTICE_ENV, "1") == "0":
            return
        disp = (event.data or {}).get("dispatcher")
        mod = getattr(getattr(disp, "py_func", None), "__module__", "") or ""
        if not mod.startswith("lrc_kernels"):
            return
        with self.lock:
            if self.shown:
                return
            self.shown = True
        where = _cache_dir(disp)
        sys.stderr.write(
            "lrc_kernels: compiling CPU kernels for first use; this happens once per machine "
            "(they are cached on disk"
            + (f" in {where}" if where else "")
            + f") and can take 5-30 s. Set {_NOTICE_ENV}=0 to hide this note.\n"
        )
        sys.stderr.flush()

    def on_end(self, event) -> None:
        pass


compile_notice = _CompileNotice()
_event.register("numba:compile", compile_notice)


def jit(*, parallel: bool = False, inline: str = "never"):
    """Decorator factory for every CPU kernel of the package."""
    return numba.njit(
        cache=True,
        nogil=True,
        parallel=parallel,
        fastmath=False,
        error_model="numpy",
        boundscheck=False,
        inline=inline,
    )


def num_threads() -> int:
    """Threads the parallel kernels use now (``numba.get_num_threads()``)."""
    return int(numba.get_num_threads())
