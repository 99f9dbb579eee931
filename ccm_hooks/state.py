"""The session state machine: fold one event record into a status object (spec/state-machine.md).

Standard library only. ``apply`` depends on the record and a little process context (tmux location, pid)
and nothing else, so a status can be rebuilt by replaying the event log.

Ordering. Claude Code starts an event's hooks only after the previous event's hooks have finished, except
for events that fire together: the Pre/PostToolUse of parallel tool calls, a PermissionRequest next to a
sibling tool's PostToolUse, and Notification. Handlers take the session lock in whatever order they get
it, so the rules below give the right state in any order of concurrent events:
- a tool event never leaves ``waiting`` unless it is the result of the tool that is waiting;
- ``Notification permission_prompt`` only confirms a wait that some still-running tool can explain;
- a concurrent-capable event whose ``ts`` (handler start) is older than the newest event already applied
  updates counters and the running-tool set, never the state.
Turn boundaries (UserPromptSubmit, Stop, StopFailure, SessionStart, SessionEnd) always apply: nothing
runs concurrently with them. So does PermissionRequest: Claude waits for its hooks before it shows the
dialog, so its own tool's result always comes after it, even when a sibling's result got the lock first.
"""

from __future__ import annotations

from ccm_hooks.record import FORMAT_VERSION, tool_summary
from ccm_hooks.texts import CLAUDE_LIMIT_CONTINUES, CLAUDE_OWN_PREFIXES
from ccm_hooks.watch import SETTING_KEYS, new_watch

TYPE_CHECKING = False  # not `from typing import ...`: importing typing costs ~3 ms per hook call
if TYPE_CHECKING:
    from typing import Any

    Status = dict[str, Any]

STATES = ("starting", "processing", "working", "waiting", "idle", "error", "ended")
# In format v1 too, with their meaning (spec/state-machine.md), but set only by ccm-agentd, never by hooks.
RESERVED_STATES = ("stalled", "rate_limited")
COUNTERS = ("prompts", "tool_uses", "failures", "turns", "errors", "subagents")
STATUS_TEXT_CAP = 1000
MAX_RUNNING_TOOLS = 32  # bound the running-tool map if Post events are ever lost

NEVER_STALE = frozenset(
    {"SessionStart", "UserPromptSubmit", "Stop", "StopFailure", "SessionEnd", "PermissionRequest"}
)
TOOL_RESULT_EVENTS = frozenset({"PostToolUse", "PostToolUseFailure"})


def _short(text: object) -> str | None:
    if not isinstance(text, str):
        return None
    return text if len(text) <= STATUS_TEXT_CAP else text[:STATUS_TEXT_CAP] + "…"


def new_status(session_id: str, ts: str) -> Status:
    return {
        "v": FORMAT_VERSION,
        "session_id": session_id,
        "state": "starting",
        "state_since": ts,
        "reason": None,
        "cwd": None,
        "project": None,
        "seq": 0,
        "last_event": None,
        "last_tool": None,
        "current_action": None,
        "started_at": ts,
        "updated_at": ts,
        "counters": dict.fromkeys(COUNTERS, 0),
        "last_prompt": None,
        "last_assistant_message": None,
        "error": None,
        "transcript_path": None,
        "task_id": None,
        "model": None,
        "permission_mode": None,
        "tmux_pane": None,
        "tmux_socket": None,
        "claude_pid": None,
        "claude_version": None,
        "entrypoint": None,
        "background": None,
        "tools_running": {},
        "waiting_tool_use_id": None,
        "watch": new_watch(),
        "resume_at": None,
        "typing": None,
    }


