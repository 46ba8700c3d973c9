"""The portable mode (netpoll_trio._portable): what is particular to it.

The whole Poller suite already runs in this mode too (``poller_config``'s ``portable``
id, see conftest). Here: how the mode is chosen, the loops it refuses, and the emulated
epoll behaviour where it differs from epoll or needs its own care -- each test run in
every mode where the behaviour exists, with the difference spelt out.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import textwrap
from typing import Any

import anyio
import pytest
import trio
import trio.testing

import netpoll_trio as np
from netpoll_trio import Config, Event, Poller

from .conftest import drain, exact_edges
from .test_poller import Signal, round_trip

READ, WRITE, ET, ONE_SHOT = Event.READ, Event.WRITE, Event.EDGE_TRIGGERED, Event.ONE_SHOT


# ----------------------------------------------------------------- choosing the mode


def test_config_is_portable_exactly_where_epoll_is_missing() -> None:
    assert not Config().uses_portable_mode  # Linux: epoll
    assert Config(portable=True).uses_portable_mode
    assert not Config(portable=False).uses_portable_mode


def test_without_epoll_the_poller_runs_portably_and_only_epoll_refuses() -> None:
    # A platform without epoll, simulated in a child process as the import test does
    # (select.epoll simply does not exist on macOS or the BSDs).
    code = textwrap.dedent(
        """
        import select, socket
        epoll = select.epoll
        del select.epoll
        import anyio, asyncio, trio  # asyncio now picks the poll() selector, as on macOS
        import netpoll_trio as np

        async def serve():
            a, b = socket.socketpair()
            got = anyio.Event()
            async with np.Poller() as poller:
                assert poller._portable
                poller.start(np.handle_read(a), lambda ev: got.set())
                b.send(b"x")
                await got.wait()
            a.close(); b.close()

        async def on_trio():
            del select.epoll  # trio needs it on Linux: only once its run has its own
            await serve()

        asyncio.run(serve())
        select.epoll = epoll
        trio.run(on_trio)
        for make in (np.Epoll, lambda: np.Poller(np.Config(portable=False))):
            try:
                make()
            except np.NetpollError as exc:
                print(exc)
            else:
                raise AssertionError("no error")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    epoll_error, poller_error = out.stdout.splitlines()
    assert "Linux-only" in epoll_error
    assert "Poller" in epoll_error  # it names what works instead
    assert "Config(portable=False)" in poller_error


def test_an_asyncio_loop_without_add_reader_is_refused_at_enter() -> None:
    class ProactorLike(asyncio.SelectorEventLoop):
        add_reader = asyncio.BaseEventLoop.add_reader  # what Windows' proactor loop has

    async def main() -> None:
        poller = Poller(Config(portable=True))
        with pytest.raises(RuntimeError, match=r"ProactorLike.*selector loop"):
            await poller.__aenter__()
        await poller.aclose()

    loop = ProactorLike()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


# ----------------------------------------------------------------- emulated epoll


@pytest.mark.anyio
async def test_edge_triggered_stream_desc_may_be_reported_again_while_ready(
    make_pair: Any, poller_config: Config
) -> None:
    """The documented difference: portably an edge-triggered desc is reported again when
    its consumer comes back for more while it is still ready (one extra EAGAIN for code
    that drains); epoll reports an edge once. Nothing is lost either way."""
    a, b = make_pair()
    probe = make_pair()
    async with Poller(poller_config) as poller:
        desc = np.handle_read(a)  # READ | EDGE_TRIGGERED
        poller.start(desc)
        b.send(b"x")
        assert await poller.receive() == (desc, READ)  # taken, not drained
        await round_trip(poller, probe)
        if exact_edges(poller_config):
            with pytest.raises(anyio.WouldBlock):
                poller.receive_nowait()
        else:
            assert poller.receive_nowait() == (desc, READ)
        assert drain(a) == b"x"
        b.send(b"y")  # a new edge: reported in every mode
        assert await poller.receive() == (desc, READ)
        assert drain(a) == b"y"
        poller.stop(desc)


@pytest.mark.anyio
async def test_one_shot_desc_ready_both_ways_comes_in_one_record(
    make_pair: Any, poller_config: Config
) -> None:
    a, b = make_pair()
    b.send(b"x")  # readable, and writable as any fresh socket
    got, step = [], Signal()
    async with Poller(poller_config) as poller:
        desc = np.handle(a, READ | WRITE | ONE_SHOT)

        def on_event(event: Event) -> None:
            got.append(event)
            step.set()

        poller.start(desc, on_event)
        await step.wait()
        assert got == [READ | WRITE]
        drain(a)
        poller.modify(desc, WRITE | ONE_SHOT)  # re-armed, writable only now
        await step.wait()
        assert got == [READ | WRITE, WRITE]
        poller.stop(desc)


