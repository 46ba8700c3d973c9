"""Per-event cost of the async Poller's delivery, per style and backend.

N socketpairs; each round writes one byte to every peer and waits until every event has
been handled (the handler drains the socket). Reported: microseconds per event (median of
the rounds) for callbacks, the shared stream with 8 workers (``async for`` and
``receive_batch()``) and one watch() per connection, under trio and anyio-asyncio, plus
the same work done by a bare select.epoll loop (the ceiling) and by trio tasks parked in
wait_readable (the baseline).

    python benchmarks/bench_poller_event_cost.py [N] [ROUNDS]
"""

from __future__ import annotations

import socket
import statistics
import sys
import time
from collections.abc import Awaitable, Callable

import anyio
import trio
from _common import Pairs, drain, raw_epoll_round_seconds, socketpairs

from netpoll_trio import Event, Poller, handle_read


class Rounds:
    """Counts handled events; each round waits until all N were handled."""

    def __init__(self, pairs: Pairs, rounds: int) -> None:
        self.pairs, self.rounds, self.left = pairs, rounds, 0
        self.done = anyio.Event()
        self.times: list[float] = []

    def handled(self) -> None:
        self.left -= 1
        if self.left == 0:
            self.done.set()

    async def run(self) -> float:
        for _ in range(self.rounds):
            self.left, self.done = len(self.pairs), anyio.Event()
            start = time.perf_counter()
            for _, b in self.pairs:
                b.send(b"x")
            await self.done.wait()
            self.times.append(time.perf_counter() - start)
        return statistics.median(self.times) / len(self.pairs) * 1e6


async def callbacks(pairs: Pairs, rounds: int) -> float:
    r = Rounds(pairs, rounds)
    async with Poller() as poller:
        for a, _ in pairs:
            poller.start(handle_read(a), lambda ev, a=a: (drain(a), r.handled()))
        return await r.run()


async def shared(pairs: Pairs, rounds: int) -> float:
    r = Rounds(pairs, rounds)
    async with Poller() as poller, anyio.create_task_group() as tg:
        socks = {}
        for a, _ in pairs:
            desc = handle_read(a)
            socks[desc] = a
            poller.start(desc)

        async def worker() -> None:
            async for desc, ev in poller:
                if ev != Event.POLLER_CLOSED:
                    drain(socks[desc])
                    r.handled()

        for _ in range(8):
            tg.start_soon(worker)
        result = await r.run()
        await poller.aclose()
        return result


async def batch(pairs: Pairs, rounds: int) -> float:
    r = Rounds(pairs, rounds)
    async with Poller() as poller, anyio.create_task_group() as tg:
        for a, _ in pairs:
            poller.start(handle_read(a, data=a))  # the socket travels with its desc

        async def worker() -> None:
            try:
                while True:
                    for desc, ev in await poller.receive_batch():
                        if ev != Event.POLLER_CLOSED:
                            drain(desc.data)
                            r.handled()
            except anyio.EndOfStream:  # also a trio.EndOfChannel
                return

        for _ in range(8):
            tg.start_soon(worker)
        result = await r.run()
        await poller.aclose()
        return result


async def watch(pairs: Pairs, rounds: int) -> float:
    r = Rounds(pairs, rounds)
    async with Poller() as poller, anyio.create_task_group() as tg:

        async def serve(a: socket.socket) -> None:
            async with poller.watch(handle_read(a)) as events:
                async for _ in events:
                    drain(a)
                    r.handled()

        for a, _ in pairs:
            tg.start_soon(serve, a)
        await anyio.wait_all_tasks_blocked()
        result = await r.run()
        tg.cancel_scope.cancel()
        return result


async def trio_tasks(pairs: Pairs, rounds: int) -> float:
    r = Rounds(pairs, rounds)
    async with trio.open_nursery() as nursery:

        async def serve(a: socket.socket) -> None:
            while True:
                await trio.lowlevel.wait_readable(a)
                drain(a)
                r.handled()

        for a, _ in pairs:
            nursery.start_soon(serve, a)
        await trio.testing.wait_all_tasks_blocked()
        result = await r.run()
        nursery.cancel_scope.cancel()
        return result


def raw_epoll(pairs: Pairs, rounds: int) -> float:
    return raw_epoll_round_seconds(pairs, rounds) / len(pairs) * 1e6


def main() -> None:
    import trio.testing  # noqa: F401 - wait_all_tasks_blocked

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 15
    arms: list[tuple[str, str | None, Callable[[Pairs, int], Awaitable[float]] | None]] = [
        ("raw select.epoll", None, None),
        ("trio task/conn", "trio", trio_tasks),
        ("netpoll callback", "trio", callbacks),
        ("netpoll shared x8", "trio", shared),
        ("netpoll batch x8", "trio", batch),
        ("netpoll watch/conn", "trio", watch),
        ("netpoll callback", "asyncio", callbacks),
        ("netpoll shared x8", "asyncio", shared),
        ("netpoll batch x8", "asyncio", batch),
        ("netpoll watch/conn", "asyncio", watch),
    ]
    with socketpairs(n) as pairs:
        for name, backend, fn in arms:
            if fn is None:
                us = raw_epoll(pairs, rounds)
            else:
                us = anyio.run(fn, pairs, rounds, backend=backend)
            print(f"{name:20s} {backend or '':8s} {us:6.2f} us/event  ({1e6 / us:10,.0f} events/s)")


if __name__ == "__main__":
    main()
