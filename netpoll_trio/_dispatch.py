"""Delivery: per-registration state, coalescing, and handing events to callbacks and streams.

Everything here runs on the event-loop thread. The poller's batch source (:mod:`._sources`:
the wait thread, or the loop itself) gets :meth:`Dispatcher.deliver_batch` called once per
``epoll_wait`` batch.

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
  an old batch is in flight must not get that batch's records either: each registration
  remembers the wait thread's wake-up count when it started (its ``epoch``), each batch
  carries the count at which it was collected, and a record only goes to registrations
  started before its batch. (The counter is one int object shared by every registration
  started between two batches, so this costs a slot, not an int per registration.) A
  start racing with the collection itself can get one spurious event, never a lost one.
* **Level-triggered streams do not spin.** A stream registration that is neither
  edge-triggered nor one-shot is armed one-shot in the kernel and re-armed when its
  consumer is ready for more, so a socket that stays readable while
  its consumer is busy is reported once, not once per wake-up.
* **Edges, where there are none.** In the portable mode (:mod:`._portable`) the source
  only sees readiness (``edges`` false): a stream registration then arms an
  edge-triggered desc one-shot as well and re-arms it the same way, which is how that
  mode emulates edge-triggering for tasks.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from ._desc import Desc
from ._flags import EPOLLCLOSED, EpollEvent, Event, event_from_mask

if TYPE_CHECKING:
    from ._backends import ParkingLotLike

__all__ = [
    "DEAD",
    "QUEUED",
    "REARM",
    "CallbackRegistration",
    "Dispatcher",
    "Registration",
    "SharedQueue",
    "SharedRegistration",
    "WatchRegistration",
    "interest_of",
]

Callback = Callable[[Event], object]
_EPOLLONESHOT = int(EpollEvent.EPOLLONESHOT)
_ONE_SHOT = int(Event.ONE_SHOT)
_EDGE_TRIGGERED = int(Event.EDGE_TRIGGERED)

# event value (| _ONESHOT_KEY) -> interest mask; shared ints, not one per registration.
_interest_cache: dict[int, int] = {}


def interest_of(event: Event, oneshot: bool = False) -> int:
    """The ``epoll_ctl`` mask for a Desc's event (plus EPOLLONESHOT if asked), memoised."""
    key = event._value_ | (_ONESHOT_KEY if oneshot else 0)
    try:
        return _interest_cache[key]
    except KeyError:
        mask = int(event.to_epoll()) | (_EPOLLONESHOT if oneshot else 0)
        return _interest_cache.setdefault(key, mask)


_ONESHOT_KEY = 1 << 20  # above every Event bit: "armed one-shot" in a cache key


class Registration:
    """A started Desc: what the kernel was told, when, and where its events go."""

    __slots__ = ("desc", "epoch")

    def __init__(self, desc: Desc, epoch: int) -> None:
        self.desc = desc
        self.epoch = epoch

    @property
    def interest(self) -> int:
        """The ``epoll_ctl`` mask (computed, memoised: only start() and re-arms need it,
        and a slot would cost 8 bytes per registration)."""
        return interest_of(self.desc._event)

    def set_event(self, event: Event) -> None:
        """Watch ``event`` from now on (``Poller.modify``); the caller tells the kernel
        :attr:`interest` afterwards."""
        self.desc._event = event

    def deliver(self, mask: int) -> None:
        """Take one epoll record's mask (loop thread)."""
        raise NotImplementedError

    def end(self) -> None:
        """The registration was stopped or replaced: deliver nothing more."""

    def close(self) -> None:
        """The poller closed: deliver exactly POLLER_CLOSED (loop thread)."""


class CallbackRegistration(Registration):
    """Events go straight to a callback, one call per epoll record."""

    __slots__ = ("callback",)

    def __init__(self, desc: Desc, epoch: int, callback: Callback) -> None:
        # No super().__init__: this runs once per start() and every call counts there.
        self.desc = desc
        self.epoch = epoch
        self.callback = callback

    def deliver(self, mask: int) -> None:
        self.callback(event_from_mask(mask))

    def close(self) -> None:
        self.callback(Event.POLLER_CLOSED)


