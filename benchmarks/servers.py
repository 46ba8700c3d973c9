"""Small servers for the real-client benchmark (``real_clients.py``): RESP PING and HTTP/1.1.

One protocol (``--proto resp`` answers PING like Redis; ``--proto http`` answers every GET
with a small 200, keep-alive) served in one of four styles (``--kind``):

``stream``
    trio, one task per connection in ``trio.SocketStream.receive_some`` / ``send_all``.
``wait-readable``
    trio, one task per connection parked in ``trio.lowlevel.wait_readable``, reading the
    raw socket until EAGAIN.
``netpoll``
    netpoll_trio: 8 worker tasks in ``await poller.receive_batch()``; each connection is
    reached through ``desc.data``, no dictionary.
``netpoll-nt``
    the same with ``Config(wait_thread=False)`` (no wait thread).
``netpoll-pt``
    the same with ``Config(portable=True)`` (the portable mode, as on macOS).

Prints ``listening on PORT`` once it accepts connections (``--port 0``, the default, picks
a free port), then serves until killed.

    python benchmarks/servers.py --kind netpoll --proto resp [--port 6380]

The netpoll server is written the way a production server should be (the pattern the
README recommends): it reads until EAGAIN (or EOF) before it believes a hang-up, queues
what a short or refused send left over and asks for WRITE interest with
``poller.modify()`` until it is flushed, drops a client whose unsent output passes a cap
(it does not read) or whose unparsed input passes a cap (no complete request), and
stops a desc before closing its socket.
"""

from __future__ import annotations

import argparse
import errno
import socket
import sys

import trio

from netpoll_trio import Config, Desc, Event, Poller, handle_listener, handle_read

MAX_INPUT = 64 * 1024  # unparsed bytes a client may leave us with (no complete request)
MAX_OUTPUT = 1024 * 1024  # unsent bytes we keep for a client that does not read
WORKERS = 8
READ_BUDGET = 16  # reads per event before a connection yields to the others
POLLER_CLOSED = int(Event.POLLER_CLOSED)
READABLE = int(Event.READ | Event.READ_HUP | Event.HUP | Event.ERR)  # read to learn which
FLUSH = int(Event.WRITE | Event.HUP | Event.ERR)
READ = Event.READ | Event.EDGE_TRIGGERED
READ_WRITE = Event.READ | Event.WRITE | Event.EDGE_TRIGGERED
ACCEPT_FAILURES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


# ----------------------------------------------------------------- the protocols


class Protocol:
    """Turns received bytes into replies. ``feed()`` returns the replies for every
    complete request so far; ``closing`` is set when the peer asked us to close (HTTP
    ``Connection: close``); ``ValueError`` means a malformed request or too much input."""

    __slots__ = ("buffer", "closing")

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.closing = False

    def feed(self, data: bytes) -> bytes:
        raise NotImplementedError


PONG = b"+PONG\r\n"
RESP_PING_MBULK = b"*1\r\n$4\r\nPING\r\n"


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


class Resp(Protocol):
    """Redis' protocol, enough for ``redis-benchmark -t ping``: PING (inline or
    multibulk, pipelined or split anywhere), ECHO, and CONFIG GET (answered with an empty
    value, so that redis-benchmark's start-up query succeeds); other commands get an
    error reply, as Redis gives."""

    __slots__ = ()

    def feed(self, data: bytes) -> bytes:
        buffer = self.buffer
        if not buffer and data == RESP_PING_MBULK:  # the common case, without parsing
            return PONG
        buffer += data
        replies = []
        while buffer:
            parsed = _parse_resp(buffer)
            if parsed is None:
                break
            args, used = parsed
            del buffer[:used]
            replies.append(_execute(args))
        if len(buffer) > MAX_INPUT:
            raise ValueError("request too large")
        return b"".join(replies)


