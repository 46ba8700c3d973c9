"""The low-level, thread-backed Epoll: Go's four tests, then one test per Go bug we fix.

No sleeps as synchronisation: every wait is on a threading.Event with a generous timeout
that only bounds a failure.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import tempfile
import threading
from collections.abc import Callable
from typing import Any

import pytest

import netpoll_trio as np
from netpoll_trio import ClosedError, Epoll, EpollConfig, EpollEvent, Syscalls

from .conftest import GatedWait, netpoll_threads, open_fds

IN = EpollEvent.EPOLLIN
ET = EpollEvent.EPOLLET
CLOSED = EpollEvent.EPOLLCLOSED
TIMEOUT = 10  # bounds a failure only; a passing test never waits this long


def wait_for(event: threading.Event) -> None:
    assert event.wait(TIMEOUT), "timed out waiting for the wait thread"


# ----------------------------------------------------------------- Go's tests


def test_create_close_is_clean() -> None:
    before = open_fds()
    ep = np.epoll_create()
    (thread,) = netpoll_threads()
    assert thread.name.startswith("netpoll-wait-")
    assert thread.daemon
    ep.close()
    assert open_fds() == before
    assert not netpoll_threads()


def test_add_after_close_raises(sockpair: tuple[socket.socket, socket.socket]) -> None:
    a, _ = sockpair
    ep = Epoll()
    ep.close()
    with pytest.raises(ClosedError):
        ep.add(a.fileno(), IN, lambda ev: None)
    with pytest.raises(ClosedError):
        ep.modify(a.fileno(), IN)
    with pytest.raises(ClosedError):
        ep.delete(a.fileno())
    with pytest.raises(ClosedError):
        ep.close()


def test_delete_of_a_registered_fd(sockpair: tuple[socket.socket, socket.socket]) -> None:
    a, _ = sockpair
    with Epoll() as ep:
        ep.add(a.fileno(), IN, lambda ev: None)
        ep.delete(a.fileno())
        with pytest.raises(np.NotRegisteredError):
            ep.delete(a.fileno())


def test_server_accepting_inside_callbacks() -> None:
    """Go's TestEpollServer: accept in the listener's callback, add the connection from
    inside it, and receive "hello, epoll!" sent byte by byte."""
    message = b"hello, epoll!"
    received = bytearray()
    done = threading.Event()
    conns: list[socket.socket] = []
    with socket.socket() as listener, Epoll() as ep:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)

        def on_conn(ev: EpollEvent) -> None:
            conn = conns[0]
            while True:
                try:
                    data = conn.recv(64)
                except BlockingIOError:
                    return
                received.extend(data)
                if bytes(received) == message:
                    done.set()
                if not data:
                    return

        def on_listener(ev: EpollEvent) -> None:
            conn, _ = listener.accept()
            conn.setblocking(False)
            conns.append(conn)
            ep.add(conn.fileno(), IN | ET, on_conn)

        ep.add(listener.fileno(), IN, on_listener)
        with socket.create_connection(listener.getsockname()) as client:
            for byte in message:
                client.send(bytes([byte]))
            wait_for(done)
            ep.delete(conns[0].fileno())
        ep.delete(listener.fileno())
    for conn in conns:
        conn.close()
    assert bytes(received) == message


# ----------------------------------------------------------------- the Go bugs


def test_bug1_failed_add_leaves_no_entry(sockpair: tuple[socket.socket, socket.socket]) -> None:
    with tempfile.TemporaryFile() as regular, Epoll() as ep:
        fd = regular.fileno()
        with pytest.raises(PermissionError, match=f"fd {fd}"):
            ep.add(fd, IN, lambda ev: None)
        with pytest.raises(np.NotRegisteredError):
            ep.delete(fd)
        # The same fd number, now a socket, can be added.
        regular.close()
        a, b = sockpair
        os.dup2(a.fileno(), fd)
        try:
            got = threading.Event()
            ep.add(fd, IN, lambda ev: got.set())
            b.send(b"x")
            wait_for(got)
            ep.delete(fd)
        finally:
            os.close(fd)


def test_bug1_closed_fd_is_refused_with_ebadf() -> None:
    with Epoll() as ep:
        r, w = os.pipe()  # after the Epoll, so its own fds cannot take these numbers
        os.close(r)
        os.close(w)
        with pytest.raises(OSError, match=f"fd {r}") as info:
            ep.add(r, IN, lambda ev: None)
        assert info.value.errno == errno.EBADF


def test_bug2_no_callback_after_delete_from_another_thread(make_pair: Any) -> None:
    """The wait thread is held inside a callback (batch collected, in progress) while
    another thread deletes a second fd of the same batch: once delete() returns, that
    fd's callback must never run, although its record is already in the batch."""
    a1, b1 = make_pair()
    a2, b2 = make_pair()
    in_first = threading.Event()
    release_first = threading.Event()
    calls: list[str] = []
    deleted = threading.Event()

    def first(ev: EpollEvent) -> None:
        calls.append("first")
        in_first.set()
        wait_for(release_first)

    def second(ev: EpollEvent) -> None:
        calls.append("second-after-delete" if deleted.is_set() else "second")

    with Epoll() as ep:
        ep.add(a1.fileno(), IN, first)
        ep.add(a2.fileno(), IN, second)
        b1.send(b"x")
        b2.send(b"x")
        wait_for(in_first)
        if calls == ["first"]:
            # The batch may hold both records; delete blocks until the batch is over.
            deleter = threading.Thread(target=lambda: (ep.delete(a2.fileno()), deleted.set()))
            deleter.start()
            release_first.set()
            deleter.join(TIMEOUT)
            assert deleted.is_set()
        else:  # the two records came in separate batches; delete now
            release_first.set()
            ep.delete(a2.fileno())
            deleted.set()
        ep.delete(a1.fileno())
    assert "second-after-delete" not in calls


