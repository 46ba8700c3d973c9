"""Presenting a benchmark report: the short summary, the full matrix, the targets, the plot.

The default output (:func:`render_summary`) answers one question -- is netpoll faster and
lighter than one task per connection, and by how much -- in a table that fits 100 columns,
a footnote per column and one sentence of conclusion. ``--full`` adds the whole matrix
(:func:`table_rows`) and the developers' targets (:func:`render_targets`).
"""

from __future__ import annotations

import math
import statistics
import textwrap
from collections.abc import Callable
from typing import Any

from .arms import ARMS

WIDTH = 100  # the default output fits this many columns
BASELINE = "trio-tasks"
CEILING = "epoll"

#: The columns of the default table and what each means (also in ``--help``).
SUMMARY_COLUMNS: list[tuple[str, str]] = [
    ("msgs/s", "messages answered per second, 256 in flight over all connections (higher: better)"),
    (
        "speed",
        "msgs/s relative to one trio task per connection parked in wait_readable, the"
        " median of the ratios within each run (2.00x: twice as fast)",
    ),
    ("CPU µs", "server CPU time per message, all its threads (lower is better)"),
    ("p99 ms", "99th-percentile time from sending a message to its answer, under that load"),
    ("idle µs", "median round trip of one message while every other connection is idle"),
    (
        "B/conn",
        "memory per idle connection (tracemalloc), the server's own per-connection state"
        " included: a task, a closure, a map entry",
    ),
    (
        "memory",
        "B/conn relative to one trio task per connection parked in wait_readable (0.10x: a tenth)",
    ),
]

TARGETS_NOTE = (
    "Targets are the goals the developers set for this library on a quiet 2-core machine (see "
    "docs/performance.rst). 'MISSED' means this run fell short of a goal, not that anything is "
    "broken; a busy or small machine misses more of them."
)


def _ratio(rows: dict[str, dict[str, Any]], arm: str, base: str, key: str = "msgs_per_s") -> float:
    """arm / base: the median of the ratios taken inside each run when the rows carry
    per-run values (``<key>_runs``; a noisy machine disturbs those less), else the
    ratio of the medians."""
    if arm not in rows or base not in rows or not rows[base].get(key):
        return math.nan
    mine, theirs = rows[arm].get(f"{key}_runs"), rows[base].get(f"{key}_runs")
    if mine and theirs and len(mine) == len(theirs):
        ratios = [a / b for a, b in zip(mine, theirs, strict=True) if b]
        if ratios:
            return float(statistics.median(ratios))
    return float(rows[arm][key] / rows[base][key])


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
            "spread %",
            "driver CPU %",
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
                    _cell(row, "spread", "{:.0%}").rstrip("%"),
                    _cell(row, "driver_cpu_share", "{:.0%}").rstrip("%"),
                    f"{row['register_us_per_conn']:.2f}",
                    _cell(row, "library_register_us", "{:.2f}"),
                    _cell(row, "bytes_per_conn", "{:,.0f}"),
                    _cell(row, "library_bytes_per_conn", "{:,.0f}"),
                ]
            )
        out.append((f"{n} connections (medians of {report['settings']['runs']} runs)", body))
    return out


def _x(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}x"


def summary_rows(report: dict[str, Any]) -> list[tuple[str, list[list[str]]]]:
    """The default table: one (title, rows) per connection count; rows[0] is the header."""
    out = []
    for n, rows in report["results"].items():
        body = [["arm"] + [name for name, _ in SUMMARY_COLUMNS]]
        for arm, row in rows.items():
            mem = row.get("bytes_per_conn", math.nan)
            body.append(
                [
                    ARMS[arm].label if arm in ARMS else arm,
                    f"{row['msgs_per_s']:,.0f}",
                    _x(_ratio(rows, arm, BASELINE)),
                    f"{row['cpu_us_per_msg']:.1f}",
                    f"{row['burst_p99_us'] / 1000:.1f}",
                    f"{row['idle_p50_us']:.0f}",
                    "-" if math.isnan(mem) else f"{mem:,.0f}",
                    _x(
                        _ratio(rows, arm, BASELINE, "bytes_per_conn")
                        if "bytes_per_conn" in row
                        else math.nan
                    ),
                ]
            )
        runs = report["settings"]["runs"]
        medians = f"medians of {runs} runs" if runs > 1 else "1 run"
        out.append((f"{n} connections, {medians}", body))
    return out


def _plain_table(body: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in body) for i in range(len(body[0]))]
    lines = []
    for i, row in enumerate(body):
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def _best_netpoll(rows: dict[str, dict[str, float]]) -> str | None:
    candidates = [arm for arm in rows if arm.startswith("np-")]
    return max(candidates, key=lambda arm: rows[arm]["msgs_per_s"], default=None)


