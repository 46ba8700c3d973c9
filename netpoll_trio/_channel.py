"""The exceptions of the task-facing streams, each an instance of both trio's and anyio's.

The poller's shared stream and each ``watch()`` stream are memory channels in the trio and
anyio sense, so code written against ``trio.abc.ReceiveChannel`` or
``anyio.abc.ObjectReceiveStream`` must be able to catch what they raise by either
library's class. Each exception here derives from both (they are plain ``Exception``
subclasses in both libraries, so the diamond is harmless), whatever backend runs.
"""

from __future__ import annotations

import anyio
import trio

__all__ = ["BusyReceiver", "ClosedStream", "EndOfStream", "NothingReady"]


class EndOfStream(trio.EndOfChannel, anyio.EndOfStream):
    """No more items will ever come: the poller closed and every POLLER_CLOSED was taken
    (or, for a ``watch()`` stream, its desc was stopped)."""


class NothingReady(trio.WouldBlock, anyio.WouldBlock):
    """``receive_nowait()`` found nothing ready."""


class ClosedStream(trio.ClosedResourceError, anyio.ClosedResourceError):
    """The stream was closed by its own side (``aclose()`` or leaving its ``watch()`` block)."""


class BusyReceiver(trio.BusyResourceError, anyio.BusyResourceError):
    """Another task is already receiving from this single-consumer stream."""

    def __init__(self, action: str) -> None:
        # anyio's __init__ words it "Another task is already {action} this resource".
        Exception.__init__(self, f"another task is already {action}")
