#!/usr/bin/env python3
"""Fleet catch-up after an outage: how fast ccm-agentd ships a backlog once the database is back.

    python bench/fleet_catchup.py [--sizes 1000,10000,100000] [--sessions 10]

A private PostgreSQL and one ccm-agentd with [fleet], connected. The database is stopped; N records are
appended to ``--sessions`` session logs (whole lines in the handlers' format, then one real handler call
per session for its status); the database is started again. Reported: the time from the first to the last
record of the backlog arriving, and the rate, with the default rate bound (``ship_rate``, 20,000 records/s)
and, for the largest size, unbounded. Baseline in the same run: one client inserting the same records the
same way (unnest arrays, 2,000 per transaction, ON CONFLICT DO NOTHING), as fast as it can.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from pathlib import Path

import fleetsetup as fs
import psycopg

from ccm_agentd.fleet import shipping
from ccm_hooks.record import iso_utc


def sessions_of(n: int) -> list[str]:
    return [f"ca7c0000-0000-4000-8000-{i:012d}" for i in range(n)]


def write_backlog(home: Path, records: int, sessions: list[str]) -> None:
    """``records`` records spread over the sessions' logs, then a real handler call for each status."""
    events = home / ".ccm" / "events"
    events.mkdir(parents=True, exist_ok=True)
    per = records // len(sessions)
    template = json.loads(fs.payload("PostToolUse__Bash", "x"))
    for sid in sessions:
        lines = []
        for seq in range(1, per):
            rec = {"v": 1, "ts": iso_utc(time.time()), "seq": seq, "session_id": sid, "event": "PostToolUse",
                   "cwd": template["cwd"], "project": template["cwd"], "tool_name": "Bash",
                   "tool_use_id": f"toolu_{seq}", "tool_input": {"command": f"make test # {seq}"}, "ok": True,
                   "duration_ms": 1200, "exit_code": 0}  # fmt: skip
            lines.append(json.dumps(rec, separators=(",", ":")))
        (events / f"{sid}.jsonl").write_text("\n".join(lines) + "\n")
        fs.run_hook(home, "PostToolUse", fs.payload("PostToolUse__Bash", sid))  # record `per`, and the status


def catch_up(pg: fs.PgCluster, records: int, n_sessions: int, rate: float | None) -> tuple[float, float]:
    """(seconds from first to last record arriving, seconds from the database's restart to the last)."""
    dsn = fs.fresh_database(pg)
    home = fs.make_home(dsn, **({"ship_rate": rate} if rate else {}))
    daemon = fs.start_daemon(home)
    try:
        fs.wait(lambda: fs.count(dsn, "SELECT count(*) FROM ccm.systems") == 1, 60, "the daemon's connection")
        pg.stop()
        write_backlog(home, records, sessions_of(n_sessions))
        total = n_sessions * (records // n_sessions)
        pg.start()
        restarted = time.perf_counter()
        first = fs.wait(lambda: fs.count(dsn, "SELECT count(*) FROM ccm.events") > 0, 120, "the first record",
                        interval=0.01)  # fmt: skip
        last = fs.wait(lambda: fs.count(dsn, "SELECT count(*) FROM ccm.events") >= total, 600, "the backlog",
                       interval=0.02)  # fmt: skip
        assert fs.count(dsn, "SELECT count(*) FROM ccm.events") == total  # nothing twice
    finally:
        fs.stop_daemon(daemon)
    return last - first, last - restarted


def baseline(pg: fs.PgCluster, records: int, n_sessions: int) -> float:
    """A client shipping the same backlog as fast as it can: records per second."""
    dsn = fs.fresh_database(pg)
    home = fs.make_home(None)
    write_backlog(home, records, sessions_of(n_sessions))
    outbox = shipping.Outbox(str(home / ".ccm"), "baseline")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO ccm.systems (system) VALUES ('bench')")
        start = time.perf_counter()
        pending = sessions_of(n_sessions)
        while pending:
            batch, pending = outbox.read_batch(pending, 2000)
            shipping.ship(conn, "bench", batch)
            outbox.committed(batch)
        took = time.perf_counter() - start
    return n_sessions * (records // n_sessions) / took


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--sessions", type=int, default=10)
    args = parser.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    pg = fs.cluster()
    try:
        print(
            f"{'records':>8}  {'ship_rate':>10}  {'first->last s':>13}  {'restart->last s':>15}  "
            f"{'records/s':>9}"
        )
        for n in sizes:
            for rate in (None, 1e7) if n == max(sizes) else (None,):
                spread, total = catch_up(pg, n, args.sessions, rate)
                label = "default" if rate is None else "unbounded"
                print(f"{n:>8}  {label:>10}  {spread:13.2f}  {total:15.2f}  {n / spread:9.0f}")
        direct = baseline(pg, max(sizes), args.sessions)
        print(f"baseline: one client, same batches, as fast as it can: {direct:.0f} records/s "
              f"({dt.datetime.now():%H:%M})")  # fmt: skip
    finally:
        pg.destroy()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
