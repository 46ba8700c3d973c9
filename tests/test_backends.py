"""The backend contract (netpoll_trio._backends._base), run against every backend.

The same parking-lot, waiter, hand-off, watch_fd, idle-hook and cancel-scope behaviour
on trio, asyncio and uvloop (the ``anyio_backend`` fixture), so that the backends cannot
drift apart: the poller relies on exactly what is asserted here.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from typing import Any

import anyio
import pytest
import sniffio
from sniffio import current_async_library

from netpoll_trio._backends import Backend, ParkingLotLike, current_backend

pytestmark = pytest.mark.anyio


async def wait_until_parked(lot: ParkingLotLike, count: int) -> None:
    """Let the tasks just started run until ``count`` of them are parked in ``lot``."""
    with anyio.fail_after(10):
        while len(lot) < count:
            await anyio.lowlevel.checkpoint()


def test_outside_an_event_loop_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match="inside trio or asyncio"):
        current_backend()


async def test_the_backend_is_the_running_library(backend_name: str) -> None:
    backend = current_backend()
    assert type(backend).__module__ == f"netpoll_trio._backends._{backend_name}"
    assert type(current_backend()) is type(backend)  # chosen once, the same class again


async def test_checkpoint_is_a_cancel_point(anyio_backend: Any) -> None:
    backend = current_backend()
    reached = False
    with anyio.CancelScope() as scope:
        scope.cancel()
        await backend.checkpoint()
        reached = True
    assert not reached
    assert scope.cancelled_caught


# ----------------------------------------------------------------- parking lot


async def test_parking_lot_wakes_in_fifo_order(anyio_backend: Any) -> None:
    lot = current_backend().parking_lot()
    woken: list[int] = []

    async def parker(i: int) -> None:
        await lot.park()
        woken.append(i)

    async with anyio.create_task_group() as tg:
        for i in range(3):
            tg.start_soon(parker, i)
            await wait_until_parked(lot, i + 1)  # parked in this order
        for expected in ([0], [0, 1]):  # one at a time, in the order they parked
            lot.unpark()
            with anyio.fail_after(10):
                while len(woken) < len(expected):
                    await anyio.lowlevel.checkpoint()
            assert woken == expected
        assert len(lot) == 1
        lot.unpark_all()
    assert woken == [0, 1, 2]  # (tasks woken together may run in any order)
    assert len(lot) == 0


async def test_parking_lot_unpark_with_nobody_parked_is_a_no_op(anyio_backend: Any) -> None:
    lot = current_backend().parking_lot()
    lot.unpark()
    lot.unpark_all()
    assert len(lot) == 0


async def park_two(lot: ParkingLotLike, tg: Any, woken: list[str]) -> anyio.CancelScope:
    """Park a task "first", then "second"; return the first one's cancel scope."""

    async def parker(name: str, scope: anyio.CancelScope) -> None:
        with scope:
            await lot.park()
            woken.append(name)

    first = anyio.CancelScope()
    tg.start_soon(parker, "first", first)
    await wait_until_parked(lot, 1)
    tg.start_soon(parker, "second", anyio.CancelScope())
    await wait_until_parked(lot, 2)
    return first


async def test_a_cancelled_parked_task_leaves_the_lot_and_swallows_no_wake_up(
    anyio_backend: Any,
) -> None:
    lot = current_backend().parking_lot()
    woken: list[str] = []
    async with anyio.create_task_group() as tg:
        first = await park_two(lot, tg, woken)
        first.cancel()
        with anyio.fail_after(10):
            while len(lot) > 1:
                await anyio.lowlevel.checkpoint()
        lot.unpark()  # meant for whoever is still parked: the second
    assert woken == ["second"]
    assert first.cancelled_caught


async def test_woken_then_cancelled_passes_the_wake_up_on(anyio_backend: Any) -> None:
    """The wake-up arrives, then the task is cancelled before it ran: the wake-up must
    reach the next parked task (asyncio can cancel a task whose future has its result)."""
    lot = current_backend().parking_lot()
    woken: list[str] = []
    async with anyio.create_task_group() as tg:
        first = await park_two(lot, tg, woken)
        lot.unpark()  # wakes the first...
        first.cancel()  # ...which is cancelled before it runs
        with anyio.fail_after(10):
            while not woken and len(lot):
                await anyio.lowlevel.checkpoint()
        lot.unpark_all()  # releases whoever is still parked, if anyone
    # Either the first ran (trio: a rescheduled task is not cancelled any more) or it
    # passed its wake-up on; never is a wake-up lost with someone parked.
    assert woken in (["first", "second"], ["second"])


