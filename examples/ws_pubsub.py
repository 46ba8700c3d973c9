"""WebSocket pub/sub server: netpoll_trio's worker pool with wsproto (trio).

Every client subscribes to the topic named by its URL path (``ws://host:port/news``); a
message any client sends -- text or binary -- goes to every subscriber of that topic,
the sender included. The shape of easygo's netpoll + gobwas/ws servers: an idle
connection costs a socket, a :class:`~netpoll_trio.Desc` and a small state object --
no task, no coroutine frame, no read buffer.

- Accepting: the listener is a desc too, served by a callback that accepts everything
  pending on each readiness edge (one synchronous loop per burst of connections, no
  task or checkpoint per accept, one epoll for everything).
- Connections: ``handle_read(sock, data=client)`` (READ | EDGE_TRIGGERED) on the
  poller's shared stream; a few workers take batches with
  ``await poller.receive_batch()`` and find their connection as ``desc.data``.
  Handling a connection never awaits, so a batch item is processed to the end before
  any other task runs: no locks, and one connection is never in two places at once.
- Protocol: wsproto, sans-I/O -- the HTTP upgrade (with h11, dropped once the
  connection is open), text and binary messages, fragmented messages reassembled,
  pings answered, the close handshake both ways, invalid frames answered with the close
  code wsproto reports (1002 protocol error, 1007 invalid UTF-8), messages over
  ``--max-message`` closed with 1009.
- Output: a broadcast frame is encoded once (server frames are not masked, so the bytes
  are the same for every subscriber) and sent directly. What the kernel does not take
  goes to the client's own output buffer, and WRITE interest is added with
  ``poller.modify()``; it is dropped again once the buffer is flushed. A client whose
  buffer already holds ``--max-buffer`` bytes when more output comes is dropped: the
  others never wait for it, and memory stays bounded.
- Shutdown: SIGINT or SIGTERM stops accepting, sends every client a close frame
  (1001 going away), waits up to ``--shutdown-timeout`` seconds for the replies, then
  closes the poller and whatever is left.

    python examples/ws_pubsub.py [--port 9002] [--workers 4]

Try it with ``python -m websockets ws://127.0.0.1:9002/chat`` in two terminals.
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
from collections.abc import Iterable
from typing import Any

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection, ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Request,
    TextMessage,
)
from wsproto.events import Event as WSEvent
from wsproto.frame_protocol import CloseReason, FrameProtocol
from wsproto.utilities import RemoteProtocolError

from netpoll_trio import Desc, Event, Poller, handle_listener, handle_read

log = logging.getLogger("ws_pubsub")

READ_ONLY = Event.READ | Event.EDGE_TRIGGERED
READ_WRITE = Event.READ | Event.WRITE | Event.EDGE_TRIGGERED
INPUT = Event.READ | Event.READ_HUP | Event.HUP
RECV_SIZE = 65536
READ_BUDGET = 1 << 20  # bytes read from one connection per turn before others get theirs
TCP_NOTSENT_LOWAT = getattr(socket, "TCP_NOTSENT_LOWAT", 25)  # Linux
NOTSENT_LOWAT = 1 << 14


class Client:
    """One connection's state; reached from its desc as ``desc.data``."""

    __slots__ = ("closed", "closing", "desc", "out", "parts", "parts_size", "sock", "topic", "ws")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.desc: Desc  # set right after, as handle_read(sock, data=client)
        #: WSConnection during the HTTP upgrade, then only wsproto's Connection (no h11).
        self.ws: WSConnection | Connection = WSConnection(ConnectionType.SERVER)
        self.topic: str | None = None
        self.out: bytearray | None = None  # output the kernel has not taken yet
        self.parts: list[Any] | None = None  # a message arriving in pieces
        self.parts_size = 0
        self.closing = False  # hang up once the output is flushed
        self.closed = False


