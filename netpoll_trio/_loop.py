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
* ``waiter()``: the same interface for exactly one parked task (a watch() stream's
  consumer); cheaper than a lot, which matters once per event.
* ``cancel_scope()``: a cancel scope for the poller's ``async with`` body.
* ``watch_fd(fd, callback) -> cancel``: call ``callback()`` on the loop thread each time
  ``fd`` is readable, until ``cancel()`` (used by the threadless mode; ``cancel`` must run
  before the fd is closed).
* ``idle_hook(fn) -> hook``: ``hook.arm()`` (loop thread) asks for ``fn()`` to be called
  once the loop next runs out of work, i.e. is about to wait for I/O; ``hook.close()``
  detaches it. trio tells exactly (an instrument's ``before_io_wait`` with a non-zero
  timeout); asyncio has no such hook, so it is approximated by two ``call_soon`` hops:
  the tasks a batch woke have each run a step by then. Used by the wait thread to sleep
  while the loop works (see :mod:`._sources`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import sniffio

__all__ = ["Backend", "CancelScopeLike", "IdleHookLike", "ParkingLotLike", "current_backend"]


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

    def watch_fd(self, fd: int, callback: Callable[[], None]) -> Callable[[], None]: ...

    def idle_hook(self, fn: Callable[[], object]) -> IdleHookLike: ...


class _TrioWaiter:
    """One parked trio task, woken by ``unpark``; ``trio.lowlevel`` directly."""

    __slots__ = ("_abort", "_task")

    def __init__(self) -> None:
        self._task: Any = None
        self._abort: Any = self._aborted  # bound once, not once per park

    def __len__(self) -> int:
        return 0 if self._task is None else 1

    async def park(self) -> None:
        import trio

        self._task = trio.lowlevel.current_task()
        await trio.lowlevel.wait_task_rescheduled(self._abort)

    def _aborted(self, raise_cancel: Any) -> Any:
        import trio

        self._task = None
        return trio.lowlevel.Abort.SUCCEEDED

    def unpark(self) -> None:
        task = self._task
        if task is not None:
            import trio

            self._task = None
            trio.lowlevel.reschedule(task)

    unpark_all = unpark


def _trio_idle_hook(fn: Callable[[], object]) -> IdleHookLike:
    import trio

    class TrioIdleHook(trio.abc.Instrument):
        """Calls ``fn`` at the first I/O wait with a timeout after :meth:`arm`: trio waits
        with timeout 0 while tasks are runnable, so a timeout means it ran out of work."""

        def __init__(self) -> None:
            self._armed = False

        def arm(self) -> None:
            self._armed = True

        def before_io_wait(self, timeout: float) -> None:
            if self._armed and timeout > 0:
                self._armed = False
                fn()

        def close(self) -> None:
            with contextlib.suppress(KeyError, RuntimeError):  # gone already, or no run
                trio.lowlevel.remove_instrument(self)

    hook = TrioIdleHook()
    trio.lowlevel.add_instrument(hook)
    return hook


class _TrioBackend:
    def __init__(self) -> None:
        import trio

        self._trio = trio
        self.call_soon_threadsafe: Callable[..., object]
        self.call_soon_threadsafe = trio.lowlevel.current_trio_token().run_sync_soon
        self.checkpoint: Callable[[], Awaitable[None]] = trio.lowlevel.checkpoint

    def parking_lot(self) -> ParkingLotLike:
        return self._trio.lowlevel.ParkingLot()

    def waiter(self) -> ParkingLotLike:
        return _TrioWaiter()

    def cancel_scope(self) -> CancelScopeLike:
        return self._trio.CancelScope()

    def idle_hook(self, fn: Callable[[], object]) -> IdleHookLike:
        return _trio_idle_hook(fn)

    def watch_fd(self, fd: int, callback: Callable[[], None]) -> Callable[[], None]:
        # trio has no reader callbacks: a system task waits (system tasks are trio's own
        # tool for library internals; ``callback`` never raises, so this one cannot crash
        # the run).
        trio = self._trio
        scope = trio.CancelScope()

        async def reader() -> None:
            with scope:
                # Checked first: wait_readable touches the fd before it looks at
                # cancellation, and the poller may have closed it before we ever ran.
                while not scope.cancel_called:
                    try:
                        await trio.lowlevel.wait_readable(fd)
                    except trio.ClosedResourceError:  # notify_closing(): we are done
                        return
                    except OSError:
                        if scope.cancel_called:
                            return
                        # Not ours to report here (a system task must not raise): the
                        # callback's epoll_wait fails the same way and closes the poller.
                    callback()

        trio.lowlevel.spawn_system_task(reader, name=f"netpoll-reader-{fd}")

        def cancel() -> None:
            scope.cancel()
            trio.lowlevel.notify_closing(fd)  # trio forgets the fd before it is closed

        return cancel


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


class _AsyncioIdleHook:
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


async def _asyncio_checkpoint() -> None:
    await asyncio.sleep(0)


def _as_asyncio(fn: Callable[..., object], *args: object) -> None:
    """Run a hand-off on the asyncio loop with sniffio knowing it is asyncio.

    asyncio runs ``call_soon`` callbacks outside any task, where sniffio (and so anyio)
    cannot tell which library is running; user callbacks that call anyio (``start_soon``,
    ``Event.set``...) would fail. trio runs them in its system task, so it needs nothing.
    """
    token = sniffio.current_async_library_cvar.set("asyncio")
    try:
        fn(*args)
    finally:
        sniffio.current_async_library_cvar.reset(token)


class _AsyncioBackend:
    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.call_soon_threadsafe: Callable[..., object] = self._call_soon_threadsafe
        self.checkpoint: Callable[[], Awaitable[None]] = _asyncio_checkpoint

    def _call_soon_threadsafe(self, fn: Callable[..., object], *args: object) -> None:
        self._loop.call_soon_threadsafe(_as_asyncio, fn, *args)

    def parking_lot(self) -> ParkingLotLike:
        return _FutureParkingLot(self._loop)

    def waiter(self) -> ParkingLotLike:
        return _FutureParkingLot(self._loop)

    def watch_fd(self, fd: int, callback: Callable[[], None]) -> Callable[[], None]:
        loop = self._loop
        loop.add_reader(fd, _as_asyncio, callback)

        def cancel() -> None:
            loop.remove_reader(fd)

        return cancel

    def idle_hook(self, fn: Callable[[], object]) -> IdleHookLike:
        return _AsyncioIdleHook(self._loop, fn)

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