# ----------------------------------------------------------------- waiter


async def test_waiter_wakes_its_one_task(anyio_backend: Any) -> None:
    waiter = current_backend().waiter()
    woken = anyio.Event()

    async def parker() -> None:
        await waiter.park()
        woken.set()

    assert len(waiter) == 0
    async with anyio.create_task_group() as tg:
        tg.start_soon(parker)
        await wait_until_parked(waiter, 1)
        waiter.unpark()
        assert len(waiter) == 0  # the wake-up is taken at once, not when the task runs
        with anyio.fail_after(10):
            await woken.wait()
        waiter.unpark()  # nobody parked: a no-op
        waiter.unpark_all()


async def test_waiter_unpark_all_wakes_it_and_a_cancelled_park_leaves(
    anyio_backend: Any,
) -> None:
    waiter = current_backend().waiter()
    results: list[str] = []

    async def parker(scope: anyio.CancelScope) -> None:
        with scope:
            await waiter.park()
            results.append("woken")

    async with anyio.create_task_group() as tg:
        scope = anyio.CancelScope()
        tg.start_soon(parker, scope)
        await wait_until_parked(waiter, 1)
        scope.cancel()
    assert results == []
    assert len(waiter) == 0

    async with anyio.create_task_group() as tg:
        tg.start_soon(parker, anyio.CancelScope())
        await wait_until_parked(waiter, 1)
        waiter.unpark_all()
    assert results == ["woken"]


# ----------------------------------------------------------------- hand-off


async def test_call_soon_threadsafe_runs_on_the_loop_thread_from_another_thread(
    anyio_backend: Any, backend_name: str
) -> None:
    backend: Backend = current_backend()
    loop_thread = threading.get_ident()
    done = anyio.Event()
    seen: list[tuple[int, str, tuple[object, ...]]] = []

    def on_loop(*args: object) -> None:
        seen.append((threading.get_ident(), sniffio.current_async_library(), args))
        done.set()

    thread = threading.Thread(target=backend.call_soon_threadsafe, args=(on_loop, 1, "two"))
    thread.start()
    thread.join()
    with anyio.fail_after(10):
        await done.wait()
    assert seen == [(loop_thread, backend_name, (1, "two"))]


# ----------------------------------------------------------------- watch_fd


