"""Delivery: per-registration state, coalescing, and handing events to callbacks and streams.

Everything here runs on the event-loop thread. The wait thread (or, later, any other source
of batches) calls :meth:`Dispatcher.deliver_batch` through the loop's thread-safe hand-off,
once per ``epoll_wait`` batch.

Design notes
------------
* **One registration object per started Desc**, stored in ``fd -> registration``. Its kind
  decides where events go: :class:`CallbackRegistration` calls the user's callback at once
  (one call per epoll record, synchronously, so the callback may start/stop/resume);
  :class:`WatchRegistration` feeds one ``watch()`` stream; :class:`SharedRegistration`
  feeds the poller's own stream that worker tasks iterate.
* **Coalescing lives in the registration.** A stream registration keeps one ``pending``
  mask; new records OR into it until a consumer takes it. A slow consumer therefore sees
  fewer, merged events and never a missing edge, and memory is bounded by the number of
  registrations whatever the event rate. The shared stream's ready queue holds each
  registration at most once (``queued``).
* **No event after stop().** ``stop()`` removes the registration from the map and marks it
  inactive; every record is looked up at delivery time, so records collected before the
  stop, still in flight, find nothing. A new registration that reuses the fd number while
  an old batch is in flight is protected by ``seq``: records are only given to
  registrations started before their batch was collected (``collected_after``). A start
  racing with the collection itself can get one spurious event (never a missing one).
* **Level-triggered streams do not spin.** A stream registration that is neither
  edge-triggered nor one-shot is armed one-shot in the kernel and re-armed when its
  consumer is ready for more (``rearm_on_take``), so a socket that stays readable while
  its consumer is busy is reported once, not once per wake-up.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from ._desc import Desc
from ._flags import EpollEvent, Event, event_from_mask

if TYPE_CHECKING:
    from ._loop import ParkingLotLike

__all__ = [
    "CallbackRegistration",
    "Dispatcher",
    "Registration",
    "SharedQueue",
    "SharedRegistration",
    "WatchRegistration",
]

Callback = Callable[[Event], object]
_EPOLLCLOSED = int(EpollEvent.EPOLLCLOSED)


class Registration:
    """A started Desc: what the kernel was told, and where its events go."""

    __slots__ = ("active", "desc", "fd", "interest", "rearm_on_take", "seq")

    def __init__(self, desc: Desc, seq: int, rearm_on_take: bool) -> None:
        self.desc = desc
        self.fd = desc.fileno()
        interest = int(desc.event.to_epoll())
        if rearm_on_take:
            interest |= int(EpollEvent.EPOLLONESHOT)
        self.interest = interest
        self.rearm_on_take = rearm_on_take
        self.seq = seq
        self.active = True

    def deliver(self, mask: int) -> None:
        """Take one epoll record's mask (loop thread)."""
        raise NotImplementedError

    def end(self) -> None:
        """The registration was stopped or replaced: deliver nothing more."""
        self.active = False

    def close(self) -> None:
        """The poller closed: deliver exactly POLLER_CLOSED (loop thread)."""
        self.active = False


class CallbackRegistration(Registration):
    """Events go straight to a callback, one call per epoll record."""

    __slots__ = ("callback",)

    def __init__(self, desc: Desc, seq: int, callback: Callback) -> None:
        super().__init__(desc, seq, rearm_on_take=False)
        self.callback = callback

    def deliver(self, mask: int) -> None:
        self.callback(event_from_mask(mask))

    def close(self) -> None:
        super().close()
        self.callback(Event.POLLER_CLOSED)


class WatchRegistration(Registration):
    """Events go to one ``watch()`` stream, coalesced while its consumer is busy."""

    __slots__ = ("closed", "lot", "pending", "taken")

    def __init__(self, desc: Desc, seq: int, lot: ParkingLotLike) -> None:
        # Re-armed each time the consumer asks for more: ONE_SHOT as the spec says, and
        # level-triggered so that a busy consumer does not make the wait thread spin.
        event = desc.event
        edge_only = bool(event & Event.EDGE_TRIGGERED) and not event & Event.ONE_SHOT
        super().__init__(desc, seq, rearm_on_take=not edge_only)
        self.lot = lot
        self.pending = 0
        self.closed = False  # the poller closed; POLLER_CLOSED not yet taken
        self.taken = False  # an event was handed out since the last re-arm

    def deliver(self, mask: int) -> None:
        self.pending |= mask
        if self.lot:
            self.lot.unpark()

    def end(self) -> None:
        super().end()
        self.pending = 0
        self.lot.unpark_all()

    def close(self) -> None:
        super().close()
        self.pending = 0
        self.closed = True
        self.lot.unpark_all()


