"""Command line of ``python -m netpoll_trio``: the side-by-side benchmark (default) or a demo.

Examples::

    python -m netpoll_trio                         # the short answer (see the README for its time)
    python -m netpoll_trio --full                  # every arm, the whole matrix, the targets
    python -m netpoll_trio -n 1000 --runs 1 --seconds 0.2 --arms epoll,np-trio-callback
    python -m netpoll_trio --json > report.json
    python -m netpoll_trio --plot bench.png        # needs the 'plot' extra (matplotlib)
    python -m netpoll_trio --demo                  # events arriving, in a few lines
"""

from __future__ import annotations

import argparse
import importlib.util
import socket
import sys
import textwrap
import time
from collections.abc import Callable, Sequence

import trio

from .. import Event, Poller, handle_read
from .arms import ARMS
from .report import (
    MEMORY_NOTE,
    PLOT_NEEDS,
    SUMMARY_COLUMNS,
    plot,
    render_summary,
    render_targets,
    render_text,
    table_rows,
)
from .runner import Settings, dumps, run

MAX_CONNECTIONS = 9000  # each needs two fds here; the process limit is often 20000


def default_arms() -> list[str]:
    """The few arms that answer "faster and lighter than a task per connection?"."""
    arms = (
        "trio-stream",
        "trio-tasks",
        "np-trio-batch8",
        "np-trio-callback",
        "np-trio-batch8-pt",  # the portable mode's price, beside the epoll modes
        "epoll",
    )
    return [name for name in arms if name in ARMS]


def missing_modules(arm: str) -> list[str]:
    """Optional modules an arm needs that are not installed (uvloop, for the uvloop arms)."""
    needs = list(getattr(ARMS[arm], "requires", ()))
    if "uvloop" in arm and "uvloop" not in needs:
        needs.append("uvloop")
    return [module for module in needs if importlib.util.find_spec(module) is None]


def _connection_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 1000,9000, got {text!r}") from None
    if not counts or any(not 1 <= n <= MAX_CONNECTIONS for n in counts):
        raise argparse.ArgumentTypeError(f"each count must be between 1 and {MAX_CONNECTIONS}")
    return counts


def _arm_names(text: str) -> list[str]:
    names = [part for part in text.split(",") if part]
    unknown = [name for name in names if name not in ARMS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown arm(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(ARMS)}"
        )
    return names


