"""``ccm-hooks status`` and ``ccm-hooks events``: the state dir, read back for people and for jq."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import sys
import time
from typing import Any

from ccm_hooks import paths
from ccm_hooks.statedir import reader
from ccm_hooks.statedir.timefmt import format_age, parse_since, parse_ts

FOLLOW_RESCAN_S = 5.0  # watchers can miss events; re-read every file this often anyway
WATCH_REDRAW_S = 2.0
_AGE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _one_line(text: object, width: int) -> str:
    if not isinstance(text, str):
        return ""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: max(0, width - 1)] + "…"


def _status_action(st: dict[str, Any]) -> str:
    """What a person wants to know next to the state: why it waits or stopped, what it does or said."""
    state = st.get("state")
    if state in ("waiting", "error", "ended"):
        return str(st.get("reason") or "")
    if state == "idle":
        if st.get("reason"):  # watch mode said why it stopped here
            return str(st["reason"])
        return "» " + str(st.get("last_assistant_message") or "")
    return str(st.get("current_action") or "")


def status_cmd(as_json: bool, watch: bool = False) -> int:
    root = paths.state_dir()
    if not watch:
        _print_status(root, as_json)
        return 0
    from ccm_hooks.statedir.fswatch import DirWatcher

    paths.ensure_layout(root)
    clear = "\x1b[H\x1b[2J" if sys.stdout.isatty() and not as_json else ""
    with DirWatcher([paths.status_dir(root)]) as watcher:
        while True:
            sys.stdout.write(clear)
            _print_status(root, as_json)
            sys.stdout.flush()
            # Redraw on any status change, and every few seconds anyway so the ages stay true.
            watcher.wait(WATCH_REDRAW_S)


def _print_status(root: str, as_json: bool) -> None:
    statuses = reader.load_statuses(root)
    if as_json:
        json.dump(statuses, sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
        return
    if not statuses:
        print(f"no sessions recorded in {root} yet (`ccm-hooks install` in a project, then start claude)")
        return
    # Fit a terminal; into a pipe (grep, awk) give whole lines.
    width = shutil.get_terminal_size().columns if sys.stdout.isatty() else 10_000
    now = time.time()
    print(f"{'SESSION':<8}  {'STATE':<10}  {'PROJECT':<16}  {'LAST TOOL':<10}  {'AGE':>4}  ACTION")
    for st in statuses:
        updated = parse_ts(st.get("updated_at"))
        age = format_age(now - updated) if updated else "?"
        project = os.path.basename(str(st.get("project") or st.get("cwd") or "").rstrip("/")) or "-"
        action = _status_action(st)
        head = (
            f"{str(st.get('session_id', '?'))[:8]:<8}  {st.get('state', '?')!s:<10}  "
            f"{_one_line(project, 16):<16}  {_one_line(st.get('last_tool') or '-', 10):<10}  {age:>4}  "
        )
        print(head + _one_line(action or "", max(10, width - len(head))))


def describe(rec: dict[str, Any]) -> str:
    """The interesting part of one record, in one line."""
    from ccm_hooks.record import tool_summary

    event = rec.get("event")
    action = tool_summary(rec.get("tool_name"), rec.get("tool_input")) or ""
    if event == "PostToolUse":
        took = f" {rec['duration_ms']}ms" if isinstance(rec.get("duration_ms"), int) else ""
        return f"{action} ok{took}"
    if event == "PostToolUseFailure":
        code = f" exit {rec['exit_code']}" if rec.get("exit_code") is not None else ""
        error = str(rec.get("error") or "").split("\n", 1)[-1] if code else str(rec.get("error") or "")
        return f"{action} FAILED{code}: {error}"
    if event == "PermissionRequest":
        return f"asks permission: {action}"
    if event == "UserPromptSubmit":
        return repr(_one_line(rec.get("prompt"), 200))
    if event == "Notification":
        return f"[{rec.get('notification_type')}] {rec.get('message') or ''}"
    if event in ("Stop", "SubagentStop"):
        who = f"({rec.get('agent_type') or 'subagent'}) " if event == "SubagentStop" else ""
        return who + _one_line(rec.get("last_assistant_message"), 200)
    if event == "StopFailure":
        return f"error: {rec.get('error')}  {_one_line(rec.get('last_assistant_message'), 120)}"
    if event == "SessionStart":
        return " ".join(str(x) for x in (rec.get("source"), rec.get("model"), rec.get("cwd")) if x)
    if event == "SessionEnd":
        return str(rec.get("reason") or "")
    if event == "SubagentStart":
        return str(rec.get("agent_type") or "")
    if event == "PreCompact":
        return str(rec.get("trigger") or "")
    if event == "ccm.watch":
        w = rec.get("watch") or {}
        settings = f"max {w.get('max_turns')} turns, prompt {w.get('prompt')!r}, source {w.get('source')}"
        return f"watch {'on' if w.get('enabled') else 'off'} by {rec.get('by')}: {settings}"
    if event == "ccm.watch_reset":
        return f"watch run reset by {rec.get('by')}"
    if event == "ccm.decision":
        d = rec.get("decision") or {}
        why = f" ({d.get('reason')})" if d.get("reason") else ""
        return f"{d.get('action')}{why}: {d.get('detail')}"
    return action


def format_event(rec: dict[str, Any], today: str) -> str:
    when = parse_ts(rec.get("ts"))
    if when is None:
        stamp = "?"
    else:
        local = dt.datetime.fromtimestamp(when)
        stamp = (
            local.strftime("%H:%M:%S")
            if local.strftime("%Y-%m-%d") == today
            else local.strftime("%m-%d %H:%M")
        )
    agent = f" [{rec['agent_type'] or 'agent'}]" if rec.get("agent_id") else ""
    line = (
        f"{stamp}  {str(rec.get('session_id'))[:8]}  #{rec.get('seq')!s:<4} {rec.get('event')!s:<18}{agent} "
    )
    return line + _one_line(describe(rec), 400)


class _Filter:
    def __init__(self, events: list[str], since: str | None) -> None:
        self.events = set(events)
        self.since = since

    def __call__(self, rec: dict[str, Any]) -> bool:
        if self.events and rec.get("event") not in self.events:
            return False
        return not (self.since and str(rec.get("ts") or "") < self.since)


def events_cmd(session: str | None, events: list[str], since: str | None, follow: bool, as_json: bool) -> int:
    root = paths.state_dir()
    keep = _Filter(events, parse_since(since, time.time()) if since else None)
    wanted = reader.resolve_session(root, session) if session else None
    today = dt.datetime.now().strftime("%Y-%m-%d")

    def emit(rec: dict[str, Any]) -> None:
        if as_json:
            sys.stdout.write(json.dumps(rec, ensure_ascii=False, separators=(",", ":")) + "\n")
        else:
            sys.stdout.write(format_event(rec, today) + "\n")

    tails: dict[str, reader.LogTail] = {}

    def read_all() -> list[dict[str, Any]]:
        new: list[dict[str, Any]] = []
        for sid, path in reader.event_files(root).items():
            if wanted is None or sid == wanted:
                tail = tails.setdefault(sid, reader.LogTail(path))
                new.extend(r for r in tail.read_new() if keep(r))
        # Across sessions, time order; within one, seq order (ts is handler start, seq is write order).
        new.sort(key=lambda r: (str(r.get("ts")), str(r.get("session_id")), r.get("seq") or 0))
        return new

    for rec in read_all():
        emit(rec)
    sys.stdout.flush()
    if not follow:
        return 0
    from ccm_hooks.statedir.fswatch import DirWatcher

    paths.ensure_layout(root)
    with DirWatcher([paths.events_dir(root)]) as watcher:
        while True:
            watcher.wait(FOLLOW_RESCAN_S)
            for rec in read_all():
                emit(rec)
            sys.stdout.flush()
