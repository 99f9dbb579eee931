"""The handler turns every captured payload into one well-formed record and a status."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from tests.hookrun import FIXTURES, payload, read_log, read_status, run_hook

ALL_PAYLOADS = sorted(p.stem for p in (FIXTURES / "payloads").glob("*.json"))


@pytest.mark.parametrize("name", ALL_PAYLOADS)
def test_every_captured_payload_gives_one_record(name: str, ccm_home: Path) -> None:
    data = payload(name)
    proc = run_hook(data, env={"CLAUDE_PROJECT_DIR": "/home/dev/work/proj"})
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"", b"")
    [rec] = read_log(ccm_home, data["session_id"])
    assert rec["v"] == 1 and rec["seq"] == 1
    assert rec["event"] == data["hook_event_name"]
    assert rec["session_id"] == data["session_id"]
    assert rec["cwd"] == data["cwd"]
    assert rec["project"] == "/home/dev/work/proj"
    assert rec["ts"].endswith("Z") and len(rec["ts"]) == len("2026-11-21T05:42:11.123456Z")
    assert "tool_response" not in rec  # never copied wholesale
    status = read_status(ccm_home, data["session_id"])
    assert status["seq"] == 1 and status["session_id"] == data["session_id"]
    assert not (ccm_home / "log" / "hooks.log").exists()


def test_bash_call_records_command_and_outcome(ccm_home: Path) -> None:
    run_hook(payload("PreToolUse__Bash"))
    run_hook(payload("PostToolUse__Bash"))
    pre, post = read_log(ccm_home, payload("PreToolUse__Bash")["session_id"])
    assert pre["tool_name"] == "Bash" and pre["tool_use_id"] == "toolu_3"
    assert pre["tool_input"] == {"command": "echo hello > out.txt", "description": "write file"}
    assert (post["ok"], post["exit_code"], post["duration_ms"]) == (True, 0, 17)


def test_failed_bash_records_exit_code_and_error(ccm_home: Path) -> None:
    data = payload("PostToolUseFailure__Bash_exit3")
    run_hook(data)
    [rec] = read_log(ccm_home, data["session_id"])
    assert (rec["ok"], rec["exit_code"], rec["duration_ms"]) == (False, 3, 28)
    assert rec["error"] == "Exit code 3\noops"
    assert read_status(ccm_home, data["session_id"])["counters"]["failures"] == 1


@pytest.mark.parametrize("name", ["PreToolUse__Read", "PreToolUse__Write", "PreToolUse__Edit"])
def test_file_tools_record_the_path_not_the_content(name: str, ccm_home: Path) -> None:
    data = payload(name)
    run_hook(data)
    [rec] = read_log(ccm_home, data["session_id"])
    assert rec["tool_input"] == {"file_path": "/home/dev/work/proj/w.txt"}


def test_prompt_notification_stop_and_subagent_fields(ccm_home: Path) -> None:
    for name in (
        "UserPromptSubmit__p",
        "Notification__permission_prompt",
        "Stop__first",
        "PreToolUse__Bash_inside_subagent",
        "StopFailure__http400",
    ):
        data = payload(name, session_id="s1")
        run_hook(data)
    prompt, note, stop, sub, failure = read_log(ccm_home, "s1")
    assert prompt["prompt"] == "please RUNTOOL now"
    assert (note["notification_type"], note["message"]) == (
        "permission_prompt",
        "Claude needs your permission",
    )
    assert stop["last_assistant_message"] == "All done." and stop["stop_hook_active"] is False
    assert (sub["agent_id"], sub["agent_type"]) == ("acb5e79fade858bd7", "general-purpose")
    assert failure["error"] == "unknown"
    assert failure["last_assistant_message"].startswith("API Error: 400")
    assert [r["seq"] for r in (prompt, note, stop, sub, failure)] == [1, 2, 3, 4, 5]


def test_environment_facts_reach_record_and_status(ccm_home: Path) -> None:
    env = {
        "CCM_TASK_ID": "task-42",
        "CLAUDE_PROJECT_DIR": "/p",
        "TMUX": "/tmp/tmux-0/ccm-x,4242,0",
        "TMUX_PANE": "%3",
    }
    data = payload("SessionStart__startup_interactive")
    run_hook(data, env=env)
    [rec] = read_log(ccm_home, data["session_id"])
    assert rec["task_id"] == "task-42" and rec["project"] == "/p"
    st = read_status(ccm_home, data["session_id"])
    assert (st["tmux_pane"], st["tmux_socket"]) == ("%3", "/tmp/tmux-0/ccm-x")
    assert (st["task_id"], st["project"], st["state"]) == ("task-42", "/p", "starting")
    assert st["transcript_path"] == data["transcript_path"]
    assert st["model"] == "claude-opus-4-8[1m]"


def test_large_fields_are_clipped_with_a_marker(ccm_home: Path) -> None:
    big = "x" * 50_000
    data = payload("UserPromptSubmit__p", prompt=big)
    run_hook(data, env={"CCM_FIELD_CAP": "1000"})
    [rec] = read_log(ccm_home, data["session_id"])
    assert rec["prompt"] == "x" * 1000 + "…[+49000 chars]"
    assert rec["truncated"] == {"prompt": 50_000}
    status = read_status(ccm_home, data["session_id"])
    assert len(status["last_prompt"]) <= 1001


def test_state_dir_is_private(ccm_home: Path) -> None:
    data = payload("PreToolUse__Bash")
    run_hook(data)
    assert stat.S_IMODE(ccm_home.stat().st_mode) == 0o700
    for sub in ("events", "status", "locks"):
        assert stat.S_IMODE((ccm_home / sub).stat().st_mode) == 0o700
        for f in (ccm_home / sub).iterdir():
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, f


def test_event_name_falls_back_to_argument(ccm_home: Path) -> None:
    data = payload("Stop__first")
    del data["hook_event_name"]
    run_hook(data, args=("Stop",))
    [rec] = read_log(ccm_home, data["session_id"])
    assert rec["event"] == "Stop"


def test_lost_status_is_rebuilt_from_the_log(ccm_home: Path) -> None:
    sid = payload("UserPromptSubmit__p")["session_id"]
    for name in ("SessionStart__startup_p", "UserPromptSubmit__p", "PreToolUse__Bash"):
        run_hook(payload(name))
    (ccm_home / "status" / f"{sid}.json").write_text("{not json")
    run_hook(payload("PostToolUse__Bash"))
    st = read_status(ccm_home, sid)
    assert st["seq"] == 4
    assert st["counters"]["prompts"] == 1 and st["counters"]["tool_uses"] == 1
    assert [r["seq"] for r in read_log(ccm_home, sid)] == [1, 2, 3, 4]


def test_status_file_is_readable_json_with_newline(ccm_home: Path) -> None:
    data = payload("Stop__first")
    run_hook(data)
    text = (ccm_home / "status" / f"{data['session_id']}.json").read_text()
    assert text.endswith("\n")
    assert json.loads(text)["state"] == "idle"


def _transcript(tmp: Path, *records: dict[str, object]) -> str:
    path = tmp / "transcript.jsonl"
    path.write_text("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records))
    path.chmod(0o600)
    return str(path)


API_ERROR = {
    "type": "assistant", "isApiErrorMessage": True, "error": "invalid_request",
    "message": {"model": "<synthetic>", "role": "assistant",
                "content": [{"type": "text", "text": "API Error: 400 x"}]},
}  # fmt: skip


@pytest.mark.parametrize("after", ["nothing", "a prompt"])
def test_a_session_ending_mid_turn_keeps_the_api_error_its_transcript_holds(
    ccm_home: Path, tmp_path: Path, after: str
) -> None:
    """`claude -p` on 2.1.328 may end before its StopFailure hook records: SessionEnd carries the error."""
    user = {"type": "user", "message": {"role": "user", "content": "again"}}
    records = [user, API_ERROR] + ([user] if after == "a prompt" else [])
    start = payload("SessionStart__startup_p", transcript_path=_transcript(tmp_path, *records))
    sid = start["session_id"]
    for data in (
        start,
        payload("UserPromptSubmit__p", session_id=sid),
        payload("SessionEnd__other_p", session_id=sid),
    ):
        assert run_hook(data).returncode == 0
    end = read_log(ccm_home, sid)[-1]
    st = read_status(ccm_home, sid)
    assert st["state"] == "ended"
    if after == "nothing":
        assert (end["error"], end["last_assistant_message"]) == ("invalid_request", "API Error: 400 x")
        assert st["error"] == "invalid_request: API Error: 400 x"
    else:  # the error belonged to an earlier turn
        assert "error" not in end and st["error"] is None


def test_a_session_ending_between_turns_never_reads_its_transcript(ccm_home: Path, tmp_path: Path) -> None:
    start = payload("SessionStart__startup_p", transcript_path=_transcript(tmp_path, API_ERROR))
    sid = start["session_id"]
    for data in (start, payload("SessionEnd__other_p", session_id=sid)):  # idle (starting): no turn open
        assert run_hook(data).returncode == 0
    assert "error" not in read_log(ccm_home, sid)[-1]