class PubSub:
    """The server's state: topics, clients, limits. Every method runs on the loop thread."""

    def __init__(self, poller: Poller, *, max_buffer: int, max_message: int) -> None:
        self.poller = poller
        self.max_buffer = max_buffer
        self.max_message = max_message
        self.topics: dict[str, set[Client]] = {}
        self.clients: set[Client] = set()
        self.encoder = FrameProtocol(client=False, extensions=[])
        self.all_gone = trio.Event()
        self.accepted = self.dropped = 0

    # ------------------------------------------------------------------ connections

    def on_listener(self, listener: socket.socket) -> None:
        """Accept everything pending (edge-triggered: until EAGAIN)."""
        while True:
            try:
                sock, _ = listener.accept()
            except BlockingIOError:
                return
            except OSError as err:  # EMFILE and friends: the next connection retries
                log.warning("accept failed: %s", err)
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # As trio's SocketStream does: at most 16 KiB unsent in the kernel, so a
            # client that does not read fills *our* buffer, where the cap applies, instead
            # of megabytes of auto-tuned kernel buffer.
            sock.setsockopt(socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT, NOTSENT_LOWAT)
            client = Client(sock)
            client.desc = handle_read(sock, data=client)  # non-blocking from here on
            self.clients.add(client)
            self.accepted += 1
            self.poller.start(client.desc)  # no callback: to the shared stream

    async def worker(self) -> None:
        """Take batches of ready connections from the poller's shared stream."""
        while True:
            try:
                batch = await self.poller.receive_batch(64)
            except trio.EndOfChannel:  # the poller closed and every desc was told
                return
            for desc, event in batch:
                client = desc.data
                if client.closed:  # an earlier item of this batch dropped it
                    continue
                try:
                    self.service(client, event)
                except Exception:  # one connection's bug must not take the others down
                    log.exception("dropping the client on fd %d", desc.fileno())
                    self.remove(client)

    def service(self, client: Client, event: Event) -> None:
        if event & Event.POLLER_CLOSED:
            self.remove(client)
            return
        if event & Event.WRITE and client.out:
            self.flush(client)
        if not client.closed and event & (INPUT | Event.ERR):
            # Even on HUP or ERR, read first: data (a close frame) may precede the end,
            # and recv() reports the error if there is one.
            self.read(client)

    def read(self, client: Client) -> None:
        """Read until EAGAIN (or the budget), feeding wsproto; handle what it finds."""
        received = 0
        while received < READ_BUDGET:
            try:
                data = client.sock.recv(RECV_SIZE)
            except BlockingIOError:
                return
            except OSError as err:
                self.drop(client, f"recv: {err}")
                return
            if not data:  # EOF: everything before it was handled already. The client
                self.end(client)  # may only have shut down its side: flush, then hang up.
                return
            received += len(data)
            if client.ws.state is ConnectionState.CLOSED:
                continue  # closing: whatever still comes is discarded
            try:
                client.ws.receive_data(data)
            except RemoteProtocolError as err:  # a bad HTTP upgrade request
                if err.event_hint is not None and isinstance(client.ws, WSConnection):
                    self.send(client, client.ws.send(err.event_hint))
                self.end(client)
                return
            if not self.handle_events(client, client.ws.events()):
                return
        # Still readable: ask for another turn instead of starving the other clients.
        self.poller.resume(client.desc)

    def handle_events(self, client: Client, events: Iterable[WSEvent]) -> bool:
        """Act on wsproto's events; False once the client is closing or gone."""
        ws = client.ws
        for ev in events:
            if isinstance(ev, (TextMessage, BytesMessage)):
                if not self.receive_part(client, ev.data, ev.message_finished):
                    return False
            elif isinstance(ev, Ping):
                if ws.state is not ConnectionState.OPEN:
                    continue  # closing already: no pong
                if not self.send(client, ws.send(ev.response())):
                    return False
            elif isinstance(ev, Request):
                assert isinstance(ws, WSConnection)
                topic = ev.target.split("?", 1)[0]
                client.topic = topic
                self.topics.setdefault(topic, set()).add(client)  # subscribed before the 101
                response = ws.send(AcceptConnection())  # no extensions: no compression
                assert ws.connection is not None
                client.ws = ws.connection  # the HTTP part (h11) is done: let it go
                if not self.send(client, response):
                    return False
            elif isinstance(ev, CloseConnection):
                self.on_close(client, ev)
                return False
            # Pong: nothing to do.
        return True

    def receive_part(self, client: Client, data: str | bytes, finished: bool) -> bool:
        """Collect a message's pieces (frames, and parts of frames); broadcast it whole."""
        size = client.parts_size + len(data)
        if size > self.max_message:
            self.close(client, CloseReason.MESSAGE_TOO_BIG)
            return False
        if finished and client.parts is None:
            message = data  # the common case: a message in one piece
        else:
            if client.parts is None:
                client.parts = []
            client.parts.append(data)
            client.parts_size = size
            if not finished:
                return True
            pieces, client.parts, client.parts_size = client.parts, None, 0
            message = "".join(pieces) if isinstance(data, str) else b"".join(pieces)
        assert client.topic is not None
        self.broadcast(client.topic, message)
        return not client.closed

    def on_close(self, client: Client, ev: CloseConnection) -> None:
        ws = client.ws
        if ws.state is ConnectionState.REMOTE_CLOSING:  # the client closes: answer, hang up
            if self.send(client, ws.send(ev.response())):
                self.end(client)
        elif ws.state is ConnectionState.OPEN:
            # wsproto found an invalid frame (1002) or invalid UTF-8 (1007): fail the
            # connection with that code and hang up without waiting for an answer.
            self.close(client, ev.code)
        else:  # CLOSED: the answer to our own close frame
            self.remove(client)

    # ------------------------------------------------------------------ output

    def broadcast(self, topic: str, message: str | bytes) -> None:
        """Send a message to every subscriber of ``topic``; slow ones are dropped."""
        frame = bytes(self.encoder.send_data(message, fin=True))  # encoded once for all
        for client in list(self.topics.get(topic, ())):
            if not client.closing:
                self.send(client, frame)

    def send(self, client: Client, data: bytes) -> bool:
        """Send now, or queue what the kernel does not take; False if the client is gone."""
        if client.closed:
            return False
        if client.out:
            if len(client.out) >= self.max_buffer:  # it does not read: nobody waits for it
                self.drop(client, "output buffer full")
                return False
            client.out += data
            return True
        try:
            sent = client.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as err:
            self.drop(client, f"send: {err}")
            return False
        if sent < len(data):
            client.out = bytearray(memoryview(data)[sent:])
            self.poller.modify(client.desc, READ_WRITE)  # tell me when it can take more
        return True

    def flush(self, client: Client) -> None:
        out = client.out
        assert out is not None
        while out:
            try:
                sent = client.sock.send(out)
            except BlockingIOError:
                return  # still full: WRITE interest stays, the next edge brings us back
            except OSError as err:
                self.drop(client, f"send: {err}")
                return
            del out[:sent]  # cheap: a bytearray drops its head without moving the rest
        client.out = None
        self.poller.modify(client.desc, READ_ONLY)
        if client.closing:
            self.remove(client)

    # ------------------------------------------------------------------ endings

    def close(self, client: Client, code: int) -> None:
        """Send a close frame with ``code`` and hang up once it is out."""
        if client.ws.state is ConnectionState.OPEN and self.send(
            client, client.ws.send(CloseConnection(code=code))
        ):
            self.end(client)
        elif not client.closed:
            self.remove(client)

    def end(self, client: Client) -> None:
        """Hang up as soon as the output buffer is flushed."""
        client.closing = True
        if not client.out:
            self.remove(client)

    def drop(self, client: Client, why: str) -> None:
        self.dropped += 1
        log.info("dropping the client on fd %d: %s", client.sock.fileno(), why)
        self.remove(client)

    def remove(self, client: Client) -> None:
        """Forget the client: unsubscribe, stop its desc, then close its socket."""
        if client.closed:
            return
        client.closed = True
        client.out = client.parts = None
        if client.topic is not None:
            subscribers = self.topics.get(client.topic)
            if subscribers is not None:
                subscribers.discard(client)
                if not subscribers:
                    del self.topics[client.topic]
        self.clients.discard(client)
        if not self.poller.closed:
            self.poller.stop(client.desc)  # stop before close: the fd number may be reused
        client.sock.close()
        if not self.clients:
            self.all_gone.set()

    async def shutdown(self, timeout: float) -> None:
        """Send every client a close frame (1001) and wait for the answers."""
        for client in list(self.clients):
            if client.ws.state is ConnectionState.OPEN:
                self.close(client, CloseReason.GOING_AWAY)
            elif client.ws.state is ConnectionState.CONNECTING:
                self.remove(client)  # still in the HTTP upgrade: nothing to say yet
        if self.clients:
            with trio.move_on_after(timeout):
                await self.all_gone.wait()
        for client in list(self.clients):
            self.remove(client)


