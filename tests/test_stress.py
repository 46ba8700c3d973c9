"""Stress: many connections, many messages, every delivery style and mode, random churn.

A driver thread writes 8-byte messages ``(connection id, sequence number)`` to random
connections and, now and then, finishes one (closes its end). Consumers -- callbacks,
watch() streams and shared-stream workers; edge-triggered, one-shot and level-triggered;
fast and slow -- check every message: right connection, next number, none twice. When a
connection ends, its consumer checks it got everything that was sent, closes it (with or
without stop(), so stale entries are exercised) and opens a replacement, which usually
gets the same fd number. Meanwhile a chaos task stops and restarts registrations (changing
style and mode), resumes at random and cancels watch consumers mid-stream.

Sizes: ``NETPOLL_STRESS_CONNECTIONS`` and ``NETPOLL_STRESS_MESSAGES`` (defaults keep CI
under two minutes; ``benchmarks/soak.py`` runs it at 9000 connections for minutes).
"""

from __future__ import annotations

import contextlib
import os
import queue
import random
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest

import netpoll_trio as np
from netpoll_trio import Config, Event, Poller

pytestmark = [pytest.mark.stress, pytest.mark.anyio]

CONNECTIONS = int(os.environ.get("NETPOLL_STRESS_CONNECTIONS", "1000"))
MESSAGES = int(os.environ.get("NETPOLL_STRESS_MESSAGES", "100000"))
MSG = struct.Struct("<II")
MODES = [Event.READ | Event.EDGE_TRIGGERED, Event.READ | Event.ONE_SHOT, Event.READ]
STYLES = ["callback", "shared", "watch"]


@dataclass(eq=False)
class Conn:
    id: int
    server: socket.socket
    style: str
    mode: Event
    slow: int  # checkpoints to wait before reading (0: fast)
    expected: int = 0
    buf: bytearray = field(default_factory=bytearray)
    desc: np.Desc | None = None
    scope: anyio.CancelScope | None = None
    left: anyio.Event | None = None  # set when its watch consumer has left the block
    done: bool = False


class Driver(threading.Thread):
    """Writes the messages; finishes connections at random and at the end."""

    def __init__(self, total: int, seed: int, seconds: float | None = None) -> None:
        super().__init__(name="stress-driver", daemon=True)
        self.total = total
        self.seconds = seconds
        self.rng = random.Random(seed)
        self.peers: dict[int, socket.socket] = {}
        self.sent: dict[int, int] = {}
        self.new: queue.SimpleQueue[tuple[int, socket.socket]] = queue.SimpleQueue()
        self.written = 0
        self.finished = 0
        self.error: BaseException | None = None
        self.stop_now = threading.Event()

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # pragma: no cover - reported by the test
            self.error = exc

    def _adopt(self) -> None:
        while True:
            try:
                conn_id, peer = self.new.get_nowait()
            except queue.Empty:
                return
            peer.setblocking(False)
            self.peers[conn_id] = peer
            self.sent[conn_id] = 0

    def _finish(self, conn_id: int) -> None:
        self.peers.pop(conn_id).close()
        self.finished += 1

    def _run(self) -> None:
        deadline = None if self.seconds is None else time.monotonic() + self.seconds
        while self.written < self.total and not self.stop_now.is_set():
            if deadline is not None and time.monotonic() > deadline:
                self.total = self.written  # time is up: finish everything now
                break
            self._adopt()
            if not self.peers:
                self.stop_now.wait(0.001)
                continue
            ids = list(self.peers)
            for _ in range(min(64, self.total - self.written)):
                conn_id = self.rng.choice(ids)
                peer = self.peers.get(conn_id)
                if peer is None:
                    continue
                if self.rng.random() < 0.002:
                    self._finish(conn_id)
                    continue
                try:
                    peer.send(MSG.pack(conn_id, self.sent[conn_id]))
                except BlockingIOError:
                    continue
                self.sent[conn_id] += 1
                self.written += 1
        self._adopt()
        for conn_id in list(self.peers):
            self._finish(conn_id)


