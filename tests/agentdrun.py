"""ccm-agentd as a child process, and helpers for driving claude sessions in tmux against it.

The ``agentd`` fixture (registered in conftest.py) gives a test its daemon, not yet started, with a
config.toml that checks liveness every 0.5 s and sends no desktop notifications (``configure`` writes it;
a test calls it again for its own settings and a notify command that records what it is told).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.claude_harness import Pane, TmuxServer, claude_env, start_claude, submit, wait_for, wait_idle
from tests.fakeapi import FakeAnthropic
from tests.hookrun import CCM_HOOKS, MINIMAL_PATH, read_log, read_status

BIN = Path(sys.executable).parent
NOTIFY_FIELDS = ("kind", "session_id", "state", "since", "at", "reason")


class Agentd:
    """``ccm-agentd run`` as a child process with the test's state dir."""

    def __init__(self, home: Path, env: dict[str, str] | None = None) -> None:
        self.home = home
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Agentd:
        proc = self.proc = subprocess.Popen(
            [str(BIN / "ccm-agentd"), "run"], env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        wait_for(lambda: (self.home / "agentd" / "health.json").exists() or proc.poll() is not None)
        assert proc.poll() is None, proc.communicate()
        return self

    def kill(self, sig: int = signal.SIGKILL) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=30)

    def log(self) -> str:
        path = self.home / "log" / "agentd.log"
        return path.read_text() if path.exists() else ""


@pytest.fixture
def agentd(ccm_home: Path) -> Iterator[Agentd]:
    configure(ccm_home)
    daemons: list[Agentd] = []

    def make(env: dict[str, str] | None = None) -> Agentd:
        d = Agentd(ccm_home, env)
        daemons.append(d)
        return d

    d = make()
    d.make = make  # type: ignore[attr-defined]
    yield d
    for one in daemons:
        if one.proc is not None and one.proc.poll() is None:
            one.kill()


def configure(home: Path, notified: Path | None = None, **settings: float | str | bool) -> None:
    """config.toml for the daemon: liveness every 0.5 s, no desktop notifications, ``settings`` (which
    override those), and with ``notified`` a notify command appending to that file what it is told (see
    ``notifications``)."""
    table: dict[str, Any] = {"liveness_s": 0.5, "notify_desktop": False, **settings}
    if notified is not None:
        table["notify_commands"] = [_notify_command(notified)]
    # JSON strings, numbers, booleans and arrays of strings are TOML values too.
    lines = ["[agentd]", *(f"{k} = {json.dumps(v)}" for k, v in table.items())]
    home.mkdir(mode=0o700, parents=True, exist_ok=True)  # as ccm makes it
    (home / "config.toml").write_text("\n".join(lines) + "\n")
    (home / "config.toml").chmod(0o600)  # it holds commands: private, as ccm writes it


def _notify_command(out: Path) -> str:
    """A shell command appending one tab-separated line per notification: the facts the daemon passes in
    the environment, and the time the command ran (epoch seconds)."""
    clock = f"$({shlex.quote(sys.executable)} -c 'import time; print(time.time())')"
    names = ("CCM_NOTIFY_KIND", "CCM_SESSION_ID", "CCM_STATE", "CCM_SINCE")
    values = [*(f'"${name}"' for name in names), f'"{clock}"', '"$CCM_REASON"']
    line = "\\t".join(["%s"] * len(values)) + "\\n"
    return f"printf '{line}' {' '.join(values)} >> {shlex.quote(str(out))}"


def notifications(path: Path) -> list[dict[str, str]]:
    """The notify command's lines so far (a line still being written is left out)."""
    if not path.exists():
        return []
    lines = path.read_text().split("\n")[:-1]  # the last piece is "" or a partial line
    return [dict(zip(NOTIFY_FIELDS, line.split("\t", len(NOTIFY_FIELDS) - 1), strict=True)) for line in lines]


def notified_kinds(path: Path) -> list[str]:
    return [n["kind"] for n in notifications(path)]


def wait_state(home: Path, sid: str, state: str, timeout: float = 30.0) -> dict[str, Any]:
    """Poll the session's status until its state is ``state``; that status."""
    return wait_for(
        lambda: (s := read_status(home, sid))["state"] == state and s, timeout=timeout, what=f"state {state}"
    )


def ccm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CCM_HOOKS, *args], capture_output=True, text=True, timeout=60)


def agentd_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``ccm-agentd ARGS`` (e.g. ``status``) as a user runs it, beside the daemon the test started."""
    return subprocess.run([str(BIN / "ccm-agentd"), *args], capture_output=True, text=True, timeout=30)


def session_of(home: Path) -> str:
    return wait_for(lambda: [p.stem for p in (home / "status").glob("*.json")], what="a session")[0]


def deliveries(home: Path, sid: str) -> list[dict[str, Any]]:
    return [r["delivery"] for r in read_log(home, sid) if r["event"] == "ccm.delivery"]


def said(api: FakeAnthropic, prompt: str) -> int:
    return sum(1 for r in api.main_requests() if r.last_user_text == prompt)


def start_in_tmux(
    tmux_server: TmuxServer, claude_bin: str, project: Path, api: FakeAnthropic, args: tuple[str, ...] = (),
    extra: dict[str, str] | None = None, subscription: bool = False,
) -> Pane:  # fmt: skip
    """Claude in a new tmux session, idle; ``subscription`` signs in with a claude.ai login (claude_env)."""
    env = claude_env(api, {"PATH": MINIMAL_PATH, **(extra or {})}, subscription=subscription)
    pane = start_claude(
        tmux_server, claude_bin, project, env, args=args or ("--dangerously-skip-permissions",)
    )
    wait_idle(pane)
    return pane


def idle_session(
    tmux_server: TmuxServer, claude_bin: str, project: Path, api: FakeAnthropic, home: Path, prompt: str
) -> tuple[Pane, str]:
    """Claude in tmux after one turn: its status is idle and knows its pane."""
    pane = start_in_tmux(tmux_server, claude_bin, project, api)
    submit(pane, prompt)
    sid = session_of(home)
    wait_state(home, sid, "idle")
    return pane, sid
