"""ccm-agentd's liveness findings and notifications, end to end: the real daemon process, the real claude
2.1.197 in a real tmux server on a private socket, on the scripted model server.

What hooks cannot tell (spec/agentd.md, Liveness): a turn that runs with no hook event for ``stall_after_s``
is ``stalled`` while its pane still shows it working, and ``idle`` (interrupted) once the pane is back at
its prompt. Esc fires no hook at all in 2.1.197 (not even a PostToolUseFailure), so only the pane can tell
the two apart. And a session ``waiting`` longer than ``waiting_notify_after_s`` notifies ``needs_human``.

Notifications go to a configured command that appends its ``CCM_*`` facts to a file, with the time it ran.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from ccm_hooks import state
from ccm_hooks.statedir.timefmt import parse_ts
from tests.agentdrun import (
    Agentd,
    ccm,
    configure,
    notifications,
    notified_kinds,
    session_of,
    start_in_tmux,
    wait_state,
)
from tests.claude_harness import (
    Pane,
    TmuxServer,
    capture,
    has_permission_dialog,
    is_idle,
    is_working,
    send_keys,
    submit,
    wait_for,
    wait_for_screen,
)
from tests.fakeapi import FakeAnthropic, Script, text, tool_use
from tests.hookrun import install_hooks, read_log, read_status

pytestmark = [pytest.mark.e2e, pytest.mark.tmux]

HOOK_EVENTS_ON_ESC: list[str] = []  # what Claude Code 2.1.197 fires when Esc interrupts a running tool


def _start_daemon(daemon: Agentd, **settings: float) -> None:
    daemon.start()
    loaded = daemon.log()
    for key, value in settings.items():
        assert f"'{key}': {float(value)}" in loaded, loaded  # the config was read, not the defaults


def _daemon_states(home: Path, sid: str) -> list[dict[str, Any]]:
    return [r["set_state"] for r in read_log(home, sid) if r["event"] == "ccm.state"]


def _ts(value: object) -> float:
    when = parse_ts(value)
    assert when is not None, value
    return when


def _notified_keys(home: Path) -> list[str]:
    """What the daemon remembers having notified, as session:kind:since."""
    path = home / "agentd" / "notified.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [f"{e['s']}:{e['k']}:{e['t']}" for e in map(json.loads, lines)]


def _long_tool_turn(
    claude_bin: str, fake_api: FakeAnthropic, project_dir: Path, ccm_home: Path, tmux_server: TmuxServer,
    agentd: Agentd, *, sleep: int, reply: str, stall_after_s: int,
) -> tuple[Pane, str, Path]:  # fmt: skip
    """claude in tmux, the daemon running with ``stall_after_s`` and a notify command, and a turn whose
    Bash tool sleeps ``sleep`` s before the model says ``reply``. Returns the pane, the session id and the
    notify command's file."""
    install_hooks(project_dir)
    notified = ccm_home.parent / "notified.tsv"
    configure(ccm_home, notified, stall_after_s=stall_after_s)
    fake_api.responder = Script([
        # Not `sleep N`: 2.1.328 refuses a Bash call that starts with a long sleep (spec/claude-versions.md).
        [tool_use("Bash", {"command": f"python3 -c 'import time; time.sleep({sleep})'",
                           "description": "a long step"})], [text(reply)],
    ])  # fmt: skip
    pane = start_in_tmux(tmux_server, claude_bin, project_dir, fake_api)
    _start_daemon(agentd, stall_after_s=stall_after_s)
    submit(pane, "run the long step")
    return pane, session_of(ccm_home), notified