async def run_stress(
    total: int,
    connections: int,
    seed: int,
    seconds: float | None = None,
    config: Config | None = None,
    stale: float = 0.3,
) -> dict[str, int]:
    """Run the scenario; stop after ``total`` messages (or ``seconds``, if given).

    ``stale``: the share of finished connections closed without ``stop()``."""
    rng = random.Random(seed)
    driver = Driver(total, seed, seconds)
    conns: dict[int, Conn] = {}
    by_desc: dict[np.Desc, Conn] = {}
    counters = {"received": 0, "reopened": 0, "churn": 0, "cancelled": 0, "stale": 0, "resumes": 0}
    next_id = 0
    all_done = anyio.Event()

    async with Poller(config) as poller, anyio.create_task_group() as tg:

        def open_conn() -> None:
            nonlocal next_id
            next_id += 1
            server, peer = socket.socketpair()
            conn = Conn(
                next_id, server, rng.choice(STYLES), rng.choice(MODES), rng.choice([0, 0, 1, 3])
            )
            conns[conn.id] = conn
            register(conn)
            driver.new.put((conn.id, peer))

        def read(conn: Conn) -> None:
            """Drain the socket and check every message; handle EOF."""
            if conn.done:
                return
            eof = False
            while True:
                try:
                    data = conn.server.recv(65536)
                except BlockingIOError:
                    break
                if not data:
                    eof = True
                    break
                conn.buf += data
            n = len(conn.buf) // MSG.size
            for i in range(n):
                conn_id, seq = MSG.unpack_from(conn.buf, i * MSG.size)
                assert conn_id == conn.id, f"message of {conn_id} reached {conn.id}"
                assert seq == conn.expected, f"conn {conn.id}: got {seq}, want {conn.expected}"
                conn.expected += 1
            del conn.buf[: n * MSG.size]
            counters["received"] += n
            if eof:
                finish(conn)

        def finish(conn: Conn) -> None:
            assert not conn.buf
            sent = driver.sent.pop(conn.id)  # the driver is done with it: it closed the peer
            assert conn.expected == sent, (conn.id, conn.expected, sent)
            conn.done = True
            del conns[conn.id]  # keep memory flat over a long soak
            if conn.desc is not None:
                by_desc.pop(conn.desc, None)
                if rng.random() < stale:
                    counters["stale"] += 1  # close without stop(): the entry goes stale
                elif conn.style != "watch":
                    poller.stop(conn.desc)
            if conn.scope is not None:
                conn.scope.cancel()
            conn.server.close()
            if driver.written < driver.total:
                counters["reopened"] += 1
                open_conn()
            elif not conns and not driver.is_alive():
                all_done.set()

        def after_read(conn: Conn) -> None:
            oneshot = conn.mode & Event.ONE_SHOT
            if oneshot and not conn.done and conn.desc is not None and conn.style != "watch":
                poller.resume(conn.desc)

        def register(conn: Conn) -> None:
            desc = np.handle(conn.server, conn.mode)
            conn.desc = desc
            by_desc[desc] = conn
            if conn.style == "callback":

                def on_event(ev: Event, conn: Conn = conn, desc: np.Desc = desc) -> None:
                    if ev == Event.POLLER_CLOSED or conn.desc is not desc:
                        return
                    read(conn)
                    after_read(conn)

                poller.start(desc, on_event)
            elif conn.style == "shared":
                poller.start(desc)
            else:
                tg.start_soon(watch_consumer, conn, desc)

        async def slow_down(conn: Conn) -> None:
            for _ in range(conn.slow):
                await anyio.sleep(0)

        async def watch_consumer(conn: Conn, desc: np.Desc) -> None:
            left = conn.left = anyio.Event()
            try:
                with anyio.CancelScope() as scope:
                    conn.scope = scope
                    async with poller.watch(desc) as events:
                        async for ev in events:
                            if ev == Event.POLLER_CLOSED:
                                return
                            await slow_down(conn)
                            read(conn)
                            if conn.done:
                                return
            finally:
                left.set()

        async def worker() -> None:
            async for desc, ev in poller:
                conn = by_desc.get(desc)
                if conn is None or ev == Event.POLLER_CLOSED or conn.desc is not desc:
                    continue
                await slow_down(conn)
                if conn.desc is desc:
                    read(conn)
                    after_read(conn)

        async def chaos() -> None:
            while not all_done.is_set():
                await anyio.sleep(0)
                for _ in range(64):  # many operations per scheduler round
                    await chaos_once()

        async def chaos_once() -> None:
            conn = conns.get(rng.randint(1, next_id))  # O(1), skips finished ones
            if conn is None:
                return
            roll = rng.random()
            if conn.style == "watch" and conn.scope is not None:
                if roll < 0.05:  # cancel the consumer mid-stream, start a new one
                    counters["cancelled"] += 1
                    conn.scope.cancel()
                    conn.scope = None
                    by_desc.pop(conn.desc, None)  # type: ignore[arg-type]
                    assert conn.left is not None
                    await conn.left.wait()  # leaving the block stops the registration
                    if not conn.done:
                        conn.style = rng.choice(STYLES)
                        conn.mode = rng.choice(MODES)
                        register(conn)
            elif conn.style != "watch" and conn.desc is not None:
                if roll < 0.05:  # stop and start again, maybe in another style/mode
                    counters["churn"] += 1
                    poller.stop(conn.desc)
                    by_desc.pop(conn.desc, None)
                    conn.style = rng.choice(STYLES)
                    conn.mode = rng.choice(MODES)
                    register(conn)
                elif roll < 0.10:
                    counters["resumes"] += 1
                    poller.resume(conn.desc)

        for _ in range(8):
            tg.start_soon(worker)
        for _ in range(connections):
            open_conn()
        driver.start()
        tg.start_soon(chaos)
        with anyio.fail_after(300 + (seconds or 0)):
            while not all_done.is_set():
                await anyio.to_thread.run_sync(driver.join, 0.05)
                if not driver.is_alive() and not conns:
                    all_done.set()
                else:
                    await anyio.sleep(0.01)
        assert driver.error is None
        stats = poller.statistics()
        await poller.aclose()
        tg.cancel_scope.cancel()

    for conn in conns.values():
        if not conn.done:
            conn.server.close()
    counters["sent"] = driver.written
    counters["connections"] = next_id
    counters["events"] = stats.events_delivered
    counters["batches"] = stats.batches
    return counters


