"""The async Poller: Go's two tests, the three delivery styles, and closure.

Every test runs under trio, asyncio and asyncio+uvloop (``anyio_backend``). Waiting is on
events set by the code under test; nothing sleeps.
"""

from __future__ import annotations

import dataclasses
import socket
from typing import Any

import anyio
import pytest

import netpoll_trio as np
from netpoll_trio import ClosedError, Config, Event, Poller

from .conftest import drain, fill

pytestmark = [pytest.mark.anyio]

READ, WRITE, HUP, READ_HUP, ERR = Event.READ, Event.WRITE, Event.HUP, Event.READ_HUP, Event.ERR
CLOSED = Event.POLLER_CLOSED


class Signal:
    """A re-armable anyio.Event for 'wait for the next callback'."""

    def __init__(self) -> None:
        self.event = anyio.Event()

    def set(self) -> None:
        self.event.set()

    async def wait(self) -> None:
        with anyio.fail_after(10):  # bounds a failure only
            await self.event.wait()
        self.event = anyio.Event()


async def round_trip(poller: Poller, probe: tuple[socket.socket, socket.socket]) -> None:
    """Make a probe fd ready and wait for its event: every readiness that existed before
    has been reported by then (epoll_wait returns all ready fds, batches arrive in order)."""
    a, b = probe
    got = Signal()
    desc = np.handle_read(a)

    def consume(event: Event) -> None:
        drain(a)  # in the callback, as edge-triggered code must (the portable mode would
        got.set()  # report it again, each loop pass, until it is drained)

    poller.start(desc, consume)
    b.send(b"p")
    await got.wait()
    poller.stop(desc)


# ----------------------------------------------------------------- Go's tests


@pytest.mark.epoll_only("Go's test checks the exact HUP bits, which the portable mode cannot see")
async def test_go_read_once(
    sockpair: tuple[socket.socket, socket.socket], poller_config: Config
) -> None:
    a, b = sockpair
    events: list[Event] = []
    received = bytearray()
    step = Signal()
    async with Poller(poller_config) as poller:
        desc = np.handle_read_once(a)

        def on_event(ev: Event) -> None:
            events.append(ev)
            received.extend(drain(a))
            if not ev & HUP:
                poller.resume(desc)
            step.set()

        poller.start(desc, on_event)
        for byte in b"hello":
            b.send(bytes([byte]))
            await step.wait()
        b.shutdown(socket.SHUT_RDWR)
        await step.wait()
        poller.stop(desc)
    assert events == [READ] * 5 + [READ | HUP | READ_HUP]
    assert bytes(received) == b"hello"


@pytest.mark.epoll_only("Go's test checks the exact HUP bits, which the portable mode cannot see")
async def test_go_write_once(make_pair: Any, poller_config: Config) -> None:
    a, b = make_pair()
    probe = make_pair()
    events: list[Event] = []
    step = Signal()
    async with Poller(poller_config) as poller:
        fill(a)
        desc = np.handle_write_once(a)

        def on_event(ev: Event) -> None:
            events.append(ev)
            if ev & WRITE and not ev & HUP:
                fill(a)  # refill, then re-arm: the buffer is full, so no new event
                poller.resume(desc)
            step.set()

        poller.start(desc, on_event)
        await round_trip(poller, probe)
        assert events == []  # no event while the buffer is full

        b.setblocking(False)
        drain(b)
        await step.wait()
        await round_trip(poller, probe)
        assert events == [WRITE]  # exactly one, although the callback refilled and resumed

        b.close()
        await step.wait()
        await round_trip(poller, probe)
        poller.stop(desc)
    assert len(events) == 2
    assert events[1] & HUP


# ----------------------------------------------------------------- callback style


async def test_callback_runs_on_the_loop_thread_and_may_start_stop(
    make_pair: Any, poller_config: Config
) -> None:
    import threading

    (a1, b1), (a2, b2) = make_pair(), make_pair()
    threads: list[int] = []
    step = Signal()
    async with Poller(poller_config) as poller:
        d1, d2 = np.handle_read(a1), np.handle_read(a2)

        def second(ev: Event) -> None:
            threads.append(threading.get_ident())
            poller.stop(d2)
            step.set()

        def first(ev: Event) -> None:
            threads.append(threading.get_ident())
            poller.stop(d1)
            poller.start(d2, second)  # start from inside a callback
            b2.send(b"y")

        poller.start(d1, first)
        b1.send(b"x")
        await step.wait()
        assert poller.statistics().registered == 0
    assert threads == [threading.get_ident()] * 2


async def test_callback_may_use_anyio(
    sockpair: tuple[socket.socket, socket.socket], poller_config: Config
) -> None:
    """Under asyncio, loop callbacks run outside any task; anyio must still work there."""
    a, b = sockpair
    ran = anyio.Event()

    async def child() -> None:
        ran.set()

    async with Poller(poller_config) as poller, anyio.create_task_group() as tg:
        desc = np.handle_read(a)

        def on_event(ev: Event) -> None:
            if ev != CLOSED:
                tg.start_soon(child)

        poller.start(desc, on_event)
        b.send(b"x")
        with anyio.fail_after(10):
            await ran.wait()
        poller.stop(desc)


