"""WebSocket pub/sub at scale: examples/ws_pubsub.py (netpoll_trio) against trio-websocket.

This process is the load: it pins itself to one core and each server to the other,
opens N WebSocket connections with the ``websockets`` client library (asyncio, one
process), all subscribed to one topic, keeps them idle, and measures for each server
and each N:

- server RSS per idle connection: (VmRSS with N idle - VmRSS with none) / N, from
  ``/proc/<pid>/status``, after a warm-up;
- the time for one broadcast of 64 B and of 4 KiB to reach all N clients: one client
  sends to the topic, the clock stops when the last of the N (the sender included) has
  it; p50 and p99 over ``--broadcasts`` broadcasts (with 20, p99 is the slowest one);
- the same with ``--slow-fraction`` (1%) more clients that never read (a small receive
  buffer, the handshake read and then nothing): they must be dropped at the server's
  output cap, every reading client must get every broadcast, and the server's RSS after
  the phase shows it stayed bounded;
- messages lost or corrupted (every payload carries its sequence number and a pattern
  that is checked byte for byte), non-readers dropped, and the time the server took to
  shut down gracefully (close frames to all N) on SIGINT.

    python benchmarks/ws_scale.py --n 1000,5000,15000 --json ws_scale.json --plot ws_scale.png

Develop with small N (``--n 100``); the default sizes need a quiet 2-core machine and the
fd limit at 20,000 (raised to the hard limit here and in the servers). Every wait has a
timeout and ``--time-limit`` bounds the whole run; what did not finish is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import os
import platform
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection, connect

ROOT = Path(__file__).resolve().parent.parent
TWIN = ROOT / "benchmarks" / "ws_trio_websocket.py"
SERVERS: dict[str, tuple[Path, tuple[str, ...]]] = {
    "netpoll": (ROOT / "examples" / "ws_pubsub.py", ()),
    "trio-websocket": (TWIN, ()),  # a sender task only while a connection has output
    "trio-ws-persistent": (TWIN, ("--persistent-sender",)),  # one for its whole life
}
DEFAULT_SERVERS = ["netpoll", "trio-websocket"]
TOPIC = "/bench"
SIZES = (64, 4096)


# ---------------------------------------------------------------- helpers


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def rss_bytes(pid: int) -> int:
    """VmRSS of ``pid`` in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (with 20 values, p99 is the largest)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def payload(seq: int, size: int) -> bytes:
    """A message that says which it is: its sequence number, then a pattern."""
    head = seq.to_bytes(8, "big")
    body = bytes((seq + i) & 0xFF for i in range(min(size - 8, 256)))
    return (head + body * (size // max(len(body), 1) + 1))[:size]


class DeadlineError(Exception):
    """The run's time limit was reached."""


@dataclass
class Result:
    server: str
    n: int
    slow: int = 0
    connect_s: float = 0.0
    rss_base_mb: float = 0.0
    rss_idle_mb: float = 0.0
    rss_per_conn_b: float = 0.0
    bcast: dict[str, dict[str, float]] = field(default_factory=dict)  # "64" -> p50_ms, p99_ms
    slow_bcast: dict[str, dict[str, float]] = field(default_factory=dict)
    rss_after_slow_mb: float = 0.0
    dropped_slow: int = 0  # non-readers whose connection the server ended
    lost: int = 0  # messages a reading client did not get
    corrupt: int = 0  # messages that arrived wrong, out of order or twice
    shutdown_s: float = 0.0
    run_s: float = 0.0  # wall time of this server at this N, start to exit
    server_stats: str = ""
    error: str = ""


# ---------------------------------------------------------------- the clients


class Fanout:
    """Counts one broadcast's arrivals at the reading clients."""

    def __init__(self) -> None:
        self.expected = b""
        self.seq = -1
        self.readers = 0
        self.arrived = 0
        self.done = asyncio.Event()
        self.last = 0.0
        self.corrupt = 0

    def start(self, message: bytes, seq: int, readers: int) -> None:
        self.expected, self.seq, self.readers = message, seq, readers
        self.arrived = 0
        self.done = asyncio.Event()

    def arrive(self, message: bytes | str, got: list[int]) -> None:
        """A reading client got ``message``; ``got[0]`` is the last seq it had."""
        if message != self.expected or got[0] == self.seq:  # wrong, late, or twice
            self.corrupt += 1
            return
        got[0] = self.seq
        self.arrived += 1
        if self.arrived == self.readers:
            self.last = time.perf_counter()
            self.done.set()


async def reader(ws: ClientConnection, fanout: Fanout) -> None:
    got = [-1]  # the last sequence number this client received
    with contextlib.suppress(websockets.ConnectionClosed):
        async for message in ws:
            fanout.arrive(message, got)


async def open_readers(
    port: int, n: int, fanout: Fanout, tasks: set[asyncio.Task[None]], deadline: float
) -> list[ClientConnection]:
    limit = asyncio.Semaphore(200)  # connections in their handshake at once

    async def one() -> ClientConnection:
        async with limit:
            ws = await connect(
                f"ws://127.0.0.1:{port}{TOPIC}",
                compression=None,
                ping_interval=None,  # idle means idle: no keep-alive pings
                max_size=None,
                open_timeout=60,
                close_timeout=10,
            )
        task = asyncio.create_task(reader(ws, fanout))
        tasks.add(task)
        return ws

    return await asyncio.wait_for(
        asyncio.gather(*(one() for _ in range(n))), timeout=max(1.0, deadline - time.monotonic())
    )


async def open_non_reader(port: int) -> socket.socket:
    """A client that does the handshake, reads the 101, and then never reads again."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: small window
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    request = (
        f"GET {TOPIC} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    await loop.sock_sendall(sock, request.encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = await loop.sock_recv(sock, 1)  # byte by byte: not one byte past the 101
        if not chunk:
            raise ConnectionError("the server closed during the handshake")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(f"handshake refused: {head[:40]!r}")
    return sock


async def was_dropped(sock: socket.socket, timeout: float) -> bool:
    """Read what is left; True if the server ended the connection (EOF or reset)."""
    loop = asyncio.get_running_loop()

    async def drain() -> None:
        while await loop.sock_recv(sock, 65536):
            pass

    try:
        await asyncio.wait_for(drain(), timeout)
    except (TimeoutError, asyncio.TimeoutError):
        return False  # still open: not dropped
    except OSError:
        return True
    return True


async def barrier(
    sender: ClientConnection, fanout: Fanout, n: int, seq: int, timeout: float
) -> None:
    """One broadcast that all ``n`` readers must get: proves every one is subscribed."""
    _, lost = await broadcast_times(sender, fanout, n, 64, 1, seq, timeout)
    if lost:
        raise RuntimeError(f"barrier broadcast lost at {lost} of {n} clients")


async def broadcast_times(
    sender: ClientConnection,
    fanout: Fanout,
    readers: int,
    size: int,
    count: int,
    seq0: int,
    timeout: float,
) -> tuple[list[float], int]:
    """Seconds for each of ``count`` broadcasts to reach all readers; and how many were lost."""
    times: list[float] = []
    lost = 0
    for i in range(count):
        message = payload(seq0 + i, size)
        fanout.start(message, seq0 + i, readers)
        start = time.perf_counter()
        await sender.send(message)
        try:
            await asyncio.wait_for(fanout.done.wait(), timeout)
        except (TimeoutError, asyncio.TimeoutError):
            lost += readers - fanout.arrived
            continue
        times.append(fanout.last - start)
    return times, lost


# ---------------------------------------------------------------- one server, one N


def start_server(
    kind: str, cpu: int | None, max_buffer: int, log: Path
) -> tuple[subprocess.Popen[str], int]:
    """Start a server pinned to ``cpu``; return it and its port."""

    def pin() -> None:
        raise_fd_limit()
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})

    script, options = SERVERS[kind]
    proc = subprocess.Popen(
        [sys.executable, str(script), *options, "--port", "0", "--max-buffer", str(max_buffer)],
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
        preexec_fn=pin,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise RuntimeError(f"{kind} did not start: {line!r} {log.read_text()}")
    return proc, int(line.rsplit(":", 1)[1])


async def settle(seconds: float) -> None:
    await asyncio.sleep(seconds)  # a benchmark, not a test: let the server go idle


async def run_one(kind: str, n: int, args: argparse.Namespace, deadline: float) -> Result:
    result = Result(server=kind, n=n)
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "server.log"
        proc, port = start_server(kind, args.server_cpu, args.max_buffer, log)
        fanout = Fanout()
        tasks: set[asyncio.Task[None]] = set()
        clients: list[ClientConnection] = []
        non_readers: list[socket.socket] = []
        seq = 0
        try:
            # Warm-up: the first connections and messages load code and fill caches.
            warm = await open_readers(port, 10, fanout, tasks, deadline)
            times, _ = await broadcast_times(warm[0], fanout, 10, 64, 3, seq, args.timeout)
            seq += 3
            await asyncio.gather(*(ws.close() for ws in warm))
            await asyncio.gather(*tasks)
            tasks.clear()
            await settle(1.0)
            base = rss_bytes(proc.pid)

            start = time.perf_counter()
            clients = await open_readers(port, n, fanout, tasks, deadline)
            result.connect_s = time.perf_counter() - start
            # The load's own garbage collector must not scan N connections mid-broadcast.
            gc.collect()
            gc.freeze()
            sender = clients[0]
            # Barrier: one broadcast all N receive proves every client is subscribed.
            await barrier(sender, fanout, n, seq, args.timeout)
            seq += 1
            await settle(1.0)
            idle = rss_bytes(proc.pid)
            result.rss_base_mb = base / 2**20
            result.rss_idle_mb = idle / 2**20
            result.rss_per_conn_b = (idle - base) / n

            for size in SIZES:
                check_deadline(deadline)
                cpu = cpu_seconds(proc.pid)
                times, lost = await broadcast_times(
                    sender, fanout, n, size, args.broadcasts, seq, args.timeout
                )
                cpu = cpu_seconds(proc.pid) - cpu
                seq += args.broadcasts
                result.lost += lost
                result.bcast[str(size)] = summary(times)
                result.bcast[str(size)]["server_cpu_ms"] = cpu / args.broadcasts * 1e3

            # 1% of clients that never read.
            check_deadline(deadline)
            result.slow = max(1, round(n * args.slow_fraction))
            non_readers = [await open_non_reader(port) for _ in range(result.slow)]
            _, lost = await broadcast_times(sender, fanout, n, 64, 1, seq, args.timeout)
            seq += 1
            result.lost += lost
            for size in SIZES:
                check_deadline(deadline)
                times, lost = await broadcast_times(
                    sender, fanout, n, size, args.broadcasts, seq, args.timeout
                )
                seq += args.broadcasts
                result.lost += lost
                result.slow_bcast[str(size)] = summary(times)
            await settle(0.5)
            result.rss_after_slow_mb = rss_bytes(proc.pid) / 2**20
            dropped = await asyncio.gather(*(was_dropped(s, 2.0) for s in non_readers))
            result.dropped_slow = sum(dropped)

            # Graceful shutdown with N clients connected: close frames to all.
            start = time.perf_counter()
            proc.send_signal(signal.SIGINT)
            await asyncio.wait_for(asyncio.to_thread(proc.wait), args.timeout)
            result.shutdown_s = time.perf_counter() - start
            await asyncio.wait_for(asyncio.gather(*tasks), args.timeout)
        except (DeadlineError, RuntimeError, OSError, TimeoutError, asyncio.TimeoutError) as err:
            result.error = f"{type(err).__name__}: {err}"
        finally:
            gc.unfreeze()
            result.corrupt = fanout.corrupt
            for s in non_readers:
                s.close()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for ws in clients:
                ws.transport.abort()
            if proc.poll() is None:
                proc.kill()
            out = proc.communicate()[0]
            result.server_stats = " ".join(
                re.findall(r"accepted \d+ connections, dropped \d+", out + log.read_text())
            )
    return result


def summary(times: list[float]) -> dict[str, float]:
    if not times:
        return {"p50_ms": math.nan, "p99_ms": math.nan, "count": 0}
    return {
        "p50_ms": percentile(times, 0.50) * 1e3,
        "p99_ms": percentile(times, 0.99) * 1e3,
        "mean_ms": statistics.fmean(times) * 1e3,
        "count": len(times),
    }


def check_deadline(deadline: float) -> None:
    if time.monotonic() > deadline:
        raise DeadlineError("--time-limit reached")


# ---------------------------------------------------------------- report


LEGEND = """\
B/conn: (server RSS with N idle connections - RSS with none) / N.
64B ms, 4KiB ms: one broadcast reaching all N clients, p50/p99 over the broadcasts
(nearest rank: with 20, p99 is the slowest). cpu ms: server CPU time per broadcast
(64B/4KiB). slow: the same with 1% more clients that never read. dropped: non-readers
the server cut off at its output cap. RSS MB: server RSS with N idle -> after the slow
phase. lost/bad: messages a reading client missed / got wrong, late or twice."""


def title(args: argparse.Namespace, info: dict[str, Any]) -> str:
    sizes = ",".join(str(n) for n in args.n)
    line = (
        f"ws_scale.py --n {sizes} --broadcasts {args.broadcasts} "
        f"--max-buffer {args.max_buffer}: {info['cpu']}, {info['cores']} cores, "
        f"Linux {info['kernel']}, Python {info['python']}, "
        f"server on cpu {args.server_cpu}, load on cpu {args.load_cpu}"
    )
    if max(args.n) < 1000:
        line += "\nSMOKE RUN (development sizes on a shared machine): not a measurement"
    return line


def table(results: list[Result]) -> str:
    head = (
        f"{'server':<15}{'N':>6}{'B/conn':>7}{'64B ms':>15}{'4KiB ms':>15}{'cpu ms':>14}"
        f"{'slow 64B':>15}{'slow 4KiB':>15}{'dropped':>9}{'RSS MB':>10}{'lost':>5}{'bad':>4}"
    )
    lines = [head, "-" * len(head)]

    def pair(d: dict[str, dict[str, float]], size: int, key: str = "p50_ms") -> str:
        s = d.get(str(size))
        if not s:
            return "-"
        if key == "p50_ms":
            return f"{s['p50_ms']:.1f}/{s['p99_ms']:.1f}"
        return f"{s.get(key, math.nan):.1f}"

    for r in results:
        cpu = f"{pair(r.bcast, 64, 'server_cpu_ms')}/{pair(r.bcast, 4096, 'server_cpu_ms')}"
        rss = f"{r.rss_idle_mb:.0f}->{r.rss_after_slow_mb:.0f}"
        lines.append(
            f"{r.server:<15}{r.n:>6}{r.rss_per_conn_b:>7.0f}"
            f"{pair(r.bcast, 64):>15}{pair(r.bcast, 4096):>15}{cpu:>14}"
            f"{pair(r.slow_bcast, 64):>15}{pair(r.slow_bcast, 4096):>15}"
            f"{f'{r.dropped_slow}/{r.slow}':>9}{rss:>10}{r.lost:>5}{r.corrupt:>4}"
        )
        if r.error:
            lines.append(f"    ! {r.error}")
    return "\n".join(lines)


def targets(results: list[Result]) -> str:
    """The issue's targets, netpoll against trio-websocket at each N."""
    by = {(r.server, r.n): r for r in results}
    lines = []
    for n in sorted({r.n for r in results}):
        ours, theirs = by.get(("netpoll", n)), by.get(("trio-websocket", n))
        if ours is None or theirs is None or ours.error or theirs.error:
            continue
        ratio = theirs.rss_per_conn_b / ours.rss_per_conn_b if ours.rss_per_conn_b else math.nan
        parts = [f"N={n}: RSS/conn {ratio:.1f}x smaller (target >= 5x)"]
        for size in SIZES:
            a, b = ours.bcast.get(str(size)), theirs.bcast.get(str(size))
            if a and b and a["count"] and b["count"]:
                parts.append(
                    f"{size}B p50 {a['p50_ms'] / b['p50_ms']:.2f}x (<= 1), "
                    f"p99 {a['p99_ms'] / b['p99_ms']:.2f}x (<= 1.2)"
                )
        lines.append("; ".join(parts))
    return "\n".join(lines)


def plot(results: list[Result], path: str, smoke: bool) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)", file=sys.stderr)
        return
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for kind, color in zip(SERVERS, ("tab:blue", "tab:orange", "tab:green"), strict=True):
        rs = sorted((r for r in results if r.server == kind and not r.error), key=lambda r: r.n)
        if not rs:
            continue
        ns = [r.n for r in rs]
        axes[0].plot(ns, [r.rss_per_conn_b / 1024 for r in rs], "o-", color=color, label=kind)
        for ax, key in ((axes[1], "bcast"), (axes[2], "slow_bcast")):
            for size, style in ((64, "o-"), (4096, "s--")):
                ys = [getattr(r, key).get(str(size), {}).get("p50_ms", math.nan) for r in rs]
                ax.plot(ns, ys, style, color=color, label=f"{kind} {size} B p50")
    axes[0].set(title="Server RSS per idle WebSocket", xlabel="connections", ylabel="KiB")
    axes[1].set(title="Broadcast to all, p50", xlabel="connections", ylabel="ms")
    axes[2].set(title="Broadcast, 1% never read, p50", xlabel="connections", ylabel="ms")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if smoke:
        fig.suptitle("SMOKE RUN (development sizes): not a measurement", color="red")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot written to {path}")


def machine() -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {}
    for name in ("trio", "wsproto", "websockets", "trio_websocket", "netpoll_trio"):
        with contextlib.suppress(ImportError, AttributeError):
            versions[name] = __import__(name).__version__
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "versions": versions,
    }


