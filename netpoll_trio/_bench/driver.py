"""The load driver: a separate process (its own GIL) that owns the peer ends of the sockets.

Started by the runner with the peer fds inherited (``pass_fds``) and a control socket. It
reads one JSON command per line and answers one JSON result per line:

``{"cmd": "burst", "seconds": S, "inflight": K, "burst": 64}``
    For S seconds, repeatedly pick ``burst`` random connections and send each one 16-byte
    message, never more than K messages awaiting their 1-byte reply; collect replies with
    a level-triggered ``select.epoll``. Answers the message count, the elapsed time and the
    round-trip latency percentiles (send to reply, in microseconds).
``{"cmd": "pingpong", "count": M}``
    One message at a time from idle: send to a random connection, wait for its reply, M
    times. Answers latency percentiles.
``{"cmd": "quit"}``
    Exit.

Every phase is bounded in time: a server that stops answering makes the driver report
what it saw after a grace period instead of hanging.
"""

from __future__ import annotations

import collections
import json
import os
import random
import select
import socket
import sys
import time
from typing import Any

MESSAGE = b"m" * 16
GRACE = 5.0  # seconds to wait for outstanding replies after a phase


def percentiles(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {"p50_us": 0.0, "p99_us": 0.0}
    ordered = sorted(samples)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e6

    return {"p50_us": at(0.50), "p99_us": at(0.99)}


class Driver:
    def __init__(self, fds: list[int]) -> None:
        self.socks = [socket.socket(fileno=fd) for fd in fds]
        for sock in self.socks:
            sock.setblocking(False)
        self.by_fd = {sock.fileno(): i for i, sock in enumerate(self.socks)}
        self.epoll = select.epoll()
        for sock in self.socks:
            self.epoll.register(sock.fileno(), select.EPOLLIN)
        self.sent_at: list[collections.deque[float]] = [collections.deque() for _ in fds]
        self.inflight = 0

    def _collect(self, timeout: float, latencies: list[float]) -> int:
        got = 0
        now = time.perf_counter
        for fd, _ in self.epoll.poll(timeout, 4096):
            i = self.by_fd[fd]
            try:
                data = self.socks[i].recv(65536)
            except BlockingIOError:
                continue
            t = now()
            queue = self.sent_at[i]
            for _ in range(len(data)):
                if queue:
                    latencies.append(t - queue.popleft())
                    got += 1
        self.inflight -= got
        return got

    def burst(self, seconds: float, inflight: int, burst: int) -> dict[str, Any]:
        latencies: list[float] = []
        n = len(self.socks)
        done = 0
        start = time.perf_counter()
        deadline = start + seconds
        now = time.perf_counter
        choose = random.randrange
        while now() < deadline:
            room = inflight - self.inflight
            if room >= 1:
                for _ in range(min(burst, room)):
                    i = choose(n)
                    try:
                        self.socks[i].send(MESSAGE)
                    except BlockingIOError:
                        continue
                    self.sent_at[i].append(now())
                    self.inflight += 1
            done += self._collect(0 if self.inflight < inflight else 0.05, latencies)
        elapsed = now() - start
        grace_end = now() + GRACE
        while self.inflight and now() < grace_end:
            done += self._collect(0.05, latencies)
        lost = self.inflight
        self.inflight = 0
        for queue in self.sent_at:
            queue.clear()
        return {"messages": done, "seconds": elapsed, "unanswered": lost, **percentiles(latencies)}

    def pingpong(self, count: int) -> dict[str, Any]:
        latencies: list[float] = []
        n = len(self.socks)
        unanswered = 0
        for _ in range(count):
            i = random.randrange(n)
            self.socks[i].send(MESSAGE)
            self.sent_at[i].append(time.perf_counter())
            self.inflight += 1
            deadline = time.perf_counter() + GRACE
            while self.inflight and time.perf_counter() < deadline:
                self._collect(0.05, latencies)
            if self.inflight:
                unanswered += 1
                self.inflight = 0
                self.sent_at[i].clear()
        return {"messages": count - unanswered, "unanswered": unanswered, **percentiles(latencies)}


def main() -> int:
    control_fd = int(sys.argv[1])
    fds = [int(fd) for fd in sys.argv[2:]]
    control = socket.socket(fileno=control_fd)
    reader = control.makefile("r")
    driver = Driver(fds)
    control.sendall(b'{"ready": true}\n')
    for line in reader:
        command = json.loads(line)
        if command["cmd"] == "burst":
            result = driver.burst(command["seconds"], command["inflight"], command["burst"])
        elif command["cmd"] == "pingpong":
            result = driver.pingpong(command["count"])
        else:
            break
        control.sendall(json.dumps(result).encode() + b"\n")
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
