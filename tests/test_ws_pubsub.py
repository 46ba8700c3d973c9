"""examples/ws_pubsub.py against a WebSocket client nobody here wrote (``websockets``),
and against hand-made frames for what a correct client never sends.

The server runs as a subprocess on port 0. Everything waits on replies, closes or EOF;
nothing sleeps and no timing is asserted.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest

websockets = pytest.importorskip("websockets")
pytest.importorskip("wsproto")

from websockets.asyncio.client import ClientConnection, connect  # noqa: E402
from websockets.exceptions import ConnectionClosed, ConnectionClosedError  # noqa: E402

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "ws_pubsub.py"
MAX_BUFFER = 64 * 1024  # the output cap the test server runs with
MAX_MESSAGE = 1 << 20


@contextmanager
def running(*args: str) -> Iterator[tuple[int, subprocess.Popen[str]]]:
    """Start the example on a free port; yield the port and the process; kill on failure."""
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(
            [sys.executable, str(EXAMPLE), "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        try:
            assert proc.stdout is not None
            first = proc.stdout.readline()
            if "listening on 127.0.0.1:" not in first:
                log.seek(0)
                pytest.fail(f"the server did not start: {first!r} {log.read()}")
            yield int(first.rsplit(":", 1)[1]), proc
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
            elif proc.stdout is not None:
                proc.stdout.close()


def stop(proc: subprocess.Popen[str]) -> str:
    """SIGINT; the server must exit 0 and say bye. Returns its stdout."""
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert "bye" in out
    return out


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    with running("--max-buffer", str(MAX_BUFFER), "--max-message", str(MAX_MESSAGE)) as (
        port,
        proc,
    ):
        yield port
        stop(proc)


def client(port: int, topic: str, **options: Any) -> Any:
    options.setdefault("max_size", None)
    options.setdefault("ping_interval", None)
    options.setdefault("compression", None)
    return connect(f"ws://127.0.0.1:{port}{topic}", **options)


# ----------------------------------------------------------------------- raw frames


def frame(
    opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, mask: bool = True
) -> bytes:
    """One WebSocket frame as a client sends it (masked unless told otherwise)."""
    first = (0x80 if fin else 0) | rsv | opcode
    bit = 0x80 if mask else 0
    n = len(payload)
    if n < 126:
        head = bytes([first, bit | n])
    elif n < 1 << 16:
        head = bytes([first, bit | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([first, bit | 127]) + n.to_bytes(8, "big")
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


class Raw:
    """A blocking client socket speaking WebSocket by hand."""

    def __init__(self, port: int, topic: str = "/raw", *, rcvbuf: int = 0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(30)
        self.sock.connect(("127.0.0.1", port))
        self.buf = b""
        self.sock.sendall(
            f"GET {topic} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = b""
        while not head.endswith(b"\r\n\r\n"):  # byte by byte: nothing past the response
            byte = self.sock.recv(1)
            assert byte, f"closed during the handshake: {head!r}"
            head += byte
        assert head.startswith(b"HTTP/1.1 101 "), head
        assert b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head  # RFC 6455's example accept token

    def close(self) -> None:
        self.sock.close()

    def _exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read_frame(self) -> tuple[int, bytes]:
        """The next frame from the server: (opcode, payload). Server frames are not masked."""
        first, second = self._exactly(2)
        assert first & 0x80, "the server sends whole messages"
        assert not second & 0x80, "server frames are not masked"
        n = second & 0x7F
        if n == 126:
            n = int.from_bytes(self._exactly(2), "big")
        elif n == 127:
            n = int.from_bytes(self._exactly(8), "big")
        return first & 0x0F, self._exactly(n)

    def expect_close(self) -> int:
        """Read up to the server's close frame, then to EOF; return its code."""
        while True:
            opcode, payload = self.read_frame()
            if opcode == 0x8:
                break
        code = int.from_bytes(payload[:2], "big")
        while self.sock.recv(65536):  # then the server hangs up
            pass
        return code


# ----------------------------------------------------------------------- messages


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 1 << 20])
def test_messages_round_trip_intact(port: int, size: int) -> None:
    """Binary and text, at each frame-length boundary and up to 1 MiB; a second
    subscriber of the topic gets the same bytes."""

    async def main() -> None:
        topic = f"/size-{size}"
        async with client(port, topic) as a, client(port, topic) as b:
            binary = bytes(i * 7 & 0xFF for i in range(size))
            text = "".join(chr(0x61 + i % 26) for i in range(size))
            for message in (binary, text):
                await a.send(message)
                assert await a.recv() == message
                assert await b.recv() == message

    asyncio.run(main())


