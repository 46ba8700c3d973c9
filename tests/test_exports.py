"""Export guard (after anyio's test_all_attributes): __all__ is complete and documented."""

from __future__ import annotations

import inspect
import subprocess
import sys

import netpoll_trio

SPEC_NAMES = {
    "Event",
    "EpollEvent",
    "NetpollError",
    "ClosedError",
    "NotFilerError",
    "RegisteredError",
    "NotRegisteredError",
    "Desc",
    "new_desc",
    "handle",
    "handle_read",
    "handle_read_once",
    "handle_write",
    "handle_write_once",
    "handle_read_write",
    "handle_listener",
    "Epoll",
    "epoll_create",
    "EpollConfig",
    "Poller",
    "Config",
    "PollerStatistics",
}


def test_spec_names_are_exported() -> None:
    assert set(netpoll_trio.__all__) >= SPEC_NAMES


def test_all_is_sorted_unique_and_resolvable() -> None:
    names = netpoll_trio.__all__
    assert names == sorted(names)
    assert len(names) == len(set(names))
    for name in names:
        assert hasattr(netpoll_trio, name), name


def test_public_names_report_the_package_and_have_docstrings() -> None:
    for name in netpoll_trio.__all__:
        obj = getattr(netpoll_trio, name)
        assert obj.__module__ == "netpoll_trio", name
        assert inspect.getdoc(obj), f"{name} has no docstring"


def test_watch_is_another_name_for_event_stream() -> None:
    assert netpoll_trio.Watch is netpoll_trio.EventStream


def test_no_private_module_leaks_into_the_namespace() -> None:
    public = {n for n in dir(netpoll_trio) if not n.startswith("_")}
    assert public == set(netpoll_trio.__all__)


def test_import_and_flags_work_without_epoll() -> None:
    # Simulates a platform without epoll in a child process (this is not fault injection:
    # select.epoll simply does not exist on macOS or Windows).
    code = """
import select
del select.epoll
import netpoll_trio as np
assert str(np.Event.READ | np.Event.WRITE) == "READ|WRITE"
assert str(np.ClosedError()) == "poller instance is closed"
np.Poller()  # portable mode (tests/test_portable.py runs it)
try:
    np.Epoll()
except np.NetpollError as exc:
    assert "epoll" in str(exc) and "platform" in str(exc), exc
else:
    raise AssertionError("no error")
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