def test_bug2_callback_deleting_a_later_record_of_the_batch(make_pair: Any) -> None:
    pairs = [make_pair() for _ in range(8)]
    calls: list[int] = []
    deleted: set[int] = set()
    all_sent = threading.Event()
    done = threading.Event()

    with Epoll() as ep:

        def make_cb(fd: int) -> Callable[[EpollEvent], None]:
            def cb(ev: EpollEvent) -> None:
                calls.append(fd)
                # The first callback to run deletes every other fd: none of them may run.
                if not deleted:
                    for other_a, _ in pairs:
                        if other_a.fileno() != fd:
                            ep.delete(other_a.fileno())
                            deleted.add(other_a.fileno())
                    done.set()

            return cb

        for a, _ in pairs:
            ep.add(a.fileno(), IN | ET, make_cb(a.fileno()))
        for _, b in pairs:
            b.send(b"x")
        all_sent.set()
        wait_for(done)
        (first,) = set(calls)
        ep.delete(first)
    assert len(calls) == 1


def test_bug2_readded_fd_does_not_get_the_old_record(make_pair: Any) -> None:
    a1, b1 = make_pair()
    a2, b2 = make_pair()
    events_of_new: list[EpollEvent] = []
    done = threading.Event()
    with Epoll() as ep:

        def new_cb(ev: EpollEvent) -> None:
            events_of_new.append(ev)

        def first(ev: EpollEvent) -> None:
            # Delete a2 and re-add it for EPOLLOUT only, inside the batch that may already
            # hold a2's EPOLLIN record: the new registration must not get that record.
            ep.delete(a2.fileno())
            ep.add(a2.fileno(), EpollEvent.EPOLLOUT | ET, new_cb)
            done.set()

        ep.add(a1.fileno(), IN, first)
        ep.add(a2.fileno(), IN, lambda ev: None)
        b2.send(b"x")
        b1.send(b"x")
        wait_for(done)
        ep.delete(a1.fileno())
        ep.delete(a2.fileno())
    assert all(ev & EpollEvent.EPOLLIN == 0 for ev in events_of_new)


