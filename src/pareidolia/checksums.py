"""sha256 of files: every weight file, cached latent and face crop is checked with it."""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, memoised on its path and modification time (weights are large)."""
    path = Path(path)
    return _file_sha256(path, path.stat().st_mtime_ns)


@cache
def _file_sha256(path: Path, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
