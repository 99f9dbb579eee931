"""Watch mode through the real handler (a subprocess per event, as Claude Code runs it) and the real CLI:
the decision rules, where settings come from, concurrency and crashes (spec/watch.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ccm_hooks import watch
from tests.conftest import REPO
from tests.hookrun import payload, read_log, read_status, run_hook, spawn_hook

CLI = str(Path(sys.executable).parent / "ccm-hooks")
SID = "5e55e55e-0000-4000-8000-000000000001"
ON = {"CCM_WATCH": "1"}


def _event(name: str, sid: str = SID, **changes: Any) -> dict[str, Any]:
    base = {
        "session_id": sid,
        "transcript_path": "/t.jsonl",
        "cwd": "/w/app",
        "hook_event_name": name,
        "permission_mode": "bypassPermissions",
    }
    return {**base, **changes}


def _stop(env: dict[str, str], sid: str = SID, message: str = "Working.", active: bool = True) -> bytes:
    proc = run_hook(_event("Stop", sid, last_assistant_message=message, stop_hook_active=active), env=env)
    assert proc.returncode == 0 and proc.stderr == b""
    return proc.stdout


def _tool(env: dict[str, str], sid: str = SID, n: int = 1) -> None:
    for i in range(n):
        tool = {
            "tool_name": "Bash",
            "tool_input": {"command": "true"},
            "tool_use_id": f"t{time.time_ns()}{i}",
        }
        assert run_hook(_event("PreToolUse", sid, **tool), env=env).returncode == 0


def _decisions(home: Path, sid: str = SID) -> list[dict[str, Any]]:
    return [r["decision"] for r in read_log(home, sid) if r["event"] == "ccm.decision"]


def _ccm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=60)


BLOCK = b'{"decision":"block","reason":"continue"}'


# --- the decision ---------------------------------------------------------------------------------


def test_off_by_default_the_stop_handler_prints_nothing(ccm_home: Path) -> None:
    assert _stop({}, active=False) == b""
    assert [r["event"] for r in read_log(ccm_home, SID)] == ["Stop"]
    assert read_status(ccm_home, SID)["watch"] == watch.new_watch()


def test_the_block_answer_is_exact_json_with_the_prompt(ccm_home: Path) -> None:
    prompt = 'keep "going" — next item\nthen the one after'
    out = _stop({**ON, "CCM_WATCH_PROMPT": prompt}, active=False)
    assert json.loads(out) == {"decision": "block", "reason": prompt}
    assert out.count(b"\n") == 0 and out.startswith(b"{")


def test_max_turns_counts_every_continue_once(ccm_home: Path) -> None:
    env = {**ON, "CCM_WATCH_MAX_TURNS": "4"}
    outs = []
    for _ in range(7):
        outs.append(_stop(env, active=bool(outs)))
        _tool(env)  # progress every turn: only max_turns can stop it
    assert outs == [BLOCK] * 4 + [b""] * 3
    decisions = _decisions(ccm_home)
    assert [(d["action"], d["turn"]) for d in decisions] == [("continue", n) for n in (1, 2, 3, 4)] + [
        ("stop", 4)
    ]
    st = read_status(ccm_home, SID)
    assert st["watch"]["stopped"] == "max_turns" and st["watch"]["continues"] == 4
    assert st["state"] == "working"  # the tool call after the stop is still real activity


def test_continue_moves_the_state_to_processing_and_stop_explains_idle(ccm_home: Path) -> None:
    env = {**ON, "CCM_WATCH_MAX_TURNS": "1"}
    _stop(env, active=False)
    st = read_status(ccm_home, SID)
    assert (st["state"], st["reason"], st["current_action"]) == (
        "processing",
        "watch: continue 1/1",
        "thinking",
    )
    _tool(env)
    _stop(env)
    st = read_status(ccm_home, SID)
    assert (st["state"], st["reason"]) == ("idle", "watch stopped: 1 of 1 auto-continues used")


@pytest.mark.parametrize(
    ("marker", "message", "done"),
    [
        (None, "Finished everything. [DONE]", True),
        (None, "DONE but not bracketed", False),
        (r"ALL (DONE|FINISHED)\b", "we are ALL FINISHED now", True),
        (r"ALL (DONE|FINISHED)\b", "all finished (lowercase)", False),
        (r"\*\*done\*\*", "**done**", True),
    ],
)
def test_done_marker(ccm_home: Path, marker: str | None, message: str, done: bool) -> None:
    env = {**ON, **({"CCM_WATCH_DONE_MARKER": marker} if marker else {})}
    out = _stop(env, message=message, active=False)
    assert (out == b"") == done
    [decision] = _decisions(ccm_home)
    assert (decision["reason"] == "done") == done


def test_literal_markers_need_no_regex_engine() -> None:
    assert watch.literal_of(r"\[DONE\]") == "[DONE]"
    assert watch.literal_of("TASK COMPLETE") == "TASK COMPLETE"
    for regex in ("a.b", r"\d+", "x|y", "(a)", "end$", "trailing\\"):
        assert watch.literal_of(regex) is None


def test_no_progress_counts_only_auto_continued_turns_without_tools(ccm_home: Path) -> None:
    env = {**ON, "CCM_WATCH_NO_PROGRESS": "2", "CCM_WATCH_MAX_TURNS": "50"}
    assert _stop(env, active=False) == BLOCK  # a person's turn without a tool: not counted
    assert _stop(env) == BLOCK  # 1 without progress
    _tool(env)
    assert _stop(env) == BLOCK  # progress: back to 0
    assert _stop(env) == BLOCK  # 1
    assert _stop(env) == b""  # 2: stop
    assert [d["no_progress"] for d in _decisions(ccm_home)] == [0, 1, 0, 1, 2]
    assert _decisions(ccm_home)[-1]["reason"] == "no_progress"


def test_a_typed_prompt_starts_a_new_run(ccm_home: Path) -> None:
    env = {**ON, "CCM_WATCH_MAX_TURNS": "1"}
    assert _stop(env, active=False) == BLOCK
    assert _stop(env) == b""  # used up (and no progress)
    assert run_hook(_event("UserPromptSubmit", prompt="now the docs"), env=env).returncode == 0
    w = read_status(ccm_home, SID)["watch"]
    assert (w["continues"], w["stopped"], w["no_progress"]) == (0, None, 0)
    assert _stop(env, active=False) == BLOCK


def test_claude_codes_cap_without_agentd_or_tmux_is_a_clean_stop(ccm_home: Path) -> None:
    env = {**ON, "CLAUDE_CODE_STOP_HOOK_BLOCK_CAP": "2", "CCM_WATCH_NO_PROGRESS": "99"}
    assert [_stop(env, active=i > 0) for i in range(3)] == [BLOCK, BLOCK, b""]
    last = _decisions(ccm_home)[-1]
    assert (last["action"], last["reason"]) == ("stop", "block_cap")
    assert "no tmux pane" in last["detail"]

    tmux = {**env, "TMUX": "/tmp/tmux-1/default,1,0", "TMUX_PANE": "%7"}
    sid2 = "5e55e55e-0000-4000-8000-000000000002"
    assert [_stop(tmux, sid2, active=i > 0) for i in range(3)] == [BLOCK, BLOCK, b""]
    assert "ccm-agentd is not running" in _decisions(ccm_home, sid2)[-1]["detail"]


def test_past_the_cap_a_live_agentd_gets_a_handoff(ccm_home: Path) -> None:
    health = Path(os.environ["CCM_HOME"]) / "agentd" / "health.json"
    health.parent.mkdir(parents=True)
    health.write_text("{}")
    env = {**ON, "CLAUDE_CODE_STOP_HOOK_BLOCK_CAP": "2", "CCM_WATCH_NO_PROGRESS": "99",
           "CCM_WATCH_MAX_TURNS": "9", "TMUX": "/tmp/tmux-1/default,1,0", "TMUX_PANE": "%7"}  # fmt: skip
    assert [_stop(env, active=i > 0) for i in range(3)] == [BLOCK, BLOCK, b""]
    handoff = _decisions(ccm_home)[-1]
    assert (handoff["action"], handoff["reason"], handoff["turn"], handoff["blocks"]) == (
        "handoff", "block_cap", 3, 0,
    )  # fmt: skip
    st = read_status(ccm_home, SID)
    assert st["watch"]["handoff"]["prompt"] == "continue" and st["watch"]["handoff"]["turn"] == 3
    assert st["state"] == "idle" and st["reason"].startswith("watch: continue 3/9 goes through tmux")
    assert _stop(env) == b""  # nothing more is decided while the handoff waits

    # ccm-agentd types the prompt: the run goes on (count kept), Claude's block count restarts.
    assert run_hook(_event("UserPromptSubmit", prompt="continue"), env=env).returncode == 0
    w = read_status(ccm_home, SID)["watch"]
    assert (w["handoff"], w["continues"], w["blocks"]) == (None, 3, 0)
    assert _stop(env, active=False) == BLOCK
    assert _decisions(ccm_home)[-1]["turn"] == 4

    # A stale heartbeat is no daemon.
    old = time.time() - 3600
    os.utime(health, (old, old))
    assert _stop(env) == BLOCK  # 5, the 2nd block in a row
    assert _stop(env) == b""
    assert _decisions(ccm_home)[-1]["reason"] == "block_cap"


def test_an_error_or_a_dialog_stops_watch(ccm_home: Path) -> None:
    failure = _event("StopFailure", error="rate_limit", last_assistant_message="API Error: 429")
    assert run_hook(failure, env=ON).stdout == b""
    assert _decisions(ccm_home)[-1]["reason"] == "error"

    sid = "5e55e55e-0000-4000-8000-000000000003"
    assert run_hook(_event("UserPromptSubmit", sid, prompt="go"), env=ON).returncode == 0
    _tool(ON, sid)
    asking = payload("PermissionRequest__Bash_interactive", session_id=sid)
    assert run_hook(asking, env=ON).stdout == b""
    [decision] = _decisions(ccm_home, sid)
    assert (decision["action"], decision["reason"]) == ("stop", "needs_human")
    st = read_status(ccm_home, sid)
    assert st["state"] == "waiting" and st["reason"].startswith("permission:")  # its own reason is kept
    assert _stop(ON, sid) == b""  # the person answered; the turn ends; no auto-continue


# --- where settings come from ---------------------------------------------------------------------


def _write_config(home: Path, text: str) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(text)


def test_settings_layers_global_project_env(ccm_home: Path) -> None:
    _write_config(
        ccm_home,
        '[watch]\nenabled = true\nmax_turns = 7\nprompt = "go on"\n'
        '[projects."/w".watch]\nmax_turns = 5\n'
        '[projects."/w/app".watch]\nno_progress_turns = 4\n'
        '[projects."/w/application".watch]\nmax_turns = 1\n',
    )
    cwd_only = _event("SessionStart", "s-project", source="startup")
    assert run_hook(cwd_only).returncode == 0
    w = read_status(ccm_home, "s-project")["watch"]
    # /w/app is the longest directory containing /w/app; /w/application is not a parent.
    assert (w["enabled"], w["max_turns"], w["prompt"], w["no_progress_turns"], w["source"]) == (
        True, 7, "go on", 4, "project",
    )  # fmt: skip
    assert (
        run_hook(
            _event("SessionStart", "s-env", source="startup"), env={"CCM_WATCH_MAX_TURNS": "2"}
        ).returncode
        == 0
    )
    w = read_status(ccm_home, "s-env")["watch"]
    assert (w["max_turns"], w["no_progress_turns"], w["source"]) == (2, 4, "env")
    off = run_hook(_event("SessionStart", "s-off", source="startup"), env={"CCM_WATCH": "off"})
    assert off.returncode == 0 and read_status(ccm_home, "s-off")["watch"]["enabled"] is False
    elsewhere = _event("SessionStart", "s-global", source="startup", cwd="/srv/other")
    assert run_hook(elsewhere).returncode == 0
    assert read_status(ccm_home, "s-global")["watch"]["source"] == "global"
    assert not (ccm_home / "log" / "hooks.log").exists()


def test_defaults_apply_at_a_sessions_first_event_only(ccm_home: Path) -> None:
    assert run_hook(_event("SessionStart", source="startup")).returncode == 0
    _write_config(ccm_home, "[watch]\nenabled = true\n")
    assert _stop({}, active=False) == b""  # a running session keeps what it started with
    assert run_hook(_event("SessionStart", "s-new", source="startup")).returncode == 0
    assert _stop({}, "s-new", active=False) == BLOCK


def test_a_hand_edited_config_is_recompiled_once(ccm_home: Path) -> None:
    _write_config(ccm_home, "[watch]\nenabled = true\nmax_turns = 3\n")
    assert run_hook(_event("SessionStart", "s-1", source="startup")).returncode == 0
    snapshot = ccm_home / "config.snapshot.json"
    first = snapshot.stat().st_mtime_ns
    assert run_hook(_event("SessionStart", "s-2", source="startup")).returncode == 0
    assert snapshot.stat().st_mtime_ns == first  # unchanged TOML: the snapshot is reused
    _write_config(ccm_home, "[watch]\nenabled = true\nmax_turns = 9\n")
    assert run_hook(_event("SessionStart", "s-3", source="startup")).returncode == 0
    assert read_status(ccm_home, "s-3")["watch"]["max_turns"] == 9
    assert oct(snapshot.stat().st_mode & 0o777) == "0o600"


def test_bad_settings_are_logged_and_never_turn_watch_on(ccm_home: Path) -> None:
    _write_config(ccm_home, "[watch\nenabled = true\n")
    proc = run_hook(_event("SessionStart", source="startup"), env={"CCM_WATCH_MAX_TURNS": "lots"})
    assert (proc.returncode, proc.stdout) == (0, b"")
    assert _stop({}, active=False) == b""
    log = (ccm_home / "log" / "hooks.log").read_text()
    assert "not valid TOML" in log and "CCM_WATCH_MAX_TURNS" in log
    st = read_status(ccm_home, SID)
    assert st["watch"]["enabled"] is False and st["counters"]["turns"] == 1  # events still recorded


# --- concurrency and crashes ----------------------------------------------------------------------


def test_concurrent_stop_handlers_never_count_a_continue_twice(ccm_home: Path) -> None:
    env = {**ON, "CCM_WATCH_MAX_TURNS": "5", "CCM_WATCH_NO_PROGRESS": "1000"}
    assert run_hook(_event("SessionStart", source="startup"), env=env).returncode == 0
    stop = _event("Stop", last_assistant_message="x", stop_hook_active=False)
    procs = [spawn_hook(stop, env=env) for _ in range(40)]
    outs = [p.communicate(timeout=60)[0] for p in procs]
    assert sorted(outs, reverse=True) == [BLOCK] * 5 + [b""] * 35
    decisions = _decisions(ccm_home)
    assert [d["turn"] for d in decisions if d["action"] == "continue"] == [1, 2, 3, 4, 5]
    assert [d["action"] for d in decisions].count("stop") == 1
    log = read_log(ccm_home, SID)
    assert [r["seq"] for r in log] == list(range(1, len(log) + 1))
    assert read_status(ccm_home, SID)["watch"]["continues"] == 5


CRASH = """
import os, sys
sys.stdin = open({payload!r})
from ccm_hooks import fileio, handler, watch
where = {where!r}
if where == "before-decision":
    watch.decide = lambda *a, **k: os._exit(9)
