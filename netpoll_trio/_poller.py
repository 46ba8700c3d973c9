"""The async :class:`Poller`: lifecycle, the public API, watch streams and the shared stream.

How a batch travels
-------------------
A batch source (:mod:`._sources`: a wait thread by default, the host loop itself with
``Config(wait_thread=False)``, or the host loop watching every fd in the portable mode)
collects each ``epoll_wait`` batch (or readiness report) and calls
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
import inspect
import os
import select
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import NoReturn, final

import anyio.abc
import trio.abc

from ._backends import Backend, CancelScopeLike, current_backend
from ._channel import BusyReceiver, ClosedStream, EndOfStream, NothingReady
from ._desc import Desc, check_event, set_non_blocking
from ._dispatch import (
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
from ._flags import Event, event_from_mask
from ._sources import UNOPENED, BatchSource, LoopSource, PortableSource, ThreadSource
from ._syscalls import Syscalls

if sys.version_info < (3, 11):  # pragma: no cover - the backport trio also depends on
    from exceptiongroup import BaseExceptionGroup

__all__ = ["Config", "EventStream", "Poller", "PollerStatistics", "Watch"]

_NEW, _OPEN, _CLOSED = "new", "open", "closed"
_NOT_OPEN = "the Poller is not open yet: use `async with Poller() as poller:`"
_NOT_ENTERED = "enter the watch() stream first: `async with poller.watch(desc) as events:`"


def _together(error: BaseException, other: BaseException) -> BaseExceptionGroup[BaseException]:
    """The poller's failure and what the block raised, as a nursery would group them."""
    return BaseExceptionGroup("the poller failed while its block raised", [error, other])


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
        portable: True: no epoll; the event loop watches each registered fd itself
            (asyncio's ``add_reader``/``add_writer``, trio's ``wait_readable``/
            ``wait_writable``), so the poller runs wherever trio or asyncio run (macOS,
            BSD). Edge-triggered descs may be reported again while still ready, and
            events carry READ or WRITE only (no HUP/ERR detail); ``wait_thread`` and
            ``syscalls`` are not used. None (the default): portable exactly where the
            platform has no epoll. See the docs' "Portable mode".
    """

    on_wait_error: Callable[[OSError], object] | None = None
    syscalls: Syscalls = field(default_factory=Syscalls)
    wait_thread: bool = True
    portable: bool | None = None

    @property
    def uses_portable_mode(self) -> bool:
        """Whether a poller with this config runs in the portable mode (``portable``, or
        None on a platform without epoll)."""
        if self.portable is None:
            return not hasattr(select, "epoll")
        return self.portable


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
        unclaimed: epoll records for fds not registered (a few after each ``stop()``
            are normal; a steady growth means a ``dup()``-ed socket closed without
            ``stop()``, see :meth:`Poller.stop`).
    """

    registered: int
    events_delivered: int
    batches: int
    wakeups: int
    ready: int
    unclaimed: int = 0


