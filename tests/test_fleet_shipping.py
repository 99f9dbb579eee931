"""Shipping the session logs to PostgreSQL: every record once, in seq order, whatever fails when."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ccm_agentd.fleet import shipping
from tests.fleetrun import append_records, db_events, log_seqs
from tests.pgcluster import import_psycopg

psycopg = import_psycopg()

SID = "0b1d4c1e-aaaa-4bbb-8ccc-000000000001"
SID2 = "0b1d4c1e-aaaa-4bbb-8ccc-000000000002"


def ship_all(dsn: str, outbox: shipping.Outbox, sessions: list[str], limit: int = 1000) -> int:
    total = 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO ccm.systems (system) VALUES ('a') ON CONFLICT DO NOTHING")
        pending = list(sessions)
        while pending:
            batch, pending = outbox.read_batch(pending, limit)
            total += shipping.ship(conn, "a", batch)
            outbox.committed(batch)
    return total


def test_records_arrive_once_in_seq_order_and_the_status_with_them(fleet_db: str, ccm_home: Path) -> None:
    append_records(ccm_home, SID, 25)
    append_records(ccm_home, SID2, 3)
    outbox = shipping.Outbox(str(ccm_home), "f1")
    assert ship_all(fleet_db, outbox, [SID, SID2], limit=10) == 28
    assert [s for _, sid, s in db_events(fleet_db) if sid == SID] == log_seqs(ccm_home, SID)
    # Nothing new: nothing read, nothing sent.
    batch, more = outbox.read_batch([SID, SID2], 10)
    assert batch.sessions == [] and more == []
    append_records(ccm_home, SID, 2)
    assert ship_all(fleet_db, outbox, [SID]) == 2
    with psycopg.connect(fleet_db, autocommit=True) as conn:
        row = conn.execute("SELECT seq, state, project, status->>'session_id' FROM ccm.sessions "
                           "WHERE session_id = %s", (SID,)).fetchone()  # fmt: skip
    assert row == (27, "working", "/work/proj", SID)


def test_the_cursor_survives_a_restart_and_a_lost_cursor_write_duplicates_nothing(
    fleet_db: str, ccm_home: Path
) -> None:
    append_records(ccm_home, SID, 10)
    outbox = shipping.Outbox(str(ccm_home), "f1")
    with psycopg.connect(fleet_db, autocommit=True) as conn:
        conn.execute("INSERT INTO ccm.systems (system) VALUES ('a')")
        batch, _ = outbox.read_batch([SID], 100)
        assert shipping.ship(conn, "a", batch) == 10
        # Killed here: committed in the database, the cursor file not written.
    again = shipping.Outbox(str(ccm_home), "f1")
    assert again.cursors == {}
    append_records(ccm_home, SID, 5)
    assert ship_all(fleet_db, again, [SID]) == 5  # 15 sent, 10 of them dropped by the key
    assert [s for _, _, s in db_events(fleet_db)] == list(range(1, 16))
    resumed = shipping.Outbox(str(ccm_home), "f1")
    assert resumed.cursors[SID].seq == 15 and resumed.cursors[SID].offset == os.path.getsize(
        ccm_home / "events" / f"{SID}.jsonl"
    )
    assert shipping.Outbox(str(ccm_home), "another-fleet").cursors == {}  # another database: ship it all


def test_a_torn_last_line_waits_and_garbage_is_skipped(fleet_db: str, ccm_home: Path) -> None:
    append_records(ccm_home, SID, 2)
    log = ccm_home / "events" / f"{SID}.jsonl"
    with open(log, "ab") as fh:
        fh.write(
            b'{"v":1,"seq":3,"ts":"2026-01-01T00:00:00.000000Z","event":"X","session_id":"' + SID.encode()
        )
    outbox = shipping.Outbox(str(ccm_home), "f1")
    assert ship_all(fleet_db, outbox, [SID]) == 2
    with open(log, "ab") as fh:
        fh.write(b'"}\nnot json\n{"no_seq": true}\n')
    assert ship_all(fleet_db, outbox, [SID]) == 1
    assert [s for _, _, s in db_events(fleet_db)] == [1, 2, 3]


def test_what_jsonb_refuses_is_stored_replaced(fleet_db: str, ccm_home: Path) -> None:
    (ccm_home / "events").mkdir(parents=True)
    lines = [
        {
            "v": 1,
            "seq": 1,
            "ts": "2026-01-01T00:00:00.000000Z",
            "event": "UserPromptSubmit",
            "prompt": "a\x00b",
        },
        {"v": 1, "seq": 2, "ts": "not a time", "event": "UserPromptSubmit", "prompt": "\ud800 lone"},
        {"v": 1, "seq": 3, "ts": "2026-01-01T00:00:01Z", "event": "X", "text": "ünïcödé \\u0000 literally"},
    ]
    with open(ccm_home / "events" / f"{SID}.jsonl", "wb") as fh:
        for rec in lines:
            fh.write(json.dumps(rec, ensure_ascii=False).encode("utf-8", "backslashreplace") + b"\n")
    assert ship_all(fleet_db, shipping.Outbox(str(ccm_home), "f1"), [SID]) == 3
    with psycopg.connect(fleet_db, autocommit=True) as conn:
        rows = conn.execute("SELECT seq, ts IS NULL, record FROM ccm.events ORDER BY seq").fetchall()
    assert rows[0][2]["prompt"] == "a\ufffdb"
    assert rows[1][1] is True and rows[1][2]["prompt"] == "\ufffd lone"
    assert rows[2][2]["text"] == "ünïcödé \\u0000 literally"


def test_a_rescan_reads_only_logs_whose_size_moved(ccm_home: Path) -> None:
    append_records(ccm_home, SID, 2)
    append_records(ccm_home, SID2, 2)
    outbox = shipping.Outbox(str(ccm_home), "f1")
    assert sorted(outbox.moved()) == [SID, SID2]
    batch, _ = outbox.read_batch([SID, SID2], 100)
    outbox.committed(batch)
    assert outbox.moved() == []
    append_records(ccm_home, SID2, 1)
    assert outbox.moved() == [SID2]
    assert outbox.backlog() == (0, 0)  # sizes as last read; moved() does not read


@pytest.mark.parametrize("limit", [1, 7, 1000])
def test_batches_of_any_size_cover_the_log_exactly(fleet_db: str, ccm_home: Path, limit: int) -> None:
    append_records(ccm_home, SID, 30)
    assert ship_all(fleet_db, shipping.Outbox(str(ccm_home), "f1"), [SID], limit=limit) == 30
    assert [s for _, _, s in db_events(fleet_db)] == list(range(1, 31))
