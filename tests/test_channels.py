"""The task-facing streams as trio / anyio channels, ``desc.data`` and ``Poller.modify``.

SPEC "Receiving like a trio / anyio channel" and "Server building blocks". Every test runs
under trio, asyncio and asyncio+uvloop, with and without the wait thread.
"""

from __future__ import annotations

import socket
from typing import Any

import anyio
import anyio.abc
import pytest
import trio
import trio.abc

import netpoll_trio as np
from netpoll_trio import ClosedError, Config, EpollEvent, Event, NotRegisteredError, Poller

from .conftest import drain, exact_edges
from .test_poller import Signal, round_trip

pytestmark = [pytest.mark.anyio]

READ, WRITE, ET = Event.READ, Event.WRITE, Event.EDGE_TRIGGERED
CLOSED = Event.POLLER_CLOSED


@pytest.fixture
def probe() -> Any:
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


async def wait_ready(poller: Poller, n: int = 1) -> None:
    """Wait until ``n`` descs are queued in the shared stream."""
    with anyio.fail_after(10):  # bounds a failure only
        while poller.statistics().ready < n:
            await anyio.sleep(0)


# ----------------------------------------------------------------- the shared stream


async def test_receive_nowait_would_block_then_takes_then_ends(
    sockpair: tuple[socket.socket, socket.socket],
    poller_config: Config,
) -> None:
    a, b = sockpair
    async with Poller(poller_config) as poller:
        desc = np.handle_read(a)
        poller.start(desc)
        with pytest.raises(trio.WouldBlock) as info:
            poller.receive_nowait()
        assert isinstance(info.value, anyio.WouldBlock)
        b.send(b"x")
        await wait_ready(poller)
        assert poller.receive_nowait() == (desc, READ)
        await poller.aclose()
        assert poller.receive_nowait() == (desc, CLOSED)
        with pytest.raises(trio.EndOfChannel) as end:
            poller.receive_nowait()
        assert isinstance(end.value, anyio.EndOfStream)
        with pytest.raises(anyio.EndOfStream):
            await poller.receive()
        with pytest.raises(trio.EndOfChannel):
            await poller.receive_batch()


async def test_receive_gives_what_async_for_gives(make_pair: Any, poller_config: Config) -> None:
    (a1, b1), (a2, b2) = make_pair(), make_pair()
    async with Poller(poller_config) as poller:
        d1, d2 = np.handle_read(a1), np.handle_read(a2)
        poller.start(d1)
        poller.start(d2)
        b1.send(b"1")
        await wait_ready(poller)
        b2.send(b"2")
        await wait_ready(poller, 2)
        assert await poller.receive() == (d1, READ)  # queue order
        assert await poller.__anext__() == (d2, READ)


async def test_receive_batch_takes_up_to_max_items_never_empty(
    make_pair: Any, poller_config: Config
) -> None:
    pairs = [make_pair() for _ in range(10)]
    async with Poller(poller_config) as poller:
        descs = [np.handle_read(a, data=a) for a, _ in pairs]
        for desc in descs:
            poller.start(desc)
        for _, b in pairs:
            b.send(b"x")
        await wait_ready(poller, 10)
        first = await poller.receive_batch(4)
        for desc, _ in first:  # consumed, as a worker would (else reported again, portably)
            drain(desc.data)  # type: ignore[arg-type]  # a socket: we put it there
        rest = await poller.receive_batch()
        if exact_edges(poller_config):
            assert [d for d, _ in first + rest] == descs
        else:  # the host loop reports ready fds in its own order (trio: any order)
            assert sorted(d.fileno() for d, _ in first + rest) == sorted(d.fileno() for d in descs)
        assert {ev for _, ev in first + rest} == {READ}
        assert len(first) == 4
        with anyio.move_on_after(0) as scope:  # nothing ready: it waits, never returns []
            await poller.receive_batch()
        assert scope.cancelled_caught


@pytest.mark.parametrize("bad", [0, -1])
async def test_receive_batch_refuses_max_items_below_one(bad: int, poller_config: Config) -> None:
    async with Poller(poller_config) as poller:
        with pytest.raises(ValueError, match=f"max_items must be at least 1, got {bad}"):
            await poller.receive_batch(bad)
        with pytest.raises(TypeError, match="max_items must be an int"):
            await poller.receive_batch(2.5)  # type: ignore[arg-type]


