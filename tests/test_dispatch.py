"""Unit tests of netpoll_trio._dispatch: registrations, coalescing, the ready queue, batches.

Pure: no poller, no kernel, no event loop. Descs are built for fd numbers nobody opens
(a Desc never touches its fd), and parking lots are counters.
"""

from __future__ import annotations

from typing import Any

import pytest

from netpoll_trio import Desc, EpollEvent, Event
from netpoll_trio._dispatch import (
    DEAD,
    QUEUED,
    REARM,
    CallbackRegistration,
    Dispatcher,
    SharedQueue,
    SharedRegistration,
    WatchRegistration,
    interest_of,
)
from netpoll_trio._flags import EPOLLCLOSED

IN = int(EpollEvent.EPOLLIN)
OUT = int(EpollEvent.EPOLLOUT)
RDHUP = int(EpollEvent.EPOLLRDHUP)
ONESHOT = int(EpollEvent.EPOLLONESHOT)
ET = int(EpollEvent.EPOLLET)
EDGE = Event.READ | Event.EDGE_TRIGGERED


class FakeLot:
    """A parking lot with ``parked`` tasks that counts wake-ups."""

    def __init__(self, parked: int = 1) -> None:
        self.parked = parked
        self.unparks = 0
        self.unpark_alls = 0

    def __len__(self) -> int:
        return self.parked

    async def park(self) -> None:  # pragma: no cover - never awaited here
        raise AssertionError

    def unpark(self) -> None:
        self.unparks += 1

    def unpark_all(self) -> None:
        self.unpark_alls += 1


def shared(fd: int, queue: SharedQueue, event: Event = EDGE, epoch: int = 0) -> SharedRegistration:
    return SharedRegistration(Desc(fd, event), epoch, queue)


# ----------------------------------------------------------------- interest masks


def test_interest_is_the_desc_event_plus_oneshot_when_asked() -> None:
    assert interest_of(EDGE) == IN | RDHUP | ET
    assert interest_of(Event.READ, oneshot=True) == IN | RDHUP | ONESHOT
    assert interest_of(Event.READ, oneshot=True) is interest_of(Event.READ, oneshot=True)


@pytest.mark.parametrize(
    ("event", "armed_oneshot"),
    [
        (Event.READ, True),  # level-triggered: armed one-shot so a busy consumer cannot spin
        (Event.READ | Event.ONE_SHOT, True),
        (EDGE, False),
        (Event.READ | Event.EDGE_TRIGGERED | Event.ONE_SHOT, True),
    ],
)
def test_stream_registrations_arm_level_triggered_descs_one_shot(
    event: Event, armed_oneshot: bool
) -> None:
    watch = WatchRegistration(Desc(5, event), 0, FakeLot())
    assert bool(watch.interest & ONESHOT) == armed_oneshot


def test_shared_registration_rearms_only_level_triggered_descs() -> None:
    queue = SharedQueue()
    assert shared(5, queue, Event.READ).state & REARM
    assert not shared(6, queue, Event.READ | Event.ONE_SHOT).state & REARM
    assert not shared(7, queue, EDGE).state & REARM


def test_set_event_changes_interest_and_rearm_mode() -> None:
    queue = SharedQueue()
    reg = shared(5, queue, EDGE)
    reg.set_event(Event.READ | Event.WRITE)
    assert reg.desc.event == Event.READ | Event.WRITE
    assert reg.state & REARM
    assert reg.interest == IN | RDHUP | OUT | ONESHOT
    reg.set_event(EDGE)
    assert not reg.state & REARM


# ----------------------------------------------------------------- coalescing


def test_callback_registration_calls_once_per_record_without_coalescing() -> None:
    got: list[Event] = []
    reg = CallbackRegistration(Desc(5, EDGE), 0, got.append)
    reg.deliver(IN)
    reg.deliver(IN | RDHUP)
    reg.close()
    assert got == [Event.READ, Event.READ | Event.READ_HUP, Event.POLLER_CLOSED]


def test_watch_registration_coalesces_until_taken_and_wakes_its_consumer() -> None:
    lot = FakeLot()
    reg = WatchRegistration(Desc(5, EDGE), 0, lot)
    reg.deliver(IN)
    reg.deliver(OUT)
    reg.deliver(IN | RDHUP)
    assert lot.unparks == 3
    assert reg.take() == IN | OUT | RDHUP  # one merged item, no edge missing
    assert reg.take() == 0  # nothing pending: the consumer parks
    assert reg.active


