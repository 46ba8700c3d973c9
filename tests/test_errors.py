"""The error hierarchy and its Go messages."""

from __future__ import annotations

import pytest

from netpoll_trio import (
    ClosedError,
    NetpollError,
    NotFilerError,
    NotRegisteredError,
    RegisteredError,
)

MESSAGES = [
    (ClosedError, "poller instance is closed"),
    (NotFilerError, "could not get file descriptor"),
    (RegisteredError, "file descriptor is already registered in poller instance"),
    (NotRegisteredError, "file descriptor was not registered before in poller instance"),
]


@pytest.mark.parametrize(("cls", "message"), MESSAGES)
def test_default_message(cls: type[NetpollError], message: str) -> None:
    assert str(cls()) == message
    assert issubclass(cls, NetpollError)
    assert issubclass(cls, Exception)


def test_custom_message_wins() -> None:
    assert str(ClosedError("more detail")) == "more detail"


def test_not_filer_is_a_type_error() -> None:
    assert issubclass(NotFilerError, TypeError)
    with pytest.raises(TypeError):
        raise NotFilerError()
