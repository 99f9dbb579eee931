"""The status state machine, driven directly with records (it is a pure fold)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from ccm_hooks import state

SID = "s1"


class Session:
    """Feeds records to state.apply with increasing seq and ts."""

    def __init__(self) -> None:
        self.status: dict[str, Any] | None = None
        self.seq = 0
        self.clock = itertools.count(1)

    def ts(self, n: int | None = None) -> str:
        return f"2026-11-21T10:00:{next(self.clock) if n is None else n:02d}.000000Z"

    def feed(self, event: str, ts: str | None = None, **fields: Any) -> dict[str, Any]:
        self.seq += 1
        rec = {"v": 1, "seq": self.seq, "ts": ts or self.ts(), "session_id": SID, "event": event, **fields}
        self.status = state.apply(self.status, rec)
        return self.status

    def tool(self, event: str, tid: str, command: str = "ls", **fields: Any) -> dict[str, Any]:
        return self.feed(event, tool_name="Bash", tool_use_id=tid, tool_input={"command": command}, **fields)


def test_a_plain_turn() -> None:
    s = Session()
    assert s.feed("SessionStart", source="startup")["state"] == "starting"
    st = s.feed("UserPromptSubmit", prompt="do it")
    assert (st["state"], st["current_action"], st["last_prompt"]) == ("processing", "thinking", "do it")
    st = s.tool("PreToolUse", "t1", "make test")
    assert (st["state"], st["current_action"], st["last_tool"]) == ("working", "Bash: make test", "Bash")
    assert list(st["tools_running"]) == ["t1"]
    st = s.tool("PostToolUse", "t1", "make test")
    assert (st["state"], st["current_action"], st["tools_running"]) == ("working", "thinking", {})
    st = s.feed("Stop", last_assistant_message="Done.")
    assert (st["state"], st["last_assistant_message"], st["current_action"]) == ("idle", "Done.", None)
    assert st["counters"] == {
        "prompts": 1,
        "tool_uses": 1,
        "failures": 0,
        "turns": 1,
        "errors": 0,
        "subagents": 0,
    }


def test_permission_request_waits_until_that_tool_settles() -> None:
    s = Session()
    s.feed("UserPromptSubmit", prompt="x")
    s.tool("PreToolUse", "a", "echo a")
    s.tool("PreToolUse", "b", "rm -rf build")
    st = s.feed("PermissionRequest", tool_name="Bash", tool_input={"command": "rm -rf build"})
    assert (st["state"], st["waiting_tool_use_id"]) == ("waiting", "b")
    assert st["reason"] == "permission: Bash: rm -rf build"
    # The sibling finishing, and a late PreToolUse, do not answer the dialog.
    assert s.tool("PostToolUse", "a", "echo a")["state"] == "waiting"
    assert s.tool("PreToolUse", "c", "echo c")["state"] == "waiting"
    # The permission prompt notification confirms, it does not replace the specific reason.
    st = s.feed("Notification", notification_type="permission_prompt", message="Claude needs your permission")
    assert (st["state"], st["reason"]) == ("waiting", "permission: Bash: rm -rf build")
    st = s.tool("PostToolUse", "b", "rm -rf build")
    assert (st["state"], st["waiting_tool_use_id"]) == ("working", None)


def test_parallel_events_in_any_order_end_in_waiting() -> None:
    """Pre A, Pre B, PermissionRequest B, Post A fire together: every lock order gives `waiting`."""
    records = [
        ("PreToolUse", {"tool_name": "Bash", "tool_use_id": "a", "tool_input": {"command": "echo a"}}),
        ("PreToolUse", {"tool_name": "Bash", "tool_use_id": "b", "tool_input": {"command": "echo b"}}),
        ("PermissionRequest", {"tool_name": "Bash", "tool_input": {"command": "echo b"}}),
        ("PostToolUse", {"tool_name": "Bash", "tool_use_id": "a", "tool_input": {"command": "echo a"}}),
    ]
    for order in itertools.permutations(range(4)):
        # Causality: a Pre precedes its own Post, and B's dialog follows B's Pre.
        if order.index(0) > order.index(3) or order.index(1) > order.index(2):
            continue
        s = Session()
        s.feed("UserPromptSubmit", prompt="x", ts="2026-11-21T10:00:00.000000Z")
        for i in order:
            event, fields = records[i]
            s.feed(event, ts=f"2026-11-21T10:00:01.00000{i}Z", **fields)
        assert s.status is not None
        assert s.status["state"] == "waiting", order
        assert s.status["counters"]["tool_uses"] == 2


def test_stale_tool_event_does_not_overwrite_newer_state() -> None:
    s = Session()
    s.feed("UserPromptSubmit", prompt="x", ts=s.ts(1))
    s.tool("PreToolUse", "a", ts=s.ts(2))
    s.feed("Stop", last_assistant_message="bye", ts=s.ts(5))
    # An async/slow handler that started before the Stop gets the lock after it.
    st = s.tool("PostToolUse", "a", ts=s.ts(3))
    assert st["state"] == "idle" and st["last_event"] == "Stop"
    assert st["seq"] == 4  # still recorded


def test_idle_prompt_notification_keeps_idle() -> None:
    s = Session()
    s.feed("UserPromptSubmit", prompt="x")
    s.feed("Stop", last_assistant_message="ok")
    st = s.feed("Notification", notification_type="idle_prompt", message="Claude is waiting for your input")
    assert st["state"] == "idle" and st["last_event"] == "Notification"


def test_permission_notification_after_the_dialog_was_answered_changes_nothing() -> None:
    s = Session()
    s.feed("UserPromptSubmit", prompt="x")
    s.tool("PreToolUse", "a")
    s.feed("PermissionRequest", tool_name="Bash", tool_input={"command": "ls"})
    s.tool("PostToolUse", "a")  # approved and done
    st = s.feed("Notification", notification_type="permission_prompt", message="Claude needs your permission")
    assert st["state"] == "working"


def test_stop_failure_is_error_with_the_error() -> None:
    s = Session()
    s.feed("UserPromptSubmit", prompt="x")
    st = s.feed("StopFailure", error="rate_limit", last_assistant_message="API Error: 429")
    assert (st["state"], st["reason"]) == ("error", "rate_limit: API Error: 429")
    assert st["error"] == st["reason"] and st["counters"]["errors"] == 1
    st = s.feed("UserPromptSubmit", prompt="again")
    assert (st["state"], st["error"]) == ("processing", None)


def test_stop_failure_with_an_unknown_error_says_what_the_message_says() -> None:
    s = Session()
    s.feed("UserPromptSubmit", prompt="x")
    st = s.feed("StopFailure", error="unknown", last_assistant_message="API Error: 400 bad request")
    assert st["reason"] == "API Error: 400 bad request"


def test_ended_is_sticky_until_a_new_start() -> None:
    s = Session()
    s.feed("UserPromptSubmit", prompt="x")
    st = s.feed("SessionEnd", reason="prompt_input_exit")
    assert (st["state"], st["reason"]) == ("ended", "prompt_input_exit")
    assert s.feed("Notification", notification_type="permission_prompt", message="m")["state"] == "ended"
    assert s.tool("PostToolUse", "zz")["state"] == "ended"
    assert s.feed("SessionStart", source="resume")["state"] == "starting"


def test_subagent_work_keeps_the_session_working() -> None:
    s = Session()
    s.feed("UserPromptSubmit", prompt="x")
    s.feed("PreToolUse", tool_name="Agent", tool_use_id="ag", tool_input={"description": "look around"})
    st = s.feed("SubagentStart", agent_id="ag1", agent_type="general-purpose")
    assert (st["state"], st["current_action"]) == ("working", "subagent: general-purpose")
    st = s.tool("PreToolUse", "inner", agent_id="ag1", agent_type="general-purpose")
    st = s.feed("SubagentStop", agent_id="ag1", agent_type="general-purpose", last_assistant_message="hi")
    assert st["state"] == "working" and st["counters"]["subagents"] == 1
    st = s.feed("PostToolUse", tool_name="Agent", tool_use_id="ag", tool_input={"description": "look around"})
    assert st["state"] == "working"
    assert s.feed("Stop", last_assistant_message="ok")["state"] == "idle"


def test_compact_at_the_prompt_leaves_the_session_idle() -> None:
    """/compact typed while idle runs a compaction subagent; no Stop follows."""
    s = Session()
    s.feed("UserPromptSubmit", prompt="x")
    s.feed("Stop", last_assistant_message="ok")
    assert s.feed("PreCompact", trigger="manual")["current_action"] == "compacting"
    s.feed("SubagentStop", agent_id="c1", agent_type="", last_assistant_message="summary")
    st = s.feed("SessionStart", source="compact")
    assert (st["state"], st["current_action"]) == ("idle", None)


def test_auto_compact_mid_turn() -> None:
    s = Session()
    s.feed("UserPromptSubmit", prompt="x")
    s.tool("PreToolUse", "t1")
    s.tool("PostToolUse", "t1")
    st = s.feed("PreCompact", trigger="auto")
    assert (st["state"], st["current_action"]) == ("working", "compacting")
    st = s.feed("SessionStart", source="compact")
    assert (st["state"], st["current_action"]) == ("working", "thinking")


@pytest.mark.parametrize("stuck", ["processing", "working", "waiting"])
def test_idle_prompt_recovers_a_missed_stop(stuck: str) -> None:
    """Esc or a dialog answered "No" fire no Stop; 60 s later idle_prompt says Claude waits for input."""
    s = Session()
    s.feed("UserPromptSubmit", prompt="x")
    if stuck in ("working", "waiting"):
        s.tool("PreToolUse", "t1")
    if stuck == "waiting":
        s.feed("PermissionRequest", tool_name="Bash", tool_input={"command": "ls"})
    assert s.status is not None and s.status["state"] == stuck
    st = s.feed("Notification", notification_type="idle_prompt", message="Claude is waiting for your input")
    assert (st["state"], st["tools_running"], st["reason"]) == ("idle", {}, None)


def test_stop_block_continuation_goes_back_to_working() -> None:
    """A (foreign or watch-mode) Stop hook that blocks makes Claude go on without a new prompt."""
    s = Session()
    s.feed("UserPromptSubmit", prompt="x")
    s.feed("Stop", last_assistant_message="first")
    st = s.tool("PreToolUse", "t9")
    assert st["state"] == "working"


@pytest.mark.parametrize("n", [40, 100])
def test_running_tool_map_is_bounded(n: int) -> None:
    s = Session()
    s.feed("UserPromptSubmit", prompt="x")
    for i in range(n):
        s.tool("PreToolUse", f"t{i}")
    assert s.status is not None
    assert len(s.status["tools_running"]) == state.MAX_RUNNING_TOOLS


@pytest.mark.parametrize("order", ["StopFailure first (2.1.197)", "SessionEnd first (2.1.328)"])
def test_a_headless_run_whose_api_call_failed_ends_with_its_error(order: str) -> None:
    s = Session()
    s.feed("SessionStart", source="startup")
    s.feed("UserPromptSubmit", prompt="go")
    failure = {"error": "invalid_request", "last_assistant_message": "API Error: 400 prompt is too long"}
    if order.startswith("StopFailure"):
        s.feed("StopFailure", **failure)
        st = s.feed("SessionEnd", reason="other")
    else:
        s.feed("SessionEnd", reason="other")
        st = s.feed("StopFailure", **failure)
    assert (st["state"], st["reason"]) == ("ended", "other")
    assert st["error"] == "invalid_request: API Error: 400 prompt is too long"
    assert st["last_assistant_message"] == "API Error: 400 prompt is too long"


def _watched(s: Session) -> None:
    s.feed("SessionStart", source="startup")
    s.feed("ccm.watch", watch={"enabled": True, "max_turns": 3, "prompt": "keep going"})
    s.feed("UserPromptSubmit", prompt="a person's prompt")


@pytest.mark.parametrize(
    "submitted", ["keep going", "keep going ", "  keep going", "something else entirely"]
)
def test_what_ccm_typed_never_restarts_the_watch_budget_whatever_claude_submitted(submitted: str) -> None:
    """A handoff typed by ccm-agentd continues the run even when Claude Code rewrote the text (it trims
    it): the typing record says whose prompt it is, not the text (once, a trailing space made every
    handoff look like a person's prompt, which restarted the budget: 117 continues with max_turns 12)."""
    s = Session()
    _watched(s)
    s.feed("ccm.decision", decision={"action": "continue", "turn": 3, "blocks": 8})
    s.feed("ccm.decision", decision={"action": "handoff", "turn": 3, "prompt": "keep going", "blocks": 0})
    s.feed(
        "ccm.delivery", delivery={"item": "handoff-3-x", "kind": "handoff", "attempt": 1, "outcome": "typing"}
    )
    assert s.status is not None and s.status["typing"]["kind"] == "handoff"
    st = s.feed("UserPromptSubmit", prompt=submitted)
    assert st["watch"]["continues"] == 3 and st["watch"]["handoff"] is None and st["typing"] is None


def test_a_queued_prompt_or_a_typed_one_is_a_persons_and_starts_a_fresh_run() -> None:
    s = Session()
    _watched(s)
    s.feed("ccm.decision", decision={"action": "stop", "reason": "max_turns", "turn": 3})
    s.feed("ccm.delivery", delivery={"item": "q1", "kind": "queued", "attempt": 1, "outcome": "typing"})
    st = s.feed("UserPromptSubmit", prompt="now write the tests")
    assert st["watch"]["continues"] == 0 and st["watch"]["stopped"] is None
    s.feed("ccm.decision", decision={"action": "continue", "turn": 1})
    st = s.feed("UserPromptSubmit", prompt="typed by hand")
    assert st["watch"]["continues"] == 0


def test_a_typing_settled_without_a_prompt_is_forgotten() -> None:
    s = Session()
    _watched(s)
    s.feed("ccm.delivery", delivery={"item": "h", "kind": "handoff", "attempt": 1, "outcome": "typing"})
    st = s.feed("ccm.delivery", delivery={"item": "h", "kind": "handoff", "attempt": 1, "outcome": "retry"})
    assert st["typing"] is None


@pytest.mark.parametrize(
    "prompt",
    ["<task-notification>\n<task-id>a1</task-id>\n<status>completed</status>\n</task-notification>",
     "Your claude.ai usage limit has reset. Continue the task you were working on when the limit was "
     "reached; do not repeat work that is already complete.",
     "Your claude.ai usage is available again before the usage-limit reset. Continue the task you were "
     "working on when the limit was reached; do not repeat work that is already complete."],
)  # fmt: skip
def test_prompts_claude_code_submits_itself_neither_restart_nor_settle_anything(prompt: str) -> None:
    """2.1.328 submits a background subagent's result and its own continue after a usage limit as
    UserPromptSubmit: nobody typed them, so the watch run goes on and a pending typing stays pending."""
    s = Session()
    _watched(s)
    s.feed("ccm.decision", decision={"action": "continue", "turn": 2, "blocks": 2})
    s.feed("ccm.delivery", delivery={"item": "h", "kind": "handoff", "attempt": 1, "outcome": "typing"})
    st = s.feed("UserPromptSubmit", prompt=prompt)
    assert st["watch"]["continues"] == 2 and st["typing"] is not None and st["state"] == "processing"