class WatchRegistration(Registration):
    """Events go to one ``watch()`` stream, coalesced while its consumer is busy.

    ONE_SHOT descs are re-armed when the consumer asks for the next event, as the spec
    says; level-triggered ones are armed one-shot too and re-armed the same way, so that a
    busy consumer does not make the wait thread spin.
    """

    __slots__ = ("active", "closed", "edges", "lot", "pending", "rearm", "taken")

    def __init__(self, desc: Desc, epoch: int, lot: ParkingLotLike, *, edges: bool = True) -> None:
        super().__init__(desc, epoch)
        self.edges = edges
        self.rearm = _needs_rearm(desc.event, edges)
        self.lot = lot
        self.pending = 0
        self.active = True
        self.closed = False  # the poller closed; POLLER_CLOSED not yet taken
        self.taken = False  # an event was handed out since the last re-arm

    @property
    def interest(self) -> int:
        return interest_of(self.desc._event, oneshot=self.rearm)

    def set_event(self, event: Event) -> None:
        self.desc._event = event
        self.rearm = _needs_rearm(event, self.edges)

    def rearm_due(self) -> bool:
        """The consumer asks for the next event: True if the kernel must be re-armed now
        (an event was handed out since the last re-arm, and this desc is armed one-shot)."""
        if not self.taken:
            return False
        self.taken = False
        return self.active and self.rearm

    def take(self) -> int:
        """The coalesced mask to hand out next: ``EPOLLCLOSED`` once after the poller
        closed, else the pending mask (0 if none). ``active`` false and 0: the end."""
        if self.closed:
            self.closed = False
            return EPOLLCLOSED
        mask = self.pending
        if mask:
            self.pending = 0
            self.taken = True
        return mask

    def deliver(self, mask: int) -> None:
        self.pending |= mask
        if self.lot:
            self.lot.unpark()

    def end(self) -> None:
        self.active = False
        self.pending = 0
        self.lot.unpark_all()

    def close(self) -> None:
        self.active = False
        self.pending = 0
        self.closed = True
        self.lot.unpark_all()


def _needs_rearm(event: Event, edges: bool) -> bool:
    """A stream registration is armed one-shot in the kernel unless edge-triggered only
    (and the source reports edges)."""
    value = event._value_
    return not (edges and value & _EDGE_TRIGGERED and not value & _ONE_SHOT)


def _level(event: Event, edges: bool) -> bool:
    """A shared-stream registration re-armed when taken: neither one-shot (re-armed by the
    user) nor edge-triggered (unless the source reports no edges)."""
    value = event._value_
    return not value & _ONE_SHOT and not (edges and value & _EDGE_TRIGGERED)


# SharedRegistration.state bits (one small int instead of three slots).
QUEUED, DEAD, REARM = 1, 2, 4


class SharedRegistration(Registration):
    """Events go to the poller's shared stream, which worker tasks iterate.

    A level-triggered desc is armed one-shot and re-armed when a worker takes it
    (``REARM``); ONE_SHOT descs are re-armed by the user's ``resume()``, as in Go.
    """

    __slots__ = ("pending", "queue", "state")

    def __init__(self, desc: Desc, epoch: int, queue: SharedQueue) -> None:
        super().__init__(desc, epoch)
        self.queue = queue
        self.pending = 0
        self.state = REARM if _level(desc.event, queue.edges) else 0

    @property
    def interest(self) -> int:
        return interest_of(self.desc._event, oneshot=bool(self.state & REARM))

    def set_event(self, event: Event) -> None:
        self.desc._event = event
        level = _level(event, self.queue.edges)
        self.state = (self.state | REARM) if level else (self.state & ~REARM)

    def deliver(self, mask: int) -> None:
        self.pending |= mask
        if not self.state & QUEUED:
            self.state |= QUEUED
            self.queue.push(self)

    def end(self) -> None:
        self.pending = 0
        self.state |= DEAD
        if self.state & QUEUED:
            self.queue.forget_one()

    def close(self) -> None:
        self.pending = EPOLLCLOSED
        self.state |= DEAD
        if not self.state & QUEUED:
            self.state |= QUEUED
            self.queue.push(self)


class _Unopened:
    """The parking lot of a poller that was never opened: nobody ever parks there."""

    def __len__(self) -> int:
        return 0

    def unpark(self) -> None:
        pass

    unpark_all = unpark

    async def park(self) -> None:  # pragma: no cover - receivers check closed first
        raise RuntimeError("the Poller is not open")


