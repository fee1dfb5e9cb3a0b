"""Tests of lungseg.errors: the error types and describe()."""

from __future__ import annotations

from lungseg.errors import DataError, LungsegError, describe


def test_describe_quotes_a_library_error_on_one_line() -> None:
    assert describe(ValueError("bad\n  value\tin  header")) == "ValueError: bad value in header"


def test_describe_cuts_long_messages() -> None:
    text = describe(OSError("x" * 500))
    assert len(text) == 200 and text.startswith("OSError: xxx") and text.endswith("...")
    assert describe(OSError("x" * 500), limit=20) == "OSError: xxxxxxxx..."


def test_data_errors_are_user_errors_and_value_errors() -> None:
    assert issubclass(DataError, LungsegError) and issubclass(LungsegError, ValueError)
