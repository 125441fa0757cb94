"""The :class:`Trace` container and the validation every public function relies on.

Kernels assume valid input (Numba does no bounds checking), so everything a user can
pass is checked here, once, with messages that say what is wrong, where, and how to fix it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from . import _validate as _v
from ._validate import id_dtype_for

__all__ = ["Trace", "as_trace", "id_dtype_for", "LabelCodes"]


class LabelCodes:
    """Stable integer codes for labels (order of first appearance), across many calls.

    One code book serves every batch of a streamed source, so a label keeps its code.
    """

    def __init__(self) -> None:
        self.index: dict[Any, int] = {}

    def codes(self, labels: Iterable[Any]) -> np.ndarray:
        """int64 code of each label, new labels numbered in order of appearance."""
        return np.asarray(
            [self.index.setdefault(v, len(self.index)) for v in labels], dtype=np.int64
        )

    @property
    def names(self) -> list[Any]:
        """The labels seen so far, in code order."""
        return list(self.index)


# array-library handling lives in lrc_kernels._validate, the boundary module
_is_device_array = _v.is_device_array
_to_numpy = _v.to_numpy


# Back-compatible names for the shared checks (lrc_kernels._validate owns them).
_check_int_array = _v.check_int_array
_validate_num_experts = _v.check_num_experts
_check_layout = _v.check_layout
_locate = _v.locate


class Trace:
    """A routing trace: the top-k experts chosen for every token of every sequence and layer.

    Parameters
    ----------
    experts : array_like of int, shape (N, L, k)
        Expert ids of all tokens of all sequences back to back (sequence ``s`` is rows
        ``offsets[s]:offsets[s+1]``), for ``L`` MoE layers and ``k`` routing slots, in the
        router's order (highest score first). Any integer dtype is accepted; the trace stores
        the ids in the narrowest unsigned dtype that holds ``num_experts``.
    offsets : array_like of int, shape (S + 1,), optional
        Sequence boundaries: start at 0, non-decreasing, end at ``N``. ``None`` means one
        sequence.
    num_experts : int
        Number of routed experts per layer, ``E``. Every id must lie in ``[0, E)``.
    domains : sequence of str, optional
        One label per sequence (data set / domain), used by ``by_domain=True``.
    weights : array_like of float, shape (N, L, k), optional
        Gate weights of the recorded experts (non-negative, finite).
    meta : mapping, optional
        Free-form metadata (model name, MoE layer ids, ...).

    Raises
    ------
    TypeError, ValueError
        On any malformed input; the message names the sequence, token, layer and slot.

    Notes
    -----
    See ``docs/metrics.md`` ("Routing traces") for the conventions: sequences are
    independent, ids within one token are distinct, and slot order is the router's.
    """

    __slots__ = (
        "_experts",
        "_offsets",
        "_num_experts",
        "_domains",
        "_weights",
        "_meta",
    )

    def __init__(
        self,
        experts: Any,
        offsets: Any = None,
        *,
        num_experts: int,
        domains: Sequence[Any] | np.ndarray | None = None,
        weights: Any = None,
        meta: Mapping[str, Any] | None = None,
        _validated: bool = False,
    ) -> None:
        E = _validate_num_experts(num_experts)
        if _is_device_array(experts) and not _validated:
            # GPU-resident ids stay on the device: validated there (same checks and
            # messages as below), kept in the canonical dtype, and consumed by the GPU
            # backend without a host copy.
            experts, offsets = _v.check_device_ids(experts, offsets, E)
            _validated = True
        x = experts if _is_device_array(experts) else _to_numpy(experts, "experts")
        if not _validated:
            _check_int_array(x, "experts")
            if x.ndim != 3:
                raise ValueError(
                    f"Trace experts must have shape (tokens, layers, k), got ndim={x.ndim} "
                    f"shape={x.shape}. Use lrc_kernels.as_trace() for (S, T, L, k), "
                    "(T, L, k) or (T, k) arrays."
                )
        N, L, k = x.shape
        if not _validated:
            _check_layout(L, k, E)
        off = self._check_offsets(offsets, N) if not _validated else np.asarray(offsets)
        if not _validated:
            x = _validate_ids(x, off, E)
        self._experts = x
        self._offsets = off
        self._num_experts = E
        S = off.shape[0] - 1
        self._domains = _check_domains(domains, S)
        self._weights = _check_weights(weights, x.shape, off) if weights is not None else None
        if meta is not None and not isinstance(meta, Mapping):
            raise TypeError(f"meta must be a mapping (dict) or None, got {type(meta).__name__}")
        self._meta = dict(meta) if meta is not None else {}

    # ------------------------------------------------------------------ checks
    @staticmethod
    def _check_offsets(offsets: Any, N: int) -> np.ndarray:
        if offsets is None:
            return np.array([0, N], dtype=np.int64)
        return _v.check_offsets(_to_numpy(offsets, "offsets"), N)

    # -------------------------------------------------------------- properties
    @property
    def experts(self) -> np.ndarray:
        """Expert ids, shape ``(N, L, k)``, narrowest unsigned dtype for ``num_experts``."""
        return self._experts

    @property
    def offsets(self) -> np.ndarray:
        """Sequence boundaries, int64, shape ``(S + 1,)``."""
        return self._offsets

    @property
    def num_experts(self) -> int:
        """Routed experts per layer, ``E``."""
        return self._num_experts

    @property
    def domains(self) -> np.ndarray | None:
        """Per-sequence domain labels (object array of str) or None."""
        return self._domains

    @property
    def weights(self) -> np.ndarray | None:
        """Gate weights, shape ``(N, L, k)``, or None."""
        return self._weights

    @property
    def meta(self) -> dict[str, Any]:
        """Free-form metadata."""
        return self._meta

    @property
    def num_layers(self) -> int:
        return int(self._experts.shape[1])

    @property
    def top_k(self) -> int:
        return int(self._experts.shape[2])

    @property
    def num_sequences(self) -> int:
        return int(self._offsets.shape[0] - 1)

    @property
    def num_tokens(self) -> int:
        return int(self._experts.shape[0])

    @property
    def num_activations(self) -> int:
        """Tokens x layers x k: the number of (token, layer, expert) routing decisions."""
        return int(self._experts.size)

    @property
    def lengths(self) -> np.ndarray:
        """Tokens per sequence, int64, shape ``(S,)``."""
        return np.diff(self._offsets)

    def domain_codes(self) -> tuple[list[str], np.ndarray]:
        """Domain names (order of first appearance) and an int64 code per sequence.

        Raises ValueError when the trace has no domain labels.
        """
        if self._domains is None:
            raise ValueError(
                "this trace has no domain labels; pass domains=[...] (one per sequence) "
                "when building the Trace, or call without by_domain=True"
            )
        codes = LabelCodes()
        out = codes.codes(self._domains)
        return codes.names, out

    # ---------------------------------------------------------------- sequences
    def __len__(self) -> int:
        return self.num_sequences

    def sequence(self, s: int) -> np.ndarray:
        """Expert ids of sequence ``s``, shape ``(T_s, L, k)`` (a view)."""
        S = self.num_sequences
        s = _v.check_int(s, "sequence index")
        if not -S <= s < S:
            raise IndexError(f"sequence index {s} out of range for a trace of {S} sequences")
        s %= S
        return self._experts[self._offsets[s] : self._offsets[s + 1]]

    def __getitem__(self, s: int) -> np.ndarray:
        return self.sequence(s)

    def __iter__(self) -> Iterator[np.ndarray]:
        for s in range(self.num_sequences):
            yield self._experts[self._offsets[s] : self._offsets[s + 1]]

    def select(
        self, *, sequences: Any = None, layers: Any = None, domain: str | None = None
    ) -> Trace:
        """A new trace with a subset of sequences (indices or a domain label) and/or layers."""
        idx = np.arange(self.num_sequences)
        if domain is not None:
            if self._domains is None:
                raise ValueError("select(domain=...) needs a trace with domain labels")
            idx = idx[np.asarray([d == domain for d in self._domains], dtype=bool)]
            if idx.size == 0:
                raise ValueError(
                    f"no sequence has domain {domain!r}; known: {sorted(set(self._domains))}"
                )
        if sequences is not None:
            idx = idx[_v.check_index_array(sequences, "sequences", idx.size)]
        lens = self.lengths[idx]
        rows = (
            np.concatenate([np.arange(self._offsets[s], self._offsets[s + 1]) for s in idx])
            if idx.size
            else np.zeros(0, np.int64)
        )
        lay: Any = slice(None)
        if layers is not None:
            lay = _v.check_index_array(layers, "layers", self.num_layers)
            if lay.size == 0:
                raise ValueError("layers is empty; a trace needs >= 1 layer")
        if _is_device_array(self._experts):  # stay on the device
            import cupy as cp

            lay_d = lay if isinstance(lay, slice) else cp.asarray(lay)
            ex = cp.ascontiguousarray(self._experts[cp.asarray(rows)][:, lay_d])
        else:
            ex = np.ascontiguousarray(self._experts[rows][:, lay])
        w = None if self._weights is None else np.ascontiguousarray(self._weights[rows][:, lay])
        off = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        dom = None if self._domains is None else self._domains[idx]
        return Trace(
            ex,
            off,
            num_experts=self._num_experts,
            domains=dom,
            weights=w,
            meta=self._meta,
            _validated=True,
        )

    def split(self, length: int) -> Trace:
        """Cut every sequence into consecutive pieces of ``length`` tokens (last may be shorter).

        Useful for long single-stream captures: the paper evaluates 512-token sequences.
        """
        length = _v.check_int(length, "split length", 1, what="a positive integer")
        new_off = [0]
        dom = []
        for s in range(self.num_sequences):
            a, b = int(self._offsets[s]), int(self._offsets[s + 1])
            for start in range(a, b, length):
                new_off.append(min(start + length, b))
                if self._domains is not None:
                    dom.append(self._domains[s])
        return Trace(
            self._experts,
            np.asarray(new_off, np.int64),
            num_experts=self._num_experts,
            domains=dom if self._domains is not None else None,
            weights=self._weights,
            meta=self._meta,
            _validated=True,
        )

    def __repr__(self) -> str:
        name = self._meta.get("model") or self._meta.get("model_name")
        extra = f" model={name!r}" if name else ""
        nd = "" if self._domains is None else f" domains={len(set(self._domains))}"
        return (
            f"<Trace{extra} sequences={self.num_sequences} tokens={self.num_tokens} "
            f"layers={self.num_layers} E={self.num_experts} k={self.top_k}{nd}>"
        )


# ---------------------------------------------------------------------------
def _validate_ids(x: np.ndarray, off: np.ndarray, E: int) -> np.ndarray:
    """Range and duplicate checks; returns the ids in the canonical unsigned dtype."""
    return _v.check_ids(x, E, _v.sequence_where(off))


def _check_domains(domains: Any, S: int) -> np.ndarray | None:
    if domains is None:
        return None
    if isinstance(domains, str):
        domains = [domains] * S
    d = list(domains)
    if len(d) != S:
        raise ValueError(
            f"domains has {len(d)} labels but the trace has {S} sequences; give exactly one "
            "label per sequence"
        )
    out = np.empty(S, dtype=object)
    for i, v in enumerate(d):
        if isinstance(v, bytes):
            v = v.decode()
        out[i] = str(v)
    return out


def _check_weights(weights: Any, shape: tuple[int, ...], off: np.ndarray) -> np.ndarray:
    w = _to_numpy(weights, "weights")
    return _v.check_weights(w, shape, _v.sequence_where(off), copy=False)


_NEED_E = (
    "num_experts is required for a plain array (shape {shape}): pass num_experts=E, the "
    "number of experts per layer of the model, e.g. srp(ids, 16, num_experts=64), or wrap "
    "the array as Trace(ids, offsets, num_experts=E). It is never guessed from the ids: the "
    "highest experts may never be chosen, and E sets the cache sizes of every hit curve"
)


def as_trace(obj: Any, num_experts: int | None = None) -> Trace:
    """Normalise what a public function was given into a validated :class:`Trace`.

    Accepted: a :class:`Trace` (returned as is; ``num_experts`` must then be None or
    equal), or an integer array of shape ``(S, T, L, k)`` (S equal-length sequences),
    ``(T, L, k)`` (one sequence) or ``(T, k)`` (one sequence of one layer). For arrays,
    ``num_experts`` is required: the number of experts is never guessed from the ids (the
    highest experts may never be chosen, and E sets the length of every hit curve and the
    p = 0 threshold of SRP).
    """
    if isinstance(obj, Trace):
        if num_experts is not None and _validate_num_experts(num_experts) != obj.num_experts:
            raise ValueError(
                f"num_experts={num_experts} disagrees with the trace's num_experts="
                f"{obj.num_experts}; omit num_experts when passing a Trace"
            )
        return obj
    if isinstance(obj, (str, bytes)) or hasattr(obj, "__fspath__"):
        raise TypeError(
            "got a path; read it first with lrc_kernels.read_trace(path) (or pass the path "
            "to a function that streams files)"
        )
    if _is_device_array(obj):
        x = _v.device_array(obj)  # torch CUDA tensors become CuPy arrays (DLPack)
    else:
        x = _to_numpy(obj, "trace")
    _check_int_array(x, "trace")
    if num_experts is None:
        raise ValueError(_NEED_E.format(shape=tuple(int(v) for v in x.shape)))
    if x.ndim == 4:
        S, T, L, k = x.shape
        off = np.arange(S + 1, dtype=np.int64) * T
        x = x.reshape(S * T, L, k)
    elif x.ndim == 3:
        off = None
    elif x.ndim == 2:
        x = x[:, None, :]
        off = None
    else:
        raise ValueError(
            f"trace array must have shape (S, T, L, k), (T, L, k) or (T, k); got ndim="
            f"{x.ndim} shape={x.shape}"
        )
    return Trace(x, off, num_experts=num_experts)
