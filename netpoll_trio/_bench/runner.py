"""Runs the arms side by side: same sockets, same driver, interleaved rounds, medians.

For each connection count N: N AF_UNIX socketpairs are made; the peer ends go to a driver
process (``python -m netpoll_trio._bench.driver``) and are closed here. The server (this
process, every thread of it) and the driver are pinned to two different CPUs, so that
neither steals the other's core. Then ``runs`` rounds, each running every arm once
(rotating the order so that no arm always runs first after a cool machine), and finally a
tracemalloc pass per arm with idle connections. All numbers of one N come from the same
process, sockets and driver, so ratios are honest on a noisy machine; the ratios against
the baselines are also taken inside each round and their medians reported. Traffic is
socketpairs only.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import trio

from .. import Event, Poller, handle_read
from .arms import ARMS, Arm
from .session import Phase, Session

__all__ = ["Settings", "run"]


@dataclass(frozen=True)
class Settings:
    """What to run (defaults: the ~1 minute side-by-side run of ``python -m netpoll_trio``)."""

    connections: Sequence[int] = (1000, 9000)
    arms: Sequence[str] = tuple(ARMS)
    runs: int = 3
    seconds: float = 0.3
    inflight: int = 256
    high_inflight: int = 512
    pingpongs: int = 200
    memory: bool = True
    pin: bool = True  # server and driver on two different CPUs (when there are two)


Progress = Callable[[str], None]


def _phases(settings: Settings) -> list[Phase]:
    def burst(inflight: int) -> dict[str, Any]:
        return {"cmd": "burst", "seconds": settings.seconds, "inflight": inflight}

    return [
        Phase("burst", burst(settings.inflight)),
        Phase("high", burst(settings.high_inflight)),
        Phase("idle", {"cmd": "pingpong", "count": settings.pingpongs}),
    ]


def choose_cpus(pin: bool) -> tuple[int, int] | None:
    """(server CPU, driver CPU): the first two CPUs this process may use, or None when
    pinning is off or impossible (one CPU, or no ``sched_setaffinity``)."""
    if not pin or not hasattr(os, "sched_getaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    return (allowed[0], allowed[1]) if len(allowed) >= 2 else None


@contextlib.contextmanager
def pinned(cpu: int | None) -> Any:
    """Pin this process (threads started later inherit it) to ``cpu``; restore on exit."""
    if cpu is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


class _Driver:
    def __init__(self, peer_fds: list[int], cpu: int | None) -> None:
        self.control, child = socket.socketpair()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "netpoll_trio._bench.driver",
                str(child.fileno()),
                str(-1 if cpu is None else cpu),
                *map(str, peer_fds),
            ],
            pass_fds=[child.fileno(), *peer_fds],
        )
        child.close()
        ready = self.control.makefile("r").readline()
        if not ready:
            raise RuntimeError("the load driver did not start")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.control.sendall(b'{"cmd": "quit"}\n')
        self.control.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _run_arm(
    arm: Arm,
    conns: list[socket.socket],
    control: socket.socket,
    phases: list[Phase],
    memory: bool = False,
) -> dict[str, Any]:
    session = Session(control, phases, memory=memory)
    if memory:
        tracemalloc.start()
    try:
        arm.run(conns, session)
    finally:
        if memory:
            tracemalloc.stop()
    stats = session.statistics
    if stats is not None:
        session.results["batches"] = stats.batches
        session.results["wakeups"] = stats.wakeups
        session.results["events"] = stats.events_delivered
    return session.results


def run_one_size(n: int, settings: Settings, progress: Progress) -> dict[str, Any]:
    """Run every arm on ``n`` connections; return per-arm lists of run results."""
    cpus = choose_cpus(settings.pin)
    with pinned(cpus[0] if cpus else None):
        return _run_one_size(n, settings, progress, cpus[1] if cpus else None)


def _run_one_size(
    n: int, settings: Settings, progress: Progress, driver_cpu: int | None
) -> dict[str, Any]:
    pairs = [socket.socketpair() for _ in range(n)]
    conns = [a for a, _ in pairs]
    for sock in conns:
        sock.setblocking(False)
    driver = None
    try:
        driver = _Driver([b.fileno() for _, b in pairs], driver_cpu)
        for _, b in pairs:
            b.close()
        phases = _phases(settings)
        arms = [ARMS[name] for name in settings.arms]
        runs: dict[str, list[dict[str, Any]]] = {arm.name: [] for arm in arms}
        for round_ in range(settings.runs):
            order = arms[round_ % len(arms) :] + arms[: round_ % len(arms)]
            for arm in order:
                progress(f"N={n} run {round_ + 1}/{settings.runs}: {arm.name}")
                runs[arm.name].append(_run_arm(arm, conns, driver.control, phases))
        memory: dict[str, dict[str, Any]] = {}
        library: dict[str, float] = {}
        if settings.memory:
            progress(f"N={n} memory: library objects")
            library = library_bytes(conns)
            for arm in arms:
                progress(f"N={n} memory: {arm.name}")
                memory[arm.name] = _run_arm(arm, conns, driver.control, [], memory=True)
        return {"runs": runs, "memory": memory, "library": library}
    finally:
        if driver is not None:
            driver.close()
        for a, b in pairs:
            a.close()
            b.close()


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _style(arm: str) -> str | None:
    """Which library-only measurement belongs to an arm (its registration style)."""
    if not arm.startswith("np-"):
        return None
    if "-callback" in arm:
        return "callback"
    if "-shared" in arm or "-batch" in arm:
        return "shared"
    return None


def _spread(values: list[float]) -> float:
    """(max - min) / median: how far apart the runs were (0.10: within 10 %)."""
    if len(values) < 2:
        return 0.0
    middle = statistics.median(values)
    return (max(values) - min(values)) / middle if middle else float("nan")


def _per_run_ratios(raw: dict[str, Any], arm: str, base: str, key: str) -> list[float]:
    """arm / base for each round, both measured in the same round."""
    mine, theirs = raw["runs"].get(arm, []), raw["runs"].get(base, [])
    out = []
    for a, b in zip(mine, theirs, strict=False):
        x, y = key_of(a, key), key_of(b, key)
        if y:
            out.append(x / y)
    return out


def key_of(run: dict[str, Any], key: str) -> float:
    """One number of one run: ``msgs_per_s`` (burst phase) or ``idle_p50_us``."""
    if key == "msgs_per_s":
        burst = run["burst"]
        return float(burst["messages"] / burst["seconds"]) if burst["seconds"] else 0.0
    if key == "idle_p50_us":
        return float(run["idle"]["p50_us"])
    raise KeyError(key)


BASELINES = {"trio_tasks": "trio-tasks", "epoll": "epoll"}


def _server_cpu_per_message(phase: dict[str, Any]) -> float:
    """Server CPU µs per message. The server's clock runs from the command to the result,
    so it also served the answers that came after the driver's window (``settled``)."""
    served = phase["messages"] + phase.get("settled", 0)
    return float(phase["server_cpu_s"] / max(served, 1) * 1e6)


