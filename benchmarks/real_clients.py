"""Real clients against small servers: ``redis-benchmark`` PING and ``wrk`` HTTP/1.1 GET.

For each protocol (RESP PING through ``redis-benchmark``, HTTP/1.1 keep-alive GET through
``wrk``) and each connection count, every server of ``servers.py`` is measured:

* ``stream``         trio ``SocketStream`` per connection
* ``wait-readable``  trio ``trio.lowlevel.wait_readable`` per connection
* ``netpoll``        netpoll_trio, 8 workers on ``receive_batch()``, connection in ``desc.data``
* ``netpoll-nt``     the same without the wait thread (``Config(wait_thread=False)``)
* ``netpoll-pt``     the same in the portable mode (``Config(portable=True)``: trio's
  ``wait_readable`` per connection inside the library, as on macOS)

The server is pinned to one CPU and the client to another (``taskset``); each measurement
starts a fresh server, waits until its port answers, runs the client bounded in requests
and in time, and kills the server. Runs are interleaved (the server order rotates per run)
and the table shows medians, the spread between runs and, per column, the ratio
netpoll / wait_readable taken inside each run (median of those).

Before measuring, every server is checked with a small Python client: PING inline,
multibulk, split and pipelined; HTTP GET keep-alive, pipelined, split; and pipelines
that are sent before any reply is read, into a small receive buffer and from a server
with a small send buffer, so that it must queue its output and wait for writability
(once with the client shutting down its sending side right away).

Not a CI step: it needs ``redis-tools`` and ``wrk`` (``apt-get install redis-tools wrk``)
and a quiet machine with at least two CPUs.

    python benchmarks/real_clients.py                 # both protocols, 50 and 1000, 3 runs
    python benchmarks/real_clients.py --smoke         # checks + one tiny run of each (~30 s)
    python benchmarks/real_clients.py --check         # only the protocol checks
    python benchmarks/real_clients.py --protocols resp --connections 50 --runs 5 --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
SERVERS = ["stream", "wait-readable", "netpoll", "netpoll-nt", "netpoll-pt"]
LABELS = {
    "stream": "trio SocketStream per conn",
    "wait-readable": "trio wait_readable per conn",
    "netpoll": "netpoll receive_batch x8",
    "netpoll-nt": "netpoll receive_batch x8, no thread",
    "netpoll-pt": "netpoll receive_batch x8, portable",
}
PROTOCOLS = {"resp": "RESP PING (redis-benchmark -t ping_mbulk)", "http": "HTTP/1.1 GET (wrk)"}
CLIENTS = {"resp": "redis-benchmark", "http": "wrk"}
START_TIMEOUT = 15.0  # seconds for a server to print its port and accept
TARGET = 1.1  # issue 11: the netpoll server against the wait_readable one, every column


# ----------------------------------------------------------------- servers


@dataclass
class Server:
    kind: str
    proto: str
    cpu: int | None
    sndbuf: int = 0
    proc: subprocess.Popen[str] | None = None
    port: int = 0

    def start(self) -> None:
        command = [sys.executable, str(HERE / "servers.py"), "--kind", self.kind]
        command += ["--proto", self.proto, "--sndbuf", str(self.sndbuf)]
        self.proc = subprocess.Popen(
            _pinned(command, self.cpu),
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,  # killed as a group, never by name
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT
        line = _readline(self.proc.stdout, deadline)
        match = re.match(r"listening on (\d+)", line or "")
        if not match:
            self.stop()
            raise RuntimeError(f"server {self.kind}/{self.proto} did not start: {line!r}")
        self.port = int(match.group(1))
        while True:  # its port answers
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"server {self.kind}/{self.proto} does not accept") from None
                time.sleep(0.05)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None


@contextlib.contextmanager
def running(kind: str, proto: str, cpu: int | None, sndbuf: int = 0) -> Iterator[Server]:
    server = Server(kind, proto, cpu, sndbuf)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _readline(stream: io.TextIOBase, deadline: float) -> str | None:
    import selectors

    with selectors.DefaultSelector() as sel:
        sel.register(stream, selectors.EVENT_READ)
        if not sel.select(max(0.0, deadline - time.monotonic())):
            return None
    return stream.readline()


def _pinned(command: list[str], cpu: int | None) -> list[str]:
    if cpu is None:
        return command
    return ["taskset", "-c", str(cpu), *command]


# ----------------------------------------------------------------- protocol checks


def _exchange(
    port: int, chunks: list[bytes], expect: bytes, rcvbuf: int = 0, half_close: bool = False
) -> None:
    """Send ``chunks`` (pausing between them, so they arrive apart; with ``half_close``,
    then shut down the sending side), then read until ``expect`` has come in full; raise
    if anything else comes or it takes too long."""
    with socket.socket() as sock:
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(10)
        sock.connect(("127.0.0.1", port))
        for i, chunk in enumerate(chunks):
            if i:
                time.sleep(0.02)
            sock.sendall(chunk)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        got = bytearray()
        while len(got) < len(expect):
            data = sock.recv(65536)
            if not data:
                break
            got += data
        if bytes(got) != expect:
            raise AssertionError(
                f"expected {len(expect)} bytes {expect[:60]!r}..., "
                f"got {len(got)} {bytes(got[:60])!r}"
            )


def _dropped_when_not_reading(port: int, cap: int) -> None:
    """A client that sends without ever reading is dropped once the output queued for it
    passes the cap (the netpoll server buffers output; the others stop reading)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(10)
        sock.connect(("127.0.0.1", port))
        deadline = time.monotonic() + 10
        try:
            while time.monotonic() < deadline:
                sock.sendall(b"*1\r\n$4\r\nPING\r\n" * 4096)
        except OSError:  # reset or broken pipe: dropped
            return
    raise AssertionError(f"a client that never reads was not dropped (cap {cap} B)")