else:
    real = fileio.atomic_write
    def dying(path, data, mode=0o600):
        if "/status/" in path:
            os._exit(9)  # killed after the decision's append, before the status replace
        real(path, data, mode)
    fileio.atomic_write = dying
handler.main()
"""


@pytest.mark.parametrize("where", ["before-decision", "before-status"])
def test_a_handler_killed_mid_decision_costs_at_most_one_continue(
    ccm_home: Path, tmp_path: Path, where: str
) -> None:
    env = {**os.environ, **ON, "CCM_WATCH_MAX_TURNS": "3", "CCM_WATCH_NO_PROGRESS": "1000"}
    assert _stop(env, active=False) == BLOCK  # continue 1
    stop_file = tmp_path / "stop.json"
    stop_file.write_text(json.dumps(_event("Stop", last_assistant_message="x", stop_hook_active=True)))
    code = CRASH.format(payload=str(stop_file), where=where)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=60, cwd=REPO)
    assert (proc.returncode, proc.stdout) == (9, b"")  # died; Claude got no answer
    outs = [_stop(env) for _ in range(4)]
    decisions = _decisions(ccm_home)
    continues = [d["turn"] for d in decisions if d["action"] == "continue"]
    assert continues == [1, 2, 3]  # every number once, in order, never past max_turns
    # The killed handler's continue (if it got into the log) is counted though Claude never saw it.
    assert outs.count(BLOCK) == (2 if where == "before-decision" else 1)
    st = read_status(ccm_home, SID)
    assert st["watch"]["continues"] == 3 and st["watch"]["stopped"] == "max_turns"
    log = read_log(ccm_home, SID)
    assert [r["seq"] for r in log] == list(range(1, len(log) + 1))


# --- the CLI ------------------------------------------------------------------------------------------


def test_watch_on_off_reset_for_one_session(ccm_home: Path) -> None:
    assert run_hook(_event("SessionStart", source="startup")).returncode == 0
    out = _ccm("watch", "on", SID[:8], "--max-turns", "2", "--prompt", "next", "--done-marker", "FIN")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"session {SID[:8]}: watch on: up to 2 continues saying 'next'")
    rec = read_log(ccm_home, SID)[-1]
    assert (rec["event"], rec["by"], rec["watch"]["source"]) == ("ccm.watch", "ccm-hooks watch", "session")
    env = {}
    assert json.loads(_stop(env, active=False))["reason"] == "next"
    assert _stop(env, message="FIN") == b""
    assert _ccm("watch", "reset", SID).returncode == 0
    assert read_log(ccm_home, SID)[-1]["event"] == "ccm.watch_reset"
    assert json.loads(_stop(env, active=False))["reason"] == "next"  # settings kept, budget whole
    assert _ccm("watch", "off", SID).returncode == 0
    assert _stop(env, active=False) == b""
    status = _ccm("watch", "status", "--json")
    assert json.loads(status.stdout)["sessions"][SID]["enabled"] is False
    text = _ccm("watch", "status", SID).stdout
    assert SID[:8] in text and "off" in text


def test_watch_on_for_a_project_and_globally_writes_config_toml(ccm_home: Path, tmp_path: Path) -> None:
    import tomllib

    project = tmp_path / "proj"
    project.mkdir()
    out = _ccm("watch", "on", "--project", str(project), "--max-turns", "4")
    assert out.returncode == 0, out.stderr
    assert "sessions started in" in out.stdout
    config = tomllib.loads((ccm_home / "config.toml").read_text())
    assert config["projects"][str(project.resolve())]["watch"] == {"max_turns": 4, "enabled": True}
    assert oct((ccm_home / "config.toml").stat().st_mode & 0o777) == "0o600"
    # Hand edits survive (tests/test_config.py has the whole story).
    original = (ccm_home / "config.toml").read_text() + "# my note\n"
    (ccm_home / "config.toml").write_text(original)
    assert _ccm("watch", "on", "--global", "--no-progress", "3").returncode == 0
    assert (ccm_home / "config.toml").read_text().startswith(original)
    config = tomllib.loads((ccm_home / "config.toml").read_text())
    assert config["watch"] == {"no_progress_turns": 3, "enabled": True}

    started = _event("SessionStart", "s-proj", source="startup", cwd=str(project / "sub"))
    assert run_hook(started).returncode == 0
    w = read_status(ccm_home, "s-proj")["watch"]
    assert (w["enabled"], w["max_turns"], w["no_progress_turns"], w["source"]) == (True, 4, 3, "project")
    assert _ccm("watch", "off", "--project", str(project)).returncode == 0
    assert run_hook(_event("SessionStart", "s-proj2", source="startup", cwd=str(project))).returncode == 0
    assert read_status(ccm_home, "s-proj2")["watch"]["enabled"] is False
    status = json.loads(_ccm("watch", "status", "--json").stdout)
    assert status["global"]["enabled"] is True and status["global"]["no_progress_turns"] == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["watch", "on"], "say which: a SESSION_ID, --project DIR, or --global"),
        (["watch", "on", "--global", "--project", "."], "say which"),
        (["watch", "on", "--global", "--max-turns", "0"], "--max-turns: max_turns must be a whole number"),
        (["watch", "on", "--global", "--done-marker", "(["], "is outside the regex subset"),
        (["watch", "on", "--global", "--prompt", "  "], "--prompt: prompt must be non-empty"),
        (["watch", "on", "nosuchsession"], "no session matches 'nosuchsession'"),
        (["watch", "on", "--project", "/no/such/dir"], "--project /no/such/dir: no such directory"),
        (["watch", "reset", "nosuchsession"], "no session matches"),
    ],
)
def test_watch_errors_are_one_line(ccm_home: Path, args: list[str], message: str) -> None:
    out = _ccm(*args)
    assert out.returncode == 1, out.stdout + out.stderr
    assert message in out.stderr and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert not (ccm_home / "config.toml").exists()


def test_a_broken_config_toml_is_refused_and_left_alone(ccm_home: Path) -> None:
    _write_config(ccm_home, "[watch\n")
    out = _ccm("watch", "on", "--global")
    assert out.returncode == 1 and "is not valid TOML" in out.stderr
    assert (ccm_home / "config.toml").read_text() == "[watch\n"
    status = _ccm("watch", "status")
    assert status.returncode == 0 and "config error (ignored): " in status.stdout
    assert "is not valid TOML" in status.stdout
