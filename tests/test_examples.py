"""Smoke tests of examples/: start each one, connect clients, exchange, stop it with
Ctrl-C (SIGINT), and check it exits cleanly.

Besides the plain exchange, every example must survive the two clients that break naive
servers: one that half-closes (sends, ``shutdown(SHUT_WR)``, then reads everything, like
``nc -N``: no byte may be lost) and one that sends but never reads (the server drops it
and keeps serving everyone else)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@contextmanager
def running(script: str, *args: str) -> Iterator[int]:
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLES / script), "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert "listening on 127.0.0.1:" in first, proc.stderr.read() if proc.stderr else first
        yield int(first.rsplit(":", 1)[1])
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        assert "bye" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    return sock


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, "connection closed early"
        data += chunk
    return data


def recv_all(sock: socket.socket) -> bytes:
    """Everything until EOF."""
    chunks = []
    while chunk := sock.recv(1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def flood_until_dropped(sock: socket.socket) -> None:
    """Send without ever reading until the server drops us (reset or broken pipe)."""
    chunk = b"x" * (1 << 16)
    for _ in range(4096):  # 256 MB: far beyond any sane output cap plus socket buffers
        try:
            sock.sendall(chunk)
        except TimeoutError:
            pytest.fail("the server neither read nor dropped a client that does not read")
        except OSError:
            return
    pytest.fail("a client that never reads was not dropped")


ECHOES = pytest.mark.parametrize(
    ("script", "args"),
    [
        ("echo_server.py", ()),
        ("anyio_asyncio.py", ()),
        ("anyio_asyncio.py", ("--uvloop",)),
        ("anyio_asyncio.py", ("--backend", "trio")),
    ],
)


@ECHOES
def test_echo_examples(script: str, args: tuple[str, ...]) -> None:
    with running(script, *args) as port:
        clients = [connect(port) for _ in range(5)]
        try:
            for i, client in enumerate(clients):
                message = f"hello {i} ".encode() * 1000  # several reads' worth
                client.sendall(message)
                assert recv_exactly(client, len(message)) == message
        finally:
            for client in clients:
                client.close()


@ECHOES
def test_echo_half_closing_clients_lose_nothing(script: str, args: tuple[str, ...]) -> None:
    with running(script, *args) as port:
        # Like 50 x `nc -N`: connect, send, shut down the sending side at once -- the data
        # and the hang-up (READ_HUP) often arrive together -- and only then read. Up to
        # 200 kB each: more than the socket buffers hold for some, so the server also
        # queues output and waits for WRITE.
        messages = [bytes([65 + i % 26]) * (4_000 * i + 10) for i in range(50)]
        clients = []
        try:
            for message in messages:
                client = connect(port)
                clients.append(client)
                client.sendall(message)
                client.shutdown(socket.SHUT_WR)  # "that is all"; the echo must still come
            for client, message in zip(clients, messages, strict=True):
                assert recv_all(client) == message
        finally:
            for client in clients:
                client.close()


@ECHOES
def test_echo_drops_a_client_that_does_not_read(script: str, args: tuple[str, ...]) -> None:
    with running(script, *args) as port:
        hog, other = connect(port), connect(port)
        try:
            flood_until_dropped(hog)
            other.sendall(b"still there?")
            assert recv_exactly(other, 12) == b"still there?"
            late = connect(port)
            with late:
                late.sendall(b"hello")
                late.shutdown(socket.SHUT_WR)
                assert recv_all(late) == b"hello"
        finally:
            hog.close()
            other.close()


class Member:
    """A chat client; lines are read through a buffered file (never byte by byte)."""

    def __init__(self, port: int) -> None:
        self.sock = connect(port)
        self.file = self.sock.makefile("rb")

    def say(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        line = self.file.readline()
        assert line.endswith(b"\n"), f"connection closed early: {line[-40:]!r}"
        return line

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def chat_members(port: int, count: int) -> list[Member]:
    """``count`` members, all registered: each newcomer greets, and the others hear it (the
    first says nothing: nobody would hear it, and it could reach a later newcomer)."""
    members = [Member(port)]
    for i in range(1, count):
        member = Member(port)
        member.say(f"member {i} here\n".encode())
        for other in members:
            assert other.line().endswith(f": member {i} here\n".encode())
        members.append(member)
    return members


def test_chat_half_closing_client_loses_nothing() -> None:
    with running("chat_server.py") as port:
        alice, bob = chat_members(port, 2)
        try:
            # 30 lines of 20 kB, then a half-close; bob reads only afterwards, so the
            # server must queue his output (partial sends, WRITE interest).
            lines = [f"{i:02d}".encode() + b"." * 20_000 for i in range(30)]
            alice.say(b"".join(line + b"\n" for line in lines[:-1]) + lines[-1])
            alice.sock.shutdown(socket.SHUT_WR)  # the last line has no newline: still a line
            for line in lines:
                assert bob.line().split(b": ", 1)[1] == line + b"\n"
            assert alice.file.read() == b""  # alice is closed once she heard everything
            carol = Member(port)  # and the server is still fine
            try:
                carol.say(b"me\n")
                assert bob.line().endswith(b": me\n")
            finally:
                carol.close()
        finally:
            alice.close()
            bob.close()


def test_chat_last_lines_before_a_hang_up_arrive() -> None:
    with running("chat_server.py") as port:
        alice, bob = chat_members(port, 2)
        speakers: list[Member] = []
        try:
            for i in range(30):
                speakers.append(chat_members_join(port, [alice, bob, *speakers], f"s{i}"))
            # Each speaker says its last line and hangs up at once (SHUT_WR: a FIN; a
            # close() with unread input would be a reset, which may discard data in the
            # kernel): line and hang-up often reach the server in one event. Nothing may
            # be lost, and each speaker is closed once it has heard everything.
            for i, speaker in enumerate(speakers):
                speaker.say(b"last words of %d\n" % i)
                speaker.sock.shutdown(socket.SHUT_WR)
            heard = sorted(bob.line().split(b": ", 1)[1] for _ in speakers)
            assert heard == sorted(b"last words of %d\n" % i for i in range(30))
            for speaker in speakers:
                speaker.file.read()  # until EOF: the server closed it
        finally:
            alice.close()
            bob.close()
            for speaker in speakers:
                speaker.close()


def chat_members_join(port: int, members: list[Member], name: str) -> Member:
    """A newcomer, registered once everyone heard its greeting."""
    newcomer = Member(port)
    newcomer.say(f"{name} here\n".encode())
    for member in members:
        assert member.line().endswith(f": {name} here\n".encode())
    return newcomer


def test_chat_drops_a_member_that_does_not_read() -> None:
    with running("chat_server.py") as port:
        alice, bob, hog = chat_members(port, 3)
        try:
            # hog never reads again. alice talks in rounds that bob keeps up with: bob's
            # queue stays small, hog's grows past the cap plus its socket buffers.
            line = b"." * 30_000
            for _ in range(40):  # 40 x 10 x 30 kB = 12 MB for each listener
                alice.say((line + b"\n") * 10)
                for _ in range(10):
                    assert bob.line().endswith(b": " + line + b"\n")
            hog.sock.settimeout(10)
            try:  # what was sent before the drop, then EOF (or a reset)
                while hog.sock.recv(1 << 16):
                    pass
            except ConnectionResetError:
                pass
            alice.say(b"bye bob\n")
            assert bob.line().endswith(b": bye bob\n")
        finally:
            alice.close()
            bob.close()
            hog.close()


def test_chat_example() -> None:
    with running("chat_server.py") as port:
        alice, bob = connect(port), connect(port)
        try:
            # Both must be registered before the broadcast: each says hello and we wait
            # until the other has heard it.
            alice.sendall(b"alice here\n")
            assert recv_exactly(bob, 1).startswith(b"1")  # "127.0.0.1:port: alice here"
            line = b"1" + bob.recv(4096)
            assert line.endswith(b": alice here\n")
            bob.sendall(b"hi alice\r\n")
            reply = b""
            while not reply.endswith(b"\n"):
                reply += alice.recv(4096)
            assert reply.endswith(b": hi alice\n")
        finally:
            alice.close()
            bob.close()
