"""Watch mode end to end: the real claude CLI (2.1.197) against the scripted Messages API, in `-p` and in
tmux. What is counted is what the model server received: requests whose last user message is
``Stop hook feedback:\\n<prompt>`` are continuations."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.claude_harness import (
    TmuxServer,
    claude_env,
    run_claude_p,
    start_claude,
    submit,
    wait_for,
    wait_idle,
)
from tests.fakeapi import FakeAnthropic, last_user_is_tool_result, text, tool_use
from tests.hookrun import CCM_HOOKS, MINIMAL_PATH, install_hooks, read_log, read_status

pytestmark = pytest.mark.e2e
FEEDBACK = "Stop hook feedback:\n"


def _ccm(*args: str) -> str:
    out = subprocess.run([CCM_HOOKS, *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def _only_session(home: Path) -> str:
    [sid] = [p.stem for p in (home / "status").glob("*.json")]
    return sid


def _continuations(api: FakeAnthropic, prompt: str = "continue") -> int:
    return sum(1 for r in api.main_requests() if r.last_user_text == FEEDBACK + prompt)


def _decisions(home: Path, sid: str) -> list[dict[str, Any]]:
    return [r["decision"] for r in read_log(home, sid) if r["event"] == "ccm.decision"]


def _talker(reply: str = "Still working on it.") -> Callable[[Any], Any]:
    """A model that never uses a tool."""
    return lambda body: [text(reply)]


def _tool_user(body: Any) -> Any:
    """A model that runs one Bash command every turn, then says so."""
    if last_user_is_tool_result(body):
        return [text("Ran a step.")]
    return [tool_use("Bash", {"command": "echo step >> steps.txt", "description": "one step"})]


def _run_p(claude_bin: str, project: Path, api: FakeAnthropic, env: dict[str, str] | None = None) -> str:
    proc = run_claude_p(
        claude_bin, project, "work through the list", claude_env(api, {"PATH": MINIMAL_PATH, **(env or {})}),
        timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_p_max_turns_3_gives_exactly_3_continuations(
    claude_bin: str, fake_api: FakeAnthropic, project_dir: Path, ccm_home: Path
) -> None:
    install_hooks(project_dir)
    # Set as the project's default, before the session starts (no-progress raised: replies use no tool).
    _ccm("watch", "on", "--project", str(project_dir), "--max-turns", "3", "--no-progress", "10")
    fake_api.responder = _talker()
    out = _run_p(claude_bin, project_dir, fake_api)
    assert out.strip() == "Still working on it."  # Claude ended the run normally, no override

    assert _continuations(fake_api) == 3
    sid = _only_session(ccm_home)
    decisions = _decisions(ccm_home, sid)
    assert [(d["action"], d["turn"]) for d in decisions] == [
        ("continue", 1), ("continue", 2), ("continue", 3), ("stop", 3),
    ]  # fmt: skip
    assert decisions[-1]["reason"] == "max_turns"
    log = read_log(ccm_home, sid)
    assert log[1]["event"] == "ccm.watch" and log[1]["watch"]["source"] == "project"
    # Each decision directly follows the Stop it is about.
    for i, rec in enumerate(log):
        if rec["event"] == "ccm.decision":
            assert log[i - 1]["event"] == "Stop"
    st = read_status(ccm_home, sid)
    assert st["watch"]["stopped"] == "max_turns" and st["watch"]["continues"] == 3
    assert st["counters"]["turns"] == 4 and st["counters"]["prompts"] == 1
    assert not (ccm_home / "log" / "hooks.log").exists()
    assert "ok:" in _ccm("validate")  # the ccm.* records and status.watch are as spec/ says


def test_p_done_marker_stops_at_once(
    claude_bin: str, fake_api: FakeAnthropic, project_dir: Path, ccm_home: Path
) -> None:
    install_hooks(project_dir)
    replies = iter(["First part done.", "All finished. [DONE]"])
    fake_api.responder = lambda body: [text(next(replies, "unexpected extra turn"))]
    _run_p(claude_bin, project_dir, fake_api, {"CCM_WATCH": "1", "CCM_WATCH_MAX_TURNS": "10"})
    assert _continuations(fake_api) == 1
    sid = _only_session(ccm_home)
    assert [(d["action"], d["reason"]) for d in _decisions(ccm_home, sid)] == [
        ("continue", None), ("stop", "done"),
    ]  # fmt: skip
    assert read_status(ccm_home, sid)["watch"]["stopped"] == "done"


def test_p_replies_without_tools_stop_after_k_turns(
    claude_bin: str, fake_api: FakeAnthropic, project_dir: Path, ccm_home: Path
) -> None:
    install_hooks(project_dir)
    fake_api.responder = _talker()
    _run_p(claude_bin, project_dir, fake_api, {"CCM_WATCH": "on", "CCM_WATCH_MAX_TURNS": "10"})
    # The default K is 2: two auto-continued turns without a tool call, then stop.
    assert _continuations(fake_api) == 2
    sid = _only_session(ccm_home)
    last = _decisions(ccm_home, sid)[-1]
    assert (last["action"], last["reason"], last["no_progress"]) == ("stop", "no_progress", 2)


def test_p_max_turns_12_with_a_tool_every_turn(
    claude_bin: str, fake_api: FakeAnthropic, project_dir: Path, ccm_home: Path
) -> None:
    install_hooks(project_dir)
    fake_api.responder = _tool_user
    _run_p(claude_bin, project_dir, fake_api, {"CCM_WATCH": "1", "CCM_WATCH_MAX_TURNS": "12"})
    assert _continuations(fake_api) == 12
    assert (project_dir / "steps.txt").read_text().count("step") == 13  # the first turn and 12 more
    sid = _only_session(ccm_home)
    decisions = _decisions(ccm_home, sid)
    assert [d["action"] for d in decisions] == ["continue"] * 12 + ["stop"]
    assert decisions[-1]["reason"] == "max_turns"
    # A tool call restarts Claude Code's own block count: every continue was the first in a row.
    assert all(d["blocks"] == 1 for d in decisions[:-1])
    st = read_status(ccm_home, sid)
    assert st["counters"]["tool_uses"] == 13 and st["watch"]["continues"] == 12


@pytest.mark.parametrize("cap", [None, "3"])
def test_p_claude_codes_block_cap_is_never_hit(
    claude_bin: str, fake_api: FakeAnthropic, project_dir: Path, ccm_home: Path, cap: str | None
) -> None:
    install_hooks(project_dir)
    fake_api.responder = _talker()
    env = {"CCM_WATCH": "1", "CCM_WATCH_MAX_TURNS": "12", "CCM_WATCH_NO_PROGRESS": "20"}
    if cap:
        env["CLAUDE_CODE_STOP_HOOK_BLOCK_CAP"] = cap
    out = _run_p(claude_bin, project_dir, fake_api, env)
    in_band = int(cap or 8)
    # Every block we printed became a continuation: none was overridden (an override would also leave
    # -p's result empty).
    assert _continuations(fake_api) == in_band
    assert out.strip() == "Still working on it."
    sid = _only_session(ccm_home)
    decisions = _decisions(ccm_home, sid)
    assert [d["action"] for d in decisions] == ["continue"] * in_band + ["stop"]
    assert decisions[-1]["reason"] == "block_cap" and "no tmux pane" in decisions[-1]["detail"]
    assert [d["blocks"] for d in decisions[:-1]] == list(range(1, in_band + 1))
    stops = [r for r in read_log(ccm_home, sid) if r["event"] == "Stop"]
    assert len(stops) == in_band + 1


@pytest.mark.tmux
def test_interactive_max_turns_then_a_typed_prompt_starts_a_new_run(
    claude_bin: str, fake_api: FakeAnthropic, project_dir: Path, ccm_home: Path, tmux_server: TmuxServer
) -> None:
    install_hooks(project_dir)
    fake_api.responder = _talker()
    env = claude_env(
        fake_api,
        {"PATH": MINIMAL_PATH, "CCM_WATCH": "1", "CCM_WATCH_MAX_TURNS": "3", "CCM_WATCH_NO_PROGRESS": "10"},
    )
    pane = start_claude(tmux_server, claude_bin, project_dir, env)
    wait_idle(pane)
    submit(pane, "work through the list")
    sid = wait_for(lambda: list((ccm_home / "status").glob("*.json")) and _only_session(ccm_home))

    def stopped() -> dict[str, Any] | None:
        st = read_status(ccm_home, sid)
        return st if st["state"] == "idle" and st["watch"]["stopped"] else None

    st = wait_for(stopped, timeout=60, what="watch to stop")
    assert st["watch"]["stopped"] == "max_turns"
    assert st["reason"] == "watch stopped: 3 of 3 auto-continues used"
    assert st["tmux_pane"] == pane.pane_id
    assert _continuations(fake_api) == 3
    wait_idle(pane)

    # A person types a prompt: a fresh run with the whole budget again.
    submit(pane, "one more round")
    wait_for(lambda: _continuations(fake_api) == 6 and stopped(), timeout=60, what="a second run of 3")
    decisions = _decisions(ccm_home, sid)
    assert [d["action"] for d in decisions] == (["continue"] * 3 + ["stop"]) * 2
    assert [d["turn"] for d in decisions] == [1, 2, 3, 3] * 2
    assert not (ccm_home / "log" / "hooks.log").exists()
