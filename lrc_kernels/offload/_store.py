"""A real two-tier expert store in torch: every expert's bytes in a slow tier, a fast tier
of a fixed number of slots, and byte copies between them.

The slow tier is a memory-mapped file on disk (``"mmap"``), plain host memory
(``"host"``) or pinned host memory (``"pinned"``, needs CUDA); the fast tier is host RAM
(``"cpu"``) or a CUDA device. torch is imported when a store is made, never at package
import.
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

import numpy as np

__all__ = ["TwoTierStore", "SLOW_TIERS", "measure_copy_bandwidth"]

SLOW_TIERS = ("mmap", "host", "pinned")


def _torch() -> Any:
    try:
        import torch
    except ImportError as e:  # pragma: no cover - torch is a test dependency
        raise ImportError("replay needs torch: pip install torch") from e
    return torch


def _fill(rows: np.ndarray) -> None:
    """Row r holds the int32 r repeated (then zero bytes): every expert is recognisable."""
    n, eb = rows.shape
    w = eb // 4
    if w:
        rows[:, : 4 * w].view(np.int32)[:] = np.arange(n, dtype=np.int32)[:, None]


class TwoTierStore:
    """``rows`` experts of ``expert_bytes`` bytes each in the slow tier; ``slots`` fast
    slots plus one staging slot (index -1) for experts used once and not kept."""

    def __init__(
        self,
        rows: int,
        expert_bytes: int,
        slots: int,
        *,
        slow: str = "mmap",
        fast: str = "auto",
        directory: str | None = None,
    ) -> None:
        torch = _torch()
        self.torch = torch
        self.path = None
        self.slow = None
        # one thread per copy, as a runtime's memcpy: torch's intra-op pool would split a
        # copy over threads whose barrier waits dominate on a busy machine (restored by
        # close())
        self._threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            self._make(rows, expert_bytes, slots, slow, fast, directory)
        except BaseException:
            self.close()
            raise

    def _make(
        self, rows: int, expert_bytes: int, slots: int, slow: str, fast: str, directory: Any
    ) -> None:
        torch = self.torch
        self.path: str | None = None
        self._mm = None
        self.expert_bytes = int(expert_bytes)
        if fast == "auto":
            fast = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(fast)
        self.cuda = self.device.type == "cuda"
        shape = (int(rows), self.expert_bytes)
        if slow == "mmap":
            fd, self.path = tempfile.mkstemp(suffix=".experts", dir=directory)
            os.close(fd)
            mm = np.memmap(self.path, dtype=np.uint8, mode="w+", shape=shape)
            _fill(mm)
            mm.flush()
            self._mm = mm
            self.slow = torch.from_numpy(mm)
        elif slow in ("host", "pinned"):
            if slow == "pinned" and not torch.cuda.is_available():
                raise ValueError("slow='pinned' needs CUDA (pinned memory); use 'host' or 'mmap'")
            self.slow = torch.empty(shape, dtype=torch.uint8, pin_memory=slow == "pinned")
            _fill(self.slow.numpy())
        else:
            raise ValueError(f"unknown slow tier {slow!r}; choose one of {', '.join(SLOW_TIERS)}")
        self.fast = torch.zeros(
            (int(slots) + 1, self.expert_bytes), dtype=torch.uint8, device=self.device
        )
        self.fast.fill_(1)  # touch every page now: no first-touch faults while timing
        self.fast.zero_()
        self.non_blocking = self.cuda and slow == "pinned"

    def copy(self, row: int, slot: int) -> None:
        """Copy expert ``row``'s bytes into fast ``slot`` (-1: the staging slot)."""
        self.fast[slot].copy_(self.slow[row], non_blocking=self.non_blocking)

    def holds(self, row: int, slot: int) -> bool:
        """Whether fast ``slot`` holds expert ``row``'s bytes (a check, not timed)."""
        return bool(self.torch.equal(self.fast[slot].cpu(), self.slow[row]))

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize(self.device)

    def close(self) -> None:
        if self._threads is not None:
            self.torch.set_num_threads(self._threads)
            self._threads = None
        self.slow = None
        self._mm = None
        if self.path is not None:
            try:
                os.unlink(self.path)
            except OSError:  # pragma: no cover
                pass
            self.path = None


def measure_copy_bandwidth(
    expert_bytes: int,
    *,
    copies: int = 256,
    rows: int = 64,
    slots: int = 8,
    slow: str = "mmap",
    fast: str = "auto",
    seed: int = 0,
    clock: str = "wall",
) -> float:
    """Measured slow-to-fast bandwidth in GB/s (1e9 B/s) at expert granularity.

    Copies ``copies`` randomly chosen experts of ``expert_bytes`` bytes, one copy call each
    (as the replay does), after one untimed pass that warms the page cache and the
    allocator; the per-call overhead is part of the figure. ``clock="cpu"`` times this
    thread's CPU time instead of the wall clock (host fast tier only: it leaves out time
    lost to other processes on a shared machine).
    """
    if clock not in ("wall", "cpu"):
        raise ValueError(f"unknown clock {clock!r}; choose wall or cpu")
    timer = time.perf_counter if clock == "wall" else time.thread_time
    store = TwoTierStore(rows, expert_bytes, slots, slow=slow, fast=fast)
    try:
        rng = np.random.default_rng(seed)
        order = rng.integers(0, rows, copies).tolist()
        for r in range(rows):
            store.copy(r, r % slots)
        store.sync()
        t0 = timer()
        for i, r in enumerate(order):
            store.copy(r, i % slots)
        store.sync()
        dt = timer() - t0
    finally:
        store.close()
    return copies * int(expert_bytes) / dt / 1e9