def test_watch_registration_does_not_wake_when_nobody_waits() -> None:
    lot = FakeLot(parked=0)
    reg = WatchRegistration(Desc(5, EDGE), 0, lot)
    reg.deliver(IN)
    assert lot.unparks == 0
    assert reg.take() == IN


def test_watch_rearm_is_due_once_per_taken_event_for_one_shot_armed_descs() -> None:
    level = WatchRegistration(Desc(5, Event.READ), 0, FakeLot())
    assert not level.rearm_due()  # nothing handed out yet
    level.deliver(IN)
    level.take()
    assert level.rearm_due()
    assert not level.rearm_due()  # once
    edge = WatchRegistration(Desc(6, EDGE), 0, FakeLot())
    edge.deliver(IN)
    edge.take()
    assert not edge.rearm_due()  # edge-triggered: never re-armed


def test_watch_close_gives_epollclosed_once_then_the_end() -> None:
    lot = FakeLot()
    reg = WatchRegistration(Desc(5, EDGE), 0, lot)
    reg.deliver(IN)
    reg.close()  # pending events are dropped: closing gives exactly POLLER_CLOSED
    assert lot.unpark_alls == 1
    assert reg.take() == EPOLLCLOSED
    assert reg.take() == 0
    assert not reg.active


def test_watch_end_drops_pending_and_wakes_the_consumer() -> None:
    lot = FakeLot()
    reg = WatchRegistration(Desc(5, EDGE), 0, lot)
    reg.deliver(IN)
    reg.end()
    assert (reg.take(), reg.active, lot.unpark_alls) == (0, False, 1)


# ----------------------------------------------------------------- the shared ready queue


def test_shared_registration_is_queued_once_and_coalesced() -> None:
    queue = SharedQueue()
    lot = FakeLot()
    queue.lot = lot
    reg = shared(5, queue)
    reg.deliver(IN)
    reg.deliver(OUT)
    assert len(queue) == 1
    assert lot.unparks == 1  # one wake-up per queued desc, not per record
    assert queue.take_one() == (reg.desc, Event.READ | Event.WRITE)
    assert not reg.state & QUEUED
    assert queue.take_one() is None
    reg.deliver(IN)  # taken: queued again by the next record
    assert len(queue) == 1


def test_queue_is_fifo_and_take_respects_max_items() -> None:
    queue = SharedQueue()
    regs = [shared(fd, queue) for fd in range(10, 15)]
    for reg in regs:
        reg.deliver(IN)
    regs[0].deliver(OUT)  # already queued: keeps its place
    first = queue.take(2)
    assert [desc for desc, _ in first] == [regs[0].desc, regs[1].desc]
    assert first[0][1] == Event.READ | Event.WRITE
    assert [desc for desc, _ in queue.take(64)] == [reg.desc for reg in regs[2:]]
    assert queue.take(64) == []


def test_level_triggered_descs_are_rearmed_as_they_are_taken() -> None:
    queue = SharedQueue()
    rearmed: list[SharedRegistration] = []
    queue.rearm = rearmed.append
    level = shared(5, queue, Event.READ)
    edge = shared(6, queue, EDGE)
    level.deliver(IN)
    edge.deliver(IN)
    queue.take(64)
    assert rearmed == [level]


def test_stopped_registrations_are_skipped() -> None:
    queue = SharedQueue()
    a, b = shared(5, queue), shared(6, queue)
    a.deliver(IN)
    b.deliver(IN)
    a.end()
    assert a.state & DEAD
    assert len(queue) == 1
    assert queue.take_one() == (b.desc, Event.READ)
    assert queue.take_one() is None
    assert (len(queue), queue.dead) == (0, 0)


def test_the_ready_queue_is_compacted_once_mostly_dead() -> None:
    queue = SharedQueue()
    regs = [shared(fd, queue) for fd in range(100, 200)]
    for reg in regs:
        reg.deliver(IN)
    for reg in regs[:32]:
        reg.end()
    assert len(queue.ready) == 100  # few dead so far: left in place, skipped when popped
    for reg in regs[32:60]:
        reg.end()
    # More than 32 dead and more than half of the deque: compacted to the live ones.
    assert len(queue.ready) < 100
    assert queue.dead * 2 <= len(queue.ready)
    assert len(queue) == 40
    assert [desc for desc, _ in queue.take(100)] == [reg.desc for reg in regs[60:]]
    assert (len(queue), len(queue.ready), queue.dead) == (0, 0, 0)


