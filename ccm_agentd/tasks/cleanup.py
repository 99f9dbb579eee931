"""Ending agents: cancel, a retry's previous attempt, a timeout; closing a done task's window after its grace
period (a failed task's window stays for inspection). Worktrees are never touched here: only
``ccm-hooks task clean`` removes one, and only when nothing would be lost (spec/tasks.md#cleanup)."""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from typing import Any

from ccm_agentd import panes, screen
from ccm_agentd.tasks.launcher import Launcher, read_pid
from ccm_hooks.record import iso_utc
from ccm_hooks.statedir import agentcmd, tasks
from ccm_hooks.statedir.timefmt import parse_ts

log = logging.getLogger("ccm_agentd.tasks")


def end_agent(
    launcher: Launcher, task: dict[str, Any], attempt: dict[str, Any], *, close_window: bool
) -> None:
    """Interrupt the attempt's agent (Esc, as a person would), then with ``close_window`` end it and close
    its window. Headless: SIGTERM to its process group. Either way, one still there after the grace period
    is killed by ``finish_ending`` at a later wake-up (the loop never waits for an exit)."""
    sid = str(attempt.get("session_id"))
    if task.get("headless"):
        pid = attempt.get("pid") or read_pid(attempt.get("output"))
        if isinstance(pid, int) and panes.pid_alive(pid) and sid in agentcmd.process_args(pid):
            _signal_group(pid, signal.SIGTERM)
            launcher.ending[pid] = (time.time() + launcher.cfg.end_grace_s, sid, True)
        launcher.reap()
        return
    found = launcher.find(task, attempt)
    if not isinstance(found, agentcmd.Window):
        return
    launcher.tmux.send_key(found.pane_id, "Escape")
    if screen.is_working(launcher.tmux.capture(found.pane_id) or ""):
        # A turn runs: give the interrupt a moment to land (it is recorded in the transcript), bounded.
        _wait(
            lambda: not screen.is_working(launcher.tmux.capture(found.pane_id) or ""),
            launcher.cfg.end_grace_s,
        )
    if not close_window:
        return
    launcher.tmux.kill_window(found.window_id)
    if isinstance(found.pane_pid, int):
        launcher.ending[found.pane_pid] = (time.time() + launcher.cfg.end_grace_s, sid, False)
    log.info("task %s: attempt %s ended, window %s closed", task["id"], attempt.get("n"), found.window_id)


def finish_ending(launcher: Launcher, now: float) -> float | None:
    """Kill the agents that outlived their grace period after their window closed (its SIGHUP) or their
    SIGTERM; returns when the next grace period ends."""
    nearest = None
    for pid, (deadline, sid, group) in list(launcher.ending.items()):
        if not panes.pid_alive(pid) or sid not in agentcmd.process_args(pid):
            del launcher.ending[pid]  # gone (a pid reused since names another command line)
        elif now >= deadline:
            log.warning("agent pid %d of session %s outlived its grace period: SIGKILL", pid, sid[:8])
            if group:
                _signal_group(pid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
            del launcher.ending[pid]
        else:
            nearest = deadline if nearest is None else min(nearest, deadline)
    launcher.reap()
    return nearest


def close_due(launcher: Launcher, task: dict[str, Any], now: float) -> tuple[dict[str, Any], float | None]:
    """Close a done task's window once ``close_after_s`` passed. Returns the task and when to look again."""
    attempt = tasks.current_attempt(task)
    if task.get("state") != "done" or task.get("headless") or attempt is None or attempt.get("closed_at"):
        return task, None
    if not attempt.get("pane"):
        return task, None
    when = (parse_ts(attempt.get("ended_at")) or now) + launcher.cfg.close_after_s
    if now < when:
        return task, when
    end_agent(launcher, task, attempt, close_window=True)
    new = tasks.change(launcher.root, task["id"], "ccm-agentd", note="window closed after the grace period",
                       attempt={"n": attempt["n"], "closed_at": iso_utc(now)})  # fmt: skip
    return new, None


def _wait(done: Callable[[], bool], seconds: float) -> None:
    """Poll ``done()`` every 50 ms for at most ``seconds`` (a cancel may take that long; it is rare)."""
    deadline = time.monotonic() + seconds
    while not done() and time.monotonic() < deadline:
        time.sleep(0.05)


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)  # start_new_session: the agent leads its own group
    except ProcessLookupError:
        pass
    except PermissionError:
        os.kill(pid, sig)
