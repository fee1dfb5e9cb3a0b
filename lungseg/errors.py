"""User-facing errors: the command line prints ``error: <message>`` and exits with status 2."""

from __future__ import annotations

__all__ = ["DataError", "DataWarning", "LungsegError", "describe"]


class LungsegError(ValueError):
    """An error caused by the user's input or configuration, reported as one clear line."""


class DataError(LungsegError):
    """Bad input data; the message names the file and what was expected."""


class DataWarning(UserWarning):
    """A standard repair was applied to input data (e.g. a non-image file was skipped)."""


def describe(err: BaseException, limit: int = 200) -> str:
    """A library's exception as ``"Type: message"``, for quoting inside one of our error messages.

    Readers (pydicom, nibabel, PIL, numpy) raise with multi-line or very long messages; an error of
    ours quotes them on one line, cut to ``limit`` characters so the line stays readable.

    Args:
        err: the exception caught.
        limit: the most characters returned (at least 4).

    Returns:
        ``"Type: message"`` with runs of whitespace collapsed to one space, ending in ``"..."`` when cut.
    """
    text = " ".join(f"{type(err).__name__}: {err}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
