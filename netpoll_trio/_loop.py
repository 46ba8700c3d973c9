"""The one seam to the host event loop.

Everything the poller needs from its loop is here, chosen once (when the poller opens) by
:func:`current_backend` through sniffio: trio directly (which is also what anyio's trio
backend runs on), or asyncio (plain, uvloop, or anyio's asyncio backend). The poller and
dispatcher call these methods and never branch on the library themselves.

What a backend provides:

* ``call_soon_threadsafe(fn, *args)``: run ``fn`` on the loop thread soon; callable from any
  thread; raises RuntimeError once the loop has finished (trio's RunFinishedError is one).
* ``checkpoint()``: a schedule point and cancel point (trio's sense).
* ``parking_lot()``: a FIFO of parked tasks, ``await lot.park()`` / ``lot.unpark()`` /
  ``lot.unpark_all()``, where a parked task that is cancelled leaves the lot and never
  swallows a wake-up meant for someone else.
* ``cancel_scope()``: a cancel scope for the poller's ``async with`` body.
* ``wait_readable(fd)``: wait until ``fd`` is readable (used by the threadless mode).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import sniffio

__all__ = ["Backend", "CancelScopeLike", "ParkingLotLike", "current_backend"]


class ParkingLotLike(Protocol):
    """The subset of ``trio.lowlevel.ParkingLot`` the poller uses."""

    def park(self) -> Awaitable[None]: ...

    def unpark(self) -> object: ...

    def unpark_all(self) -> object: ...

    def __len__(self) -> int: ...


class CancelScopeLike(Protocol):
    """The subset of a trio/anyio cancel scope the poller uses."""

    def __enter__(self) -> object: ...

    def __exit__(self, *exc_info: Any) -> bool | None: ...

    def cancel(self) -> None: ...


class Backend(Protocol):
    """What the poller needs from its host loop; see the module docstring.

    The callables are attributes, bound straight to the library's own functions where
    possible, so that a checkpoint or a hand-off costs no extra Python frame.
    """

    name: str
    call_soon_threadsafe: Callable[..., object]
    checkpoint: Callable[[], Awaitable[None]]
    wait_readable: Callable[[int], Awaitable[None]]

    def parking_lot(self) -> ParkingLotLike: ...

    def cancel_scope(self) -> CancelScopeLike: ...


class _TrioBackend:
    name = "trio"

    def __init__(self) -> None:
        import trio

        self._trio = trio
        self.call_soon_threadsafe: Callable[..., object]
        self.call_soon_threadsafe = trio.lowlevel.current_trio_token().run_sync_soon
        self.checkpoint: Callable[[], Awaitable[None]] = trio.lowlevel.checkpoint
        self.wait_readable: Callable[[int], Awaitable[None]] = trio.lowlevel.wait_readable

    def parking_lot(self) -> ParkingLotLike:
        return self._trio.lowlevel.ParkingLot()

    def cancel_scope(self) -> CancelScopeLike:
        return self._trio.CancelScope()


class _FutureParkingLot:
    """A ``trio.lowlevel.ParkingLot`` look-alike on asyncio futures.

    asyncio can cancel a task whose future already has its result (the wake-up arrived,
    the task had not run yet); such a task passes the wake-up on before re-raising, so an
    unpark is never lost to a cancelled waiter.
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
            if future.cancelled():
                self._waiters.remove(future)
            else:
                self.unpark()
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


async def _asyncio_checkpoint() -> None:
    await asyncio.sleep(0)


class _AsyncioBackend:
    name = "asyncio"

    def __init__(self) -> None:
        self._loop = loop = asyncio.get_running_loop()
        self.call_soon_threadsafe: Callable[..., object] = loop.call_soon_threadsafe
        self.checkpoint: Callable[[], Awaitable[None]] = _asyncio_checkpoint
        self.wait_readable: Callable[[int], Awaitable[None]] = self._wait_readable

    async def _wait_readable(self, fd: int) -> None:
        future = self._loop.create_future()
        self._loop.add_reader(fd, future.set_result, None)
        try:
            await future
        finally:
            self._loop.remove_reader(fd)

    def parking_lot(self) -> ParkingLotLike:
        return _FutureParkingLot(self._loop)

    def cancel_scope(self) -> CancelScopeLike:
        # anyio's scope works in any asyncio task (anyio's backend or not); writing our own
        # would duplicate its careful cancel/uncancel bookkeeping.
        import anyio

        return anyio.CancelScope()


def current_backend() -> Backend:
    """Return the backend for the async library running in this thread.

    Raises:
        RuntimeError: no supported async library is running here.
    """
    try:
        name = sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        raise RuntimeError(
            "netpoll_trio's Poller must be used inside trio or asyncio (directly or via anyio)"
        ) from None
    if name == "trio":
        return _TrioBackend()
    if name == "asyncio":
        return _AsyncioBackend()
    raise RuntimeError(f"netpoll_trio supports trio and asyncio, not {name!r}")
