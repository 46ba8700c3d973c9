"""The same poller under anyio on asyncio (uvloop too): an echo server with one watch()
stream per connection.

The listener's callback spawns a task per accepted connection into an anyio task group;
each task iterates its own ``poller.watch(desc)`` stream. Leaving the ``async with
poller.watch(...)`` block -- the client left, or the task was cancelled -- stops the
registration. Nothing here is asyncio-specific: pass ``--backend trio`` and it runs on trio.

    python examples/anyio_asyncio.py [--port 9002] [--backend asyncio|trio] [--uvloop]
"""

from __future__ import annotations

import argparse
import signal
import socket
from typing import Any

import anyio

from netpoll_trio import Event, Poller, handle_listener, handle_read


def echo(conn: socket.socket) -> bool:
    """Drain the socket (edge-triggered: until EAGAIN) and echo; False once it is over."""
    while True:
        try:
            data = conn.recv(65536)
        except BlockingIOError:
            return True
        except OSError:
            return False
        if not data:
            return False
        try:
            conn.send(data)
        except OSError:
            return False


async def serve(port: int) -> None:
    listener = socket.create_server(("127.0.0.1", port), backlog=1024)
    print(f"anyio echo server listening on 127.0.0.1:{listener.getsockname()[1]}", flush=True)
    try:
        async with Poller() as poller, anyio.create_task_group() as tg:

            async def handle(conn: socket.socket) -> None:
                with conn:
                    async with poller.watch(handle_read(conn)) as events:
                        async for event in events:
                            if event & Event.POLLER_CLOSED or not echo(conn):
                                return  # leaving the watch block stops the registration

            def on_listener(event: Event) -> None:
                while True:
                    try:
                        conn, _ = listener.accept()
                    except (BlockingIOError, OSError):
                        return
                    tg.start_soon(handle, conn)  # callbacks may call anyio, on any backend

            poller.start(handle_listener(listener, Event.READ | Event.EDGE_TRIGGERED), on_listener)
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:  # Ctrl-C: leave the block, which closes the poller
                    tg.cancel_scope.cancel()
                    break
    finally:
        listener.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="netpoll_trio under anyio (asyncio)")
    parser.add_argument("--port", type=int, default=9002, help="0 picks a free port")
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument("--uvloop", action="store_true", help="asyncio on uvloop")
    args = parser.parse_args()
    options: dict[str, Any] = {}
    if args.uvloop:
        import uvloop

        options["loop_factory"] = uvloop.new_event_loop
    anyio.run(serve, args.port, backend=args.backend, backend_options=options)
    print("bye", flush=True)


if __name__ == "__main__":
    main()
