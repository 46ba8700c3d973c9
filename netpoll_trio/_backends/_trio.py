"""The trio backend (also what anyio's trio backend runs on); see :mod:`._base`.

trio's own primitives, bound once at import: a ``trio.lowlevel.ParkingLot`` for worker
tasks, ``wait_task_rescheduled`` for the one-task waiter, the run token's
``run_sync_soon`` for the hand-off, an instrument for the idle hook and a system task
for ``watch_fd``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from ._base import CancelScopeLike, ParkingLotLike

__all__ = ["Backend"]

_current_task = trio.lowlevel.current_task
_wait_task_rescheduled = trio.lowlevel.wait_task_rescheduled
_reschedule = trio.lowlevel.reschedule
_ABORT_SUCCEEDED = trio.lowlevel.Abort.SUCCEEDED


class _Waiter:
    """One parked trio task, woken by ``unpark``; ``trio.lowlevel`` directly."""

    __slots__ = ("_abort", "_task")

    def __init__(self) -> None:
        self._task: Any = None
        self._abort: Any = self._aborted  # bound once, not once per park

    def __len__(self) -> int:
        return 0 if self._task is None else 1

    async def park(self) -> None:
        self._task = _current_task()
        await _wait_task_rescheduled(self._abort)

    def _aborted(self, raise_cancel: Any) -> Any:
        self._task = None
        return _ABORT_SUCCEEDED

    def unpark(self) -> None:
        task = self._task
        if task is not None:
            self._task = None
            _reschedule(task)

    unpark_all = unpark


class _IdleHook(trio.abc.Instrument):
    """Calls ``fn`` at the first I/O wait with a timeout after :meth:`arm`: trio waits
    with timeout 0 while tasks are runnable, so a timeout means it ran out of work."""

    def __init__(self, fn: Callable[[], object]) -> None:
        self._fn = fn
        self._armed = False

    def arm(self) -> None:
        self._armed = True

    def before_io_wait(self, timeout: float) -> None:
        if self._armed and timeout > 0:
            self._armed = False
            self._fn()

    def close(self) -> None:
        with contextlib.suppress(KeyError, RuntimeError):  # gone already, or no run
            trio.lowlevel.remove_instrument(self)


class Backend:
    """The poller's view of the running trio loop."""

    def __init__(self) -> None:
        self.call_soon_threadsafe: Callable[..., object]
        self.call_soon_threadsafe = trio.lowlevel.current_trio_token().run_sync_soon
        self.checkpoint: Callable[[], Awaitable[None]] = trio.lowlevel.checkpoint

    def parking_lot(self) -> ParkingLotLike:
        return trio.lowlevel.ParkingLot()

    def waiter(self) -> ParkingLotLike:
        return _Waiter()

    def cancel_scope(self) -> CancelScopeLike:
        return trio.CancelScope()

    def idle_hook(self, fn: Callable[[], object]) -> _IdleHook:
        hook = _IdleHook(fn)
        trio.lowlevel.add_instrument(hook)
        return hook

    def watch_fd(self, fd: int, callback: Callable[[], None]) -> Callable[[], None]:
        # trio has no reader callbacks: a system task waits (system tasks are trio's own
        # tool for library internals; ``callback`` never raises, so this one cannot crash
        # the run).
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
