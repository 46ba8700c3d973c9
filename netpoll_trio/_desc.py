"""Descriptors: turning the objects users hold (sockets, streams, listeners, fds) into a
:class:`Desc` -- an fd plus the events wanted from it.

A Desc *refers* to the connection's own fd. It never duplicates it (at 10k connections a
second fd each would double the process's fd budget) and does not own it: stopping the
registration is the user's job, and must come before closing the connection.

Extracting the fd is duck-typed so that this module imports neither trio nor anyio (the
low-level layer must work with plain threads). An anyio object can only exist if anyio is
already imported, so we look its typed attributes up through ``sys.modules`` rather than
importing anyio ourselves.

This module imports only ``_flags`` and ``_errors``.
"""

from __future__ import annotations

import os
import reprlib
import socket
import sys

from ._errors import NotFilerError, kernel_error
from ._flags import EpollEvent, Event

__all__ = [
    "CONFIG_BITS",
    "Desc",
    "check_event",
    "fileno_of",
    "handle",
    "handle_listener",
    "handle_read",
    "handle_read_once",
    "handle_read_write",
    "handle_write",
    "handle_write_once",
    "new_desc",
    "set_non_blocking",
]

#: The only bits a Desc's event may hold: what to watch, and how.
CONFIG_BITS = Event.READ | Event.WRITE | Event.ONE_SHOT | Event.EDGE_TRIGGERED
_FD_MAX = 2**31 - 1  # an fd is a C int
_short_repr = reprlib.Repr()
_short_repr.maxstring = 60
_short_repr.maxother = 60


def _not_filer(conn: object, why: str) -> NotFilerError:
    return NotFilerError(f"{NotFilerError.default_message} from {_short_repr.repr(conn)}: {why}")


def _check_fd(fd: object, source: object) -> int:
    """Validate ``fd`` (obtained from ``source``) as a plausible file descriptor number."""
    if isinstance(fd, bool) or not isinstance(fd, int):
        raise _not_filer(source, f"expected an int file descriptor, got {type(fd).__name__}")
    if fd < 0:
        hint = " (is it closed?)" if fd == -1 and fd is not source else ""
        raise _not_filer(source, f"file descriptor {fd} is negative{hint}")
    if fd > _FD_MAX:
        raise _not_filer(source, f"file descriptor {fd} is larger than any fd can be")
    return fd


def fileno_of(conn: object) -> int:
    """Return the fd behind ``conn`` without duplicating it.

    Accepted: an ``int`` fd; anything with ``fileno()`` (stdlib and trio sockets, files);
    anything with a ``.socket`` that has ``fileno()`` (``trio.SocketStream``,
    ``trio.SocketListener``); an anyio stream or listener exposing
    ``SocketAttribute.raw_socket`` (TLS and buffered wrappers included); an anyio
    ``MultiListener`` holding exactly one listener.

    Raises:
        NotFilerError: for anything else, naming what was passed and why it was refused.
    """
    if isinstance(conn, socket.socket):  # the common case, first
        fd = conn.fileno()
        return fd if fd >= 0 else _check_fd(fd, conn)
    if isinstance(conn, int) and not isinstance(conn, bool):
        return _check_fd(conn, conn)
    fileno = getattr(conn, "fileno", None)
    if callable(fileno):
        try:
            fd = fileno()
        except Exception as exc:
            raise _not_filer(conn, f"its fileno() raised {exc!r}") from exc
        return _check_fd(fd, conn)
    inner = getattr(conn, "socket", None)
    if inner is not None and callable(getattr(inner, "fileno", None)):
        return fileno_of(inner)
    # Before the typed attributes: an anyio MultiListener merges its children's, so it would
    # answer raw_socket with its first listener's socket and hide the others.
    listeners = getattr(conn, "listeners", None)
    if isinstance(listeners, (list, tuple)):
        if len(listeners) == 1:
            return fileno_of(listeners[0])
        raise _not_filer(
            conn,
            f"it holds {len(listeners)} listeners and a Desc is one fd; make one Desc per listener",
        )
    raw = _anyio_raw_socket(conn)
    if raw is not None:
        return fileno_of(raw)
    raise _not_filer(
        conn,
        f"{type(conn).__name__} is not an int fd, has no fileno(), and is not a "
        "trio or anyio socket stream or listener",
    )