def test_a_long_tool_is_stalled_once_notified_once_and_the_session_recovers(
    claude_bin: str, fake_api: FakeAnthropic, project_dir: Path, ccm_home: Path,
    tmux_server: TmuxServer, agentd: Agentd,
) -> None:  # fmt: skip
    pane, sid, notified = _long_tool_turn(
        claude_bin, fake_api, project_dir, ccm_home, tmux_server, agentd,
        sleep=7, reply="Slept well.", stall_after_s=2,
    )  # fmt: skip

    st = wait_state(ccm_home, sid, "stalled", timeout=15)
    assert st["reason"].startswith("no hook event for ")
    assert st["reason"].endswith("; the pane shows it still working")
    assert is_working(capture(pane))  # the tool really still runs
    log = read_log(ccm_home, sid)
    assert [r["event"] for r in log][-3:] == ["UserPromptSubmit", "PreToolUse", "ccm.state"]
    assert _ts(log[-1]["ts"]) - _ts(log[-2]["ts"]) >= 2.0

    note = wait_for(lambda: notifications(notified), timeout=5, what="the stalled notification")[0]
    assert note == {
        "kind": "stalled", "session_id": sid, "state": "stalled", "since": st["state_since"],
        "at": note["at"], "reason": st["reason"],
    }  # fmt: skip
    assert f"{sid}:stalled:{st['state_since']}" in _notified_keys(ccm_home)

    # The tool ends on its own: the next hook events take over from the daemon's record.
    done = wait_state(ccm_home, sid, "idle", timeout=15)
    assert done["last_assistant_message"] == "Slept well."
    assert done["reason"] is None
    log = read_log(ccm_home, sid)
    stall_at = next(i for i, r in enumerate(log) if r["event"] == "ccm.state")
    folded: dict[str, Any] | None = None
    after: list[tuple[str, str]] = []
    for i, rec in enumerate(log):
        folded = state.apply(folded, rec)
        if i > stall_at:
            after.append((rec["event"], folded["state"]))
    assert after[0] == ("PostToolUse", "working")
    assert after[-1] == ("Stop", "idle")
    assert _daemon_states(ccm_home, sid) == [{"state": "stalled", "reason": st["reason"]}]

    wait_for(lambda: "finished" in notified_kinds(notified), timeout=5, what="the finished notification")
    time.sleep(1.5)  # three more daemon passes (liveness_s = 0.5): nothing may be notified again
    assert notified_kinds(notified) == ["stalled", "finished"]
    assert _daemon_states(ccm_home, sid) == [{"state": "stalled", "reason": st["reason"]}]


def test_esc_during_a_long_tool_is_interrupted_not_stalled(
    claude_bin: str, fake_api: FakeAnthropic, project_dir: Path, ccm_home: Path,
    tmux_server: TmuxServer, agentd: Agentd,
) -> None:  # fmt: skip
    pane, sid, notified = _long_tool_turn(
        claude_bin, fake_api, project_dir, ccm_home, tmux_server, agentd,
        sleep=30, reply="Never said.", stall_after_s=3,
    )  # fmt: skip
    st = wait_state(ccm_home, sid, "working", timeout=15)
    # The command shows in both renderers (2.1.328's fullscreen one draws no "Running…").
    wait_for_screen(pane, lambda s: is_working(s) and "time.sleep" in s, what="the tool running")
    send_keys(pane, "Escape")
    pressed = time.time()
    wait_for_screen(pane, lambda s: is_idle(s) and "Interrupted" in s, timeout=10, what="the prompt back")
    # Valid only if Esc came before the stall limit: else the daemon rightly said stalled first.
    assert pressed - _ts(st["updated_at"]) < 2.5, "Esc came too late for this test"

    idle = wait_state(ccm_home, sid, "idle", timeout=15)
    assert idle["reason"].startswith("interrupted")
    assert idle["tools_running"] == {} and idle["current_action"] is None
    assert _daemon_states(ccm_home, sid) == [{"state": "idle", "reason": idle["reason"]}]
    log = read_log(ccm_home, sid)
    pre = next(i for i, r in enumerate(log) if r["event"] == "PreToolUse")
    # Esc fires no hook (no Stop, no PostToolUseFailure): after the PreToolUse only the daemon's record.
    assert [r["event"] for r in log[pre + 1 :]] == [*HOOK_EVENTS_ON_ESC, "ccm.state"]
    # Claude Code's registry says idle at once: the daemon knows within seconds, not at the stall limit.
    assert _ts(log[-1]["ts"]) - pressed < 3.0
    assert len(fake_api.main_requests()) == 1  # the tool's result never reached the model

    wait_for(lambda: notified_kinds(notified), timeout=5, what="a notification")
    time.sleep(1.5)  # more daemon passes: still no stalled, no repeat
    assert notified_kinds(notified) == ["finished"]
    assert notifications(notified)[0]["reason"] == idle["reason"]
    assert _daemon_states(ccm_home, sid) == [{"state": "idle", "reason": idle["reason"]}]


