"""Running a study: partials of every (file, computation), cached; merged per model."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import partial as _partial
from ._cache import PartialCache
from ._manifest import Manifest

__all__ = ["Spec", "study_specs", "compute_missing", "StudyRun", "model_results"]

#: the cache policies of the report, in its order
REPORT_POLICIES = ("sch", "belady", "lru", "lfu")

Spec = tuple[str, dict[str, Any]]


def study_ms(man: Manifest) -> list[int]:
    """SRP's segment lengths: the manifest's, with SCH's window (the summary quotes it)."""
    return sorted(set(man.m) | {man.sch_m})


def study_specs(man: Manifest) -> dict[str, Spec]:
    """Every computation a study makes over each file, by name."""
    be = man.backend
    ms = study_ms(man)
    specs: dict[str, Spec] = {
        "srp_layer": ("srp", {"m": ms, "level": "layer", "backend": be}),
        "srp_model": ("srp", {"m": man.sch_m, "level": "model", "backend": be}),
        "srp_expert": ("srp", {"m": man.sch_m, "level": "expert", "backend": be}),
    }
    if man.bootstrap:
        specs["srp_boot"] = (
            "srp",
            {
                "m": ms,
                "level": "model",
                "bootstrap": man.bootstrap,
                "seed": man.seed,
                "backend": be,
            },
        )
    for pol in REPORT_POLICIES:
        m = man.sch_m if pol == "sch" else None
        specs[f"curve_{pol}"] = ("curve", {"policy": pol, "m": m, "level": "layer", "backend": be})
    return specs


@dataclass
class StudyRun:
    """What a run of :func:`lrc_kernels.study.run_study` did.

    Attributes
    ----------
    out : Path
        The results folder.
    computed, reused : int
        Partials computed by this run, and found in the cache.
    seconds : dict of str to float
        Wall time of the phases: ``hash``, ``compute``, ``finish``, ``write``.
    """

    out: Path
    computed: int = 0
    reused: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def report(self) -> Path:
        return self.out / "index.html"


def compute_missing(
    man: Manifest, cache: PartialCache, client: Any, progress: Any, run: StudyRun
) -> dict[str, dict[str, str]]:
    """Compute (on ``client``, or here) the partials the cache lacks; returns the cache key
    of every (file, computation)."""
    t0 = time.perf_counter()
    files = man.files
    hashes = cache.hashes(files)
    run.seconds["hash"] = time.perf_counter() - t0
    specs = study_specs(man)
    keys = {f: {n: cache.key(hashes[f], *s) for n, s in specs.items()} for f in files}
    todo = [(f, [n for n, k in keys[f].items() if not cache.path(k).is_file()]) for f in files]
    todo = [(f, names) for f, names in todo if names]
    run.reused = sum(len(k) for k in keys.values()) - sum(len(n) for _, n in todo)
    t0 = time.perf_counter()

    def store(i: int, parts: list[_partial.Partial]) -> None:
        f, names = todo[i]
        for name, part in zip(names, parts, strict=True):
            cache.put(keys[f][name], part)
        run.computed += len(parts)

    jobs = [(f, [specs[n] for n in names]) for f, names in todo]
    if client is not None and jobs:
        from ..cluster import map_partials

        map_partials(client, jobs, progress=progress, on_result=store)
    else:
        bar = _bar(progress, len(jobs))
        for i, (f, sp) in enumerate(jobs):
            store(i, [_partial.compute(f, kind, kw) for kind, kw in sp])
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
    run.seconds["compute"] = time.perf_counter() - t0
    return keys


def _bar(progress: Any, total: int) -> Any:
    """A tqdm bar over the files computed in this process (``progress=True``)."""
    if progress is not True or not total:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is optional
        return None
    return tqdm(total=total, unit="file", desc="study", leave=False)


def model_results(
    man: Manifest, cache: PartialCache, keys: dict[str, dict[str, str]]
) -> dict[str, dict[str, tuple[Any, Any]]]:
    """Model -> computation -> (result over all domains, result per domain)."""
    out: dict[str, dict[str, tuple[Any, Any]]] = {}
    for model, doms in man.models.items():
        out[model] = {}
        for name in study_specs(man):
            parts = []
            for dom, files in doms.items():
                for f in files:
                    part = cache.get(keys[f][name])
                    if part is None:
                        raise RuntimeError(
                            f"the cached partial of {f} ({name}) is unreadable: delete "
                            f"{cache.path(keys[f][name])} and run the study again"
                        )
                    parts.append(part.with_domain(dom))
            by_dom = _partial.merge(parts)
            pooled = _partial.finish(by_dom.pooled(), backend=man.backend)
            # the interval is reported over all domains only (no stratified resampling)
            per = None if name == "srp_boot" else _partial.finish(by_dom, backend=man.backend)
            out[model][name] = (pooled, per)
    return out