async def test_each_desc_to_exactly_one_receiver_whatever_the_method(
    make_pair: Any, poller_config: Config
) -> None:
    pairs = [make_pair() for _ in range(60)]
    taken: list[np.Desc] = []
    closed: list[np.Desc] = []
    async with Poller(poller_config) as poller, anyio.create_task_group() as tg:
        for a, _ in pairs:
            poller.start(np.handle_read(a, data=a))

        def take(desc: np.Desc, ev: Event) -> None:
            if ev == CLOSED:
                closed.append(desc)
                return
            assert drain(desc.data) == b"x"
            taken.append(desc)

        async def by_batch() -> None:
            while True:
                try:
                    items = await poller.receive_batch(3)
                except anyio.EndOfStream:
                    return
                for desc, ev in items:
                    take(desc, ev)
                await anyio.sleep(0)

        async def by_receive() -> None:
            while True:
                try:
                    take(*await poller.receive())
                except trio.EndOfChannel:
                    return

        async def by_iteration() -> None:
            async for desc, ev in poller:
                take(desc, ev)

        for worker in (by_batch, by_batch, by_receive, by_receive, by_iteration):
            tg.start_soon(worker)
        for _, b in pairs:
            b.send(b"x")
        with anyio.fail_after(10):
            while len(taken) < len(pairs):
                await anyio.sleep(0)
        await poller.aclose()
    assert len(taken) == len({id(d) for d in taken}) == len(pairs)  # each exactly once
    assert len({id(d) for d in closed}) == len(closed) == len(pairs)


async def test_cancelled_receive_loses_nothing(
    sockpair: tuple[socket.socket, socket.socket],
    poller_config: Config,
) -> None:
    a, b = sockpair
    async with Poller(poller_config) as poller:
        desc = np.handle_read(a)
        poller.start(desc)
        b.send(b"x")
        await wait_ready(poller)
        for receive in (poller.receive, poller.receive_batch):
            with anyio.CancelScope() as scope:
                scope.cancel()
                await receive()  # cancelled at its checkpoint, before taking
            assert scope.cancelled_caught
        assert await poller.receive_batch() == [(desc, READ)]


async def test_never_entered_poller_closed_early_ends_cleanly(poller_config: Config) -> None:
    """Reliability #9: aclose() of a poller that was never entered."""
    poller = Poller(poller_config)
    with pytest.raises(RuntimeError, match="not open yet"):
        poller.receive_nowait()
    with pytest.raises(RuntimeError, match="not open yet"):
        await poller.receive()
    await poller.aclose()
    stats = poller.statistics()
    assert (stats.registered, stats.events_delivered, stats.batches) == (0, 0, 0)
    assert (stats.wakeups, stats.ready) == (0, 0)
    assert [item async for item in poller] == []
    with pytest.raises(trio.EndOfChannel):
        poller.receive_nowait()
    with pytest.raises(anyio.EndOfStream):
        await poller.receive_batch()
    with pytest.raises(RuntimeError, match="only once"):
        async with poller:
            pass


# ----------------------------------------------------------------- watch() streams


async def test_watch_stream_is_a_trio_and_anyio_receive_channel(
    sockpair: tuple[socket.socket, socket.socket],
    poller_config: Config,
) -> None:
    a, b = sockpair
    async with Poller(poller_config) as poller, poller.watch(np.handle_read(a)) as events:
        assert isinstance(events, trio.abc.ReceiveChannel)
        assert isinstance(events, anyio.abc.ObjectReceiveStream)
        with pytest.raises(trio.WouldBlock) as info:
            events.receive_nowait()
        assert isinstance(info.value, anyio.WouldBlock)
        b.send(b"x")
        assert await events.receive() == READ
        assert drain(a) == b"x"


async def test_watch_receive_ends_after_poller_closed(
    sockpair: tuple[socket.socket, socket.socket],
    poller_config: Config,
) -> None:
    a, _ = sockpair
    async with Poller(poller_config) as poller, poller.watch(np.handle_read(a)) as events:
        await poller.aclose()
        assert events.receive_nowait() == CLOSED
        with pytest.raises(trio.EndOfChannel) as end:
            await events.receive()
        assert isinstance(end.value, anyio.EndOfStream)
        with pytest.raises(anyio.EndOfStream):
            events.receive_nowait()


async def test_watch_receive_ends_when_its_desc_is_stopped(
    sockpair: tuple[socket.socket, socket.socket],
    poller_config: Config,
) -> None:
    a, _ = sockpair
    async with Poller(poller_config) as poller:
        desc = np.handle_read(a)
        async with poller.watch(desc) as events:
            poller.stop(desc)
            with pytest.raises(trio.EndOfChannel):
                await events.receive()


async def test_watch_aclose_stops_and_later_receives_raise_closed_resource(
    sockpair: tuple[socket.socket, socket.socket],
    poller_config: Config,
) -> None:
    a, b = sockpair
    async with Poller(poller_config) as poller:
        desc = np.handle_read(a)
        async with poller.watch(desc) as events:
            await events.aclose()
            assert poller.statistics().registered == 0
            poller.start(desc)  # the registration is gone: the desc can be started again
            poller.stop(desc)
            with pytest.raises(trio.ClosedResourceError) as info:
                await events.receive()
            assert isinstance(info.value, anyio.ClosedResourceError)
            with pytest.raises(anyio.ClosedResourceError):
                events.receive_nowait()
            assert [ev async for ev in events] == []
            await events.aclose()  # a second aclose is a no-op
            b.send(b"x")
        assert poller.statistics().registered == 0


