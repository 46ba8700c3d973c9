"""Helpers shared by the benchmark scripts: draining a socket and the raw-epoll baseline."""

from __future__ import annotations

import select
import socket
import statistics
import time

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
