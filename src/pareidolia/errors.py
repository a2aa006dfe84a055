"""Errors a user can act on: the CLI prints their message as one line and exits with status 2."""

from __future__ import annotations

import errno


class UserError(Exception):
    """A problem with the user's input or setup, explained in the message (file, what, what to do)."""


class NoFaceError(UserError):
    """A photo in which no usable face was found."""


_OS_PROBLEMS = {
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EIO: "input/output error (a failing or removed drive?)",
    errno.EFBIG: "file too large for this file system",
    errno.ENAMETOOLONG: "file name too long",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENODEV: "not a file (a folder or a device?)",
}


def os_problem(e: OSError) -> str:
    """What went wrong in an :class:`OSError`, in words a user can act on: ``disk full (No
    space left on device)`` for ENOSPC, the operating system's reason otherwise."""
    reason = e.strerror or str(e) or type(e).__name__
    plain = _OS_PROBLEMS.get(e.errno) if e.errno is not None else None
    if plain is None:
        return reason
    if plain.lower().startswith(reason.lower()):
        return plain
    return f"{plain} ({reason})"


def os_error_line(e: OSError) -> str:
    """One line for an :class:`OSError`: ``FILE: problem`` when the error names a file."""
    if e.filename is not None and e.strerror:
        return f"{e.filename}: {os_problem(e)}"
    return os_problem(e)
