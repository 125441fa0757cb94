"""The study's disk cache: partials keyed by the content hash of their file and the
parameters, so a restarted study recomputes only what is missing or changed."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from .. import partial as _partial

__all__ = ["PartialCache", "file_sha256"]

_CHUNK = 1 << 22


def file_sha256(path: str) -> str:
    """SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _stat_key(path: str) -> list[int]:
    st = os.stat(path)
    # ctime changes with every write (and cannot be set back), so a rewritten file never
    # keeps its memoised hash
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


class PartialCache:
    """Partials on disk under ``root``: ``partials/<key>.npz`` and a hash memo.

    The key of a partial is the SHA-256 of (the file's content hash, the computation's
    kind and parameters, the partial format version). File hashes are memoised in
    ``hashes.json`` by (size, mtime, ctime, inode), so an unchanged file is not read again.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.dir = self.root / "partials"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._memo_path = self.root / "hashes.json"
        try:
            self._memo: dict[str, Any] = json.loads(self._memo_path.read_text())
        except (OSError, ValueError):
            self._memo = {}

    def hashes(self, files: list[str]) -> dict[str, str]:
        """Content hash of every file (memoised by its stat)."""
        out = {}
        changed = False
        for f in files:
            key = os.path.abspath(f)
            st = _stat_key(f)
            hit = self._memo.get(key)
            if hit is not None and hit[0] == st:
                out[f] = hit[1]
                continue
            out[f] = file_sha256(f)
            self._memo[key] = [st, out[f]]
            changed = True
        if changed:
            tmp = self._memo_path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(self._memo, indent=0))
            os.replace(tmp, self._memo_path)
        return out

    @staticmethod
    def key(file_hash: str, kind: str, kwargs: dict[str, Any]) -> str:
        """Cache key of one computation over one file (the backend is left out: every
        backend computes the same integers)."""
        params = {k: v for k, v in kwargs.items() if k != "backend"}
        text = json.dumps([file_hash, kind, params, _partial._VERSION], sort_keys=True)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:40]

    def path(self, key: str) -> Path:
        return self.dir / f"{key}.npz"

    def get(self, key: str) -> _partial.Partial | None:
        """The cached partial, or None (missing, or unreadable: then it is recomputed)."""
        p = self.path(key)
        if not p.is_file():
            return None
        try:
            return _partial.load(p)
        except (OSError, ValueError):
            return None

    def put(self, key: str, part: _partial.Partial) -> None:
        """Store a partial (atomically: a killed study never leaves a half-written one)."""
        part.save(self.path(key))
