"""Scale-out on Dask distributed: one task per trace file, partials merged in file order.

``lk.srp(paths, ..., client=client)`` (and :func:`~lrc_kernels.sch`,
:func:`~lrc_kernels.hit_curve`) hands each file (shard) of ``paths`` to the cluster as a
task that streams the file in bounded batches and returns its :class:`~lrc_kernels.partial
.Partial`; the client gathers the partials as they complete (a progress bar follows the
futures), merges them in file order and finishes the result: bit-identical to one process.
A task that raises is retried; a task whose worker dies is rescheduled by Dask. Each task
may run only on the workers that read its file (:func:`readers`): tasks go where their
shard is when nodes hold local copies.

:func:`connect` makes a client from the command line's ``--scheduler`` value: a scheduler
address, or ``local:N`` for a :class:`distributed.LocalCluster` of N single-threaded worker
processes on this machine. ``dask[distributed]`` is an optional dependency (the
``distributed`` extra).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from . import partial as _partial
from ._stream import is_path_source

__all__ = ["connect", "shard_paths", "map_partials", "readers", "run"]

#: times a task that raised is retried (a task whose worker died is rescheduled by Dask)
RETRIES = 2


def _distributed() -> Any:
    try:
        import distributed
    except ImportError:  # pragma: no cover - the test extra installs it
        raise ImportError(
            "scale-out needs Dask distributed: pip install 'lrc-kernels[distributed]'"
        ) from None
    return distributed


def connect(scheduler: str) -> Any:
    """A :class:`distributed.Client` for ``scheduler``.

    Parameters
    ----------
    scheduler : str
        ``"local:N"``: start a LocalCluster of N worker processes (one thread each; Numba
        parallelises inside a task) that closes with the client. Anything else is the
        address of a running scheduler (``tcp://host:8786``, a ``dask scheduler`` of any
        deployment: SSH, Kubernetes, SLURM through dask-jobqueue...).

    Returns
    -------
    distributed.Client
        Close it (or use it as a context manager) when done.
    """
    if not isinstance(scheduler, str) or not scheduler:
        raise TypeError(f"scheduler must be an address or 'local:N', got {scheduler!r}")
    distributed = _distributed()
    if scheduler.startswith("local:"):
        n = scheduler[len("local:") :]
        if not n.isdigit() or int(n) < 1:
            raise ValueError(f"scheduler 'local:N' needs a worker count N >= 1, got {scheduler!r}")
        return distributed.Client(
            n_workers=int(n),
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
        )
    return distributed.Client(scheduler)


def shard_paths(source: Any) -> list[str]:
    """The trace files of ``source`` (a file, a shard directory or a list), in read order."""
    if not is_path_source(source):
        raise TypeError(
            "client= computes over trace files (the workers read them): give a path, a "
            f"shard directory or a list of paths, not {type(source).__name__}; write an "
            "in-memory Trace with lk.write_trace first"
        )
    from . import io as _io

    with _io.TraceReader(source) as reader:
        return list(reader.files)


def _task(path: str, specs: Sequence[tuple[str, dict[str, Any]]]) -> list[_partial.Partial]:
    """One shard on a worker: its partial for each ``(kind, kwargs)``, streamed in bounded
    batches."""
    return [_partial.compute(path, kind, kwargs) for kind, kwargs in specs]


def _file_sizes(paths: Sequence[str]) -> list[int]:
    """On a worker: the size of each file, -1 where it cannot be read."""
    out = []
    for p in paths:
        try:
            out.append(os.stat(p).st_size if os.access(p, os.R_OK) else -1)
        except OSError:
            out.append(-1)
    return out


def eligible(
    paths: Sequence[str], sizes: Sequence[int], seen: dict[str, Sequence[int]]
) -> list[list[str] | None]:
    """Per file, the workers whose copy has the client's size (``None``: every worker).

    ``seen`` maps each worker address to the sizes it reads (-1: unreadable). A file that no
    worker reads is an error naming it; with no worker yet, nothing is restricted.
    """
    out: list[list[str] | None] = []
    for i, (path, size) in enumerate(zip(paths, sizes, strict=True)):
        ok = sorted(w for w, got in seen.items() if got[i] == size)
        if seen and not ok:
            raise FileNotFoundError(
                f"no worker of the cluster reads {path} as this process does ({size:,} "
                "bytes): the workers need the trace files at the same path (a shared "
                "filesystem, or a copy on the nodes that should compute them)"
            )
        out.append(None if len(ok) == len(seen) else ok)
    return out


def readers(client: Any, paths: Sequence[str]) -> list[list[str] | None]:
    """Where each file's task may run: the workers that read the file (``None``: all).

    Tasks go to the workers that hold their shard (node-local copies); on a shared
    filesystem every worker does and the scheduler places tasks freely.
    """
    sizes = [os.stat(p).st_size for p in paths]
    return eligible(paths, sizes, client.run(_file_sizes, list(paths)))


Job = tuple[str, Sequence[tuple[str, dict[str, Any]]]]


def map_partials(
    client: Any,
    jobs: Sequence[Job],
    *,
    progress: Any = False,
    retries: int = RETRIES,
    on_result: Callable[[int, list[_partial.Partial]], None] | None = None,
) -> list[list[_partial.Partial]]:
    """The partials of every job, computed on the cluster (one task per job), in job order.

    Parameters
    ----------
    client : distributed.Client
    jobs : sequence of (path, [(kind, kwargs), ...])
        One task per trace file: :func:`lrc_kernels.partial.compute` of the file for each
        ``(kind, kwargs)`` (one read of the file serves them all, batch after batch).
    progress : bool or callable
        A tqdm bar over the tasks as their futures complete, or a callable called with
        each finished :class:`~lrc_kernels.partial.Partial` (in completion order).
    retries : int
        Retries of a task that raised (a task whose worker died is rescheduled anyway).
    on_result : callable, optional
        Called with ``(job index, partials)`` as each task completes (e.g. to cache them).
    """
    distributed = _distributed()
    for _, specs in jobs:
        for kind, _kw in specs:
            if kind not in _partial.KINDS:
                raise ValueError(f"kind must be one of {_partial.KINDS}, got {kind!r}")
    run_id = uuid.uuid4().hex[:12]
    keys = [f"lrc-{run_id}-{i}-{os.path.basename(p)}" for i, (p, _) in enumerate(jobs)]
    where = readers(client, [p for p, _ in jobs])
    futures = [
        client.submit(
            _task,
            p,
            list(s),
            key=key,
            retries=retries,
            pure=False,
            workers=ws,
            allow_other_workers=False,
        )  # fmt: skip
        for (p, s), key, ws in zip(jobs, keys, where, strict=True)
    ]
    index = {f.key: i for i, f in enumerate(futures)}
    out: list[Any] = [None] * len(futures)
    bar = _bar(progress, len(futures))
    try:
        for fut, parts in distributed.as_completed(futures, with_results=True):
            i = index[fut.key]
            out[i] = parts
            fut.release()
            if on_result is not None:
                on_result(i, parts)
            if bar is not None:
                bar.update(1)
            elif callable(progress):
                for part in parts:
                    progress(part)
    except BaseException:
        client.cancel(futures)
        raise
    finally:
        if bar is not None:
            bar.close()
    return out


def _bar(progress: Any, total: int) -> Any:
    if progress is True:
        try:
            from tqdm.auto import tqdm
        except ImportError:  # pragma: no cover - tqdm is optional
            return None
        return tqdm(total=total, unit="shard", desc="shards", leave=False)
    return None


def run(client: Any, kind: str, trace: Any, kwargs: dict[str, Any], progress: Any) -> Any:
    """The front ends' ``client=`` path: partials of every file, merged, finished."""
    paths = shard_paths(trace)
    backend = kwargs.get("backend", "auto")
    jobs = [(p, [(kind, kwargs)]) for p in paths]
    parts = [r[0] for r in map_partials(client, jobs, progress=progress)]
    return _partial.finish(_partial.merge(parts), backend=backend)