async def main_async(args: argparse.Namespace) -> list[Result]:
    deadline = time.monotonic() + args.time_limit
    results = []
    for n in args.n:
        for kind in args.servers:
            if time.monotonic() > deadline:
                results.append(Result(server=kind, n=n, error="skipped: --time-limit reached"))
                continue
            print(f"... {kind}, N={n}", end=" ", flush=True)
            start = time.monotonic()
            result = await run_one(kind, n, args, deadline)
            result.run_s = time.monotonic() - start
            print(f"{result.run_s:.0f} s {result.error}", flush=True)
            results.append(result)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--n",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[1000, 5000, 15000],
        help="connection counts, comma-separated (default 1000,5000,15000)",
    )
    parser.add_argument(
        "--servers",
        type=lambda s: s.split(","),
        default=DEFAULT_SERVERS,
        help=f"comma-separated, from {', '.join(SERVERS)} (default: {','.join(DEFAULT_SERVERS)})",
    )
    parser.add_argument("--broadcasts", type=int, default=20, help="per size and phase")
    parser.add_argument("--slow-fraction", type=float, default=0.01)
    parser.add_argument(
        "--max-buffer", type=int, default=32768, help="the servers' output cap per client"
    )
    parser.add_argument("--server-cpu", type=int, default=0, help="-1: do not pin")
    parser.add_argument("--load-cpu", type=int, default=1, help="-1: do not pin")
    parser.add_argument("--timeout", type=float, default=60.0, help="for any one wait, seconds")
    parser.add_argument("--time-limit", type=float, default=1800.0, help="whole run, seconds")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--plot", help="write a PNG plot here (needs matplotlib)")
    parser.add_argument("--table", help="write the text table here")
    args = parser.parse_args()
    for kind in args.servers:
        if kind not in SERVERS:
            parser.error(f"unknown server {kind!r}")
    if args.server_cpu < 0:
        args.server_cpu = None
    raise_fd_limit()
    if args.load_cpu >= 0:
        os.sched_setaffinity(0, {args.load_cpu})
    needed = max(args.n) * (1 + args.slow_fraction) + 100
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if needed > limit:
        parser.error(f"N={max(args.n)} needs ~{needed:.0f} fds; the limit is {limit}")

    results = asyncio.run(main_async(args))
    info = machine()
    report = "\n\n".join(
        part
        for part in (
            title(args, info),
            table(results),
            targets(results),
            LEGEND,
        )
        if part
    )
    print()
    print(report)
    if args.table:
        Path(args.table).write_text(report + "\n")
        print(f"table written to {args.table}")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"machine": info, "args": vars(args), "results": [asdict(r) for r in results]},
                indent=2,
            )
        )
        print(f"results written to {args.json}")
    if args.plot:
        plot(results, args.plot, smoke=max(args.n) < 1000)
    if any(r.error or r.lost or r.corrupt for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
