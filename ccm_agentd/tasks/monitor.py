"""Is a running task done, failed, or still going? Decided from its session's status, which is a fold of
the hook records and watch decisions (spec/status.md, spec/watch.md), and the clock. Pure: the job reads
the status and acts on the verdict (spec/tasks.md#done-and-failed)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ccm_agentd import liveness
from ccm_hooks import watch
from ccm_hooks.statedir.timefmt import parse_ts

DONE_STOPS = ("done", "max_turns", "no_progress", "block_cap")


@dataclass(frozen=True)
class Verdict:
    state: str  # done | failed
    reason: str


def assess(task: Mapping[str, Any], status: Mapping[str, Any] | None, now: float) -> Verdict | None:
    """The end of the current attempt of a running interactive task, or None while it goes on."""
    attempt = (task.get("attempts") or [{}])[-1]
    timeout = task.get("timeout_s")
    since = parse_ts(attempt.get("confirmed_at")) or parse_ts(attempt.get("started_at"))
    if isinstance(timeout, (int, float)) and since is not None and now - since >= timeout:
        return Verdict("failed", f"timed out: still running after {_human(float(timeout))} (--timeout)")
    if status is None:
        return None
    state = status.get("state")
    if state == "ended":
        return Verdict("failed", f"the session ended: {status.get('reason') or 'unknown'}")
    if liveness.is_rate_limit(dict(status)):
        return None  # ccm-agentd marks it rate_limited and resumes it after the reset
    message = status.get("last_assistant_message")
    if state == "error":
        return Verdict("failed", f"API error: {status.get('error') or message or 'unknown'}")
    if state != "idle":
        return None
    marker = task.get("error_marker")
    if isinstance(marker, str) and watch.marker_found(marker, message):
        return Verdict("failed", f"the agent said it failed: {_clip(message)}")
    w = status.get("watch") or {}
    if w.get("handoff"):
        return None  # a continue is on its way through tmux
    if w.get("enabled"):
        stopped = w.get("stopped")
        if stopped in DONE_STOPS:
            return Verdict("done", f"watch stopped: {w.get('detail') or stopped}")
        return None  # needs_human, an interrupt: a person is in charge until the next run ends
    turns = int((status.get("counters") or {}).get("turns") or 0)
    if turns >= 1:
        return Verdict("done", "the first turn ended (watch off)")
    return None


def assess_headless(task: Mapping[str, Any], result: Mapping[str, Any] | None, exit_code: int | None,
                    now: float) -> Verdict | None:  # fmt: skip
    """The end of a headless attempt from its final stream-json ``result`` line and its exit."""
    attempt = (task.get("attempts") or [{}])[-1]
    timeout = task.get("timeout_s")
    since = parse_ts(attempt.get("started_at"))
    if result is None:
        if exit_code is not None:
            return Verdict("failed", f"claude -p exited with code {exit_code} and no result")
        if isinstance(timeout, (int, float)) and since is not None and now - since >= timeout:
            return Verdict("failed", f"timed out: still running after {_human(float(timeout))} (--timeout)")
        return None
    text = result.get("result")
    if result.get("is_error") or result.get("subtype") != "success":
        return Verdict("failed", f"claude -p: {result.get('subtype')}: {_clip(text)}")
    marker = task.get("error_marker")
    if isinstance(marker, str) and watch.marker_found(marker, text):
        return Verdict("failed", f"the agent said it failed: {_clip(text)}")
    return Verdict("done", f"claude -p finished after {result.get('num_turns')} turn(s)")


def _clip(text: object, n: int = 300) -> str:
    flat = " ".join(str(text or "").split())
    return flat if len(flat) <= n else flat[: n - 1] + "…"


def _human(seconds: float) -> str:
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