async def test_callback_exception_propagates_out_of_the_block(
    make_pair: Any, poller_config: Config
) -> None:
    (a1, b1), (a2, _) = make_pair(), make_pair()
    others: list[Event] = []

    def bad(ev: Event) -> None:
        raise ValueError("callback bug")

    with pytest.raises(ValueError, match="callback bug"):
        async with Poller(poller_config) as poller:
            poller.start(np.handle_read(a2), others.append)
            poller.start(np.handle_read(a1), bad)
            b1.send(b"x")
            await anyio.sleep_forever()  # cancelled when the callback fails
    assert poller.closed
    assert others == [CLOSED]


# ----------------------------------------------------------------- watch()


async def test_watch_stream(
    sockpair: tuple[socket.socket, socket.socket], poller_config: Config
) -> None:
    a, b = sockpair
    async with Poller(poller_config) as poller:
        async with poller.watch(np.handle_read(a)) as events:
            assert poller.statistics().registered == 1
            b.send(b"x")
            async for ev in events:
                assert ev == READ
                assert drain(a) == b"x"
                break
        assert poller.statistics().registered == 0


async def test_watch_cancellation_stops_the_registration(
    sockpair: tuple[socket.socket, socket.socket],
    poller_config: Config,
) -> None:
    a, _ = sockpair
    async with Poller(poller_config) as poller:
        with anyio.CancelScope() as scope:
            async with poller.watch(np.handle_read(a)) as events:
                assert poller.statistics().registered == 1
                scope.cancel()
                async for _ in events:  # cancelled while waiting
                    pytest.fail("no event expected")
        assert scope.cancelled_caught
        assert poller.statistics().registered == 0
        # The fd is free again: it can be registered anew.
        desc = np.handle_read(a)
        poller.start(desc, lambda ev: None)
        poller.stop(desc)


async def test_watch_cancelled_by_a_failing_sibling(
    sockpair: tuple[socket.socket, socket.socket],
    poller_config: Config,
) -> None:
    a, _ = sockpair
    entered = anyio.Event()

    async def watcher(poller: Poller) -> None:
        async with poller.watch(np.handle_read(a)) as events:
            entered.set()
            async for _ in events:
                pass

    async with Poller(poller_config) as poller:
        with pytest.raises(Exception) as info:  # noqa: PT011 - anyio/trio group types differ
            async with anyio.create_task_group() as tg:
                tg.start_soon(watcher, poller)
                await entered.wait()
                raise KeyError("sibling failed")
        assert "sibling failed" in repr(info.value)
        assert poller.statistics().registered == 0


async def test_watch_one_shot_rearms_when_the_consumer_asks_again(
    sockpair: tuple[socket.socket, socket.socket],
    poller_config: Config,
) -> None:
    a, b = sockpair
    got = []
    async with Poller(poller_config) as poller, poller.watch(np.handle_read_once(a)) as events:
        for i in range(3):
            b.send(bytes([i]))
            ev = await events.__anext__()
            got.append((ev, drain(a)))
    assert got == [(READ, b"\x00"), (READ, b"\x01"), (READ, b"\x02")]


async def test_watch_yields_poller_closed_once_then_ends(
    sockpair: tuple[socket.socket, socket.socket],
    poller_config: Config,
) -> None:
    a, b = sockpair
    seen: list[Event] = []
    async with Poller(poller_config) as poller, poller.watch(np.handle_read(a)) as events:
        b.send(b"x")  # pending, not taken: dropped by the close
        await poller.aclose()
        seen.extend([ev async for ev in events])
        # leaving the watch block after the close does nothing
    assert seen == [CLOSED]


async def test_watch_of_a_started_desc_is_refused(
    sockpair: tuple[socket.socket, socket.socket],
    poller_config: Config,
) -> None:
    a, _ = sockpair
    async with Poller(poller_config) as poller:
        desc = np.handle_read(a)
        poller.start(desc, lambda ev: None)
        with pytest.raises(np.RegisteredError):
            async with poller.watch(desc):
                pass
        with pytest.raises(np.RegisteredError):
            async with poller.watch(np.handle_read(a)):
                pass
        poller.stop(desc)


async def test_watch_stream_ends_when_its_desc_is_stopped(
    sockpair: tuple[socket.socket, socket.socket],
    poller_config: Config,
) -> None:
    a, _ = sockpair
    async with Poller(poller_config) as poller:
        desc = np.handle_read(a)
        async with poller.watch(desc) as events, anyio.create_task_group() as tg:
            ended = anyio.Event()

            async def consume() -> None:
                async for _ in events:
                    pass
                ended.set()

            tg.start_soon(consume)
            await anyio.wait_all_tasks_blocked()
            poller.stop(desc)
            await ended.wait()


# ----------------------------------------------------------------- the shared stream


