"""Echo server: a worker pool over the poller's shared stream (trio).

Every connection is registered edge-triggered, without a callback, with its own state in
``desc.data``; 8 worker tasks take ready connections in batches with
``await poller.receive_batch()`` and echo what they read. The listener is served by a
callback that accepts everything pending. 10k+ idle connections cost a Desc, a small
object and a registration each -- no task, no coroutine frame.

The patterns to copy:

* read until ``BlockingIOError`` (EAGAIN) or EOF -- edge-triggered readiness is reported
  once per arrival, and a hang-up (``READ_HUP``) may come with the last bytes, so the
  data is read *before* the connection is considered finished;
* ``send()`` may take only part of the output, or none (``BlockingIOError``): what is left
  waits in the connection's output buffer, and WRITE interest is added with
  ``poller.modify()`` until it is flushed;
* the output buffer has a cap: a client that sends but does not read is dropped instead
  of growing the server's memory without end;
* a client that half-closes (sends, ``shutdown(SHUT_WR)``, then reads) gets every byte
  before the server closes its side;
* ``poller.stop(desc)`` before ``sock.close()``.

    python examples/echo_server.py [--port 9000] [--workers 8]

Stop it with Ctrl-C (or SIGTERM): the poller closes, every worker gets ``POLLER_CLOSED``
for each connection still open and closes it, then the workers end.
"""

from __future__ import annotations

import argparse
import signal
import socket

import trio

from netpoll_trio import Desc, Event, Poller, handle_listener, handle_read

READING = Event.READ | Event.EDGE_TRIGGERED  # what handle_read() registers
WRITING = READING | Event.WRITE  # while output is queued
MAX_OUTPUT = 1 << 20  # bytes queued for one client; beyond that it is not reading: drop it


class Conn:
    """One client: its socket, the output it has not taken yet, and whether it sent EOF."""

    __slots__ = ("eof", "output", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.output = bytearray()
        self.eof = False


def flush(conn: Conn) -> bool:
    """Send as much queued output as the socket takes now; False if the connection failed."""
    while conn.output:
        try:
            sent = conn.sock.send(conn.output)
        except BlockingIOError:
            return True  # the send buffer is full: wait for WRITE
        except OSError:
            return False  # reset, broken pipe: the client is gone
        del conn.output[:sent]
    return True


def serve(poller: Poller, desc: Desc, event: Event) -> bool:
    """Handle one readiness event; False once the connection is finished."""
    conn: Conn = desc.data
    if event & Event.ERR:
        return False  # a socket error: recv() and send() would fail too
    while not conn.eof:  # edge-triggered: read until EAGAIN or EOF
        try:
            data = conn.sock.recv(65536)
        except BlockingIOError:
            break
        except OSError:
            return False
        if not data:
            conn.eof = True  # the client will send no more; it may still read
            break
        conn.output += data  # the "protocol": echo
        if not flush(conn) or len(conn.output) > MAX_OUTPUT:
            return False  # failed, or a client that sends but does not read
    if not flush(conn):
        return False
    if conn.eof and not conn.output:
        return False  # everything read and everything answered
    wanted = WRITING if conn.output else READING
    if desc.event != wanted:
        poller.modify(desc, wanted)  # WRITE interest only while output is queued
    return True


def finish(poller: Poller, desc: Desc) -> None:
    """Stop watching, then close (in this order: the fd number may be reused at once)."""
    if not poller.closed:  # once the poller is closed, stop() raises ClosedError
        poller.stop(desc)
    desc.data.sock.close()


async def worker(poller: Poller) -> None:
    while True:
        try:
            batch = await poller.receive_batch()
        except trio.EndOfChannel:  # the poller closed and every POLLER_CLOSED was taken
            return
        for desc, event in batch:
            if event & Event.POLLER_CLOSED or not serve(poller, desc, event):
                finish(poller, desc)


async def serve_forever(port: int, workers: int) -> None:
    listener = socket.create_server(("127.0.0.1", port), backlog=4096)
    print(f"echo server listening on 127.0.0.1:{listener.getsockname()[1]}", flush=True)
    try:
        async with Poller() as poller, trio.open_nursery() as nursery:

            def on_listener(event: Event) -> None:
                while not event & Event.POLLER_CLOSED:
                    try:
                        sock, _ = listener.accept()
                    except BlockingIOError:
                        return
                    except OSError:  # e.g. EMFILE; wait for the next connection
                        return
                    # READ | EDGE_TRIGGERED, non-blocking; the worker finds it as desc.data
                    poller.start(handle_read(sock, data=Conn(sock)))

            for _ in range(workers):
                nursery.start_soon(worker, poller)
            poller.start(handle_listener(listener, READING), on_listener)
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    # Ctrl-C: close the poller; the workers close every connection
                    # (POLLER_CLOSED) and end, and so does the nursery.
                    await poller.aclose()
                    break
    finally:
        listener.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="netpoll_trio echo server (worker pool)")
    parser.add_argument("--port", type=int, default=9000, help="0 picks a free port")
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args()
    trio.run(serve_forever, args.port, args.workers)
    print("bye", flush=True)


if __name__ == "__main__":
    main()
