"""Errors a user can act on: the CLI prints their message as one line and exits with status 2.

Every such error is a :class:`PareidoliaError`. Library code says what is wrong in its own
words: an :class:`OptionError` names the option as the library does (``adapt_steps``), and the
command line says it again with its flag (``--adapt``, :meth:`OptionError.worded`).
"""

from __future__ import annotations

import errno
from collections.abc import Mapping


class PareidoliaError(Exception):
    """A problem pareidolia expects and explains in the message (file, what, what to do)."""


class UserError(PareidoliaError):
    """A problem with the user's input or setup, explained in the message (file, what, what to do)."""


class NoFaceError(UserError):
    """A photo in which no usable face was found."""


class ScoreModelError(UserError):
    """A score network cannot be loaded: missing or unexpected file, bad checksum, wrong keys."""


class WeightsError(PareidoliaError, RuntimeError):
    """A shipped weight file (or the thresholds' calibration table) is missing or does not match
    its recorded checksum."""


class OptionError(UserError):
    """A bad option value (or combination of values). ``message`` stands for each option named
    in ``options`` by ``{name}``; the library's own words name it so (``adapt_steps must be 0
    or more``), and :meth:`worded` says it with other names, such as the command line's flags
    (``--adapt must be 0 or more``)."""

    def __init__(self, message: str, *options: str) -> None:
        self.message = message
        self.options = options
        super().__init__(self.worded({}))

    def worded(self, flags: Mapping[str, str]) -> str:
        """The message with each option named ``flags[name]``, or as the library names it."""
        out = self.message
        for name in self.options:
            out = out.replace("{" + name + "}", flags.get(name, name))
        return out


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