def conclusion(report: dict[str, Any]) -> str:
    """One plain sentence: the fastest netpoll arm against one task per connection."""
    n, rows = _largest(report)
    best = _best_netpoll(rows)
    if best is None or BASELINE not in rows:
        return (
            f"No comparison at {n} connections: the run needs the {BASELINE} arm and at least "
            "one netpoll arm."
        )
    label = ARMS[best].label if best in ARMS else best
    speed = _ratio(rows, best, BASELINE)
    cpu = _ratio(rows, best, BASELINE, "cpu_us_per_msg")
    pace = "faster" if speed >= 1.05 else "slower" if speed <= 0.95 else "about as fast"
    sentence = (
        f"At {n} connections, {label} was {pace} than one trio task per connection "
        f"(wait_readable): "
        f"{speed:.2f}x the messages per second at {cpu:.2f}x the CPU per message"
    )
    mem = _ratio(rows, best, BASELINE, "bytes_per_conn")
    if not math.isnan(mem):
        ours, theirs = rows[best]["bytes_per_conn"], rows[BASELINE]["bytes_per_conn"]
        lighter = "lighter" if mem < 0.95 else "heavier" if mem > 1.05 else "about as heavy"
        sentence += (
            f", and {lighter}: {ours:,.0f} bytes per idle connection against {theirs:,.0f}"
            f" ({mem:.2f}x)"
        )
    return sentence + "."


def render_summary(report: dict[str, Any]) -> str:
    """The default output: narrow table(s), a footnote per column, one sentence."""
    lines = []
    for title, body in summary_rows(report):
        lines.append(title)
        lines.extend(_plain_table(body))
        lines.append("")
    width = max(len(name) for name, _ in SUMMARY_COLUMNS)
    for name, text in SUMMARY_COLUMNS:
        lines.extend(
            textwrap.wrap(
                f"{name:>{width}}: {text}", width=WIDTH, subsequent_indent=" " * (width + 2)
            )
        )
    lines.append("")
    lines.extend(textwrap.wrap(conclusion(report), width=WIDTH))
    return "\n".join(lines)


def _cell(row: dict[str, float], key: str, fmt: str) -> str:
    return fmt.format(row[key]) if key in row else "-"


def render_text(report: dict[str, Any]) -> str:
    """The tables as plain text (used when rich is not installed, and in the docs)."""
    lines = []
    for title, body in table_rows(report):
        lines.append(title)
        lines.extend(_plain_table(body))
        lines.append("")
    lines.append(MEMORY_NOTE)
    lines.append("")
    lines.extend(render_targets(report))
    return "\n".join(lines)


