"""Work plans shared by the parallel CPU kernels.

Sequences are grouped (a group is one output row: a domain, a sequence length class, a
single sequence for bootstrap...). Each group's sequences are cut into *chunks* of
roughly equal token counts; a chunk is the unit one thread owns, writing its own output
row, so there is no racy ``+=`` into shared memory. Chunk rows are then summed per group
(chunks are sorted by group, so this is a segmented sum).
"""

from __future__ import annotations

import numpy as np

from ._jit import num_threads

__all__ = ["Plan", "make_plan"]

# Upper bound on the memory of per-chunk outputs before chunks are merged per group.
_CHUNK_OUTPUT_BUDGET = 256 << 20


class Plan:
    __slots__ = ("seq_order", "chunk_ptr", "chunk_group", "n_groups")

    def __init__(self, seq_order, chunk_ptr, chunk_group, n_groups):
        self.seq_order = seq_order  # int64 (S',): sequences sorted by group
        self.chunk_ptr = chunk_ptr  # int64 (P+1,): chunk c = seq_order[ptr[c]:ptr[c+1]]
        self.chunk_group = chunk_group  # int64 (P,), non-decreasing
        self.n_groups = n_groups

    @property
    def n_chunks(self) -> int:
        return int(self.chunk_group.shape[0])

    def reduce(self, out: np.ndarray) -> np.ndarray:
        """Sum per-chunk rows ``out[P, ...]`` into per-group rows ``[G, ...]``."""
        G = self.n_groups
        P = self.n_chunks
        if P == G and np.array_equal(self.chunk_group, np.arange(G)):
            return out
        res = np.zeros((G,) + out.shape[1:], dtype=out.dtype)
        if P == 0:
            return res
        starts = np.flatnonzero(np.r_[True, np.diff(self.chunk_group) != 0])
        sums = np.add.reduceat(out, starts, axis=0)
        res[self.chunk_group[starts]] = sums
        return res


def make_plan(
    lengths: np.ndarray, group: np.ndarray, n_groups: int, row_bytes: int, min_tokens: int = 1
) -> Plan:
    """Cut each group's sequences into chunks for ``prange``.

    ``row_bytes`` is the size of one chunk's output row; the number of chunks is bounded so
    that per-chunk outputs stay within a fixed memory budget (but never below one chunk per
    non-empty group). Empty sequences (and those shorter than ``min_tokens``) are dropped:
    they contribute nothing to any table.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    group = np.asarray(group, dtype=np.int64)
    keep = np.flatnonzero(lengths >= max(min_tokens, 1))
    order = keep[np.argsort(group[keep], kind="stable")]
    if order.size == 0:
        return Plan(order, np.zeros(1, np.int64), np.zeros(0, np.int64), n_groups)
    g_sorted = group[order]
    total = int(lengths[order].sum())
    target_chunks = 4 * num_threads()
    max_chunks = max(int(_CHUNK_OUTPUT_BUDGET // max(row_bytes, 1)), 1)
    n_nonempty = int(np.unique(g_sorted).size)
    want = max(min(target_chunks, max_chunks), n_nonempty)
    tokens_per_chunk = max(total // want, 1)

    ptr = [0]
    cg = []
    acc = 0
    for i in range(order.size):
        acc += int(lengths[order[i]])
        last_of_group = i + 1 == order.size or g_sorted[i + 1] != g_sorted[i]
        if last_of_group or acc >= tokens_per_chunk:
            ptr.append(i + 1)
            cg.append(int(g_sorted[i]))
            acc = 0
    return Plan(order, np.asarray(ptr, np.int64), np.asarray(cg, np.int64), n_groups)
