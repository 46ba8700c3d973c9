"""Bad input gets a clear exception and the poller keeps working; injected faults (through
the documented ``Syscalls`` seam, never by patching the stdlib) leave nothing behind."""

from __future__ import annotations

import errno
import os
import socket
import tempfile
import threading
from dataclasses import replace
from typing import Any

import anyio
import pytest
import trio

import netpoll_trio as np
from netpoll_trio import Config, Event, Poller, Syscalls

from .conftest import GatedWait, drain, netpoll_threads, open_fds
from .test_poller import Signal, round_trip

READ, HUP, CLOSED = Event.READ, Event.HUP, Event.POLLER_CLOSED


async def still_works(poller: Poller, make_pair: Any) -> None:
    """The poller delivers events normally after whatever went wrong."""
    await round_trip(poller, make_pair())


# ----------------------------------------------------------------- bad input


@pytest.mark.anyio
async def test_closed_fd_is_refused_naming_the_fd(make_pair: Any, poller_config: Config) -> None:
    async with Poller(poller_config) as poller:
        r, w = os.pipe()
        os.close(r)
        os.close(w)
        with pytest.raises(OSError, match=f"fd {r}") as info:
            poller.start(np.new_desc(r, READ))
        assert info.value.errno == errno.EBADF
        assert poller.statistics().registered == 0
        await still_works(poller, make_pair)


@pytest.mark.anyio
async def test_huge_and_negative_fds_are_refused(poller_config: Config) -> None:
    with pytest.raises(np.NotFilerError, match="negative"):
        np.new_desc(-1, READ)
    with pytest.raises(np.NotFilerError, match="larger than any fd"):
        np.new_desc(2**31, READ)
    async with Poller(poller_config) as poller:
        with pytest.raises(OSError, match="fd 1999999") as info:
            poller.start(np.new_desc(1999999, READ))  # a valid number, but not open
        assert info.value.errno == errno.EBADF


@pytest.mark.anyio
async def test_regular_file_is_refused_with_eperm_and_leaves_nothing(
    make_pair: Any, poller_config: Config
) -> None:
    async with Poller(poller_config) as poller:
        with tempfile.TemporaryFile() as regular:
            fd = regular.fileno()
            with pytest.raises(PermissionError, match=f"fd {fd}: registering it with epoll"):
                poller.start(np.handle_read(regular))
            assert poller.statistics().registered == 0
            with pytest.raises(np.NotRegisteredError):
                poller.stop(np.new_desc(fd, READ))
        await still_works(poller, make_pair)


@pytest.mark.anyio
async def test_pipe_and_eventfd_work(poller_config: Config) -> None:
    r, w = os.pipe()
    efd = os.eventfd(0)
    try:
        async with Poller(poller_config) as poller:
            got = Signal()
            seen: list[tuple[str, Event]] = []
            for name, fd in (("pipe", r), ("eventfd", efd)):

                def cb(ev: Event, name: str = name, fd: int = fd) -> None:
                    if ev != CLOSED:
                        os.read(fd, 8)  # consumed: a level-triggered desc is reported again
                        seen.append((name, ev))
                        got.set()

                desc = np.handle_read(fd)
                poller.start(desc, cb)
                if name == "pipe":
                    os.write(w, b"x")
                else:
                    os.eventfd_write(efd, 1)
                await got.wait()
                poller.stop(desc)
            assert seen == [("pipe", READ), ("eventfd", READ)]
    finally:
        for fd in (r, w, efd):
            os.close(fd)


@pytest.mark.anyio
async def test_unknown_desc_and_wrong_types(make_pair: Any, poller_config: Config) -> None:
    a, _ = make_pair()
    async with Poller(poller_config) as poller:
        unknown = np.handle_read(a)
        with pytest.raises(np.NotRegisteredError, match="not registered before"):
            poller.stop(unknown)
        with pytest.raises(np.NotRegisteredError):
            poller.resume(unknown)
        with pytest.raises(TypeError, match="callback must be callable, got 42"):
            poller.start(unknown, 42)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="expected a Desc"):
            poller.start(a.fileno())  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="expected a Desc"):
            poller.stop("nope")  # type: ignore[arg-type]
        assert poller.statistics().registered == 0
        await still_works(poller, make_pair)


@pytest.mark.epoll_only(
    "the portable mode sees a hang-up only as readiness: no READ or WRITE interest, no event"
)
@pytest.mark.anyio
async def test_desc_with_no_read_or_write_interest_gets_only_hup(
    make_pair: Any, poller_config: Config
) -> None:
    a, b = make_pair()
    got = Signal()
    events: list[Event] = []
    async with Poller(poller_config) as poller:
        desc = np.handle(a, Event.EDGE_TRIGGERED)  # no READ/WRITE: allowed, as in Go

        def cb(ev: Event) -> None:
            if ev != CLOSED:
                events.append(ev)
                got.set()

        poller.start(desc, cb)
        b.send(b"data")  # readable, but no READ interest: nothing
        await round_trip(poller, make_pair())
        assert events == []
        b.close()  # hang-up is always reported
        await got.wait()
        poller.stop(desc)
    assert events == [HUP]


