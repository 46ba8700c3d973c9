"""Where a Poller's batches come from: a wait thread (the default), the host loop waiting
for the epoll fd, or -- in the portable mode -- the host loop watching every fd itself.

Each source holds the poller's *interest list* (``register``/``modify``/``unregister``
with epoll masks): an epoll object, behind a :class:`~._collector.Collector` that
collects every batch the same way in the first two modes, or its emulation on the host
loop (:class:`~._portable.LoopInterestList`). Each calls the poller back on the
event-loop thread with ``deliver(records, epoch)`` -- a batch and the wake-up count at
which it was collected -- or ``died(error)`` when ``epoll_wait`` fails for good. The
dispatcher behind ``deliver`` is the same in every mode.

:class:`ThreadSource` (``Config(wait_thread=True)``, the default)
    A :class:`~._wait_thread.WaitThread` blocks in ``epoll_wait`` and hands each batch over
    with one ``call_soon_threadsafe`` / ``run_sync_soon``, so at most one batch is ever
    in flight. *A quiet thread:* it then sleeps until the loop has delivered the batch
    **and run out of work** (the backend's idle hook: the callbacks ran, the workers the
    batch woke have taken and handled what it queued), and only then waits again. Polling
    while the loop works would only produce a trickle of tiny batches, and worse, each
    return from ``epoll_wait`` makes the thread take the GIL at the loop's next syscall --
    a context switch or two per message for a busy server. If the loop stays busy, the
    thread polls anyway after ``PATIENCE`` seconds: nothing is lost meanwhile (the kernel
    keeps readiness), and a saturated poller delays collection by at most that much.

:class:`LoopSource` (``Config(wait_thread=False)``)
    No thread and no wake-up fd: the epoll fd is itself pollable, so the host loop waits
    for it to become readable (asyncio ``add_reader``; a trio system task in
    ``wait_readable``) and the source drains it with a zero-timeout ``epoll_wait`` on the
    loop thread. No hop, no GIL hand-over, no cross-thread race; but a loop busy with CPU
    work delays delivery, where the thread would at least have collected the batch.

:class:`PortableSource` (``Config(portable=True)``; the default where epoll is missing)
    No epoll at all: the host loop watches each registered fd (see :mod:`._portable`)
    and each readiness it reports is delivered at once, as a batch of one record.
"""

from __future__ import annotations

import contextlib
import errno
import threading
from collections.abc import Callable
from typing import Protocol

from ._backends import Backend, FdWatcherLike
from ._collector import Collector, Records
from ._portable import LoopInterestList
from ._syscalls import Syscalls
from ._wait_thread import WaitThread

__all__ = [
    "PATIENCE",
    "UNOPENED",
    "BatchSource",
    "InterestList",
    "LoopSource",
    "PortableSource",
    "ThreadSource",
]

#: Longest wait, once a batch is delivered, for the loop to run out of work before the
#: wait thread polls again anyway.
PATIENCE = 0.002
#: While a batch is undelivered, how often the wait thread checks the loop still lives.
_LOOP_CHECKS = 125  # x PATIENCE: every quarter of a second

Deliver = Callable[[Records, int], None]
Died = Callable[[BaseException], None]


class InterestList(Protocol):
    """What the poller registers fds with: ``select.epoll``'s own methods, or their
    emulation on the host loop (:class:`~._portable.LoopInterestList`)."""

    def register(self, fd: int, eventmask: int, /) -> None: ...

    def modify(self, fd: int, eventmask: int, /) -> None: ...

    def unregister(self, fd: int, /) -> None: ...


class BatchSource:
    """What the poller needs from a source of batches (see the module docstring)."""

    interest_list: InterestList
    collector: Collector

    @property
    def wakeups(self) -> int:
        """Returns from ``epoll_wait`` so far; also the epoch of the latest batch."""
        return self.collector.wakeups

    def start(self) -> None:
        """Begin collecting batches."""
        raise NotImplementedError

    def delivered(self) -> None:
        """The loop has delivered a batch (loop thread)."""

    def stop(self) -> OSError | None:
        """Stop collecting and close the fds (synchronously); return the first error.

        The fds are closed whatever interrupts the stop (a ``KeyboardInterrupt`` during
        the join is re-raised afterwards)."""
        raise NotImplementedError

    def take_unreported(self) -> BaseException | None:
        """The fatal wait error the loop has not been told about yet (after :meth:`stop`)."""
        return None


class _Unopened(BatchSource):
    """The source of a poller that was never entered: no batches, no wake-ups."""

    wakeups = 0  # a constant where the other sources have a property

    def stop(self) -> OSError | None:
        return None


UNOPENED: BatchSource = _Unopened()


