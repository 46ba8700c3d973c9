"""The exception hierarchy (Go's ``ErrX`` values become ``XError`` classes, same messages).

Every class carries its Go message by default, so ``str(ClosedError())`` reads exactly like
Go's ``ErrClosed``; callers may pass a longer message that says more (which fd, which object).
Kernel refusals are not wrapped in our own classes: they stay :class:`OSError` with their
errno (so ``except PermissionError`` works), re-raised by :func:`kernel_error` with a message
that names the fd and what was being done to it.

This module imports nothing of ours and no event loop.
"""

from __future__ import annotations

import errno
import sys
from typing import ClassVar

__all__ = [
    "ClosedError",
    "NetpollError",
    "NotFilerError",
    "NotRegisteredError",
    "FORGOTTEN_ERRNOS",
    "RegisteredError",
    "kernel_error",
    "unsupported_platform",
]


class NetpollError(Exception):
    """Base class of every error netpoll_trio raises itself."""

    default_message: ClassVar[str] = "netpoll error"

    def __init__(self, *args: object) -> None:
        super().__init__(*(args or (self.default_message,)))


class ClosedError(NetpollError):
    """The poller (or low-level epoll instance) is closed; the operation was not done."""

    default_message = "poller instance is closed"


class NotFilerError(NetpollError, TypeError):
    """The object given as a connection does not lead to an open file descriptor."""

    default_message = "could not get file descriptor"


class RegisteredError(NetpollError):
    """The file descriptor is already registered in this poller."""

    default_message = "file descriptor is already registered in poller instance"


class NotRegisteredError(NetpollError):
    """The file descriptor was not registered in this poller (or no longer is)."""

    default_message = "file descriptor was not registered before in poller instance"


#: What ``epoll_ctl`` answers for an fd closed since it was registered: the kernel dropped
#: the registration when the fd was closed, so removing it has nothing left to do.
FORGOTTEN_ERRNOS = frozenset({errno.ENOENT, errno.EBADF})


def kernel_error(err: OSError, fd: int, action: str) -> OSError:
    """Return ``err`` re-made so that its message names ``fd`` and ``action``.

    ``OSError(errno, msg)`` picks the matching subclass (``PermissionError`` for EPERM, ...),
    so callers can still catch by kind. The original error is kept as ``__cause__``.
    """
    if err.errno is None:
        return err
    new = OSError(err.errno, f"{err.strerror} (fd {fd}: {action})")
    new.__cause__ = err
    return new


def unsupported_platform() -> NetpollError:
    """The error for creating a poller where ``select.epoll`` does not exist."""
    return NetpollError(
        f"netpoll_trio needs epoll, which this platform ({sys.platform!r}) does not have; "
        "only Linux is supported"
    )