def _parse_resp(buffer: bytearray) -> tuple[list[bytes], int] | None:
    """One command from the front of ``buffer``: (arguments, bytes used), or None when
    it is not complete yet."""
    if buffer[0] != ord("*"):  # inline command: one line
        end = buffer.find(b"\n")
        if end < 0:
            return None
        return bytes(buffer[:end]).strip().split(), end + 1
    end = buffer.find(b"\r\n")
    if end < 0:
        return None
    count = int(buffer[1:end])
    if count > 1024:
        raise ValueError("too many arguments")
    pos = end + 2
    args = []
    for _ in range(count):
        end = buffer.find(b"\r\n", pos)
        if end < 0:
            return None
        if buffer[pos] != ord("$"):
            raise ValueError("expected a bulk string")
        size = int(buffer[pos + 1 : end])
        if size < 0 or size > MAX_INPUT:
            raise ValueError("bad bulk length")
        start = end + 2
        if len(buffer) < start + size + 2:
            return None
        args.append(bytes(buffer[start : start + size]))
        pos = start + size + 2
    return args, pos


def _execute(args: list[bytes]) -> bytes:
    if not args:
        return b""
    name = args[0].upper()
    if name == b"PING":
        return PONG if len(args) == 1 else _bulk(args[1])
    if name == b"ECHO" and len(args) == 2:
        return _bulk(args[1])
    if name == b"CONFIG" and len(args) == 3 and args[1].upper() == b"GET":
        return b"*2\r\n" + _bulk(args[2]) + _bulk(b"")
    return b"-ERR unknown command '" + name + b"'\r\n"


HTTP_BODY = b"Hello, World!"
HTTP_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (
    len(HTTP_BODY),
    HTTP_BODY,
)
HTTP_CLOSE_RESPONSE = HTTP_RESPONSE.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)
HTTP_BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class Http(Protocol):
    """HTTP/1.1 keep-alive, enough for ``wrk``: every request (pipelined or split
    anywhere) gets the same small 200; a request body announced by Content-Length is
    skipped; ``Connection: close`` (or HTTP/1.0 without keep-alive) closes after the
    reply."""

    __slots__ = ("last", "skip")

    def __init__(self) -> None:
        super().__init__()
        self.skip = 0  # body bytes of the current request still to be dropped
        self.last = b""  # the last request that came alone and got HTTP_RESPONSE

    def feed(self, data: bytes) -> bytes:
        buffer = self.buffer
        fresh = not buffer and not self.skip
        if fresh and data == self.last:
            return HTTP_RESPONSE  # the same request again, as keep-alive clients send it
        buffer += data
        replies = []
        while buffer and not self.closing:
            if self.skip:
                dropped = min(self.skip, len(buffer))
                del buffer[:dropped]
                self.skip -= dropped
                continue
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            head = bytes(buffer[:end]).lower()
            del buffer[: end + 4]
            replies.append(self._respond(head))
        if len(buffer) > MAX_INPUT and not self.skip:
            raise ValueError("request head too large")
        if fresh and not buffer and not self.skip and replies == [HTTP_RESPONSE]:
            self.last = bytes(data)  # from the same state, the same bytes: the same reply
        return b"".join(replies)

    def _respond(self, head: bytes) -> bytes:
        request_line, _, headers = head.partition(b"\r\n")
        parts = request_line.split()
        if len(parts) != 3 or not parts[2].startswith(b"http/1."):
            self.closing = True
            return HTTP_BAD_REQUEST
        keep_alive = parts[2] == b"http/1.1"
        for line in headers.split(b"\r\n"):
            name, _, value = line.partition(b":")
            name, value = name.strip(), value.strip()
            if name == b"content-length":
                try:
                    self.skip = int(value)
                except ValueError:
                    self.closing = True
                    return HTTP_BAD_REQUEST
            elif name == b"connection":
                keep_alive = value == b"keep-alive" or (keep_alive and value != b"close")
        if not keep_alive:
            self.closing = True
            return HTTP_CLOSE_RESPONSE
        return HTTP_RESPONSE


PROTOCOLS: dict[str, type[Protocol]] = {"resp": Resp, "http": Http}


