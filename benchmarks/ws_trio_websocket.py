"""The WebSocket pub/sub server of ``examples/ws_pubsub.py``, written the usual trio way.

For comparison in ``benchmarks/ws_scale.py``: trio-websocket's ``serve_websocket`` with a
task per connection (trio-websocket adds its own reader task per connection). Same
behaviour as the example: the topic is the URL path, a message goes to every subscriber
of its topic (the sender included), a client whose unsent output already holds
``--max-buffer`` bytes when more comes is dropped, the others never wait for it.

Sending: broadcasting puts the message on each subscriber's own queue; a sender task per
subscriber drains it with ``send_message()`` and exits when the queue is empty. So an idle
connection costs only the handler task and trio-websocket's reader task -- the leanest
task-per-connection shape we know, which keeps the comparison fair to trio-websocket.
The queued bytes count toward the cap (``send_message()`` itself blocks while the kernel
buffer is full). A dropped client's TCP connection is closed at once, without a close
handshake (it does not read, so it would never see one).

    python benchmarks/ws_trio_websocket.py [--port 9003]
"""

from __future__ import annotations

import argparse
import contextlib
import signal
from collections import deque

import trio
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    serve_websocket,
)


class Subscriber:
    """One connection's outgoing side."""

    __slots__ = ("dropped", "nursery", "queue", "queued", "sending", "wakeup", "ws")

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self.nursery: trio.Nursery  # the connection's own, set by its handler
        self.queue: deque[str | bytes] = deque()
        self.queued = 0
        self.sending = False
        self.dropped = False


class PubSub:
    def __init__(self, max_buffer: int, *, persistent: bool = False) -> None:
        self.max_buffer = max_buffer
        self.persistent = persistent
        self.topics: dict[str, set[Subscriber]] = {}
        self.subscribers: set[Subscriber] = set()
        self.accepted = self.dropped = 0

    async def handler(self, request: WebSocketRequest) -> None:
        try:
            ws = await request.accept()
        except ConnectionClosed:
            return
        topic = request.path.split("?", 1)[0]
        self.accepted += 1
        sub = Subscriber(ws)
        try:
            async with trio.open_nursery() as nursery:
                sub.nursery = nursery
                if self.persistent:
                    sub.wakeup = trio.Event()
                    nursery.start_soon(self.persistent_sender, sub)
                self.topics.setdefault(topic, set()).add(sub)
                self.subscribers.add(sub)
                while True:
                    try:
                        message = await ws.get_message()
                    except ConnectionClosed:
                        break
                    self.broadcast(topic, message)
                nursery.cancel_scope.cancel()  # nothing more to send to a closed connection
        finally:
            subscribers = self.topics.get(topic)
            if subscribers is not None:
                subscribers.discard(sub)
                if not subscribers:
                    del self.topics[topic]
            self.subscribers.discard(sub)
            if sub.dropped:
                await trio.aclose_forcefully(ws)  # no close handshake with a non-reader

    def broadcast(self, topic: str, message: str | bytes) -> None:
        for sub in list(self.topics.get(topic, ())):
            if sub.queued >= self.max_buffer:
                self.drop(sub)
                continue
            sub.queue.append(message)
            sub.queued += len(message)
            if self.persistent:
                sub.wakeup.set()
            elif not sub.sending:
                sub.sending = True
                sub.nursery.start_soon(self.sender, sub)

    def drop(self, sub: Subscriber) -> None:
        if not sub.dropped:
            sub.dropped = True
            self.dropped += 1
            sub.nursery.cancel_scope.cancel()

    async def sender(self, sub: Subscriber) -> None:
        try:
            while sub.queue:
                message = sub.queue.popleft()
                sub.queued -= len(message)
                await sub.ws.send_message(message)
        except ConnectionClosed:
            pass
        finally:
            sub.sending = False

    async def persistent_sender(self, sub: Subscriber) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await sub.wakeup.wait()
                sub.wakeup = trio.Event()
                while sub.queue:
                    message = sub.queue.popleft()
                    sub.queued -= len(message)
                    await sub.ws.send_message(message)

    async def shutdown(self, timeout: float) -> None:
        """Close every connection with 1001 (going away), waiting up to ``timeout``."""
        with trio.move_on_after(timeout):
            async with trio.open_nursery() as nursery:
                for sub in list(self.subscribers):
                    nursery.start_soon(sub.ws.aclose, 1001)


async def serve(args: argparse.Namespace) -> None:
    pubsub = PubSub(args.max_buffer, persistent=args.persistent_sender)
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            lambda task_status: serve_websocket(
                pubsub.handler,
                args.host,
                args.port,
                None,
                max_message_size=args.max_message,
                task_status=task_status,
            )
        )
        print(f"trio-websocket pub/sub listening on {args.host}:{server.port}", flush=True)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                break
        await pubsub.shutdown(args.shutdown_timeout)
        nursery.cancel_scope.cancel()
    print(f"accepted {pubsub.accepted} connections, dropped {pubsub.dropped}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description="trio-websocket pub/sub (task per connection)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9003, help="0 picks a free port")
    parser.add_argument("--max-buffer", type=int, default=4 << 20)
    parser.add_argument("--max-message", type=int, default=1 << 20)
    parser.add_argument("--shutdown-timeout", type=float, default=5.0)
    parser.add_argument(
        "--persistent-sender",
        action="store_true",
        help="one sender task per connection for its whole life (default: only while sending)",
    )
    args = parser.parse_args()
    trio.run(serve, args)
    print("bye", flush=True)


if __name__ == "__main__":
    main()
