"""The error hierarchy, its Go messages, and what the errors carry besides."""

from __future__ import annotations

import errno
import socket
import tempfile

import pytest

from netpoll_trio import (
    ClosedError,
    Config,
    Desc,
    Epoll,
    EpollEvent,
    Event,
    NetpollError,
    NotFilerError,
    NotRegisteredError,
    Poller,
    RegisteredError,
    handle_read,
    new_desc,
)
from netpoll_trio._errors import kernel_error

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


def test_registration_errors_carry_fd_and_desc() -> None:
    desc = Desc(7, Event.READ)
    for cls in (RegisteredError, NotRegisteredError):
        err = cls(f"{cls.default_message} (more)", fd=7, desc=desc)
        assert str(err).startswith(cls.default_message)  # Go's message first
        assert (err.fd, err.desc) == (7, desc)
        bare = cls()
        assert (str(bare), bare.fd, bare.desc) == (cls.default_message, None, None)


def test_kernel_errors_keep_their_class_and_carry_the_fd() -> None:
    err = kernel_error(OSError(errno.EPERM, "Operation not permitted"), 9, "adding it")
    assert isinstance(err, PermissionError)
    assert err.errno == errno.EPERM
    assert err.fd == 9  # type: ignore[attr-defined]
    assert "fd 9" in str(err)


def test_closed_error_is_not_tied_to_an_event_loop() -> None:
    """A decision (see ClosedError's docstring): the low-level layer imports no loop."""
    assert ClosedError.__mro__[1:] == (NetpollError, Exception, BaseException, object)


@pytest.mark.anyio
async def test_errors_raised_by_the_poller_say_what_they_are_about(
    poller_config: Config, sockpair: tuple[socket.socket, socket.socket]
) -> None:
    a, _ = sockpair
    desc = handle_read(a)
    async with Poller(poller_config) as poller:
        with pytest.raises(NotRegisteredError) as not_registered:
            poller.stop(desc)
        assert (not_registered.value.fd, not_registered.value.desc) == (a.fileno(), desc)
        poller.start(desc)
        with pytest.raises(RegisteredError) as registered:
            poller.start(desc)
        assert (registered.value.fd, registered.value.desc) == (a.fileno(), desc)
        with tempfile.TemporaryFile() as regular:
            with pytest.raises(PermissionError) as refused:
                poller.start(new_desc(regular.fileno(), Event.READ))
            assert refused.value.fd == regular.fileno()  # type: ignore[attr-defined]
        poller.stop(desc)


def test_errors_raised_by_epoll_carry_the_fd(sockpair: tuple[socket.socket, socket.socket]) -> None:
    a, _ = sockpair
    with Epoll() as ep:
        with pytest.raises(NotRegisteredError) as not_registered:
            ep.delete(a.fileno())
        assert (not_registered.value.fd, not_registered.value.desc) == (a.fileno(), None)
        ep.add(a.fileno(), EpollEvent.EPOLLIN, lambda mask: None)
        with pytest.raises(RegisteredError) as registered:
            ep.add(a.fileno(), EpollEvent.EPOLLIN, lambda mask: None)
        assert registered.value.fd == a.fileno()
        ep.delete(a.fileno())