class Poller:
    """Epoll readiness events for trio and anyio programs (Go's ``Poller``).

    Use as ``async with Poller() as poller:``. For the block's duration a dedicated thread
    waits in ``epoll_wait`` (or, with ``Config(wait_thread=False)``, the event loop itself
    waits for the epoll fd; or, in the portable mode -- ``Config(portable=True)``, the
    default without epoll -- the event loop watches each fd itself) and hands batches of
    events to the event loop, where they reach
    callbacks (:meth:`start` with a callback), per-connection streams (:meth:`watch`), or
    the poller's own stream that any number of worker tasks iterate
    (``async for desc, event in poller``). Leaving the block (normally, by exception or by
    cancellation) closes the poller, as does :meth:`aclose`.

    All methods must be called from the thread running the event loop that entered the
    poller.

    Args:
        config: options; see :class:`Config`.

    Raises:
        NetpollError: ``Config(portable=False)`` on a platform without epoll.
    """

    def __init__(self, config: Config | None = None) -> None:
        self._config = config if config is not None else Config()
        self._portable = self._config.uses_portable_mode
        if not self._portable and not hasattr(select, "epoll"):
            raise unsupported_platform(portable_poller=True)
        self._state = _NEW
        self._dispatcher = Dispatcher(self._fail)
        self._error: BaseException | None = None
        self._thread_id = 0
        self._source: BatchSource = UNOPENED
        self._shared = SharedQueue()
        # Set by __aenter__:
        self._backend: Backend
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
        if self._state is not _NEW:  # closed by aclose() during the checkpoint
            raise ClosedError()
        self._backend = backend
        kind: Callable[..., BatchSource]
        if self._portable:
            kind = PortableSource
        else:
            kind = ThreadSource if self._config.wait_thread else LoopSource
        source = kind(self._config.syscalls, backend, self._deliver, self._on_wait_died)
        self._source = source
        shared = self._shared
        shared.lot = backend.parking_lot()
        shared.rearm = self._rearm_quietly
        shared.edges = not self._portable
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
        # Like a nursery: the poller's own failure surfaces, beside whatever else the
        # block raised (in one group), never hidden in another exception's __context__.
        try:
            suppressed = bool(self._scope.__exit__(exc_type, exc, tb))
        except BaseException as remaining:  # the scope re-raised what it did not absorb
            error, self._error = self._error, None
            if error is None or error is remaining:
                raise
            raise _together(error, remaining) from None
        error, self._error = self._error, None
        if error is None:
            return suppressed
        if suppressed or exc is None or exc is error:
            raise error
        raise _together(error, exc)

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
            self._shared.closed = True
            await current_backend().checkpoint()
            return
        self._close()
        await self._backend.checkpoint()

    def _close(self) -> None:
        """Close synchronously on the loop thread; idempotent."""
        if self._state is not _OPEN:
            self._state = _CLOSED
            self._shared.closed = True
            return
        self._state = _CLOSED
        source = self._source
        try:
            error = source.stop()
        finally:  # even when interrupted (Ctrl-C during the join): everyone is told
            self._dispatcher.close_all()
            self._shared.closed = True
            self._shared.lot.unpark_all()
        died = source.take_unreported()  # the wait died; its report had not reached us
        if died is not None:
            self._report_wait_death(died)
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
            self._source.delivered()

    def _on_wait_died(self, error: BaseException) -> None:
        if self._state is _OPEN:
            self._report_wait_death(error)

    def _report_wait_death(self, error: BaseException) -> None:
        """The wait died: close, then tell ``on_wait_error``, or fail. Never raises."""
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
            raise RuntimeError(_NOT_OPEN)
        if threading.get_ident() != self._thread_id:
            raise RuntimeError(
                "a Poller must be used from the thread running the event loop that opened it"
            )

    def _epoch(self, desc: Desc) -> int:
        """Check ``desc`` can be registered; return the epoch to build its registration
        with (the wake-up count *now*, before the ``epoll_ctl(ADD)`` that may wake the
        wait thread)."""
        if not isinstance(desc, Desc):
            raise TypeError(f"expected a Desc (from handle() or new_desc()), got {desc!r}")
        return self._source.wakeups

    def _register(self, reg: Registration) -> None:
        """Register ``reg`` (built with :meth:`_epoch`) for its desc; see :meth:`start`."""
        desc = reg.desc
        fd = desc._fd
        regs = self._dispatcher.regs
        old = regs.get(fd)
        if old is not None and old.desc is desc:
            raise RegisteredError(f"{RegisteredError.default_message} ({desc!r})", fd=fd, desc=desc)
        if not desc._nonblocking:
            try:
                blocking = os.get_blocking(fd)
            except OSError as err:
                raise kernel_error(err, fd, "checking it can be registered") from None
            if blocking:
                set_non_blocking(fd)
        try:
            self._source.interest_list.register(fd, reg.interest)
        except FileExistsError:
            holder = f" by {old.desc!r}" if old is not None else ""
            raise RegisteredError(
                f"{RegisteredError.default_message} (fd {fd} is registered{holder})",
                fd=fd,
                desc=desc,
            ) from None
        except OSError as err:
            raise kernel_error(err, fd, "registering it with epoll") from None
        if old is not None:
            # The kernel accepted the fd, so the old entry was stale: its socket was closed
            # without stop() and the number reused. Its registration ends here.
            old.end()
        regs[fd] = reg

    def _lookup(self, desc: Desc) -> Registration:
        if not isinstance(desc, Desc):
            raise TypeError(f"expected a Desc, got {desc!r}")
        fd = desc._fd
        reg = self._dispatcher.regs.get(fd)
        if reg is None:
            raise NotRegisteredError(
                f"{NotRegisteredError.default_message} ({desc!r})", fd=fd, desc=desc
            )
        if reg.desc is not desc:
            raise NotRegisteredError(
                f"{NotRegisteredError.default_message} ({desc!r}: its fd now belongs "
                f"to {reg.desc!r}; this Desc's registration ended when its fd was reused)",
                fd=fd,
                desc=desc,
            )
        return reg

    def _unregister(self, reg: Registration) -> None:
        fd = reg.desc.fileno()
        del self._dispatcher.regs[fd]
        reg.end()
        try:
            self._source.interest_list.unregister(fd)
        except OSError as err:
            if err.errno not in FORGOTTEN_ERRNOS:
                raise kernel_error(err, fd, "removing it from epoll") from None

    def _rearm(self, reg: Registration, *, quietly: bool = False) -> None:
        fd = reg.desc.fileno()
        try:
            self._source.interest_list.modify(fd, reg.interest)
        except OSError as err:
            if not (quietly and err.errno in FORGOTTEN_ERRNOS):
                raise kernel_error(err, fd, "re-arming it in epoll") from None

    def _rearm_quietly(self, reg: Registration) -> None:
        self._rearm(reg, quietly=True)

    def start(self, desc: Desc, callback: Callable[[Event], object] | None = None) -> None:
        """Register ``desc``; its fd becomes non-blocking. Not a checkpoint.

        With a callback, ``callback(event)`` is called on the event-loop thread,
        synchronously, once per epoll record; it may call :meth:`start`, :meth:`stop` and
        :meth:`resume`. If it raises, the poller closes and the exception propagates out
        of the ``async with`` block. Without a callback, events go to the poller's own
        stream (``async for desc, event in poller``).

        A level-triggered desc (neither ``EDGE_TRIGGERED`` nor ``ONE_SHOT``) with a
        callback is reported on every wake-up for as long as it stays ready: a callback
        that hands the work elsewhere instead of consuming the readiness makes the wait
        spin. Use ``ONE_SHOT`` (and :meth:`resume` when done) or ``EDGE_TRIGGERED`` for
        that; the streams arm level-triggered descs one-shot themselves.

        A stale entry -- a Desc whose socket was closed without :meth:`stop` and whose fd
        number a new socket now has -- is replaced instead of raising RegisteredError.

        Raises:
            ClosedError: the poller is closed.
            RegisteredError: ``desc`` (or another live Desc for its fd) is registered.
            OSError: the kernel refused (EPERM for a regular file, EBADF for a closed
                fd, ...); the message names the fd and nothing stays registered.
            TypeError: ``desc`` is not a Desc, or ``callback`` is not callable, or is an
                ``async def`` function (a callback is called synchronously; use the
                shared stream or :meth:`watch` for tasks).
        """
        self._check_open()
        if callback is None:
            self._register(SharedRegistration(desc, self._epoch(desc), self._shared))
            return
        if not callable(callback):
            raise TypeError(f"callback must be callable, got {callback!r}")
        if inspect.iscoroutinefunction(callback) or inspect.iscoroutinefunction(
            getattr(callback, "__call__", None)  # noqa: B004 (an async __call__, not callability)
        ):
            raise TypeError(
                f"callback {callback!r} is an async function, and a callback is called "
                "synchronously on the event loop (its coroutine would never run); use the "
                "shared stream (start(desc) without a callback, then poller.receive()) or "
                "poller.watch(desc) to handle events in a task"
            )
        self._register(CallbackRegistration(desc, self._epoch(desc), callback))

    def stop(self, desc: Desc) -> None:
        """Unregister ``desc``. Not a checkpoint; safe in ``finally`` blocks.

        Once this returns, no event for ``desc`` is delivered, even one the wait thread had
        already collected. Stopping a desc whose fd was closed already works.

        Stop before closing the socket. epoll watches the open *file*, not the fd number:
        if the socket was ``dup()``-ed (or inherited by a child process) and this fd was
        closed first, the kernel keeps an entry that ``stop()`` can no longer remove;
        the wait then keeps waking for it (``statistics().unclaimed`` grows, and a
        warning is logged once), and a new socket that gets the same fd number may see
        its events. Close every copy to end it.

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

    def modify(self, desc: Desc, event: Event) -> None:
        """Change what a registered ``desc`` watches, in place. Not a checkpoint.

        One ``epoll_ctl(MOD)``: the registration keeps its delivery route (callback,
        ``watch()`` stream or shared stream) and nothing pending is lost; afterwards
        ``desc.event == event``. Like :meth:`resume`, it re-arms a ONE_SHOT desc. Typical
        use: add ``WRITE`` interest while output is queued, drop it once flushed::

            poller.modify(desc, Event.READ | Event.WRITE | Event.EDGE_TRIGGERED)

        Raises:
            ClosedError: the poller is closed.
            NotRegisteredError: ``desc`` is not registered.
            ValueError: ``event`` holds bits a Desc may not hold (the message names them).
            TypeError: ``event`` is not an :class:`Event`.
            OSError: the kernel refused (the fd was closed, ...); the message names the
                fd, and the desc keeps its previous event.
        """
        self._check_open()
        event = check_event(event)
        reg = self._lookup(desc)
        previous = desc._event
        reg.set_event(event)
        try:
            self._source.interest_list.modify(desc._fd, reg.interest)
        except OSError as err:
            reg.set_event(previous)
            raise kernel_error(err, desc._fd, "modifying its epoll events") from None

    def watch(self, desc: Desc) -> EventStream:
        """Return a per-connection :class:`EventStream`, its own async context manager.

        ``async with poller.watch(desc) as events: async for event in events: ...``.
        Entering registers ``desc`` (a checkpoint); leaving the block for any reason,
        cancellation included, stops it. Leaving after the poller closed does nothing.
        Not a checkpoint itself; entering raises what :meth:`start` raises.
        """
        return EventStream(self, desc)

    def statistics(self) -> PollerStatistics:
        """Return a snapshot of the poller's counters (see :class:`PollerStatistics`)."""
        dispatcher = self._dispatcher
        return PollerStatistics(
            registered=len(dispatcher.regs),
            events_delivered=dispatcher.events_delivered,
            batches=dispatcher.batches,
            wakeups=self._source.wakeups,
            ready=len(self._shared),
            unclaimed=dispatcher.unclaimed,
        )

    # ---------------------------------------------------------------- shared stream
    #
    # receive() = receive_nowait() + a checkpoint, as trio's memory channels do; the
    # checkpoint comes before the take, so a cancelled receive() never loses an item.
    # receive_batch() pays that one checkpoint (and one wake-up) for up to max_items.

    def receive_nowait(self) -> tuple[Desc, Event]:
        """Take the next ready desc and its coalesced event without waiting.

        Not a checkpoint.

        Raises:
            trio.WouldBlock: nothing is ready now (the exception is also an
                ``anyio.WouldBlock``).
            trio.EndOfChannel: the poller is closed and every ``POLLER_CLOSED`` has been
                taken (also an ``anyio.EndOfStream``).
            RuntimeError: the poller was never entered.
        """
        item = self._shared.take_one()
        if item is not None:
            return item
        raise self._nothing_ready()

    async def receive(self) -> tuple[Desc, Event]:
        """Wait for the next ready desc and take it with its coalesced event.

        What ``async for desc, event in poller`` gives. Any number of tasks may receive
        at once; each ready desc goes to exactly one of them. A checkpoint (before taking,
        so a cancelled call loses nothing).

        Raises:
            trio.EndOfChannel: the poller is closed and every ``POLLER_CLOSED`` has been
                taken (also an ``anyio.EndOfStream``).
            RuntimeError: the poller was never entered.
        """
        shared = self._shared
        if self._source is UNOPENED:
            await self._never_opened()
        await self._backend.checkpoint()
        while True:
            item = shared.take_one()
            if item is not None:
                return item
            if shared.closed:
                raise EndOfStream
            await shared.lot.park()

    async def receive_batch(self, max_items: int = 64) -> list[tuple[Desc, Event]]:
        """Wait until at least one desc is ready, then take up to ``max_items`` at once.

        Each comes with its coalesced event, in queue order; the list is never empty.
        Each desc still goes to exactly one receiver, whichever method each worker uses.
        One checkpoint for the whole batch, before taking (a cancelled call loses
        nothing): the cheapest way for a worker pool to drain a busy poller.

        Raises:
            ValueError: ``max_items`` is less than 1.
            TypeError: ``max_items`` is not an int.
            trio.EndOfChannel: the poller is closed and every ``POLLER_CLOSED`` has been
                taken (also an ``anyio.EndOfStream``).
            RuntimeError: the poller was never entered.
        """
        if max_items.__class__ is not int and (
            isinstance(max_items, bool) or not isinstance(max_items, int)
        ):
            raise TypeError(f"max_items must be an int, got {max_items!r}")
        if max_items < 1:
            raise ValueError(f"max_items must be at least 1, got {max_items}")
        shared = self._shared
        if self._source is UNOPENED:
            await self._never_opened()
        await self._backend.checkpoint()
        while True:
            items = shared.take(max_items)
            if items:
                return items
            if shared.closed:
                raise EndOfStream
            await shared.lot.park()

    async def _never_opened(self) -> NoReturn:
        """Raise for a receive from a poller that was never entered."""
        if self._state is _NEW:
            raise RuntimeError(_NOT_OPEN)
        await current_backend().checkpoint()  # closed without ever being entered
        raise EndOfStream

    def _nothing_ready(self) -> Exception:
        if self._shared.closed:
            return EndOfStream()
        if self._state is _NEW:
            return RuntimeError(_NOT_OPEN)
        return NothingReady()

    def __aiter__(self) -> Poller:
        return self

    async def __anext__(self) -> tuple[Desc, Event]:
        """Take the next ready desc (and its coalesced event) from the shared stream.

        Any number of tasks may iterate at once; each ready desc goes to exactly one of them.
        When the poller closes, every desc still registered comes once with
        ``POLLER_CLOSED``; then iteration ends in every task. A checkpoint.
        """
        try:
            return await self.receive()
        except EndOfStream:
            raise StopAsyncIteration from None