async def test_watch_aclose_from_another_task_wakes_the_receiver(
    sockpair: tuple[socket.socket, socket.socket],
    poller_config: Config,
) -> None:
    a, _ = sockpair
    raised: list[BaseException] = []
    async with (
        Poller(poller_config) as poller,
        poller.watch(np.handle_read(a)) as events,
        anyio.create_task_group() as tg,
    ):

        async def consume() -> None:
            try:
                await events.receive()
            except anyio.ClosedResourceError as exc:
                raised.append(exc)

        tg.start_soon(consume)
        await anyio.wait_all_tasks_blocked()
        await events.aclose()
    assert len(raised) == 1


async def test_two_receivers_of_one_watch_stream_busy_not_hang(
    sockpair: tuple[socket.socket, socket.socket],
    poller_config: Config,
) -> None:
    """Reliability #4: A parks, B parks (replacing A), A is cancelled (clearing B); data
    then never woke B. Now B is refused at once, and A's cancellation leaves the stream
    usable."""
    a, b = sockpair
    async with Poller(poller_config) as poller, poller.watch(np.handle_read(a)) as events:
        async with anyio.create_task_group() as tg:
            first = anyio.CancelScope()

            async def receiver_a() -> None:
                with first:
                    await events.receive()

            tg.start_soon(receiver_a)
            await anyio.wait_all_tasks_blocked()
            with pytest.raises(trio.BusyResourceError) as busy:
                await events.receive()
            assert isinstance(busy.value, anyio.BusyResourceError)
            assert "another task is already receiving" in str(busy.value)
            first.cancel()
        b.send(b"x")
        with anyio.fail_after(10):
            assert await events.receive() == READ


async def test_watch_one_shot_receive_rearms_each_ask(
    sockpair: tuple[socket.socket, socket.socket],
    poller_config: Config,
) -> None:
    a, b = sockpair
    async with Poller(poller_config) as poller, poller.watch(np.handle_read_once(a)) as events:
        b.send(b"1")
        assert await events.receive() == READ
        assert drain(a) == b"1"
        b.send(b"2")
        assert await events.receive() == READ  # re-armed when asked again
        assert drain(a) == b"2"


async def test_watch_enter_racing_aclose_raises_closed_error(
    sockpair: tuple[socket.socket, socket.socket],
    poller_config: Config,
) -> None:
    """Reliability #5: the state is checked after __aenter__'s checkpoint, not only before
    (it raised ValueError: I/O operation on closed epoll object)."""
    a, _ = sockpair
    async with Poller(poller_config) as poller, anyio.create_task_group() as tg:
        outcome: list[BaseException] = []

        async def enter() -> None:
            try:
                async with poller.watch(np.handle_read(a)):
                    pass
            except BaseException as exc:
                outcome.append(exc)

        tg.start_soon(enter)
        tg.start_soon(poller.aclose)
    assert len(outcome) == 1
    assert type(outcome[0]) is ClosedError


# ----------------------------------------------------------------- desc.data


def test_desc_data_is_a_free_slot(sockpair: tuple[socket.socket, socket.socket]) -> None:
    a, _ = sockpair
    assert np.new_desc(a.fileno(), READ).data is None
    conn = object()
    assert np.new_desc(a.fileno(), READ, data=conn).data is conn
    assert np.Desc(a.fileno(), READ, data=conn).data is conn
    for make in (
        np.handle_read,
        np.handle_read_once,
        np.handle_write,
        np.handle_write_once,
        np.handle_read_write,
    ):
        assert make(a, data=conn).data is conn
    assert np.handle(a, READ, data=conn).data is conn
    assert np.handle_listener(a, READ, data=conn).data is conn
    desc = np.handle_read(a)
    desc.data = "mine"
    assert desc.data == "mine"


async def test_desc_data_reaches_the_worker(make_pair: Any, poller_config: Config) -> None:
    (a, b) = make_pair()
    async with Poller(poller_config) as poller:
        poller.start(np.handle_read(a, data=a))
        b.send(b"x")
        [(desc, _)] = await poller.receive_batch()
        assert desc.data is a
        assert drain(desc.data) == b"x"


# ----------------------------------------------------------------- modify()


def recorder() -> tuple[list[Event], Signal, Any]:
    """A callback recording its events, and a Signal set on each."""
    got: list[Event] = []
    step = Signal()

    def on_event(ev: Event) -> None:
        got.append(ev)
        step.set()

    return got, step, on_event