def _anyio_raw_socket(conn: object) -> object | None:
    anyio = sys.modules.get("anyio")
    extra = getattr(conn, "extra", None)
    if anyio is None or not callable(extra):
        return None
    try:
        raw_socket = anyio.abc.SocketAttribute.raw_socket
        return extra(raw_socket, None)  # type: ignore[no-any-return]
    except Exception:
        return None


_CONFIG_VALUE = CONFIG_BITS._value_


def check_event(event: object) -> Event:
    if isinstance(event, EpollEvent):
        # Both are IntFlags with different bit values: EPOLLOUT (0x4) would silently mean
        # ONE_SHOT. Refuse rather than reinterpret.
        raise TypeError(
            f"Desc event must be an Event, got the kernel mask {event!r}; "
            "use Event.READ / Event.WRITE / ... (Event.from_epoll() translates a kernel mask)"
        )
    if isinstance(event, Event):
        value = event._value_  # plain int arithmetic: IntFlag operators cost microseconds
    elif isinstance(event, int) and not isinstance(event, bool):
        value = event
    else:
        raise TypeError(f"Desc event must be an Event, got {_short_repr.repr(event)}")
    if value & ~_CONFIG_VALUE:
        raise ValueError(
            f"a Desc's event may hold only READ, WRITE, ONE_SHOT and EDGE_TRIGGERED; "
            f"{Event(value)} also holds {Event(value & ~_CONFIG_VALUE)}"
        )
    return event if isinstance(event, Event) else Event(value)


def set_non_blocking(fd: int) -> None:
    """Put ``fd`` in non-blocking mode, or raise an OSError that names it."""
    try:
        os.set_blocking(fd, False)
    except OSError as err:
        raise kernel_error(err, fd, "setting it non-blocking") from None


class Desc:
    """A connection's fd and the events wanted from it; what pollers register.

    A Desc neither duplicates nor owns the fd: stop its registration before closing the
    connection. Two Descs for one fd are distinct; registering the second while the first
    is registered raises :class:`~netpoll_trio.RegisteredError`.

    Args:
        fd: the file descriptor, a non-negative ``int``.
        event: a combination of ``READ``, ``WRITE``, ``ONE_SHOT`` and ``EDGE_TRIGGERED``.
            With neither ``READ`` nor ``WRITE`` (allowed, as in Go) only ``HUP`` and
            ``ERR`` are ever reported.
        data: the initial value of :attr:`data`.

    Attributes:
        data: a free slot for the user's own object (the connection, a protocol state
            machine), ``None`` by default, never read by the library -- epoll's
            ``epoll_data``. A worker taking ``(desc, event)`` from the shared stream
            reaches its connection as ``desc.data``, with no fd-to-connection dict.

    Raises:
        NotFilerError: ``fd`` is not a non-negative int.
        ValueError: ``event`` holds any other bit; the message names it.
        TypeError: ``event`` is not an :class:`~netpoll_trio.Event` (an
            :class:`~netpoll_trio.EpollEvent` included: its bits mean other things).
    """

    __slots__ = ("_event", "_fd", "data")

    def __init__(self, fd: int, event: Event, *, data: object = None) -> None:
        self._fd = _check_fd(fd, fd)
        self._event = check_event(event)
        self.data = data

    #: True when the fd is known to be non-blocking already (set by handle*()), so that
    #: registering it can skip a syscall. A class attribute: it costs no memory per Desc.
    _nonblocking = False

    @staticmethod
    def _handled(fd: int, event: Event, data: object) -> Desc:
        """A Desc for values validated already, whose fd handle() made non-blocking."""
        desc = object.__new__(_HandledDesc)
        desc._fd = fd
        desc._event = event
        desc.data = data
        return desc

    def fileno(self) -> int:
        """Return the file descriptor this Desc refers to."""
        return self._fd

    @property
    def event(self) -> Event:
        """The configured events (``READ``, ``WRITE``, ``ONE_SHOT``, ``EDGE_TRIGGERED``)."""
        return self._event

    def __repr__(self) -> str:
        return f"<Desc fd={self._fd} event={self._event}>"