class SharedRegistration(Registration):
    """Events go to the poller's shared stream, which worker tasks iterate."""

    __slots__ = ("pending", "queue", "queued")

    def __init__(self, desc: Desc, seq: int, queue: SharedQueue) -> None:
        level_triggered = not desc.event & (Event.EDGE_TRIGGERED | Event.ONE_SHOT)
        super().__init__(desc, seq, rearm_on_take=bool(level_triggered))
        self.queue = queue
        self.pending = 0
        self.queued = False

    def deliver(self, mask: int) -> None:
        self.pending |= mask
        if not self.queued:
            self.queued = True
            self.queue.push(self)

    def end(self) -> None:
        super().end()
        self.pending = 0
        if self.queued:
            self.queue.forget_one()

    def close(self) -> None:
        super().close()
        self.pending = _EPOLLCLOSED
        if not self.queued:
            self.queued = True
            self.queue.push(self)


class SharedQueue:
    """The shared stream's ready queue: each registration at most once, FIFO.

    Stopped registrations are left in the deque and skipped when popped; once they are
    more than half of it, it is compacted, so its length stays below twice the number of
    live queued registrations.
    """

    __slots__ = ("closed", "dead", "lot", "ready")

    def __init__(self, lot: ParkingLotLike) -> None:
        self.ready: deque[SharedRegistration] = deque()
        self.lot = lot
        self.dead = 0
        self.closed = False

    def push(self, reg: SharedRegistration) -> None:
        self.ready.append(reg)
        if self.lot:
            self.lot.unpark()

    def forget_one(self) -> None:
        self.dead += 1
        if self.dead > 32 and self.dead * 2 > len(self.ready):
            self.ready = deque(reg for reg in self.ready if reg.queued and reg.active)
            self.dead = 0

    def pop(self) -> tuple[SharedRegistration, int] | None:
        """Take the next ready registration and its coalesced mask, or None."""
        ready = self.ready
        while ready:
            reg = ready.popleft()
            reg.queued = False
            mask, reg.pending = reg.pending, 0
            if mask == _EPOLLCLOSED:
                return reg, mask
            if not reg.active:
                self.dead -= 1
                continue
            return reg, mask
        return None

    def __len__(self) -> int:
        return len(self.ready) - self.dead


class Dispatcher:
    """The registry (``fd -> Registration``) and batch delivery, on the loop thread.

    ``on_error`` is called with any exception a callback raises; delivery of the batch
    stops there (the poller closes).
    """

    __slots__ = ("batches", "closed", "events_delivered", "on_error", "regs", "seq")

    def __init__(self, on_error: Callable[[BaseException], None]) -> None:
        self.regs: dict[int, Registration] = {}
        self.on_error = on_error
        self.seq = 0
        self.closed = False
        self.events_delivered = 0
        self.batches = 0

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def deliver_batch(self, records: list[tuple[int, int]], collected_after: int) -> None:
        """Deliver one ``epoll_wait`` batch, in order, to the registrations alive now."""
        regs = self.regs
        delivered = 0
        self.batches += 1
        for fd, mask in records:
            reg = regs.get(fd)
            if reg is None or reg.seq > collected_after:
                continue
            delivered += 1
            try:
                reg.deliver(mask)
            except BaseException as exc:
                self.events_delivered += delivered
                self.on_error(exc)
                return
            if self.closed:
                break
        self.events_delivered += delivered

    def close_all(self) -> None:
        """Deliver POLLER_CLOSED to every registration; errors go to ``on_error``."""
        self.closed = True
        regs = list(self.regs.values())
        self.regs.clear()
        for reg in regs:
            try:
                reg.close()
            except BaseException as exc:
                self.on_error(exc)
