"""The real-client benchmark's servers (benchmarks/servers.py) answer correctly.

The parsers are checked directly; the netpoll servers (with and without the wait thread)
are checked end to end, as ``benchmarks/real_clients.py --check`` does before measuring:
split, pipelined and backed-up requests over real TCP, a small send buffer so that the
output queue and WRITE interest are used, and a client that never reads being dropped.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import real_clients  # noqa: E402
import servers  # noqa: E402

MBULK = servers.RESP_PING_MBULK
PONG = servers.PONG
GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
OK = servers.HTTP_RESPONSE


def feed_bytewise(proto: servers.Protocol, data: bytes) -> bytes:
    return b"".join(proto.feed(data[i : i + 1]) for i in range(len(data)))


def test_resp_ping_forms() -> None:
    resp = servers.Resp()
    assert resp.feed(MBULK) == PONG
    assert resp.feed(b"PING\r\n") == PONG
    assert resp.feed(MBULK * 3 + b"ping\r\n") == PONG * 4
    assert feed_bytewise(servers.Resp(), MBULK * 2) == PONG * 2
    assert resp.feed(b"*2\r\n$4\r\nPING\r\n$2\r\nhi\r\n") == b"$2\r\nhi\r\n"
    assert resp.feed(b"*3\r\n$6\r\nconfig\r\n$3\r\nget\r\n$4\r\nsave\r\n") == (
        b"*2\r\n$4\r\nsave\r\n$0\r\n\r\n"
    )
    assert resp.feed(b"*1\r\n$3\r\nFOO\r\n").startswith(b"-ERR")


def test_resp_refuses_garbage_and_oversize() -> None:
    with pytest.raises(ValueError, match="bulk string"):
        servers.Resp().feed(b"*1\r\n:4\r\nPING\r\n")
    with pytest.raises(ValueError, match="too large"):
        servers.Resp().feed(b"x" * (servers.MAX_INPUT + 1))


def test_http_keep_alive_pipelined_split() -> None:
    http = servers.Http()
    assert http.feed(GET) == OK
    assert http.feed(GET) == OK  # the cached repeat
    assert http.feed(GET * 3) == OK * 3
    assert feed_bytewise(servers.Http(), GET * 2) == OK * 2
    assert not http.closing


def test_http_body_close_and_bad_request() -> None:
    http = servers.Http()
    assert http.feed(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhel") == OK
    assert http.feed(b"lo" + GET) == OK
    assert http.feed(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n" + GET) == (
        servers.HTTP_CLOSE_RESPONSE
    )
    assert http.closing
    old = servers.Http()
    assert old.feed(b"GET / HTTP/1.0\r\n\r\n") == servers.HTTP_CLOSE_RESPONSE
    bad = servers.Http()
    assert bad.feed(b"nonsense\r\n\r\n") == servers.HTTP_BAD_REQUEST
    assert bad.closing


@pytest.mark.parametrize("kind", ["netpoll", "netpoll-nt", "netpoll-pt"])
@pytest.mark.parametrize("proto", ["resp", "http"])
def test_netpoll_server_end_to_end(kind: str, proto: str) -> None:
    real_clients.check(kind, proto)
