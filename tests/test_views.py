"""`ccm-hooks status` and `ccm-hooks events`, run as a user runs them, while handlers write."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ccm_hooks.commands.error_boundary import run_command
from tests.hookrun import payload, run_hook

CLI = str(Path(sys.executable).parent / "ccm-hooks")
A = "aaaaaaaa-0000-4000-8000-000000000001"
B = "bbbbbbbb-0000-4000-8000-000000000002"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=60)


def _two_sessions() -> None:
    for name in ("SessionStart__startup_p", "UserPromptSubmit__p", "PreToolUse__Bash", "PostToolUse__Bash"):
        run_hook(payload(name, session_id=A), env={"CLAUDE_PROJECT_DIR": "/src/alpha"})
    run_hook(payload("Stop__first", session_id=A), env={"CLAUDE_PROJECT_DIR": "/src/alpha"})
    for name in ("SessionStart__startup_interactive", "PermissionRequest__Bash_interactive"):
        run_hook(payload(name, session_id=B), env={"CLAUDE_PROJECT_DIR": "/src/beta"})


def test_status_lists_sessions_newest_first(ccm_home: Path) -> None:
    _two_sessions()
    out = cli("status")
    assert out.returncode == 0, out.stderr
    header, first, second = out.stdout.splitlines()
    assert header.split()[:3] == ["SESSION", "STATE", "PROJECT"]
    assert first.split()[:3] == [B[:8], "waiting", "beta"]
    assert "permission: Bash: echo hello > out.txt" in first
    assert second.split()[:4] == [A[:8], "idle", "alpha", "Bash"]
    assert "» All done." in second


def test_status_json_is_an_array_of_status_objects(ccm_home: Path) -> None:
    _two_sessions()
    out = cli("status", "--json")
    data = json.loads(out.stdout)
    assert [s["session_id"] for s in data] == [B, A]
    assert data[1]["counters"]["tool_uses"] == 1


def test_status_with_nothing_recorded_says_what_to_do(ccm_home: Path) -> None:
    out = cli("status")
    assert out.returncode == 0 and "ccm-hooks install" in out.stdout


def test_events_json_is_jq_ready_and_filterable(ccm_home: Path) -> None:
    _two_sessions()
    lines = cli("events", "--json").stdout.splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 7
    assert [r["seq"] for r in records if r["session_id"] == A] == [1, 2, 3, 4, 5]
    only = [json.loads(x) for x in cli("events", "--json", "-s", "aaaa", "-e", "Stop").stdout.splitlines()]
    assert [(r["session_id"], r["event"]) for r in only] == [(A, "Stop")]
    assert cli("events", "--json", "--since", "1h").stdout.count("\n") == 7
    assert cli("events", "--json", "--since", "2999-01-01T00:00Z").stdout == ""


def test_events_human_format(ccm_home: Path) -> None:
    _two_sessions()
    out = cli("events", "-s", A[:4]).stdout.splitlines()
    assert "UserPromptSubmit" in out[1] and "'please RUNTOOL now'" in out[1]
    assert "PostToolUse" in out[3] and "Bash: echo hello > out.txt ok 17ms" in out[3]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("events", "-s", "zzz"), "no session matches 'zzz'"),
        (("events", "--since", "yesterday"), "--since 'yesterday' is neither"),
    ],
)
def test_expected_errors_are_one_line_exit_1(ccm_home: Path, args: tuple[str, ...], message: str) -> None:
    _two_sessions()
    out = cli(*args)
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1 and message in out.stderr and "Traceback" not in out.stderr


def test_ambiguous_prefix_is_refused(ccm_home: Path) -> None:
    for sid in ("abc-1", "abc-2"):
        run_hook(payload("Stop__first", session_id=sid))
    out = cli("events", "-s", "abc")
    assert out.returncode == 1 and "matches 2 sessions" in out.stderr


def test_readers_skip_a_torn_last_line(ccm_home: Path) -> None:
    _two_sessions()
    with open(ccm_home / "events" / f"{A}.jsonl", "ab") as fh:
        fh.write(b'{"v":1,"seq":6,"event":"Pre')  # a writer mid-line
    records = [json.loads(x) for x in cli("events", "--json", "-s", A).stdout.splitlines()]
    assert [r["seq"] for r in records] == [1, 2, 3, 4, 5]


def test_events_follow_prints_new_records_as_they_arrive(ccm_home: Path) -> None:
    run_hook(payload("SessionStart__startup_p", session_id=A))
    proc = subprocess.Popen([CLI, "events", "--follow", "--json"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert json.loads(proc.stdout.readline())["event"] == "SessionStart"
        started = time.monotonic()
        run_hook(payload("UserPromptSubmit__p", session_id=A))
        run_hook(payload("Stop__first", session_id=B))  # a session that did not exist when follow started
        got = {json.loads(proc.stdout.readline())["event"] for _ in range(2)}
        assert got == {"UserPromptSubmit", "Stop"}
        assert time.monotonic() - started < 4  # pushed by inotify, not found by the 5 s rescan
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_events_into_a_closed_pipe_is_not_an_error(ccm_home: Path) -> None:
    for i in range(50):
        run_hook(payload("PreToolUse__Bash", session_id=A, tool_use_id=f"t{i}"))
    out = subprocess.run(
        f"{CLI} events | head -1", shell=True, capture_output=True, text=True, timeout=60, env=os.environ
    )
    assert out.stdout.count("\n") == 1 and out.stderr == ""


def test_unexpected_errors_exit_3_with_a_pointer_to_the_log(
    ccm_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken() -> int:
        raise NotADirectoryError("a bug somewhere")

    assert run_command(broken) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert str(ccm_home / "log" / "cli.log") in err
    assert "NotADirectoryError: a bug somewhere" in (ccm_home / "log" / "cli.log").read_text()
