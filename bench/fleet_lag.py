#!/usr/bin/env python3
"""Fleet mirroring lag: from a hook's append to its record being visible in PostgreSQL, with ccm-agentd awake.

    python bench/fleet_lag.py [--rounds 50] [--idle 0,10,100]

A private PostgreSQL (tests/pgcluster.py) and one ccm-agentd with [fleet] per size. Each round runs the
real PostToolUse handler as Claude Code does (``/bin/sh -c`` the registered command) for one session, then
polls ``ccm.events`` every 2 ms until that record's seq is there. Reported: the time from starting the hook
to the row being visible (what a person watching ``status --fleet`` waits), and from the hook's return.
Baselines measured in the same run: the hook's own wall time, and one INSERT + COMMIT round trip from a
client (the floor for any shipping). ``--idle`` adds that many idle sessions' files to the state dir: the
lag must not grow with them (work per wake-up is proportional to what changed).
"""

from __future__ import annotations

import argparse
import statistics
import time

import fleetsetup as fs
import psycopg

SESSION = "1a9f0000-0000-4000-8000-000000000001"
QUERY = "SELECT 1 FROM ccm.events WHERE session_id = %s AND seq = %s"


def one_size(pg: fs.PgCluster, idle: int, rounds: int) -> dict[str, list[float]]:
    dsn = fs.fresh_database(pg)
    home = fs.make_home(dsn)
    for i in range(idle):
        fs.run_hook(home, "PostToolUse", fs.payload("PostToolUse__Bash", f"1d1e0000-0000-4000-8000-{i:012d}"))
    daemon = fs.start_daemon(home)
    out: dict[str, list[float]] = {"from the hook's start": [], "after the hook returned": [], "hook": []}
    try:
        fs.wait(lambda: fs.count(dsn, "SELECT count(*) FROM ccm.events") >= idle, 60, "the idle sessions")
        stdin = fs.payload("PostToolUse__Bash", SESSION)
        with psycopg.connect(dsn, autocommit=True) as conn:
            for seq in range(1, rounds + 1):
                time.sleep(0.2)  # the daemon at rest between rounds, as between a session's tool calls
                start = time.perf_counter()
                took = fs.run_hook(home, "PostToolUse", stdin)
                returned = time.perf_counter()
                seen = fs.wait(lambda s=seq: conn.execute(QUERY, (SESSION, s)).fetchone() is not None, 30,
                               f"record {seq}", interval=0.002)  # fmt: skip
                out["from the hook's start"].append(seen - start)
                out["after the hook returned"].append(seen - returned)
                out["hook"].append(took)
    finally:
        fs.stop_daemon(daemon)
    return out


def insert_round_trip(pg: fs.PgCluster, rounds: int) -> list[float]:
    dsn = fs.fresh_database(pg)
    samples = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO ccm.systems (system) VALUES ('x')")
        for seq in range(1, rounds + 1):
            start = time.perf_counter()
            conn.execute("INSERT INTO ccm.events (system, session_id, seq, event, record) "
                         "VALUES ('x', 's', %s, 'E', '{}')", (seq,))  # fmt: skip
            samples.append(time.perf_counter() - start)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--idle", default="0,10,100", help="idle sessions present, comma-separated")
    args = parser.parse_args()
    pg = fs.cluster()
    try:
        base = statistics.median(insert_round_trip(pg, args.rounds))
        print(f"baseline: one INSERT + COMMIT from a client: median {base * 1e3:.2f} ms")
        print(f"{'idle sessions':>13}  {'what':<26} {'median ms':>9} {'p90 ms':>8} {'max ms':>8}")
        for idle in (int(x) for x in args.idle.split(",")):
            for what, values in one_size(pg, idle, args.rounds).items():
                values.sort()
                p90 = values[int(len(values) * 0.9)]
                print(f"{idle:>13}  {what:<26} {statistics.median(values) * 1e3:9.1f} {p90 * 1e3:8.1f} "
                      f"{values[-1] * 1e3:8.1f}")  # fmt: skip
    finally:
        pg.destroy()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
