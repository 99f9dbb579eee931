"""A hand-written check of the common record and status shapes, so ``validate`` need not run jsonschema on
each of millions of records (jsonschema: ~0.5-1 ms a record; this: a few microseconds).

It only ever says "valid" or "don't know": ``event_ok``/``status_ok`` return True only for objects the JSON
Schemas in spec/schemas/ accept, and False for anything else, including shapes it does not bother with
(ccm's own ``ccm.*`` records, floats where an integer is expected, ...). ``validate`` then asks jsonschema,
which gives the verdict and the message. So verdicts are jsonschema's by construction, as long as every
True here is right. Two guards keep it so: the checks are written against one version of each schema
(SCHEMA_FINGERPRINTS; with any other version they step aside and jsonschema checks everything), and
tests/test_validate.py runs both on every fixture, on generated logs and on thousands of mutated records.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

# sha256 of each schema with its "description"s removed (descriptions do not change what is valid).
SCHEMA_FINGERPRINTS = {
    "event.schema.json": "bfa44eb72cc78c2a58c51a418f4fdf083f6d0ec7e29d3ae85b1203fca722ab6b",
    "status.schema.json": "756df105d92342b7c865e0747e2694736a61185d5f3fde2406e1ed9e942b58a4",
}

COMMON = {"v", "ts", "seq", "session_id", "event", "cwd", "project"}
STRINGS = {
    "task_id", "agent_id", "agent_type", "permission_mode", "tool_name", "tool_use_id", "error", "prompt",
    "notification_type", "message", "last_assistant_message", "source", "model", "transcript_path", "reason",
    "trigger", "custom_instructions",
}  # fmt: skip
# The events a field may appear on (the schema's fields_per_event); fields not listed go anywhere.
ONLY_ON = {
    "ok": {"PostToolUse", "PostToolUseFailure"},
    "duration_ms": {"PostToolUse", "PostToolUseFailure"},
    "interrupted": {"PostToolUse", "PostToolUseFailure"},
    "error": {"PostToolUseFailure", "StopFailure"},
    "prompt": {"UserPromptSubmit"},
    "notification_type": {"Notification"},
    "message": {"Notification"},
    "last_assistant_message": {"Stop", "SubagentStop", "StopFailure"},
    "stop_hook_active": {"Stop", "SubagentStop", "StopFailure"},
    "source": {"SessionStart"},
    "model": {"SessionStart"},
    "transcript_path": {"SessionStart"},
    "reason": {"SessionEnd"},
    "trigger": {"PreCompact", "PostCompact"},
    "custom_instructions": {"PreCompact", "PostCompact"},
}
TOOL_EVENTS = {"PreToolUse", "PostToolUse", "PostToolUseFailure", "PermissionRequest"}
KNOWN = COMMON | STRINGS | {"tool_input", "ok", "duration_ms", "exit_code", "interrupted", "stop_hook_active",
                            "truncated"}  # fmt: skip
TRUNCATABLE = {
    "cwd", "project", "task_id", "agent_id", "agent_type", "permission_mode", "tool_name", "tool_use_id",
    "error", "prompt", "notification_type", "message", "last_assistant_message", "source", "model",
    "transcript_path", "reason", "trigger", "custom_instructions",
}  # fmt: skip
# tool_input keys (all strings, except Bash's run_in_background which can only be true) per tool.
_FILES = frozenset({"file_path", "notebook_path"})
_SEARCH = frozenset({"pattern", "path"})
_AGENT = frozenset({"description", "subagent_type"})
TOOL_KEYS = {
    "Bash": frozenset({"command", "description", "run_in_background"}),
    **dict.fromkeys(("Read", "Write", "Edit", "MultiEdit", "NotebookEdit"), _FILES),
    **dict.fromkeys(("Grep", "Glob"), _SEARCH),
    "WebFetch": frozenset({"url"}),
    "WebSearch": frozenset({"query"}),
    **dict.fromkeys(("Agent", "Task"), _AGENT),
}
TS_DIGITS = (0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18, *range(20, 26))
TS_MARKS = ((4, "-"), (7, "-"), (10, "T"), (13, ":"), (16, ":"), (19, "."), (26, "Z"))
_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")


def fingerprint(schema: dict[str, Any]) -> str:
    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k != "description"}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    return hashlib.sha256(json.dumps(strip(schema), sort_keys=True).encode()).hexdigest()


def _int(value: object, minimum: int | None = None) -> bool:
    return type(value) is int and (minimum is None or value >= minimum)


def ts_ok(value: object) -> bool:
    if type(value) is not str or len(value) != 27 or not value.isascii():
        return False
    return all(value[i].isdigit() for i in TS_DIGITS) and all(value[i] == c for i, c in TS_MARKS)


def _id_ok(value: object) -> bool:
    return (
        type(value) is str
        and 0 < len(value) <= 128
        and value[0] != "-"
        and value[0] != "_"
        and _ID_CHARS.issuperset(value)
    )


def _event_name_ok(value: str) -> bool:
    return 0 < len(value) <= 64 and not value[0].isdigit() and _NAME_CHARS.issuperset(value)


def _tool_input_ok(tool: object, ti: object) -> bool:
    if type(ti) is not dict:
        return False
    keys = TOOL_KEYS.get(tool) if type(tool) is str else None
    if keys is not None:
        if not keys.issuperset(ti):
            return False
        for key, value in ti.items():
            if key == "run_in_background" and tool == "Bash":
                if value is not True:
                    return False
            elif type(value) is not str:
                return False
        return True
    if len(ti) > 8:
        return False
    for key, value in ti.items():
        if len(key) > 200:
            return False
        kind = type(value)
        if kind is float:
            if not math.isfinite(value):
                return False  # NaN/Infinity: not strict JSON; the slow path says so
        elif not (kind is str or kind is int or kind is bool or value is None):
            return False
    return True


def _truncated_ok(value: object) -> bool:
    if type(value) is not dict or not value:
        return False
    for key, length in value.items():
        if key not in TRUNCATABLE and not key.startswith("tool_input."):
            return False
        if not _int(length, 0):
            return False
    return True


def event_ok(rec: object) -> bool:
    """True only if event.schema.json accepts ``rec`` (False: ask jsonschema)."""
    if type(rec) is not dict or not COMMON.issubset(rec) or not KNOWN.issuperset(rec):
        return False  # also every ccm.* payload field (by, watch, decision, ...): jsonschema checks those
    if rec["v"] != 1 or type(rec["v"]) is not int or not ts_ok(rec["ts"]) or not _int(rec["seq"], 1):
        return False
    event = rec["event"]
    if type(event) is not str or not _event_name_ok(event) or not _id_ok(rec["session_id"]):
        return False
    for key in ("cwd", "project"):
        if rec[key] is not None and type(rec[key]) is not str:
            return False
    for key, value in rec.items():
        if key in STRINGS and type(value) is not str:
            return False
        allowed = ONLY_ON.get(key)
        if allowed is not None and event not in allowed:
            return False
    if "ok" in rec and type(rec["ok"]) is not bool:
        return False
    if "stop_hook_active" in rec and type(rec["stop_hook_active"]) is not bool:
        return False
    if "duration_ms" in rec and not _int(rec["duration_ms"]):
        return False
    if "interrupted" in rec and rec["interrupted"] is not True:
        return False
    if event == "PostToolUse" and rec.get("ok") is not True:
        return False
    if event == "PostToolUseFailure" and rec.get("ok") is not False:
        return False
    if "exit_code" in rec:
        code = rec["exit_code"]
        if not _int(code):
            return False
        bash_ok = event == "PostToolUse" and rec.get("tool_name") == "Bash" and code == 0
        if not (event == "PostToolUseFailure" or (bash_ok and "interrupted" not in rec)):
            return False
    if ("tool_use_id" in rec or "tool_input" in rec) and event not in TOOL_EVENTS and "tool_name" not in rec:
        return False
    if "tool_input" in rec and not _tool_input_ok(rec.get("tool_name"), rec["tool_input"]):
        return False
    return "truncated" not in rec or _truncated_ok(rec["truncated"])


STATUS_KEYS = {
    "v", "session_id", "state", "state_since", "reason", "cwd", "project", "seq", "last_event",
    "last_tool", "current_action", "started_at", "updated_at", "counters", "last_prompt",
    "last_assistant_message", "error", "transcript_path", "task_id", "model", "permission_mode", "tmux_pane",
    "tmux_socket", "claude_pid", "tools_running", "waiting_tool_use_id", "watch", "resume_at", "typing",
}  # fmt: skip
STATUS_NULLABLE_STRINGS = {
    "reason", "cwd", "project", "last_tool", "current_action", "last_prompt", "last_assistant_message",
    "error", "transcript_path", "task_id", "model", "permission_mode", "tmux_pane", "tmux_socket",
    "waiting_tool_use_id",
}  # fmt: skip
STATES = {"starting", "processing", "working", "waiting", "idle", "error", "ended", "stalled", "rate_limited"}
COUNTERS = {"prompts", "tool_uses", "failures", "turns", "errors", "subagents"}
WATCH_KEYS = {"enabled", "source", "max_turns", "prompt", "done_marker", "no_progress_turns", "continues",
              "no_progress", "blocks", "tool_mark", "stopped", "detail", "handoff"}  # fmt: skip
SOURCES = {"default", "global", "project", "env", "session"}
STOPS = {None, "done", "max_turns", "no_progress", "error", "needs_human", "block_cap"}


def _watch_ok(w: object) -> bool:
    if type(w) is not dict or w.keys() != WATCH_KEYS:
        return False
    if type(w["enabled"]) is not bool or type(w["source"]) is not str or w["source"] not in SOURCES:
        return False
    if not (_int(w["max_turns"], 1) and w["max_turns"] <= 10000):
        return False
    if not (_int(w["no_progress_turns"], 1) and w["no_progress_turns"] <= 10000):
        return False
    if not all(_int(w[k], 0) for k in ("continues", "no_progress", "blocks", "tool_mark")):
        return False
    for key, top in (("prompt", 2000), ("done_marker", 500)):
        if type(w[key]) is not str or not 1 <= len(w[key]) <= top:
            return False
    if not (w["stopped"] is None or (type(w["stopped"]) is str and w["stopped"] in STOPS)):
        return False
    if w["detail"] is not None and type(w["detail"]) is not str:
        return False
    h = w["handoff"]
    if h is None:
        return True
    return (
        type(h) is dict
        and h.keys() == {"turn", "prompt", "ts"}
        and _int(h["turn"], 1)
        and type(h["prompt"]) is str
        and ts_ok(h["ts"])
    )


def status_ok(st: object) -> bool:
    """True only if status.schema.json accepts ``st`` (False: ask jsonschema)."""
    if type(st) is not dict or st.keys() != STATUS_KEYS:
        return False
    if st["v"] != 1 or type(st["v"]) is not int or not _id_ok(st["session_id"]):
        return False
    if type(st["state"]) is not str or st["state"] not in STATES or not _int(st["seq"], 1):
        return False
    if not all(ts_ok(st[k]) for k in ("state_since", "started_at", "updated_at")):
        return False
    if st["resume_at"] is not None and not ts_ok(st["resume_at"]):
        return False
    last = st["last_event"]
    if type(last) is not str or not _event_name_ok(last):
        return False
    if any(st[k] is not None and type(st[k]) is not str for k in STATUS_NULLABLE_STRINGS):
        return False
    if st["claude_pid"] is not None and not _int(st["claude_pid"], 1):
        return False
    if st["waiting_tool_use_id"] is not None and st["state"] != "waiting":
        return False
    counters = st["counters"]
    if (
        type(counters) is not dict
        or counters.keys() != COUNTERS
        or not all(_int(v, 0) for v in counters.values())
    ):
        return False
    running = st["tools_running"]
    if type(running) is not dict or len(running) > 32:
        return False
    for tool in running.values():
        if type(tool) is not dict or tool.keys() != {"tool", "since", "action"} or not ts_ok(tool["since"]):
            return False
        if any(tool[k] is not None and type(tool[k]) is not str for k in ("tool", "action")):
            return False
    typing = st["typing"]
    if typing is not None and not (
        type(typing) is dict
        and typing.keys() == {"item", "kind", "seq"}
        and all(typing[k] is None or type(typing[k]) is str for k in ("item", "kind"))
        and _int(typing["seq"], 1)
    ):
        return False
    return _watch_ok(st["watch"])
