"""Errors a user can act on: the CLI prints their message as one line and exits with status 2."""


class UserError(Exception):
    """A problem with the user's input or setup, explained in the message (file, what, what to do)."""


class NoFaceError(UserError):
    """A photo in which no usable face was found."""
