"""Echo server: a worker pool over the poller's shared stream (trio).

Every connection is registered edge-triggered without a callback; 8 worker tasks take
ready connections from ``async for desc, event in poller`` and echo what they read. The
listener is served by a callback that accepts everything pending. 10k+ idle connections
cost a Desc and a registration each -- no task, no coroutine frame.

    python examples/echo_server.py [--port 9000] [--workers 8]

Stop it with Ctrl-C (or SIGTERM): the poller closes, every connection gets POLLER_CLOSED
and is closed.
"""

from __future__ import annotations

import argparse
import signal
import socket

import trio

from netpoll_trio import Desc, Event, Poller, handle_listener, handle_read

GONE = Event.HUP | Event.READ_HUP | Event.ERR | Event.POLLER_CLOSED


def echo(conn: socket.socket) -> bool:
    """Drain the socket (edge-triggered: until EAGAIN), echo it; False when it is over."""
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
            conn.send(data)  # small echoes fit the send buffer; a client that never
        except OSError:  # reads (BlockingIOError) or left is dropped
            return False


async def serve(port: int, workers: int) -> None:
    listener = socket.create_server(("127.0.0.1", port), backlog=4096)
    conns: dict[Desc, socket.socket] = {}
    print(f"echo server listening on 127.0.0.1:{listener.getsockname()[1]}", flush=True)
    try:
        async with Poller() as poller, trio.open_nursery() as nursery:

            def on_listener(event: Event) -> None:
                while True:
                    try:
                        conn, _ = listener.accept()
                    except (BlockingIOError, OSError):
                        return
                    desc = handle_read(conn)  # READ | EDGE_TRIGGERED, non-blocking
                    conns[desc] = conn
                    poller.start(desc)  # no callback: to the shared stream

            async def worker() -> None:
                async for desc, event in poller:
                    conn = conns.get(desc)
                    if conn is None:
                        continue
                    if event & GONE or not echo(conn):
                        if not poller.closed:
                            poller.stop(desc)  # stop before closing the socket
                        conns.pop(desc).close()

            for _ in range(workers):
                nursery.start_soon(worker)
            poller.start(handle_listener(listener, Event.READ | Event.EDGE_TRIGGERED), on_listener)
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:  # Ctrl-C: leave the block, which closes the poller
                    nursery.cancel_scope.cancel()
                    break
    finally:
        for conn in conns.values():
            conn.close()
        listener.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="netpoll_trio echo server (worker pool)")
    parser.add_argument("--port", type=int, default=9000, help="0 picks a free port")
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args()
    trio.run(serve, args.port, args.workers)
    print("bye", flush=True)


if __name__ == "__main__":
    main()
