"""Descriptors: every accepted input kind, every rejected one, flags, no dup, non-blocking."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

import anyio
import pytest
import trio
from anyio.streams.stapled import MultiListener

import netpoll_trio as np
from netpoll_trio import Desc, Event, NotFilerError

from .conftest import open_fds

HELPERS: list[tuple[Callable[[Any], Desc], Event]] = [
    (np.handle_read, Event.READ | Event.EDGE_TRIGGERED),
    (np.handle_read_once, Event.READ | Event.ONE_SHOT),
    (np.handle_write, Event.WRITE | Event.EDGE_TRIGGERED),
    (np.handle_write_once, Event.WRITE | Event.ONE_SHOT),
    (np.handle_read_write, Event.READ | Event.WRITE | Event.EDGE_TRIGGERED),
]


@pytest.mark.parametrize(("helper", "event"), HELPERS)
def test_helper_flags(
    helper: Callable[[Any], Desc], event: Event, sockpair: tuple[socket.socket, socket.socket]
) -> None:
    a, _ = sockpair
    desc = helper(a)
    assert desc.event == event
    assert desc.fileno() == a.fileno()


def test_handle_listener(sockpair: tuple[socket.socket, socket.socket]) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        desc = np.handle_listener(listener, Event.READ)
        assert desc.fileno() == listener.fileno()
        assert not listener.getblocking()


def test_new_desc_does_not_touch_the_fd(sockpair: tuple[socket.socket, socket.socket]) -> None:
    a, _ = sockpair
    a.setblocking(True)
    desc = np.new_desc(a.fileno(), Event.READ)
    assert desc.fileno() == a.fileno()
    assert desc.event == Event.READ
    assert a.getblocking()


def test_repr_shows_fd_and_flags(sockpair: tuple[socket.socket, socket.socket]) -> None:
    a, _ = sockpair
    assert repr(np.handle_read(a)) == f"<Desc fd={a.fileno()} event=READ|EDGE_TRIGGERED>"


def test_no_dup_and_non_blocking(sockpair: tuple[socket.socket, socket.socket]) -> None:
    a, _ = sockpair
    a.setblocking(True)
    before = open_fds()
    descs = [np.handle(a, Event.READ), np.handle(a.fileno(), Event.WRITE)]
    assert open_fds() == before
    assert all(d.fileno() == a.fileno() for d in descs)
    assert not os.get_blocking(a.fileno())


def test_int_fd_of_a_pipe_and_an_eventfd() -> None:
    r, w = os.pipe()
    efd = os.eventfd(0)
    try:
        for fd in (r, w, efd):
            assert np.handle(fd, Event.READ).fileno() == fd
            assert not os.get_blocking(fd)
    finally:
        for fd in (r, w, efd):
            os.close(fd)


def test_trio_socket(sockpair: tuple[socket.socket, socket.socket]) -> None:
    a, _ = sockpair
    tsock = trio.socket.from_stdlib_socket(a)
    assert np.handle_read(tsock).fileno() == a.fileno()


@pytest.mark.trio
async def test_trio_socket_stream_and_listener() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    listener = listeners[0]
    port = listener.socket.getsockname()[1]
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    try:
        assert np.handle_read(stream).fileno() == stream.socket.fileno()
        assert np.handle_listener(listener, Event.READ).fileno() == listener.socket.fileno()
    finally:
        await stream.aclose()
        await listener.aclose()


@pytest.mark.anyio
async def test_anyio_stream_listener_and_multilistener() -> None:
    multi = await anyio.create_tcp_listener(local_host="127.0.0.1")
    assert len(multi.listeners) == 1
    port = multi.extra(anyio.abc.SocketAttribute.local_port)
    stream = await anyio.connect_tcp("127.0.0.1", port)
    try:
        raw = stream.extra(anyio.abc.SocketAttribute.raw_socket)
        assert np.handle_read(stream).fileno() == raw.fileno()
        inner = multi.listeners[0]
        raw_listener = inner.extra(anyio.abc.SocketAttribute.raw_socket)
        assert np.handle_listener(inner, Event.READ).fileno() == raw_listener.fileno()
        assert np.handle_listener(multi, Event.READ).fileno() == raw_listener.fileno()
    finally:
        await stream.aclose()
        await multi.aclose()


@pytest.mark.anyio
async def test_multilistener_with_two_listeners_is_refused() -> None:
    one = await anyio.create_tcp_listener(local_host="127.0.0.1")
    two = await anyio.create_tcp_listener(local_host="127.0.0.1")
    multi = MultiListener([one, two])
    try:
        with pytest.raises(NotFilerError, match="2 listeners and a Desc is one fd"):
            np.handle_listener(multi, Event.READ)
    finally:
        await multi.aclose()


class _RaisingFileno:
    def fileno(self) -> int:
        raise OSError("nope")


class _StrFileno:
    def fileno(self) -> str:
        return "3"


def _closed_socket() -> socket.socket:
    s = socket.socket()
    s.close()
    return s


REJECTED = [
    (None, "NoneType is not an int fd"),
    ("3", "str is not an int fd"),
    (3.0, "float is not an int fd"),
    (True, "bool"),
    (object(), "object is not an int fd"),
    (-5, "file descriptor -5 is negative"),
    (2**40, "larger than any fd can be"),
    (_RaisingFileno(), r"fileno\(\) raised OSError"),
    (_StrFileno(), "expected an int file descriptor, got str"),
    (_closed_socket(), r"-1 is negative \(is it closed\?\)"),
]


@pytest.mark.parametrize(("conn", "match"), REJECTED)
def test_rejected_inputs(conn: object, match: str) -> None:
    with pytest.raises(NotFilerError, match=match) as info:
        np.handle_read(conn)
    assert str(info.value).startswith("could not get file descriptor from ")


def test_closed_int_fd_names_the_fd() -> None:
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    with pytest.raises(OSError, match=f"fd {r}: setting it non-blocking") as info:
        np.handle_read(r)
    assert info.value.errno == 9


@pytest.mark.parametrize(
    "bad",
    [
        Event.HUP,
        Event.READ | Event.ERR,
        Event.POLLER_CLOSED,
        Event.READ | Event.READ_HUP | Event.WRITE_HUP,
    ],
)
def test_event_bits_beyond_configuration_are_refused(
    bad: Event, sockpair: tuple[socket.socket, socket.socket]
) -> None:
    a, _ = sockpair
    extra = bad & ~(Event.READ | Event.WRITE | Event.ONE_SHOT | Event.EDGE_TRIGGERED)
    with pytest.raises(ValueError, match=str(Event(extra)).replace("|", r"\|")):
        np.handle(a, bad)
    with pytest.raises(ValueError, match="may hold only READ, WRITE, ONE_SHOT and EDGE_TRIGGERED"):
        np.new_desc(a.fileno(), bad)


def test_event_of_the_wrong_type(sockpair: tuple[socket.socket, socket.socket]) -> None:
    a, _ = sockpair
    with pytest.raises(TypeError, match="must be an Event"):
        np.handle(a, "READ")  # type: ignore[arg-type]


def test_no_interest_is_allowed(sockpair: tuple[socket.socket, socket.socket]) -> None:
    a, _ = sockpair
    assert np.handle(a, Event(0)).event == Event(0)
    assert np.handle(a, Event.EDGE_TRIGGERED).event == Event.EDGE_TRIGGERED
