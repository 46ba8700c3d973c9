"""Command line of ``python -m netpoll_trio``: the side-by-side benchmark (default) or a demo.

Examples::

    python -m netpoll_trio                         # ~1 minute, N = 1000 and 9000
    python -m netpoll_trio -n 1000 --runs 1 --seconds 0.2 --arms epoll,np-trio-callback
    python -m netpoll_trio --json > report.json
    python -m netpoll_trio --plot bench.png
    python -m netpoll_trio --demo                  # events arriving, in a few lines
"""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Callable, Sequence

import trio

from .. import Event, Poller, handle_read
from .arms import ARMS
from .report import plot, render_text, table_rows
from .runner import Settings, dumps, run

MAX_CONNECTIONS = 9000  # each needs two fds here; the process limit is often 20000


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
    parser = argparse.ArgumentParser(
        prog="python -m netpoll_trio",
        description="Side-by-side benchmark of netpoll_trio against one task per connection, "
        "asyncio/uvloop add_reader and a raw select.epoll loop, on AF_UNIX socketpairs whose "
        "peers live in a separate load-driver process.",
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
        default=list(defaults.arms),
        help=f"comma-separated arms (default: all): {', '.join(ARMS)}",
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
    parser.add_argument("--no-memory", action="store_true", help="skip the tracemalloc pass")
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
    return parser.parse_args(argv)


async def demo(connections: int = 200) -> str:
    """Events from ``connections`` socketpairs reach 4 worker tasks through the shared stream."""
    pairs = [socket.socketpair() for _ in range(connections)]
    try:
        received = 0
        async with Poller() as poller, trio.open_nursery() as nursery:
            socks = {}
            for server, _client in pairs:
                desc = handle_read(server)
                socks[desc] = server
                poller.start(desc)

            async def worker() -> None:
                nonlocal received
                async for desc, event in poller:
                    if event & Event.POLLER_CLOSED:
                        continue
                    received += len(socks[desc].recv(65536))
                    if received == connections * 5:
                        await poller.aclose()

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
    settings = Settings(
        connections=args.connections,
        arms=args.arms,
        runs=args.runs,
        seconds=args.seconds,
        memory=not args.no_memory,
    )
    report = _run_with_progress(settings, quiet=args.json)
    if args.json:
        print(dumps(report))
    else:
        _print_tables(report)
    if args.plot:
        plot(report, args.plot)
        print(f"chart saved to {args.plot}", file=sys.stderr)
    return 0


def _run_with_progress(settings: Settings, quiet: bool) -> dict[str, object]:
    steps = len(settings.connections) * len(settings.arms) * (settings.runs + settings.memory)
    try:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    except ImportError:  # the 'bench' extra is not installed: plain lines on stderr
        return run(settings, lambda message: print(message, file=sys.stderr, flush=True))
    console = Console(stderr=True)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        disable=quiet and not console.is_terminal,
    ) as progress:
        task = progress.add_task("starting", total=steps)

        def advance(message: str) -> None:
            progress.update(task, description=message, advance=1)

        return run(settings, advance)


def _print_tables(report: dict[str, object]) -> None:
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
    from .report import MEMORY_NOTE, render_targets

    console.print("\n".join(render_targets(report)), highlight=False)
    console.print(MEMORY_NOTE, highlight=False)