async def test_modify_adds_write_interest_to_a_callback(
    sockpair: tuple[socket.socket, socket.socket],
    poller_config: Config,
) -> None:
    a, b = sockpair
    got, step, on_event = recorder()
    async with Poller(poller_config) as poller:
        desc = np.handle_read(a)
        poller.start(desc, on_event)
        poller.modify(desc, READ | WRITE | ET)
        assert desc.event == READ | WRITE | ET
        await step.wait()
        # The socket is writable: the new interest reports it (portably: each loop pass
        # while it stays writable, as for a level-triggered desc).
        assert got == [WRITE] if exact_edges(poller_config) else set(got) == {WRITE}
        poller.modify(desc, READ | ET)
        b.send(b"x")
        await step.wait()
        assert got[-1] == READ
        poller.stop(desc)


async def test_modify_keeps_the_route_and_pending_events_of_streams(
    sockpair: tuple[socket.socket, socket.socket], probe: Any, poller_config: Config
) -> None:
    a, b = sockpair
    async with Poller(poller_config) as poller:
        desc = np.handle_read(a)
        poller.start(desc)
        b.send(b"x")
        await round_trip(poller, probe)
        poller.modify(desc, READ | WRITE | ET)  # READ is still queued: not lost
        await round_trip(poller, probe)
        if exact_edges(poller_config):
            assert await poller.receive_batch() == [(desc, READ | WRITE)]
        else:  # one record per direction: the second one may come after the first is taken
            got = Event(0)
            while got != READ | WRITE:
                [(taken, event)] = await poller.receive_batch()
                assert taken is desc
                got |= event
        poller.stop(desc)
        async with poller.watch(desc) as events:
            b.send(b"y")
            await round_trip(poller, probe)
            poller.modify(desc, WRITE | ET)
            got = await events.receive()
            assert got & READ  # the pending READ was kept
            while not got & WRITE:  # the new interest reaches the same stream
                got = await events.receive()


async def test_modify_between_level_and_edge_triggered_streams(
    sockpair: tuple[socket.socket, socket.socket], probe: Any, poller_config: Config
) -> None:
    a, b = sockpair
    async with Poller(poller_config) as poller:
        desc = np.handle_read(a)
        poller.start(desc)
        poller.modify(desc, READ)  # level-triggered: re-armed each time a worker takes it
        b.send(b"x")
        assert await poller.receive() == (desc, READ)
        await round_trip(poller, probe)
        assert await poller.receive() == (desc, READ)  # still readable: reported again
        drain(a)
        poller.modify(desc, READ | ET)
        b.send(b"y")
        assert await poller.receive() == (desc, READ)
        poller.stop(desc)


async def test_modify_refuses_bad_input_and_keeps_working(
    sockpair: tuple[socket.socket, socket.socket],
    poller_config: Config,
) -> None:
    a, b = sockpair
    async with Poller(poller_config) as poller:
        desc = np.handle_read(a)
        with pytest.raises(NotRegisteredError):
            poller.modify(desc, READ)
        poller.start(desc)
        with pytest.raises(ValueError, match="HUP"):
            poller.modify(desc, READ | Event.HUP)
        with pytest.raises(TypeError, match="EPOLLOUT"):
            poller.modify(desc, EpollEvent.EPOLLOUT)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="expected a Desc"):
            poller.modify(a, READ)  # type: ignore[arg-type]
        assert desc.event == READ | ET
        b.send(b"x")
        assert await poller.receive() == (desc, READ)  # still working
        poller.stop(desc)
    with pytest.raises(ClosedError):
        poller.modify(desc, READ)


async def test_modify_of_a_closed_fd_names_it_and_keeps_the_old_event(
    poller_config: Config,
) -> None:
    a, b = socket.socketpair()
    b.close()
    async with Poller(poller_config) as poller:
        desc = np.handle_read(a)
        poller.start(desc)
        fd = a.fileno()
        a.close()
        with pytest.raises(OSError, match=f"fd {fd}") as info:
            poller.modify(desc, READ | WRITE | ET)
        assert not isinstance(info.value, np.NetpollError)
        assert desc.event == READ | ET
        poller.stop(desc)


async def test_modify_re_arms_a_one_shot_desc(
    sockpair: tuple[socket.socket, socket.socket],
    poller_config: Config,
) -> None:
    a, b = sockpair
    got, step, on_event = recorder()
    async with Poller(poller_config) as poller:
        desc = np.handle_read_once(a)
        poller.start(desc, on_event)
        b.send(b"x")
        await step.wait()
        poller.modify(desc, READ | Event.ONE_SHOT)  # re-armed: reported again
        await step.wait()
        assert got == [READ, READ]
        poller.stop(desc)
