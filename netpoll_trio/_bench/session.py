"""One arm's run: the phases it serves, and what is measured while it does.

An arm calls :meth:`Session.registering` / :meth:`Session.registered` around registering
its connections, then loops ``while session.next_phase(): <serve until control readable>;
session.finish_phase()``. The session sends the driver its command when a phase starts,
measures server CPU time (all threads of this process) and time spent in the cyclic GC
while it runs, and reads the driver's result when it ends. In memory mode there are no
phases: registration is measured with tracemalloc instead.
"""

from __future__ import annotations

import gc
import json
import resource
import socket
import time
import tracemalloc
from dataclasses import dataclass, field
from typing import Any


def _context_switches() -> int:
    """Voluntary and involuntary context switches of every thread of this process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_nvcsw + usage.ru_nivcsw


@dataclass
class Phase:
    """A driver command and the name its results are filed under."""

    name: str
    command: dict[str, Any]


class _GcTimer:
    def __init__(self) -> None:
        self.seconds = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started


@dataclass
class Session:
    """The link between an arm and the driver, plus the measurements of one run."""

    control: socket.socket
    phases: list[Phase]
    memory: bool = False
    results: dict[str, Any] = field(default_factory=dict)
    statistics: Any = None
    _reader: Any = None
    _pending: list[Phase] = field(default_factory=list)
    _current: Phase | None = None
    _t0: float = 0.0
    _cpu0: float = 0.0
    _switches0: int = 0
    _mem0: int = 0
    _gc: _GcTimer | None = None

    def __post_init__(self) -> None:
        self._reader = self.control.makefile("r")
        self._pending = list(self.phases)

    def registering(self) -> None:
        if self.memory:
            gc.collect()
            self._mem0 = tracemalloc.get_traced_memory()[0]
        self._t0 = time.perf_counter()

    def registered(self) -> None:
        self.results["register_s"] = time.perf_counter() - self._t0
        if self.memory:
            self.results["memory_bytes"] = tracemalloc.get_traced_memory()[0] - self._mem0
        else:
            # Registering thousands of connections leaves as many new objects, whose
            # promotion triggers full GC passes during the first load phase (150 ms each
            # at 9000 connections): a start-up cost, not the steady state the phases
            # measure. Pay it here, for every arm alike.
            gc.collect()

    def next_phase(self) -> bool:
        if self.memory or not self._pending:
            return False
        self._current = phase = self._pending.pop(0)
        self._gc = _GcTimer()
        gc.callbacks.append(self._gc)
        self._t0 = time.perf_counter()
        self._cpu0 = time.process_time()
        self._switches0 = _context_switches()
        self.control.sendall(json.dumps(phase.command).encode() + b"\n")
        return True

    def finish_phase(self) -> None:
        result = json.loads(self._reader.readline())
        wall = time.perf_counter() - self._t0
        cpu = time.process_time() - self._cpu0
        assert self._gc is not None
        assert self._current is not None
        gc.callbacks.remove(self._gc)
        result["server_cpu_s"] = cpu
        result["server_context_switches"] = _context_switches() - self._switches0
        result["gc_s"] = self._gc.seconds
        result["wall_s"] = wall
        self.results[self._current.name] = result
        self._current = None