@pytest.mark.anyio
async def test_aclose_from_a_task_spawned_by_a_callback(
    make_pair: Any, poller_config: Config
) -> None:
    a, b = make_pair()
    got: list[Event] = []
    closed = Signal()
    async with Poller(poller_config) as poller, anyio.create_task_group() as tg:

        def cb(ev: Event) -> None:
            got.append(ev)
            if ev == READ:
                drain(a)  # as edge-triggered code must (else reported again, portably)
                tg.start_soon(poller.aclose)  # a callback cannot await; it spawns
            else:
                closed.set()

        poller.start(np.handle_read(a), cb)
        b.send(b"x")
        await closed.wait()
    assert got == [READ, CLOSED]


# ----------------------------------------------------------------- faults


@pytest.mark.anyio
@pytest.mark.thread_only
async def test_failed_wake_up_still_closes_and_leaks_nothing(
    make_pair: Any, poller_config: Config
) -> None:
    def wake(fd: int) -> None:
        raise OSError(errno.EIO, "injected wake failure")

    a, _ = make_pair()
    got: list[Event] = []
    async with Poller(replace(poller_config, syscalls=Syscalls(wake=wake))) as poller:
        poller.start(np.handle_read(a), got.append)
    assert got == [CLOSED]  # hygiene: no thread, no fd left (fallback pipe closed too)


@pytest.mark.epoll_only("closes an epoll object through the Syscalls seam")
@pytest.mark.anyio
async def test_failed_close_is_raised_after_closing_everything(
    make_pair: Any, poller_config: Config
) -> None:
    def close(fd: int) -> None:
        os.close(fd)  # as close(2) on Linux: the fd is released, then the error reported
        raise OSError(errno.EIO, "injected close failure")

    def close_epoll(ep: Any) -> None:
        ep.close()
        raise OSError(errno.EIO, "injected close failure")

    a, _ = make_pair()
    got: list[Event] = []
    seam = Syscalls(close=close, close_epoll=close_epoll)
    with pytest.raises(OSError, match="injected close failure"):
        async with Poller(replace(poller_config, syscalls=seam)) as poller:
            poller.start(np.handle_read(a), got.append)
    assert got == [CLOSED]


@pytest.mark.anyio
@pytest.mark.thread_only
async def test_cancelling_the_scope_with_a_batch_in_flight(
    make_pair: Any, poller_config: Config
) -> None:
    a, b = make_pair()
    gated = GatedWait()
    got: list[Event] = []
    with anyio.CancelScope() as scope:
        async with Poller(replace(poller_config, syscalls=Syscalls(wait=gated))) as poller:
            poller.start(np.handle_read(a), got.append)
            gated.gate = True
            b.send(b"x")
            await anyio.to_thread.run_sync(gated.collected.wait)
            scope.cancel()
            gated.release.set()  # the batch reaches a poller that is closing
            await anyio.sleep_forever()
    assert scope.cancelled_caught
    assert got[-1] == CLOSED
    assert got in ([CLOSED], [READ, CLOSED])


@pytest.mark.thread_only
def test_event_loop_finishing_while_the_thread_holds_a_batch(poller_config: Config) -> None:
    """A poller entered by hand and never closed: the run ends while the wait thread holds
    a batch. The hand-off fails quietly (no TrioInternalError), the thread ends, and the
    fds it owned are closed by the poller's last owner: here, a later aclose()."""
    a, b = socket.socketpair()
    gated = GatedWait()
    holder: dict[str, Poller] = {}

    async def main() -> None:
        poller = Poller(replace(poller_config, syscalls=Syscalls(wait=gated)))
        await poller.__aenter__()
        holder["poller"] = poller
        poller.start(np.handle_read(a))
        gated.gate = True
        b.send(b"x")
        await trio.to_thread.run_sync(gated.collected.wait)
        # return without closing: the run finishes with the batch in the thread's hands

    trio.run(main)
    gated.release.set()
    (thread,) = netpoll_threads()
    thread.join(10)
    assert not thread.is_alive()
    poller = holder["poller"]
    poller._close()  # what a later aclose() does; no event loop is needed for it
    assert poller.closed
    a.close()
    b.close()


def test_no_thread_or_fd_survives_a_run_that_raises(poller_config: Config) -> None:
    before = open_fds()

    async def main() -> None:
        async with Poller(poller_config):
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        trio.run(main)
    assert open_fds() == before
    assert not netpoll_threads()
    assert threading.active_count() >= 1
