"""netpoll_trio: epoll readiness events for trio and anyio, after Go's easygo ``netpoll``.

``async with Poller() as poller:`` runs the epoll wait loop in a dedicated thread for the
block's duration and hands batches of events to the event loop, where tasks get them as
callbacks or by iterating streams. See the README and ``docs/`` for a tour.
"""

from ._desc import (
    Desc,
    handle,
    handle_listener,
    handle_read,
    handle_read_once,
    handle_read_write,
    handle_write,
    handle_write_once,
    new_desc,
)
from ._epoll import Epoll, EpollConfig, epoll_create
from ._errors import (
    ClosedError,
    NetpollError,
    NotFilerError,
    NotRegisteredError,
    RegisteredError,
)
from ._flags import EpollEvent, Event
from ._poller import Config, EventStream, Poller, PollerStatistics, Watch
from ._syscalls import Syscalls

__version__ = "0.1.0"

__all__ = [
    "ClosedError",
    "Config",
    "Desc",
    "Epoll",
    "EpollConfig",
    "EpollEvent",
    "Event",
    "EventStream",
    "NetpollError",
    "NotFilerError",
    "NotRegisteredError",
    "Poller",
    "PollerStatistics",
    "RegisteredError",
    "Syscalls",
    "Watch",
    "epoll_create",
    "handle",
    "handle_listener",
    "handle_read",
    "handle_read_once",
    "handle_read_write",
    "handle_write",
    "handle_write_once",
    "new_desc",
]

# Public names report the package, not the private module they live in (as trio does).
for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith(__name__ + "._"):
        _obj.__module__ = __name__
del _name, _obj
