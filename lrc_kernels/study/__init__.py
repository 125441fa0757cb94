"""Studies: many models x domains x trace shards, run resumably (``lrc study STUDY.toml``).

A manifest (``docs/studies.md``) names, per model, the trace globs of each domain, and the
metric parameters. :func:`run_study` computes the partial results of every file
(:mod:`lrc_kernels.partial`) on a Dask cluster or in this process, caches each on disk under
a key of the file's content hash and the parameters, merges them per model (exactly as one
pass over the model's files, domain by domain in manifest order), and writes a results
folder: Parquet tables (``srp``, ``curves``, ``summary``, ``domains``) and the HTML report,
whose summary compares the models (SRP and SCH at rho = 2). A killed study restarts
without recomputing the files it finished, and a changed file gets new partials.

Modules: ``_manifest`` (the TOML manifest), ``_cache`` (content hashes, partials on disk),
``_run`` (what is computed, and where), ``_outputs`` (tables and the report).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from ._cache import PartialCache
from ._manifest import Manifest, load_manifest
from ._outputs import add_comparison, report_models, write_tables
from ._run import StudyRun, compute_missing, model_results, study_specs

__all__ = ["Manifest", "StudyRun", "load_manifest", "run_study", "study_specs"]


def run_study(
    manifest: str | os.PathLike | Manifest,
    out: str | os.PathLike | None = None,
    *,
    client: Any = None,
    progress: Any = False,
    report: bool = True,
) -> StudyRun:
    """Run (or resume) the study of a manifest and write its results folder.

    Parameters
    ----------
    manifest : path or Manifest
        The ``STUDY.toml`` file (see ``docs/studies.md``).
    out : path, optional
        Results folder (default: the manifest's ``out``, else ``results`` beside it). Its
        ``cache/`` holds the partials: run again with the same folder to resume.
    client : distributed.Client, optional
        Compute the missing partials on this Dask cluster (one task per file); without
        it, in this process.
    progress : bool or callable
        A bar over the files as they complete (with ``client``), as for
        :func:`lrc_kernels.srp`.
    report : bool
        Write the HTML report (needs matplotlib) besides the tables.

    Returns
    -------
    StudyRun
        The folder, partials computed and reused, and the time of each phase.
    """
    man = manifest if isinstance(manifest, Manifest) else load_manifest(manifest)
    out_dir = Path(out) if out is not None else (man.out or man.path.resolve().parent / "results")
    out_dir.mkdir(parents=True, exist_ok=True)
    run = StudyRun(out_dir)
    cache = PartialCache(out_dir / "cache")
    keys = compute_missing(man, cache, client, progress, run)
    t0 = time.perf_counter()
    results = model_results(man, cache, keys)
    run.seconds["finish"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    tables = write_tables(man, results, out_dir)
    if report:
        from ..report import render

        models = report_models(man, results)
        render(models, out_dir, title=man.title, bootstrap=man.bootstrap)
        add_comparison(models, out_dir)
    run.seconds["write"] = time.perf_counter() - t0
    provenance = {
        "manifest": str(man.path),
        "tables": tables,
        "files": {m: d for m, d in man.models.items()},
        "computed": run.computed,
        "reused": run.reused,
    }
    (out_dir / "study.json").write_text(json.dumps(provenance, indent=1) + "\n")
    return run
