"""The same poller under anyio on asyncio (uvloop too): an echo server with one watch()
stream per connection.

The listener's callback spawns a task per accepted connection into an anyio task group;
each task iterates its own ``poller.watch(desc)`` stream. Leaving the ``async with
poller.watch(...)`` block -- the client left, or the task was cancelled -- stops the
registration. Nothing here is asyncio-specific: pass ``--backend trio`` and it runs on trio.

Each connection reads until EAGAIN or EOF before it believes a hang-up, keeps the echo it
could not send yet in an output buffer with WRITE interest (``poller.modify()``) until the
client takes it, and drops a client with more than ``MAX_OUTPUT`` bytes waiting.

    python examples/anyio_asyncio.py [--port 9002] [--backend asyncio|trio] [--uvloop]
"""

from __future__ import annotations

import argparse
import signal
import socket
from typing import Any

import anyio

from netpoll_trio import Event, Poller, handle_listener, handle_read

READING = Event.READ | Event.EDGE_TRIGGERED  # what handle_read() registers
WRITING = READING | Event.WRITE  # while output is queued
FLUSHING = Event.WRITE | Event.EDGE_TRIGGERED  # the client sent EOF; output still queued
MAX_OUTPUT = 1 << 20  # bytes queued for one client; beyond that it is not reading: drop it


def flush(conn: socket.socket, output: bytearray) -> bool:
    """Send as much of ``output`` as the socket takes now; False if the connection failed."""
    while output:
        try:
            sent = conn.send(output)
        except BlockingIOError:
            return True  # the send buffer is full: wait for WRITE
        except OSError:
            return False
        del output[:sent]
    return True


async def serve(port: int) -> None:
    listener = socket.create_server(("127.0.0.1", port), backlog=1024)
    print(f"anyio echo server listening on 127.0.0.1:{listener.getsockname()[1]}", flush=True)
    try:
        async with Poller() as poller, anyio.create_task_group() as tg:

            async def handle_conn(conn: socket.socket) -> None:
                output = bytearray()
                eof = False
                with conn:  # closed after the watch block has stopped the registration
                    desc = handle_read(conn)
                    async with poller.watch(desc) as events:
                        async for event in events:
                            if event & (Event.POLLER_CLOSED | Event.ERR):
                                return
                            while not eof:  # read until EAGAIN or EOF, hang-up or not
                                try:
                                    data = conn.recv(65536)
                                except BlockingIOError:
                                    break
                                except OSError:
                                    return
                                if not data:
                                    eof = True
                                    break
                                output += data  # echo
                                if not flush(conn, output) or len(output) > MAX_OUTPUT:
                                    return  # gone, or sends without reading: drop it
                            if not flush(conn, output) or (eof and not output):
                                return  # leaving the watch block stops the registration
                            wanted = READING if not output else FLUSHING if eof else WRITING
                            if desc.event != wanted:
                                poller.modify(desc, wanted)  # WRITE interest while queued

            def on_listener(event: Event) -> None:
                while not event & Event.POLLER_CLOSED:
                    try:
                        conn, _ = listener.accept()
                    except OSError:  # BlockingIOError: all accepted; EMFILE: next time
                        return
                    tg.start_soon(handle_conn, conn)  # callbacks may call anyio, any backend

            poller.start(handle_listener(listener, READING), on_listener)
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    # Ctrl-C: close the poller; every watch stream yields POLLER_CLOSED
                    # and its task ends, and so does the task group.
                    await poller.aclose()
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
