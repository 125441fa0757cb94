"""The loop every metric shares: batches of a source, a backend per batch, and accumulators.

A source (a :class:`Trace`, an array, or trace files, which are streamed in batches of whole
sequences with bounded memory) is walked once. Each batch is checked against the first,
gets the backend's view of its ids and a stable domain code per sequence; the front ends
(:mod:`lrc_kernels._srp_api`, :mod:`lrc_kernels._cache_api`) add the backend's integer
tables into :class:`GroupSum` accumulators.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from . import _backends
from ._trace import LabelCodes, Trace, as_trace

__all__ = [
    "STREAM_BATCH_ACTIVATIONS",
    "STREAM_BATCH_TOKENS",
    "Step",
    "Stream",
    "GroupSum",
    "is_path_source",
]

# Activations (tokens x layers x k) per batch when streaming trace files: bounds peak
# memory (a few batches of ids, and per-batch tables) whatever the file size.
STREAM_BATCH_ACTIVATIONS = 1 << 26
# Fixed tokens per batch instead (tests use it to force many small batches).
STREAM_BATCH_TOKENS: int | None = None


def is_path_source(obj: Any) -> bool:
    """Whether ``obj`` names trace files (a path, or a non-empty list of paths)."""
    if isinstance(obj, (str, bytes)) or hasattr(obj, "__fspath__"):
        return True
    return (
        isinstance(obj, (list, tuple))
        and bool(obj)
        and all(isinstance(o, (str, bytes)) or hasattr(o, "__fspath__") for o in obj)
    )


def _batches(trace: Any, num_experts: int | None, progress: Any) -> tuple[Iterator[Trace], bool]:
    """Trace batches (whole sequences) from a Trace, an array, or trace files (streamed)."""
    if not is_path_source(trace):
        return iter([as_trace(trace, num_experts)]), False
    from . import io as _io

    tokens = STREAM_BATCH_TOKENS
    if tokens is None:
        reader = _io.TraceReader(trace)
        tokens = max(1, STREAM_BATCH_ACTIVATIONS // (reader.num_layers * reader.top_k))
    it: Iterable[Trace] = _io.iter_trace_batches(trace, max_tokens=tokens)
    if num_experts is not None:
        it = (as_trace(b, num_experts) for b in it)
    if progress:
        it = _progress(it, progress)
    return iter(it), True


def _progress(it: Iterable[Trace], progress: Any) -> Iterator[Trace]:
    if callable(progress):
        for b in it:
            progress(b)
            yield b
        return
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is optional
        yield from it
        return
    with tqdm(unit="tok", unit_scale=True, desc="streaming") as bar:
        for b in it:
            yield b
            bar.update(b.num_tokens)


def _check_shape(first: Trace | None, batch: Trace) -> Trace:
    if first is not None and (
        batch.num_experts != first.num_experts
        or batch.num_layers != first.num_layers
        or batch.top_k != first.top_k
    ):
        raise ValueError(
            "trace batches disagree on their shape: (E, L, k) = "
            f"({first.num_experts}, {first.num_layers}, {first.top_k}) then "
            f"({batch.num_experts}, {batch.num_layers}, {batch.top_k}); all files of one "
            "source must come from the same model"
        )
    return first if first is not None else batch


def _domain_labels(batch: Trace, by_domain: bool) -> list[Any]:
    if not by_domain:
        return [None] * batch.num_sequences
    if batch.domains is None:
        raise ValueError(
            "by_domain=True needs domain labels: build the Trace with domains=[...] (one "
            "label per sequence), or write them into the trace file"
        )
    return list(batch.domains)


class Step:
    """One batch of a source; its backend is looked up on first use (after the caller's
    size checks, so that an impossible request is refused before a device is touched)."""

    def __init__(self, batch: Trace, backend: str, domains: np.ndarray) -> None:
        self.batch = batch
        self._name = backend
        #: domain code of each sequence (all 0 without ``by_domain``)
        self.domains = domains

    @cached_property
    def backend(self) -> _backends.Backend:
        return _backends.get(self._name, self.batch)

    @cached_property
    def ids(self) -> Any:
        """The batch's ids where the backend reads them."""
        return self.backend.ids(self.batch)


@dataclass
class Stream:
    """One pass over a source: iterate for :class:`Step` objects, then read :attr:`first`."""

    trace: Any
    num_experts: int | None
    by_domain: bool
    backend: str
    progress: Any = False
    domains: LabelCodes = field(default_factory=LabelCodes)
    streamed: bool = False
    _first: Trace | None = None

    def __iter__(self) -> Iterator[Step]:
        batches, self.streamed = _batches(self.trace, self.num_experts, self.progress)
        for batch in batches:
            self._first = _check_shape(self._first, batch)
            codes = self.domains.codes(_domain_labels(batch, self.by_domain))
            yield Step(batch, self.backend, codes)

    @property
    def first(self) -> Trace:
        """The first batch (its shape is every batch's); an error for an empty source."""
        if self._first is None:
            raise ValueError("the trace source holds no sequences")
        return self._first

    @property
    def domain_names(self) -> list[Any] | None:
        return self.domains.names if self.by_domain else None


class GroupSum:
    """Sum of per-group integer tables whose number of groups grows from batch to batch."""

    def __init__(self) -> None:
        self.table: np.ndarray | None = None

    def add(self, t: np.ndarray) -> None:
        """Add ``t`` (groups first) to the first ``t.shape[0]`` rows (new rows start at 0)."""
        acc = self.table
        rows = t.shape[0]
        if acc is None:
            acc = np.zeros(t.shape, dtype=t.dtype)
        elif acc.shape[0] < rows:
            extra = np.zeros((rows - acc.shape[0],) + acc.shape[1:], dtype=acc.dtype)
            acc = np.concatenate([acc, extra])
        acc[:rows] += t
        self.table = acc