async def test_stress_every_message_read_once_in_order(
    anyio_backend: Any, poller_config: Config
) -> None:
    # Under uvloop, the portable mode watches each fd with libuv, which aborts the process
    # when an fd it was told to watch is closed before its next poll (libuv/libuv#5130:
    # callers must stop watching first); the docs say so, and it closes nothing stale.
    uvloop_portable = isinstance(anyio_backend, tuple) and poller_config.uses_portable_mode
    stale = 0.0 if uvloop_portable else 0.3
    totals = await run_stress(MESSAGES, CONNECTIONS, seed=1, config=poller_config, stale=stale)
    print(f"\nstress totals: {totals}")
    assert totals["received"] == totals["sent"] == MESSAGES
    assert totals["reopened"] > 0
    assert totals["churn"] + totals["cancelled"] > 0


async def test_cancellation_storm(
    anyio_backend: Any, make_pair: Any, poller_config: Config
) -> None:
    """Thousands of watch() blocks cancelled at random points while events flow."""
    pairs = [make_pair() for _ in range(200)]
    rng = random.Random(7)
    entered = 0
    async with Poller(poller_config) as poller:
        for round_ in range(10):
            async with anyio.create_task_group() as tg:
                for a, _b in pairs:

                    async def watcher(a: socket.socket = a) -> None:
                        nonlocal entered
                        with anyio.CancelScope() as scope:
                            async with poller.watch(np.handle_read(a)) as events:
                                entered += 1
                                async for _ in events:
                                    with contextlib.suppress(BlockingIOError):
                                        a.recv(65536)
                                    if rng.random() < 0.3:
                                        scope.cancel()
                                        await anyio.sleep(0)

                    tg.start_soon(watcher)
                await anyio.wait_all_tasks_blocked()
                for _, b in rng.sample(pairs, 100):
                    b.send(b"x")
                for _ in range(rng.randint(0, 20)):
                    await anyio.sleep(0)
                tg.cancel_scope.cancel()
            assert poller.statistics().registered == 0, round_
    assert entered == 200 * 10