def test_bug3_batch_with_the_close_signal_gets_epollclosed(
    sockpair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = sockpair
    gated = GatedWait()
    got: list[EpollEvent] = []
    ep = Epoll(EpollConfig(syscalls=Syscalls(wait=gated)))
    ep.add(a.fileno(), IN, got.append)
    gated.gate = True
    b.send(b"x")
    wait_for(gated.collected)  # a's record is collected, not delivered
    closer = threading.Thread(target=ep.close)
    closer.start()
    gated.release.set()
    closer.join(TIMEOUT)
    assert not closer.is_alive()
    # Either delivered before close, or replaced by EPOLLCLOSED -- never nothing.
    assert got[-1] == CLOSED
    assert got in ([CLOSED], [IN, CLOSED])


def test_bug4_close_from_inside_a_callback(sockpair: tuple[socket.socket, socket.socket]) -> None:
    a, b = sockpair
    closed_seen = threading.Event()
    got: list[EpollEvent] = []
    ep = Epoll()

    def cb(ev: EpollEvent) -> None:
        got.append(ev)
        if ev == CLOSED:
            closed_seen.set()
            return
        ep.close()  # must not deadlock: returns at once, the thread finishes the close
        assert ep.closed
        with pytest.raises(ClosedError):
            ep.add(b.fileno(), IN, cb)

    ep.add(a.fileno(), IN, cb)
    b.send(b"x")
    wait_for(closed_seen)
    with ep:  # joins the finished thread
        pass
    assert got == [IN, CLOSED]
    with pytest.raises(ClosedError):
        ep.close()


def test_bug5_dead_wait_loop_closes_the_instance(
    sockpair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = sockpair
    fail = threading.Event()
    reported: list[OSError] = []
    got: list[EpollEvent] = []
    order: list[str] = []
    done = threading.Event()

    def wait(ep: Any, maxevents: int, timeout: float) -> list[tuple[int, int]]:
        records = Syscalls().wait(ep, maxevents, timeout)
        if fail.is_set():
            raise OSError(errno.EIO, "injected fatal wait error")
        return records

    def on_error(err: OSError) -> None:
        order.append("on_wait_error")
        reported.append(err)
        done.set()

    def cb(ev: EpollEvent) -> None:
        order.append(str(ev))
        got.append(ev)

    ep = Epoll(EpollConfig(on_wait_error=on_error, syscalls=Syscalls(wait=wait)))
    ep.add(a.fileno(), IN, cb)
    fail.set()
    b.send(b"x")
    wait_for(done)
    assert ep.closed
    assert got == [CLOSED]
    assert order == ["EPOLLCLOSED", "on_wait_error"]
    assert reported[0].errno == errno.EIO
    with pytest.raises(ClosedError):
        ep.add(a.fileno(), IN, cb)
    with ep:  # leaving the block joins the thread; no second-close error
        pass


def test_bug5_default_reporting_logs(
    sockpair: tuple[socket.socket, socket.socket], caplog: pytest.LogCaptureFixture
) -> None:
    _a, _b = sockpair
    ep = Epoll(
        EpollConfig(
            syscalls=Syscalls(
                wait=lambda ep, n, timeout: (_ for _ in ()).throw(OSError(errno.EIO, "injected"))
            )
        )
    )
    with caplog.at_level(logging.ERROR, logger="netpoll_trio"), ep:
        pass
    # The loop died at once; by the time the block joined it, the log line is there.
    assert "netpoll: wait loop error: [Errno 5] injected" in caplog.text
    assert ep.closed


def test_temporary_wait_errors_are_retried(sockpair: tuple[socket.socket, socket.socket]) -> None:
    a, b = sockpair
    failures = [errno.EINTR, errno.EAGAIN, errno.EMFILE, errno.ENFILE, errno.ETIMEDOUT]
    pending = list(failures)
    got = threading.Event()

    def wait(ep: Any, maxevents: int, timeout: float) -> list[tuple[int, int]]:
        if pending:
            raise OSError(pending.pop(0), "injected temporary error")
        return Syscalls().wait(ep, maxevents, timeout)

    with Epoll(EpollConfig(syscalls=Syscalls(wait=wait))) as ep:
        ep.add(a.fileno(), IN, lambda ev: got.set())
        b.send(b"x")
        wait_for(got)
        assert not ep.closed
        ep.delete(a.fileno())
    assert not pending


def test_bug6_failed_wake_uses_the_fallback_and_leaks_nothing() -> None:
    before = open_fds()

    def wake(fd: int) -> None:
        raise OSError(errno.EIO, "injected wake failure")

    ep = Epoll(EpollConfig(syscalls=Syscalls(wake=wake)))
    ep.close()
    assert not netpoll_threads()
    assert open_fds() == before


def test_bug6_failed_close_still_closes_everything(
    sockpair: tuple[socket.socket, socket.socket],
) -> None:
    a, _ = sockpair
    before = open_fds()
    got: list[EpollEvent] = []

    def close(fd: int) -> None:
        os.close(fd)  # as close(2) on Linux: the fd is released, then the error reported
        raise OSError(errno.EIO, "injected close failure")

    ep = Epoll(EpollConfig(syscalls=Syscalls(close=close)))
    ep.add(a.fileno(), IN, got.append)
    with pytest.raises(OSError, match="injected close failure"):
        ep.close()
    assert ep.closed
    assert got == [CLOSED]
    assert open_fds() == before
    with pytest.raises(ClosedError):
        ep.close()


def test_every_fd_is_close_on_exec() -> None:
    before = open_fds()
    with Epoll():
        new = open_fds() - before
        assert len(new) == 2  # the epoll fd and the eventfd
        assert all(not os.get_inheritable(fd) for fd in new)


# ----------------------------------------------------------------- more semantics


def test_close_calls_remaining_callbacks_once_and_not_deleted_ones(make_pair: Any) -> None:
    (a1, _), (a2, _) = make_pair(), make_pair()
    got: dict[str, list[EpollEvent]] = {"kept": [], "deleted": []}
    with Epoll() as ep:
        ep.add(a1.fileno(), IN, got["kept"].append)
        ep.add(a2.fileno(), IN, got["deleted"].append)
        ep.delete(a2.fileno())
    assert got == {"kept": [CLOSED], "deleted": []}


def test_registered_and_not_registered_errors(
    sockpair: tuple[socket.socket, socket.socket],
) -> None:
    a, _ = sockpair
    with Epoll() as ep:
        ep.add(a, IN, lambda ev: None)  # anything with fileno() is accepted
        with pytest.raises(np.RegisteredError, match=f"fd {a.fileno()}"):
            ep.add(a.fileno(), IN, lambda ev: None)
        with pytest.raises(TypeError, match="callable"):
            ep.add(a.fileno(), IN, "not callable")  # type: ignore[arg-type]
        with pytest.raises(np.NotFilerError):
            ep.add(None, IN, lambda ev: None)  # type: ignore[arg-type]
        ep.delete(a.fileno())
        with pytest.raises(np.NotRegisteredError):
            ep.modify(a.fileno(), IN)


def test_modify_rearms_a_oneshot(sockpair: tuple[socket.socket, socket.socket]) -> None:
    a, b = sockpair
    a.setblocking(False)
    got = threading.Semaphore(0)
    with Epoll() as ep:
        ep.add(a.fileno(), IN | EpollEvent.EPOLLONESHOT, lambda ev: got.release())
        b.send(b"x")
        assert got.acquire(timeout=TIMEOUT)
        ep.modify(a.fileno(), IN | EpollEvent.EPOLLONESHOT)  # still readable: fires again
        assert got.acquire(timeout=TIMEOUT)
        ep.delete(a.fileno())


def test_delete_of_an_fd_closed_already_works() -> None:
    a, b = socket.socketpair()
    with Epoll() as ep:
        ep.add(a.fileno(), IN, lambda ev: None)
        fd = a.fileno()
        a.close()
        ep.delete(fd)
        with pytest.raises(np.NotRegisteredError):
            ep.delete(fd)
    b.close()


def test_callback_exception_is_logged_and_the_loop_goes_on(
    make_pair: Any, caplog: pytest.LogCaptureFixture
) -> None:
    (a1, b1), (a2, b2) = make_pair(), make_pair()
    got = threading.Event()

    def bad(ev: EpollEvent) -> None:
        raise ValueError("callback bug")

    with caplog.at_level(logging.ERROR, logger="netpoll_trio"), Epoll() as ep:
        ep.add(a1.fileno(), IN | ET, bad)
        ep.add(a2.fileno(), IN | ET, lambda ev: got.set())
        b1.send(b"x")
        b2.send(b"x")
        wait_for(got)
        ep.delete(a1.fileno())
        ep.delete(a2.fileno())
    assert "callback bug" in caplog.text


def test_buffer_grows_for_large_batches(make_pair: Any) -> None:
    n = 1500  # more than the initial 1024-record buffer
    pairs = [make_pair() for _ in range(n)]
    seen: set[int] = set()
    done = threading.Event()
    lock = threading.Lock()

    def cb_for(fd: int) -> Callable[[EpollEvent], None]:
        def cb(ev: EpollEvent) -> None:
            with lock:
                seen.add(fd)
                if len(seen) == n:
                    done.set()

        return cb

    with Epoll() as ep:
        for a, _ in pairs:
            ep.add(a.fileno(), IN | ET, cb_for(a.fileno()))
        for _, b in pairs:
            b.send(b"x")
        wait_for(done)
        for a, _ in pairs:
            ep.delete(a.fileno())


def test_thread_safety_add_delete_from_many_threads_while_events_flow(make_pair: Any) -> None:
    """Four threads add and delete their own fds repeatedly while a fifth keeps a busy
    fd firing; afterwards the registry is consistent and nothing ran after its delete."""
    busy_a, busy_b = make_pair()
    stop = threading.Event()
    errors: list[BaseException] = []
    late_calls: list[int] = []

    with Epoll() as ep:
        ep.add(busy_a.fileno(), IN | ET, lambda ev: busy_a.recv(65536))

        def churn(worker: int) -> None:
            try:
                pairs = [socket.socketpair() for _ in range(4)]
                try:
                    for _round in range(200):
                        for a, b in pairs:
                            live = {"on": True}

                            def cb(
                                ev: EpollEvent, live: dict[str, bool] = live, fd: int = a.fileno()
                            ) -> None:
                                if not live["on"]:
                                    late_calls.append(fd)

                            ep.add(a.fileno(), IN, cb)
                            b.send(b"x")
                            ep.delete(a.fileno())
                            live["on"] = False
                            a.recv(16)
                finally:
                    for a, b in pairs:
                        a.close()
                        b.close()
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        def pump() -> None:
            while not stop.is_set():
                with contextlib.suppress(BlockingIOError):  # buffer full: try again
                    busy_b.send(b"y")

        busy_b.setblocking(False)
        threads = [threading.Thread(target=churn, args=(i,)) for i in range(4)]
        pumper = threading.Thread(target=pump)
        pumper.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        stop.set()
        pumper.join(TIMEOUT)
        ep.delete(busy_a.fileno())
    assert not errors
    assert not late_calls
