"""The portable mode: an epoll interest list emulated on the host loop's readiness API.

Where the platform has no epoll (macOS, the BSDs), or with ``Config(portable=True)``, the
:class:`~._poller.Poller` registers nothing with the kernel itself: the host loop watches
each registered fd -- asyncio's ``add_reader``/``add_writer`` (any selector loop, uvloop),
trio's ``wait_readable``/``wait_writable`` in a system task per watched direction (kqueue
on macOS, epoll on Linux, whatever trio uses). :class:`LoopInterestList` takes the same
``register``/``modify``/``unregister`` calls, with the same epoll masks, as the epoll
object of the other two modes, so the poller and the dispatcher do not know the
difference; every readiness the loop reports reaches the poller at once, as a batch of
one record.

How each epoll behaviour is emulated
------------------------------------
* **Level-triggered**: natural -- the loop reports the fd for as long as it is ready.
* **EPOLLONESHOT**: after one report the fd is *disarmed* -- its watchers paused -- until
  the next ``modify()`` (``resume()``, or a stream whose consumer asks for more). Pausing
  at once, not at the next report, matters: readiness the loop saw before the consumer
  re-armed and drained would otherwise be reported after it, stale. A paused trio
  watcher parks its task (no syscall). asyncio pauses lazily (the reader is removed
  only if the fd is reported while paused: no ``epoll_ctl`` for a busy consumer, which
  re-arms before its fd is ready again), so the first report after such a re-arm is
  checked with one zero-timeout ``poll`` and dropped if the fd is no longer ready. A
  desc watching both directions is checked the same way when it is reported, so that
  both come in one record, as epoll gives them.
* **Edge-triggered** cannot be observed through a readiness API. The stream registrations
  arm an edge-triggered desc one-shot in this mode (see :mod:`._dispatch`), so it is
  reported once, then watched again when its consumer is ready for more; a desc still
  ready then is reported again, which costs code that drains until EAGAIN (as
  edge-triggered code must) one extra EAGAIN and loses nothing. An edge-triggered
  *callback* is watched level-triggered: its callback runs again each loop pass while the
  fd stays ready, so it must drain (or use ONE_SHOT and resume()).
* **Masks**: the loop says "readable" or "writable", so a report is EPOLLIN or EPOLLOUT
  alone -- a hang-up or an error shows as readiness, and the read (or write) tells which
  (as the documented pattern reads before it believes a hang-up anyway). A desc watching
  both directions gets one report per direction.
* **Kernel refusals** are checked with ``fstat`` where epoll would refuse: EBADF for a
  closed fd, EPERM for a regular file or directory (always ready), EEXIST for a file
  already registered. A registered fd remembers which open file it was (device, inode),
  so that an fd number reused by a new socket after its old one was closed without
  ``stop()`` is told apart from the same socket registered twice -- epoll tells that
  apart by itself, since closing the old file removes its entry.

No event after ``unregister``: the loop's ``cancel`` forgets the fd synchronously, and a
report is also checked against the watch it was made for.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import stat
import sys
from collections.abc import Callable

from ._backends import Backend, FdWatcherLike

__all__ = ["LoopInterestList"]

_IN = select.EPOLLIN if hasattr(select, "EPOLLIN") else 0x001
_OUT = select.EPOLLOUT if hasattr(select, "EPOLLOUT") else 0x004
_ERR = select.EPOLLERR if hasattr(select, "EPOLLERR") else 0x008
_ONESHOT = 1 << 30  # EPOLLONESHOT, spelled out: select lacks it where epoll does not exist

_poll = getattr(select, "poll", None)
_WINDOWS = sys.platform == "win32"
Report = Callable[[int, int], None]
_logger = logging.getLogger("netpoll_trio")


def _refuse(code: int) -> OSError:
    return OSError(code, os.strerror(code))


#: An fd's identity where the platform does not tell which file it is.
UNKNOWN = 0


def file_identity(fd: int) -> int:
    """The open file behind ``fd`` (device and inode, as one int: no object for the GC to
    track), or UNKNOWN; raises as epoll_ctl would refuse it.

    UNKNOWN where the platform does not tell: macOS and the BSDs fill in no inode for a
    socket, and Windows' sockets are no C-runtime fds at all.
    """
    if _WINDOWS:  # pragma: no cover - not a platform the suite runs on
        return UNKNOWN
    try:
        st = os.fstat(fd)
    except OSError as err:
        raise _refuse(err.errno or errno.EBADF) from None
    if stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode):
        raise _refuse(errno.EPERM)  # epoll's answer; kqueue would call it always ready
    if not st.st_ino:
        return UNKNOWN
    return st.st_dev << 64 | st.st_ino


def _now_ready(fd: int) -> int:
    """The directions ``fd`` is ready for now (EPOLLIN/EPOLLOUT), by a zero-timeout poll."""
    if _poll is None:  # pragma: no cover - Windows has no poll(); select() serves there
        readable, writable, _ = select.select([fd], [fd], [], 0)
        return (_IN if readable else 0) | (_OUT if writable else 0)
    poller = _poll()
    poller.register(fd, select.POLLIN | select.POLLOUT)
    mask = 0
    for _, events in poller.poll(0):
        if events & ~select.POLLOUT:  # POLLIN, or a hang-up or error: readable, as the
            mask |= _IN  # selector loops count it
        if events & ~select.POLLIN:
            mask |= _OUT
    return mask


class _Watch:
    """One registered fd: its interest mask, whether it is armed, the loop's watchers.

    Its bound methods are the loop's callbacks (fewer objects per fd than closures: at
    10k fds every object counts, in memory and in each full GC pass)."""

    __slots__ = (
        "armed",
        "failed",
        "fd",
        "file",
        "interest",
        "owner",
        "reader",
        "recheck",
        "writer",
    )

    def __init__(self, owner: LoopInterestList, fd: int, file: int) -> None:
        self.owner = owner
        self.fd = fd
        self.file = file
        self.interest = 0
        self.armed = True
        self.recheck = False  # a report may be stale: check the fd before believing it
        self.failed = 0  # directions the loop refused to watch: not tried again
        self.reader: FdWatcherLike | None = None
        self.writer: FdWatcherLike | None = None

    def readable(self) -> bool:
        return self.owner._ready(self.fd, self, _IN)

    def writable(self) -> bool:
        return self.owner._ready(self.fd, self, _OUT)

    def cannot_read(self, error: BaseException) -> None:
        self.owner._failed(self.fd, self, error, _IN)

    def cannot_write(self, error: BaseException) -> None:
        self.owner._failed(self.fd, self, error, _OUT)


class LoopInterestList:
    """``register``/``modify``/``unregister`` with epoll masks, on the host loop.

    Args:
        backend: the host loop.
        report: ``report(fd, mask)``, called on the loop thread for each readiness.
    """

    __slots__ = ("_backend", "_identity", "_report", "_watches")

    def __init__(
        self, backend: Backend, report: Report, identity: Callable[[int], int] = file_identity
    ) -> None:
        self._backend = backend
        self._report = report
        self._identity = identity  # replaceable: tests play a platform that cannot tell
        self._watches: dict[int, _Watch] = {}

    def register(self, fd: int, interest: int) -> None:
        """Watch ``fd`` (raises OSError as ``epoll_ctl(ADD)`` would).

        An fd already watched is the same file registered twice (EEXIST, as epoll says)
        or a stale entry -- its file closed without unregister(), the number reused --
        which is replaced. Where the platform cannot tell which (UNKNOWN), it is taken
        for stale: the poller has refused the same Desc twice already.
        """
        file = self._identity(fd)
        old = self._watches.get(fd)
        if old is not None:
            if file != UNKNOWN and old.file == file:
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST))
            _forget(old)
        watch = _Watch(self, fd, file)
        self._watches[fd] = watch
        try:
            self._set(fd, watch, interest)
        except BaseException:
            del self._watches[fd]
            _forget(watch)
            raise

    def modify(self, fd: int, interest: int) -> None:
        """Watch ``fd`` for ``interest`` from now on, re-armed (as ``epoll_ctl(MOD)``)."""
        watch = self._watches.get(fd)
        if watch is None or watch.file != self._identity(fd):
            raise _refuse(errno.ENOENT)  # not registered, or not the file registered
        self._set(fd, watch, interest)

    def unregister(self, fd: int) -> None:
        """Stop watching ``fd`` (raises ENOENT if it is not registered)."""
        watch = self._watches.pop(fd, None)
        if watch is None:
            raise _refuse(errno.ENOENT)
        _forget(watch)

    def close(self) -> None:
        """Stop watching every fd."""
        watches, self._watches = self._watches, {}
        for watch in watches.values():
            _forget(watch)

    # ------------------------------------------------------------------ the loop's side

    def _set(self, fd: int, watch: _Watch, interest: int) -> None:
        watch.interest = interest
        watch.armed = True
        backend = self._backend
        interest_now = interest & ~watch.failed
        if interest_now & _IN:
            if watch.reader is None:
                watch.reader = backend.watch_fd(fd, watch.readable, watch.cannot_read)
            elif watch.reader.resume():
                watch.recheck = True
        elif watch.reader is not None:
            watcher, watch.reader = watch.reader, None
            watcher.cancel()
        if interest_now & _OUT:
            if watch.writer is None:
                watch.writer = backend.watch_fd(
                    fd, watch.writable, watch.cannot_write, writable=True
                )
            elif watch.writer.resume():
                watch.recheck = True
        elif watch.writer is not None:
            watcher, watch.writer = watch.writer, None
            watcher.cancel()

    def _ready(self, fd: int, watch: _Watch, mask: int) -> bool:
        """The loop saw ``fd`` ready (``mask`` is EPOLLIN or EPOLLOUT); returns whether
        to keep watching (False pauses this watcher)."""
        if not watch.armed:
            return False  # the other direction's report disarmed it meanwhile
        interest = watch.interest
        if interest & _ONESHOT:
            other = watch.writer if mask == _IN else watch.reader
            if watch.recheck or other is not None:
                # Checked, once after a lazy re-arm: the loop may have seen this
                # readiness before the consumer re-armed and drained (stale). And with
                # both directions watched, one record for both, as epoll gives.
                watch.recheck = False
                mask = _now_ready(fd) & interest
                if not mask:
                    return True  # stale: no longer ready; still armed
            watch.armed = False  # before the report: a callback's resume() re-arms it
            if other is not None:
                # The other watcher pauses too (else, each time the fd is re-armed, the
                # first direction's report would starve the second).
                other.pause()
        self._report(fd, mask)
        return watch.armed

    def _failed(self, fd: int, watch: _Watch, error: BaseException, direction: int) -> None:
        """The loop could not watch ``fd`` after all (trio checks only when its task first
        waits: an fd epoll refuses, another task already waiting on it). Reported once, as
        EPOLLERR, so that its consumer looks (and logged); that direction of the fd is not
        watched again -- retrying would only fail again, in a loop."""
        if self._watches.get(fd) is not watch:
            return
        if direction == _IN:
            watch.reader = None
        else:
            watch.writer = None
        watch.failed |= direction
        _logger.warning(
            "netpoll: the event loop could not watch fd %d for %s (no more events for it "
            "that way; stop() it): %r",
            fd,
            "reading" if direction == _IN else "writing",
            error,
        )
        if watch.interest & _ONESHOT:
            watch.armed = False
        self._report(fd, _ERR)


def _forget(watch: _Watch) -> None:
    """Cancel the loop's watchers of ``watch`` (they forget its fd synchronously)."""
    reader, writer = watch.reader, watch.writer
    watch.reader = watch.writer = None
    watch.armed = False
    if reader is not None:
        reader.cancel()
    if writer is not None:
        writer.cancel()
