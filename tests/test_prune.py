"""`ccm-hooks prune --older-than AGE`: ended sessions' files go, a live session's never do."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ccm_hooks.record import iso_utc
from tests.hookrun import payload, run_hook

CLI = str(Path(sys.executable).parent / "ccm-hooks")
OLD = time.time() - 10 * 86400
ENDED_OLD = "a0000000-0000-4000-8000-000000000001"
ENDED_RUNNING = "b0000000-0000-4000-8000-000000000002"
WORKING_OLD = "c0000000-0000-4000-8000-000000000003"
ENDED_RECENT = "d0000000-0000-4000-8000-000000000004"
NO_STATUS = "e0000000-0000-4000-8000-000000000005"


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def session(home: Path, sid: str, names: list[str], pid: int, when: float | None) -> None:
    for name in names:
        assert run_hook(payload(name, session_id=sid)).returncode == 0
    status = home / "status" / f"{sid}.json"
    st = json.loads(status.read_text())
    st["claude_pid"] = pid
    if when is not None:
        st["updated_at"] = iso_utc(when)
    status.write_text(json.dumps(st))
    if when is not None:
        for path in (status, home / "events" / f"{sid}.jsonl", home / "locks" / f"{sid}.lock"):
            os.utime(path, (when, when))


@pytest.fixture
def sessions(ccm_home: Path) -> Path:
    ended = ["SessionStart__startup_p", "UserPromptSubmit__p", "Stop__first", "SessionEnd__other_p"]
    session(ccm_home, ENDED_OLD, ended, dead_pid(), OLD)
    session(ccm_home, ENDED_RUNNING, ended, os.getpid(), OLD)  # its claude still runs
    session(ccm_home, WORKING_OLD, ["SessionStart__startup_p", "UserPromptSubmit__p"], dead_pid(), OLD)
    session(ccm_home, ENDED_RECENT, ended, dead_pid(), None)
    session(ccm_home, NO_STATUS, ended, dead_pid(), OLD)
    (ccm_home / "status" / f"{NO_STATUS}.json").unlink()
    stale = ccm_home / "status" / f".{WORKING_OLD}.json.1234.tmp"
    stale.write_text("")
    os.utime(stale, (OLD, OLD))
    (ccm_home / "status" / f".{WORKING_OLD}.json.5678.tmp").write_text("")  # a write in progress
    return ccm_home


def files_of(home: Path, sid: str) -> list[str]:
    return sorted(p.name for p in home.rglob(f"{sid}*"))


def prune(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, "prune", *args], capture_output=True, text=True, timeout=60)


def test_dry_run_says_what_would_go_and_removes_nothing(sessions: Path) -> None:
    before = sorted(str(p) for p in sessions.rglob("*"))
    out = prune("--older-than", "7d", "--dry-run")
    assert out.returncode == 0, out.stderr
    assert f"would remove {ENDED_OLD} (ended, idle 10d; 3 files, " in out.stdout
    assert ".1234.tmp (a temp file left by a writer that died)" in out.stdout
    assert "would remove 1 sessions and 1 temp files" in out.stdout
    assert sorted(str(p) for p in sessions.rglob("*")) == before


def test_prune_removes_only_ended_dead_old_sessions(sessions: Path) -> None:
    out = prune("--older-than", "7d")
    assert out.returncode == 0, out.stderr
    assert f"removed {ENDED_OLD}" in out.stdout and "MiB" in out.stdout.splitlines()[-1]
    assert files_of(sessions, ENDED_OLD) == []
    for sid in (ENDED_RUNNING, WORKING_OLD, ENDED_RECENT):
        assert len(files_of(sessions, sid)) >= 3, sid  # log, status, lock (and WORKING_OLD's temp file)
    assert files_of(sessions, NO_STATUS) == [f"{NO_STATUS}.jsonl", f"{NO_STATUS}.lock"]
    assert not (sessions / "status" / f".{WORKING_OLD}.json.1234.tmp").exists()
    assert (sessions / "status" / f".{WORKING_OLD}.json.5678.tmp").exists()
    # What is left is still a valid state dir, and a later hook of a pruned id starts a fresh session.
    assert run_hook(payload("SessionStart__resume_p", session_id=ENDED_OLD)).returncode == 0
    first = json.loads((sessions / "events" / f"{ENDED_OLD}.jsonl").read_text().splitlines()[0])
    assert first["seq"] == 1


def test_a_session_whose_lock_is_held_is_kept(sessions: Path) -> None:
    fd = os.open(sessions / "locks" / f"{ENDED_OLD}.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # a hook of that session, right now
        out = prune("--older-than", "7d")
    finally:
        os.close(fd)
    assert out.returncode == 0 and "removed 0 sessions" in out.stdout
    assert len(files_of(sessions, ENDED_OLD)) == 3


@pytest.mark.parametrize("age", ["", "7", "0d", "-1d", "soon", "1e3d"])
def test_a_bad_age_is_one_line(ccm_home: Path, age: str) -> None:
    out = prune("--older-than", age)
    assert out.returncode == 1 and out.stderr.count("\n") == 1 and "90m, 12h, 7d or 2w" in out.stderr
