"""Turn one hook payload into one bounded event record (spec/events.md).

Standard library only, and no ``re``/``datetime``: the handler imports this on every call.

Nothing from the payload is copied wholesale. Each field is picked, type-checked (a wrong type counts as
absent) and every free-text value is clipped to the field cap with an in-band marker, so a 20 MB
``tool_response`` or prompt can never become a 20 MB line.
"""

from __future__ import annotations

import math
import os
import time

TYPE_CHECKING = False  # not `from typing import ...`: importing typing costs ~3 ms per hook call
if TYPE_CHECKING:
    from typing import Any

    Record = dict[str, Any]

FORMAT_VERSION = 1
DEFAULT_FIELD_CAP = 4000  # characters per free-text field; CCM_FIELD_CAP overrides
MIN_FIELD_CAP = 64
MAX_FIELD_CAP = 100_000
SHORT_CAP = 200  # for names, descriptions and other fields that are never long when sane
MAX_INPUT_KEYS = 8  # fields kept from the input of a tool we have no special summary for

FILE_TOOLS = frozenset({"Read", "Write", "Edit", "MultiEdit", "NotebookEdit"})
TOOL_EVENTS = frozenset({"PreToolUse", "PostToolUse", "PostToolUseFailure", "PermissionRequest"})


def ascii_int(raw: str, max_digits: int = 12) -> int | None:
    """The number ``raw`` writes with ASCII digits only (spaces around allowed), else None.

    Not ``int()`` or ``str.isdigit()`` alone: those accept superscripts (``²``), other scripts' digits,
    signs, underscores, and tens of thousands of digits. Every number ccm reads from the environment goes
    through this.
    """
    text = raw.strip(" \t")
    if not text or len(text) > max_digits or not text.isascii() or not text.isdigit():
        return None
    return int(text)


def _field_cap(environ: os._Environ[str] | dict[str, str]) -> tuple[int, str | None]:
    raw = environ.get("CCM_FIELD_CAP", "")
    if raw == "":
        return DEFAULT_FIELD_CAP, None
    value = ascii_int(raw)
    if value is None:
        return DEFAULT_FIELD_CAP, (
            f"CCM_FIELD_CAP={raw[:40]!r} is not a whole number written with ASCII digits: using the default "
            f"{DEFAULT_FIELD_CAP}"
        )
    if value < MIN_FIELD_CAP or value > MAX_FIELD_CAP:
        used = min(max(value, MIN_FIELD_CAP), MAX_FIELD_CAP)
        return used, f"CCM_FIELD_CAP={value} is outside {MIN_FIELD_CAP}..{MAX_FIELD_CAP}: using {used}"
    return value, None


def field_cap(environ: os._Environ[str] | dict[str, str]) -> int:
    """``CCM_FIELD_CAP`` (spec/events.md#truncation): unset or not a number means the default, a number
    outside MIN_FIELD_CAP..MAX_FIELD_CAP is clamped."""
    return _field_cap(environ)[0]


def field_cap_problem(environ: os._Environ[str] | dict[str, str]) -> str | None:
    """What is wrong with ``CCM_FIELD_CAP``, for hooks.log (logged once, at a session's first event)."""
    return _field_cap(environ)[1]


def iso_utc(t: float) -> str:
    """``2026-11-21T05:42:11.123456Z``: fixed width, so the strings sort in time order."""
    micros = int(t * 1_000_000) % 1_000_000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{micros:06d}Z"


