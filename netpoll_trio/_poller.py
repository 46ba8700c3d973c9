"""The async :class:`Poller`: lifecycle, the public API, watch streams and the shared stream.

How a batch travels
-------------------
A batch source (:mod:`._sources`: a wait thread by default, or the host loop itself with
``Config(wait_thread=False)``) collects each ``epoll_wait`` batch and calls
:meth:`Poller._deliver` on the loop thread with it and the wake-up count at which it was
collected. :meth:`Dispatcher.deliver_batch` gives each record to the registration alive
*now* for its fd (see :mod:`._dispatch` for coalescing and the stop guarantee).

Nothing here ever raises into the loop's callback machinery (under
trio that would be a TrioInternalError): errors from user callbacks, a dead wait loop, or a
bug of ours are routed to :meth:`Poller._fail`, which closes the poller, cancels the
``async with`` body and re-raises the error when the block exits -- the way a nursery
treats a failing child.

Closing (``aclose()``, or leaving the block for any reason) is synchronous and runs on the
loop thread: stop the source (the wait thread is woken and joined; the loop forgets the
epoll fd), close the fds, then deliver ``POLLER_CLOSED`` to every registration. Batches
still in flight find the poller closed and are dropped.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from ._desc import Desc, set_non_blocking
from ._dispatch import (
    REARM,
    CallbackRegistration,
    Dispatcher,
    Registration,
    SharedQueue,
    SharedRegistration,
    WatchRegistration,
)
from ._errors import (
    FORGOTTEN_ERRNOS,
    ClosedError,
    NotRegisteredError,
    RegisteredError,
    kernel_error,
    unsupported_platform,
)
from ._flags import EpollEvent, Event, event_from_mask
from ._loop import Backend, CancelScopeLike, current_backend
from ._sources import BatchSource, LoopSource, ThreadSource
from ._syscalls import Syscalls

__all__ = ["Config", "EventStream", "Poller", "PollerStatistics", "Watch"]

_EPOLLCLOSED = int(EpollEvent.EPOLLCLOSED)
_NEW, _OPEN, _CLOSED = "new", "open", "closed"


@dataclass(frozen=True)
class Config:
    """Options for :class:`Poller` (Go's ``Config``).

    Attributes:
        on_wait_error: called on the event-loop thread with the OSError when ``epoll_wait``
            fails for good; the poller is closed (``POLLER_CLOSED`` delivered) first. When
            None, the error closes the poller and propagates out of its ``async with``.
        syscalls: the fault-injection seam; see :class:`~netpoll_trio.Syscalls`.
        wait_thread: True (the default): a dedicated thread waits in ``epoll_wait`` and
            hands batches to the event loop. False: no thread; the event loop itself
            waits for the epoll fd to become readable and drains it -- lower latency and
            no thread hop, but delivery waits whenever the loop is busy. Same behaviour
            and guarantees either way; see the docs' "Choosing a mode".
    """

    on_wait_error: Callable[[OSError], object] | None = None
    syscalls: Syscalls = field(default_factory=Syscalls)
    wait_thread: bool = True


@dataclass(frozen=True)
class PollerStatistics:
    """A snapshot of a poller's counters, from :meth:`Poller.statistics`.

    Attributes:
        registered: descs registered now.
        events_delivered: epoll records delivered to callbacks and streams so far.
        batches: batches delivered on the event loop (one per ``epoll_wait`` that
            returned events).
        wakeups: returns from ``epoll_wait`` (with the wait thread, including the final
            wake-up on close).
        ready: descs queued in the shared stream, waiting for a worker.
    """

    registered: int
    events_delivered: int
    batches: int
    wakeups: int
    ready: int


class Poller:
    """Epoll readiness events for trio and anyio programs (Go's ``Poller``).

    Use as ``async with Poller() as poller:``. For the block's duration a dedicated thread
    waits in ``epoll_wait`` (or, with ``Config(wait_thread=False)``, the event loop itself
    waits for the epoll fd) and hands batches of events to the event loop, where they reach
    callbacks (:meth:`start` with a callback), per-connection streams (:meth:`watch`), or
    the poller's own stream that any number of worker tasks iterate
    (``async for desc, event in poller``). Leaving the block (normally, by exception or by
    cancellation) closes the poller, as does :meth:`aclose`.

    All methods must be called from the thread running the event loop that entered the
    poller.

    Args:
        config: options; see :class:`Config`.

    Raises:
        NetpollError: the platform has no epoll.
    """

    def __init__(self, config: Config | None = None) -> None:
        if not hasattr(select, "epoll"):
            raise unsupported_platform()
        self._config = config if config is not None else Config()
        self._state = _NEW
        self._dispatcher = Dispatcher(self._fail)
        self._error: BaseException | None = None
        self._thread_id = 0
        # Set by __aenter__:
        self._backend: Backend
        self._source: BatchSource
        self._shared: SharedQueue
        self._scope: CancelScopeLike

    # ---------------------------------------------------------------- lifecycle

    @property
    def closed(self) -> bool:
        """True once the poller has been closed."""
        return self._state is _CLOSED

    async def __aenter__(self) -> Poller:
        if self._state is not _NEW:
            raise RuntimeError("a Poller can be entered only once")
        backend = current_backend()
        await backend.checkpoint()
        self._backend = backend
        self._shared = SharedQueue(backend.parking_lot())
        kind = ThreadSource if self._config.wait_thread else LoopSource
        self._source = kind(self._config.syscalls, backend, self._deliver, self._on_wait_died)
        self._thread_id = threading.get_ident()
        self._state = _OPEN
        self._source.start()
        self._scope = backend.cancel_scope()
        self._scope.__enter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        try:
            self._close()
        except OSError as err:
            self._fail(err)
        suppressed = bool(self._scope.__exit__(exc_type, exc, tb))
        error, self._error = self._error, None
        if error is not None:
            raise error
        return suppressed

    async def aclose(self) -> None:
        """Close the poller now; a no-op if it is closed already. A checkpoint.

        Every registration still alive gets ``POLLER_CLOSED`` (callbacks before this
        returns; streams as their next item). The wait thread is joined and the epoll fd
        and eventfd are closed before this returns.

        Raises:
            OSError: closing an fd failed (everything was closed and notified all the same).
        """
        if self._state is _NEW:
            self._state = _CLOSED
            await current_backend().checkpoint()
            return
        self._close()
        await self._backend.checkpoint()

    def _close(self) -> None:
        """Close synchronously on the loop thread; idempotent."""
        if self._state is not _OPEN:
            self._state = _CLOSED
            return
        self._state = _CLOSED
        error = self._source.stop()
        self._dispatcher.close_all()
        self._shared.closed = True
        self._shared.lot.unpark_all()
        if error is not None:
            raise error

    def _fail(self, error: BaseException) -> None:
        """Record ``error``, close, and cancel the ``async with`` body so it can surface."""
        if self._error is None:
            self._error = error
        with contextlib.suppress(OSError):  # error already recorded; fds closed regardless
            self._close()
        self._scope.cancel()

    # ---------------------------------------------------------------- loop side

    def _deliver(self, records: list[tuple[int, int]], epoch: int) -> None:
        """A batch from the source, on the loop thread. Never raises."""
        if self._state is not _OPEN:
            return  # closed while in flight: dropped, POLLER_CLOSED was delivered instead
        try:
            self._dispatcher.deliver_batch(records, epoch)
        except BaseException as exc:  # a bug of ours must not reach the loop machinery
            self._fail(exc)
        if self._state is _OPEN:
            self._source.delivered(backlog=bool(self._shared.ready))

    def _on_wait_died(self, error: BaseException) -> None:
        if self._state is not _OPEN:
            return
        handler = self._config.on_wait_error
        if handler is None or not isinstance(error, OSError):
            self._fail(error)
            return
        try:
            self._close()
            handler(error)
        except BaseException as exc:
            self._fail(exc)

    # ---------------------------------------------------------------- registration

    def _check_open(self) -> None:
        if self._state is not _OPEN:
            if self._state is _CLOSED:
                raise ClosedError()
            raise RuntimeError("the Poller is not open yet: use `async with Poller() as poller:`")
        if threading.get_ident() != self._thread_id:
            raise RuntimeError(
                "a Poller must be used from the thread running the event loop that opened it"
            )

    def _register(
        self, desc: Desc, kind: Callable[[Desc, int, Any], Registration], target: Any
    ) -> Registration:
        """Register ``desc`` as ``kind(desc, epoch, target)``; see :meth:`start`."""
        if not isinstance(desc, Desc):
            raise TypeError(f"expected a Desc (from handle() or new_desc()), got {desc!r}")
        fd = desc._fd
        regs = self._dispatcher.regs
        old = regs.get(fd)
        if old is not None and old.desc is desc:
            raise RegisteredError(f"{RegisteredError.default_message} ({desc!r})")
        if not desc._nonblocking:
            try:
                blocking = os.get_blocking(fd)
            except OSError as err:
                raise kernel_error(err, fd, "checking it can be registered") from None
            if blocking:
                set_non_blocking(fd)
        reg = kind(desc, self._source.wakeups, target)
        try:
            self._source.epoll.register(fd, reg.interest)
        except FileExistsError:
            holder = f" by {old.desc!r}" if old is not None else ""
            raise RegisteredError(
                f"{RegisteredError.default_message} (fd {fd} is registered{holder})"
            ) from None
        except OSError as err:
            raise kernel_error(err, fd, "registering it with epoll") from None
        if old is not None:
            # The kernel accepted the fd, so the old entry was stale: its socket was closed
            # without stop() and the number reused. Its registration ends here.
            old.end()
        regs[fd] = reg
        return reg

    def _lookup(self, desc: Desc) -> Registration:
        if not isinstance(desc, Desc):
            raise TypeError(f"expected a Desc, got {desc!r}")
        reg = self._dispatcher.regs.get(desc.fileno())
        if reg is None:
            raise NotRegisteredError(f"{NotRegisteredError.default_message} ({desc!r})")
        if reg.desc is not desc:
            raise NotRegisteredError(
                f"{NotRegisteredError.default_message} ({desc!r}: its fd now belongs "
                f"to {reg.desc!r}; this Desc's registration ended when its fd was reused)"
            )
        return reg

    def _unregister(self, reg: Registration) -> None:
        fd = reg.desc.fileno()
        del self._dispatcher.regs[fd]
        reg.end()
        try:
            self._source.epoll.unregister(fd)
        except OSError as err:
            if err.errno not in FORGOTTEN_ERRNOS:
                raise kernel_error(err, fd, "removing it from epoll") from None

    def _rearm(self, reg: Registration, *, quietly: bool = False) -> None:
        fd = reg.desc.fileno()
        try:
            self._source.epoll.modify(fd, reg.interest)
        except OSError as err:
            if not (quietly and err.errno in FORGOTTEN_ERRNOS):
                raise kernel_error(err, fd, "re-arming it in epoll") from None

    def start(self, desc: Desc, callback: Callable[[Event], object] | None = None) -> None:
        """Register ``desc``; its fd becomes non-blocking. Not a checkpoint.

        With a callback, ``callback(event)`` is called on the event-loop thread,
        synchronously, once per epoll record; it may call :meth:`start`, :meth:`stop` and
        :meth:`resume`. If it raises, the poller closes and the exception propagates out
        of the ``async with`` block. Without a callback, events go to the poller's own
        stream (``async for desc, event in poller``).

        A stale entry -- a Desc whose socket was closed without :meth:`stop` and whose fd
        number a new socket now has -- is replaced instead of raising RegisteredError.

        Raises:
            ClosedError: the poller is closed.
            RegisteredError: ``desc`` (or another live Desc for its fd) is registered.
            OSError: the kernel refused (EPERM for a regular file, EBADF for a closed
                fd, ...); the message names the fd and nothing stays registered.
            TypeError: ``desc`` is not a Desc, or ``callback`` is not callable.
        """
        self._check_open()
        if callback is None:
            self._register(desc, SharedRegistration, self._shared)
            return
        if not callable(callback):
            raise TypeError(f"callback must be callable, got {callback!r}")
        self._register(desc, CallbackRegistration, callback)

    def stop(self, desc: Desc) -> None:
        """Unregister ``desc``. Not a checkpoint; safe in ``finally`` blocks.

        Once this returns, no event for ``desc`` is delivered, even one the wait thread had
        already collected. Stopping a desc whose fd was closed already works.

        Raises:
            ClosedError: the poller is closed.
            NotRegisteredError: ``desc`` is not registered (or its stale registration was
                replaced by a new socket that reused the fd number).
        """
        self._check_open()
        self._unregister(self._lookup(desc))

    def resume(self, desc: Desc) -> None:
        """Re-arm a ONE_SHOT ``desc`` (or re-check readiness of any desc). Not a checkpoint.

        Raises:
            ClosedError: the poller is closed.
            NotRegisteredError: ``desc`` is not registered.
            OSError: the kernel refused (the fd was closed, ...); the message names it.
        """
        self._check_open()
        self._rearm(self._lookup(desc))

    def watch(self, desc: Desc) -> Watch:
        """Return an async context manager giving a per-connection :class:`EventStream`.

        ``async with poller.watch(desc) as events: async for event in events: ...``.
        Entering registers ``desc`` (a checkpoint); leaving the block for any reason,
        cancellation included, stops it. Leaving after the poller closed does nothing.
        """
        return Watch(self, desc)

    def statistics(self) -> PollerStatistics:
        """Return a snapshot of the poller's counters (see :class:`PollerStatistics`)."""
        dispatcher = self._dispatcher
        opened = self._state is not _NEW
        return PollerStatistics(
            registered=len(dispatcher.regs),
            events_delivered=dispatcher.events_delivered,
            batches=dispatcher.batches,
            wakeups=self._source.wakeups if opened else 0,
            ready=len(self._shared) if opened else 0,
        )

    # ---------------------------------------------------------------- shared stream

    def __aiter__(self) -> Poller:
        return self

    async def __anext__(self) -> tuple[Desc, Event]:
        """Take the next ready desc (and its coalesced event) from the shared stream.

        Any number of tasks may iterate at once; each ready desc goes to exactly one of them.
        When the poller closes, every desc still registered comes once with
        ``POLLER_CLOSED``; then iteration ends in every task. A checkpoint.
        """
        if self._state is _NEW:
            raise RuntimeError("the Poller is not open yet: use `async with Poller() as poller:`")
        shared = self._shared
        await self._backend.checkpoint()
        while True:
            item = shared.pop()
            if self._source.patient and not shared.ready:
                self._source.drained()
            if item is not None:
                reg, mask = item
                if reg.state & REARM and mask != _EPOLLCLOSED and self._state is _OPEN:
                    self._rearm(reg, quietly=True)
                return reg.desc, event_from_mask(mask)
            if shared.closed:
                raise StopAsyncIteration
            await shared.lot.park()


class Watch:
    """The async context manager returned by :meth:`Poller.watch`."""

    __slots__ = ("_desc", "_poller", "_stream")

    def __init__(self, poller: Poller, desc: Desc) -> None:
        self._poller = poller
        self._desc = desc
        self._stream: EventStream | None = None

    async def __aenter__(self) -> EventStream:
        if self._stream is not None:
            raise RuntimeError("a watch() context manager can be entered only once")
        poller = self._poller
        poller._check_open()
        backend = poller._backend
        await backend.checkpoint()
        desc = self._desc
        reg = poller._register(desc, WatchRegistration, backend.waiter())
        assert isinstance(reg, WatchRegistration)
        self._stream = EventStream(poller, reg)
        return self._stream

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stream = self._stream
        assert stream is not None
        stream._finish()
        poller = self._poller
        reg = stream._reg
        if poller._state is _OPEN and poller._dispatcher.regs.get(reg.desc.fileno()) is reg:
            poller._unregister(reg)


class EventStream:
    """A per-connection stream of :class:`Event` values, from :meth:`Poller.watch`.

    Iterate it with ``async for``. Events that arrive while the consumer is busy are merged
    (flags OR-ed) into the next item, never lost. A ONE_SHOT (or level-triggered) desc is
    re-armed each time the consumer asks for the next event. When the poller closes the
    stream yields ``POLLER_CLOSED`` once, then ends; it also ends when its desc is stopped.
    """

    __slots__ = ("_done", "_poller", "_reg")

    def __init__(self, poller: Poller, reg: WatchRegistration) -> None:
        self._poller = poller
        self._reg = reg
        self._done = False

    def _finish(self) -> None:
        self._done = True

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event:
        """Wait for the next (coalesced) event. A checkpoint."""
        reg = self._reg
        if self._done:
            raise StopAsyncIteration
        if reg.taken:
            reg.taken = False
            if reg.active and reg.rearm:
                self._poller._rearm(reg)
        if reg.pending or reg.closed or not reg.active:
            await self._poller._backend.checkpoint()
        else:
            await reg.lot.park()
        while True:
            if reg.closed:
                self._done = True
                reg.closed = False
                return Event.POLLER_CLOSED
            if not reg.active:
                self._done = True
                raise StopAsyncIteration
            mask = reg.pending
            if mask:
                reg.pending = 0
                reg.taken = True
                return event_from_mask(mask)
            await reg.lot.park()
