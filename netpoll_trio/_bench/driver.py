"""The load driver: a separate process (its own GIL, its own core) that owns the peer ends.

Started by the runner with the peer fds inherited (``pass_fds``), a control socket and the
CPU to pin itself to (``-1``: do not pin). It reads one JSON command per line and answers
one JSON result per line:

``{"cmd": "burst", "seconds": S, "inflight": K}``
    For S seconds keep K messages of 16 bytes awaiting their 1-byte reply: fill the window,
    wait for replies, refill. Answers the message count, the elapsed time, the round-trip
    latency percentiles of sampled messages (send to reply, in microseconds) and the
    driver's own CPU time and share of the window (``driver_cpu_share`` near 1.0 means the
    driver, not the server, was the bottleneck).
``{"cmd": "pingpong", "count": M}``
    One message at a time from idle: send to a random connection, wait for its reply, M
    times. Answers latency percentiles.
``{"cmd": "quit"}``
    Exit.

The driver must do clearly less per message than the cheapest server (a bare
``select.epoll`` loop: an ``epoll_wait`` share, one ``recv`` and one ``send``), or it is
what saturates first and every ratio is compressed. So:

* The schedule -- which connection gets the next message -- is computed once (a random
  choice with repetition, probes excluded) and walked cyclically: per message one
  ``os.write`` and one counter, no random number, no clock.
* A connection gets a new message only once its previous one was answered (the
  schedule's entry is skipped otherwise), so the server reads exactly one message per
  ``recv()`` and every reply is unambiguous. (With fewer connections than K, at most one
  message per connection is in flight.)
* Replies are counted from edge-triggered ``select.epoll`` events, not read one by one:
  each reply the server sends raises a new edge, and with one message outstanding per
  connection an edge *is* that reply. Freeing a received message costs the kernel about
  as much as sending one, so the replies are left unread during the measured window and
  read between phases, or in one ``recv_into`` (a reused buffer) once a connection
  holds ``UNREAD_MAX`` of them -- well below the ~270 one-byte messages a socketpair
  buffers, so the server never sees EAGAIN. Per message the driver pays one ``write``
  plus a share of ``epoll_wait``; the cheapest server pays a ``recv``, a ``send`` and the
  same share.
* The driver waits for replies in batches: when a wake-up brought fewer than ``BATCH``
  replies it naps ``NAP`` seconds (far less than the time the server needs for the
  window, so the server never runs dry) before it looks again. Without that, driver and
  server fall into lock-step -- one ``epoll_wait`` per message on both sides -- and the
  driver's CPU per message rises to the server's.
* Latency is sampled, not tracked per message: a small pool of *probe* connections (never
  used by the schedule) gets one message per refill while it is free, so its reply is
  unambiguous. That gives thousands of samples per second at no per-message cost.

Every phase is bounded in time: a server that stops answering makes the driver report
what it saw after a grace period instead of hanging.
"""

from __future__ import annotations

import gc
import json
import os
import random
import resource
import select
import socket
import sys
import time
from typing import Any

MESSAGE = b"m" * 16
GRACE = 5.0  # seconds to wait for outstanding replies after a phase
SCHEDULE = 1 << 16  # precomputed sends, walked cyclically
MAX_PROBES = 32
UNREAD_MAX = 64  # replies left unread per connection before one recv takes them all
BATCH = 16  # replies per wake-up below which the driver naps before looking again
NAP = 50e-6  # seconds (the kernel's timer slack makes it about 100 µs)
ONLY_IN = select.EPOLLIN


