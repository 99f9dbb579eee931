"""Writers killed at any moment: readers never see a partial status, and the log stays consistent."""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from pathlib import Path

from ccm_hooks import fileio, state
from tests.hookrun import payload, read_status, run_hook, spawn_hook

SID = "c0ffee00-0000-4000-8000-000000000001"


def test_status_readers_never_see_a_partial_file_while_writers_are_killed(ccm_home: Path) -> None:
    run_hook(payload("SessionStart__startup_p", session_id=SID))
    status_file = ccm_home / "status" / f"{SID}.json"
    stop = threading.Event()
    reads: list[int] = [0]
    bad: list[str] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                text = status_file.read_bytes()
            except FileNotFoundError:
                bad.append("status file vanished")
                continue
            try:
                json.loads(text)
            except ValueError:
                bad.append(text[:200].decode("utf-8", "replace"))
            reads[0] += 1

    thread = threading.Thread(target=reader)
    thread.start()
    rng = random.Random(7)
    killed = 0
    try:
        # A large status (long last message) makes the write window wider.
        big = payload("Stop__first", session_id=SID, last_assistant_message="w" * 900)
        tool = payload("PreToolUse__Bash", session_id=SID)
        for i in range(120):
            proc = spawn_hook(big if i % 2 else {**tool, "tool_use_id": f"t{i}"})
            time.sleep(rng.uniform(0, 0.03))  # somewhere in startup, parsing, or mid-write
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                killed += 1
            proc.wait(timeout=30)
    finally:
        stop.set()
        thread.join()
    assert bad == []
    assert reads[0] > 100
    assert killed > 10  # the test really killed writers in flight

    # A healthy writer afterwards: seq continues past everything in the log, the status matches a replay.
    run_hook(payload("UserPromptSubmit__p", session_id=SID))
    data = (ccm_home / "events" / f"{SID}.jsonl").read_bytes()
    records = [rec for _, rec in fileio.iter_lines(data)]
    seqs = [r["seq"] for r in records]
    assert seqs == sorted(set(seqs)), "seq repeated or went backwards"
    replay = None
    for rec in records:
        replay = state.apply(replay, rec)
    assert replay is not None
    st = read_status(ccm_home, SID)
    assert st["seq"] == seqs[-1]
    assert st["counters"] == replay["counters"]
    leftovers = [p.name for p in (ccm_home / "status").iterdir() if p.name.startswith(".")]
    assert all(name.endswith(".tmp") for name in leftovers)  # killed writers' temp files, never read


def test_torn_last_line_is_terminated_by_the_next_writer(ccm_home: Path) -> None:
    run_hook(payload("PreToolUse__Bash", session_id=SID))
    log = ccm_home / "events" / f"{SID}.jsonl"
    with open(log, "ab") as fh:
        fh.write(
            b'{"v":1,"ts":"2026-11-21T00:00:00.000000Z","seq":2,"session_id":"' + SID.encode() + b'","ev'
        )
    run_hook(payload("PostToolUse__Bash", session_id=SID))
    lines = log.read_bytes().split(b"\n")
    assert lines[-1] == b""
    assert lines[1].endswith(b'"ev')  # the torn line, now terminated, is skipped by readers
    assert json.loads(lines[2])["seq"] == 2 and json.loads(lines[2])["event"] == "PostToolUse"
    assert read_status(ccm_home, SID)["seq"] == 2


def test_status_behind_the_log_is_repaired_and_seq_not_reused(ccm_home: Path) -> None:
    for name in ("UserPromptSubmit__p", "PreToolUse__Bash"):
        run_hook(payload(name, session_id=SID))
    status_file = ccm_home / "status" / f"{SID}.json"
    behind = status_file.read_text()
    run_hook(payload("PostToolUse__Bash", session_id=SID))
    status_file.write_text(behind)  # as if the writer died between append and replace
    os.utime(status_file)
    run_hook(payload("Stop__first", session_id=SID))
    log = (ccm_home / "events" / f"{SID}.jsonl").read_text().splitlines()
    assert [json.loads(line)["seq"] for line in log] == [1, 2, 3, 4]
    st = read_status(ccm_home, SID)
    assert (st["seq"], st["state"], st["counters"]["turns"], st["counters"]["tool_uses"]) == (4, "idle", 1, 1)
