"""trio-specific rules: every public async method is a checkpoint (trio.testing)."""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing

import netpoll_trio as np
from netpoll_trio import Config, Event, Poller

pytestmark = [pytest.mark.trio]


async def test_async_methods_are_checkpoints(
    sockpair: tuple[socket.socket, socket.socket], poller_config: Config
) -> None:
    a, b = sockpair
    with trio.testing.assert_checkpoints():
        poller = await Poller(poller_config).__aenter__()
    try:
        desc = np.handle_read(a)
        watch = poller.watch(desc)
        with trio.testing.assert_checkpoints():
            events = await watch.__aenter__()
        b.send(b"x")
        await trio.testing.wait_all_tasks_blocked()
        while not poller.statistics().events_delivered:
            await trio.sleep(0)
        with trio.testing.assert_checkpoints():  # an event is ready: still a checkpoint
            assert await events.__anext__() == Event.READ
        await watch.__aexit__(None, None, None)
        other = np.handle_read(b)
        poller.start(other)
        a.send(b"y")
        while not poller.statistics().ready:
            await trio.sleep(0)
        with trio.testing.assert_checkpoints():
            assert await poller.__anext__() == (other, Event.READ)
        poller.stop(other)
    finally:
        with trio.testing.assert_checkpoints():
            await poller.aclose()
        await poller.__aexit__(None, None, None)


async def test_cancelled_checkpoint_loses_no_event(
    sockpair: tuple[socket.socket, socket.socket],
    poller_config: Config,
) -> None:
    a, b = sockpair
    async with Poller(poller_config) as poller, poller.watch(np.handle_read(a)) as events:
        b.send(b"x")
        while not poller.statistics().events_delivered:
            await trio.sleep(0)
        with trio.CancelScope() as scope:
            scope.cancel()
            await events.__anext__()  # cancelled at its checkpoint, before taking
        assert scope.cancelled_caught
        assert await events.__anext__() == Event.READ  # still there