def test_non_ascii_text(port: int) -> None:
    async def main() -> None:
        async with client(port, "/utf8") as ws:
            message = "héllo wörld ✓ " * 5000  # multi-byte characters across reads
            await ws.send(message)
            assert await ws.recv() == message

    asyncio.run(main())


def test_fragmented_messages_are_reassembled(port: int) -> None:
    async def main() -> None:
        async with client(port, "/fragments") as a, client(port, "/fragments") as b:
            await a.send(["fra", "gme", "nted ✓"])  # websockets sends one frame per part
            await a.send([b"\x00" * 70_000, b"", b"\xff" * 3])
            for ws in (a, b):
                assert await ws.recv() == "fragmented ✓"
                assert await ws.recv() == b"\x00" * 70_000 + b"\xff" * 3

    asyncio.run(main())


def test_ping_between_fragments(port: int) -> None:
    """A control frame may come between a message's fragments: the pong comes at once,
    the message when it is complete."""
    raw = Raw(port, "/interleaved")
    try:
        raw.sock.sendall(frame(0x1, b"Hel", fin=False))
        raw.sock.sendall(frame(0x9, b"are you there"))
        assert raw.read_frame() == (0xA, b"are you there")
        raw.sock.sendall(frame(0x0, b"lo", fin=True))
        assert raw.read_frame() == (0x1, b"Hello")
    finally:
        raw.close()


def test_pings_are_answered(port: int) -> None:
    async def main() -> None:
        async with client(port, "/ping") as ws:
            for data in (b"", b"x" * 125, "text"):
                await (await ws.ping(data))  # the pong with the same data came back

    asyncio.run(main())


# ----------------------------------------------------------------------- closing


def test_close_from_the_client(port: int) -> None:
    async def main() -> None:
        async with client(port, "/close") as a, client(port, "/close") as b:
            await a.close(1000, "done")
            await a.wait_closed()
            # protocol.close_rcvd / close_sent: in every websockets the test extra may pick
            # (16.x on Python 3.10 has no ClientConnection.close_exc).
            assert a.protocol.close_rcvd is not None  # the server answered the close frame
            assert a.protocol.close_rcvd.code == 1000
            # The topic goes on for the others.
            await b.send("still here")
            assert await b.recv() == "still here"

    asyncio.run(main())


def test_close_handshake_by_hand(port: int) -> None:
    raw = Raw(port, "/close-raw")
    try:
        raw.sock.sendall(frame(0x8, (1000).to_bytes(2, "big") + b"bye"))
        assert raw.expect_close() == 1000
    finally:
        raw.close()


def test_half_close_after_the_close_frame(port: int) -> None:
    """A message, a close frame and a FIN in one go: the server handles what came before
    the end (the message is broadcast back, the close answered) before it hangs up."""
    raw = Raw(port, "/half")
    try:
        raw.sock.sendall(frame(0x2, b"last words") + frame(0x8, (1000).to_bytes(2, "big")))
        raw.sock.shutdown(socket.SHUT_WR)
        assert raw.read_frame() == (0x2, b"last words")
        assert raw.expect_close() == 1000
    finally:
        raw.close()


@pytest.mark.parametrize(
    ("data", "code"),
    [
        pytest.param(frame(0x1, b"hi", mask=False), 1002, id="unmasked"),
        pytest.param(frame(0x1, b"hi", rsv=0x40), 1002, id="rsv1-without-extension"),
        pytest.param(frame(0x3, b"hi"), 1002, id="reserved-opcode"),
        pytest.param(frame(0x9, b"hi", fin=False), 1002, id="fragmented-ping"),
        pytest.param(frame(0x9, b"x" * 126), 1002, id="long-ping"),
        pytest.param(frame(0x0, b"hi"), 1002, id="continuation-first"),
        pytest.param(frame(0x1, b"a", fin=False) + frame(0x1, b"b"), 1002, id="nested-message"),
        pytest.param(frame(0x1, b"\xff\xfe"), 1007, id="invalid-utf8"),
        pytest.param(frame(0x1, "é".encode()[:1]), 1007, id="truncated-utf8"),
        pytest.param(frame(0x8, (999).to_bytes(2, "big")), 1002, id="bad-close-code"),
    ],
)
def test_invalid_frames_close_with_the_right_code(port: int, data: bytes, code: int) -> None:
    raw = Raw(port, "/invalid")
    try:
        raw.sock.sendall(data)
        assert raw.expect_close() == code
    finally:
        raw.close()


