"""Presenting a benchmark report: the table, the targets, the plot."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .arms import ARMS

BASELINE = "trio-tasks"
CEILING = "epoll"


def _ratio(
    rows: dict[str, dict[str, float]], arm: str, base: str, key: str = "msgs_per_s"
) -> float:
    if arm not in rows or base not in rows or not rows[base][key]:
        return math.nan
    return rows[arm][key] / rows[base][key]


def table_rows(report: dict[str, Any]) -> list[tuple[str, list[list[str]]]]:
    """One (title, rows) per connection count; the first row is the header."""
    out = []
    for n, rows in report["results"].items():
        header = [
            "arm",
            "msgs/s",
            "vs trio-tasks",
            "vs epoll",
            "CPU µs/msg",
            "GC %",
            "p99 µs",
            "512-in-flight msgs/s",
            "idle p50 µs",
            "reg µs",
            "lib reg µs",
            "B/conn",
            "lib B/conn",
        ]
        body = [header]
        for arm, row in rows.items():
            body.append(
                [
                    ARMS[arm].label if arm in ARMS else arm,
                    f"{row['msgs_per_s']:,.0f}",
                    f"{_ratio(rows, arm, BASELINE):.2f}x",
                    f"{_ratio(rows, arm, CEILING):.2f}x",
                    f"{row['cpu_us_per_msg']:.1f}",
                    f"{100 * row['gc_share']:.1f}",
                    f"{row['burst_p99_us']:,.0f}",
                    f"{row['high_msgs_per_s']:,.0f}",
                    f"{row['idle_p50_us']:.0f}",
                    f"{row['register_us_per_conn']:.2f}",
                    _cell(row, "library_register_us", "{:.2f}"),
                    _cell(row, "bytes_per_conn", "{:,.0f}"),
                    _cell(row, "library_bytes_per_conn", "{:,.0f}"),
                ]
            )
        out.append((f"{n} connections (medians of {report['settings']['runs']} runs)", body))
    return out


def _cell(row: dict[str, float], key: str, fmt: str) -> str:
    return fmt.format(row[key]) if key in row else "-"


def render_text(report: dict[str, Any]) -> str:
    """The tables as plain text (used when rich is not installed, and in the docs)."""
    lines = []
    for title, body in table_rows(report):
        widths = [max(len(r[i]) for r in body) for i in range(len(body[0]))]
        lines.append(title)
        for i, row in enumerate(body):
            cells = [row[0].ljust(widths[0])] + [
                c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
            ]
            lines.append("  ".join(cells))
            if i == 0:
                lines.append("  ".join("-" * w for w in widths))
        lines.append("")
    lines.extend(render_targets(report))
    lines.append("")
    lines.append(MEMORY_NOTE)
    return "\n".join(lines)


MEMORY_NOTE = (
    "B/conn: tracemalloc bytes per idle connection as each arm runs, its per-connection user "
    "state included (a callback closure, a desc->socket map entry, a task). lib B/conn: the "
    "library's own objects only (Desc, fd number, registration, registry slot). reg µs: the "
    "arm's whole registration loop; lib reg µs: handle() + start() alone."
)


def _largest(report: dict[str, Any]) -> tuple[str, dict[str, dict[str, float]]]:
    n = max(report["results"], key=int)
    return n, report["results"][n]


Check = tuple[str, Callable[[dict[str, Any]], float], str, float]


def _targets() -> list[Check]:
    def r(arm: str, base: str, key: str = "msgs_per_s") -> Callable[[dict[str, Any]], float]:
        return lambda rep: _ratio(_largest(rep)[1], arm, base, key)

    def value(arm: str, key: str, scale: float = 1.0) -> Callable[[dict[str, Any]], float]:
        return lambda rep: _largest(rep)[1].get(arm, {}).get(key, math.nan) * scale

    def growth(arm: str) -> Callable[[dict[str, Any]], float]:
        def f(rep: dict[str, Any]) -> float:
            ns = sorted(rep["results"], key=int)
            if len(ns) < 2:
                return math.nan
            lo, hi = rep["results"][ns[0]].get(arm), rep["results"][ns[-1]].get(arm)
            return hi["cpu_us_per_msg"] / lo["cpu_us_per_msg"] if lo and hi else math.nan

        return f

    return [
        ("callback (trio) vs raw epoll", r("np-trio-callback", CEILING), ">=", 0.75),
        (
            "shared x8 (trio) vs trio-tasks, 256 in flight",
            r("np-trio-shared8", BASELINE),
            ">=",
            2.0,
        ),
        (
            "shared x8 (trio) vs trio-tasks, 512 in flight",
            r("np-trio-shared8", BASELINE, "high_msgs_per_s"),
            ">=",
            2.0,
        ),
        ("watch/conn (trio) vs trio-tasks", r("np-trio-watch", BASELINE), ">=", 1.0),
        ("callback (anyio-asyncio) vs raw epoll", r("np-asyncio-callback", CEILING), ">=", 0.60),
        (
            "library bytes per idle registered desc, callback",
            value("np-trio-callback", "library_bytes_per_conn"),
            "<=",
            200,
        ),
        (
            "library bytes per idle registered desc, shared",
            value("np-trio-shared8", "library_bytes_per_conn"),
            "<=",
            200,
        ),
        (
            "library registration µs per conn (handle + start, callback)",
            value("np-trio-callback", "library_register_us"),
            "<=",
            3.0,
        ),
        (
            "GC share %, shared x8 at 512 in flight",
            value("np-trio-shared8", "high_gc_share", 100),
            "<=",
            2.0,
        ),
        ("CPU/msg growth first N -> last N (callback)", growth("np-trio-callback"), "<=", 1.3),
        (
            "idle round trip p50 vs trio-tasks (callback)",
            r("np-trio-callback", BASELINE, "idle_p50_us"),
            "<=",
            1.15,
        ),
        (
            "no thread: callback (trio) vs raw epoll",
            r("np-trio-callback-nt", CEILING),
            ">=",
            0.85,
        ),
        (
            "no thread: idle round trip p50 vs trio-tasks (callback)",
            r("np-trio-callback-nt", BASELINE, "idle_p50_us"),
            "<=",
            1.0,
        ),
    ]


def targets(report: dict[str, Any]) -> list[tuple[str, float, str, float, bool | None]]:
    """(name, measured, op, goal, met) for each target; met is None when not measured."""
    out = []
    for name, measure, op, goal in _targets():
        try:
            got = measure(report)
        except (KeyError, TypeError, ZeroDivisionError):
            got = math.nan
        met = None if math.isnan(got) else (got >= goal if op == ">=" else got <= goal)
        out.append((name, got, op, goal, met))
    return out


def render_targets(report: dict[str, Any]) -> list[str]:
    n, _ = _largest(report)
    lines = [f"Targets (at {n} connections unless stated):"]
    for name, got, op, goal, met in targets(report):
        mark = {True: "met", False: "MISSED", None: "not measured"}[met]
        lines.append(f"  {mark:>12}  {name}: {got:.2f} (goal {op} {goal:g})")
    return lines


def plot(report: dict[str, Any], path: str) -> None:
    """Save a chart of msgs/s and bytes/conn against N (needs the ``plot`` extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise SystemExit("--plot needs matplotlib: pip install 'netpoll_trio[plot]'") from exc
    ns = sorted(report["results"], key=int)
    arms = list(report["results"][ns[0]])
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5))
    for arm in arms:
        xs = [int(n) for n in ns]
        label = ARMS[arm].label if arm in ARMS else arm
        style = "--" if arm in ARMS and ARMS[arm].baseline else "-"
        left.plot(
            xs,
            [report["results"][n][arm]["msgs_per_s"] for n in ns],
            style,
            marker="o",
            label=label,
        )
        mem = [report["results"][n][arm].get("bytes_per_conn") for n in ns]
        if all(m is not None for m in mem):
            right.plot(xs, mem, style, marker="o", label=label)
    left.set(title="Throughput (256 in flight)", xlabel="connections", ylabel="messages/s")
    right.set(
        title="Memory per idle connection (tracemalloc)",
        xlabel="connections",
        ylabel="bytes",
        yscale="log",
    )
    left.legend(fontsize=7)
    right.legend(fontsize=7)
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