def test_memory_stays_bounded_by_the_registrations_under_churn() -> None:
    queue = SharedQueue()
    live = [shared(fd, queue) for fd in range(10)]
    for round_ in range(1000):
        reg = shared(1000 + round_, queue)
        reg.deliver(IN)
        reg.end()
        for other in live:
            other.deliver(IN)
    assert len(queue) == 10
    assert len(queue.ready) < 2 * 10 + 34  # live ones plus at most the compaction slack


def test_closed_shared_registration_comes_once_with_poller_closed() -> None:
    queue = SharedQueue()
    rearmed: list[SharedRegistration] = []
    queue.rearm = rearmed.append
    reg = shared(5, queue, Event.READ)
    reg.deliver(IN)
    reg.close()  # queued already: its pending mask becomes exactly EPOLLCLOSED
    idle = shared(6, queue)
    idle.close()  # not queued: queued now
    assert queue.take(64) == [(reg.desc, Event.POLLER_CLOSED), (idle.desc, Event.POLLER_CLOSED)]
    assert rearmed == []  # nothing is re-armed after the poller closed


# ----------------------------------------------------------------- batches


def make_dispatcher() -> tuple[Dispatcher, list[BaseException]]:
    errors: list[BaseException] = []
    return Dispatcher(errors.append), errors


def test_batch_goes_to_registrations_alive_now_and_older_than_the_batch() -> None:
    dispatcher, errors = make_dispatcher()
    got: dict[int, list[Event]] = {5: [], 6: []}
    dispatcher.regs[5] = CallbackRegistration(Desc(5, EDGE), 3, got[5].append)
    dispatcher.regs[6] = CallbackRegistration(Desc(6, EDGE), 4, got[6].append)  # newer
    dispatcher.deliver_batch([(5, IN), (6, IN), (7, IN), (5, OUT)], epoch=4)
    assert got == {5: [Event.READ, Event.WRITE], 6: []}
    assert (dispatcher.batches, dispatcher.events_delivered, dispatcher.unclaimed) == (1, 2, 1)
    assert errors == []


def test_a_raising_callback_stops_the_batch_and_reports() -> None:
    dispatcher, errors = make_dispatcher()
    got: list[Event] = []
    boom = ValueError("boom")

    def raising(event: Event) -> None:
        raise boom

    dispatcher.regs[5] = CallbackRegistration(Desc(5, EDGE), 0, raising)
    dispatcher.regs[6] = CallbackRegistration(Desc(6, EDGE), 0, got.append)
    dispatcher.deliver_batch([(5, IN), (6, IN)], epoch=1)
    assert errors == [boom]
    assert got == []
    assert dispatcher.events_delivered == 1


def test_a_callback_stopping_a_later_record_of_its_batch() -> None:
    dispatcher, _ = make_dispatcher()
    got: list[Event] = []

    def stopper(event: Event) -> None:
        del dispatcher.regs[6]

    dispatcher.regs[5] = CallbackRegistration(Desc(5, EDGE), 0, stopper)
    dispatcher.regs[6] = CallbackRegistration(Desc(6, EDGE), 0, got.append)
    dispatcher.deliver_batch([(5, IN), (6, IN)], epoch=1)
    assert got == []
    assert dispatcher.unclaimed == 1


def test_close_all_gives_every_registration_poller_closed_and_reports_errors() -> None:
    dispatcher, errors = make_dispatcher()
    got: list[tuple[int, Event]] = []
    boom = RuntimeError("boom")

    def raising(event: Event) -> None:
        raise boom

    dispatcher.regs[5] = CallbackRegistration(Desc(5, EDGE), 0, lambda e: got.append((5, e)))
    dispatcher.regs[6] = CallbackRegistration(Desc(6, EDGE), 0, raising)
    dispatcher.regs[7] = CallbackRegistration(Desc(7, EDGE), 0, lambda e: got.append((7, e)))
    dispatcher.close_all()
    assert got == [(5, Event.POLLER_CLOSED), (7, Event.POLLER_CLOSED)]
    assert errors == [boom]
    assert dispatcher.regs == {}
    dispatcher.deliver_batch([(5, IN)], epoch=9)  # a batch still in flight: nobody left
    assert got == [(5, Event.POLLER_CLOSED), (7, Event.POLLER_CLOSED)]


def test_ghost_records_are_counted_with_bounded_memory(caplog: Any) -> None:
    dispatcher, _ = make_dispatcher()
    for fd in range(5000):
        dispatcher.deliver_batch([(fd, IN)], epoch=1)
    assert dispatcher.unclaimed == 5000
    assert len(dispatcher.ghosts) <= 4096
    assert not caplog.records