def _server_share(phase: dict[str, Any], key: str) -> float:
    """A server time (CPU, GC) as a share of the driver's load window. The server's own
    wall clock also spans the driver's settling after the window, when there is little
    to do; dividing by it would understate the share."""
    window = phase.get("seconds") or phase["wall_s"]
    return float(phase[key] / window) if window else math.nan


def summarize(n: int, raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Medians per arm of the numbers the report shows, with the spread between runs.

    Besides the medians of each arm's own numbers, ``vs_trio_tasks`` / ``vs_epoll`` (and
    ``idle_vs_trio_tasks``) are medians of ratios taken inside each round, which a noisy
    machine disturbs less than a ratio of medians. ``driver_cpu_share`` is the load
    driver's CPU time over the burst window: near 1.0, the driver was the bottleneck and
    that row's msgs/s is a floor, not the server's limit.
    """
    out: dict[str, dict[str, Any]] = {}
    for name, runs in raw["runs"].items():
        burst = [r["burst"] for r in runs]
        high = [r["high"] for r in runs]
        idle = [r["idle"] for r in runs]
        rates = [key_of(r, "msgs_per_s") for r in runs]
        row: dict[str, Any] = {
            "connections": n,
            "msgs_per_s": _median(rates),
            "msgs_per_s_runs": rates,  # per round, in round order: for in-run ratios
            "msgs_per_s_min": min(rates, default=float("nan")),
            "msgs_per_s_max": max(rates, default=float("nan")),
            "spread": _spread(rates),
            "cpu_us_per_msg": _median([_server_cpu_per_message(b) for b in burst]),
            "server_cpu_share": _median([_server_share(b, "server_cpu_s") for b in burst]),
            "context_switches_per_1k_msgs": _median(
                [
                    b.get("server_context_switches", math.nan)
                    / max(b["messages"] + b.get("settled", 0), 1)
                    * 1000
                    for b in burst
                ]
            ),
            "driver_cpu_share": _median([b.get("driver_cpu_share", math.nan) for b in burst]),
            "driver_cpu_share_max": max(
                (b.get("driver_cpu_share", math.nan) for b in burst), default=math.nan
            ),
            "gc_share": _median([_server_share(b, "gc_s") for b in burst]),
            "burst_p50_us": _median([b["p50_us"] for b in burst]),
            "burst_p99_us": _median([b["p99_us"] for b in burst]),
            "high_msgs_per_s": _median([h["messages"] / h["seconds"] for h in high]),
            "high_gc_share": _median([_server_share(h, "gc_s") for h in high]),
            "high_p99_us": _median([h["p99_us"] for h in high]),
            "high_driver_cpu_share": _median([h.get("driver_cpu_share", math.nan) for h in high]),
            "idle_p50_us": _median([i["p50_us"] for i in idle]),
            "idle_p50_us_runs": [i["p50_us"] for i in idle],
            "idle_p99_us": _median([i["p99_us"] for i in idle]),
            "register_us_per_conn": _median([r["register_s"] / n * 1e6 for r in runs]),
            "unanswered": sum(p["unanswered"] for p in burst + high + idle),
        }
        for label, base in BASELINES.items():
            ratios = _per_run_ratios(raw, name, base, "msgs_per_s")
            if ratios:
                row[f"vs_{label}"] = _median(ratios)
                row[f"vs_{label}_min"] = min(ratios)
                row[f"vs_{label}_max"] = max(ratios)
        idle_ratios = _per_run_ratios(raw, name, BASELINES["trio_tasks"], "idle_p50_us")
        if idle_ratios:
            row["idle_vs_trio_tasks"] = _median(idle_ratios)
        if runs and "wakeups" in runs[0]:
            row["events_per_batch"] = _median([r["events"] / max(r["batches"], 1) for r in runs])
        mem = raw["memory"].get(name)
        if mem is not None:
            row["bytes_per_conn"] = mem["memory_bytes"] / n
        style = _style(name)
        if style is not None and style in raw["library"]:
            row["library_bytes_per_conn"] = raw["library"][style]
            row["library_register_us"] = raw["library"][f"{style}_register_us"]
        out[name] = row
    return out


def run(settings: Settings, progress: Progress = lambda message: None) -> dict[str, Any]:
    """Run everything; return ``{"settings": ..., "results": {N: {arm: row}}}``."""
    results = {}
    for n in settings.connections:
        results[str(n)] = summarize(n, run_one_size(n, settings, progress))
    cpus = choose_cpus(settings.pin)
    return {
        "settings": settings.__dict__
        | {
            "connections": list(settings.connections),
            "arms": list(settings.arms),
            "server_cpu": cpus[0] if cpus else None,
            "driver_cpu": cpus[1] if cpus else None,
        },
        "results": results,
    }


def dumps(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2)  # insertion order: arms as the settings list them


def _ignore(event: Event) -> None:
    """One callback shared by every desc: user state is not the library's memory."""


