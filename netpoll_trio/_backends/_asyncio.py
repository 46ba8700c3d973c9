"""The asyncio backend (plain asyncio, uvloop, anyio's asyncio backend); see :mod:`._base`.

asyncio has no parking lot, no one-task waiter and no idle hook of its own: the first two
are futures in a deque, the third two ``call_soon`` hops. The cancel scope is anyio's,
which works in any asyncio task.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable

import anyio
import sniffio

from ._base import CancelScopeLike, ParkingLotLike

__all__ = ["Backend"]

_library = sniffio.current_async_library_cvar


class _FutureParkingLot:
    """A ``trio.lowlevel.ParkingLot`` look-alike on asyncio futures.

    asyncio can cancel a task whose future already has its result (the wake-up arrived,
    the task had not run yet); such a task passes the wake-up on before re-raising, so an
    unpark is never lost to a cancelled waiter. It also serves as the one-task waiter:
    a deque of at most one future costs about what a dedicated slot would.
    """

    __slots__ = ("_loop", "_waiters")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._waiters: deque[asyncio.Future[None]] = deque()

    def __len__(self) -> int:
        return len(self._waiters)

    async def park(self) -> None:
        future = self._loop.create_future()
        self._waiters.append(future)
        try:
            await future
        except BaseException:
            if not future.cancelled():
                self.unpark()  # woken, then cancelled before running: pass the wake-up on
            elif future in self._waiters:  # unpark() may have dropped it already
                self._waiters.remove(future)
            raise

    def unpark(self) -> None:
        waiters = self._waiters
        while waiters:
            future = waiters.popleft()
            if not future.done():
                future.set_result(None)
                return

    def unpark_all(self) -> None:
        waiters, self._waiters = self._waiters, deque()
        for future in waiters:
            if not future.done():
                future.set_result(None)


class _IdleHook:
    """Two ``call_soon`` hops: the first runs after the callbacks and task steps already
    scheduled (the tasks the batch woke), the second after what those scheduled."""

    __slots__ = ("_fn", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, fn: Callable[[], object]) -> None:
        self._loop = loop
        self._fn = fn

    def arm(self) -> None:
        self._loop.call_soon(self._hop)

    def _hop(self) -> None:
        self._loop.call_soon(self._fn)

    def close(self) -> None:
        pass  # nothing attached; a late hop only releases a lock nobody waits on


async def _checkpoint() -> None:
    await asyncio.sleep(0)


def _as_asyncio(fn: Callable[..., object], *args: object) -> None:
    """Run a hand-off on the asyncio loop with sniffio knowing it is asyncio.

    asyncio runs ``call_soon`` callbacks outside any task, where sniffio (and so anyio)
    cannot tell which library is running; user callbacks that call anyio (``start_soon``,
    ``Event.set``...) would fail. trio runs them in its system task, so it needs nothing.
    """
    token = _library.set("asyncio")
    try:
        fn(*args)
    finally:
        _library.reset(token)


class Backend:
    """The poller's view of the running asyncio loop."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.call_soon_threadsafe: Callable[..., object] = self._call_soon_threadsafe
        self.checkpoint: Callable[[], Awaitable[None]] = _checkpoint

    def _call_soon_threadsafe(self, fn: Callable[..., object], *args: object) -> None:
        self._loop.call_soon_threadsafe(_as_asyncio, fn, *args)

    def parking_lot(self) -> ParkingLotLike:
        return _FutureParkingLot(self._loop)

    def waiter(self) -> ParkingLotLike:
        return _FutureParkingLot(self._loop)

    def cancel_scope(self) -> CancelScopeLike:
        # anyio's scope works in any asyncio task (anyio's backend or not); writing our own
        # would duplicate its careful cancel/uncancel bookkeeping.
        return anyio.CancelScope()

    def idle_hook(self, fn: Callable[[], object]) -> _IdleHook:
        return _IdleHook(self._loop, fn)

    def watch_fd(
        self,
        fd: int,
        callback: Callable[[], object],
        on_error: Callable[[BaseException], None],
        *,
        writable: bool = False,
    ) -> _FdWatcher:
        # on_error is never called: asyncio refuses a bad fd here, synchronously.
        return _FdWatcher(self._loop, fd, callback, writable)

    def check_watch_fd(self) -> None:
        loop = self._loop
        if type(loop).add_reader is asyncio.BaseEventLoop.add_reader:
            raise RuntimeError(_NO_READERS.format(loop=type(loop).__name__))


_NO_READERS = (
    "this asyncio event loop ({loop}) cannot watch file descriptors (it has no "
    "add_reader, like Windows' ProactorEventLoop), which netpoll_trio's portable mode "
    "needs: run on a selector loop, e.g. asyncio.run(main(), "
    "loop_factory=asyncio.SelectorEventLoop) on Python 3.12+, or "
    "asyncio.set_event_loop_policy(asyncio.WindowsSelectorEventLoopPolicy()) before asyncio.run()"
)


class _FdWatcher:
    """``add_reader`` (``add_writer``) for one fd.

    Pausing is lazy: the reader stays, and only a readiness that arrives while paused
    removes it (an ``epoll_ctl`` each way, a new handle, and -- under uvloop -- a window
    in which a closed fd would abort libuv, all saved when the pause is short, as it is
    for a busy consumer). :meth:`resume` therefore tells whether readiness seen during the
    pause may still be queued in this loop pass (True: it was never removed).
    """

    __slots__ = ("_callback", "_fd", "_loop", "_paused", "_watching", "_writable")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        fd: int,
        callback: Callable[[], object],
        writable: bool,
    ) -> None:
        self._loop = loop
        self._fd = fd
        self._callback = callback
        self._writable = writable
        self._add()
        self._watching = True
        self._paused = False

    def _add(self) -> None:
        loop = self._loop
        add = loop.add_writer if self._writable else loop.add_reader
        add(self._fd, _as_asyncio, self._ready)

    def _ready(self) -> None:
        if self._paused:
            self._stop_watching()  # still ready while paused: now the loop must forget it
        elif self._callback() is False:
            self._paused = True

    def _stop_watching(self) -> None:
        if self._watching:
            self._watching = False
            # A closed fd is forgotten all the same: the selector drops it even when the
            # kernel refuses, and raises only afterwards.
            loop = self._loop
            remove = loop.remove_writer if self._writable else loop.remove_reader
            with contextlib.suppress(OSError, ValueError):
                remove(self._fd)

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> bool:
        self._paused = False
        if self._watching:
            return True
        self._add()
        self._watching = True
        return False

    def cancel(self) -> None:
        self._paused = True
        self._stop_watching()
