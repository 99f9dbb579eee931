"""What hooks cannot tell: a session that stalled, was interrupted, vanished, or hit a usage limit.

Each finding is a ``ccm.state`` record (written only if the session's log has not moved since the status
it was based on), so the status stays a fold of the log and the next hook event takes over from it.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from ccm_agentd import panes, registry, screen
from ccm_hooks.statedir.timefmt import parse_ts

BUSY = ("working", "processing")
LOOKED_AT = (*BUSY, "stalled")  # states whose pane is read at each check: a turn may have ended unseen
# States whose end no hook may announce (Esc, a dialog answered No or dismissed): Claude Code's registry is
# read for them every REGISTRY_LOOK_S.
REGISTRY_WATCHED = (*BUSY, "waiting", "stalled")
REGISTRY_LOOK_S = 1.0
SETTLED_S = 0.5  # the registry must have said idle this long: a Stop hook in flight lands first
# Claude Code's own usage-limit notices (a claude.ai subscription): "You've hit your session limit · resets
# 1:23am (UTC)" (2.1.197), "You've hit your 5-hour limit · resets ..." / "You've hit your limit · resets ..."
# (2.1.328), "5-hour limit reached ∙ resets 3pm", "Claude AI usage limit reached|1732212000" (older).
_NOTICE_RE = re.compile(
    r"^(?:Claude AI usage limit reached"
    r"|.{0,40}limit reached\s*[∙·|•]\s*resets"
    r"|You've hit your (?:[\w-]+ )?limit)"
)
_EPOCH_RE = re.compile(r"\|(\d{10})\b")
# "resets 3:25am (UTC)", "resets 3pm", and a reset more than a day away "resets Dec 3, 3:25am (UTC)" (with
# ", 2027" when the year differs): Claude Code's own formatting, en-US, the time rounded DOWN to the minute.
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_RESETS_RE = re.compile(
    r"resets?\s+(?:at\s+)?(?:(" + "|".join(_MONTHS) + r")[a-z]*\.?\s+(\d{1,2}),?\s+(?:(\d{4}),?\s+)?)?"
    r"(\d{1,2})(?::(\d{2}))?\s*([ap]m)?(?:\s*\(([A-Za-z_]+/[A-Za-z_/+-]+|UTC)\))?",
    re.IGNORECASE,
)
MINUTE_S = 60.0
_IN_RE = re.compile(
    r"(?:try again|retry|resets?) in\s+(\d+)\s*(s|sec|second|m|min|minute|h|hour)", re.IGNORECASE
)


@dataclass(frozen=True)
class Config:
    stall_after_s: float = 600.0
    rate_limit_wait_s: float = 3600.0  # when the message gives no reset time
    rate_limit_jitter_s: float = 60.0
    self_continue_grace_s: float = 120.0  # see resume_due


def _limit_text(status: dict[str, Any]) -> str:
    """The error and the reply, once: a StopFailure's ``error`` already holds its message."""
    error, message = str(status.get("error") or ""), str(status.get("last_assistant_message") or "")
    return error if message in error else f"{error} {message}".strip()


def usage_notice(status: dict[str, Any]) -> bool:
    """The turn ended on Claude Code's own usage-limit notice (a claude.ai subscription's limit)."""
    message = str(status.get("last_assistant_message") or "")
    return len(message) < 300 and bool(_NOTICE_RE.search(message))


def is_rate_limit(status: dict[str, Any]) -> bool:
    """A turn that ended on a usage or rate limit: StopFailure's error type ``rate_limit`` (any 429 the
    API answered, after Claude Code's own retries), or Claude Code's usage-limit notice as the reply. Digits
    in a message are no evidence: "API Error: 400 prompt is too long: 204291 tokens" is not a limit."""
    if status.get("state") == "error":
        return str(status.get("error") or "").startswith("rate_limit") or usage_notice(status)
    return status.get("state") == "idle" and usage_notice(status)


