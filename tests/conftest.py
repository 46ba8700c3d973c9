"""Shared fixtures: the backend matrix, hygiene checks, and real-socket helpers.

Async tests are marked explicitly: ``@pytest.mark.anyio`` runs a test under trio, asyncio
and asyncio+uvloop (the ``anyio_backend`` fixture below); ``@pytest.mark.trio`` runs it
under pytest-trio. pytest-trio's trio_mode and anyio's auto mode stay off.
"""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from netpoll_trio import Config, Syscalls

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is in the test extra on Linux
    uvloop = None
else:
    # libuv opens a process-wide pipe with its first loop and keeps it for the process's
    # life; open it now, so that the per-test fd check below sees only what a test leaks.
    _loop = uvloop.new_event_loop()
    _loop.run_until_complete(asyncio.sleep(0))
    _loop.close()

# (asyncio's debug mode is off: with it, the asyncio thread-mode stress test once spun
# the loop for minutes; see issue 14's notes.)
_BACKENDS: list[Any] = [
    pytest.param("trio", id="trio"),
    pytest.param("asyncio", id="asyncio"),
    pytest.param(
        ("asyncio", {"loop_factory": getattr(uvloop, "new_event_loop", None)}),
        id="uvloop",
        marks=pytest.mark.skipif(uvloop is None, reason="uvloop is not installed"),
    ),
]


@pytest.fixture(params=_BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    """Function-scoped, so each test gets a fresh event loop that is closed after it."""
    return request.param


@pytest.fixture
def backend_name(anyio_backend: Any) -> str:
    return anyio_backend if isinstance(anyio_backend, str) else anyio_backend[0]


def open_fds() -> set[int]:
    """The open fds, without the one the listing itself used (closed by the time we look)."""
    fds = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            os.fstat(int(name))
        except OSError:
            continue
        fds.add(int(name))
    return fds


def describe_fds(fds: set[int]) -> dict[int, str]:
    out = {}
    for fd in fds:
        try:
            out[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            out[fd] = "?"
    return out


def netpoll_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("netpoll-wait-")]


@pytest.fixture(autouse=True)
def hygiene(anyio_backend_hygiene: None) -> Iterator[None]:
    """Fail any test that leaves a netpoll wait thread or a new fd behind."""
    gc.collect()
    before = open_fds()
    yield
    gc.collect()
    leaked_threads = netpoll_threads()
    assert not leaked_threads, f"wait threads outlived the test: {leaked_threads}"
    leaked = open_fds() - before
    shown = dict(list(describe_fds(leaked).items())[:8])
    assert not leaked, f"{len(leaked)} fds outlived the test, e.g. {shown}"


@pytest.fixture
def anyio_backend_hygiene() -> None:
    """Ordering hook: requested first by ``hygiene`` so it is set up before anything else."""


@pytest.fixture
def sockpair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected AF_UNIX stream pair, closed after the test."""
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


@pytest.fixture
def make_pair() -> Iterator[Any]:
    """Factory of connected AF_UNIX stream pairs, all closed after the test."""
    made: list[socket.socket] = []

    def make() -> tuple[socket.socket, socket.socket]:
        a, b = socket.socketpair()
        made.extend((a, b))
        return a, b

    yield make
    for s in made:
        s.close()


def drain(sock: socket.socket) -> bytes:
    """Read everything available on a non-blocking socket (edge-triggered style)."""
    chunks = []
    while True:
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def fill(sock: socket.socket) -> int:
    """Write into a non-blocking socket until its buffer is full; return bytes written."""
    sock.setblocking(False)
    total = 0
    while True:
        try:
            total += sock.send(b"x" * 65536)
        except BlockingIOError:
            return total


class GatedWait:
    """A ``Syscalls.wait`` that, when ``gate`` is set, parks the wait thread right after
    ``epoll_wait`` returned: a batch is then collected but not yet delivered, and the test
    can act in that window (``collected`` tells it the window is open; ``release`` ends it).
    """

    def __init__(self) -> None:
        self.collected = threading.Event()
        self.release = threading.Event()
        self.gate = False

    def __call__(self, ep: Any, maxevents: int, timeout: float) -> list[tuple[int, int]]:
        records = Syscalls().wait(ep, maxevents, timeout)
        if self.gate:
            self.gate = False
            self.collected.set()
            assert self.release.wait(10)
        return records


# ----------------------------------------------------------------- the three poller modes
#
# Every Poller test runs with the wait thread (the default), without it
# (``Config(wait_thread=False)``) and in the portable mode (``Config(portable=True)``,
# forced here: Linux has epoll): it asks for the ``poller_config`` fixture and builds its
# pollers from it (``Poller(poller_config)``, or ``Poller(replace(poller_config, ...))``
# for more options). Tests about the wait thread itself are marked ``thread_only``; tests
# about epoll itself -- ``epoll_wait``, its errors, its exact masks and edges, which the
# portable mode has not got -- are marked ``epoll_only(why)``. Either is generated only
# for the modes it names, so a skipped combination never exists.

MODES = {
    "thread": Config(),
    "loop": Config(wait_thread=False),
    "portable": Config(portable=True),
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "poller_config" in metafunc.fixturenames:
        definition = metafunc.definition
        if definition.get_closest_marker("thread_only") is not None:
            modes = ["thread"]
        elif definition.get_closest_marker("epoll_only") is not None:
            modes = ["thread", "loop"]
        else:
            modes = list(MODES)
        metafunc.parametrize("poller_config", modes, indirect=True)


@pytest.fixture
def poller_config(request: pytest.FixtureRequest) -> Config:
    """A :class:`~netpoll_trio.Config` in this test's mode (ids ``thread``, ``loop`` and
    ``portable``)."""
    return MODES[request.param]


def exact_edges(config: Config) -> bool:
    """Whether a poller with ``config`` reports exact epoll records: edges reported once,
    READ and WRITE of one fd in one record, HUP/ERR bits. The portable mode sees only the
    host loop's readiness, so there an edge-triggered desc may be reported again while
    still ready, and each direction comes in a record of its own; tests that check those
    details exactly check them only where they hold (the docs' "Portable mode")."""
    return not config.uses_portable_mode
