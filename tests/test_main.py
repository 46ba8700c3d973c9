"""``python -m netpoll_trio``: a tiny smoke run of the benchmark and the demo (no timing
assertions), and clear usage errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def run_main(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "netpoll_trio", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_demo() -> None:
    out = run_main("--demo")
    assert out.returncode == 0, out.stderr
    assert "1000 bytes received by 4 workers" in out.stdout


def test_benchmark_smoke_json() -> None:
    out = run_main(
        "-n",
        "50",
        "--runs",
        "1",
        "--seconds",
        "0.05",
        "--json",
        "--arms",
        "epoll,trio-tasks,np-trio-callback,np-asyncio-shared8,np-trio-watch",
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    rows = report["results"]["50"]
    assert set(rows) == {
        "epoll",
        "trio-tasks",
        "np-trio-callback",
        "np-asyncio-shared8",
        "np-trio-watch",
    }
    for row in rows.values():
        assert row["unanswered"] == 0
        assert row["msgs_per_s"] > 0
        assert row["bytes_per_conn"] > 0


def test_benchmark_smoke_table() -> None:
    out = run_main(
        "-n",
        "20",
        "--runs",
        "1",
        "--seconds",
        "0.05",
        "--no-memory",
        "--arms",
        "epoll,trio-tasks,np-trio-shared8",
    )
    assert out.returncode == 0, out.stderr
    assert "20 connections" in out.stdout
    assert "Targets" in out.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-n", "0"], "between 1 and 9000"),
        (["-n", "abc"], "expected numbers like 1000,9000"),
        (["--arms", "nope"], "unknown arm(s) nope"),
        (["--runs", "-1"], "must be positive"),
        (["--seconds", "x"], "expected a number"),
    ],
)
def test_usage_errors(args: list[str], message: str) -> None:
    out = run_main(*args)
    assert out.returncode == 2
    assert message in out.stderr
    assert "usage: python -m netpoll_trio" in out.stderr