@final
class EventStream:
    """A per-connection stream of :class:`Event` values, from :meth:`Poller.watch`.

    Its own async context manager: ``async with poller.watch(desc) as events:`` registers
    ``desc`` on entering and stops it on leaving. A receive channel in the trio and anyio
    sense (``isinstance`` of ``trio.abc.ReceiveChannel`` and
    ``anyio.abc.ObjectReceiveStream``), with one consumer. Iterate it with ``async for``,
    or call :meth:`receive`. Events that arrive while the consumer is busy are merged
    (flags OR-ed) into the next item, never lost. A ONE_SHOT (or level-triggered) desc is
    re-armed each time the consumer asks for the next event. When the poller closes the
    stream yields ``POLLER_CLOSED`` once, then ends; it also ends when its desc is
    stopped. Not constructed directly (``final``; ``Watch`` is another name for it).
    """

    __slots__ = ("_closed", "_desc", "_poller", "_receiving", "_reg")

    def __init__(self, poller: Poller, desc: Desc) -> None:
        self._poller = poller
        self._desc = desc
        self._reg: WatchRegistration | None = None  # set by __aenter__
        self._closed = False  # closed by this side: aclose() or leaving the watch block
        self._receiving = False

    async def __aenter__(self) -> EventStream:
        """Register the desc and return this stream. A checkpoint.

        Raises:
            ClosedError, RegisteredError, OSError, TypeError: as :meth:`Poller.start`.
            RuntimeError: this stream was entered before.
        """
        if self._reg is not None:
            raise RuntimeError("a watch() stream can be entered only once")
        poller = self._poller
        poller._check_open()
        backend = poller._backend
        await backend.checkpoint()
        poller._check_open()  # the poller may have closed during the checkpoint
        desc = self._desc
        reg = WatchRegistration(
            desc, poller._epoch(desc), backend.waiter(), edges=not poller._portable
        )
        poller._register(reg)
        self._reg = reg
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the registration (nothing to do if the poller closed). Not a checkpoint."""
        self._close()

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        poller = self._poller
        reg = self._reg
        if reg is None:
            return
        if poller._state is _OPEN and poller._dispatcher.regs.get(reg.desc._fd) is reg:
            poller._unregister(reg)  # ends the registration: wakes a parked receiver
        else:
            reg.lot.unpark_all()

    async def aclose(self) -> None:
        """Stop the registration now, as leaving the ``watch()`` block does. A checkpoint.

        Later :meth:`receive` calls raise ``trio.ClosedResourceError`` (also an
        ``anyio.ClosedResourceError``); ``async for`` ends. A no-op when closed already.
        """
        self._close()
        poller = self._poller
        entered = self._reg is not None  # else the poller may never have been opened
        await (poller._backend if entered else current_backend()).checkpoint()

    def _take(self, reg: WatchRegistration) -> Event | None:
        """The next event, None if none yet; raises once the stream cannot give more."""
        if self._closed:
            raise ClosedStream("this watch() stream was closed")
        mask = reg.take()
        if mask:
            return event_from_mask(mask)
        if not reg.active:
            raise EndOfStream
        return None

    def _ask(self, reg: WatchRegistration) -> None:
        """The consumer asks for the next event: re-arm a one-shot-armed desc."""
        if reg.rearm_due():
            self._poller._rearm(reg)

    def receive_nowait(self) -> Event:
        """Take the next (coalesced) event without waiting. Not a checkpoint.

        Raises:
            trio.WouldBlock: no event now (also an ``anyio.WouldBlock``).
            trio.EndOfChannel: the stream has ended -- ``POLLER_CLOSED`` was taken, or
                the desc was stopped (also an ``anyio.EndOfStream``).
            trio.ClosedResourceError: this stream was closed (also an
                ``anyio.ClosedResourceError``).
            OSError: re-arming a ONE_SHOT desc failed (its fd was closed, ...).
            RuntimeError: the stream was not entered (``async with``) yet.
        """
        reg = self._reg
        if reg is None:
            raise RuntimeError(_NOT_ENTERED)
        self._ask(reg)
        event = self._take(reg)
        if event is None:
            raise NothingReady
        return event

    async def receive(self) -> Event:
        """Wait for the next (coalesced) event. A checkpoint.

        Raises:
            trio.EndOfChannel: the stream has ended -- ``POLLER_CLOSED`` was taken, or
                the desc was stopped (also an ``anyio.EndOfStream``).
            trio.ClosedResourceError: this stream was closed (also an
                ``anyio.ClosedResourceError``), before or during the call.
            trio.BusyResourceError: another task is receiving from this stream (also an
                ``anyio.BusyResourceError``): a ``watch()`` stream has one consumer.
            OSError: re-arming a ONE_SHOT desc failed (its fd was closed, ...).
            RuntimeError: the stream was not entered (``async with``) yet.
        """
        if self._receiving:
            raise BusyReceiver("receiving from this watch() stream")
        reg = self._reg
        if reg is None:
            raise RuntimeError(_NOT_ENTERED)
        self._receiving = True
        try:
            self._ask(reg)
            if reg.pending or reg.closed or not reg.active or self._closed:
                await self._poller._backend.checkpoint()
            else:
                await reg.lot.park()
            while True:
                event = self._take(reg)
                if event is not None:
                    return event
                await reg.lot.park()
        finally:
            self._receiving = False

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event:
        """``receive()``, ending the iteration where the stream ends or was closed."""
        if self._closed:
            raise StopAsyncIteration
        try:
            return await self.receive()
        except (EndOfStream, ClosedStream):
            raise StopAsyncIteration from None


trio.abc.ReceiveChannel.register(EventStream)
anyio.abc.ObjectReceiveStream.register(EventStream)

#: The name ``watch()``'s return value had when the context manager and the stream were
#: two classes; kept so that code naming it (annotations, isinstance) keeps working.
Watch = EventStream
