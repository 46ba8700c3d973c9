"""Line-based broadcast chat with one-shot descriptors and resume (trio).

The shape of the gobwas/ws chat example: every line a client sends is broadcast to every
other client. Connections are registered READ | ONE_SHOT on the shared stream: after a
worker takes a connection, the kernel reports nothing more for it until the worker calls
``poller.resume(desc)``. So one connection is only ever handled by one worker at a time --
its partial line buffer needs no lock -- while 4 workers share all connections.

    python examples/chat_server.py [--port 9001]

Try it with two terminals running ``nc 127.0.0.1 9001``.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import socket
from dataclasses import dataclass, field

import trio

from netpoll_trio import Desc, Event, Poller, handle_listener, handle_read_once

GONE = Event.HUP | Event.READ_HUP | Event.ERR | Event.POLLER_CLOSED


@dataclass(eq=False)
class Client:
    sock: socket.socket
    name: str
    pending: bytearray = field(default_factory=bytearray)


async def serve(port: int) -> None:
    listener = socket.create_server(("127.0.0.1", port), backlog=1024)
    clients: dict[Desc, Client] = {}
    print(f"chat server listening on 127.0.0.1:{listener.getsockname()[1]}", flush=True)

    def broadcast(sender: Client, line: bytes) -> None:
        message = sender.name.encode() + b": " + line + b"\n"
        for client in list(clients.values()):
            if client is not sender:
                # A client that does not read (or left) loses the line; a real server
                # would buffer or disconnect it.
                with contextlib.suppress(OSError):
                    client.sock.send(message)

    def read_lines(client: Client) -> bool:
        """Read what is there; broadcast complete lines. False when the client left."""
        while True:
            try:
                data = client.sock.recv(4096)
            except BlockingIOError:
                return True
            except OSError:
                return False
            if not data:
                return False
            client.pending += data
            while b"\n" in client.pending:
                line, _, rest = bytes(client.pending).partition(b"\n")
                client.pending[:] = rest
                broadcast(client, line.rstrip(b"\r"))

    try:
        async with Poller() as poller, trio.open_nursery() as nursery:

            def on_listener(event: Event) -> None:
                while True:
                    try:
                        sock, addr = listener.accept()
                    except (BlockingIOError, OSError):
                        return
                    desc = handle_read_once(sock)  # READ | ONE_SHOT
                    clients[desc] = Client(sock, f"{addr[0]}:{addr[1]}")
                    poller.start(desc)

            async def worker() -> None:
                async for desc, event in poller:
                    client = clients.get(desc)
                    if client is None:
                        continue
                    if event & GONE or not read_lines(client):
                        if not poller.closed:
                            poller.stop(desc)
                        del clients[desc]
                        client.sock.close()
                    else:
                        poller.resume(desc)  # one-shot: ask for the next readiness

            for _ in range(4):
                nursery.start_soon(worker)
            poller.start(handle_listener(listener, Event.READ | Event.EDGE_TRIGGERED), on_listener)
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:  # Ctrl-C: leave the block, which closes the poller
                    nursery.cancel_scope.cancel()
                    break
    finally:
        for client in clients.values():
            client.sock.close()
        listener.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="netpoll_trio broadcast chat (one-shot)")
    parser.add_argument("--port", type=int, default=9001, help="0 picks a free port")
    args = parser.parse_args()
    trio.run(serve, args.port)
    print("bye", flush=True)


if __name__ == "__main__":
    main()