def check(kind: str, proto: str, cpu: int | None = None) -> None:
    """Protocol checks against one server; raises AssertionError on a wrong answer."""
    sys.path.insert(0, str(HERE))
    import servers

    # A small send buffer on the server's side, so that the big pipelines below make
    # its sends come up short and it has to queue output and wait for writability.
    with running(kind, proto, cpu, sndbuf=4096) as server:
        port = server.port
        if proto == "resp":
            pong = servers.PONG
            mbulk = servers.RESP_PING_MBULK
            _exchange(port, [b"PING\r\n"], pong)
            _exchange(port, [mbulk], pong)
            _exchange(port, [mbulk[:5], mbulk[5:]], pong)  # split inside a command
            _exchange(port, [mbulk * 3 + b"PING\r\n"], pong * 4)  # pipelined
            _exchange(port, [b"*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\n"], b"$2\r\nhi\r\n")
            _exchange(
                port,
                [b"*3\r\n$6\r\nCONFIG\r\n$3\r\nGET\r\n$4\r\nsave\r\n"],
                b"*2\r\n$4\r\nsave\r\n$0\r\n\r\n",
            )
            # 60k pipelined PINGs into a 4 KiB receive buffer: the server's output backs
            # up (short sends, WRITE interest) and must still arrive complete, in order.
            _exchange(port, [mbulk * 60000], pong * 60000, rcvbuf=4096)
            # The client shuts down its side at once: every answer still arrives.
            _exchange(port, [mbulk * 50000], pong * 50000, rcvbuf=4096, half_close=True)
        else:
            request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
            ok = servers.HTTP_RESPONSE
            _exchange(port, [request], ok)
            _exchange(port, [request, request], ok * 2)  # keep-alive
            _exchange(port, [request[:7], request[7:]], ok)  # split
            _exchange(port, [request * 3], ok * 3)  # pipelined
            post = b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"
            _exchange(port, [post + request], ok * 2)  # a body is skipped
            close = b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n"
            _exchange(port, [close], servers.HTTP_CLOSE_RESPONSE)
            _exchange(port, [request * 10000], ok * 10000, rcvbuf=4096)  # < MAX_OUTPUT
            _exchange(port, [request * 5000], ok * 5000, rcvbuf=4096, half_close=True)
        if kind.startswith("netpoll"):
            _dropped_when_not_reading(port, servers.MAX_OUTPUT)
        if not server.alive():
            raise AssertionError(f"{kind}/{proto} died during the checks")


# ----------------------------------------------------------------- clients