def test_invalid_utf8_from_the_real_client(port: int) -> None:
    """websockets sends bytes as a text frame when told to, unchecked: the server closes
    with 1007 and the client sees it."""

    async def main() -> None:
        async with client(port, "/utf8-bad") as ws:
            await ws.send(b"ok \xff\xfe", text=True)
            with pytest.raises(ConnectionClosedError) as caught:
                await ws.recv()
            assert caught.value.rcvd is not None
            assert caught.value.rcvd.code == 1007

    asyncio.run(main())


def test_message_too_big(port: int) -> None:
    async def main() -> None:
        async with client(port, "/big") as ws:
            await ws.send(b"x" * (MAX_MESSAGE + 1))
            with pytest.raises(ConnectionClosedError) as caught:
                await ws.recv()
            assert caught.value.rcvd is not None
            assert caught.value.rcvd.code == 1009

    asyncio.run(main())


def test_not_a_websocket_request(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
        assert reply.startswith(b"HTTP/1.1 400 ")


# ----------------------------------------------------------------------- many clients


def test_200_connections_everyone_gets_everything(port: int) -> None:
    """200 clients on one topic each send one message; every one of the 200 gets all
    200 messages, intact."""
    n = 200

    async def main() -> None:
        async with AsyncExitStack() as stack:
            clients: list[ClientConnection] = [
                await stack.enter_async_context(client(port, "/crowd")) for _ in range(n)
            ]
            # Every connection is subscribed once its handshake is done (the server
            # subscribes before it answers), so the sends may start now.
            expected = {f"{i}:{'m' * (i % 50)}" for i in range(n)}

            async def receive_all(ws: ClientConnection) -> set[str]:
                return {str(await ws.recv()) for _ in range(n)}

            receivers = [asyncio.create_task(receive_all(ws)) for ws in clients]
            for i, ws in enumerate(clients):
                await ws.send(f"{i}:{'m' * (i % 50)}")
            for got in await asyncio.gather(*receivers):
                assert got == expected

    asyncio.run(main())


def test_a_client_that_does_not_read_is_dropped_at_the_cap(port: int) -> None:
    """Two clients that never read, three that do: 2 MiB of broadcasts later the
    non-readers have been cut off (their stream ends short) and every reader got every
    message, in order, intact."""
    count, size = 64, 32 * 1024  # 2 MiB: far past cap + the few kernel buffers involved

    async def main() -> None:
        loop = asyncio.get_running_loop()
        non_readers = [
            await loop.run_in_executor(None, lambda: Raw(port, "/slow", rcvbuf=4096))
            for _ in range(2)
        ]
        try:
            async with AsyncExitStack() as stack:
                readers = [await stack.enter_async_context(client(port, "/slow")) for _ in range(3)]

                # Paced by the readers (each message once all have it): a reader never
                # has more than one message pending, so only the non-readers fall behind.
                for i in range(count):
                    message = bytes([i]) * size
                    await readers[0].send(message)
                    for ws in readers:
                        assert await ws.recv() == message
            for raw in non_readers:
                received = await loop.run_in_executor(None, read_to_end, raw)
                assert received < count * size  # cut off, not merely slow
        finally:
            for raw in non_readers:
                raw.close()

    asyncio.run(main())


def read_to_end(raw: Raw) -> int:
    """Bytes until the server hung up (EOF or reset)."""
    total = len(raw.buf)
    try:
        while chunk := raw.sock.recv(65536):
            total += len(chunk)
    except ConnectionResetError:
        pass
    return total


# ----------------------------------------------------------------------- shutdown


def test_sigint_sends_close_frames_and_exits_0() -> None:
    async def main(port: int, proc: subprocess.Popen[str]) -> None:
        async with AsyncExitStack() as stack:
            clients = [
                await stack.enter_async_context(client(port, f"/t{i % 3}")) for i in range(20)
            ]
            proc.send_signal(signal.SIGINT)
            for ws in clients:
                with pytest.raises(ConnectionClosed):
                    await ws.recv()
                await ws.wait_closed()
                rcvd, sent = ws.protocol.close_rcvd, ws.protocol.close_sent
                assert rcvd is not None
                assert rcvd.code == 1001  # going away
                assert sent is not None  # and the client answered it
                assert sent.code == 1001

    with running() as (port, proc):
        asyncio.run(main(port, proc))
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0
        assert "bye" in out