def _positive(kind: type[float] | type[int]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError("must be positive")
        return value

    return parse


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    defaults = Settings()
    columns = "\n".join(
        textwrap.fill(text, 79, initial_indent=f"  {name:<9}", subsequent_indent=" " * 11)
        for name, text in SUMMARY_COLUMNS
    )
    description = (
        "Is netpoll_trio faster and lighter than one trio task per connection, and by how "
        "much? Serves the same AF_UNIX socketpairs (their peers live in a separate "
        "load-driver process) with a trio task per connection, netpoll_trio (a worker pool "
        "and callbacks) and a raw select.epoll loop, and prints one short table per "
        "connection count and a sentence (about a minute). --full runs every arm "
        "(asyncio/uvloop add_reader, watch streams, the threadless mode, ...) and adds the "
        "whole matrix and the developers' targets. --demo is the quick demo."
    )
    parser = argparse.ArgumentParser(
        prog="python -m netpoll_trio",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.fill(description, 79),
        epilog="Columns of the default table:\n" + columns,
    )
    parser.add_argument(
        "-n",
        "--connections",
        type=_connection_counts,
        default=list(defaults.connections),
        help="comma-separated connection counts (default: 1000,9000)",
    )
    parser.add_argument(
        "--arms",
        type=_arm_names,
        default=None,
        help=f"comma-separated arms (default: {','.join(default_arms())}; with --full: all): "
        f"{', '.join(ARMS)}",
    )
    parser.add_argument(
        "--full",
        action="store_true",
        help="every arm, the whole matrix of figures, and the targets",
    )
    parser.add_argument(
        "--runs",
        type=_positive(int),
        default=defaults.runs,
        help="runs per arm; medians are reported (default: %(default)s)",
    )
    parser.add_argument(
        "--seconds",
        type=_positive(float),
        default=defaults.seconds,
        help="seconds per load phase (default: %(default)s)",
    )
    parser.add_argument(
        "--no-memory", action="store_true", help="skip the tracemalloc pass (no B/conn)"
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the report as JSON on stdout (progress goes to stderr)",
    )
    parser.add_argument(
        "--plot", metavar="FILE.png", help="also save a chart (needs matplotlib: the 'plot' extra)"
    )
    parser.add_argument(
        "--demo",
        action="store_true",
        help="run the small demo instead: events from socketpairs reach 4 workers",
    )
    args = parser.parse_args(argv)
    if args.arms is None:
        args.arms = list(ARMS) if args.full else default_arms()
    return args


def _drain(sock: socket.socket) -> int:
    """Read until EAGAIN or EOF (edge-triggered: the next event comes only with new data)."""
    total = 0
    while True:
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return total
        if not data:
            return total
        total += len(data)


async def demo(connections: int = 200) -> str:
    """Events from ``connections`` socketpairs reach 4 worker tasks through the shared stream.

    Each server socket rides in its desc (``data=``); the workers take ready descs in
    batches with :meth:`~netpoll_trio.Poller.receive_batch`, read each until EAGAIN, and
    stop when the poller closes (``POLLER_CLOSED`` for whatever is still registered, then
    the end of the stream).
    """
    pairs = [socket.socketpair() for _ in range(connections)]
    try:
        received = 0
        async with Poller() as poller, trio.open_nursery() as nursery:
            for server, _client in pairs:
                poller.start(handle_read(server, data=server))

            async def worker() -> None:
                nonlocal received
                while True:
                    try:
                        batch = await poller.receive_batch()
                    except trio.EndOfChannel:  # closed, and every POLLER_CLOSED taken
                        return
                    for desc, event in batch:
                        if event & Event.POLLER_CLOSED:
                            continue  # the sockets are closed below, after the poller
                        sock = desc.data  # the server socket, given as data= above
                        assert isinstance(sock, socket.socket)
                        received += _drain(sock)
                    if received == connections * 5 and not poller.closed:
                        await poller.aclose()  # everything arrived: end the demo

            for _ in range(4):
                nursery.start_soon(worker)
            for _server, client in pairs:
                client.send(b"hello")
        stats = poller.statistics()
        return (
            f"{connections} connections, {received} bytes received by 4 workers; "
            f"{stats.events_delivered} events in {stats.batches} batches, "
            f"{stats.wakeups} wake-ups of the wait thread"
        )
    finally:
        for a, b in pairs:
            a.close()
            b.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.demo:
        print(trio.run(demo))
        return 0
    # Optional dependencies first: nothing runs for 90 s and then fails.
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        print(f"{PLOT_NEEDS} (nothing was run)", file=sys.stderr)
        return 2
    arms = []
    for arm in args.arms:
        missing = missing_modules(arm)
        if missing:
            print(
                f"skipping {arm}: needs {', '.join(missing)} (pip install 'netpoll_trio[bench]')",
                file=sys.stderr,
            )
        else:
            arms.append(arm)
    if not arms:
        print("nothing to run: every chosen arm was skipped", file=sys.stderr)
        return 2
    settings = Settings(
        connections=args.connections,
        arms=arms,
        runs=args.runs,
        seconds=args.seconds,
        memory=not args.no_memory,
    )
    started = time.monotonic()
    report = _run_with_progress(settings, quiet=args.json)
    print(f"ran in {time.monotonic() - started:.0f} s", file=sys.stderr)
    if args.json:
        print(dumps(report))
    elif args.full:
        _print_full(report)
    else:
        print(render_summary(report))
        print("\n(--full: every arm, the whole matrix and the targets; --help: the options)")
    if args.plot:
        plot(report, args.plot)
        print(f"chart saved to {args.plot}", file=sys.stderr)
    return 0


class _Plan:
    """The steps the runner reports, with a rough cost each, for a total and a time left.

    The runner calls ``progress(message)`` as each step *starts*: per N, ``runs`` rounds of
    every arm, then (with memory) one library pass and one tracemalloc pass per arm. A step
    is counted done when the next one starts. The time left assumes each step costs about
    what the planned weights say, scaled by the speed seen so far.
    """

    def __init__(self, settings: Settings) -> None:
        self.weights: list[float] = []
        for n in settings.connections:
            per_run = 2 * settings.seconds + 0.05 + n * 4e-5  # two load phases + the rest
            self.weights += [per_run] * (settings.runs * len(settings.arms))
            if settings.memory:
                self.weights += [n * 1e-4] * (1 + len(settings.arms))
        self.total = len(self.weights)
        self.started = 0  # steps started so far
        self.t0 = time.monotonic()

    def step(self) -> None:
        self.started += 1
        self.total = max(self.total, self.started)

    @property
    def done(self) -> int:
        return max(self.started - 1, 0)

    def left(self) -> str:
        if self.done == 0:
            return "estimating time left"
        weights = self.weights + [self.weights[-1]] * (self.total - len(self.weights))
        done = sum(weights[: self.done])
        rest = sum(weights[self.done :])
        seconds = (time.monotonic() - self.t0) / done * rest
        return f"about {seconds:.0f} s left"


def _run_with_progress(settings: Settings, quiet: bool) -> dict[str, object]:
    plan = _Plan(settings)
    try:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    except ImportError:  # the 'bench' extra is not installed: plain lines on stderr

        def line(message: str) -> None:
            plan.step()
            print(f"[{plan.started}/{plan.total}] {message} ({plan.left()})", file=sys.stderr)

        return run(settings, line)
    console = Console(stderr=True)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} done"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[left]}"),
        console=console,
        disable=quiet and not console.is_terminal,
    ) as progress:
        task = progress.add_task("starting", total=plan.total, left="")

        def advance(message: str) -> None:
            plan.step()
            progress.update(
                task, description=message, completed=plan.done, total=plan.total, left=plan.left()
            )

        report = run(settings, advance)
        progress.update(task, description="finished", completed=plan.total, left="")
        return report


def _print_full(report: dict[str, object]) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(render_text(report))
        return
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)  # a file or a pipe: do not squeeze the table
    for title, body in table_rows(report):
        table = Table(title=title, title_justify="left")
        for i, column in enumerate(body[0]):
            table.add_column(column, justify="left" if i == 0 else "right")
        for row in body[1:]:
            table.add_row(*row)
        console.print(table)
    console.print(MEMORY_NOTE, highlight=False)
    console.print()
    console.print("\n".join(render_targets(report)), highlight=False)
