"""Collecting batches: one epoll object, its events buffer, its wake-up count, its close.

Every batch the package ever sees comes out of :meth:`Collector.collect` -- on the wait
thread (:class:`~._wait_thread.WaitThread`, behind both the low-level ``Epoll`` and the
Poller's default mode, blocking with ``timeout=-1``) or on the loop thread
(:class:`~._sources.LoopSource`, the threadless mode, with ``timeout=0``). So each of these
mechanisms is written once, here:

* **The events buffer** starts at 1024 records and doubles, up to 32768, whenever a wait
  fills it: a burst on many connections is drained in few wake-ups, and an idle poller
  with few connections keeps a small buffer. ``maxevents`` is always passed explicitly
  because CPython's default is FD_SETSIZE - 1.
* **Temporary errors** (EINTR, EAGAIN, EMFILE, ENFILE, ETIMEDOUT) are retried: ``collect``
  returns None and the caller simply waits again. A blocking wait pauses a millisecond
  first (not after EINTR), so that an error that persists cannot spin a core; a
  zero-timeout wait is retried when the loop next sees the epoll fd readable. Any other
  error is raised: it is fatal, and the owner closes itself.
* **The epoch.** ``wakeups`` counts returns from ``epoll_wait``. A batch is stamped with
  the count at which it was collected, and a registration with the count at which it was
  made; a record only goes to registrations older than its batch. The low-level ``Epoll``
  and the Poller guard against records of a previous registration of a reused fd number
  with this same count.
* **Closing** goes through ``Syscalls.close_epoll`` (the fault-injection seam) and then
  ``epoll.close()`` whatever that did, so the fd is released even when the seam fails.
"""

from __future__ import annotations

import errno
import time

from ._syscalls import TEMPORARY_ERRNOS, EpollObject, Syscalls, create_epoll

__all__ = ["INITIAL_EVENTS", "MAX_EVENTS", "RETRY_PAUSE", "Collector", "Records"]

INITIAL_EVENTS = 1024
MAX_EVENTS = 32768
#: Pause of a blocking wait before retrying after a temporary error other than EINTR.
RETRY_PAUSE = 0.001

#: One batch: ``(fd, mask)`` records as ``epoll_wait`` returned them.
Records = list[tuple[int, int]]


class Collector:
    """An epoll object (created close-on-exec) and the policy of waiting on it.

    Attributes:
        epoll: the epoll object; registrations are made on it directly.
        wakeups: returns from ``epoll_wait`` so far; the epoch of the latest batch.
        maxevents: the current size of the events buffer.
    """

    __slots__ = ("epoll", "maxevents", "syscalls", "wakeups")

    def __init__(self, syscalls: Syscalls) -> None:
        self.syscalls = syscalls
        self.epoll: EpollObject = create_epoll()
        self.wakeups = 0
        self.maxevents = INITIAL_EVENTS

    def collect(self, timeout: float) -> Records | None:
        """One ``epoll_wait``; None after a temporary error (call again).

        Raises:
            OSError: a fatal error (anything but a temporary errno).
            ValueError: the epoll object is closed.
        """
        maxevents = self.maxevents
        try:
            records = self.syscalls.wait(self.epoll, maxevents, timeout)
        except OSError as err:
            if err.errno not in TEMPORARY_ERRNOS:
                raise
            if timeout and err.errno != errno.EINTR:
                time.sleep(RETRY_PAUSE)
            return None
        self.wakeups += 1
        if len(records) >= maxevents and maxevents < MAX_EVENTS:
            self.maxevents = maxevents * 2
        return records

    def close(self) -> OSError | None:
        """Close the epoll object; return the seam's OSError, if any.

        The fd is released whatever happens; a BaseException from the seam
        (``KeyboardInterrupt``) propagates after that.
        """
        try:
            self.syscalls.close_epoll(self.epoll)
        except OSError as err:
            return err
        finally:
            self.epoll.close()
        return None
