"""User-facing errors: the command line prints ``error: <message>`` and exits with status 2."""

from __future__ import annotations


class LungsegError(ValueError):
    """An error caused by the user's input or configuration, reported as one clear line."""


class DataError(LungsegError):
    """Bad input data; the message names the file and what was expected."""
