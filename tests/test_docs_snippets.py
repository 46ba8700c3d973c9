"""The code a user copies from the README and the docs.

Every Python snippet must at least compile. Every snippet that says it is a complete
program (the README's server; tutorial blocks captioned "complete program") is extracted
and run, and must survive a plain client, 20 half-closing clients (send, ``shutdown
(SHUT_WR)``, then read: no byte lost) and a client that never reads (dropped, while the
others are still served). The claims of the docs' "Clean shutdown" table are checked too.
"""

from __future__ import annotations

import ast
import re
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trio

from netpoll_trio import ClosedError, Event, Poller, handle_read

from .test_examples import connect, flood_until_dropped, recv_all, recv_exactly

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"


class Snippet:
    def __init__(self, where: str, code: str, caption: str = "") -> None:
        self.where = where
        self.code = code
        self.caption = caption

    def __repr__(self) -> str:
        return self.where


def readme_snippets() -> list[Snippet]:
    text = README.read_text()
    return [
        Snippet(f"README.md python block {i + 1}", code)
        for i, code in enumerate(re.findall(r"^```python\n(.*?)^```", text, re.S | re.M))
    ]


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _indented_block(lines: list[str], start: int, base: int) -> str:
    """The block from ``start`` on indented deeper than ``base``, dedented."""
    block = []
    for line in lines[start:]:
        if line.strip() and _indent(line) <= base:
            break
        block.append(line)
    return textwrap.dedent("\n".join(block)).strip("\n") + "\n"


def rst_snippets(path: Path) -> list[Snippet]:
    """``.. code-block:: python`` blocks (with their caption) and ``::`` literal blocks."""
    lines = path.read_text().splitlines()
    out = []
    i = 0
    while i < len(lines):
        line = lines[i]
        where = f"{path.name}:{i + 1}"
        if line.strip() == ".. code-block:: python":
            caption = ""
            i += 1
            while i < len(lines) and lines[i].strip().startswith(":"):
                if lines[i].strip().startswith(":caption:"):
                    caption = lines[i].split(":caption:", 1)[1].strip()
                i += 1
            out.append(Snippet(where, _indented_block(lines, i, _indent(line)), caption))
        elif line.rstrip().endswith("::") and not line.lstrip().startswith(".."):
            out.append(Snippet(where, _indented_block(lines, i + 1, _indent(line))))
        i += 1
    return out


TUTORIAL = rst_snippets(DOCS / "tutorial.rst")
HOWTO = rst_snippets(DOCS / "howto.rst")
ALL = readme_snippets() + TUTORIAL + HOWTO + rst_snippets(DOCS / "index.rst")
COMPLETE = {s.caption.split()[0]: s for s in TUTORIAL if "complete program" in s.caption}


def test_the_snippets_were_found() -> None:
    assert len(readme_snippets()) == 1
    assert set(COMPLETE) == {"echo_pool.py", "echo_watch.py"}
    assert len(HOWTO) >= 5


@pytest.mark.parametrize("snippet", ALL, ids=repr)
def test_snippet_compiles(snippet: Snippet) -> None:
    compile(snippet.code, snippet.where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


def test_no_snippet_shadows_a_library_name() -> None:
    import netpoll_trio

    for snippet in ALL:
        tree = ast.parse(snippet.code)
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                assert node.name not in netpoll_trio.__all__, (snippet.where, node.name)


@contextmanager
def serving(directory: Path, script: str) -> Iterator[int]:
    proc = subprocess.Popen(
        [sys.executable, script],
        cwd=directory,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        match = re.match(r"listening on \('127\.0\.0\.1', (\d+)\)", first)
        assert match, proc.stderr.read() if proc.stderr and not first else first
        yield int(match[1])
        assert proc.poll() is None, "the server died"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def write_program(directory: Path, name: str, snippet: Snippet) -> None:
    code = snippet.code.replace('("127.0.0.1", 9000)', '("127.0.0.1", 0)')
    assert code != snippet.code, f"{snippet.where}: the port to replace was not found"
    (directory / name).write_text(code)


def exercise(port: int) -> None:
    """A plain exchange, half-closing clients, and one that never reads."""
    plain = connect(port)
    with plain:
        plain.sendall(b"hello " * 10_000)
        assert recv_exactly(plain, 60_000) == b"hello " * 10_000
        clients, messages = [], [bytes([97 + i % 26]) * (9_000 * i + 5) for i in range(20)]
        try:
            for message in messages:
                client = connect(port)
                clients.append(client)
                client.sendall(message)
                client.shutdown(socket.SHUT_WR)
            for client, message in zip(clients, messages, strict=True):
                assert recv_all(client) == message
        finally:
            for client in clients:
                client.close()
        hog = connect(port)
        with hog:
            flood_until_dropped(hog)
        plain.sendall(b"still here")
        assert recv_exactly(plain, 10) == b"still here"


def test_readme_server_runs(tmp_path: Path) -> None:
    (snippet,) = readme_snippets()
    write_program(tmp_path, "readme_server.py", snippet)
    with serving(tmp_path, "readme_server.py") as port:
        exercise(port)


def test_tutorial_worker_pool_runs(tmp_path: Path) -> None:
    write_program(tmp_path, "echo_pool.py", COMPLETE["echo_pool.py"])
    with serving(tmp_path, "echo_pool.py") as port:
        exercise(port)


def test_tutorial_watch_streams_run(tmp_path: Path) -> None:
    write_program(tmp_path, "echo_pool.py", COMPLETE["echo_pool.py"])
    write_program(tmp_path, "echo_watch.py", COMPLETE["echo_watch.py"])
    with serving(tmp_path, "echo_watch.py") as port:
        exercise(port)


def test_the_clean_shutdown_table() -> None:
    """docs/howto.rst, "Clean shutdown": what each call does once the poller closed."""

    async def main() -> None:
        a, b = socket.socketpair()
        c, d = socket.socketpair()
        with a, b, c, d:
            shared, watched = handle_read(a), handle_read(c)
            async with Poller() as poller:
                poller.start(shared)
                async with poller.watch(watched) as events:
                    await poller.aclose()
                    await poller.aclose()  # a no-op
                    assert poller.closed
                    for call in (poller.stop, poller.resume, poller.start):
                        with pytest.raises(ClosedError):
                            call(shared)
                    with pytest.raises(ClosedError):
                        poller.modify(shared, Event.READ)
                    with pytest.raises(ClosedError):
                        async with poller.watch(handle_read(b)):
                            pass
                    assert await poller.receive_batch() == [(shared, Event.POLLER_CLOSED)]
                    with pytest.raises(trio.EndOfChannel):
                        await poller.receive_batch()
                    with pytest.raises(trio.EndOfChannel):
                        await poller.receive()
                    with pytest.raises(trio.EndOfChannel):
                        poller.receive_nowait()
                    assert await events.receive() == Event.POLLER_CLOSED
                    with pytest.raises(trio.EndOfChannel):
                        await events.receive()
                # leaving the watch block after the close did nothing
                assert poller.statistics().registered >= 0

    trio.run(main)
