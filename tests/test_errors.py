"""One wording of an exception for every one-line message: its type and its message's first line."""

import pytest

from evoproxy.errors import exception_line, message_line


@pytest.mark.parametrize(
    "exc, line, typed",
    [
        (ValueError("bad value\n  at node 3"), "bad value", "ValueError: bad value"),
        (RuntimeError("\n  leading blank line\nmore"), "leading blank line", "RuntimeError: leading blank line"),
        (RuntimeError(), "", "RuntimeError"),
        (KeyError(" "), "' '", "KeyError: ' '"),
    ],
)
def test_an_exception_is_worded_in_one_line_whatever_its_message(exc, line, typed):
    assert message_line(exc) == line
    assert exception_line(exc) == typed