MEMORY_NOTE = (
    "vs trio-tasks / vs epoll: msgs/s relative to those arms. CPU µs/msg: server CPU time per "
    "message. GC %: share of the time spent in the cyclic garbage collector. p99 µs: 99th "
    "percentile latency with 256 in flight. 512-in-flight msgs/s: throughput with twice the load. "
    "idle p50 µs: median round trip while the rest is idle. spread %: (max - min) / median "
    "of msgs/s over the runs. driver CPU %: the load driver's own CPU share of the load "
    "phase (its own core); near 100 the driver, not the server, was the limit. "
    "Ratios are medians of ratios taken inside each run. "
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
    """Issue 11's goals. Each is checked at every connection count and the worst value
    is shown (the lowest ratio for a '>=' goal, the highest for a '<=' goal)."""

    def worst(op: str, measure: Callable[[dict[str, Any]], float]) -> Callable[..., float]:
        def f(rep: dict[str, Any]) -> float:
            values = [measure(rows) for rows in rep["results"].values()]
            values = [v for v in values if not math.isnan(v)]
            if not values:
                return math.nan
            return min(values) if op == ">=" else max(values)

        return f

    def r(arm: str, base: str, key: str = "msgs_per_s") -> Callable[[dict[str, Any]], float]:
        return lambda rows: _ratio(rows, arm, base, key)

    def value(arm: str, key: str, scale: float = 1.0) -> Callable[[dict[str, Any]], float]:
        return lambda rows: float(rows.get(arm, {}).get(key, math.nan)) * scale

    goals: list[tuple[str, Callable[[dict[str, Any]], float], str, float]] = [
        (
            "receive_batch x8 vs callback (trio)",
            r("np-trio-batch8", "np-trio-callback"),
            ">=",
            0.85,
        ),
        (
            "no thread: receive_batch x8 vs callback (trio)",
            r("np-trio-batch8-nt", "np-trio-callback-nt"),
            ">=",
            0.85,
        ),
        ("receive_batch x8 (trio) vs trio-tasks", r("np-trio-batch8", BASELINE), ">=", 2.5),
        (
            "no thread: receive_batch x8 (trio) vs trio-tasks",
            r("np-trio-batch8-nt", BASELINE),
            ">=",
            2.5,
        ),
        ("callback (trio) vs raw epoll", r("np-trio-callback", CEILING), ">=", 0.80),
        ("no thread: callback (trio) vs raw epoll", r("np-trio-callback-nt", CEILING), ">=", 0.90),
        ("async for, shared x8 (trio) vs trio-tasks", r("np-trio-shared8", BASELINE), ">=", 1.5),
        ("watch/conn (trio) vs trio-tasks", r("np-trio-watch", BASELINE), ">=", 1.2),
        (
            "idle round trip p50 vs trio-tasks, callback (trio)",
            r("np-trio-callback", BASELINE, "idle_p50_us"),
            "<=",
            1.15,
        ),
        (
            "idle round trip p50 vs trio-tasks, receive_batch x8 (trio)",
            r("np-trio-batch8", BASELINE, "idle_p50_us"),
            "<=",
            1.3,
        ),
        (
            "no thread: idle round trip p50 vs trio-tasks, callback (trio)",
            r("np-trio-callback-nt", BASELINE, "idle_p50_us"),
            "<=",
            1.0,
        ),
        (
            "no thread: idle round trip p50 vs trio-tasks, receive_batch x8 (trio)",
            r("np-trio-batch8-nt", BASELINE, "idle_p50_us"),
            "<=",
            1.0,
        ),
        (
            "library bytes per idle registered desc, shared stream",
            value("np-trio-batch8", "library_bytes_per_conn"),
            "<=",
            150,
        ),
        (
            "total bytes per connection, receive_batch x8 (connection in desc.data)",
            value("np-trio-batch8", "bytes_per_conn"),
            "<=",
            200,
        ),
        (
            "load driver's CPU share while serving raw epoll (< 1: not the bottleneck)",
            value(CEILING, "driver_cpu_share"),
            "<=",
            0.9,
        ),
    ]
    return [(name, worst(op, measure), op, goal) for name, measure, op, goal in goals]


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
    counts = ", ".join(report["results"])
    lines = [f"Targets (the worst of {counts} connections):"]
    for name, got, op, goal, met in targets(report):
        mark = {True: "met", False: "MISSED", None: "not measured"}[met]
        lines.append(f"  {mark:>12}  {name}: {got:.2f} (goal {op} {goal:g})")
    lines.extend(textwrap.wrap(TARGETS_NOTE, width=WIDTH))
    return lines


PLOT_NEEDS = "--plot needs matplotlib: pip install 'netpoll_trio[plot]'"


def require_matplotlib() -> None:
    """Raise SystemExit at once, before any work, when ``--plot`` cannot be honoured."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise SystemExit(PLOT_NEEDS) from None


#: Markers cycled with the colours, so that series stay apart in grey print too.
_MARKERS = "osD^v<>pX*hP"


def plot(report: dict[str, Any], path: str) -> None:
    """Save a chart of msgs/s and bytes/conn against N (needs the ``plot`` extra).

    Every arm gets its own colour (tab20 holds 20) and marker; baselines are dashed. One
    legend for both panels sits below them, outside the data.
    """
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = sorted(report["results"], key=int)
    arms = list(report["results"][ns[0]])
    tab20 = plt.get_cmap("tab20")
    colours = [tab20(i) for i in range(20)]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5.5))
    xs = [int(n) for n in ns]
    for i, arm in enumerate(arms):
        label = ARMS[arm].label if arm in ARMS else arm
        style = {
            "linestyle": "--" if arm in ARMS and ARMS[arm].baseline else "-",
            "marker": _MARKERS[i % len(_MARKERS)],
            "color": colours[(2 * i) % 20 if i < 10 else (2 * i + 1) % 20],
            "label": label,
        }
        left.plot(xs, [report["results"][n][arm]["msgs_per_s"] for n in ns], **style)
        mem = [report["results"][n][arm].get("bytes_per_conn") for n in ns]
        if all(m is not None for m in mem):
            right.plot(xs, mem, **{**style, "label": "_" + label})  # one legend entry
    left.set(title="Throughput (256 in flight)", xlabel="connections", ylabel="messages/s")
    right.set(
        title="Memory per idle connection (tracemalloc)",
        xlabel="connections",
        ylabel="bytes",
        yscale="log",
    )
    if not right.lines:
        right.text(0.5, 0.5, "not measured (--no-memory)", ha="center", transform=right.transAxes)
    for ax in (left, right):
        ax.grid(alpha=0.3)
        if len(xs) > 1:
            ax.set_xticks(xs)
    columns = min(4, len(arms))
    rows = -(-len(arms) // columns)
    fig.legend(loc="lower center", ncol=columns, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.045 * rows + 0.02, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
