"""Line-based broadcast chat with one-shot descriptors (trio).

The shape of the gobwas/ws chat example: every line a client sends is broadcast to every
other client. Connections are registered ``READ | ONE_SHOT`` on the shared stream, with
their ``Client`` in ``desc.data``: after a worker takes a connection, the kernel reports
nothing more for it until the worker re-arms it (``poller.modify()``, which re-arms like
``poller.resume()`` and also sets the WRITE interest). So one connection is handled by
one worker at a time while 4 workers share all connections.

Writing is where a chat goes wrong: a client that reads slowly (or never) must not lose
lines, corrupt the framing of others, or make the server's memory grow. Each client has
an output buffer: a broadcast appends whole lines to it and sends what the socket takes;
the rest waits, with WRITE interest, until the client reads. A client with more than
``MAX_OUTPUT`` bytes waiting is dropped. A client that sends its last lines and closes
(or half-closes) has every line read and broadcast first.

    python examples/chat_server.py [--port 9001]

Try it with two terminals running ``nc 127.0.0.1 9001``.
"""

from __future__ import annotations

import argparse
import signal
import socket

import trio

from netpoll_trio import Desc, Event, Poller, handle_listener, handle_read_once

READING = Event.READ | Event.ONE_SHOT  # what handle_read_once() registers
WRITING = READING | Event.WRITE  # while output is queued
FLUSHING = Event.WRITE | Event.ONE_SHOT  # the client sent EOF; its output is still queued
MAX_OUTPUT = 1 << 20  # bytes waiting for one client; beyond that it is not reading: drop it
MAX_LINE = 64 * 1024  # a longer line is a protocol error: drop its sender


class Client:
    """One chat member: its socket, its partial input line and its queued output."""

    __slots__ = ("closed", "eof", "name", "output", "partial", "sock")

    def __init__(self, sock: socket.socket, name: str) -> None:
        self.sock = sock
        self.name = name
        self.partial = bytearray()  # received, not yet a whole line
        self.output = bytearray()  # whole lines for this client, not yet sent
        self.eof = False
        self.closed = False


class Chat:
    def __init__(self, poller: Poller) -> None:
        self.poller = poller
        self.members: set[Desc] = set()  # everyone a line goes to (desc.data is the Client)

    def join(self, sock: socket.socket, name: str) -> None:
        desc = handle_read_once(sock, data=Client(sock, name))
        self.members.add(desc)
        self.poller.start(desc)

    def drop(self, desc: Desc) -> None:
        """Stop watching, then close: the fd number may be reused at once."""
        client: Client = desc.data
        if client.closed:
            return
        client.closed = True
        self.members.discard(desc)
        if not self.poller.closed:  # once the poller is closed, stop() raises ClosedError
            self.poller.stop(desc)
        client.sock.close()

    def send(self, desc: Desc) -> bool:
        """Queue nothing new; send what the socket takes. False if the client must go."""
        client: Client = desc.data
        while client.output:
            try:
                sent = client.sock.send(client.output)
            except BlockingIOError:
                break  # its buffer is full: the rest waits for WRITE
            except OSError:
                return False  # it left
            del client.output[:sent]
        return len(client.output) <= MAX_OUTPUT  # over the cap: it does not read

    def broadcast(self, sender: Client, line: bytes) -> None:
        message = sender.name.encode() + b": " + line + b"\n"
        for desc in list(self.members):
            client: Client = desc.data
            if client is sender:
                continue
            client.output += message  # whole lines only: framing survives partial sends
            if not self.send(desc):
                self.drop(desc)
            elif client.output and not desc.event & Event.WRITE:
                self.poller.modify(desc, FLUSHING if client.eof else WRITING)

    def serve(self, desc: Desc, event: Event) -> bool:
        """Handle one readiness event; False once the client is finished."""
        client: Client = desc.data
        if event & Event.ERR:
            return False
        while not client.eof:  # read until EAGAIN or EOF, even after a hang-up
            try:
                data = client.sock.recv(65536)
            except BlockingIOError:
                break
            except OSError:
                return False
            if not data:
                client.eof = True
                break
            client.partial += data
            while (end := client.partial.find(b"\n")) >= 0:
                line = bytes(client.partial[:end]).rstrip(b"\r")
                del client.partial[: end + 1]
                self.broadcast(client, line)
            if len(client.partial) > MAX_LINE:
                return False
        if client.eof and client.partial:  # a last line without its newline
            self.broadcast(client, bytes(client.partial).rstrip(b"\r"))
            client.partial.clear()
        if not self.send(desc):
            return False
        if client.eof and not client.output:
            return False  # it said everything and heard everything
        # One-shot: re-arm, with WRITE interest while output is queued. After EOF, WRITE
        # only: an fd at EOF stays readable, and READ would report it again at once.
        wanted = READING if not client.output else WRITING if not client.eof else FLUSHING
        self.poller.modify(desc, wanted)
        return True


async def worker(chat: Chat) -> None:
    while True:
        try:
            batch = await chat.poller.receive_batch()
        except trio.EndOfChannel:  # the poller closed and every POLLER_CLOSED was taken
            return
        for desc, event in batch:
            if desc.data.closed:
                continue  # dropped by a broadcast after this batch was taken
            if event & Event.POLLER_CLOSED or not chat.serve(desc, event):
                chat.drop(desc)


async def serve_forever(port: int) -> None:
    listener = socket.create_server(("127.0.0.1", port), backlog=1024)
    print(f"chat server listening on 127.0.0.1:{listener.getsockname()[1]}", flush=True)
    try:
        async with Poller() as poller, trio.open_nursery() as nursery:
            chat = Chat(poller)

            def on_listener(event: Event) -> None:
                while not event & Event.POLLER_CLOSED:
                    try:
                        sock, addr = listener.accept()
                    except OSError:  # BlockingIOError: all accepted; EMFILE: next time
                        return
                    chat.join(sock, f"{addr[0]}:{addr[1]}")

            for _ in range(4):
                nursery.start_soon(worker, chat)
            poller.start(handle_listener(listener, Event.READ | Event.EDGE_TRIGGERED), on_listener)
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    # Ctrl-C: close the poller; the workers drop every client
                    # (POLLER_CLOSED) and end, and so does the nursery.
                    await poller.aclose()
                    break
    finally:
        listener.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="netpoll_trio broadcast chat (one-shot)")
    parser.add_argument("--port", type=int, default=9001, help="0 picks a free port")
    args = parser.parse_args()
    trio.run(serve_forever, args.port)
    print("bye", flush=True)


if __name__ == "__main__":
    main()
