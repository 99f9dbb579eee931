"""Hundreds of handlers at once on one session: every record whole, seq unique, counters exact."""

from __future__ import annotations

import json
import select
from pathlib import Path

from tests.hookrun import payload, read_status, spawn_hook

SID = "0c0c0c0c-1111-2222-3333-444444444444"
PIPE_BUF = 4096


def test_hundreds_of_concurrent_handlers_on_one_session(ccm_home: Path) -> None:
    big_prompt = "p" * 20_000  # well past PIPE_BUF once encoded
    kinds = {
        "UserPromptSubmit": payload("UserPromptSubmit__p", session_id=SID, prompt=big_prompt),
        "PreToolUse": payload("PreToolUse__Bash", session_id=SID),
        "PostToolUseFailure": payload(
            "PostToolUseFailure__Bash_exit3", session_id=SID, error="Exit code 3\n" + "e" * 9000
        ),
        "Stop": payload("Stop__first", session_id=SID, last_assistant_message="m" * 6000),
    }
    plan = [name for name in kinds for _ in range(75)]  # 300 handler runs
    procs = []
    for i, name in enumerate(plan):
        data = dict(kinds[name])
        if name == "PreToolUse":
            data["tool_use_id"] = f"toolu_{i}"
        procs.append(spawn_hook(data))
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert (proc.returncode, out, err) == (0, b"", b"")

    raw = (ccm_home / "events" / f"{SID}.jsonl").read_bytes()
    lines = raw.split(b"\n")
    assert lines[-1] == b""  # ends with a newline: no torn tail
    records = [json.loads(line) for line in lines[:-1]]  # every line parses: nothing interleaved
    assert len(records) == len(plan)
    assert [r["seq"] for r in records] == list(range(1, len(plan) + 1))  # unique and in file order
    assert sum(len(line) > PIPE_BUF for line in lines) >= 150
    by_event: dict[str, int] = {}
    for r in records:
        by_event[r["event"]] = by_event.get(r["event"], 0) + 1
    assert by_event == {name: 75 for name in kinds}

    st = read_status(ccm_home, SID)
    assert st["seq"] == len(plan)
    assert st["counters"]["prompts"] == 75
    assert st["counters"]["tool_uses"] == 75
    assert st["counters"]["failures"] == 75
    assert st["counters"]["turns"] == 75
    assert not (ccm_home / "log" / "hooks.log").exists()


def test_many_sessions_at_once_stay_separate(ccm_home: Path) -> None:
    procs = []
    for s in range(20):
        for _ in range(10):
            procs.append(spawn_hook(payload("PreToolUse__Bash", session_id=f"sess-{s}")))
    # Reap as they finish rather than in order: keeps the test fast on 2 cores.
    pending = {p.stdout.fileno(): p for p in procs if p.stdout}
    while pending:
        ready, _, _ = select.select(list(pending), [], [], 60)
        assert ready, "handlers hung"
        for fd in ready:
            proc = pending.pop(fd)
            proc.communicate(timeout=60)
            assert proc.returncode == 0
    for s in range(20):
        st = read_status(ccm_home, f"sess-{s}")
        assert st["seq"] == 10 and st["counters"]["tool_uses"] == 10
