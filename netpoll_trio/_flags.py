"""Event flags: the user-facing :class:`Event` and the kernel-facing :class:`EpollEvent`.

Both are :class:`enum.IntFlag` with the exact values of the Go package, so masks can be
compared with numbers taken from its documentation. The two mappings between them are
tables, not chains of ``if``; :func:`event_from_mask` memoises the kernel-to-user direction
because it runs once per delivered event on the hot path, where building an ``IntFlag``
member from an ``int`` costs more than the rest of the delivery.

This module imports nothing of ours and no event loop.
"""

from __future__ import annotations

import enum

__all__ = ["EPOLLCLOSED", "EpollEvent", "Event", "epoll_event_of", "event_from_mask"]


def _flag_names(cls: type[enum.IntFlag], value: int) -> str:
    """Spell ``value`` as ``A|B|0x100``: known members in value order, then leftover bits."""
    names = []
    rest = value
    for member in cls.__members__.values():
        bit = int(member)
        if value & bit:
            names.append(member.name or hex(bit))
            rest &= ~bit
    if rest:
        names.append(hex(rest))
    return "|".join(names) if names else "0"


class EpollEvent(enum.IntFlag):
    """Bit mask of ``epoll_event.events``, as the kernel (and ``select.epoll``) uses it.

    ``EPOLLCLOSED`` is the library's own marker, never reported by the kernel: it is what a
    low-level :class:`~netpoll_trio.Epoll` callback receives when its instance closes.
    """

    EPOLLIN = 0x1
    EPOLLPRI = 0x2
    EPOLLOUT = 0x4
    EPOLLERR = 0x8
    EPOLLHUP = 0x10
    EPOLLCLOSED = 0x20
    EPOLLRDHUP = 0x2000
    EPOLLONESHOT = 0x40000000
    EPOLLET = 0x80000000

    def __str__(self) -> str:
        return _flag_names(EpollEvent, int(self))

    def __repr__(self) -> str:
        return f"<EpollEvent.{self}: {int(self):#x}>"


class Event(enum.IntFlag):
    """What a descriptor is interested in, and what happened to it.

    ``READ``, ``WRITE``, ``ONE_SHOT`` and ``EDGE_TRIGGERED`` configure a
    :class:`~netpoll_trio.Desc`; ``HUP``, ``READ_HUP``, ``WRITE_HUP`` and ``ERR`` may
    additionally be reported to a callback or stream, and ``POLLER_CLOSED`` is delivered,
    alone, exactly once to every registration still alive when its poller closes.
    Combined flags print readably: ``str(Event.READ | Event.HUP) == "READ|HUP"``.
    """

    READ = 0x1
    WRITE = 0x2
    ONE_SHOT = 0x4
    EDGE_TRIGGERED = 0x8
    HUP = 0x10
    READ_HUP = 0x20
    WRITE_HUP = 0x40
    ERR = 0x80
    POLLER_CLOSED = 0x8000

    def __str__(self) -> str:
        return _flag_names(Event, int(self))

    def __repr__(self) -> str:
        return f"<Event.{self}: {int(self):#x}>"

    def to_epoll(self) -> EpollEvent:
        """Return the ``epoll_ctl`` interest mask for this configuration.

        ``READ`` becomes ``EPOLLIN|EPOLLRDHUP``, ``WRITE`` ``EPOLLOUT``, ``ONE_SHOT``
        ``EPOLLONESHOT`` and ``EDGE_TRIGGERED`` ``EPOLLET``; other bits are ignored.
        """
        mask = 0
        value = int(self)
        for bit, epoll_bits in _TO_EPOLL:
            if value & bit:
                mask |= epoll_bits
        return EpollEvent(mask)

    @classmethod
    def from_epoll(cls, mask: int) -> Event:
        """Translate a mask reported by ``epoll_wait`` into an :class:`Event`.

        ``EPOLLHUP`` becomes ``HUP``, ``EPOLLRDHUP`` ``READ_HUP``, ``EPOLLIN`` ``READ``,
        ``EPOLLOUT`` ``WRITE``, ``EPOLLERR`` ``ERR`` and the library's own ``EPOLLCLOSED``
        ``POLLER_CLOSED``; other bits are dropped. Bit by bit and OR-ed together, as the Go
        package's ``toEvent`` does: ``from_epoll(0x21) == READ | POLLER_CLOSED``.
        """
        return event_from_mask(int(mask))


#: ``EpollEvent.EPOLLCLOSED`` as a plain int, for the hot paths' comparisons with raw masks
#: (an IntFlag member compares much slower); the library's own "closed" record.
EPOLLCLOSED: int = EpollEvent.EPOLLCLOSED._value_

# (Event bit, epoll bits) pairs; the Go package's tables, in its order.
_TO_EPOLL = (
    (int(Event.READ), int(EpollEvent.EPOLLIN | EpollEvent.EPOLLRDHUP)),
    (int(Event.WRITE), int(EpollEvent.EPOLLOUT)),
    (int(Event.ONE_SHOT), int(EpollEvent.EPOLLONESHOT)),
    (int(Event.EDGE_TRIGGERED), int(EpollEvent.EPOLLET)),
)
_FROM_EPOLL = (
    (int(EpollEvent.EPOLLHUP), int(Event.HUP)),
    (int(EpollEvent.EPOLLRDHUP), int(Event.READ_HUP)),
    (int(EpollEvent.EPOLLIN), int(Event.READ)),
    (int(EpollEvent.EPOLLOUT), int(Event.WRITE)),
    (int(EpollEvent.EPOLLERR), int(Event.ERR)),
    (int(EpollEvent.EPOLLCLOSED), int(Event.POLLER_CLOSED)),
)
_REPORTED = 0
for _epoll_bit, _ in _FROM_EPOLL:
    _REPORTED |= _epoll_bit

# Keyed by ``mask & _REPORTED``, so it holds at most 2**6 entries whatever the input.
_from_mask_cache: dict[int, Event] = {}


def event_from_mask(mask: int) -> Event:
    """Memoised :meth:`Event.from_epoll` for plain ``int`` masks (the delivery hot path)."""
    key = mask & _REPORTED
    try:
        return _from_mask_cache[key]
    except KeyError:
        pass
    value = 0
    for epoll_bit, bit in _FROM_EPOLL:
        if key & epoll_bit:
            value |= bit
    event = _from_mask_cache[key] = Event(value)
    return event


# Keyed by the raw mask; the kernel reports at most a dozen distinct bits, so this stays small.
_epoll_event_cache: dict[int, EpollEvent] = {}


def epoll_event_of(mask: int) -> EpollEvent:
    """Memoised ``EpollEvent(mask)`` for the low-level callbacks' hot path."""
    try:
        return _epoll_event_cache[mask]
    except KeyError:
        event = _epoll_event_cache[mask] = EpollEvent(mask)
        return event
