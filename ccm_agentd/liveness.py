"""What hooks cannot tell: a session that stalled, was interrupted, vanished, or hit a usage limit.

Each finding is a ``ccm.state`` record (written only if the session's log has not moved since the status
it was based on), so the status stays a fold of the log and the next hook event takes over from it.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from ccm_agentd import panes, screen
from ccm_hooks.statedir.timefmt import parse_ts

BUSY = ("working", "processing")
LOOKED_AT = (*BUSY, "stalled")  # states whose pane is read at each check: a turn may have ended unseen
# Claude Code's usage-limit texts: "Claude usage limit reached|1732212000" (older), "5-hour limit reached ∙
# resets 3pm", "You've hit your limit · resets 11:30am (Europe/Paris)", and API 429s.
_LIMIT_RE = re.compile(r"usage limit|limit reached|hit your limit|rate.?limit|429", re.IGNORECASE)
_NOTICE_RE = re.compile(
    r"^(?:Claude AI usage limit reached"
    r"|.{0,40}limit reached\s*[∙·|•]\s*resets"
    r"|You've hit your (?:usage )?limit)"
)
_EPOCH_RE = re.compile(r"\|(\d{10})\b")
_RESETS_RE = re.compile(
    r"resets?\s+(?:at\s+)?(\d{1,2})(?::(\d{2}))?\s*([ap]m)?(?:\s*\(([A-Za-z_]+/[A-Za-z_/+-]+|UTC)\))?",
    re.IGNORECASE,
)
_IN_RE = re.compile(
    r"(?:try again|retry|resets?) in\s+(\d+)\s*(s|sec|second|m|min|minute|h|hour)", re.IGNORECASE
)


@dataclass(frozen=True)
class Config:
    stall_after_s: float = 600.0
    rate_limit_wait_s: float = 3600.0  # when the message gives no reset time
    rate_limit_jitter_s: float = 60.0


def _limit_text(status: dict[str, Any]) -> str:
    """The error and the reply, once: a StopFailure's ``error`` already holds its message."""
    error, message = str(status.get("error") or ""), str(status.get("last_assistant_message") or "")
    return error if message in error else f"{error} {message}".strip()


def is_rate_limit(status: dict[str, Any]) -> bool:
    if status.get("state") == "error":
        return bool(_LIMIT_RE.search(_limit_text(status)))
    # A limit can also end a turn "normally": Claude Code shows its limit notice as the reply. Only the
    # notice's own wording counts here; a reply that merely talks about rate limits must never be resumed.
    message = str(status.get("last_assistant_message") or "")
    return status.get("state") == "idle" and len(message) < 300 and bool(_NOTICE_RE.search(message))


def reset_time(text: str, now: float, default_wait: float) -> float:
    """When the limit resets, from the message; ``now + default_wait`` when it does not say."""
    epoch = _EPOCH_RE.search(text)
    if epoch:
        return float(epoch.group(1))
    rel = _IN_RE.search(text)
    if rel:
        unit = rel.group(2).lower()[0]
        return now + int(rel.group(1)) * {"s": 1, "m": 60, "h": 3600}[unit]
    at = _RESETS_RE.search(text)
    if at:
        hour, minute = int(at.group(1)), int(at.group(2) or 0)
        ampm = (at.group(3) or "").lower()
        if ampm == "pm" and hour < 12:
            hour += 12
        elif ampm == "am" and hour == 12:
            hour = 0
        tz: dt.tzinfo | None = None
        if at.group(4):
            try:
                from zoneinfo import ZoneInfo

                tz = ZoneInfo(at.group(4))
            except Exception:
                tz = None
        local = dt.datetime.fromtimestamp(now, tz) if tz else dt.datetime.fromtimestamp(now).astimezone()
        if hour < 24 and minute < 60:
            when = local.replace(hour=hour, minute=minute, second=0, microsecond=0)
            if when.timestamp() <= now:
                when += dt.timedelta(days=1)
            return when.timestamp()
    return now + default_wait


def check(status: dict[str, Any], tmux: panes.Tmux, cfg: Config, now: float) -> dict[str, Any] | None:
    """The ``set_state`` of a ccm.state record this session needs, or None."""
    state = status.get("state")
    if state == "ended":
        return None
    lost = _lost(status, tmux)
    if lost:
        return {"state": "ended", "reason": f"lost: {lost}"}
    if state in LOOKED_AT:
        quiet = now - (parse_ts(status.get("updated_at")) or now)
        if state in BUSY and quiet < cfg.stall_after_s:
            return None
        socket, pane = status.get("tmux_socket"), status.get("tmux_pane")
        shown = tmux.capture(str(socket), str(pane)) if socket and pane else None
        if shown is not None and screen.is_idle(shown, empty=False):
            # Esc, or a dialog answered "No": the turn ended and no hook said so. A stalled session is
            # looked at too: Esc is what a person does about a stall, and it fires no hook either.
            return {
                "state": "idle",
                "reason": "interrupted: the pane is back at its prompt, no Stop hook fired",
            }
        if state == "stalled":
            return None
        seen = "the pane shows it still working" if shown is not None else "no pane to look at"
        return {"state": "stalled", "reason": f"no hook event for {int(quiet)} s; {seen}"}
    if is_rate_limit(status):
        text = _limit_text(status)
        resume = reset_time(text, now, cfg.rate_limit_wait_s)
        from ccm_hooks.record import iso_utc

        return {
            "state": "rate_limited",
            "reason": f"usage limit: {text[:200]}",
            "resume_at": iso_utc(resume),
        }
    return None


def _lost(status: dict[str, Any], tmux: panes.Tmux) -> str | None:
    """Why the session's claude is gone (without a SessionEnd), or None while it may still run."""
    socket, pane = status.get("tmux_socket"), status.get("tmux_pane")
    if socket and pane:
        info = tmux.pane_info(str(socket), str(pane))
        if info is None:
            return f"tmux pane {pane} is gone"
        if info.dead:
            return f"tmux pane {pane}: its process exited"
        if not panes.runs_claude(info, status.get("claude_pid")) and not panes.pid_alive(
            status.get("claude_pid")
        ):
            return f"tmux pane {pane} runs {info.command!r} now"
        return None
    pid = status.get("claude_pid")
    if isinstance(pid, int) and not panes.pid_alive(pid):
        return f"claude (pid {pid}) is not running"
    return None


def resume_due(status: dict[str, Any], jitter: float) -> float | None:
    """When to type the resume into a rate-limited session (epoch seconds)."""
    when = parse_ts(status.get("resume_at"))
    return None if when is None else when + jitter


def is_headless(status: dict[str, Any]) -> bool:
    """A `claude -p` (or SDK) run: it ends by itself, nobody waits at a prompt for it."""
    entrypoint = status.get("entrypoint")
    return isinstance(entrypoint, str) and entrypoint.startswith("sdk")
