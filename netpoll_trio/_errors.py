"""The exception hierarchy (Go's ``ErrX`` values become ``XError`` classes, same messages).

Every class carries its Go message by default, so ``str(ClosedError())`` reads exactly like
Go's ``ErrClosed``; callers may pass a longer message that says more (which fd, which object).
The errors about a registration also carry what they are about as attributes: ``fd`` and
``desc`` of :class:`RegisteredError` and :class:`NotRegisteredError` (None when unknown).
Kernel refusals are not wrapped in our own classes: they stay :class:`OSError` with their
errno (so ``except PermissionError`` works), re-raised by :func:`kernel_error` with a message
that names the fd and what was being done to it, and the fd as an ``fd`` attribute.

This module imports nothing of ours and no event loop.
"""

from __future__ import annotations

import errno
import sys
from typing import Any, ClassVar

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
    """The poller (or low-level epoll instance) is closed; the operation was not done.

    Deliberately not also a ``trio.ClosedResourceError`` / ``anyio.ClosedResourceError``:
    this module imports no event loop (the low-level :class:`~netpoll_trio.Epoll`, which
    raises it too, works with plain threads), and generic resource-handling code never
    sees it anyway -- it comes only from registration methods (``start``, ``stop``,
    ``resume``, ``modify``, ``add``...), which no such code calls. What that code does
    call, the streams, already speak both libraries' language: receiving from a closed
    poller ends the channel (``trio.EndOfChannel`` and ``anyio.EndOfStream``), and
    receiving from a ``watch()`` stream closed by its own side raises an exception that is
    both ``trio.ClosedResourceError`` and ``anyio.ClosedResourceError``.
    """

    default_message = "poller instance is closed"


class NotFilerError(NetpollError, TypeError):
    """The object given as a connection does not lead to an open file descriptor."""

    default_message = "could not get file descriptor"


class _RegistrationError(NetpollError):
    """An error about one registration, carrying its ``fd`` and ``desc``."""

    fd: int | None
    desc: Any

    def __init__(self, *args: object, fd: int | None = None, desc: object = None) -> None:
        super().__init__(*args)
        self.fd = fd
        self.desc = desc


class RegisteredError(_RegistrationError):
    """The file descriptor is already registered in this poller.

    Attributes:
        fd: the file descriptor, or None when unknown.
        desc: the :class:`~netpoll_trio.Desc` being registered, or None (the low-level
            ``Epoll`` takes plain fds).
    """

    default_message = "file descriptor is already registered in poller instance"


class NotRegisteredError(_RegistrationError):
    """The file descriptor was not registered in this poller (or no longer is).

    Attributes:
        fd: the file descriptor, or None when unknown.
        desc: the :class:`~netpoll_trio.Desc` asked about, or None (the low-level
            ``Epoll`` takes plain fds).
    """

    default_message = "file descriptor was not registered before in poller instance"


#: What ``epoll_ctl`` answers for an fd closed since it was registered: the kernel dropped
#: the registration when the fd was closed, so removing it has nothing left to do.
FORGOTTEN_ERRNOS = frozenset({errno.ENOENT, errno.EBADF})


def kernel_error(err: OSError, fd: int, action: str) -> OSError:
    """Return ``err`` re-made so that its message names ``fd`` and ``action``.

    ``OSError(errno, msg)`` picks the matching subclass (``PermissionError`` for EPERM, ...),
    so callers can still catch by kind; the fd is its ``fd`` attribute (set on the instance:
    a subclass of our own would have to be one per errno class). The original error is
    kept as ``__cause__``.
    """
    if err.errno is None:
        new = err
    else:
        new = OSError(err.errno, f"{err.strerror} (fd {fd}: {action})")
        new.__cause__ = err
    new.fd = fd  # type: ignore[attr-defined]  # OSError instances take attributes
    return new


def unsupported_platform(portable_poller: bool = False) -> NetpollError:
    """The error for needing ``select.epoll`` where it does not exist: the low-level
    ``Epoll`` (Linux-only), or a Poller told ``Config(portable=False)``."""
    if portable_poller:
        return NetpollError(
            f"Config(portable=False) asks for epoll, which this platform ({sys.platform!r}) "
            "does not have; leave portable unset (or True) and the Poller runs here in its "
            "portable mode"
        )
    return NetpollError(
        f"the low-level Epoll is Linux-only: it needs epoll, which this platform "
        f"({sys.platform!r}) does not have; the Poller runs here in its portable mode"
    )
