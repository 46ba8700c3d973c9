"""Helpers shared by the benchmark scripts: draining a socket and the raw-epoll baseline."""

from __future__ import annotations

import select
import socket
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager

Pairs = list[tuple[socket.socket, socket.socket]]


def drain(sock: socket.socket) -> None:
    """Read until EAGAIN (edge-triggered style)."""
    try:
        while sock.recv(65536):
            pass
    except BlockingIOError:
        pass


def raw_epoll_round_seconds(pairs: Pairs, rounds: int) -> float:
    """Median seconds for one round (one byte to every peer, every event handled) done by
    a bare edge-triggered select.epoll loop: the Python ceiling."""
    ep = select.epoll()
    by_fd = {a.fileno(): a for a, _ in pairs}
    for fd in by_fd:
        ep.register(fd, select.EPOLLIN | select.EPOLLET)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _, b in pairs:
            b.send(b"x")
        left = len(pairs)
        while left:
            for fd, _ in ep.poll(-1, 32768):
                drain(by_fd[fd])
                left -= 1
        times.append(time.perf_counter() - start)
    ep.close()
    return statistics.median(times)


@contextmanager
def socketpairs(n: int) -> Iterator[Pairs]:
    """``n`` connected AF_UNIX pairs, the first end non-blocking; all closed afterwards."""
    pairs = [socket.socketpair() for _ in range(n)]
    try:
        for a, _ in pairs:
            a.setblocking(False)
        yield pairs
    finally:
        for a, b in pairs:
            a.close()
            b.close()
