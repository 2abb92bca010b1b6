"""Fixtures for the data-layer tests."""

from __future__ import annotations

from typing import Callable

import pytest

from autodl.errors import DataError, UserError


def _one_line(excinfo: pytest.ExceptionInfo[DataError]) -> str:
    err = excinfo.value
    assert isinstance(err, UserError) and err.exit_code == 2
    message = str(err)
    assert message.strip() and "\n" not in message and "\r" not in message, repr(message)
    return message


@pytest.fixture
def one_line() -> Callable[[pytest.ExceptionInfo[DataError]], str]:
    """Returns the message of a raised DataError after checking it is one non-empty line (CLI exit code 2)."""
    return _one_line
