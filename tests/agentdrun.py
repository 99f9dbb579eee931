"""ccm-agentd as a child process, and helpers for driving claude sessions in tmux against it.

The ``agentd`` fixture (registered in conftest.py) gives a test its daemon, not yet started, with a
config.toml that checks liveness every 0.5 s and sends no desktop notifications.
"""

from __future__ import annotations

import os
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
    ccm_home.mkdir(parents=True, exist_ok=True)
    (ccm_home / "config.toml").write_text("[agentd]\nliveness_s = 0.5\nnotify_desktop = false\n")
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


def ccm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CCM_HOOKS, *args], capture_output=True, text=True, timeout=60)


def session_of(home: Path) -> str:
    return wait_for(lambda: [p.stem for p in (home / "status").glob("*.json")], what="a session")[0]


def deliveries(home: Path, sid: str) -> list[dict[str, Any]]:
    return [r["delivery"] for r in read_log(home, sid) if r["event"] == "ccm.delivery"]


def said(api: FakeAnthropic, prompt: str) -> int:
    return sum(1 for r in api.main_requests() if r.last_user_text == prompt)


def start_in_tmux(
    tmux_server: TmuxServer, claude_bin: str, project: Path, api: FakeAnthropic, args: tuple[str, ...] = (),
    extra: dict[str, str] | None = None,
) -> Pane:  # fmt: skip
    env = claude_env(api, {"PATH": MINIMAL_PATH, **(extra or {})})
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
    wait_for(lambda: read_status(home, sid)["state"] == "idle", what="idle")
    return pane, sid