def apply(status: Status | None, rec: dict[str, Any], ctx: dict[str, Any] | None = None) -> Status:
    """Return the status after ``rec``. ``status`` is not modified. ``ctx``: process facts (see store)."""
    st: Status = new_status(rec["session_id"], rec["ts"]) if status is None else dict(status)
    st["counters"] = dict(st.get("counters") or {})
    running: dict[str, Any] = dict(st.get("tools_running") or {})
    st["tools_running"] = running
    st["watch"] = dict(st.get("watch") or new_watch())
    event: str = rec["event"]
    ts: str = rec["ts"]
    if event.startswith("ccm."):
        # ccm's own records (watch settings and decisions): they move the watch state, and the session
        # state only where a decision says what Claude does next. Claude's activity times stay Claude's.
        st["seq"] = rec["seq"]
        _apply_ccm(st, rec)
        return st
    stale = event not in NEVER_STALE and ts < st.get("updated_at", "")

    st["seq"] = rec["seq"]
    if ts > st.get("updated_at", ""):
        st["updated_at"] = ts  # the newest ts applied, so it never moves backwards
    for key in ("cwd", "project", "task_id", "permission_mode", "transcript_path", "model"):
        if rec.get(key) is not None:
            st[key] = rec[key]
    for key, value in (ctx or {}).items():
        if value is not None:
            st[key] = value

    _count(st, event, rec)
    action = tool_summary(rec.get("tool_name"), rec.get("tool_input"))
    tool_id = rec.get("tool_use_id")
    if event == "PreToolUse" and isinstance(tool_id, str):
        if not (stale and st["state"] in ("idle", "ended", "error")):
            running[tool_id] = {"tool": rec.get("tool_name"), "since": ts, "action": action}
            while len(running) > MAX_RUNNING_TOOLS:
                del running[next(iter(running))]
    elif event in TOOL_RESULT_EVENTS and isinstance(tool_id, str):
        running.pop(tool_id, None)

    if st["state"] == "ended" and event == "StopFailure" and not stale:
        # `claude -p` on 2.1.328 fires StopFailure after SessionEnd: the session stays ended, the error is
        # kept (the daemon notifies it), as it is when StopFailure comes first (2.1.197).
        _record_error(st, rec)
        return st
    if stale or (st["state"] == "ended" and event != "SessionStart"):
        return st
    st["last_event"] = event
    _transition(st, event, rec, action)
    return st


def _count(st: Status, event: str, rec: dict[str, Any]) -> None:
    counters = st["counters"]
    key = {
        "UserPromptSubmit": "prompts",
        "PreToolUse": "tool_uses",
        "PostToolUseFailure": "failures",
        "Stop": "turns",
        "StopFailure": "errors",
        "SubagentStart": "subagents",
    }.get(event)
    if key:
        counters[key] = int(counters.get(key, 0)) + 1


def _set_state(st: Status, state: str, ts: str, reason: str | None = None) -> None:
    if st["state"] != state:
        st["state_since"] = ts
    st["state"] = state
    st["reason"] = reason
    if state != "rate_limited":
        st["resume_at"] = None


def _end_turn(st: Status) -> None:
    st["tools_running"] = {}
    st["waiting_tool_use_id"] = None
    st["current_action"] = None


def _latest_action(st: Status) -> str:
    running = st["tools_running"]
    if running:
        last = running[next(reversed(running))]
        return str(last.get("action") or last.get("tool") or "running a tool")
    return "thinking"


def _transition(st: Status, event: str, rec: dict[str, Any], action: str | None) -> None:
    ts = rec["ts"]
    if event == "SessionStart":
        if rec.get("source") == "compact":
            # /compact keeps the session and its state; only the compaction itself is over.
            if st["current_action"] == "compacting":
                st["current_action"] = "thinking" if st["state"] in ("processing", "working") else None
        else:  # startup, resume, clear (a new id): a fresh start
            _end_turn(st)
            _reset_watch_run(st)
            _set_state(st, "starting", ts)
    elif event == "UserPromptSubmit":
        _watch_prompt(st, rec)
        _end_turn(st)
        st["last_prompt"] = _short(rec.get("prompt"))
        st["current_action"] = "thinking"
        st["error"] = None  # a new turn: the last error is history (the log keeps it)
        _set_state(st, "processing", ts)
    elif event == "PermissionRequest":
        st["waiting_tool_use_id"] = _match_running(st, rec.get("tool_name"), action)
        st["current_action"] = f"waiting for permission: {action or 'a tool'}"
        _set_state(st, "waiting", ts, f"permission: {action or 'a tool'}")
    elif event == "Notification":
        _notification(st, rec)
    elif event == "Stop":
        _end_turn(st)
        st["last_assistant_message"] = _short(rec.get("last_assistant_message"))
        _set_state(st, "idle", ts)
    elif event == "StopFailure":
        _end_turn(st)
        _set_state(st, "error", ts, _record_error(st, rec))
    elif event == "SessionEnd":
        _end_turn(st)
        if rec.get("error"):  # the turn's API error, from the transcript when its StopFailure was lost
            _record_error(st, rec)
        _set_state(st, "ended", ts, rec.get("reason") or "unknown")
    elif event in ("PreToolUse", "PostToolUse", "PostToolUseFailure"):
        _tool_activity(st, event, rec, action)
    elif event in ("SubagentStart", "SubagentStop"):
        # Subagents run inside a turn the main agent's own events already describe (the Agent tool's
        # Pre/PostToolUse), and /compact runs one while the session is idle: they never move the state.
        if event == "SubagentStart" and st["state"] == "working":
            st["current_action"] = f"subagent: {rec.get('agent_type') or 'agent'}"
    elif event == "PreCompact":
        if rec.get("trigger") == "auto" and st["state"] in ("processing", "working"):
            st["current_action"] = "compacting"  # mid-turn, the context filled up
        elif rec.get("trigger") != "auto" and st["state"] in ("starting", "idle", "error"):
            st["current_action"] = "compacting"  # /compact typed at the prompt; SessionStart(compact) ends it
    # Any other event (PostCompact, ConfigChange, ...) is logged but moves nothing.


