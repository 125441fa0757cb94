"""MkDocs hook: leave out nav entries whose page does not exist (yet).

Some pages are written by other people on their own schedule; a missing page simply does
not appear in the navigation instead of failing ``mkdocs build --strict``.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("mkdocs.hooks.lrc")


def _keep(entry, docs: Path):
    if isinstance(entry, str):
        external = entry.startswith(("http://", "https://"))
        return entry if external or (docs / entry).exists() else None
    if isinstance(entry, dict):
        out = {}
        for title, value in entry.items():
            if isinstance(value, list):
                kept = [e for e in (_keep(v, docs) for v in value) if e is not None]
                if kept:
                    out[title] = kept
            else:
                if _keep(value, docs) is not None:
                    out[title] = value
                else:
                    log.info("nav: %s (%s) is not written yet; left out", title, value)
        return out or None
    return entry


def on_config(config, **kwargs):
    docs = Path(config["docs_dir"])
    if config.get("nav"):
        config["nav"] = [e for e in (_keep(e, docs) for e in config["nav"]) if e is not None]
    return config
