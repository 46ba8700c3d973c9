"""The seam to the host event loop: the contract in :mod:`._base`, one module per library.

Only the poller's side of the package (``_poller``, ``_dispatch``, ``_sources``) imports
this; the low-level layer (``_flags``, ``_errors``, ``_desc``, ``_epoll``) never does.
"""

from ._base import (
    Backend,
    CancelScopeLike,
    FdWatcherLike,
    IdleHookLike,
    ParkingLotLike,
    current_backend,
)

__all__ = [
    "Backend",
    "CancelScopeLike",
    "FdWatcherLike",
    "IdleHookLike",
    "ParkingLotLike",
    "current_backend",
]