class Clipper:
    """Clips strings to a cap and remembers what it cut, for the record's ``truncated`` map."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.cut: dict[str, int] = {}

    def __call__(self, name: str, value: object, cap: int | None = None) -> str | None:
        if not isinstance(value, str):
            return None
        limit = self.cap if cap is None else min(cap, self.cap)
        if len(value) <= limit:
            return value
        self.cut[name] = len(value)
        return value[:limit] + f"…[+{len(value) - limit} chars]"


def _str(payload: dict[str, Any], key: str) -> str | None:
    value = payload.get(key)
    return value if isinstance(value, str) else None


def _int(value: object) -> int | None:
    # bool is an int subclass; a JSON true is not a duration.
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def summarize_tool_input(tool_name: str | None, tool_input: object, clip: Clipper) -> dict[str, Any] | None:
    """A compact, bounded stand-in for ``tool_input``: the fields a person scans for, nothing bulky."""
    if not isinstance(tool_input, dict):
        return None
    out: dict[str, Any] = {}

    def keep(key: str, cap: int | None = None) -> None:
        value = clip(f"tool_input.{key}", tool_input.get(key), cap)
        if value is not None:
            out[key] = value

    if tool_name == "Bash":
        keep("command")
        keep("description", SHORT_CAP)
        if tool_input.get("run_in_background") is True:
            out["run_in_background"] = True
    elif tool_name in FILE_TOOLS:
        keep("file_path")
        keep("notebook_path")
    elif tool_name in ("Grep", "Glob"):
        keep("pattern", SHORT_CAP)
        keep("path")
    elif tool_name == "WebFetch":
        keep("url")
    elif tool_name == "WebSearch":
        keep("query", SHORT_CAP)
    elif tool_name in ("Agent", "Task"):
        keep("description", SHORT_CAP)
        keep("subagent_type", SHORT_CAP)
    else:
        # Unknown and MCP tools: scalar fields only, each short, a bounded number of them.
        for key, value in tool_input.items():
            if len(out) >= MAX_INPUT_KEYS:
                break
            name = str(key)[:SHORT_CAP]  # keys are bounded too, here and in the truncated map
            if isinstance(value, str):
                out[name] = clip(f"tool_input.{name}", value, SHORT_CAP)
            elif isinstance(value, float) and not math.isfinite(value):
                out[name] = str(value)  # NaN/Infinity are not JSON; strict parsers reject the bare tokens
            elif isinstance(value, (int, float, bool)) or value is None:
                out[name] = value
    return out


def tool_summary(tool_name: str | None, summary: dict[str, Any] | None) -> str | None:
    """One line for status ``current_action``: ``Bash: make test``, ``Edit: src/app.py``."""
    if not tool_name:
        return None
    detail = ""
    if summary:
        for key in ("command", "file_path", "notebook_path", "pattern", "url", "query", "description"):
            value = summary.get(key)
            if isinstance(value, str) and value:
                detail = value
                break
    detail = " ".join(detail.split())  # one line, whatever the command looked like
    if len(detail) > SHORT_CAP:
        detail = detail[:SHORT_CAP] + "…"
    return f"{tool_name}: {detail}" if detail else tool_name


def _exit_code(error: str | None) -> int | None:
    # PostToolUseFailure for Bash carries "Exit code 3\n<stderr>".
    if not error or not error.startswith("Exit code "):
        return None
    head = error[len("Exit code ") :].split("\n", 1)[0].strip()
    return int(head) if head.lstrip("-").isdigit() and len(head) < 12 else None


def _error_text(value: object, clip: Clipper) -> str | None:
    if isinstance(value, str):
        return clip("error", value)
    if isinstance(value, dict):
        # An error object: keep its type and message, not the whole thing.
        parts = [v for v in (value.get("type"), value.get("message")) if isinstance(v, str)]
        return clip("error", ": ".join(parts)) if parts else None
    return None


def build_record(
    payload: dict[str, Any],
    *,
    event: str,
    seq: int,
    ts: str,
    environ: os._Environ[str] | dict[str, str],
    cap: int,
) -> Record:
    """The event record for ``payload``. ``session_id`` must already be validated by the caller."""
    clip = Clipper(cap)
    rec: Record = {
        "v": FORMAT_VERSION,
        "ts": ts,
        "seq": seq,
        "session_id": payload["session_id"],
        "event": event,
        "cwd": clip("cwd", payload.get("cwd")),
        "project": clip("project", environ.get("CLAUDE_PROJECT_DIR")),
    }
    optional: Record = {}
    task_id = environ.get("CCM_TASK_ID")
    if task_id:
        optional["task_id"] = clip("task_id", task_id, SHORT_CAP)
    for key in ("agent_id", "agent_type", "permission_mode"):
        optional[key] = clip(key, payload.get(key), SHORT_CAP)

    tool_name = clip("tool_name", payload.get("tool_name"), SHORT_CAP)
    if event in TOOL_EVENTS or tool_name is not None:
        optional["tool_name"] = tool_name
        optional["tool_use_id"] = clip("tool_use_id", payload.get("tool_use_id"), SHORT_CAP)
        optional["tool_input"] = summarize_tool_input(tool_name, payload.get("tool_input"), clip)

    if event == "PostToolUse":
        optional["ok"] = True
        optional["duration_ms"] = _int(payload.get("duration_ms"))
        response = payload.get("tool_response")
        interrupted = isinstance(response, dict) and response.get("interrupted") is True
        if interrupted:
            optional["interrupted"] = True
        if tool_name == "Bash" and not interrupted:
            optional["exit_code"] = 0  # a non-zero exit arrives as PostToolUseFailure instead
    elif event == "PostToolUseFailure":
        error = _str(payload, "error")
        optional["ok"] = False
        optional["duration_ms"] = _int(payload.get("duration_ms"))
        optional["exit_code"] = _exit_code(error)
        optional["error"] = clip("error", error)
        if payload.get("is_interrupt") is True:
            optional["interrupted"] = True
    elif event == "UserPromptSubmit":
        optional["prompt"] = clip("prompt", payload.get("prompt"))
    elif event == "Notification":
        optional["notification_type"] = clip("notification_type", payload.get("notification_type"), SHORT_CAP)
        optional["message"] = clip("message", payload.get("message"))
    elif event in ("Stop", "SubagentStop", "StopFailure"):
        last_message = payload.get("last_assistant_message")
        optional["last_assistant_message"] = clip("last_assistant_message", last_message)
        if isinstance(payload.get("stop_hook_active"), bool):
            optional["stop_hook_active"] = payload["stop_hook_active"]
        if event == "StopFailure":
            optional["error"] = _error_text(payload.get("error"), clip)
    elif event == "SessionStart":
        optional["source"] = clip("source", payload.get("source"), SHORT_CAP)
        optional["model"] = clip("model", payload.get("model"), SHORT_CAP)
        optional["transcript_path"] = clip("transcript_path", payload.get("transcript_path"))
    elif event == "SessionEnd":
        optional["reason"] = clip("reason", payload.get("reason"), SHORT_CAP)
    elif event in ("PreCompact", "PostCompact"):
        optional["trigger"] = clip("trigger", payload.get("trigger"), SHORT_CAP)
        optional["custom_instructions"] = clip("custom_instructions", payload.get("custom_instructions"))

    rec.update((k, v) for k, v in optional.items() if v is not None)
    if clip.cut:
        rec["truncated"] = clip.cut
    return rec


def ccm_record(status: dict[str, Any], event: str, seq: int, ts: str, fields: Record) -> Record:
    """One of ccm's own records (``ccm.watch``, ``ccm.decision``, ...): the common fields, then ``fields``.

    Their event names contain a dot, which no hook event name may (the handler refuses such names), so a
    payload can never forge one.
    """
    rec: Record = {
        "v": FORMAT_VERSION,
        "ts": ts,
        "seq": seq,
        "session_id": status["session_id"],
        "event": event,
        "cwd": status.get("cwd"),
        "project": status.get("project"),
    }
    rec.update(fields)
    return rec
