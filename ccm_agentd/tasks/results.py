"""Ending an attempt: retry it (a fresh session on the same branch, after a backoff) or end the task as
done, failed or cancelled with its result, and tell people (spec/tasks.md#retries, #result)."""

from __future__ import annotations

import logging
from typing import Any

from ccm_agentd.jobs import Notify
from ccm_agentd.tasks import cleanup
from ccm_agentd.tasks.launcher import BY, Launcher
from ccm_agentd.tasks.monitor import Verdict
from ccm_hooks.record import iso_utc
from ccm_hooks.statedir import tasks, tasks_result

log = logging.getLogger("ccm_agentd.tasks")


def retries_left(task: dict[str, Any]) -> int:
    """Automatic retries still allowed (``task retry`` by a person adds one attempt beyond them)."""
    attempts = len(task.get("attempts") or [])
    manual = int(task.get("manual_retries") or 0)
    return int(task.get("retries") or 0) + manual - (attempts - 1)


def end_attempt(launcher: Launcher, task: dict[str, Any], verdict: Verdict, now: float,
                notify: Notify) -> dict[str, Any]:  # fmt: skip
    """Act on the verdict about the current attempt: retry, or end the task. Returns the task as recorded."""
    attempt = tasks.current_attempt(task)
    assert attempt is not None
    n = int(attempt["n"])
    ended = {"n": n, "ended_at": iso_utc(now), "outcome": verdict.state, "reason": verdict.reason}
    if verdict.state == "failed" and retries_left(task) > 0:
        cleanup.end_agent(launcher, task, attempt, close_window=True)  # one live agent per task, always
        if not task.get("headless"):
            ended["closed_at"] = iso_utc(now)
        backoff = launcher.cfg.retry_backoff_s[min(n - 1, len(launcher.cfg.retry_backoff_s) - 1)]
        reason = f"attempt {n} failed: {verdict.reason}; retrying in {backoff:g} s"
        log.info("task %s: %s", task["id"], reason)
        return tasks.change(launcher.root, task["id"], BY, to="queued", reason=reason, expect=tasks.LIVE,
                            changes={"not_before": iso_utc(now + backoff)}, attempt=ended)  # fmt: skip
    if verdict.state == "failed":
        # Kept for inspection; a timed-out agent may still be busy: stop it doing more.
        cleanup.end_agent(launcher, task, attempt, close_window=False)
    return finish(launcher, task, verdict.state, verdict.reason, now, notify, ended)


def finish(launcher: Launcher, task: dict[str, Any], state: str, reason: str, now: float, notify: Notify,
           ended: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """The task ends in ``state``: its result computed (git, counters, transcript) and recorded."""
    result = tasks_result.compute(launcher.root, task, state, reason, now)
    new = tasks.change(launcher.root, task["id"], BY, to=state, reason=reason, expect=tasks.LIVE,
                       changes={"result": result, "not_before": None}, attempt=ended)  # fmt: skip
    log.info("task %s: %s (%s)", task["id"], state, reason)
    if state in ("done", "failed"):
        attempt = tasks.current_attempt(new) or {}
        notify(
            f"task_{state}", f"task:{new['id']}", tasks_result.summary_line(new),
            since=new.get("state_since"), state=state, reason=reason, project=new.get("project"),
            tmux_pane=attempt.get("pane"), tmux_socket=attempt.get("tmux_socket"),
        )  # fmt: skip
    return new


def cancel(launcher: Launcher, task: dict[str, Any], now: float, notify: Notify) -> dict[str, Any]:
    """A person asked to cancel a task whose agent may be running: interrupt it, end it, close its window."""
    attempt = tasks.current_attempt(task)
    ended = None
    if attempt is not None:
        cleanup.end_agent(launcher, task, attempt, close_window=True)
        ended = {"n": attempt["n"], "ended_at": iso_utc(now), "outcome": "cancelled",
                 "reason": "cancelled", "closed_at": iso_utc(now)}  # fmt: skip
    by = (task.get("cancel") or {}).get("by") or "a person"
    return finish(launcher, task, "cancelled", f"cancelled by {by}", now, notify, ended)
