"""logscan: streamed logs, --since by binary search, tails, merges; each compared with the plain answer
(read everything, filter, sort) on many random logs, including the out-of-order ts that parallel handlers
write, torn and damaged lines, and chunk sizes that cut lines anywhere."""

from __future__ import annotations

import itertools
import json
import os
import random
from pathlib import Path
from typing import Any

import pytest

from ccm_hooks.record import iso_utc
from ccm_hooks.statedir import logscan

T0 = 1_790_000_000.0


def rec(seq: int, t: float, sid: str = "s1", event: str = "PreToolUse", **more: Any) -> dict[str, Any]:
    return {"v": 1, "ts": iso_utc(t), "seq": seq, "session_id": sid, "event": event, **more}


def line(r: dict[str, Any]) -> bytes:
    return json.dumps(r, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def random_log(rng: random.Random, n: int, sid: str = "s1", disorder: float = 5.0) -> list[dict[str, Any]]:
    """Records in file (seq) order whose ts are in order except for a window of ``disorder`` seconds:
    a handler that started earlier can get the lock later, as with parallel tool calls."""
    out, t = [], T0 + rng.random() * 100
    for seq in range(1, n + 1):
        t += rng.expovariate(1.0)  # about one a second, in bursts
        late = rng.random() < 0.2
        ts = t - rng.random() * disorder if late else t
        body = {"prompt": "x" * rng.randrange(0, 3000)} if rng.random() < 0.1 else {}
        out.append(rec(seq, ts, sid, **body))
    return out


def write(path: Path, records: list[dict[str, Any]], extra: bytes = b"") -> Path:
    path.write_bytes(b"".join(line(r) for r in records) + extra)
    return path


def test_stream_reads_every_record_whatever_the_chunk_size(tmp_path: Path) -> None:
    rng = random.Random(1)
    records = random_log(rng, 300)
    log = write(tmp_path / "a.jsonl", records, extra=b'{"v":1,"ts":"2026-')  # a torn last line
    for chunk in (7, 100, 4096, 1 << 20):
        stream = logscan.LogStream(str(log), chunk=chunk)
        assert list(stream) == records
        # A follower resumes at the torn line, not after it.
        assert stream.offset == log.stat().st_size - len(b'{"v":1,"ts":"2026-')


def test_stream_skips_damage_and_an_over_long_line_without_holding_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logscan, "MAX_LINE", 1000)
    good = [rec(i, T0 + i) for i in range(1, 6)]
    data = (
        line(good[0])
        + b"not json\n"
        + b"[1,2]\n"
        + b"\n"
        + b"y" * 5000
        + b"\n"
        + b"".join(map(line, good[1:]))
    )
    log = tmp_path / "a.jsonl"
    log.write_bytes(data)
    for chunk in (16, 333, 1 << 20):
        assert list(logscan.LogStream(str(log), chunk=chunk)) == good


def test_a_log_replaced_under_a_stream_ends_it(tmp_path: Path) -> None:
    log = write(tmp_path / "a.jsonl", [rec(i, T0 + i) for i in range(1, 200)])
    stream = logscan.LogStream(str(log), chunk=256)
    it = iter(stream)
    first = next(it)
    replacement = write(tmp_path / "b.jsonl", [rec(1, T0, "other")] * 50)
    os.replace(replacement, log)
    rest = list(it)
    assert first["seq"] == 1 and all(r["session_id"] == "s1" for r in rest)


def test_fifos_and_symlinks_are_not_read(tmp_path: Path) -> None:
    fifo = tmp_path / "f.jsonl"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer forever
    assert list(logscan.LogStream(str(fifo))) == []
    assert logscan.seek_since(str(fifo), "x") == 0
    assert logscan.tail_start(str(fifo), 3, lambda r: True) == (0, 0)
    link = tmp_path / "l.jsonl"
    link.symlink_to(write(tmp_path / "real.jsonl", [rec(1, T0)]))
    assert list(logscan.LogStream(str(link))) == []


