"""The wait thread: one epoll instance, one wake-up eventfd, one thread blocked in epoll_wait.

Both the low-level :class:`~netpoll_trio.Epoll` and the async :class:`~netpoll_trio.Poller`
own a :class:`WaitThread`; they differ only in what they do with a batch (``on_batch``):
the Epoll runs callbacks right there on this thread, the Poller hands the batch over to its
event loop.

Design notes
------------
* ``epoll_wait`` is called with no timeout: an idle poller wakes zero times per second. The
  only way to make the thread return without I/O is the eventfd registered at creation,
  which is written exactly once, when stopping. We never read it back, so once written it
  stays readable and every later wait returns at once: a stop cannot be missed even if it
  is requested between the "stopping?" check and the next ``epoll_wait``.
* A batch that arrives together with the wake-up record is not delivered: stopping means
  closing, and closing delivers EPOLLCLOSED to every registration instead. So no record is
  ever silently dropped (the Go package's wait loop returned early and dropped the rest of
  the batch without telling anyone).
* Collecting a batch -- the events buffer that doubles, temporary errors retried, the
  wake-up count that stamps each batch with its epoch, closing the epoll object -- is
  :class:`~._collector.Collector`'s, shared with the threadless mode. Here a fatal wait
  error ends the loop and is handed to ``on_exit``: the owner then closes itself, so the
  instance is never half-alive.
* If the wake-up write fails, a second, independent wake-up is used: the write end of a
  fresh pipe is registered for EPOLLOUT, which is ready at once. Both ends are closed with
  the rest, so a failed wake-up neither hangs ``close()`` nor leaks an fd.
"""

from __future__ import annotations

import os
import select
import threading
from collections.abc import Callable

from ._collector import Collector, Records
from ._syscalls import Syscalls, create_wake_fd

__all__ = ["WaitThread"]

#: ``on_batch(records) -> keep_going``; runs on the wait thread.
BatchSink = Callable[[Records], bool]
#: ``on_exit(error)``; runs on the wait thread as its last act. ``error`` is the fatal
#: wait error (or an exception that escaped ``on_batch``), None after a requested stop.
ExitHook = Callable[[BaseException | None], None]


class WaitThread:
    """An epoll instance plus the thread that waits on it and feeds batches to a sink.

    Creating it creates the epoll fd and the eventfd (both close-on-exec); :meth:`start`
    starts the thread; :meth:`request_stop`, :meth:`join` and :meth:`close_fds` take it
    down, in that order. ``collector.wakeups`` is the epoch of the batch being handed
    over.
    """

    def __init__(self, syscalls: Syscalls) -> None:
        self.syscalls = syscalls
        self.collector = collector = Collector(syscalls)
        self.epoll = collector.epoll
        try:
            self.wake_fd = create_wake_fd()
        except BaseException:
            self.epoll.close()
            raise
        try:
            self.epoll.register(self.wake_fd, select.EPOLLIN)
        except BaseException:
            self.epoll.close()
            syscalls.close(self.wake_fd)
            raise
        self._stopping = False
        self._closed = False
        # Held while stopping and while closing the fds: the thread may see ``_stopping``
        # and close the fds itself before the stopper has written the eventfd, and a wake
        # written to a closed (or, worse, reused) fd number must never happen.
        self._lifecycle = threading.Lock()
        self._pipe: tuple[int, int] | None = None
        self._thread: threading.Thread | None = None

    def start(self, on_batch: BatchSink, on_exit: ExitHook) -> None:
        """Start the thread, named ``netpoll-wait-<epfd>`` so users can recognise it."""
        thread = threading.Thread(
            target=self._run,
            args=(on_batch, on_exit),
            name=f"netpoll-wait-{self.epoll.fileno()}",
            daemon=True,
        )
        self._thread = thread
        thread.start()

    @property
    def stopping(self) -> bool:
        """True once a stop was requested (or the fds are closed)."""
        return self._stopping

    def in_thread(self) -> bool:
        """True when called from the wait thread itself."""
        return threading.current_thread() is self._thread

    def request_stop(self) -> None:
        """Make the thread leave its loop; wake it if it is blocked in ``epoll_wait``.

        Raises:
            OSError: both the eventfd write and the fallback pipe failed; the thread may
                then stay blocked until the next I/O event.
        """
        with self._lifecycle:
            if self._stopping:
                return
            self._stopping = True
            if self._closed:
                return  # the thread has finished and closed everything already
            try:
                self.syscalls.wake(self.wake_fd)
            except OSError:
                self._wake_by_pipe()

    def _wake_by_pipe(self) -> None:
        self._pipe = os.pipe2(os.O_CLOEXEC)
        self.epoll.register(self._pipe[1], select.EPOLLOUT)

    def join(self) -> None:
        """Wait for the thread to finish (a no-op on the thread itself)."""
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def close_fds(self) -> OSError | None:
        """Close the eventfd, the fallback pipe and the epoll fd; return the first error.

        Every fd is closed whatever fails: like ``close(2)`` on Linux, a ``Syscalls.close``
        replacement is expected to release the fd even when it raises, and a failing
        ``close_epoll`` is followed by a plain ``epoll.close()`` (which is idempotent).
        A BaseException (``KeyboardInterrupt``) raised by one of them is re-raised once
        every fd is closed.
        """
        with self._lifecycle:
            self._stopping = True  # nobody may wake this thread once its fds are gone
            if self._closed:
                return None
            self._closed = True
            return self._close_fds()

    def _close_fds(self) -> OSError | None:
        errors: list[OSError] = []
        interrupted: BaseException | None = None  # Ctrl-C mid-close: close the rest first
        fds = [self.wake_fd, *(self._pipe or ())]
        self._pipe = None
        for fd in fds:
            try:
                self.syscalls.close(fd)
            except OSError as err:
                errors.append(err)
            except BaseException as exc:
                interrupted = interrupted or exc
        try:
            error = self.collector.close()
        except BaseException as exc:
            interrupted = interrupted or exc
        else:
            if error is not None:
                errors.append(error)
        if interrupted is not None:
            raise interrupted
        return errors[0] if errors else None

    def _run(self, on_batch: BatchSink, on_exit: ExitHook) -> None:
        error: BaseException | None = None
        try:
            error = self._loop(on_batch)
        except BaseException as exc:  # a bug in on_batch: the owner closes itself
            error = exc
        finally:
            on_exit(error)

    def _loop(self, on_batch: BatchSink) -> OSError | None:
        collect = self.collector.collect
        while not self._stopping:
            try:
                records = collect(-1)
            except OSError as err:
                return None if self._stopping else err
            if records is None or self._stopping:
                continue  # a temporary error (retried), or the loop ends
            if records and not on_batch(records):
                return None
        return None