def _record_error(st: Status, rec: dict[str, Any]) -> str | None:
    """A StopFailure's error text into ``error`` and its message into ``last_assistant_message``."""
    error, message = rec.get("error"), rec.get("last_assistant_message")
    # The payload's `error` is often just "unknown" while the message says "API Error: 400 ...".
    if error and message and error != "unknown":
        text = f"{error}: {message}"
    else:
        text = message or error or "unknown error"
    st["error"] = _short(text)
    st["last_assistant_message"] = _short(message)
    return st["error"]  # type: ignore[no-any-return]


def _tool_activity(st: Status, event: str, rec: dict[str, Any], action: str | None) -> None:
    if event == "PreToolUse":
        st["last_tool"] = rec.get("tool_name")
    if st["state"] == "waiting":
        waited = st.get("waiting_tool_use_id")
        settled = event in TOOL_RESULT_EVENTS and (waited is None or waited == rec.get("tool_use_id"))
        if not settled:
            return  # a sibling tool moving on does not answer the dialog
        st["waiting_tool_use_id"] = None
    st["current_action"] = action if event == "PreToolUse" else _latest_action(st)
    _set_state(st, "working", rec["ts"])


def _notification(st: Status, rec: dict[str, Any]) -> None:
    kind = rec.get("notification_type")
    message = _short(str(rec.get("message") or "needs your permission"))
    if kind == "idle_prompt":
        # "Claude is waiting for your input", 60 s after a turn ended. Idle stays idle; a session still
        # marked busy missed its Stop (Esc interrupt, a dialog answered "No": no hook fires) and is idle.
        if st["state"] in ("starting", "processing", "working", "waiting"):
            _end_turn(st)
            _set_state(st, "idle", rec["ts"])
        return
    if kind != "permission_prompt" or st["state"] == "waiting":
        return  # other kinds move nothing; a wait keeps its more specific PermissionRequest reason
    if st["tools_running"] and st["state"] in ("processing", "working"):
        # Only a tool that is still running can be behind a dialog; otherwise the dialog was already answered.
        st["current_action"] = f"waiting: {message}"
        _set_state(st, "waiting", rec["ts"], message)


def _match_running(st: Status, tool_name: object, action: str | None) -> str | None:
    """The running tool a PermissionRequest is about (the payload has no tool_use_id): newest match."""
    for tool_id in reversed(list(st["tools_running"])):
        info = st["tools_running"][tool_id]
        if info.get("tool") == tool_name and info.get("action") == action:
            return str(tool_id)
    return None


def _reset_watch_run(st: Status) -> None:
    """A new watched run: a fresh budget of auto-continues, counted from the tool calls made so far."""
    st["watch"].update(continues=0, no_progress=0, blocks=0, stopped=None, detail=None, handoff=None)
    st["watch"]["tool_mark"] = int(st["counters"].get("tool_uses") or 0)


