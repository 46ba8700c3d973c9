"""The trio backend (also what anyio's trio backend runs on); see :mod:`._base`.

trio's own primitives, bound once at import: a ``trio.lowlevel.ParkingLot`` for worker
tasks, ``wait_task_rescheduled`` for the one-task waiter, the run token's
``run_sync_soon`` for the hand-off, an instrument for the idle hook and a system task
per ``watch_fd``.
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
_wait_readable = trio.lowlevel.wait_readable
_wait_writable = trio.lowlevel.wait_writable
_spawn_system_task = trio.lowlevel.spawn_system_task
_READER, _WRITER = "netpoll-reader", "netpoll-writer"


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


class _FdWatcher:
    """A system task waiting for one fd in one direction (trio has no reader callbacks;
    system tasks are trio's own tool for library internals, and neither callback raises,
    so this one cannot crash the run).

    Paused, it leaves trio's I/O manager and parks until :meth:`resume`, which costs no
    syscall either way. Its own cancel scope is the only way to stop one waiting task:
    cancelling it runs trio's abort at once, which takes the fd out of trio's I/O manager
    before :meth:`cancel` returns.
    """

    __slots__ = ("_abort", "_cancelled", "_paused", "_scope", "_task")

    def __init__(self) -> None:
        self._scope = trio.CancelScope()
        self._cancelled = False  # scope.cancel_called, without its clock lookup
        self._paused = False
        self._task: Any = None
        self._abort: Any = self._aborted

    async def run(
        self,
        fd: int,
        wait: Callable[[int], Awaitable[None]],
        callback: Callable[[], object],
        on_error: Callable[[BaseException], None],
    ) -> None:
        with self._scope:
            # Checked before each wait: wait_readable touches the fd before it looks at
            # cancellation, and the fd may be closed by now. Checked after it: a task
            # woken by readiness may run only after cancel() (or pause()) returned.
            while not self._cancelled:
                if self._paused:
                    self._task = _current_task()
                    await _wait_task_rescheduled(self._abort)
                    continue
                try:
                    await wait(fd)
                except trio.ClosedResourceError:
                    return  # notify_closing(): its owner is closing the fd; nothing to tell
                except (OSError, trio.BusyResourceError) as exc:
                    if not self._cancelled:
                        on_error(exc)
                    return
                if self._cancelled or self._paused:
                    continue
                if callback() is False:
                    self._paused = True

    def _aborted(self, raise_cancel: Any) -> Any:
        self._task = None
        return _ABORT_SUCCEEDED

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> bool:
        """Watch again; False: no readiness seen while paused can still be reported."""
        self._paused = False
        task = self._task
        if task is not None:
            self._task = None
            _reschedule(task)
        return False

    def cancel(self) -> None:
        self._cancelled = True
        self._scope.cancel()


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

    def check_watch_fd(self) -> None:
        pass  # every trio run loop can wait for an fd

    def watch_fd(
        self,
        fd: int,
        callback: Callable[[], object],
        on_error: Callable[[BaseException], None],
        *,
        writable: bool = False,
    ) -> _FdWatcher:
        watcher = _FdWatcher()
        wait = _wait_writable if writable else _wait_readable
        _spawn_system_task(
            watcher.run,
            fd,
            wait,
            callback,
            on_error,
            name=_WRITER if writable else _READER,  # shared: no string per fd
        )
        return watcher
