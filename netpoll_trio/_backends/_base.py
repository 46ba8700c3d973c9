"""The contract between the poller and its host event loop, and the choice of backend.

Everything the poller needs from its loop is one :class:`Backend`, chosen once -- when
the poller opens -- by :func:`current_backend` through sniffio: :mod:`._trio` (which is
also what anyio's trio backend runs on) or :mod:`._asyncio` (plain asyncio, uvloop, or
anyio's asyncio backend). The poller, the dispatcher and the batch sources call these
methods and never branch on the library themselves. ``tests/test_backends.py`` runs the
same behaviour against every backend, so that they cannot drift apart.

What a backend provides:

* ``call_soon_threadsafe(fn, *args)``: run ``fn`` on the loop thread soon; callable from any
  thread; raises RuntimeError once the loop has finished (trio's RunFinishedError is one).
  Inside ``fn`` sniffio reports the backend's library.
* ``checkpoint()``: a schedule point and cancel point (trio's sense).
* ``parking_lot()``: a FIFO of parked tasks, ``await lot.park()`` / ``lot.unpark()`` /
  ``lot.unpark_all()``, where a parked task that is cancelled leaves the lot and never
  swallows a wake-up meant for someone else.
* ``waiter()``: the same interface for at most one parked task (a ``watch()`` stream's
  consumer; the stream refuses a second one with BusyResourceError before it parks).
* ``cancel_scope()``: a cancel scope for the poller's ``async with`` body.
* ``watch_fd(fd, callback, on_error, writable=False) -> watcher``: call ``callback()`` on
  the loop thread each time ``fd`` is readable (writable), until ``watcher.cancel()``.
  Once ``cancel()`` returns the loop has forgotten the fd and ``callback`` is not called
  again, even for readiness already seen; ``cancel`` must run before the fd is closed.
  ``watcher.pause()`` (or ``callback()`` returning False) stops the calls until
  ``watcher.resume()``; ``resume()`` returns True if a call for readiness the loop saw
  *during* the pause may still come (asyncio pauses lazily), False if not (trio). A bad
  fd is refused at once (asyncio) or, where the watching starts later (trio), reported
  once to ``on_error`` and no longer watched. Used by the threadless mode (the epoll fd)
  and the portable mode (every registered fd). ``check_watch_fd()`` raises RuntimeError,
  naming the fix, if this loop cannot watch fds at all (Windows' proactor loop).
* ``idle_hook(fn) -> hook``: ``hook.arm()`` (loop thread) asks for ``fn()`` to be called
  once the loop next runs out of work, i.e. is about to wait for I/O; ``hook.close()``
  detaches it. trio tells exactly (an instrument's ``before_io_wait`` with a non-zero
  timeout); asyncio has no such hook, so it is approximated by two ``call_soon`` hops:
  the tasks a batch woke have each run a step by then. Used by the wait thread to sleep
  while the loop works (see :mod:`.._sources`).

This module imports no event loop; each backend module imports its own at the top.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import sniffio

__all__ = [
    "Backend",
    "CancelScopeLike",
    "FdWatcherLike",
    "IdleHookLike",
    "ParkingLotLike",
    "current_backend",
]


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


class IdleHookLike(Protocol):
    """See ``idle_hook`` in the module docstring."""

    def arm(self) -> None: ...

    def close(self) -> None: ...


class FdWatcherLike(Protocol):
    """See ``watch_fd`` in the module docstring."""

    def pause(self) -> None: ...

    def resume(self) -> bool: ...

    def cancel(self) -> None: ...


class Backend(Protocol):
    """What the poller needs from its host loop; see the module docstring.

    The callables are attributes, bound straight to the library's own functions where
    possible, so that a checkpoint or a hand-off costs no extra Python frame.
    """

    call_soon_threadsafe: Callable[..., object]
    checkpoint: Callable[[], Awaitable[None]]

    def parking_lot(self) -> ParkingLotLike: ...

    def waiter(self) -> ParkingLotLike: ...

    def cancel_scope(self) -> CancelScopeLike: ...

    def watch_fd(
        self,
        fd: int,
        callback: Callable[[], object],
        on_error: Callable[[BaseException], None],
        *,
        writable: bool = False,
    ) -> FdWatcherLike: ...

    def check_watch_fd(self) -> None: ...

    def idle_hook(self, fn: Callable[[], object]) -> IdleHookLike: ...


#: sniffio's name of a library -> the module implementing its backend (as a ``Backend``
#: class named ``Backend`` there), imported the first time that library is seen.
_MODULES = {"trio": "._trio", "asyncio": "._asyncio"}
_classes: dict[str, Callable[[], Backend]] = {}


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
    try:
        make = _classes[name]
    except KeyError:
        module = _MODULES.get(name)
        if module is None:
            raise RuntimeError(f"netpoll_trio supports trio and asyncio, not {name!r}") from None
        make = _classes[name] = importlib.import_module(module, __package__).Backend
    return make()
