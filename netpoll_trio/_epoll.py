"""The low-level :class:`Epoll`: a registry of fd -> callback on top of a :class:`WaitThread`.

It needs no event loop: callbacks run on the wait thread, one batch at a time, and every
method may be called from any thread, including from inside a callback.

How the Go package's bugs are avoided
-------------------------------------
1. *A failed add leaves an entry behind.* The registry entry is inserted only after
   ``epoll_ctl(ADD)`` succeeded, under the same lock.
2. *A callback runs after delete() returned.* A batch is dispatched while holding the
   instance's (re-entrant) lock, and each record looks its callback up at dispatch time, not
   at collection time. ``delete()`` takes the same lock, so from another thread it returns
   only once the batch in progress is over, and from inside a callback (same thread,
   re-entrant lock) it removes the entry that later records of the batch would look up.
   An fd deleted and re-added by a callback could still be matched by a record collected
   for the old registration; each entry remembers the wait thread's wake-up count when it
   was added (its epoch, the same mechanism as the Poller's), and a record only goes to
   entries whose epoch is older than its batch. The count is read before the
   ``epoll_ctl(ADD)``, so an entry whose ADD is what woke the thread is older than the
   batch and gets its record (an edge-triggered fd added while already readable has
   exactly one). An add racing with
   the collection itself (another thread adding between ``epoll_wait``'s return and the
   count) may get one record of the fd's previous registration: a spurious event, never a
   lost one.
   The price: a callback must not block waiting for another thread that is calling a
   method of the same instance.
3. *The wake-up record drops the batch.* See :mod:`._wait_thread`: a batch that comes with the
   stop signal is not delivered, and every registration gets EPOLLCLOSED instead.
4. *close() from inside a callback deadlocks.* It cannot join the thread it runs on, so it
   marks the instance closed and returns at once; the wait thread finishes the close (fds
   closed, EPOLLCLOSED to every remaining callback) as soon as the current callback returns.
   Later records of the batch are not delivered.
5. *A dead wait loop leaves a half-alive instance.* When ``epoll_wait`` fails for good, the
   wait thread closes the instance itself: fds closed, EPOLLCLOSED to every callback, then
   ``on_wait_error`` (or a log line), and every later call raises ClosedError.
6. *Failed wake-up or close leaks.* See :mod:`._wait_thread`: a fallback wake-up, and every fd
   closed whatever fails; the first error is raised by ``close()``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

from ._desc import fileno_of
from ._errors import (
    FORGOTTEN_ERRNOS,
    ClosedError,
    NotRegisteredError,
    RegisteredError,
    kernel_error,
)
from ._flags import EpollEvent, epoll_event_of
from ._syscalls import Syscalls
from ._wait_thread import WaitThread

__all__ = ["Epoll", "EpollCallback", "EpollConfig", "epoll_create", "log_wait_error", "logger"]

logger = logging.getLogger("netpoll_trio")

#: A low-level callback: called on the wait thread with the raw event mask.
EpollCallback = Callable[[EpollEvent], object]


def log_wait_error(err: BaseException) -> None:
    """The default ``on_wait_error``: one log line through :mod:`logging`."""
    logger.error("netpoll: wait loop error: %s", err)


@dataclass(frozen=True)
class EpollConfig:
    """Options for :class:`Epoll` (Go's ``EpollConfig``).

    Attributes:
        on_wait_error: called (on the wait thread) with the OSError when ``epoll_wait``
            fails for a reason other than a temporary one; the instance is closed by then.
            Default: log ``"netpoll: wait loop error: <err>"`` with :mod:`logging`.
        syscalls: the fault-injection seam; see :class:`~netpoll_trio.Syscalls`.
    """

    on_wait_error: Callable[[OSError], object] | None = None
    syscalls: Syscalls = field(default_factory=Syscalls)


class _Entry:
    __slots__ = ("callback", "epoch")

    def __init__(self, callback: EpollCallback, epoch: int) -> None:
        self.callback = callback
        self.epoch = epoch


class Epoll:
    """An epoll instance whose wait loop runs in a dedicated thread (Go's ``Epoll``).

    Linux-only: it *is* epoll (elsewhere, use :class:`Poller`, which has a portable mode).
    Callbacks get the raw :class:`EpollEvent` mask and run on the wait thread, one batch at
    a time; an :class:`Exception` from a callback is logged and the loop goes on. A
    :class:`BaseException` that is not an ``Exception`` (``SystemExit``,
    ``KeyboardInterrupt``) closes the instance instead: every callback still registered,
    the raising one included, gets ``EPOLLCLOSED`` exactly once, then the exception is
    re-raised -- by :meth:`close` when another thread is closing the instance, else on the
    wait thread (where :func:`threading.excepthook` reports it). The same holds for a
    callback raising it on ``EPOLLCLOSED``. Usable as a context manager; leaving the block
    closes the instance.

    Args:
        config: options; see :class:`EpollConfig`.

    Raises:
        NetpollError: the platform has no epoll (Linux-only).
        OSError: the kernel refused to create the epoll fd or the eventfd.
    """

    def __init__(self, config: EpollConfig | None = None) -> None:
        self._config = config if config is not None else EpollConfig()
        self._lock = threading.RLock()
        self._entries: dict[int, _Entry] = {}
        self._closed = False
        self._joined = False  # close() is waiting for the thread: it re-raises failures
        self._close_error: OSError | None = None
        self._failure: BaseException | None = None
        self._waiter = WaitThread(self._config.syscalls)
        self._collector = self._waiter.collector  # its wake-up count is each entry's epoch
        self._waiter.start(self._dispatch, self._on_exit)

    @property
    def closed(self) -> bool:
        """True once the instance is closed (by :meth:`close` or a dead wait loop)."""
        return self._closed

    def add(self, fd: int, events: EpollEvent, callback: EpollCallback) -> None:
        """Register ``fd`` for ``events``; ``callback(mask)`` runs on the wait thread.

        Raises:
            ClosedError: the instance is closed.
            RegisteredError: ``fd`` is registered already.
            OSError: the kernel refused (EPERM for a regular file, EBADF, ...); the message
                names the fd and no entry is left behind.
            TypeError: ``callback`` is not callable (NotFilerError if ``fd`` is no fd).
        """
        fd = fileno_of(fd)
        if not callable(callback):
            raise TypeError(f"callback must be callable, got {callback!r}")
        with self._lock:
            if self._closed:
                raise ClosedError()
            if fd in self._entries:
                raise RegisteredError(f"{RegisteredError.default_message} (fd {fd})", fd=fd)
            # The epoch is read before the ADD: the ADD itself may wake the thread, whose
            # count would then already include the batch holding this fd's first record.
            epoch = self._collector.wakeups
            try:
                self._waiter.epoll.register(fd, int(events))
            except OSError as err:
                raise kernel_error(err, fd, "adding it to epoll") from None
            self._entries[fd] = _Entry(callback, epoch)

    def modify(self, fd: int, events: EpollEvent) -> None:
        """Change the events ``fd`` is registered for (re-arms a one-shot registration).

        Raises:
            ClosedError: the instance is closed.
            NotRegisteredError: ``fd`` is not registered.
            OSError: the kernel refused; the message names the fd.
        """
        fd = fileno_of(fd)
        with self._lock:
            if self._closed:
                raise ClosedError()
            if fd not in self._entries:
                raise NotRegisteredError(f"{NotRegisteredError.default_message} (fd {fd})", fd=fd)
            try:
                self._waiter.epoll.modify(fd, int(events))
            except OSError as err:
                raise kernel_error(err, fd, "modifying its epoll events") from None

    def delete(self, fd: int) -> None:
        """Unregister ``fd``. Once this returns, its callback is never called again.

        Deleting an fd that was closed already works (the kernel forgot it on close).

        Raises:
            ClosedError: the instance is closed.
            NotRegisteredError: ``fd`` is not registered.
            OSError: the kernel refused for another reason; the entry is removed anyway.
        """
        fd = fileno_of(fd)
        with self._lock:
            if self._closed:
                raise ClosedError()
            if self._entries.pop(fd, None) is None:
                raise NotRegisteredError(f"{NotRegisteredError.default_message} (fd {fd})", fd=fd)
            try:
                self._waiter.epoll.unregister(fd)
            except OSError as err:
                if err.errno not in FORGOTTEN_ERRNOS:
                    raise kernel_error(err, fd, "deleting it from epoll") from None

    def close(self) -> None:
        """Stop and join the wait thread, close the fds, then call every still-registered
        callback once with ``EPOLLCLOSED``.

        Called from inside a callback, it marks the instance closed and returns at once; the
        wait thread completes the close as soon as that callback returns (it cannot join
        itself), and no later record of the batch is delivered.

        Raises:
            ClosedError: the instance was closed already.
            OSError: closing an fd failed; every fd is closed and every callback notified
                all the same.
            BaseException: what a callback raised on ``EPOLLCLOSED`` that is not an
                ``Exception`` (``SystemExit``...), after every callback was notified.
        """
        in_thread = self._waiter.in_thread()
        with self._lock:
            if self._closed:
                raise ClosedError()
            self._closed = True
            self._joined = not in_thread
        self._waiter.request_stop()
        if in_thread:
            return
        self._waiter.join()
        failure, self._failure = self._failure, None
        error, self._close_error = self._close_error, None
        if failure is not None:
            raise failure
        if error is not None:
            raise error

    def __enter__(self) -> Epoll:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._closed:
            self.close()
        else:
            self._waiter.join()

    def _dispatch(self, records: list[tuple[int, int]]) -> bool:
        epoch = self._collector.wakeups  # counted as this batch's epoll_wait returned
        with self._lock:
            entries = self._entries
            for fd, mask in records:
                if self._closed:
                    return False
                entry = entries.get(fd)
                if entry is None or entry.epoch >= epoch:  # added after the collection
                    continue
                try:
                    entry.callback(epoll_event_of(mask))
                except Exception:
                    logger.exception("netpoll: callback for fd %d raised", fd)
            return not self._closed

    def _on_exit(self, error: BaseException | None) -> None:
        """The wait thread's last act: close, notify every callback, report failures.

        ``error``: a fatal ``epoll_wait`` error (reported to ``on_wait_error``), or a
        BaseException a callback raised during a batch (re-raised, see the class).
        """
        with self._lock:
            died = not self._closed
            self._closed = True
            joined = self._joined
            callbacks = [entry.callback for entry in self._entries.values()]
            self._entries.clear()
        self._close_error = self._waiter.close_fds()
        failure = error if died and not isinstance(error, (OSError, type(None))) else None
        for callback in callbacks:
            try:
                callback(EpollEvent.EPOLLCLOSED)
            except Exception:
                logger.exception("netpoll: callback raised on EPOLLCLOSED")
            except BaseException as exc:  # the others are still notified, then it surfaces
                failure = failure or exc
        if died and isinstance(error, OSError):
            self._report(error)
        if failure is not None:
            if joined:
                self._failure = failure  # close() is joining this thread: it re-raises
            else:
                logger.error("netpoll: a callback raised %r; the instance is closed", failure)
                raise failure

    def _report(self, error: OSError) -> None:
        handler = self._config.on_wait_error
        if handler is None:
            log_wait_error(error)
            return
        try:
            handler(error)
        except Exception:
            logger.exception("netpoll: on_wait_error raised")


def epoll_create(config: EpollConfig | None = None) -> Epoll:
    """Create an :class:`Epoll` (Go's ``EpollCreate``)."""
    return Epoll(config)
