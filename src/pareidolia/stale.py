"""Removing the temporary folders a killed or crashed earlier run left behind.

They can hold users' photos and face data, so ``pareidolia web`` and ``pareidolia protect``
call :func:`remove_stale` when they start:

* ``pareidolia-web-cache-PID-*`` (the web server's upload cache) and ``pareidolia-web-work-PID-*``
  (one request's working folder) carry the process id of the server that made them; they are
  removed when that process is gone.
* ``pareidolia-adapt-*`` (the working files of ``--adapt``, face crops included) carry no
  process id; they are removed when nothing in them changed for :data:`ADAPT_STALE_SECONDS`
  (a running adaptation writes a checkpoint every epoch).

Only folders owned by the current user are touched.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from pathlib import Path

__all__ = ["ADAPT_STALE_SECONDS", "WEB_CACHE", "WEB_WORK", "pid_prefix", "remove_stale"]

WEB_CACHE = "pareidolia-web-cache"
WEB_WORK = "pareidolia-web-work"
ADAPT = "pareidolia-adapt-"
ADAPT_STALE_SECONDS = 3600.0

_WITH_PID = re.compile(rf"^(?:{WEB_CACHE}|{WEB_WORK})-(\d+)-")


def pid_prefix(kind: str) -> str:
    """The ``prefix`` for ``tempfile.mkdtemp`` of a folder of ``kind`` (:data:`WEB_CACHE`,
    :data:`WEB_WORK`) made by this process."""
    return f"{kind}-{os.getpid()}-"


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process (EPERM): alive
        return True
    return True


def _newest_change(folder: Path) -> float:
    newest = folder.lstat().st_mtime
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in (*dirnames, *filenames):
            try:
                newest = max(newest, os.lstat(os.path.join(dirpath, name)).st_mtime)
            except OSError:
                continue
    return newest


def remove_stale(root: Path | None = None, *, now: float | None = None) -> list[Path]:
    """Remove the stale pareidolia folders in ``root`` (default: the system's temporary
    folder); returns those removed. Never raises for a folder it cannot read or remove."""
    root = Path(tempfile.gettempdir()) if root is None else root
    now = time.time() if now is None else now
    removed: list[Path] = []
    try:
        entries = list(root.iterdir())
    except OSError:
        return removed
    uid = os.getuid() if hasattr(os, "getuid") else None
    for entry in entries:
        name = entry.name
        match = _WITH_PID.match(name)
        if match is None and not name.startswith(ADAPT):
            continue
        try:
            info = entry.lstat()
            if not entry.is_dir() or entry.is_symlink():
                continue
            if uid is not None and info.st_uid != uid:
                continue
            if match is not None:
                stale = not _alive(int(match.group(1)))
            else:
                stale = now - _newest_change(entry) > ADAPT_STALE_SECONDS
        except OSError:
            continue
        if stale:
            shutil.rmtree(entry, ignore_errors=True)
            if not entry.exists():
                removed.append(entry)
    return removed