async def test_watch_fd_calls_back_while_readable_until_cancelled(
    anyio_backend: Any, sockpair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = sockpair
    a.setblocking(False)
    backend = current_backend()
    loop_thread = threading.get_ident()
    calls: list[int] = []
    readable = anyio.Event()

    def callback() -> None:
        calls.append(threading.get_ident())
        a.recv(1)  # consume it: level-triggered readiness
        readable.set()

    watcher = backend.watch_fd(a.fileno(), callback, _no_error)
    try:
        b.send(b"x")
        with anyio.fail_after(10):
            await readable.wait()
        assert calls == [loop_thread]
        readable = anyio.Event()
        b.send(b"y")
        with anyio.fail_after(10):
            await readable.wait()
        assert calls == [loop_thread, loop_thread]
    finally:
        watcher.cancel()
    b.send(b"z")
    await _loop_passes()  # the fd is readable, nobody watches
    assert len(calls) == 2


async def _loop_passes() -> None:
    """Let the loop poll for I/O a few times (a checkpoint polls without waiting)."""
    for _ in range(10):
        await anyio.lowlevel.checkpoint()


def _no_error(error: BaseException) -> None:
    raise AssertionError(f"on_error called: {error!r}")


async def test_watch_fd_writable_and_paused_by_its_callback_until_resumed(
    anyio_backend: Any, sockpair: tuple[socket.socket, socket.socket]
) -> None:
    a, _ = sockpair
    backend = current_backend()
    calls = 0
    called = anyio.Event()

    def callback() -> bool:
        nonlocal calls
        calls += 1
        called.set()
        return False  # pause: the socket stays writable, yet no call comes

    watcher = backend.watch_fd(a.fileno(), callback, _no_error, writable=True)
    try:
        with anyio.fail_after(10):
            await called.wait()
        await _loop_passes()
        assert calls == 1
        called = anyio.Event()
        watcher.resume()
        with anyio.fail_after(10):
            await called.wait()
        await _loop_passes()
        assert calls == 2
    finally:
        watcher.cancel()


async def test_watch_fd_cancel_after_readiness_was_seen_calls_nothing(
    anyio_backend: Any, sockpair: tuple[socket.socket, socket.socket]
) -> None:
    """The stop guarantee the portable mode builds on: readiness the loop has already
    seen (trio: the task is woken; asyncio: the handle is queued) is not delivered once
    cancel() returned."""
    (a, b), (c, d) = sockpair, socket.socketpair()
    calls: list[str] = []
    seen = anyio.Event()
    backend = current_backend()
    watchers: dict[str, Any] = {}

    def first() -> None:  # runs in the same loop pass as second's readiness
        calls.append("first")
        a.recv(1)
        watchers["second"].cancel()
        seen.set()

    def second() -> None:
        calls.append("second")
        c.recv(1)
        watchers["first"].cancel()
        seen.set()

    try:
        watchers["first"] = backend.watch_fd(a.fileno(), first, _no_error)
        watchers["second"] = backend.watch_fd(c.fileno(), second, _no_error)
        await _loop_passes()
        b.send(b"x")
        d.send(b"x")
        with anyio.fail_after(10):
            await seen.wait()
        await _loop_passes()
        assert len(calls) == 1  # whichever ran first cancelled the other
    finally:
        for watcher in watchers.values():
            watcher.cancel()
        c.close()
        d.close()


async def test_watch_fd_of_a_bad_fd_is_refused_or_reported_once(anyio_backend: Any) -> None:
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    backend = current_backend()
    errors: list[BaseException] = []
    reported = anyio.Event()

    def on_error(error: BaseException) -> None:
        errors.append(error)
        reported.set()

    try:
        watcher = backend.watch_fd(r, _never, on_error)
    except OSError:  # asyncio: refused at once
        assert current_async_library() == "asyncio"
        return
    with anyio.fail_after(10):  # trio: when its task first waits
        await reported.wait()
    await _loop_passes()
    assert len(errors) == 1
    assert isinstance(errors[0], OSError)
    watcher.cancel()


def _never() -> None:
    raise AssertionError("called back for a closed fd")


def test_an_asyncio_loop_without_add_reader_is_refused_naming_the_fix() -> None:
    class NoReaders(asyncio.SelectorEventLoop):
        add_reader = asyncio.BaseEventLoop.add_reader  # what the proactor loop has

    async def main() -> None:
        with pytest.raises(RuntimeError, match=r"NoReaders.*selector loop"):
            current_backend().check_watch_fd()

    loop = NoReaders()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


# ----------------------------------------------------------------- idle hook


async def test_idle_hook_fires_once_per_arm_when_the_loop_runs_out_of_work(
    anyio_backend: Any,
) -> None:
    backend = current_backend()
    fired: list[int] = []
    event = anyio.Event()

    def fn() -> None:
        fired.append(threading.get_ident())
        event.set()

    hook = backend.idle_hook(fn)
    try:
        hook.arm()
        with anyio.fail_after(10):
            await event.wait()  # this task waits: the loop runs out of work
        assert fired == [threading.get_ident()]
        event = anyio.Event()
        hook.arm()
        with anyio.fail_after(10):
            await event.wait()
        assert len(fired) == 2
    finally:
        hook.close()
    hook.close()  # idempotent


# ----------------------------------------------------------------- cancel scope


async def test_cancel_scope_absorbs_its_own_cancellation(anyio_backend: Any) -> None:
    backend = current_backend()
    reached = []
    scope = backend.cancel_scope()
    with scope:
        scope.cancel()
        await backend.checkpoint()
        reached.append("after the checkpoint")
    assert reached == []


async def test_cancel_scope_cancelled_from_a_callback_stops_a_parked_task(
    anyio_backend: Any,
) -> None:
    """How the poller fails: a hand-off cancels the ``async with`` body's scope."""
    backend = current_backend()
    lot = backend.parking_lot()
    scope = backend.cancel_scope()
    thread = threading.Thread(target=backend.call_soon_threadsafe, args=(scope.cancel,))
    with scope:
        thread.start()
        await lot.park()  # only the cancellation ends this
    thread.join()
    assert len(lot) == 0