@pytest.mark.parametrize("seed", range(40))
def test_seek_since_finds_every_record_at_or_after_since(
    tmp_path: Path, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logscan, "SEEK_WINDOW", 512)  # probe even small logs
    rng = random.Random(seed)
    records = random_log(rng, rng.choice([1, 2, 50, 800]))
    log = write(tmp_path / "a.jsonl", records)
    if rng.random() < 0.3:  # damage in the middle, and a line without the handler's layout
        with log.open("ab") as fh:
            fh.write(
                b"garbage\n" + json.dumps({"ts": iso_utc(T0 + 10**6), "v": 1, "seq": 0}).encode() + b"\n"
            )
        records = [*records, {"ts": iso_utc(T0 + 10**6), "v": 1, "seq": 0}]
    for _ in range(20):
        pick = rng.choice(records)
        since = iso_utc(T0 - 10 + rng.random() * 2000) if rng.random() < 0.3 else pick["ts"]
        start = logscan.seek_since(str(log), iso_utc_minus(since, logscan.SEEK_MARGIN_S))
        found = [r for r in logscan.LogStream(str(log), start) if r["ts"] >= since]
        assert found == [r for r in records if r["ts"] >= since]


def iso_utc_minus(ts: str, seconds: float) -> str:
    from ccm_hooks.statedir.timefmt import shift_ts

    return shift_ts(ts, -seconds)


def test_seek_since_reads_a_little_of_a_big_log(tmp_path: Path) -> None:
    records = [rec(i, T0 + i, prompt="p" * 300) for i in range(1, 20001)]  # ~7 MB, one a second
    log = write(tmp_path / "a.jsonl", records)
    since = records[-100]["ts"]
    start = logscan.seek_since(str(log), iso_utc_minus(since, logscan.SEEK_MARGIN_S))
    # The margin (60 s) is 60 records here: the scan starts within a few windows of them.
    assert log.stat().st_size - start < 200 * 400 + 2 * logscan.SEEK_WINDOW
    assert [r["seq"] for r in logscan.LogStream(str(log), start) if r["ts"] >= since] == list(
        range(19901, 20001)
    )


@pytest.mark.parametrize("seed", range(30))
def test_tail_start_gives_the_last_n_matching_records(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    records = random_log(rng, rng.choice([0, 1, 3, 200, 1500]))
    extra = b'{"v":1,"ts":' if rng.random() < 0.5 else b""
    log = write(tmp_path / "a.jsonl", records, extra)
    for _ in range(10):
        n = rng.choice([1, 2, 10, 300, 5000])
        step = 3 if rng.random() < 0.3 else 1

        def keep(r: dict[str, Any], step: int = step) -> bool:
            return bool(r["seq"] % step == 0)

        start, end = logscan.tail_start(str(log), n, keep)
        assert end == log.stat().st_size - len(extra)
        got = [r for r in logscan.LogStream(str(log), start, stop=end) if keep(r)]
        assert got == [r for r in records if keep(r)][-n:]


def test_merge_orders_by_time_and_keeps_each_session_in_file_order(tmp_path: Path) -> None:
    rng = random.Random(7)
    logs = {sid: random_log(rng, 200, sid) for sid in ("a", "b", "c")}
    paths = [write(tmp_path / f"{sid}.jsonl", records) for sid, records in logs.items()]
    merged = [r for _, r in logscan.merge(logscan.LogStream(str(p)).lines() for p in paths)]
    for sid, records in logs.items():
        assert [r for r in merged if r["session_id"] == sid] == records  # seq order, despite ts
    heads = [logscan.merge_key(r) for r in merged]
    # Across sessions time order holds wherever the sessions' own order allows it.
    assert sum(1 for x, y in itertools.pairwise(heads) if x > y) < len(merged) // 4


def test_end_of_lines_stops_before_a_torn_line(tmp_path: Path) -> None:
    log = write(tmp_path / "a.jsonl", [rec(1, T0)], extra=b'{"v":1')
    assert logscan.end_of_lines(str(log)) == len(line(rec(1, T0)))
    assert logscan.end_of_lines(str(tmp_path / "missing")) == 0
