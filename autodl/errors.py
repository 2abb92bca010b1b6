"""Errors a user can act on.

Every ``UserError`` carries a one-line message that says what is wrong and what
to do about it. The CLI prints it without a traceback and exits with code 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input or request, explained in one line."""

    exit_code = 2


class DataError(UserError):
    """The data cannot be read or does not fit the request."""


class RunError(UserError):
    """A run directory is missing, incomplete, or corrupted."""
