"""Unit tests of where batches come from: netpoll_trio._collector and netpoll_trio._sources.

The :class:`Collector` is the one place that waits on an epoll object (the events buffer,
temporary errors, the wake-up count that is every batch's epoch, closing); the sources
drive it from the wait thread or from the loop. Real epoll objects, faults only through
``Syscalls``.
"""

from __future__ import annotations

import errno
import socket
import threading
from typing import Any

import anyio
import pytest

from netpoll_trio import EpollEvent, Syscalls
from netpoll_trio._backends import current_backend
from netpoll_trio._collector import INITIAL_EVENTS, MAX_EVENTS, Collector
from netpoll_trio._sources import UNOPENED, LoopSource, ThreadSource

IN = int(EpollEvent.EPOLLIN)
ET = int(EpollEvent.EPOLLET)


def full_batches(ep: Any, maxevents: int, timeout: float) -> list[tuple[int, int]]:
    """A wait that always fills the buffer it is given."""
    return [(1000 + i, IN) for i in range(maxevents)]


def failing(*errnos: int) -> Any:
    """A wait raising OSError with each errno in turn, then waiting for real."""
    pending = list(errnos)

    def wait(ep: Any, maxevents: int, timeout: float) -> list[tuple[int, int]]:
        if pending:
            code = pending.pop(0)
            raise OSError(code, errno.errorcode[code])
        return Syscalls().wait(ep, maxevents, timeout)

    return wait


# ----------------------------------------------------------------- the collector


def test_the_events_buffer_doubles_while_full_up_to_its_cap() -> None:
    collector = Collector(Syscalls(wait=full_batches))
    try:
        sizes = []
        for _ in range(8):
            batch = collector.collect(0)
            assert batch is not None
            sizes.append(len(batch))
        assert sizes[0] == INITIAL_EVENTS == 1024
        assert sizes == [1024, 2048, 4096, 8192, 16384, 32768, 32768, 32768]
        assert collector.maxevents == MAX_EVENTS
    finally:
        collector.close()


def test_the_buffer_stays_small_while_batches_are() -> None:
    collector = Collector(Syscalls())
    a, b = socket.socketpair()
    try:
        collector.epoll.register(a.fileno(), IN)
        b.send(b"x")
        assert collector.collect(0) == [(a.fileno(), IN)]
        assert collector.collect(0) == [(a.fileno(), IN)]  # level-triggered: again
        assert collector.maxevents == INITIAL_EVENTS
    finally:
        collector.close()
        a.close()
        b.close()


def test_every_return_from_epoll_wait_counts_as_a_wakeup() -> None:
    collector = Collector(Syscalls())
    try:
        assert collector.wakeups == 0
        assert collector.collect(0) == []  # an empty return is a wake-up too
        assert collector.collect(0) == []
        assert collector.wakeups == 2
    finally:
        collector.close()


@pytest.mark.parametrize(
    "code", [errno.EINTR, errno.EAGAIN, errno.EMFILE, errno.ENFILE, errno.ETIMEDOUT]
)
@pytest.mark.parametrize("timeout", [0, -1], ids=["loop", "thread"])
def test_temporary_errors_are_retried(code: int, timeout: float) -> None:
    collector = Collector(Syscalls(wait=failing(code)))
    a, b = socket.socketpair()
    try:
        collector.epoll.register(a.fileno(), IN)
        b.send(b"x")
        assert collector.collect(timeout) is None  # try again
        assert collector.wakeups == 0  # not a return from epoll_wait
        assert collector.collect(timeout) == [(a.fileno(), IN)]
        assert collector.wakeups == 1
    finally:
        collector.close()
        a.close()
        b.close()


def test_other_errors_are_fatal() -> None:
    collector = Collector(Syscalls(wait=failing(errno.EIO)))
    try:
        with pytest.raises(OSError, match="EIO") as info:
            collector.collect(-1)
        assert info.value.errno == errno.EIO
    finally:
        collector.close()


def test_close_releases_the_fd_even_when_the_seam_fails() -> None:
    def close_epoll(ep: Any) -> None:
        raise OSError(errno.EIO, "injected")

    collector = Collector(Syscalls(close_epoll=close_epoll))
    error = collector.close()
    assert isinstance(error, OSError)
    assert error.errno == errno.EIO
    assert collector.epoll.closed


def test_close_releases_the_fd_before_an_interrupt_propagates() -> None:
    def close_epoll(ep: Any) -> None:
        raise KeyboardInterrupt

    collector = Collector(Syscalls(close_epoll=close_epoll))
    with pytest.raises(KeyboardInterrupt):
        collector.close()
    assert collector.epoll.closed


# ----------------------------------------------------------------- the sources


def test_an_unopened_poller_has_a_source_with_no_wakeups() -> None:
    assert UNOPENED.wakeups == 0
    assert UNOPENED.stop() is None
    assert UNOPENED.take_unreported() is None


@pytest.mark.anyio
@pytest.mark.parametrize("kind", [ThreadSource, LoopSource], ids=["thread", "loop"])
async def test_a_source_delivers_batches_on_the_loop_thread_with_their_epoch(
    anyio_backend: Any, kind: Any, sockpair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = sockpair
    loop_thread = threading.get_ident()
    got: list[tuple[int, list[tuple[int, int]], int, int]] = []
    died: list[BaseException] = []
    arrived = anyio.Event()

    def deliver(records: list[tuple[int, int]], epoch: int) -> None:
        got.append((threading.get_ident(), records, epoch, source.wakeups))
        source.delivered()
        arrived.set()

    source = kind(Syscalls(), current_backend(), deliver, died.append)
    try:
        source.interest_list.register(a.fileno(), IN | ET)
        source.start()
        b.send(b"x")
        with anyio.fail_after(10):
            await arrived.wait()
    finally:
        assert source.stop() is None
    assert source.collector.epoll.closed
    assert died == []
    assert source.take_unreported() is None
    [(thread, records, epoch, wakeups)] = got
    assert thread == loop_thread
    assert records == [(a.fileno(), IN)]
    assert epoch == wakeups >= 1  # stamped with the count at which it was collected


@pytest.mark.anyio
@pytest.mark.parametrize("kind", [ThreadSource, LoopSource], ids=["thread", "loop"])
async def test_a_fatal_wait_error_reaches_the_owner(anyio_backend: Any, kind: Any) -> None:
    died: list[BaseException] = []
    reported = anyio.Event()

    def on_died(error: BaseException) -> None:
        died.append(error)
        reported.set()

    source = kind(Syscalls(wait=failing(errno.EIO)), current_backend(), lambda r, e: None, on_died)
    try:
        if kind is LoopSource:
            # The loop source waits only when the loop sees the epoll fd readable.
            r, w = socket.socketpair()
            source.interest_list.register(r.fileno(), IN)
            w.send(b"x")
        source.start()
        with anyio.fail_after(10):
            await reported.wait()
    finally:
        source.stop()
        if kind is LoopSource:
            r.close()
            w.close()
    [error] = died
    assert isinstance(error, OSError)
    assert error.errno == errno.EIO
