"""Smoke tests of examples/: start each one, connect clients, exchange, stop it with
Ctrl-C (SIGINT), and check it exits cleanly."""

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


@pytest.mark.parametrize(
    ("script", "args"),
    [
        ("echo_server.py", ()),
        ("anyio_asyncio.py", ()),
        ("anyio_asyncio.py", ("--uvloop",)),
        ("anyio_asyncio.py", ("--backend", "trio")),
    ],
)
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
