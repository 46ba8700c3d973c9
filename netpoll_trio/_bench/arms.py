"""The servers under test ("arms"), each serving the same sockets in its own style.

Every arm does the same work per readable connection -- one ``recv()`` of what is there,
one byte answered per 16-byte message -- and differs only in how it learns that a
connection is readable. An arm registers all connections (timed), then for each phase asks the
:class:`Session` to start it and serves until the control socket turns readable (the
driver's result), and finally unregisters everything.
"""

from __future__ import annotations

import asyncio
import functools
import select
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import trio
import trio.testing

from .. import Config, Event, Poller, handle_read
from .session import Session

__all__ = ["ARMS", "Arm"]


BUFFER = 65536
REPLIES = [b"r" * k for k in range(BUFFER // 16 + 1)]  # no allocation per answer


def answer(sock: socket.socket) -> None:
    """Edge-triggered style: read until the socket is drained and answer every message.

    A short read (fewer bytes than asked for) on a stream socket means the receive queue
    was empty at that moment, and any byte that arrives later raises a new edge, so the
    usual one ``recv()`` per message suffices (nginx reads the same way); only a full
    buffer makes it read again.
    """
    recv = sock.recv
    while True:
        try:
            data = recv(BUFFER)
        except BlockingIOError:
            return
        if not data:
            return
        sock.send(REPLIES[len(data) >> 4])
        if len(data) < BUFFER:
            return


def answer_once(sock: socket.socket) -> None:
    """One read (level-triggered style: we will be told again if more is there)."""
    try:
        data = sock.recv(BUFFER)
    except BlockingIOError:
        return
    if data:
        sock.send(REPLIES[len(data) >> 4])


# ----------------------------------------------------------------- baselines


def raw_epoll(conns: list[socket.socket], session: Session) -> None:
    """The Python ceiling: one select.epoll, edge-triggered, no event loop at all."""
    ep = select.epoll()
    try:
        by_fd = {}
        session.registering()
        for sock in conns:
            by_fd[sock.fileno()] = sock
            ep.register(sock.fileno(), select.EPOLLIN | select.EPOLLET)
        session.registered()
        control = session.control.fileno()
        ep.register(control, select.EPOLLIN)
        poll = ep.poll
        while session.next_phase():
            serving = True
            while serving:
                for fd, _ in poll(-1, 4096):
                    if fd == control:
                        session.finish_phase()
                        serving = False
                    else:
                        answer(by_fd[fd])
    finally:
        ep.close()


async def _task_per_connection(
    serve: Callable[[Any], Awaitable[object]], conns: Sequence[object], session: Session
) -> None:
    """Start ``serve(conn)`` as one trio task per connection, then run the load phases."""
    async with trio.open_nursery() as nursery:
        session.registering()
        for conn in conns:
            nursery.start_soon(serve, conn)
        await trio.testing.wait_all_tasks_blocked()
        session.registered()
        while session.next_phase():
            await trio.lowlevel.wait_readable(session.control)
            session.finish_phase()
        nursery.cancel_scope.cancel()


async def _trio_tasks(conns: list[socket.socket], session: Session) -> None:
    async def serve(sock: socket.socket) -> None:
        wait_readable = trio.lowlevel.wait_readable
        while True:
            await wait_readable(sock)
            answer_once(sock)

    await _task_per_connection(serve, conns, session)


def trio_tasks(conns: list[socket.socket], session: Session) -> None:
    """trio, one task per connection parked in ``trio.lowlevel.wait_readable``."""
    trio.run(_trio_tasks, conns, session)


async def _trio_streams(conns: list[socket.socket], session: Session) -> None:
    async def serve(stream: trio.SocketStream) -> None:
        receive_some, send_all = stream.receive_some, stream.send_all
        while True:
            data = await receive_some(BUFFER)
            if not data:
                return
            await send_all(REPLIES[len(data) >> 4])

    # The trio socket wraps this very socket object (no dup); it is never closed here, so
    # the next arm finds the connection as it was.
    streams = [trio.SocketStream(trio.socket.from_stdlib_socket(sock)) for sock in conns]
    await _task_per_connection(serve, streams, session)


def trio_streams(conns: list[socket.socket], session: Session) -> None:
    """trio, one task per connection in ``trio.SocketStream.receive_some`` / ``send_all``."""
    trio.run(_trio_streams, conns, session)


async def _add_reader(conns: list[socket.socket], session: Session) -> None:
    loop = asyncio.get_running_loop()
    session.registering()
    for sock in conns:
        loop.add_reader(sock.fileno(), answer_once, sock)
    session.registered()
    try:
        while session.next_phase():
            done = loop.create_future()
            loop.add_reader(session.control.fileno(), done.set_result, None)
            await done
            loop.remove_reader(session.control.fileno())
            session.finish_phase()
    finally:
        for sock in conns:
            loop.remove_reader(sock.fileno())


def asyncio_add_reader(conns: list[socket.socket], session: Session) -> None:
    """asyncio's ``loop.add_reader``, a callback per connection."""
    asyncio.run(_add_reader(conns, session))


def uvloop_add_reader(conns: list[socket.socket], session: Session) -> None:
    """uvloop's ``loop.add_reader``."""
    import uvloop

    loop = uvloop.new_event_loop()
    try:
        loop.run_until_complete(_add_reader(conns, session))
    finally:
        loop.close()


# ----------------------------------------------------------------- netpoll_trio


async def _serve_phases(session: Session, poller: Poller) -> None:
    """Serve every phase (the poller does the work meanwhile), then keep its counters."""
    while session.next_phase():
        await anyio.wait_readable(session.control)
        session.finish_phase()
    session.statistics = poller.statistics()


async def _netpoll_callbacks(conns: list[socket.socket], session: Session, config: Config) -> None:
    async with Poller(config) as poller:
        session.registering()
        descs = []
        for sock in conns:
            desc = handle_read(sock)
            poller.start(desc, functools.partial(_on_event, sock))
            descs.append(desc)
        await _settled()
        session.registered()
        await _serve_phases(session, poller)
        for desc in descs:
            poller.stop(desc)


def _on_event(sock: socket.socket, event: Event) -> None:
    answer(sock)


WORKERS = 8


async def _netpoll_shared(conns: list[socket.socket], session: Session, config: Config) -> None:
    """8 workers in ``async for desc, event in poller``, the socket in ``desc.data``."""
    async with Poller(config) as poller, anyio.create_task_group() as tg:

        async def worker() -> None:
            # Like the callback arm, the event is not looked at (an IntFlag test costs
            # about a microsecond); POLLER_CLOSED at the end just finds nothing to read.
            async for desc, _event in poller:
                answer(desc.data)  # type: ignore[arg-type]  # a socket: we put it there

        for _ in range(WORKERS):
            tg.start_soon(worker)
        await _register_shared(conns, session, poller)
        await _serve_phases(session, poller)
        await poller.aclose()  # POLLER_CLOSED to each desc (answer() finds nothing to read)


async def _register_shared(conns: list[socket.socket], session: Session, poller: Poller) -> None:
    """Register every connection for the shared stream, keeping nothing per connection
    outside the library: the socket travels in ``desc.data`` (no dict), the poller holds
    the desc, and closing the poller ends every registration (no list of descs to stop)."""
    session.registering()
    start = poller.start
    for sock in conns:
        start(handle_read(sock, data=sock))
    await _settled()
    session.registered()


async def _settled() -> None:
    """Let what registering started run until it waits (the portable mode's trio
    watcher tasks start on the next scheduler pass): part of registering, not of the
    load phases that follow."""
    await anyio.wait_all_tasks_blocked()


async def _netpoll_batch(conns: list[socket.socket], session: Session, config: Config) -> None:
    """8 workers in ``await poller.receive_batch()``, the socket in ``desc.data``."""
    async with Poller(config) as poller, anyio.create_task_group() as tg:

        async def worker() -> None:
            receive_batch = poller.receive_batch
            try:
                while True:
                    for desc, _event in await receive_batch():
                        answer(desc.data)  # type: ignore[arg-type]  # a socket
            except anyio.EndOfStream:  # also a trio.EndOfChannel: the poller closed
                return

        for _ in range(WORKERS):
            tg.start_soon(worker)
        await _register_shared(conns, session, poller)
        await _serve_phases(session, poller)
        await poller.aclose()  # POLLER_CLOSED to each desc (answer() finds nothing to read)


async def _netpoll_watch(conns: list[socket.socket], session: Session, config: Config) -> None:
    async with Poller(config) as poller, anyio.create_task_group() as tg:

        async def serve(sock: socket.socket) -> None:
            async with poller.watch(handle_read(sock)) as events:
                async for _event in events:
                    answer(sock)

        session.registering()
        for sock in conns:
            tg.start_soon(serve, sock)
        await anyio.wait_all_tasks_blocked()
        session.registered()
        await _serve_phases(session, poller)
        tg.cancel_scope.cancel()


def _netpoll(main: Callable[..., Any], backend: str, **options: Any) -> Callable[..., None]:
    def run(conns: list[socket.socket], session: Session) -> None:
        config = Config(**options)
        if backend == "uvloop":
            import uvloop

            anyio.run(
                main,
                conns,
                session,
                config,
                backend="asyncio",
                backend_options={"loop_factory": uvloop.new_event_loop},
            )
        else:
            anyio.run(main, conns, session, config, backend=backend)

    run.__doc__ = main.__doc__
    return run


@dataclass(frozen=True)
class Arm:
    """A named server style."""

    name: str
    label: str
    run: Callable[[list[socket.socket], Session], None]
    baseline: bool = False
    requires: tuple[str, ...] = ()  # optional modules the arm imports


ARMS: dict[str, Arm] = {
    arm.name: arm
    for arm in [
        Arm("epoll", "raw select.epoll (ET)", raw_epoll, baseline=True),
        Arm("trio-tasks", "trio task per conn (wait_readable)", trio_tasks, baseline=True),
        Arm("trio-stream", "trio SocketStream per conn", trio_streams, baseline=True),
        Arm("asyncio-reader", "asyncio add_reader", asyncio_add_reader, baseline=True),
        Arm(
            "uvloop-reader",
            "uvloop add_reader",
            uvloop_add_reader,
            baseline=True,
            requires=("uvloop",),
        ),
        Arm("np-trio-callback", "netpoll trio callback", _netpoll(_netpoll_callbacks, "trio")),
        Arm(
            "np-trio-batch8",
            "netpoll trio receive_batch x8",
            _netpoll(_netpoll_batch, "trio"),
        ),
        Arm("np-trio-shared8", "netpoll trio shared x8", _netpoll(_netpoll_shared, "trio")),
        Arm("np-trio-watch", "netpoll trio watch/conn", _netpoll(_netpoll_watch, "trio")),
        Arm(
            "np-asyncio-callback",
            "netpoll anyio-asyncio callback",
            _netpoll(_netpoll_callbacks, "asyncio"),
        ),
        Arm(
            "np-asyncio-batch8",
            "netpoll anyio-asyncio receive_batch x8",
            _netpoll(_netpoll_batch, "asyncio"),
        ),
        Arm(
            "np-asyncio-shared8",
            "netpoll anyio-asyncio shared x8",
            _netpoll(_netpoll_shared, "asyncio"),
        ),
        Arm(
            "np-asyncio-watch",
            "netpoll anyio-asyncio watch/conn",
            _netpoll(_netpoll_watch, "asyncio"),
        ),
        # The threadless mode: Config(wait_thread=False).
        Arm(
            "np-trio-callback-nt",
            "netpoll trio callback, no thread",
            _netpoll(_netpoll_callbacks, "trio", wait_thread=False),
        ),
        Arm(
            "np-trio-batch8-nt",
            "netpoll trio receive_batch x8, no thread",
            _netpoll(_netpoll_batch, "trio", wait_thread=False),
        ),
        Arm(
            "np-trio-shared8-nt",
            "netpoll trio shared x8, no thread",
            _netpoll(_netpoll_shared, "trio", wait_thread=False),
        ),
        Arm(
            "np-trio-watch-nt",
            "netpoll trio watch/conn, no thread",
            _netpoll(_netpoll_watch, "trio", wait_thread=False),
        ),
        Arm(
            "np-asyncio-callback-nt",
            "netpoll anyio-asyncio callback, no thread",
            _netpoll(_netpoll_callbacks, "asyncio", wait_thread=False),
        ),
        # The portable mode: Config(portable=True), the host loop watching each fd (what
        # Poller() runs on macOS and the BSDs), forced here to show its price beside epoll.
        Arm(
            "np-trio-callback-pt",
            "netpoll trio callback, portable",
            _netpoll(_netpoll_callbacks, "trio", portable=True),
        ),
        Arm(
            "np-trio-batch8-pt",
            "netpoll trio receive_batch x8, portable",
            _netpoll(_netpoll_batch, "trio", portable=True),
        ),
        Arm(
            "np-trio-watch-pt",
            "netpoll trio watch/conn, portable",
            _netpoll(_netpoll_watch, "trio", portable=True),
        ),
        Arm(
            "np-asyncio-callback-pt",
            "netpoll anyio-asyncio callback, portable",
            _netpoll(_netpoll_callbacks, "asyncio", portable=True),
        ),
        Arm(
            "np-asyncio-batch8-pt",
            "netpoll anyio-asyncio receive_batch x8, portable",
            _netpoll(_netpoll_batch, "asyncio", portable=True),
        ),
        Arm(
            "np-uvloop-batch8-pt",
            "netpoll uvloop receive_batch x8, portable",
            _netpoll(_netpoll_batch, "uvloop", portable=True),
            requires=("uvloop",),
        ),
    ]
}
