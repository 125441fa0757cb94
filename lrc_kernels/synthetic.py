"""Synthetic routing traces with tunable locality.

:func:`synthetic_trace` makes traces for tests, examples and benchmarks: a per-layer Markov
chain over expert sets in which each token keeps each of the previous token's experts with
probability ``stay`` and draws the rest from a skewed (Zipf-like) popularity. ``stay`` sets
the local routing consistency (high ``stay``: high SRP and SCH), ``skew`` the load imbalance.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from . import _validate as _v
from ._trace import Trace, _validate_num_experts, id_dtype_for
from .cpu._jit import jit, prange

__all__ = ["synthetic_trace"]

_MAX_REJECTIONS = 64
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@jit()
def _splitmix(x):
    # one step of SplitMix64; returns (new state, output)
    x = x + np.uint64(0x9E3779B97F4A7C15)
    z = x
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return x, z


@jit()
def _uniform(state):
    # (new state, float in [0, 1)) from the top 53 bits
    state, z = _splitmix(state)
    return state, np.float64(z >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@jit()
def _draw(state, cdf, prob, taken):
    """One expert not yet ``taken``, with probability proportional to ``prob``."""
    E = cdf.shape[0]
    for _ in range(_MAX_REJECTIONS):
        state, u = _uniform(state)
        e = np.searchsorted(cdf, u * cdf[E - 1], side="right")
        if e >= E:
            e = E - 1
        if not taken[e] and prob[e] > 0.0:
            return state, e
    # popular experts are all taken: sample the remaining mass exactly
    rest = 0.0
    for e in range(E):
        if not taken[e]:
            rest += prob[e]
    state, u = _uniform(state)
    target = u * rest
    last = -1
    acc = 0.0
    for e in range(E):
        if not taken[e]:
            last = e
            acc += prob[e]
            if acc > target:
                return state, e
    return state, last


@jit(parallel=True)
def _generate(out, offsets, dom, cdf, prob, stay, seed):
    S = offsets.shape[0] - 1
    L = out.shape[1]
    k = out.shape[2]
    E = cdf.shape[1]
    for s in prange(S):
        taken = np.zeros(E, dtype=np.bool_)
        cur = np.empty(k, dtype=np.int64)
        prev = np.empty(k, dtype=np.int64)
        for l in range(L):
            # an independent stream per (sequence, layer): results do not depend on threads
            state = np.uint64(seed) * _GOLDEN
            state, z = _splitmix(state ^ np.uint64(s))
            state, z = _splitmix(z ^ (np.uint64(l) * np.uint64(0xD1B54A32D192ED03)))
            state = z
            row = dom[s] * L + l
            c = cdf[row]
            p = prob[row]
            for t in range(offsets[s], offsets[s + 1]):
                n = 0
                if t > offsets[s]:
                    for j in range(k):
                        state, u = _uniform(state)
                        if u < stay:
                            cur[n] = prev[j]
                            taken[prev[j]] = True
                            n += 1
                while n < k:
                    state, e = _draw(state, c, p, taken)
                    cur[n] = e
                    taken[e] = True
                    n += 1
                # random router order (Fisher-Yates)
                for j in range(k - 1, 0, -1):
                    state, u = _uniform(state)
                    i = int(u * (j + 1))
                    if i > j:
                        i = j
                    tmp = cur[i]
                    cur[i] = cur[j]
                    cur[j] = tmp
                for j in range(k):
                    out[t, l, j] = cur[j]
                    taken[cur[j]] = False
                    prev[j] = cur[j]


def _domain_labels(domains: Any, S: int) -> tuple[list[str] | None, np.ndarray]:
    if domains is None:
        return None, np.zeros(S, dtype=np.int64)
    if isinstance(domains, (int, np.integer)) and not isinstance(domains, bool):
        if domains < 1:
            raise ValueError(f"domains must be >= 1 when given as a count, got {domains}")
        names = [f"domain{i}" for i in range(int(domains))]
    elif isinstance(domains, str):
        names = [domains]
    else:
        names = [str(d) for d in domains]
        if not names:
            raise ValueError("domains is empty; give at least one label, a count, or None")
        if len(set(names)) != len(names):
            raise ValueError(f"domain labels must be distinct, got {names}")
    D = len(names)
    codes = (np.arange(S, dtype=np.int64) * D) // max(S, 1)
    return names, codes


def synthetic_trace(
    num_sequences: int,
    seq_len: int | Sequence[int],
    num_layers: int,
    num_experts: int,
    top_k: int,
    *,
    stay: float = 0.5,
    skew: float = 1.0,
    seed: int = 0,
    domains: int | Sequence[str] | None = None,
) -> Trace:
    """Generate a routing trace with tunable locality.

    Each (sequence, layer) is an independent Markov chain over sets of ``top_k`` distinct
    experts. The first token draws its experts from the layer's popularity; every later
    token keeps each expert of the previous token independently with probability ``stay``
    and fills its remaining slots with fresh draws from the popularity (never repeating an
    expert within the token). The kept and drawn experts are then put in a random order,
    standing in for the router's score order.

    Parameters
    ----------
    num_sequences : int
        Number of sequences ``S`` (>= 0).
    seq_len : int or sequence of int
        Tokens per sequence: one length for all, or ``S`` lengths (ragged trace).
    num_layers : int
        MoE layers ``L`` (>= 1).
    num_experts : int
        Routed experts per layer ``E`` (>= 1).
    top_k : int
        Experts per token ``k``, ``1 <= k <= E``.
    stay : float, optional
        Probability in ``[0, 1]`` that a token keeps each expert of the previous token.
        0 gives independent tokens (low locality), 1 a constant expert set per sequence.
    skew : float, optional
        Zipf exponent (>= 0) of expert popularity: the expert of popularity rank ``r``
        (0-based) is drawn with weight ``(r + 1) ** -skew``. 0 is uniform. Ranks are a
        random permutation of the experts, different for every layer and every domain.
    seed : int, optional
        Seed (>= 0). The trace is a deterministic function of all arguments; it does not
        depend on the number of threads.
    domains : int or sequence of str, optional
        ``None`` (no labels), a number ``D`` of domains (labels ``"domain0"`` ...), or the
        ``D`` labels. Sequences are split into ``D`` contiguous, near-equal blocks in label
        order; each domain has its own popularity ranking (so experts specialise).

    Returns
    -------
    Trace
        ``S`` sequences, ids in the narrowest unsigned dtype; ``meta`` records the
        generator and its arguments.

    Notes
    -----
    The expected share of a token's experts also used by the previous token is about
    ``stay`` plus the chance that a fresh draw repeats one, so SRP and SCH grow with
    ``stay``. See ``docs/trace-format.md`` ("Sample traces").

    Examples
    --------
    >>> tr = synthetic_trace(8, 512, 4, 64, 8, stay=0.8, seed=1, domains=["web", "code"])
    >>> tr.experts.shape
    (4096, 4, 8)
    """
    S = _nonneg_int(num_sequences, "num_sequences")
    L = _nonneg_int(num_layers, "num_layers")
    E = _validate_num_experts(num_experts)
    k = _nonneg_int(top_k, "top_k")
    if L < 1:
        raise ValueError("num_layers must be >= 1")
    if not 1 <= k <= E:
        raise ValueError(f"top_k must satisfy 1 <= top_k <= num_experts = {E}, got {k}")
    _v.check_memory(16 * S, f"the lengths and offsets of {S} sequences", "lower num_sequences")
    if isinstance(seq_len, (int, np.integer)) and not isinstance(seq_len, bool):
        T = _nonneg_int(seq_len, "seq_len")
        lengths = np.full(S, T, dtype=np.int64)
    else:
        lengths = np.asarray(seq_len)
        if lengths.size == 0:
            lengths = lengths.astype(np.int64)
        if (
            lengths.ndim != 1
            or lengths.shape[0] != S
            or not np.issubdtype(lengths.dtype, np.integer)
        ):
            raise ValueError(
                f"seq_len must be an int or {S} integer lengths (one per sequence), got "
                f"shape {lengths.shape} dtype {lengths.dtype}"
            )
        if S and lengths.min() < 0:
            raise ValueError(f"seq_len has a negative length at sequence {int(lengths.argmin())}")
        lengths = lengths.astype(np.int64)
    stay = float(stay)
    skew = float(skew)
    if not 0.0 <= stay <= 1.0:
        raise ValueError(f"stay must lie in [0, 1], got {stay}")
    if not (np.isfinite(skew) and skew >= 0.0):
        raise ValueError(f"skew must be a finite number >= 0, got {skew}")
    seed = _nonneg_int(seed, "seed")
    names, dom = _domain_labels(domains, S)
    D = 1 if names is None else len(names)

    n_ids = int(lengths.sum()) * L * k
    _v.check_memory(
        (3 * D * L + 2) * E * 8 + n_ids * id_dtype_for(E).itemsize,
        f"a synthetic trace of {n_ids} ids with per-layer tables over {E} experts",
        "lower num_experts, seq_len or num_sequences",
    )
    rng = np.random.default_rng([seed, 0x5EED])
    base = (np.arange(1, E + 1, dtype=np.float64)) ** -skew
    prob = np.empty((D * L, E), dtype=np.float64)
    for r in range(D * L):
        prob[r] = base[rng.permutation(E)]
    cdf = np.cumsum(prob, axis=1)

    offsets = np.zeros(S + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    out = np.empty((int(offsets[-1]), L, k), dtype=id_dtype_for(E))
    if out.size:
        _generate(out, offsets, dom, cdf, prob, stay, np.uint64(seed))
    meta = {
        "model": "synthetic",
        "generator": "lrc_kernels.synthetic_trace",
        "generator_args": {
            "stay": stay,
            "skew": skew,
            "seed": seed,
            "num_layers": L,
            "num_experts": E,
            "top_k": k,
        },
    }
    dl = None if names is None else [names[c] for c in dom]
    return Trace(out, offsets, num_experts=E, domains=dl, meta=meta, _validated=True)


def _nonneg_int(v: Any, name: str) -> int:
    return _v.check_int(v, name, 0)
