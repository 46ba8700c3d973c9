"""``python -m netpoll_trio``: a tiny smoke run of the benchmark and the demo (no timing
assertions), the short default output, optional dependencies, and clear usage errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

TINY = ("--runs", "1", "--seconds", "0.05")


def run_main(*args: str, without: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """Run the main job; ``without`` names modules to make unimportable, as if not installed."""
    block = "".join(f"sys.modules[{name!r}] = None; " for name in without)
    code = f"import sys; {block}from netpoll_trio._bench.cli import main; sys.exit(main())"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
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


def test_default_output_is_short() -> None:
    out = run_main("-n", "20", *TINY, "--arms", "epoll,trio-tasks,np-trio-shared8")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "20 connections, 1 run"
    assert all(len(line) <= 100 for line in lines), max(lines, key=len)
    for column in ("msgs/s", "speed", "CPU µs", "p99 ms", "idle µs", "B/conn", "memory"):
        assert f"{column}: " in out.stdout  # every column is explained
    assert "At 20 connections, netpoll trio shared x8 was " in out.stdout
    assert "Targets" not in out.stdout
    assert "ran in " in out.stderr


def test_full_output_has_matrix_and_targets() -> None:
    out = run_main("-n", "20", *TINY, "--no-memory", "--full", "--arms", "epoll,trio-tasks")
    assert out.returncode == 0, out.stderr
    assert "20 connections" in out.stdout
    assert "512-in-flight msgs/s" in out.stdout
    assert "Targets" in out.stdout
    assert "not that anything is broken" in out.stdout


def test_progress_counts_to_its_total() -> None:
    # Without rich: one line per step, "[k/total] what (time left)".
    out = run_main("-n", "10,20", *TINY, "--arms", "epoll,trio-tasks", without=("rich",))
    assert out.returncode == 0, out.stderr
    steps = [tuple(map(int, m)) for m in re.findall(r"^\[(\d+)/(\d+)\]", out.stderr, re.M)]
    # per N: 1 run x 2 arms, then the library pass and 2 tracemalloc passes
    assert steps == [(k, 10) for k in range(1, 11)]
    assert "s left)" in out.stderr


def test_missing_optional_arm_is_skipped() -> None:
    out = run_main("-n", "10", *TINY, "--arms", "epoll,uvloop-reader", without=("uvloop",))
    assert out.returncode == 0, out.stderr
    assert "skipping uvloop-reader: needs uvloop" in out.stderr
    assert "raw select.epoll" in out.stdout
    assert "uvloop" not in out.stdout


def test_nothing_left_to_run() -> None:
    out = run_main("-n", "10", *TINY, "--arms", "uvloop-reader", without=("uvloop",))
    assert out.returncode == 2
    assert "every chosen arm was skipped" in out.stderr


def test_plot_without_matplotlib_fails_at_once() -> None:
    out = run_main("--plot", "chart.png", without=("matplotlib",))
    assert out.returncode == 2
    assert "--plot needs matplotlib" in out.stderr
    assert "nothing was run" in out.stderr
    assert "ran in" not in out.stderr


def test_help_explains_the_columns() -> None:
    out = run_main("--help")
    assert out.returncode == 0
    assert "Columns of the default table" in out.stdout
    assert "--full" in out.stdout


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


def test_module_entry_point() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "netpoll_trio", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "usage: python -m netpoll_trio" in out.stdout


def test_the_bench_uses_only_the_public_api() -> None:
    """``netpoll_trio._bench`` ships in the wheel as a user of the library: it imports
    only names from ``__all__``, never a private module, so it measures what users get."""
    import ast
    from pathlib import Path

    import netpoll_trio

    bench = Path(netpoll_trio.__file__).parent / "_bench"
    for path in sorted(bench.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                where = f"{path.name}:{node.lineno}"
                if node.level == 2 or node.module == "netpoll_trio":  # from .. import / ours
                    assert node.module is None or node.module == "netpoll_trio", where
                    for alias in node.names:
                        assert alias.name in netpoll_trio.__all__, (where, alias.name)
                else:
                    assert node.level in (0, 1), where  # the library or a sibling in _bench
                    assert not (node.module or "").startswith("netpoll_trio"), where
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    assert not alias.name.startswith("netpoll_trio"), (path.name, alias.name)