def reset_time(text: str, now: float, default_wait: float, said_at: float | None = None) -> float:
    """When the limit resets, from the message; ``now + default_wait`` when it does not say.

    ``said_at`` is when the message was given (the failed turn's end; ``now`` if unknown). A clock time is
    the first such time at or after it: Claude Code shows the reset rounded down to the minute ("resets
    3:25am" for 3:25:40), so a limit given at 3:25:10 resets this minute, not tomorrow, and is surely over
    at the end of that minute, which is what this returns.
    """
    said = now if said_at is None else min(said_at, now)
    epoch = _EPOCH_RE.search(text)
    if epoch:
        return float(epoch.group(1))
    rel = _IN_RE.search(text)
    if rel:
        unit = rel.group(2).lower()[0]
        return said + int(rel.group(1)) * {"s": 1, "m": 60, "h": 3600}[unit]
    at = _RESETS_RE.search(text)
    if at:
        month, day, year = at.group(1), at.group(2), at.group(3)
        hour, minute = int(at.group(4)), int(at.group(5) or 0)
        ampm = (at.group(6) or "").lower()
        if ampm == "pm" and hour < 12:
            hour += 12
        elif ampm == "am" and hour == 12:
            hour = 0
        tz: dt.tzinfo | None = None
        if at.group(7):
            try:
                from zoneinfo import ZoneInfo

                tz = ZoneInfo(at.group(7))
            except Exception:
                tz = None
        local = dt.datetime.fromtimestamp(said, tz) if tz else dt.datetime.fromtimestamp(said).astimezone()
        try:
            when = local.replace(hour=hour, minute=minute, second=0, microsecond=0)
            if month:
                number = _MONTHS.index(month.lower()) + 1
                when = when.replace(year=int(year) if year else when.year, month=number, day=int(day))
                if not year and when.timestamp() + MINUTE_S <= said:
                    when = when.replace(year=when.year + 1)
            elif when.timestamp() + MINUTE_S <= said:
                when += dt.timedelta(days=1)
        except ValueError:  # hour 25, February 30, ...: not a time
            return now + default_wait
        return when.timestamp() + MINUTE_S
    return now + default_wait


def from_registry(status: dict[str, Any], entry: registry.Entry | None, now: float) -> dict[str, Any] | None:
    """The ``set_state`` for a busy or waiting session that Claude Code's registry says is idle again.

    No hook fires when a person presses Esc or answers a dialog No (spec/claude-versions.md); the registry
    says ``idle`` within a fraction of a second. It is trusted only when it changed after the session's
    state did (it may lag a new turn by a moment) and has stayed idle for a little while (a Stop hook that
    is on its way lands first).
    """
    state = status.get("state")
    if state not in REGISTRY_WATCHED or entry is None or entry.status != "idle" or entry.updated_at is None:
        return None
    if entry.session_id and entry.session_id != status.get("session_id"):
        return None
    since = parse_ts(status.get("state_since")) or now
    if entry.updated_at <= since or now - entry.updated_at < SETTLED_S:
        return None
    if state == "waiting":
        reason = "the dialog was answered No or dismissed: Claude Code is idle again (no hook fires)"
    else:
        reason = "interrupted: Claude Code is idle again and no Stop hook fired (Esc)"
    return {"state": "idle", "reason": reason}


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
        resume = reset_time(text, now, cfg.rate_limit_wait_s, parse_ts(status.get("state_since")))
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


# Claude Code continues by itself 30 to 90 s after a claude.ai usage limit resets, from 2.1.234 on
# (spec/claude-versions.md): ccm's one resume comes after that (``self_continue_grace_s``, 120 s by
# default), and only if that did not happen.
SELF_CONTINUE_SINCE = (2, 1, 234)


def version_tuple(version: object) -> tuple[int, ...] | None:
    if not isinstance(version, str):
        return None
    parts = version.split(".")
    return tuple(int(p) for p in parts) if all(p.isdigit() for p in parts) and parts else None


def continues_by_itself(version: object) -> bool:
    """Whether this Claude Code may continue at a usage limit's reset by itself. An unknown version is
    taken to be the newest (spec/claude-versions.md: a version ccm has never seen)."""
    parsed = version_tuple(version)
    return parsed is None or parsed >= SELF_CONTINUE_SINCE


def awaits_self_continue(status: dict[str, Any], version: object) -> bool:
    """Claude Code may continue this rate-limited session by itself: only a subscription's usage limit
    (its own notice), never an API key's 429, and only on a version that does so."""
    return usage_notice(status) and continues_by_itself(version)


def resume_due(
    status: dict[str, Any], jitter: float, version: object = None, grace: float = 120.0
) -> float | None:
    """When to type the resume into a rate-limited session (epoch seconds): after the reset plus the
    jitter, and on a Claude Code that continues by itself, ``grace`` later still (the time it takes to do
    so). If it did, the session is no longer rate limited (its own continue is a UserPromptSubmit) and
    nothing is typed; while its screen says it will, nothing is typed either (screen.SELF_ACTING)."""
    when = parse_ts(status.get("resume_at"))
    if when is None:
        return None
    if not awaits_self_continue(status, version):
        grace = 0.0
    return when + grace + jitter


def is_headless(status: dict[str, Any]) -> bool:
    """A `claude -p` (or SDK) run: it ends by itself, nobody waits at a prompt for it."""
    entrypoint = status.get("entrypoint")
    return isinstance(entrypoint, str) and entrypoint.startswith("sdk")