async def serve(args: argparse.Namespace) -> None:
    listener = socket.create_server((args.host, args.port), backlog=args.backlog)
    listener.setblocking(False)
    host, port = listener.getsockname()[:2]
    print(f"ws pub/sub listening on {host}:{port}", flush=True)
    try:
        async with Poller() as poller:
            server = PubSub(poller, max_buffer=args.max_buffer, max_message=args.max_message)
            try:
                async with trio.open_nursery() as nursery:
                    for _ in range(args.workers):
                        nursery.start_soon(server.worker)
                    listening = handle_listener(listener, Event.READ | Event.EDGE_TRIGGERED)
                    poller.start(listening, lambda event: server.on_listener(listener))
                    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                        async for _ in signals:
                            break
                    poller.stop(listening)  # stop accepting (stop before close)
                    listener.close()
                    await server.shutdown(args.shutdown_timeout)
                    await poller.aclose()  # the workers see the end of the stream and return
            finally:
                for client in list(server.clients):
                    server.remove(client)
                log.warning("accepted %d connections, dropped %d", server.accepted, server.dropped)
    finally:
        listener.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="netpoll_trio WebSocket pub/sub (wsproto)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9002, help="0 picks a free port")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--backlog", type=int, default=4096)
    parser.add_argument(
        "--max-buffer",
        type=int,
        default=4 << 20,
        help="drop a client whose unsent output already holds this many bytes (default 4 MiB)",
    )
    parser.add_argument(
        "--max-message",
        type=int,
        default=1 << 20,
        help="largest message accepted, in bytes (text: characters); larger: close 1009",
    )
    parser.add_argument("--shutdown-timeout", type=float, default=5.0)
    parser.add_argument("-v", "--verbose", action="store_true", help="log every drop")
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s"
    )
    trio.run(serve, args)
    print("bye", flush=True)


if __name__ == "__main__":
    main()
