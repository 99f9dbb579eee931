"""sd_notify over a real unix datagram socket the test owns, as systemd's manager would receive it."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ccm_agentd import sdnotify

LINUX = sys.platform.startswith("linux")


@pytest.fixture(autouse=True)
def no_systemd_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        monkeypatch.delenv(var, raising=False)


def receiver(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(10)
    return sock


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = os.fspath(tmp_path / "notify")
    if len(path.encode()) >= 100:  # sun_path holds 108 bytes; pytest's tmp_path is usually far shorter
        pytest.skip(f"tmp_path too long for a unix socket: {path}")
    sock = receiver(path)
    with sock:
        yield sock, path


def test_ready_and_watchdog_arrive_in_process(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    env = {"NOTIFY_SOCKET": path}
    assert sdnotify.ready(env) is True
    assert sdnotify.watchdog(env) is True
    assert sock.recv(4096) == b"READY=1"
    assert sock.recv(4096) == b"WATCHDOG=1"


def test_reads_notify_socket_from_the_process_environment(
    listener: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, path = listener
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    assert sdnotify.stopping() is True
    assert sock.recv(4096) == b"STOPPING=1"


def test_status_reloading_and_arbitrary_messages(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    env = {"NOTIFY_SOCKET": path}
    assert sdnotify.status("watching 3 sessions\nlast: ok", env)
    assert sdnotify.reloading(env)
    assert sdnotify.notify("READY=1\nSTATUS=reloaded", env)
    assert sock.recv(4096) == b"STATUS=watching 3 sessions last: ok"
    first, second = sock.recv(4096).decode().split("\n")
    assert first == "RELOADING=1"
    assert second.startswith("MONOTONIC_USEC=") and int(second.split("=")[1]) > 0
    assert sock.recv(4096) == b"READY=1\nSTATUS=reloaded"


@pytest.mark.skipif(not LINUX, reason="the abstract socket namespace is Linux-only")
def test_abstract_namespace_socket() -> None:
    name = f"ccm-test-notify-{os.getpid()}"
    with receiver("\0" + name) as sock:
        assert sdnotify.ready({"NOTIFY_SOCKET": "@" + name}) is True
        assert sock.recv(4096) == b"READY=1"


@pytest.mark.skipif(not LINUX, reason="SO_PASSCRED sender credentials are Linux-only")
def test_datagrams_from_a_subprocess_carry_its_pid(listener: tuple[socket.socket, str]) -> None:
    """What NotifyAccess=main relies on: systemd attributes each datagram to the sending pid."""
    sock, path = listener
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    code = "from ccm_agentd import sdnotify as n; raise SystemExit(0 if n.ready() and n.watchdog() else 1)"
    env = {**os.environ, "NOTIFY_SOCKET": path}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
    ucred = struct.calcsize("3i")
    for expected in (b"READY=1", b"WATCHDOG=1"):
        data, ancillary, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(ucred))
        assert data == expected
        [(level, kind, creds)] = ancillary
        assert (level, kind) == (socket.SOL_SOCKET, socket.SCM_CREDENTIALS)
        pid, uid, _gid = struct.unpack("3i", creds[:ucred])
        assert (pid, uid) == (proc.pid, os.getuid())


@pytest.mark.parametrize("value", [None, "", "relative/sock", "vsock:2:1234", "@"])
def test_no_usable_socket_returns_false(value: str | None) -> None:
    env = {} if value is None else {"NOTIFY_SOCKET": value}
    assert sdnotify.notify("READY=1", env) is False
    assert sdnotify.ready(env) is False


def test_send_errors_return_false_without_raising(tmp_path: Path) -> None:
    assert sdnotify.ready({"NOTIFY_SOCKET": os.fspath(tmp_path / "nobody-listens")}) is False
    (tmp_path / "plain").write_text("")
    assert sdnotify.watchdog({"NOTIFY_SOCKET": os.fspath(tmp_path / "plain")}) is False
    assert sdnotify.notify("READY=1", {"NOTIFY_SOCKET": "/tmp/a\0b"}) is False
    assert sdnotify.notify("READY=1", {"NOTIFY_SOCKET": "/" + "x" * 200}) is False


def test_a_vanished_listener_does_not_raise(tmp_path: Path) -> None:
    path = os.fspath(tmp_path / "gone")
    receiver(path).close()  # the file stays, nobody is bound to it any more
    assert sdnotify.ready({"NOTIFY_SOCKET": path}) is False


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "60000000"}, 30.0),
        ({"WATCHDOG_USEC": "1500000"}, 0.75),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "<self>"}, 30.0),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "<other>"}, None),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "not-a-pid"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "sixty"}, None),
        ({"WATCHDOG_USEC": ""}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    pids = {"<self>": str(os.getpid()), "<other>": str(os.getpid() + 1)}
    env = {k: pids.get(v, v) for k, v in env.items()}
    assert sdnotify.watchdog_interval(env) == expected


def test_watchdog_interval_from_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert sdnotify.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "60000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert sdnotify.watchdog_interval() == 30.0


def test_watchdog_interval_in_a_child_that_inherited_the_environment() -> None:
    """A process the daemon starts sees the daemon's WATCHDOG_PID, not its own: it must not ping."""
    env = {**os.environ, "WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getpid())}
    code = "from ccm_agentd import sdnotify; print(sdnotify.watchdog_interval())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "None", out.stderr