def listen(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(4096)
    sock.setblocking(False)
    return sock


SNDBUF = 0  # --sndbuf: a small send buffer for the checks (short sends, WRITE interest)


def tune(sock: socket.socket) -> None:
    """Options every server sets on an accepted connection."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if SNDBUF:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF)


def announce(sock: socket.socket) -> None:
    print(f"listening on {sock.getsockname()[1]}", flush=True)


# ----------------------------------------------------------------- trio SocketStream


async def serve_streams(listener: socket.socket, protocol: type[Protocol]) -> None:
    async def handler(stream: trio.SocketStream) -> None:
        if SNDBUF:
            stream.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF)
        proto = protocol()
        try:
            while not proto.closing:
                data = await stream.receive_some(65536)
                if not data:
                    return
                try:
                    out = proto.feed(data)
                except ValueError:
                    return
                if out:
                    await stream.send_all(out)
        except trio.BrokenResourceError:
            return
        finally:
            await trio.aclose_forcefully(stream)

    trio_listener = trio.SocketListener(trio.socket.from_stdlib_socket(listener))
    announce(listener)
    await trio.serve_listeners(handler, [trio_listener])


# ----------------------------------------------------------------- wait_readable


async def serve_wait_readable(listener: socket.socket, protocol: type[Protocol]) -> None:
    wait_readable = trio.lowlevel.wait_readable

    async def serve(sock: socket.socket) -> None:
        proto = protocol()
        try:
            while not proto.closing:
                await wait_readable(sock)
                out = []
                eof = False
                while True:  # until EAGAIN or EOF
                    try:
                        data = sock.recv(65536)
                    except BlockingIOError:
                        break
                    except OSError:  # reset by the peer
                        return
                    if not data:
                        eof = True
                        break
                    try:
                        out.append(proto.feed(data))
                    except ValueError:
                        return
                reply = b"".join(out)
                if reply and not await send_all(sock, reply):
                    return
                if eof:
                    return
        finally:
            sock.close()

    announce(listener)
    async with trio.open_nursery() as nursery:
        while True:
            await wait_readable(listener)
            while True:
                try:
                    sock, _ = listener.accept()
                except BlockingIOError:
                    break
                except OSError as err:
                    if err.errno in ACCEPT_FAILURES:
                        await trio.sleep(0.01)  # out of fds or memory: let some close
                        break
                    raise
                sock.setblocking(False)
                tune(sock)
                nursery.start_soon(serve, sock)


async def send_all(sock: socket.socket, data: bytes) -> bool:
    """Send everything, waiting for writability after a short send; False if the peer
    is gone."""
    view = memoryview(data)
    while view:
        try:
            sent = sock.send(view)
        except BlockingIOError:
            await trio.lowlevel.wait_writable(sock)
            continue
        except OSError:
            return False
        view = view[sent:]
    return True


# ----------------------------------------------------------------- netpoll workers


class Connection:
    """One client: its socket, its desc, its protocol state and its unsent output."""

    __slots__ = ("desc", "out", "poller", "proto", "sock", "writing")

    def __init__(self, poller: Poller, sock: socket.socket, proto: Protocol) -> None:
        self.poller = poller
        self.sock = sock
        self.proto = proto
        self.out = bytearray()
        self.writing = False  # WRITE interest is on
        self.desc: Desc = handle_read(sock, data=self)
        poller.start(self.desc)

    def on_event(self, event: Event) -> None:
        bits = int(event)  # plain int tests: an IntFlag '&' costs about a microsecond
        if bits & POLLER_CLOSED:
            self.sock.close()  # the poller forgot the desc already
            return
        if bits & FLUSH and self.out:  # writable, or gone (then the send fails: closed)
            self.flush()
        if bits & READABLE and not self.proto.closing:
            # Edge-triggered: read until EAGAIN. A hang-up is believed only at EOF, after
            # every byte before it was read and answered.
            sock, proto = self.sock, self.proto
            for _ in range(READ_BUDGET):
                if sock.fileno() < 0:  # dropped while answering
                    return
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    break
                except OSError:  # reset by the peer
                    self.close()
                    return
                if not data:  # EOF: close once the answers queued so far are sent (the
                    proto.closing = True  # client may have shut down only its side)
                    break
                try:
                    reply = proto.feed(data)
                except ValueError:  # malformed, or too much input without a request
                    self.close()
                    return
                if reply:
                    self.write(reply)
                if proto.closing:
                    break
            else:
                # A client that keeps sending would keep this worker here: take turns.
                # resume() re-checks readiness, so the rest comes back as a new event.
                if sock.fileno() >= 0:
                    self.poller.resume(self.desc)
                return
        if self.proto.closing and not self.out:
            self.close()

    def write(self, data: bytes) -> None:
        """Send ``data`` now if nothing is queued; queue what the kernel did not take."""
        if not self.out:
            try:
                sent = self.sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                self.close()
                return
            if sent == len(data):
                return
            data = data[sent:]
        self.out += data
        self._backed_up()

    def flush(self) -> None:
        """Send what is queued (on WRITE readiness)."""
        out = self.out
        while out:
            try:
                sent = self.sock.send(out)
            except BlockingIOError:
                break
            except OSError:
                self.close()
                return
            del out[:sent]
        self._backed_up()

    def _backed_up(self) -> None:
        """WRITE interest on while output is queued, off once it is flushed; drop the
        client when the queue passes MAX_OUTPUT (it does not read)."""
        if self.out:
            if len(self.out) > MAX_OUTPUT:
                self.close()
            elif not self.writing:
                self.poller.modify(self.desc, READ_WRITE)
                self.writing = True
        elif self.writing:
            self.poller.modify(self.desc, READ)
            self.writing = False

    def close(self) -> None:
        if self.sock.fileno() < 0:
            return
        if not self.poller.closed:
            self.poller.stop(self.desc)  # stop before close: the fd number may be reused
        self.sock.close()
        self.out.clear()


class Acceptor:
    """The listening socket's desc data: accepts until EAGAIN on each edge."""

    __slots__ = ("listener", "poller", "protocol")

    def __init__(self, poller: Poller, listener: socket.socket, protocol: type[Protocol]) -> None:
        self.poller, self.listener, self.protocol = poller, listener, protocol

    def on_event(self, event: Event) -> None:
        if int(event) & POLLER_CLOSED:
            return
        while True:
            try:
                sock, _ = self.listener.accept()
            except BlockingIOError:
                return
            except OSError as err:
                if err.errno in ACCEPT_FAILURES:
                    # Out of fds or memory: the edge is spent, so look again soon.
                    print(f"accept: {err}", file=sys.stderr)
                    return
                raise
            tune(sock)
            Connection(self.poller, sock, self.protocol())


async def serve_netpoll(
    listener: socket.socket, protocol: type[Protocol], config: Config | None = None
) -> None:
    async with Poller(config) as poller, trio.open_nursery() as nursery:

        async def worker() -> None:
            try:
                while True:
                    for desc, event in await poller.receive_batch():
                        desc.data.on_event(event)  # type: ignore[attr-defined]
            except trio.EndOfChannel:  # the poller closed and everything was delivered
                return

        for _ in range(WORKERS):
            nursery.start_soon(worker)
        acceptor = Acceptor(poller, listener, protocol)
        poller.start(handle_listener(listener, READ, data=acceptor))
        announce(listener)


KINDS = {
    "stream": serve_streams,
    "wait-readable": serve_wait_readable,
    "netpoll": serve_netpoll,
    "netpoll-nt": lambda listener, protocol: serve_netpoll(
        listener, protocol, Config(wait_thread=False)
    ),
    "netpoll-pt": lambda listener, protocol: serve_netpoll(
        listener, protocol, Config(portable=True)
    ),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=list(KINDS), required=True)
    parser.add_argument("--proto", choices=list(PROTOCOLS), required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--sndbuf", type=int, default=0, help="SO_SNDBUF of each connection (checks only)"
    )
    args = parser.parse_args(argv)
    global SNDBUF
    SNDBUF = args.sndbuf
    listener = listen(args.host, args.port)
    try:
        trio.run(KINDS[args.kind], listener, PROTOCOLS[args.proto])
    except KeyboardInterrupt:
        pass
    finally:
        listener.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