def _watch_prompt(st: Status, rec: dict[str, Any]) -> None:
    """A prompt starts a new run when a person gave it: typed by hand, or queued with ``ccm-hooks send``.

    What ccm types on its own behalf (watch mode's handoff past Claude Code's Stop-hook cap, the resume
    after a usage limit) continues the run. Which prompt is which is told by the delivery records ccm
    writes before it types (``typing``), never by comparing texts: Claude Code rewrites what it submits
    (it trims it), and a continuation mistaken for a person's prompt would restart the budget for ever.
    """
    w = st["watch"]
    prompt = rec.get("prompt")
    typing = st.get("typing")
    resumed = isinstance(typing, dict) and typing.get("kind") == "resume"
    limit_resumed = resumed or (isinstance(prompt, str) and prompt.startswith(CLAUDE_LIMIT_CONTINUES))
    if limit_resumed and w.get("stopped") == "error":
        # The run a usage limit interrupted goes on (its StopFailure stopped it as an error): resumed by
        # ccm or by Claude Code itself, its next Stop decides as any other.
        w.update(stopped=None, detail=None)
    if isinstance(prompt, str) and prompt.startswith(CLAUDE_OWN_PREFIXES):
        return  # Claude Code's own (a background subagent's result, its continue at a limit): nobody's
    handoff = w.get("handoff")
    ours = isinstance(typing, dict) and typing.get("kind") in ("handoff", "resume")
    if ours or (isinstance(handoff, dict) and same_prompt(rec, handoff.get("prompt"))):
        # Typed into the pane: Claude's count of Stop-hook blocks restarts; our count of continues goes on.
        w.update(handoff=None, blocks=0, tool_mark=int(st["counters"].get("tool_uses") or 0))
    else:
        _reset_watch_run(st)
    st["typing"] = None  # this prompt is what the typing caused


def same_prompt(rec: dict[str, Any], wanted: object) -> bool:
    """A UserPromptSubmit record is ``wanted``, typed by ccm (also when the record's prompt was clipped):
    compared as ccm types them, surrounding whitespace removed (``texts.normalize``)."""
    prompt = rec.get("prompt")
    if not isinstance(wanted, str) or not isinstance(prompt, str):
        return False
    prompt, wanted = prompt.strip(), wanted.strip()
    if prompt == wanted:
        return True
    clipped = (rec.get("truncated") or {}).get("prompt")  # a prompt longer than CCM_FIELD_CAP
    return clipped == len(wanted) and prompt[: min(len(prompt), 64)] == wanted[: min(len(prompt), 64)]


def _apply_ccm(st: Status, rec: dict[str, Any]) -> None:
    w = st["watch"]
    event = rec["event"]
    if event == "ccm.watch":
        settings = rec.get("watch") or {}
        for key in (*SETTING_KEYS, "source"):
            if key in settings:
                w[key] = settings[key]
        _reset_watch_run(st)  # turning watch on (again) starts a fresh run
    elif event == "ccm.watch_reset":
        _reset_watch_run(st)
    elif event == "ccm.state":
        _apply_daemon_state(st, rec)
    elif event == "ccm.delivery":
        d = rec.get("delivery") or {}
        if d.get("outcome") == "typing":
            st["typing"] = {"item": d.get("item"), "kind": d.get("kind"), "seq": rec["seq"]}
        elif isinstance(st.get("typing"), dict) and st["typing"].get("item") == d.get("item"):
            st["typing"] = None  # settled (delivered, retry, failed, ...) without a prompt seen
    elif event == "ccm.decision":
        d = rec.get("decision") or {}
        w.update(
            continues=int(d.get("turn") or 0),
            no_progress=int(d.get("no_progress") or 0),
            blocks=int(d.get("blocks") or 0),
            tool_mark=int(d.get("tool_mark") or 0),
            detail=d.get("detail"),
        )
        action = d.get("action")
        idle = st["state"] == "idle"  # only a Stop's decision explains the idle state; keep other reasons
        if action == "stop":
            w["stopped"] = d.get("reason") or "stopped"
            if idle:
                st["reason"] = f"watch stopped: {d.get('detail')}"
        elif action == "handoff":
            w["handoff"] = {"turn": d.get("turn"), "prompt": d.get("prompt"), "ts": rec["ts"]}
            if idle:
                st["reason"] = f"watch: {d.get('detail')}"
        elif action == "continue" and idle:
            st["current_action"] = "thinking"  # Claude takes another turn at once; no UserPromptSubmit fires
            _set_state(st, "processing", rec["ts"], f"watch: {d.get('detail')}")


def _apply_daemon_state(st: Status, rec: dict[str, Any]) -> None:
    """ccm-agentd saw what hooks cannot: a session stalled, interrupted (idle), lost, or rate limited."""
    change = rec.get("set_state") or {}
    state = change.get("state")
    if state not in STATES + RESERVED_STATES or st["state"] == "ended":
        return
    if state in ("idle", "ended", "rate_limited"):
        _end_turn(st)
    _set_state(st, state, rec["ts"], change.get("reason"))
    if state == "rate_limited":
        st["resume_at"] = change.get("resume_at")
