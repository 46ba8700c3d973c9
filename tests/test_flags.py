"""Event / EpollEvent values, the two mappings, and readable printing."""

from __future__ import annotations

import select

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netpoll_trio import EpollEvent, Event

GO_EVENT_VALUES = {
    "READ": 0x1,
    "WRITE": 0x2,
    "ONE_SHOT": 0x4,
    "EDGE_TRIGGERED": 0x8,
    "HUP": 0x10,
    "READ_HUP": 0x20,
    "WRITE_HUP": 0x40,
    "ERR": 0x80,
    "POLLER_CLOSED": 0x8000,
}
GO_EPOLL_VALUES = {
    "EPOLLIN": 0x1,
    "EPOLLPRI": 0x2,
    "EPOLLOUT": 0x4,
    "EPOLLERR": 0x8,
    "EPOLLHUP": 0x10,
    "EPOLLCLOSED": 0x20,
    "EPOLLRDHUP": 0x2000,
    "EPOLLONESHOT": 0x40000000,
    "EPOLLET": 0x80000000,
}


@pytest.mark.parametrize(("name", "value"), GO_EVENT_VALUES.items())
def test_event_values(name: str, value: int) -> None:
    assert int(Event[name]) == value


@pytest.mark.parametrize(("name", "value"), GO_EPOLL_VALUES.items())
def test_epoll_event_values(name: str, value: int) -> None:
    assert int(EpollEvent[name]) == value


def test_exactly_the_go_members() -> None:
    assert set(Event.__members__) == set(GO_EVENT_VALUES)
    assert set(EpollEvent.__members__) == set(GO_EPOLL_VALUES)


@pytest.mark.parametrize(
    "name",
    [
        "EPOLLIN",
        "EPOLLPRI",
        "EPOLLOUT",
        "EPOLLERR",
        "EPOLLHUP",
        "EPOLLRDHUP",
        "EPOLLONESHOT",
        "EPOLLET",
    ],
)
def test_epoll_values_match_the_kernel(name: str) -> None:
    assert int(EpollEvent[name]) == getattr(select, name)


TO_EPOLL = [
    (Event.READ, EpollEvent.EPOLLIN | EpollEvent.EPOLLRDHUP),
    (Event.WRITE, EpollEvent.EPOLLOUT),
    (Event.ONE_SHOT, EpollEvent.EPOLLONESHOT),
    (Event.EDGE_TRIGGERED, EpollEvent.EPOLLET),
    (
        Event.READ | Event.EDGE_TRIGGERED,
        EpollEvent.EPOLLIN | EpollEvent.EPOLLRDHUP | EpollEvent.EPOLLET,
    ),
    (Event.HUP | Event.ERR | Event.POLLER_CLOSED, EpollEvent(0)),
]


@pytest.mark.parametrize(("event", "mask"), TO_EPOLL)
def test_to_epoll_table(event: Event, mask: EpollEvent) -> None:
    result = event.to_epoll()
    assert result == mask
    assert isinstance(result, EpollEvent)


FROM_EPOLL = [
    (EpollEvent.EPOLLHUP, Event.HUP),
    (EpollEvent.EPOLLRDHUP, Event.READ_HUP),
    (EpollEvent.EPOLLIN, Event.READ),
    (EpollEvent.EPOLLOUT, Event.WRITE),
    (EpollEvent.EPOLLERR, Event.ERR),
    (EpollEvent.EPOLLCLOSED, Event.POLLER_CLOSED),
    (
        EpollEvent.EPOLLIN | EpollEvent.EPOLLHUP | EpollEvent.EPOLLRDHUP,
        Event.READ | Event.HUP | Event.READ_HUP,
    ),
    (EpollEvent.EPOLLPRI | EpollEvent.EPOLLET | EpollEvent.EPOLLONESHOT, Event(0)),
    # Go's toEvent is bit by bit: EPOLLCLOSED is not special-cased.
    (EpollEvent.EPOLLIN | EpollEvent.EPOLLCLOSED, Event.READ | Event.POLLER_CLOSED),
    (0x21, Event.READ | Event.POLLER_CLOSED),
    (
        EpollEvent.EPOLLHUP | EpollEvent.EPOLLERR | EpollEvent.EPOLLCLOSED,
        Event.HUP | Event.ERR | Event.POLLER_CLOSED,
    ),
]


@pytest.mark.parametrize(("mask", "event"), FROM_EPOLL)
def test_from_epoll_table(mask: EpollEvent, event: Event) -> None:
    result = Event.from_epoll(mask)
    assert result == event
    assert isinstance(result, Event)
    assert Event.from_epoll(int(mask)) == event


_EVENT_BITS = [int(e) for e in Event]
_EPOLL_BITS = [int(e) for e in EpollEvent]


@given(st.sets(st.sampled_from(_EVENT_BITS)))
def test_to_epoll_is_bitwise(bits: set[int]) -> None:
    event = Event(sum(bits))
    expected = EpollEvent(0)
    for bit in bits:
        expected |= Event(bit).to_epoll()
    assert event.to_epoll() == expected


@given(st.sets(st.sampled_from(_EPOLL_BITS)), st.integers(0, 2**32 - 1))
def test_from_epoll_is_bitwise(bits: set[int], noise: int) -> None:
    mask = sum(bits)
    result = Event.from_epoll(mask)
    expected = Event(0)
    for bit in bits:  # EPOLLCLOSED included: Go's toEvent ORs every bit's Event
        expected |= Event.from_epoll(bit)
    assert result == expected
    # Bits outside the table never leak into the result.
    unknown = noise & ~int(sum(EpollEvent))
    assert Event.from_epoll(mask | unknown) == result


@given(st.sets(st.sampled_from([Event.READ, Event.WRITE])))
def test_round_trip_of_interest(bits: set[Event]) -> None:
    event = Event(sum(bits))
    assert Event.from_epoll(event.to_epoll()) & (Event.READ | Event.WRITE) == event


def test_readable_printing() -> None:
    assert str(Event.READ | Event.EDGE_TRIGGERED) == "READ|EDGE_TRIGGERED"
    assert repr(Event.READ | Event.HUP | Event.READ_HUP) == "<Event.READ|HUP|READ_HUP: 0x31>"
    assert str(Event(0)) == "0"
    assert str(EpollEvent.EPOLLIN | EpollEvent.EPOLLET) == "EPOLLIN|EPOLLET"
    assert repr(EpollEvent.EPOLLCLOSED) == "<EpollEvent.EPOLLCLOSED: 0x20>"
    assert str(Event(0x1 | 0x100)) == "READ|0x100"