async def test_shared_stream_each_desc_to_exactly_one_worker(
    make_pair: Any, poller_config: Config
) -> None:
    pairs = [make_pair() for _ in range(50)]
    by_desc: dict[np.Desc, socket.socket] = {}
    taken: list[tuple[int, np.Desc]] = []
    closed_seen: list[np.Desc] = []
    ended: list[int] = []
    async with Poller(poller_config) as poller, anyio.create_task_group() as tg:
        for a, _ in pairs:
            desc = np.handle_read(a)
            by_desc[desc] = a
            poller.start(desc)

        async def worker(n: int) -> None:
            async for desc, ev in poller:
                if ev == CLOSED:
                    closed_seen.append(desc)
                    continue
                assert ev == READ
                taken.append((n, desc))
                assert drain(by_desc[desc]) == b"x"
                if len(taken) == len(pairs):
                    await poller.aclose()
            ended.append(n)

        for n in range(8):
            tg.start_soon(worker, n)
        for _, b in pairs:
            b.send(b"x")
    assert sorted(id(d) for _, d in taken) == sorted(id(d) for d in by_desc)  # once each
    assert sorted(id(d) for d in closed_seen) == sorted(id(d) for d in by_desc)
    assert sorted(ended) == list(range(8))  # iteration ended in every task


async def test_shared_stream_coalesces_while_queued(
    sockpair: tuple[socket.socket, socket.socket],
    poller_config: Config,
) -> None:
    a, b = sockpair
    probe = socket.socketpair()
    try:
        async with Poller(poller_config) as poller:
            desc = np.handle_read_write(a)
            poller.start(desc)
            b.send(b"1")
            await round_trip(poller, probe)
            b.send(b"2")
            await round_trip(poller, probe)
            assert poller.statistics().ready == 1  # queued once, events merged
            taken = await poller.__anext__()
            assert taken == (desc, READ | WRITE)
            assert drain(a) == b"12"
            poller.stop(desc)
    finally:
        for s in probe:
            s.close()


# ----------------------------------------------------------------- closure


async def test_close_delivers_exactly_poller_closed_before_aclose_returns(
    make_pair: Any, poller_config: Config
) -> None:
    (a1, b1), (a2, _), (a3, _) = make_pair(), make_pair(), make_pair()
    got: list[Event] = []
    async with Poller(poller_config) as poller:
        poller.start(np.handle_read(a1), got.append)
        stopped = np.handle_read(a2)
        poller.start(stopped, got.append)
        poller.stop(stopped)
        poller.start(np.handle_read(a3))  # shared
        b1.send(b"x")  # may or may not be delivered before the close
        await poller.aclose()
        assert got[-1] == CLOSED
        assert got.count(CLOSED) == 1
        assert poller.closed
        shared = [item async for item in poller]
        assert [ev for _, ev in shared] == [CLOSED]
        await poller.aclose()  # a second aclose is a no-op
        desc = np.handle_read(a1)
        for call in (
            lambda: poller.start(desc),
            lambda: poller.stop(desc),
            lambda: poller.resume(desc),
        ):
            with pytest.raises(ClosedError):
                call()
        with pytest.raises(ClosedError):
            async with poller.watch(desc):
                pass


async def test_leaving_by_exception_closes(
    sockpair: tuple[socket.socket, socket.socket], poller_config: Config
) -> None:
    a, _ = sockpair
    got: list[Event] = []
    with pytest.raises(KeyError):
        async with Poller(poller_config) as poller:
            poller.start(np.handle_read(a), got.append)
            raise KeyError("body failed")
    assert poller.closed
    assert got == [CLOSED]


async def test_leaving_by_cancellation_closes(
    sockpair: tuple[socket.socket, socket.socket],
    poller_config: Config,
) -> None:
    a, _ = sockpair
    got: list[Event] = []
    with anyio.CancelScope() as scope:
        async with Poller(poller_config) as poller:
            poller.start(np.handle_read(a), got.append)
            scope.cancel()
            await anyio.sleep_forever()
    assert scope.cancelled_caught
    assert poller.closed
    assert got == [CLOSED]


async def test_statistics_is_immutable_and_counts(
    sockpair: tuple[socket.socket, socket.socket],
    poller_config: Config,
) -> None:
    a, b = sockpair
    step = Signal()
    async with Poller(poller_config) as poller:
        before = poller.statistics()
        assert (before.registered, before.events_delivered, before.batches) == (0, 0, 0)
        poller.start(np.handle_read(a), lambda ev: (drain(a), step.set()))
        b.send(b"x")
        await step.wait()
        after = poller.statistics()
        assert after.registered == 1
        assert after.events_delivered == 1
        assert after.batches == 1
        assert after.wakeups >= 1
        with pytest.raises(dataclasses.FrozenInstanceError):
            after.registered = 5  # type: ignore[misc]


async def test_entering_twice_and_use_before_entering(poller_config: Config) -> None:
    poller = Poller(poller_config)
    with pytest.raises(RuntimeError, match="not open yet"):
        poller.start(np.new_desc(0, READ))
    async with poller:
        pass
    with pytest.raises(RuntimeError, match="only once"):
        async with poller:
            pass
