"""The fault-injection seam: every syscall the wait thread makes goes through :class:`Syscalls`.

Tests (ours and users') replace a field to make ``epoll_wait`` fail, the wake-up write fail,
or closing fail, without patching the standard library. Production code never changes them.
The defaults are the plain calls; nothing here imports an event loop, and nothing touches
``select.epoll`` at import time, so importing works on platforms without epoll.
"""

from __future__ import annotations

import errno
import os
import select
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._errors import unsupported_platform

if TYPE_CHECKING:
    from select import epoll as EpollObject  # noqa: N812 (the stdlib spells it lowercase)
else:
    EpollObject = object

__all__ = ["TEMPORARY_ERRNOS", "EpollObject", "Syscalls", "create_epoll", "create_wake_fd"]

#: errnos after which ``epoll_wait`` is simply retried (as the Go package does).
TEMPORARY_ERRNOS = frozenset(
    {errno.EINTR, errno.EAGAIN, errno.EMFILE, errno.ENFILE, errno.ETIMEDOUT}
)


def _wait(ep: EpollObject, maxevents: int, timeout: float) -> list[tuple[int, int]]:
    # maxevents is passed explicitly: CPython's default caps a wait at FD_SETSIZE - 1 events.
    return ep.poll(timeout, maxevents)


def _wake(fd: int) -> None:
    os.eventfd_write(fd, 1)


def _close_epoll(ep: EpollObject) -> None:
    ep.close()


@dataclass(frozen=True)
class Syscalls:
    """The syscalls of the wait loop, replaceable one by one for fault injection.

    Pass an instance as ``EpollConfig(syscalls=...)`` or ``Config(syscalls=...)``. A
    replacement usually delegates to the default and fails when the test wants it to::

        def flaky_wait(ep, maxevents, timeout):
            if fail_next:
                raise OSError(errno.EIO, "injected")
            return Syscalls().wait(ep, maxevents, timeout)

    Attributes:
        wait: ``wait(epoll, maxevents, timeout) -> [(fd, mask), ...]``; the wait thread
            passes ``timeout=-1`` (block until an event), the threadless mode ``0``.
            Default: ``epoll.poll(timeout, maxevents)``.
        wake: ``wake(eventfd)``; makes a blocked ``wait`` return. Default:
            ``os.eventfd_write(eventfd, 1)``.
        close: ``close(fd)`` for the wake-up eventfd. Default: :func:`os.close`.
        close_epoll: ``close_epoll(epoll)``. Default: ``epoll.close()``.
    """

    wait: Callable[[EpollObject, int, float], list[tuple[int, int]]] = _wait
    wake: Callable[[int], None] = _wake
    close: Callable[[int], None] = os.close
    close_epoll: Callable[[EpollObject], None] = _close_epoll


def create_epoll() -> EpollObject:
    """Create a close-on-exec epoll object, or raise the unsupported-platform error."""
    factory = getattr(select, "epoll", None)
    if factory is None:
        raise unsupported_platform()
    return factory()  # type: ignore[no-any-return]  # EPOLL_CLOEXEC is CPython's default


def create_wake_fd() -> int:
    """Create the close-on-exec, non-blocking eventfd that wakes a blocked wait."""
    return os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