@pytest.mark.anyio
async def test_one_shot_re_armed_by_its_own_callback_keeps_reporting(
    make_pair: Any, poller_config: Config
) -> None:
    """A callback's resume() runs while the loop's watcher is in its callback: the
    watcher must not pause after it (else the re-arm would be lost)."""
    a, b = make_pair()
    received, step = bytearray(), Signal()
    async with Poller(poller_config) as poller:
        desc = np.handle_read_once(a)

        def on_event(event: Event) -> None:
            received.extend(drain(a))
            poller.resume(desc)
            step.set()

        poller.start(desc, on_event)
        for byte in b"abc":
            b.send(bytes([byte]))
            await step.wait()
        poller.stop(desc)
    assert bytes(received) == b"abc"


@pytest.mark.anyio
async def test_regular_file_is_refused_as_epoll_refuses_it(
    tmp_path: Any, make_pair: Any, poller_config: Config
) -> None:
    with open(tmp_path / "f", "wb") as f:
        async with Poller(poller_config) as poller:
            with pytest.raises(PermissionError, match=f"fd {f.fileno()}"):
                poller.start(np.handle_read(f.fileno()))
            await round_trip(poller, make_pair())  # and it keeps working


@pytest.mark.trio
async def test_trio_refusing_to_watch_an_fd_reports_err_and_keeps_working(
    make_pair: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """trio checks an fd only when a task first waits for it, after start() returned:
    here another task already waits to read it (trio allows one). The registration gets
    ERR once (its consumer looks), the refusal is logged, and the poller keeps working."""
    a, b = make_pair()
    got, step = [], Signal()
    async with Poller(Config(portable=True)) as poller, trio.open_nursery() as nursery:
        nursery.start_soon(trio.lowlevel.wait_readable, a)
        await trio.testing.wait_all_tasks_blocked()

        def on_event(event: Event) -> None:
            got.append(event)
            step.set()

        with caplog.at_level(logging.WARNING, logger="netpoll_trio"):
            desc = np.handle_read(a)
            poller.start(desc, on_event)
            await step.wait()
        assert got == [Event.ERR]
        assert f"could not watch fd {a.fileno()} for reading" in caplog.text
        await round_trip(poller, make_pair())
        poller.stop(desc)
        b.send(b"x")  # ends the other waiter
    assert got == [Event.ERR]


@pytest.mark.anyio
async def test_a_platform_that_cannot_tell_files_apart_still_replaces_a_stale_entry(
    anyio_backend: Any, make_pair: Any
) -> None:
    """macOS and the BSDs give a socket no inode (fstat zero-fills it): a reused fd
    number cannot be told from the same socket, and is taken for a stale entry."""
    from netpoll_trio._backends import current_backend
    from netpoll_trio._portable import UNKNOWN, LoopInterestList, file_identity

    def cannot_tell(fd: int) -> int:
        file_identity(fd)  # still refuses what epoll refuses
        return UNKNOWN

    reports: list[tuple[int, int]] = []
    seen = anyio.Event()

    def report(fd: int, mask: int) -> None:
        reports.append((fd, mask))
        seen.set()

    interest = LoopInterestList(current_backend(), report, identity=cannot_tell)
    a, _ = make_pair()
    fd = a.fileno()
    interest.register(fd, np.EpollEvent.EPOLLIN)
    a.close()  # without unregister(): stale
    c, d = make_pair()
    assert c.fileno() == fd
    interest.register(fd, np.EpollEvent.EPOLLIN)  # replaced, not EEXIST
    d.send(b"x")
    with anyio.fail_after(10):
        await seen.wait()
    assert reports[0] == (fd, np.EpollEvent.EPOLLIN)
    interest.close()


@pytest.mark.anyio
async def test_an_fd_the_loop_refuses_is_refused_or_reported_once_never_in_a_loop(
    backend_name: str, make_pair: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """/dev/null: epoll refuses it. asyncio asks its selector at once (start() raises);
    trio only when its watcher first waits: the stream gets ERR once, and re-arming it
    does not try again (which would fail again, in a loop)."""
    fd = os.open(os.devnull, os.O_RDONLY)
    try:
        async with Poller(Config(portable=True)) as poller:
            desc = np.new_desc(fd, READ)
            with caplog.at_level(logging.WARNING, logger="netpoll_trio"):
                try:
                    poller.start(desc)
                except PermissionError:
                    assert backend_name == "asyncio"
                    await round_trip(poller, make_pair())  # and it keeps working
                    return
                assert await poller.receive() == (desc, Event.ERR)  # re-armed on taking
                for _ in range(3):
                    await round_trip(poller, make_pair())
                with pytest.raises(anyio.WouldBlock):
                    poller.receive_nowait()
            assert caplog.text.count("could not watch fd") == 1
            poller.stop(desc)
    finally:
        os.close(fd)
