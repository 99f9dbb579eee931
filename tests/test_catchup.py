"""A status behind its log is caught up from its seq, reading only the records after it; a missing one is
replayed in chunks, for a bounded time per hook. Real logs from bench/statedir_gen.py, the real handler;
issue 9, item 6 (bench/catchup_latency.py measures it)."""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path
from typing import Any

import pytest

from bench.statedir_gen import write_log_of_size, write_session
from ccm_hooks import fileio, jsonl, record, state, store
from tests.hookrun import payload, read_status
from tests.hostile import assert_quiet, logged, run_handler, run_handler_rss

SID = "cafe0000-0000-4000-8000-00000000ca7c"


def _records(home: Path, sid: str = SID) -> list[dict[str, Any]]:
    data = (home / "events" / f"{sid}.jsonl").read_bytes()
    return [rec for _, rec in fileio.iter_lines(data)]


def _fold(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    status = None
    last = 0
    for rec in records:
        seq = jsonl.record_seq(rec)
        if seq is None or seq <= last:
            continue
        last = seq
        if isinstance(rec.get("ts"), str) and isinstance(rec.get("event"), str):
            status = state.apply(status, rec)
    return status


def _catch_up(home: Path, budget: float | None = None) -> store.Current:
    fd = fileio.open_regular(str(home / "events" / f"{SID}.jsonl"), os.O_RDONLY, private=True)
    try:
        return store.catch_up(str(home), SID, fd, budget)
    finally:
        os.close(fd)


def _put_status(home: Path, status: dict[str, Any] | None) -> None:
    path = home / "status" / f"{SID}.json"
    if status is None:
        path.unlink(missing_ok=True)
    else:
        path.write_bytes(fileio.encode_line(status))


def _damage(home: Path) -> None:
    """Torn fragments and junk between records, as crashes (and a hand edit) leave them."""
    log = home / "events" / f"{SID}.jsonl"
    lines = log.read_bytes().split(b"\n")
    rng = random.Random(3)
    for i in sorted(rng.sample(range(1, len(lines) - 1), 30), reverse=True):
        lines.insert(i, rng.choice([b'{"v":1,"ts":"2026-', b"", b"not json", b'{"seq":"x"}', b"[1,2]"]))
    log.write_bytes(b"\n".join(lines))


def test_catching_up_from_any_seq_gives_the_full_fold(ccm_home: Path) -> None:
    write_session(str(ccm_home), SID, 3000, exact_limit=10**6)
    _damage(ccm_home)
    records = _records(ccm_home)
    full = _fold(records)
    rng = random.Random(5)
    valid = [r for r in records if jsonl.record_seq(r) is not None and isinstance(r.get("ts"), str)]
    for k in [1, 2, len(valid) - 2, len(valid) - 1, len(valid), *rng.sample(range(len(valid)), 25)]:
        _put_status(ccm_home, _fold(valid[:k]))
        cur = _catch_up(ccm_home)
        assert full is not None
        assert cur.complete and cur.status == full and cur.last_seq == full["seq"], k


def test_a_status_behind_reads_only_what_follows_it(ccm_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_log_of_size(str(ccm_home), SID, 20_000_000)
    size = (ccm_home / "events" / f"{SID}.jsonl").stat().st_size
    current = read_status(ccm_home, SID)
    records = _records(ccm_home)
    read = [0]
    real_pread = os.pread

    def counting(fd: int, n: int, offset: int) -> bytes:
        data = real_pread(fd, n, offset)
        read[0] += len(data)
        return data

    monkeypatch.setattr(os, "pread", counting)
    for behind in (0, 1, 2, 50, 5000):
        k = len(records) - behind
        status = dict(current) if behind == 0 else _fold_from(current, records, k)
        _put_status(ccm_home, status)
        read[0] = 0
        cur = _catch_up(ccm_home)
        assert cur.complete and cur.last_seq == records[-1]["seq"]
        gap = sum(len(fileio.encode_line(r)) for r in records[k:])
        limit = 256 << 10 if behind <= 50 else gap + (1 << 20)
        assert read[0] < limit, (behind, read[0], size)
        assert read[0] < size / 10


def _fold_from(current: dict[str, Any], records: list[dict[str, Any]], k: int) -> dict[str, Any]:
    """A status at seq k (the generator's status is exact only at the end: use its shape, set seq)."""
    return dict(current, seq=records[k - 1]["seq"])


def test_offset_after_seq_on_damaged_logs(tmp_path: Path) -> None:
    rng = random.Random(11)
    for trial in range(30):
        lines: list[bytes] = []
        seq = 0
        for _ in range(rng.randint(0, 3000)):
            r = rng.random()
            if r < 0.05:
                lines.append(rng.choice([b"junk", b'{"v":1', b"", b"x" * rng.randint(1, 70_000)]))
            else:
                seq += 1
                pad = "y" * rng.choice([10, 100, 1000, 20_000])
                lines.append(json.dumps({"seq": seq, "pad": pad}).encode())
        data = b"\n".join(lines) + (b"\n" if rng.random() < 0.8 else b'{"seq":99999')
        log = tmp_path / f"{trial}.jsonl"
        log.write_bytes(data)
        starts = {}  # seq -> line start
        pos = 0
        for line in data.split(b"\n")[:-1]:  # the last piece is empty or a torn line
            rec = fileio.parse_record(line)
            if rec is not None and jsonl.record_seq(rec) is not None:
                starts[rec["seq"]] = pos
            pos += len(line) + 1
        fd = os.open(log, os.O_RDONLY)
        try:
            for n in [0, seq, max(seq - 1, 0), *(rng.randint(0, seq) for _ in range(10))]:
                off = jsonl.offset_after_seq(fd, n)
                assert off == 0 or data[off - 1 : off] == b"\n", (trial, n, off)
                after = [s for s in starts if s > n]
                assert all(starts[s] >= off for s in after), (trial, n, off)
                before = [s for s in starts if s <= n and starts[s] >= off]
                assert len(before) <= 100, (trial, n, len(before))  # the last window at most
        finally:
            os.close(fd)


def test_a_replay_runs_out_of_time_writes_its_progress_and_loses_no_event(
    ccm_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_session(str(ccm_home), SID, 6000)
    _put_status(ccm_home, None)
    monkeypatch.setattr(store, "CATCH_UP_BUDGET_S", 0.0)  # out of time after the first 1024 records
    sent = 0
    for i in range(20):
        data = payload("PreToolUse__Bash", session_id=SID, tool_use_id=f"late{i}")
        rec, new_status, _, problems = store.record_event(
            str(ccm_home), data, "PreToolUse", record.iso_utc(1e9 + i), {}
        )
        sent += 1
        status = read_status(ccm_home, SID)
        if new_status is not None:
            break
        assert problems and "catching the status up" in problems[0]
        assert status["seq"] < rec["seq"]  # progress saved, behind the log
    assert 3 < sent < 20
    records = _records(ccm_home)
    assert [r["tool_use_id"] for r in records if str(r.get("tool_use_id")).startswith("late")] == [
        f"late{i}" for i in range(sent)
    ]
    final = read_status(ccm_home, SID)
    expected = _fold(records)
    assert expected is not None
    # The handler adds what it knows about its process to the status; the fold of the log does not.
    for key in ("tmux_pane", "tmux_socket", "claude_pid"):
        final.pop(key)
        expected.pop(key)
    assert final == expected


def test_the_real_handler_catches_up_a_big_log_one_behind(ccm_home: Path) -> None:
    write_session(str(ccm_home), SID, 60_000, exact_limit=10**6)  # ~30 MB, an exact status
    status_file = ccm_home / "status" / f"{SID}.json"
    data = payload("PostToolUse__Bash", session_id=SID)
    before = status_file.read_bytes()
    assert_quiet(run_handler(data)[0])
    status_file.write_bytes(before)  # the handler was killed between its append and its replace
    proc, _ = run_handler(data)
    assert_quiet(proc)
    records = _records(ccm_home)
    st = read_status(ccm_home, SID)
    assert st["seq"] == records[-1]["seq"] == json.loads(before)["seq"] + 2
    assert st["counters"] == _fold(records)["counters"]  # type: ignore[index]
    assert logged(ccm_home) == []


def test_the_real_handler_replays_a_lost_status_in_bounded_memory_and_time(ccm_home: Path) -> None:
    write_log_of_size(str(ccm_home), SID, 60_000_000)
    _put_status(ccm_home, None)
    data = payload("PostToolUse__Bash", session_id=SID)
    peak_kib = 0
    for hook in range(1, 100):  # noqa: B007 - the count is reported
        started = time.monotonic()
        code, out, rss = run_handler_rss(data)
        took = time.monotonic() - started
        assert (code, out) == (0, b"")
        assert took < store.CATCH_UP_BUDGET_S + 3.0  # the budget, start-up and the status write
        peak_kib = max(peak_kib, rss)
        if read_status(ccm_home, SID)["seq"] == _records_tail_seq(ccm_home):
            break
    else:
        pytest.fail("the status never caught up")
    assert peak_kib < 40 * 1024, peak_kib  # the log is 60 MB; never held in memory (a hook: ~13 MiB)
    # More than one hook on a slow machine: each said how far it got.
    assert len([e for e in logged(ccm_home) if "catching the status up" in e["error"]]) == hook - 1


def _records_tail_seq(home: Path) -> int:
    last = jsonl.last_record(str(home / "events" / f"{SID}.jsonl"))
    assert last is not None
    return int(last["seq"])