async def _library_bytes_async(conns: list[socket.socket]) -> dict[str, float]:
    out = {}
    for style in ("callback", "shared"):
        callback = _ignore if style == "callback" else None
        # Time, tracemalloc paused: handle() + start() and nothing else; median of 3
        # passes (the first also pays for the registry growing).
        tracemalloc.stop()
        passes = []
        async with Poller() as poller:
            for _ in range(3):
                descs = []
                start = time.perf_counter()
                for sock in conns:
                    desc = handle_read(sock)
                    poller.start(desc, callback)
                    descs.append(desc)
                passes.append((time.perf_counter() - start) / len(conns) * 1e6)
                for desc in descs:
                    poller.stop(desc)
        out[f"{style}_register_us"] = statistics.median(passes)
        # Memory, in a fresh poller so that no registry left-overs are counted.
        tracemalloc.start()
        async with Poller() as poller:
            gc.collect()
            before = tracemalloc.get_traced_memory()[0]
            descs = [handle_read(sock) for sock in conns]
            for desc in descs:
                poller.start(desc, callback)
            out[style] = (tracemalloc.get_traced_memory()[0] - before) / len(conns)
            for desc in descs:
                poller.stop(desc)
            del descs
    return out


def library_bytes(conns: list[socket.socket]) -> dict[str, float]:
    """The library's own cost per registered desc, per style: tracemalloc bytes (the Desc,
    its fd number, the registration and its registry slot; callbacks share one function,
    the shared stream needs no user state) and ``handle()`` + ``start()`` time."""
    tracemalloc.start()
    try:
        return trio.run(_library_bytes_async, conns)
    finally:
        tracemalloc.stop()