def run_client(
    proto: str, port: int, connections: int, requests: int, seconds: float, cpu: int | None
) -> dict[str, float]:
    """One client run; returns requests/s (and latency where the client reports it)."""
    if proto == "resp":
        command = [
            "redis-benchmark",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-c",
            str(connections),
            "-n",
            str(requests),
            "-t",
            "ping_mbulk",
            "--csv",
        ]
        timeout = max(60.0, 20 * seconds)
    else:
        command = [
            "wrk",
            "-t",
            "1",
            "-c",
            str(connections),
            "-d",
            f"{seconds:g}s",
            "--timeout",
            "5s",
            "--latency",
            f"http://127.0.0.1:{port}/",
        ]
        timeout = seconds + 30
    try:
        done = subprocess.run(
            _pinned(command, cpu), capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return {"rps": float("nan"), "error": 1.0}
    if done.returncode != 0:
        raise RuntimeError(f"{command[0]} failed ({done.returncode}): {done.stderr.strip()}")
    return _parse_resp(done.stdout) if proto == "resp" else _parse_wrk(done.stdout)


def _parse_resp(output: str) -> dict[str, float]:
    rows = [row for row in csv.reader(io.StringIO(output)) if row]
    header = rows[0]
    for row in rows[1:]:
        if row[0].upper().startswith("PING"):
            values = dict(zip(header, row, strict=False))
            return {
                "rps": float(values["rps"]),
                "p50_ms": float(values.get("p50_latency_ms", "nan")),
                "p99_ms": float(values.get("p99_latency_ms", "nan")),
            }
    raise RuntimeError(f"no PING line in redis-benchmark output: {output!r}")


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _parse_wrk(output: str) -> dict[str, float]:
    match = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if not match:
        raise RuntimeError(f"no Requests/sec in wrk output: {output!r}")
    result = {"rps": float(match.group(1))}
    for name, key in (("50%", "p50_ms"), ("99%", "p99_ms")):
        latency = re.search(rf"^\s+{re.escape(name)}\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
        if latency:
            result[key] = float(latency.group(1)) * _UNITS[latency.group(2)]
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    socket_errors = re.search(r"Socket errors: (.*)", output)
    if errors or socket_errors:
        result["error"] = 1.0
        print(f"  wrk reported errors: {(socket_errors or errors).group(0)}", file=sys.stderr)  # type: ignore[union-attr]
    return result


# ----------------------------------------------------------------- the matrix


def measure(args: argparse.Namespace) -> dict[str, object]:
    results: dict[str, dict[str, dict[str, list[dict[str, float]]]]] = {}
    servers_ = args.servers
    total = len(args.protocols) * len(args.connections) * args.runs * len(servers_)
    step = 0
    started = time.monotonic()
    for proto in args.protocols:
        for n in args.connections:
            cell = results.setdefault(proto, {}).setdefault(str(n), {k: [] for k in servers_})
            for run in range(args.runs):
                order = servers_[run % len(servers_) :] + servers_[: run % len(servers_)]
                for kind in order:
                    step += 1
                    elapsed = time.monotonic() - started
                    left = elapsed / (step - 1) * (total - step + 1) if step > 1 else 0
                    print(
                        f"[{step}/{total}] {proto} c={n} run {run + 1}: {kind}"
                        + (f" (about {left:.0f} s left)" if step > 1 else ""),
                        file=sys.stderr,
                        flush=True,
                    )
                    with running(kind, proto, args.server_cpu) as server:
                        result = run_client(
                            proto, server.port, n, args.requests, args.seconds, args.client_cpu
                        )
                        if not server.alive():
                            result["error"] = 1.0
                    result["run"] = run
                    cell[kind].append(result)
    return {
        "settings": {
            "protocols": args.protocols,
            "connections": args.connections,
            "servers": servers_,
            "runs": args.runs,
            "seconds": args.seconds,
            "requests": args.requests,
            "server_cpu": args.server_cpu,
            "client_cpu": args.client_cpu,
        },
        "results": results,
    }


def _median(values: list[float]) -> float:
    values = [v for v in values if v == v]  # no NaN
    return statistics.median(values) if values else float("nan")


def summarize(report: dict[str, object]) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """Per protocol, connection count and server: median, min, max requests/s; for the
    netpoll servers also the median of per-run ratios against wait_readable."""
    out: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    results = report["results"]
    assert isinstance(results, dict)
    for proto, by_n in results.items():
        for n, by_kind in by_n.items():
            base = {r["run"]: r["rps"] for r in by_kind.get("wait-readable", [])}
            for kind, runs in by_kind.items():
                rps = [r["rps"] for r in runs]
                row = {
                    "rps": _median(rps),
                    "min": min(rps, default=float("nan")),
                    "max": max(rps, default=float("nan")),
                    "p50_ms": _median([r.get("p50_ms", float("nan")) for r in runs]),
                    "p99_ms": _median([r.get("p99_ms", float("nan")) for r in runs]),
                    "errors": sum(r.get("error", 0) for r in runs),
                }
                ratios = [r["rps"] / base[r["run"]] for r in runs if base.get(r["run"])]
                row["vs_wait_readable"] = _median(ratios)
                row["vs_wait_readable_min"] = min(ratios, default=float("nan"))
                row["vs_wait_readable_max"] = max(ratios, default=float("nan"))
                out.setdefault(proto, {}).setdefault(n, {})[kind] = row
    return out


def render(report: dict[str, object]) -> str:
    summary = summarize(report)
    settings = report["settings"]
    assert isinstance(settings, dict)
    lines = []
    for proto, by_n in summary.items():
        ns = list(by_n)
        lines.append(
            f"{PROTOCOLS[proto]}: requests/s, median of {settings['runs']} interleaved runs "
            "[min-max]; x = ratio to wait_readable inside each run (median)"
        )
        header = ["server"] + [f"{n} connections" for n in ns]
        body = [header]
        kinds = list(next(iter(by_n.values())))
        for kind in kinds:
            cells = [LABELS.get(kind, kind)]
            for n in ns:
                row = by_n[n][kind]
                cell = f"{row['rps']:,.0f} [{row['min']:,.0f}-{row['max']:,.0f}]"
                if kind != "wait-readable":
                    cell += f" {row['vs_wait_readable']:.2f}x"
                if row["errors"]:
                    cell += f" ({row['errors']:.0f} runs with errors)"
                cells.append(cell)
            body.append(cells)
        widths = [max(len(r[i]) for r in body) for i in range(len(header))]
        for i, row in enumerate(body):
            lines.append(
                "  ".join(
                    c.ljust(w) if j == 0 else c.rjust(w)
                    for j, (c, w) in enumerate(zip(row, widths, strict=True))
                )
            )
            if i == 0:
                lines.append("  ".join("-" * w for w in widths))
        if "netpoll" in kinds and "wait-readable" in kinds:
            worst = min(by_n[n]["netpoll"]["vs_wait_readable"] for n in ns)
            verdict = "met" if worst >= TARGET else "MISSED"
            lines.append(
                f"target (issue 11): netpoll >= {TARGET}x wait_readable in every column: "
                f"{verdict} (worst {worst:.2f}x)"
            )
        lines.append("")
    lines.append(
        f"server on CPU {settings['server_cpu']}, client on CPU {settings['client_cpu']}; "
        f"redis-benchmark -n {settings['requests']}, wrk -t1 -d {settings['seconds']:g}s"
    )
    return "\n".join(lines)


# ----------------------------------------------------------------- command line


def _list(text: str) -> list[str]:
    return [part for part in text.split(",") if part]


def _cpus() -> tuple[int | None, int | None]:
    if not shutil.which("taskset") or not hasattr(os, "sched_getaffinity"):
        return None, None
    allowed = sorted(os.sched_getaffinity(0))
    return (allowed[0], allowed[1]) if len(allowed) >= 2 else (None, None)


def main(argv: list[str] | None = None) -> int:
    server_cpu, client_cpu = _cpus()
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--protocols", type=_list, default=list(PROTOCOLS))
    parser.add_argument(
        "--connections", type=lambda t: [int(x) for x in _list(t)], default=[50, 1000]
    )
    parser.add_argument("--servers", type=_list, default=SERVERS)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="wrk duration per run")
    parser.add_argument(
        "--requests", type=int, default=200_000, help="redis-benchmark requests per run"
    )
    parser.add_argument("--server-cpu", type=int, default=server_cpu)
    parser.add_argument("--client-cpu", type=int, default=client_cpu)
    parser.add_argument("--json", metavar="FILE", help="also write the raw results here")
    parser.add_argument("--check", action="store_true", help="only the protocol checks")
    parser.add_argument(
        "--smoke", action="store_true", help="checks, then one tiny run of each (seconds)"
    )
    args = parser.parse_args(argv)
    unknown = [s for s in args.servers if s not in SERVERS] + [
        p for p in args.protocols if p not in PROTOCOLS
    ]
    if unknown:
        parser.error(f"unknown: {', '.join(unknown)}")

    for proto in args.protocols:
        for kind in args.servers:
            print(f"check {kind}/{proto}", file=sys.stderr, flush=True)
            check(kind, proto, args.server_cpu)
    if args.check:
        print("all checks passed", file=sys.stderr)
        return 0
    missing = [CLIENTS[p] for p in args.protocols if shutil.which(CLIENTS[p]) is None]
    if missing:
        print(f"missing {', '.join(missing)}: apt-get install redis-tools wrk", file=sys.stderr)
        return 2
    if args.smoke:
        args.runs, args.seconds, args.requests, args.connections = 1, 1.0, 2000, [50]
    report = measure(args)
    if args.smoke:
        print("SMOKE RUN (tiny, one run): checks that everything runs, not a measurement")
    if args.json:
        Path(args.json).write_text(json.dumps(report | {"summary": summarize(report)}, indent=2))
    print(render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
