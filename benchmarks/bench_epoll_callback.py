"""Per-event cost of the low-level Epoll wait loop: events/s through a callback.

N socketpairs are registered edge-triggered; each round writes one byte to every peer and
waits until every callback has run (each callback drains its socket). Reported: events/s
and microseconds per event, the median of the rounds, next to a bare ``select.epoll`` loop
doing the same work on the same sockets (the Python ceiling).

    python benchmarks/bench_epoll_callback.py [N] [ROUNDS]
"""

from __future__ import annotations

import socket
import statistics
import sys
import threading
import time

from _common import drain, raw_epoll_round_seconds, socketpairs

from netpoll_trio import Epoll, EpollEvent


def bench_epoll(pairs: list[tuple[socket.socket, socket.socket]], rounds: int) -> float:
    remaining = 0
    done = threading.Event()
    lock = threading.Lock()

    def make(sock: socket.socket):  # type: ignore[no-untyped-def]
        def on_event(mask: EpollEvent) -> None:
            nonlocal remaining
            drain(sock)
            with lock:
                remaining -= 1
                if remaining == 0:
                    done.set()

        return on_event

    times = []
    with Epoll() as ep:
        for a, _ in pairs:
            ep.add(a.fileno(), EpollEvent.EPOLLIN | EpollEvent.EPOLLET, make(a))
        for _ in range(rounds):
            remaining = len(pairs)
            done.clear()
            start = time.perf_counter()
            for _, b in pairs:
                b.send(b"x")
            assert done.wait(30)
            times.append(time.perf_counter() - start)
        for a, _ in pairs:
            ep.delete(a.fileno())
    return statistics.median(times)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    with socketpairs(n) as pairs:
        for name, bench in (
            ("raw select.epoll", raw_epoll_round_seconds),
            ("netpoll Epoll", bench_epoll),
        ):
            t = bench(pairs, rounds)
            print(
                f"{name:18s} {n / t:12,.0f} events/s  {t / n * 1e6:6.2f} us/event "
                f"(send + wake + callback + drain; N={n}, median of {rounds})"
            )


if __name__ == "__main__":
    main()