def test_a_permission_dialog_left_open_notifies_needs_human_once_after_the_threshold(
    claude_bin: str, fake_api: FakeAnthropic, project_dir: Path, ccm_home: Path,
    tmux_server: TmuxServer, agentd: Agentd,
) -> None:  # fmt: skip
    install_hooks(project_dir)
    notified = ccm_home.parent / "notified.tsv"
    configure(ccm_home, notified, waiting_notify_after_s=1)
    fake_api.responder = Script([[tool_use("Bash", {"command": "echo x > perm.txt", "description": "ask"})]])
    pane = start_in_tmux(
        tmux_server, claude_bin, project_dir, fake_api, args=("--permission-mode", "default")
    )
    _start_daemon(agentd, waiting_notify_after_s=1)
    submit(pane, "write the file")
    wait_for_screen(pane, has_permission_dialog, what="the permission dialog")
    sid = session_of(ccm_home)
    st = wait_state(ccm_home, sid, "waiting", timeout=15)

    note = wait_for(lambda: notifications(notified), timeout=10, what="the needs_human notification")[0]
    assert note == {
        "kind": "needs_human", "session_id": sid, "state": "waiting", "since": st["state_since"],
        "at": note["at"], "reason": st["reason"],
    }  # fmt: skip
    assert st["reason"].startswith("permission: ")
    since = _ts(st["state_since"])
    assert float(note["at"]) >= since + 1.0  # not before waiting_notify_after_s
    assert float(note["at"]) < since + 5.0  # and soon after it (liveness_s = 0.5)

    time.sleep(2.0)  # four more daemon passes, the dialog still open: no second notification
    assert notified_kinds(notified) == ["needs_human"]
    assert _notified_keys(ccm_home) == [f"{sid}:needs_human:{st['state_since']}"]
    assert has_permission_dialog(capture(pane))
    assert read_status(ccm_home, sid)["state"] == "waiting"
    assert not (project_dir / "perm.txt").exists()


def test_esc_on_a_stalled_session_makes_it_idle_and_deliverable_again(
    claude_bin: str, fake_api: FakeAnthropic, project_dir: Path, ccm_home: Path,
    tmux_server: TmuxServer, agentd: Agentd,
) -> None:  # fmt: skip
    pane, sid, notified = _long_tool_turn(
        claude_bin, fake_api, project_dir, ccm_home, tmux_server, agentd,
        sleep=30, reply="Unstuck.", stall_after_s=1,
    )  # fmt: skip
    wait_state(ccm_home, sid, "stalled", timeout=15)
    assert ccm("send", sid, "try something else").returncode == 0  # waits: a stalled pane is not idle

    # What a person does about a stall; Esc fires no hook, only the pane shows the turn is over.
    send_keys(pane, "Escape")
    idle = wait_state(ccm_home, sid, "idle", timeout=15)
    assert idle["reason"].startswith("interrupted")
    assert [d["state"] for d in _daemon_states(ccm_home, sid)] == ["stalled", "idle"]
    # Claude sends the prompt with its own note of the interrupt, in one user message.
    typed = wait_for(
        lambda: [r for r in fake_api.main_requests() if r.last_user_text.endswith("try something else")],
        timeout=30, what="the queued prompt at the model", diagnostics=agentd.log,
    )  # fmt: skip
    assert len(typed) == 1 and typed[0].last_user_text.startswith("[Request interrupted by user")
    wait_for(lambda: read_status(ccm_home, sid)["last_assistant_message"] == "Unstuck.", what="its turn")
    wait_for(
        lambda: notified_kinds(notified) == ["stalled", "finished", "finished"], what="one notification each"
    )