class ThreadSource(BatchSource):
    """Batches from a wait thread, handed to the loop one at a time."""

    def __init__(self, syscalls: Syscalls, backend: Backend, deliver: Deliver, died: Died):
        self._waiter = WaitThread(syscalls)
        self.collector = self._waiter.collector
        self.interest_list = self.collector.epoll
        self._backend = backend
        self._deliver = deliver
        self._died = died
        # Released when the loop, having delivered the batch, ran out of work (or at once
        # when stopping). A release left over from an earlier batch is told apart by
        # ``_delivered``, so the next batch is never handed over before this one landed.
        self._go = threading.Lock()
        self._go.acquire()
        self._delivered = False
        self._idle = backend.idle_hook(self._release_go)
        # A fatal wait error on its way to the loop: taken by whichever comes first, the
        # loop's report or stop() (the block may exit before the loop ran the report).
        self._fatal: BaseException | None = None
        self._fatal_lock = threading.Lock()

    def start(self) -> None:
        self._waiter.start(self._on_batch, self._on_exit)

    # wait thread side

    def _on_batch(self, records: Records) -> bool:
        epoch = self.collector.wakeups  # counted when this batch's epoll_wait returned
        call_soon = self._backend.call_soon_threadsafe
        self._delivered = False
        try:
            call_soon(self._deliver, records, epoch)
        except RuntimeError:  # the event loop has finished: nobody left to deliver to
            return self._orphaned()
        go = self._go
        waits = 0
        while True:
            if go.acquire(timeout=PATIENCE):
                if self._delivered or self._waiter.stopping:
                    return True
            elif self._delivered:
                return True  # delivered, but the loop stays busy: poll anyway
            waits += 1
            if waits % _LOOP_CHECKS == 0:
                # Still undelivered: is the loop alive? An asyncio loop closed with the
                # poller open (entered by hand) never runs the hand-off, and would keep
                # this thread and its fds for ever.
                try:
                    call_soon(_nothing)
                except RuntimeError:
                    return self._orphaned()

    def _orphaned(self) -> bool:
        """The loop is gone for good: nobody will ever stop this thread, so its fds are
        closed here, as it ends."""
        self._waiter.close_fds()
        return False

    def _on_exit(self, error: BaseException | None) -> None:
        if error is None:
            return
        with self._fatal_lock:
            self._fatal = error
        with contextlib.suppress(RuntimeError):  # the loop finished: nothing to tell
            self._backend.call_soon_threadsafe(self._report_fatal)

    def _report_fatal(self) -> None:
        error = self.take_unreported()
        if error is not None:
            self._died(error)

    def take_unreported(self) -> BaseException | None:
        with self._fatal_lock:
            error, self._fatal = self._fatal, None
        return error

    # loop side

    def delivered(self) -> None:
        self._delivered = True
        self._idle.arm()

    def _release_go(self) -> None:
        _release(self._go)

    def stop(self) -> OSError | None:
        waiter = self._waiter
        wake_error: OSError | None = None
        try:
            try:
                waiter.request_stop()
            except OSError as err:
                wake_error = err
            _release(self._go)  # the thread may be waiting for a batch that will not come
            if wake_error is None:
                waiter.join()  # short: the thread only ever blocks in epoll_wait or on these
        finally:  # even when interrupted (Ctrl-C during the join): the thread is ending
            self._idle.close()
            close_error = waiter.close_fds()
        return wake_error or close_error


def _nothing() -> None:
    """A hand-off that does nothing: only probes whether the loop still takes them."""


def _release(lock: threading.Lock) -> None:
    with contextlib.suppress(RuntimeError):  # not held: nobody is waiting on it
        lock.release()


class LoopSource(BatchSource):
    """Batches drained on the loop thread when the host loop sees the epoll fd readable."""

    def __init__(self, syscalls: Syscalls, backend: Backend, deliver: Deliver, died: Died):
        self.collector = Collector(syscalls)
        self.interest_list = self.collector.epoll
        self._backend = backend
        self._deliver = deliver
        self._died = died
        self._watcher: FdWatcherLike | None = None

    def start(self) -> None:
        self._watcher = self._backend.watch_fd(
            self.collector.epoll.fileno(), self._ready, self._cannot_watch
        )

    def _ready(self) -> None:
        """The epoll fd is readable: drain it without blocking. Never raises: this runs
        in the loop's own machinery (a trio system task, an asyncio reader callback),
        where an exception would crash the run or be logged and retried for ever."""
        collector = self.collector
        try:
            records = collector.collect(0)
        except ValueError as err:  # the epoll object was closed under us
            self._died(OSError(errno.EBADF, str(err)))
            return
        except BaseException as exc:  # a fatal OSError, MemoryError, a faulty Syscalls.wait
            self._died(exc)
            return
        if records:  # None: a temporary error, retried when the fd is next seen readable
            self._deliver(records, collector.wakeups)

    def _cannot_watch(self, error: BaseException) -> None:
        """The loop cannot wait for the epoll fd (trio: its wait raised): nothing would
        ever be collected again, so the wait has died, loudly."""
        self._died(error)

    def stop(self) -> OSError | None:
        if self._watcher is not None:
            self._watcher.cancel()  # before closing: the loop must forget the fd first
            self._watcher = None
        return self.collector.close()


class PortableSource(BatchSource):
    """Readiness from the host loop, fd by fd, each delivered at once as a batch of one.

    ``wakeups`` counts the reports (the epoch of each is the count after it, so every
    registration made before a report is older than it). Nothing can fail for good here:
    there is no ``epoll_wait``, and the ``Syscalls`` seam is not used.
    """

    def __init__(self, syscalls: Syscalls, backend: Backend, deliver: Deliver, died: Died):
        backend.check_watch_fd()
        self._deliver = deliver
        self.interest_list: LoopInterestList = LoopInterestList(backend, self._report)
        self.reports = 0

    @property
    def wakeups(self) -> int:
        return self.reports

    def start(self) -> None:
        pass  # each fd is watched from its register() on

    def _report(self, fd: int, mask: int) -> None:
        self.reports += 1
        self._deliver([(fd, mask)], self.reports)

    def stop(self) -> OSError | None:
        self.interest_list.close()
        return None
