"""Command line of ``python -m netpoll_trio``."""

from __future__ import annotations

import argparse
import socket
from collections.abc import Sequence

import trio

from .. import Event, Poller, handle_read

DEFAULT_CONNECTIONS = 200


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m netpoll_trio",
        description="Demo: readiness events from many socketpairs reach a few worker tasks.",
    )
    parser.add_argument(
        "--connections",
        type=int,
        default=DEFAULT_CONNECTIONS,
        help="number of socketpairs (default %(default)s)",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.connections <= 9000:
        parser.error("--connections must be between 1 and 9000")
    return args


async def demo(connections: int) -> None:
    pairs = [socket.socketpair() for _ in range(connections)]
    try:
        async with Poller() as poller, trio.open_nursery() as nursery:
            descs = {}
            for server, _client in pairs:
                desc = handle_read(server)
                descs[desc] = server
                poller.start(desc)
            received = 0

            async def worker(name: int) -> None:
                nonlocal received
                async for desc, event in poller:
                    if event & Event.POLLER_CLOSED:
                        continue
                    data = descs[desc].recv(65536)
                    received += len(data)
                    if received >= connections * 5:
                        await poller.aclose()

            for name in range(4):
                nursery.start_soon(worker, name)
            for _server, client in pairs:
                client.send(b"hello")
        stats = poller.statistics()
        print(
            f"{connections} connections, {received} bytes received by 4 workers; "
            f"{stats.events_delivered} events in {stats.batches} batches, "
            f"{stats.wakeups} wake-ups"
        )
    finally:
        for a, b in pairs:
            a.close()
            b.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    trio.run(demo, args.connections)
    return 0
