"""End to end: `ccm-hooks install` into a scratch project, then the real claude CLI (2.1.197) against the
scripted Messages API, in `-p` and interactively in tmux. claude runs with PATH=/usr/bin:/bin, without our
venv, as tmux, launchd and cron would start it: the registered commands must find ccm on their own."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.agentdrun import wait_state
from tests.claude_harness import (
    ASKING_PERMISSION_MODE,
    TmuxServer,
    WaitTimeout,
    claude_env,
    has_permission_dialog,
    run_claude_p,
    send_keys,
    start_claude,
    submit,
    wait_for,
    wait_for_screen,
    wait_idle,
)
from tests.fakeapi import FakeAnthropic, Script, text, tool_use
from tests.hookrun import CCM_HOOKS, MINIMAL_PATH, install_hooks, read_log, read_status

pytestmark = pytest.mark.e2e


def _sessions(home: Path) -> list[str]:
    return sorted(p.stem for p in (home / "status").glob("*.json"))


def _only_session(home: Path) -> str:
    [sid] = _sessions(home)
    return sid


def _run_p(
    claude_bin: str, project: Path, api: FakeAnthropic, prompt: str
) -> subprocess.CompletedProcess[str]:
    env = claude_env(api, {"PATH": MINIMAL_PATH})
    proc = run_claude_p(claude_bin, project, prompt, env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_p_run_with_one_bash_call(
    claude_bin: str, fake_api: FakeAnthropic, project_dir: Path, ccm_home: Path
) -> None:
    install_hooks(project_dir)
    fake_api.responder = Script(
        [[tool_use("Bash", {"command": "echo hi > out.txt", "description": "write"})], [text("Wrote it.")]]
    )
    _run_p(claude_bin, project_dir, fake_api, "please write the file")
    assert (project_dir / "out.txt").read_text() == "hi\n"

    sid = _only_session(ccm_home)
    log = read_log(ccm_home, sid)
    assert [r["event"] for r in log] == [
        "SessionStart", "UserPromptSubmit", "PreToolUse", "PostToolUse", "Stop", "SessionEnd",
    ]  # fmt: skip
    assert [r["seq"] for r in log] == list(range(1, 7))
    assert all(r["session_id"] == sid and r["v"] == 1 for r in log)
    assert all(r["project"] == str(project_dir) for r in log)
    assert log[1]["prompt"] == "please write the file"
    pre, post = log[2], log[3]
    assert pre["tool_name"] == post["tool_name"] == "Bash"
    assert pre["tool_use_id"] == post["tool_use_id"]
    assert pre["tool_input"]["command"] == "echo hi > out.txt"
    assert (post["ok"], post["exit_code"]) == (True, 0) and isinstance(post["duration_ms"], int)
    assert log[4]["last_assistant_message"] == "Wrote it."
    assert log[5]["reason"]

    st = read_status(ccm_home, sid)
    assert (st["state"], st["last_tool"], st["last_event"]) == ("ended", "Bash", "SessionEnd")
    assert (
        st["counters"]["prompts"] == 1 and st["counters"]["tool_uses"] == 1 and st["counters"]["turns"] == 1
    )
    assert st["last_assistant_message"] == "Wrote it."
    assert st["transcript_path"] and st["project"] == str(project_dir)
    assert st["tmux_pane"] is None
    assert not (ccm_home / "log" / "hooks.log").exists()


def test_p_run_with_two_parallel_bash_calls(
    claude_bin: str, fake_api: FakeAnthropic, project_dir: Path, ccm_home: Path
) -> None:
    install_hooks(project_dir)
    fake_api.responder = Script([
        [tool_use("Bash", {"command": "echo a > a.txt", "description": "a"}),
         tool_use("Bash", {"command": "echo b > b.txt", "description": "b"})],
        [text("Both done.")],
    ])  # fmt: skip
    _run_p(claude_bin, project_dir, fake_api, "write two files")
    sid = _only_session(ccm_home)
    log = read_log(ccm_home, sid)
    pres = [r for r in log if r["event"] == "PreToolUse"]
    posts = [r for r in log if r["event"] == "PostToolUse"]
    assert {r["tool_input"]["command"] for r in pres} == {"echo a > a.txt", "echo b > b.txt"}
    assert len({r["tool_use_id"] for r in pres}) == 2
    assert {r["tool_use_id"] for r in posts} == {r["tool_use_id"] for r in pres}
    assert [r["seq"] for r in log] == list(range(1, len(log) + 1))
    assert log[-2]["event"] == "Stop" and log[-1]["event"] == "SessionEnd"
    st = read_status(ccm_home, sid)
    assert st["counters"]["tool_uses"] == 2 and st["tools_running"] == {}


def test_p_run_with_a_failing_bash_call(
    claude_bin: str, fake_api: FakeAnthropic, project_dir: Path, ccm_home: Path
) -> None:
    install_hooks(project_dir)
    fake_api.responder = Script([
        [tool_use("Bash", {"command": "echo oops >&2; exit 3", "description": "fail"})],
        [text("It failed.")],
    ])  # fmt: skip
    _run_p(claude_bin, project_dir, fake_api, "try the thing")
    sid = _only_session(ccm_home)
    log = read_log(ccm_home, sid)
    assert [r["event"] for r in log] == [
        "SessionStart", "UserPromptSubmit", "PreToolUse", "PostToolUseFailure", "Stop", "SessionEnd",
    ]  # fmt: skip
    failure = log[3]
    assert (failure["ok"], failure["exit_code"]) == (False, 3)
    assert failure["error"].startswith("Exit code 3") and "oops" in failure["error"]
    st = read_status(ccm_home, sid)
    assert st["counters"]["failures"] == 1 and st["state"] == "ended"


def test_validate_accepts_what_real_sessions_wrote(
    claude_bin: str, fake_api: FakeAnthropic, project_dir: Path, ccm_home: Path
) -> None:
    install_hooks(project_dir)
    fake_api.responder = Script([[tool_use("Bash", {"command": "true", "description": "t"})], [text("ok")]])
    _run_p(claude_bin, project_dir, fake_api, "go")
    out = subprocess.run([CCM_HOOKS, "validate"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.tmux
def test_interactive_session_in_tmux_idle_then_waiting(
    claude_bin: str, claude_version: str, fake_api: FakeAnthropic, project_dir: Path, ccm_home: Path,
    tmux_server: TmuxServer,
) -> None:  # fmt: skip
    install_hooks(project_dir)
    fake_api.responder = Script([
        [text("Hello from the model.")],
        [tool_use("Bash", {"command": "echo approved > perm.txt", "description": "needs permission"})],
        [text("Done after approval.")],
    ])  # fmt: skip
    env = claude_env(fake_api, {"PATH": MINIMAL_PATH})
    # The mode that asks (2.1.328 starts in auto mode, which asks nobody).
    args = ("--permission-mode", ASKING_PERMISSION_MODE[claude_version])
    pane = start_claude(tmux_server, claude_bin, project_dir, env, args=args)
    wait_idle(pane)

    # A plain turn: idle afterwards, with where it runs in tmux.
    submit(pane, "say hello")
    sid = wait_for(lambda: _sessions(ccm_home) and _only_session(ccm_home), what="a status file")
    st = wait_state(ccm_home, sid, "idle")
    assert st["tmux_pane"] == pane.pane_id
    assert st["tmux_socket"] == str(tmux_server.socket_path)
    assert st["last_assistant_message"] == "Hello from the model."
    assert isinstance(st["claude_pid"], int)

    # A tool call that needs permission: the dialog opens and the status says a human must act.
    submit(pane, "write the file")
    wait_for_screen(pane, has_permission_dialog, what="the permission dialog")
    st = wait_state(ccm_home, sid, "waiting")
    assert st["reason"] == "permission: Bash: echo approved > perm.txt"
    assert st["current_action"].startswith("waiting for permission")
    assert not (project_dir / "perm.txt").exists()

    # Approve: the tool runs, the turn ends, the session is idle again. 2.1.328 ignores keys for a moment
    # after a dialog opens (no accidental approval): press Enter until the dialog is gone.
    for _ in range(10):
        send_keys(pane, "Enter")
        try:
            wait_for_screen(
                pane, lambda s: not has_permission_dialog(s), timeout=1.0, what="the dialog answered"
            )
            break
        except WaitTimeout:
            continue
    wait_for(lambda: read_status(ccm_home, sid)["last_event"] == "Stop", what="the turn to end")
    st = read_status(ccm_home, sid)
    assert st["state"] == "idle" and st["counters"]["tool_uses"] == 1 and st["counters"]["turns"] == 2
    assert (project_dir / "perm.txt").read_text() == "approved\n"
    events = [r["event"] for r in read_log(ccm_home, sid)]
    assert events[:2] == ["SessionStart", "UserPromptSubmit"]
    assert "PermissionRequest" in events
    assert events.index("PermissionRequest") < events.index("PostToolUse")
    assert not (ccm_home / "log" / "hooks.log").exists()