class _HandledDesc(Desc):
    """A Desc made by handle*(): same behaviour, and its fd is non-blocking already.

    Kept on purpose (issue 14 measured the plain alternative): a ``_nonblocking`` slot
    set through a private keyword of ``__init__`` made ``handle_read()`` about 20% slower
    (1.64-1.71 us against 1.35-1.38 us per call) and each Desc 8 bytes larger
    (tracemalloc: 64 B against 56 B), for no change in behaviour.
    """

    __slots__ = ()
    _nonblocking = True


def new_desc(fd: int, event: Event, *, data: object = None) -> Desc:
    """Create a :class:`Desc` for a raw fd (Go's ``NewDesc``); the fd is not touched.

    Raises:
        NotFilerError, ValueError, TypeError: as :class:`Desc`.
    """
    return Desc(fd, event, data=data)


def handle(conn: object, event: Event, *, data: object = None) -> Desc:
    """Create a :class:`Desc` for a connection and make its fd non-blocking (Go's ``Handle``).

    Args:
        conn: an int fd, anything with ``fileno()``, a ``trio.SocketStream`` or
            ``trio.SocketListener``, or an anyio socket stream or listener.
        event: see :class:`Desc`.
        data: stored as :attr:`Desc.data` (typically ``conn`` itself, or your
            connection object).

    Raises:
        NotFilerError: ``conn`` does not lead to a file descriptor (the message says why).
        ValueError: ``event`` holds bits other than the four configuration bits.
        TypeError: ``event`` is not an :class:`~netpoll_trio.Event`.
        OSError: the fd could not be made non-blocking (EBADF for a closed fd, ...).
    """
    event = check_event(event)
    fd = fileno_of(conn)
    if isinstance(conn, socket.socket):
        conn.setblocking(False)  # keeps Python's view of the socket in step with the fd
    else:
        set_non_blocking(fd)
    return Desc._handled(fd, event, data)


# Computed once: IntFlag arithmetic costs more than the rest of a handle_*() call.
_READ = Event.READ | Event.EDGE_TRIGGERED
_READ_ONCE = Event.READ | Event.ONE_SHOT
_WRITE = Event.WRITE | Event.EDGE_TRIGGERED
_WRITE_ONCE = Event.WRITE | Event.ONE_SHOT
_READ_WRITE = Event.READ | Event.WRITE | Event.EDGE_TRIGGERED


def handle_read(conn: object, *, data: object = None) -> Desc:
    """``handle(conn, READ | EDGE_TRIGGERED)``."""
    return handle(conn, _READ, data=data)


def handle_read_once(conn: object, *, data: object = None) -> Desc:
    """``handle(conn, READ | ONE_SHOT)``."""
    return handle(conn, _READ_ONCE, data=data)


def handle_write(conn: object, *, data: object = None) -> Desc:
    """``handle(conn, WRITE | EDGE_TRIGGERED)``."""
    return handle(conn, _WRITE, data=data)


def handle_write_once(conn: object, *, data: object = None) -> Desc:
    """``handle(conn, WRITE | ONE_SHOT)``."""
    return handle(conn, _WRITE_ONCE, data=data)


def handle_read_write(conn: object, *, data: object = None) -> Desc:
    """``handle(conn, READ | WRITE | EDGE_TRIGGERED)``."""
    return handle(conn, _READ_WRITE, data=data)


def handle_listener(listener: object, event: Event, *, data: object = None) -> Desc:
    """Create a :class:`Desc` for a listening socket (Go's ``HandleListener``).

    Accepts the same objects as :func:`handle`, including an anyio ``MultiListener`` that
    holds exactly one listener.
    """
    return handle(listener, event, data=data)
