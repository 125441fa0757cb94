"""The study manifest (``STUDY.toml``): models x domains x trace globs, and the metrics."""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._spec import BACKENDS

__all__ = ["Manifest", "load_manifest", "DEFAULT_M", "DEFAULT_RHO"]

DEFAULT_M = (4, 16, 64, 256)
DEFAULT_RHO = (0.5, 1.0, 2.0, 4.0)
_KEYS = {"title", "out", "m", "sch_m", "rho", "bootstrap", "seed", "backend", "models"}


@dataclass
class Manifest:
    """A parsed study manifest (see ``docs/studies.md``).

    Attributes
    ----------
    path : Path
        The manifest file; globs and ``out`` are relative to its folder.
    models : dict of str to (dict of str to list of str)
        Model -> domain -> trace files (each glob's matches in name order), in the
        manifest's order: the order of the sequences of a model.
    m, sch_m, rho, bootstrap, seed, backend, title, out
        Segment lengths of SRP; SCH's future window (also the m of the per-domain
        numbers); cache ratios of the curve table; bootstrap resamples of the model-level
        SRP interval and their seed; compute backend; report title; results folder.
    """

    path: Path
    models: dict[str, dict[str, list[str]]]
    m: list[int] = field(default_factory=lambda: list(DEFAULT_M))
    sch_m: int = 16
    rho: list[float] = field(default_factory=lambda: list(DEFAULT_RHO))
    bootstrap: int = 0
    seed: int = 0
    backend: str = "auto"
    title: str | None = None
    out: Path | None = None

    @property
    def files(self) -> list[str]:
        """Every trace file, once, in manifest order."""
        seen: dict[str, None] = {}
        for doms in self.models.values():
            for files in doms.values():
                seen.update(dict.fromkeys(files))
        return list(seen)


def _toml(path: Path) -> dict[str, Any]:
    try:
        import tomllib
    except ImportError:  # pragma: no cover - Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            raise ImportError("reading STUDY.toml on Python 3.10 needs tomli") from None
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from None


def _ints(v: Any, what: str, low: int) -> list[int]:
    vals = v if isinstance(v, list) else [v]
    if not vals or any(isinstance(x, bool) or not isinstance(x, int) or x < low for x in vals):
        raise ValueError(f"{what} must be an integer >= {low} or a list of them, got {v!r}")
    return [int(x) for x in vals]


def _expand(base: Path, pattern: str, where: str) -> list[str]:
    if not isinstance(pattern, str) or not pattern:
        raise ValueError(f"{where}: a trace glob is a non-empty string, got {pattern!r}")
    full = pattern if os.path.isabs(pattern) else str(base / pattern)
    out: list[str] = []
    for hit in sorted(glob.glob(full, recursive=True)):
        p = Path(hit)
        if p.is_dir():  # a shard directory: its *.arrow files in name order
            out.extend(str(q) for q in sorted(p.iterdir()) if q.suffix == ".arrow")
        elif p.is_file():
            out.append(str(p))
    if not out:
        raise ValueError(f"{where}: {pattern!r} matches no trace file (looked for {full})")
    return out


def _models(base: Path, raw: Any) -> dict[str, dict[str, list[str]]]:
    if not isinstance(raw, dict) or not raw:
        raise ValueError("the manifest needs a [models.NAME] table per model (domain = glob)")
    models: dict[str, dict[str, list[str]]] = {}
    for name, doms in raw.items():
        if not isinstance(doms, dict) or not doms:
            raise ValueError(f"[models.{name}] must map domain names to trace globs")
        models[name] = {}
        seen: set[str] = set()
        for dom, pats in doms.items():
            pats = pats if isinstance(pats, list) else [pats]
            files = [f for p in pats for f in _expand(base, p, f"models.{name}.{dom}")]
            dup = seen.intersection(files) or {f for f in files if files.count(f) > 1}
            if dup:
                raise ValueError(f"models.{name}: {sorted(dup)[0]} is listed twice")
            seen.update(files)
            models[name][dom] = files
    return models


def load_manifest(path: str | os.PathLike) -> Manifest:
    """Read and check a study manifest; the globs are expanded now."""
    path = Path(path)
    raw = _toml(path)
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise ValueError(f"{path}: unknown key {unknown[0]!r}; known: {sorted(_KEYS)}")
    base = path.resolve().parent
    man = Manifest(path=path, models=_models(base, raw.get("models")))
    if "m" in raw:
        man.m = _ints(raw["m"], "m", 1)
    if "sch_m" in raw:
        man.sch_m = _ints(raw["sch_m"], "sch_m", 1)[0]
    if "rho" in raw:
        rho = raw["rho"] if isinstance(raw["rho"], list) else [raw["rho"]]
        if not rho or any(isinstance(r, bool) or not isinstance(r, (int, float)) for r in rho):
            raise ValueError(f"rho must be a number or a list of numbers, got {raw['rho']!r}")
        man.rho = [float(r) for r in rho]
    if "bootstrap" in raw:
        man.bootstrap = _ints(raw["bootstrap"], "bootstrap", 0)[0]
    if "seed" in raw:
        man.seed = _ints(raw["seed"], "seed", 0)[0]
    if "backend" in raw:
        if raw["backend"] not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {raw['backend']!r}")
        man.backend = raw["backend"]
    if "title" in raw:
        man.title = str(raw["title"])
    if "out" in raw:
        out = Path(str(raw["out"]))
        man.out = out if out.is_absolute() else base / out
    return man
