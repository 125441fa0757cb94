"""Hypothesis strategies for routing traces, shared by every property test.

They cover the edges that matter: one token, empty and ragged sequences, k = E, E = 1,
m = 1, m > T, E up to 300, uint8 / uint16 / int32 / int64 ids, and non-contiguous input.
Ids come from a seeded numpy generator (fast) with tunable locality, so stack depths and
window counts are far from uniform noise.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

import lrc_kernels as lk

ID_DTYPES = (np.uint8, np.uint16, np.int32, np.int64)


def make_ids(rng, n_tokens, n_layers, E, k, stay):
    """(n_tokens, L, k) ids, distinct within a token; each token keeps each expert of the
    previous token with probability ``stay``."""
    x = np.empty((n_tokens, n_layers, k), np.int64)
    for l in range(n_layers):
        prev = None
        for t in range(n_tokens):
            if prev is None or rng.random() < 0.1:
                row = rng.choice(E, size=k, replace=False)
            else:
                keep = [e for e in prev if rng.random() < stay]
                rest = np.setdiff1d(np.arange(E), keep)
                new = rng.choice(rest, size=k - len(keep), replace=False)
                row = np.array(keep + list(new), np.int64)
                rng.shuffle(row)
            x[t, l] = row
            prev = list(row)
    return x


@st.composite
def traces(
    draw,
    max_sequences: int = 4,
    max_len: int = 24,
    max_layers: int = 3,
    max_experts: int = 300,
    max_k: int = 8,
    domains: bool = False,
):
    """A validated :class:`lrc_kernels.Trace` (ragged, possibly with empty sequences)."""
    E = draw(st.one_of(st.integers(1, 8), st.integers(1, max_experts)))
    k = draw(st.integers(1, min(max_k, E)))
    L = draw(st.integers(1, max_layers))
    S = draw(st.integers(1, max_sequences))
    lengths = draw(st.lists(st.integers(0, max_len), min_size=S, max_size=S))
    stay = draw(st.sampled_from([0.0, 0.5, 0.9]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    ids = make_ids(rng, int(sum(lengths)), L, E, k, stay)
    dtype = draw(st.sampled_from([d for d in ID_DTYPES if np.iinfo(d).max >= E - 1]))
    ids = ids.astype(dtype)
    if draw(st.booleans()):  # non-contiguous input
        big = np.zeros((ids.shape[0], L, 2 * k), dtype)
        big[:, :, ::2] = ids
        ids = big[:, :, ::2]
    off = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    dom = None
    if domains:
        labels = draw(st.lists(st.sampled_from(["code", "math", "web"]), min_size=S, max_size=S))
        dom = labels
    return lk.Trace(ids, off, num_experts=E, domains=dom)


def segment_lengths(max_m: int = 300):
    """m values: small ones (m <= T is common) and large ones (m > T)."""
    return st.one_of(st.integers(1, 6), st.integers(1, max_m))