def percentiles(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {"p50_us": 0.0, "p99_us": 0.0, "samples": 0}
    ordered = sorted(samples)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e6

    return {"p50_us": at(0.50), "p99_us": at(0.99), "samples": len(ordered)}


def _cpu() -> float:
    return time.process_time()  # ns resolution (os.times() has clock ticks); one thread


def _involuntary_switches() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw


class Driver:
    def __init__(self, fds: list[int], seed: int = 1) -> None:
        self.socks = [socket.socket(fileno=fd) for fd in fds]
        for sock in self.socks:
            sock.setblocking(False)
        self.fds = fds
        n = len(fds)
        # Probes are taken out of the schedule so that a probe's reply is its own.
        self.probes = fds[: min(MAX_PROBES, n // 8)]
        load = fds[len(self.probes) :]
        self.rng = random.Random(seed)
        self.schedule = [self.rng.choice(load) for _ in range(SCHEDULE)]
        self.position = 0
        size = max(fds) + 1
        self.recv_into: list[Any] = [None] * size
        for sock in self.socks:
            self.recv_into[sock.fileno()] = sock.recv_into
        self.pending = [0] * size  # messages sent and not yet known answered, per fd
        self.unread = [0] * size  # answers counted from edges, still in the socket
        self.buffer = bytearray(65536)
        self.epoll = select.epoll(sizehint=n)
        for fd in fds:
            self.epoll.register(fd, select.EPOLLIN | select.EPOLLET)
        self.closed = 0  # connections the server hung up on

    def _answered(self, fd: int, mask: int) -> int:
        """The slow path: read ``fd`` and return how many of its messages were answered."""
        try:
            got = self.recv_into[fd](self.buffer)
        except BlockingIOError:  # nothing there: a spurious edge
            return 0
        if got == 0:  # the server closed it: its messages stay unanswered
            self.epoll.unregister(fd)
            self.closed += 1
            return 0
        answered = got - self.unread[fd]
        while got == len(self.buffer):  # more than a buffer of replies: keep reading
            try:
                got = self.recv_into[fd](self.buffer)
            except BlockingIOError:
                break
            answered += got
        self.unread[fd] = 0
        answered = min(answered, self.pending[fd])
        self.pending[fd] -= answered
        return int(answered)

    def burst(self, seconds: float, inflight: int) -> dict[str, Any]:
        poll = self.epoll.poll
        write = os.write
        recv_into = self.recv_into
        pending = self.pending
        unread = self.unread
        buffer = self.buffer
        slow = self._answered
        schedule = self.schedule
        length = len(schedule)
        position = self.position
        message = MESSAGE
        clock = time.perf_counter
        free = list(self.probes)
        probe_sent: dict[int, float] = {}
        latencies: list[float] = []
        outstanding = 0
        answered = 0
        send_errors = 0
        polls = 0
        batch = max(1, min(BATCH, inflight // 8))
        nap = time.sleep

        cpu0 = _cpu()
        switches0 = _involuntary_switches()
        start = clock()
        deadline = start + seconds
        while True:
            room = inflight - outstanding
            if room > 0:
                if free:
                    probe = free.pop()
                    probe_sent[probe] = clock()
                    write(probe, message)
                    pending[probe] = 1
                    room -= 1
                    outstanding += 1
                end = position + room
                if end <= length:
                    chunk = schedule[position:end]
                    position = end
                else:
                    chunk = schedule[position:] + schedule[: end - length]
                    position = end - length
                try:
                    for fd in chunk:
                        if pending[fd]:  # still awaiting its answer: skip this entry
                            room -= 1
                        else:
                            write(fd, message)
                            pending[fd] = 1
                except OSError:  # a full socket buffer: the server stopped reading
                    send_errors += 1
                    break
                outstanding += room
            polls += 1
            events = poll(0.05, 4096)
            for fd, mask in events:
                if pending[fd] == 1 and mask == ONLY_IN:
                    # Exactly one message outstanding: this edge is its answer.
                    pending[fd] = 0
                    got = 1
                    left = unread[fd] + 1
                    if left >= UNREAD_MAX:
                        try:  # noqa: SIM105 (suppress() costs more; this is per message)
                            recv_into[fd](buffer)
                        except BlockingIOError:
                            pass
                        left = 0
                    unread[fd] = left
                else:
                    got = slow(fd, mask)
                if got and fd in probe_sent:
                    latencies.append(clock() - probe_sent.pop(fd))
                    free.append(fd)
                answered += got
                outstanding -= got
            if clock() >= deadline:
                break
            if len(events) < batch:
                nap(NAP)
        elapsed = clock() - start
        cpu = _cpu() - cpu0
        switches = _involuntary_switches() - switches0
        self.position = position
        settled = self._settle(outstanding)
        return {
            "messages": answered,
            "seconds": elapsed,
            "settled": settled,  # answers after the window (served, not counted above)
            "unanswered": sum(self.pending) + send_errors,
            "driver_cpu_s": cpu,
            "driver_cpu_share": cpu / elapsed if elapsed else 0.0,
            "driver_involuntary_switches": switches,
            "driver_polls": polls,
            **percentiles(latencies),
        }

    def _settle(self, outstanding: int) -> int:
        """After a phase: wait (bounded) for the answers still due, so that the next phase
        starts from zero in flight (what never comes stays in ``pending`` as unanswered),
        then read every reply left unread. Returns how many answers came meanwhile."""
        grace_end = time.perf_counter() + GRACE
        settled = 0
        while outstanding > 0 and time.perf_counter() < grace_end:
            for fd, mask in self.epoll.poll(0.05, 4096):
                got = self._answered(fd, mask)
                outstanding -= got
                settled += got
        for fd in self.fds:
            if self.unread[fd]:
                self.unread[fd] = 0
                try:
                    while self.recv_into[fd](self.buffer) == len(self.buffer):
                        pass
                except BlockingIOError:
                    pass
        return settled

    def reset(self) -> None:
        """Forget what a previous phase left unanswered (it was reported then)."""
        for fd in self.fds:
            self.pending[fd] = 0

    def pingpong(self, count: int) -> dict[str, Any]:
        latencies: list[float] = []
        poll = self.epoll.poll
        clock = time.perf_counter
        choose = self.rng.choice
        unanswered = 0
        for _ in range(count):
            fd = choose(self.fds)
            sent = clock()
            os.write(fd, MESSAGE)
            self.pending[fd] += 1
            deadline = sent + GRACE
            waiting = True
            while waiting and clock() < deadline:
                for ready, mask in poll(0.05, 16):
                    if self._answered(ready, mask) and ready == fd:
                        latencies.append(clock() - sent)
                        waiting = False
            if waiting:
                unanswered += 1
        return {"messages": count - unanswered, "unanswered": unanswered, **percentiles(latencies)}


def pin(cpu: int) -> None:
    """Pin this process to ``cpu`` (``-1``: leave it where it is)."""
    if cpu >= 0 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})


def main() -> int:
    gc.disable()  # the driver keeps no cycles; a collection would be a pause in the load
    control_fd = int(sys.argv[1])
    pin(int(sys.argv[2]))
    fds = [int(fd) for fd in sys.argv[3:]]
    control = socket.socket(fileno=control_fd)
    reader = control.makefile("r")
    driver = Driver(fds)
    control.sendall(b'{"ready": true}\n')
    for line in reader:
        command = json.loads(line)
        driver.reset()
        if command["cmd"] == "burst":
            result = driver.burst(command["seconds"], command["inflight"])
        elif command["cmd"] == "pingpong":
            result = driver.pingpong(command["count"])
        else:
            break
        control.sendall(json.dumps(result).encode() + b"\n")
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