class SharedQueue:
    """The shared stream's ready queue: each registration at most once, FIFO.

    Stopped registrations are left in the deque and skipped when popped; once they are
    more than half of it, it is compacted, so its length stays below twice the number of
    live queued registrations.

    ``rearm(reg)`` re-arms a level-triggered registration in the kernel when a worker
    takes it; the poller sets it (and ``lot``, and ``edges``: whether its source reports
    edges) when it opens.
    """

    __slots__ = ("closed", "dead", "edges", "lot", "ready", "rearm")

    def __init__(self) -> None:
        self.ready: deque[SharedRegistration] = deque()
        self.lot: ParkingLotLike = _Unopened()
        self.dead = 0
        self.closed = False
        self.edges = True
        self.rearm: Callable[[SharedRegistration], object] = _no_rearm

    def push(self, reg: SharedRegistration) -> None:
        self.ready.append(reg)
        if self.lot:
            self.lot.unpark()

    def forget_one(self) -> None:
        self.dead += 1
        if self.dead > 32 and self.dead * 2 > len(self.ready):
            self.ready = deque(reg for reg in self.ready if not reg.state & DEAD)
            self.dead = 0

    def pop(self) -> tuple[SharedRegistration, int] | None:
        """Take the next ready registration and its coalesced mask, or None."""
        ready = self.ready
        while ready:
            reg = ready.popleft()
            reg.state &= ~QUEUED
            mask, reg.pending = reg.pending, 0
            if mask == EPOLLCLOSED:
                return reg, mask
            if reg.state & DEAD:
                self.dead -= 1
                continue
            return reg, mask
        return None

    def take(self, max_items: int) -> list[tuple[Desc, Event]]:
        """Take up to ``max_items`` ready descs with their coalesced events (maybe none).

        Level-triggered ones are re-armed as they are taken (after the poller closed every
        mask is EPOLLCLOSED, and nothing is re-armed)."""
        items: list[tuple[Desc, Event]] = []
        take_one = self.take_one
        while len(items) < max_items:
            item = take_one()
            if item is None:
                break
            items.append(item)
        return items

    def take_one(self) -> tuple[Desc, Event] | None:
        """:meth:`take` for one item, without building a list (``receive()``)."""
        item = self.pop()
        if item is None:
            return None
        reg, mask = item
        if reg.state & REARM and mask != EPOLLCLOSED:
            self.rearm(reg)
        return reg.desc, event_from_mask(mask)

    def __len__(self) -> int:
        return len(self.ready) - self.dead


def _no_rearm(*args: object) -> None:
    """Placeholder for the re-arm hook of a poller that was never opened."""


#: Records for one unregistered fd after which the dispatcher warns (once per fd).
GHOST_WARNING = 1000
_logger = logging.getLogger("netpoll_trio")


class Dispatcher:
    """The registry (``fd -> Registration``) and batch delivery, on the loop thread.

    ``on_error`` is called with any exception a callback raises; delivery of the batch
    stops there (the poller closes).

    Records for an fd that is not registered (``unclaimed``) are normal in small numbers:
    they were collected just before a ``stop()``. A steady stream of them for one fd
    means a kernel entry the poller can no longer remove: the fd's socket was
    ``dup()``-ed (or inherited by a child) and the original closed without ``stop()``,
    and epoll keeps watching the open file (``epoll(7)``, "Q6"). That cannot be
    repaired from here; it is reported once per fd through :mod:`logging`.
    """

    __slots__ = ("batches", "closed", "events_delivered", "ghosts", "on_error", "regs", "unclaimed")

    def __init__(self, on_error: Callable[[BaseException], None]) -> None:
        self.regs: dict[int, Registration] = {}
        self.on_error = on_error
        self.closed = False
        self.events_delivered = 0
        self.batches = 0
        self.unclaimed = 0
        self.ghosts: dict[int, int] = {}  # fd -> unclaimed records, until warned

    def deliver_batch(self, records: list[tuple[int, int]], epoch: int) -> None:
        """Deliver one batch, collected at ``epoch``, in order, to the registrations that
        are alive now and were started before it was collected."""
        regs = self.regs
        delivered = 0
        self.batches += 1
        for fd, mask in records:
            reg = regs.get(fd)
            if reg is None:
                self._unclaimed(fd)
                continue
            if reg.epoch >= epoch:
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

    def _unclaimed(self, fd: int) -> None:
        self.unclaimed += 1
        ghosts = self.ghosts
        count = ghosts.get(fd, 0) + 1
        if count < GHOST_WARNING:
            if len(ghosts) >= 4096:  # bounded: stale counts of ordinary stops go first
                ghosts.clear()
            ghosts[fd] = count
        elif count == GHOST_WARNING:
            ghosts[fd] = count  # stays: warned once
            _logger.warning(
                "netpoll: fd %d is not registered, yet epoll reported it %d times: its "
                "socket was probably dup()-ed (or inherited) and closed without stop(), "
                "so epoll still watches the open file and cannot forget it; close every "
                "copy, and stop() a desc before closing its socket",
                fd,
                count,
            )

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
