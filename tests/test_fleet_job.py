"""The fleet job driven as the daemon drives it (wake-ups), with its link thread on a real PostgreSQL, and the
tasks job played by a stand-in (tests/fleetrun.py FakeTasks): mirroring, claims, results, cancel, outages,
partitions, lost leases, restarts."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ccm_agentd.fleet import fence
from ccm_agentd.fleet.job import FleetJob
from tests.fleetrun import FakeTasks, append_records, db_events, dsn_with, log_seqs, pump, wake
from tests.pgcluster import PgCluster, import_psycopg
from tests.tcpproxy import tcp_proxy

psycopg = import_psycopg()

SID = "5e551011-aaaa-4bbb-8ccc-000000000001"


@pytest.fixture
def jobs() -> Iterator[list[FleetJob]]:
    made: list[FleetJob] = []
    yield made
    for job in made:
        job.close()


def make_job(
    jobs: list[FleetJob],
    home: Path,
    dsn: str,
    monkeypatch: pytest.MonkeyPatch,
    local: FakeTasks | None = None,
    **table: Any,
) -> tuple[FleetJob, FakeTasks]:
    monkeypatch.setenv("CCM_FLEET_DSN", dsn)
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text("[fleet]\n")  # the job reads its settings from ``table``
    tasks = local or FakeTasks()
    job = FleetJob(str(home), None, lambda *a, **k: None, tasks)
    job.configure({"system": "a", **table})
    jobs.append(job)
    return job, tasks


def sql(dsn: str, query: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(query.encode(), args or None)
        return cur.fetchall() if cur.description else []


def task_row(dsn: str, task_id: str) -> dict[str, Any]:
    from psycopg.rows import dict_row

    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
        row = conn.execute("SELECT * FROM ccm.tasks WHERE id = %s", (task_id,)).fetchone()
    assert row is not None
    return row


def add_task(dsn: str, project: str = "web", **cols: Any) -> str:
    names = ["prompt", "project", *cols]
    rows = sql(
        dsn,
        f"INSERT INTO ccm.tasks ({', '.join(names)}) VALUES ({', '.join(['%s'] * len(names))}) RETURNING id",
        "do it",
        project,
        *cols.values(),
    )
    return str(rows[0][0])


def test_sessions_are_mirrored_and_the_system_heartbeats(
    fleet_db: str, ccm_home: Path, monkeypatch: pytest.MonkeyPatch, jobs: list[FleetJob]
) -> None:
    job, _ = make_job(jobs, ccm_home, fleet_db, monkeypatch, labels={"gpu": "yes"})
    append_records(ccm_home, SID, 12)
    pump(
        job,
        ccm_home,
        lambda: [s for _, _, s in db_events(fleet_db)] == log_seqs(ccm_home, SID),
        what="shipped",
    )
    (row,) = sql(fleet_db, "SELECT system, labels, version IS NOT NULL FROM ccm.systems")
    assert row == ("a", {"gpu": "yes"}, True)
    assert sql(fleet_db, "SELECT state, seq FROM ccm.sessions") == [("working", 12)]
    h = job.health()
    assert h["connected"] and h["listen"] and h["shipped"] == 12 and h["system"] == "a"
    from ccm_agentd.metrics import Metrics

    m = Metrics()
    job.metrics(m)
    job.metrics(m)  # every heartbeat: counters follow the running totals
    text = m.render()
    assert "ccm_fleet_connected 1" in text and "ccm_fleet_shipped_total 12" in text
    assert 'ccm_fleet_leases{status="held"} 0' in text


def test_claimed_tasks_become_local_ones_and_their_results_flow_back(
    fleet_db: str, ccm_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, jobs: list[FleetJob]
) -> None:
    ids = [add_task(fleet_db) for _ in range(3)]
    add_task(fleet_db, project="elsewhere")  # no clone here: never claimed
    job, tasks = make_job(jobs, ccm_home, fleet_db, monkeypatch, projects={"web": str(tmp_path)})
    pump(job, ccm_home, lambda: len(tasks.tasks) == 2, what="two claims (max_agents 2)")
    first = [f"L{i}-1" for i in ids[:2]]  # FakeTasks' ids; priority, then FIFO
    assert sorted(first) == sorted(tasks.tasks)
    pump(job, ccm_home, lambda: all(task_row(fleet_db, i)["state"] == "starting" for i in ids[:2]))
    assert task_row(fleet_db, ids[2])["state"] == "queued"
    assert tasks.tasks[first[0]]["clone"] == str(tmp_path)
    assert tasks.tasks[first[0]]["lease"] == fence.lease_path(str(ccm_home), ids[0])
    tasks.set(first[0], "running", session_id=SID)
    pump(job, ccm_home, lambda: task_row(fleet_db, ids[0])["state"] == "running")
    assert task_row(fleet_db, ids[0])["session_id"] == SID
    tasks.set(first[0], "done", reason="done marker", result={"turns": 3, "branch": "ccm/x"})
    pump(job, ccm_home, lambda: task_row(fleet_db, ids[0])["state"] == "done")
    row = task_row(fleet_db, ids[0])
    assert row["result"] == {"turns": 3, "branch": "ccm/x"} and row["reason"] == "done marker"
    assert row["local_id"] == first[0]
    # The slot it freed takes the third task.
    pump(job, ccm_home, lambda: task_row(fleet_db, ids[2])["state"] == "starting", what="third claim")
    # Ended, and its agent gone (no live session): nothing left to fence, the lease file is gone.
    assert not Path(fence.lease_path(str(ccm_home), ids[0])).exists()


def test_a_cancel_from_the_fleet_cancels_the_local_task(
    fleet_db: str, ccm_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, jobs: list[FleetJob]
) -> None:
    tid = add_task(fleet_db)
    job, tasks = make_job(jobs, ccm_home, fleet_db, monkeypatch, projects={"web": str(tmp_path)})
    pump(job, ccm_home, lambda: task_row(fleet_db, tid)["state"] == "starting")
    sql(fleet_db, "SELECT ccm.cancel(%s)", tid)
    pump(job, ccm_home, lambda: task_row(fleet_db, tid)["state"] == "cancelled", what="cancelled")
    assert [c[0] for c in tasks.calls] == ["create", "cancel"]


def test_a_database_outage_loses_nothing_and_duplicates_nothing(
    pg_private: Any, ccm_home: Path, monkeypatch: pytest.MonkeyPatch, jobs: list[FleetJob]
) -> None:
    from ccm_agentd.fleet import migrations

    cluster: PgCluster = pg_private()
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        migrations.migrate(conn)
    dsn = cluster.dsn()
    job, _ = make_job(jobs, ccm_home, dsn, monkeypatch)
    append_records(ccm_home, SID, 5)
    pump(job, ccm_home, lambda: len(db_events(dsn)) == 5)
    cluster.stop()
    append_records(ccm_home, SID, 20)  # hooks go on: they never touch the database
    for _ in range(5):
        wake(job, ccm_home, frozenset({SID}))
        time.sleep(0.1)
    assert not job.health()["connected"]
    cluster.start()
    pump(job, ccm_home, lambda: len(db_events(dsn)) == 25, timeout=60, what="catch-up after the outage")
    assert [s for _, _, s in db_events(dsn)] == log_seqs(ccm_home, SID)
    assert job.health()["reconnects"] == 2


def test_a_partitioned_machine_stops_its_agent_before_its_lease_can_expire_then_gives_the_task_back(
    fleet_db: str,
    pg_cluster: PgCluster,
    ccm_home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    jobs: list[FleetJob],
) -> None:
    tid = add_task(fleet_db)
    lease_s = 6.0
    with tcp_proxy(("127.0.0.1", pg_cluster.port)) as proxy:
        dsn = dsn_with(fleet_db, host="127.0.0.1", port=proxy.port, sslmode="disable")
        job, tasks = make_job(
            jobs, ccm_home, dsn, monkeypatch, projects={"web": str(tmp_path)}, lease_s=lease_s
        )
        pump(job, ccm_home, lambda: task_row(fleet_db, tid)["state"] == "starting")
        (local_id,) = tasks.tasks
        tasks.set(local_id, "running", session_id=SID)
        pump(job, ccm_home, lambda: task_row(fleet_db, tid)["state"] == "running")
        proxy.pause()  # packets still acknowledged, answers never come
        paused_at = time.monotonic()
        pump(job, ccm_home, lambda: tasks.calls[-1][0] == "stop", timeout=3 * lease_s, what="self-fencing")
        stopped_after = time.monotonic() - paused_at
        lease_until = task_row(fleet_db, tid)["lease_until"]
        assert stopped_after < lease_s  # before the lease could expire (it is counted from the last renewal)
        assert time.time() < lease_until.timestamp()
        assert "self-fenced" in tasks.calls[-1][2]
        assert fence.read_lease(fence.lease_path(str(ccm_home), tid)).status == fence.FENCED  # type: ignore[union-attr]
        proxy.resume()
        pump(job, ccm_home, lambda: task_row(fleet_db, tid)["attempt"] == 2, timeout=30, what="reclaimed")
    states = sql(
        fleet_db,
        "SELECT to_state, attempt, reason FROM ccm.task_transitions WHERE task_id = %s ORDER BY id",
        tid,
    )
    # Given back (if its lease had not expired yet) or expired, then claimed again as attempt 2.
    at = next(i for i, (state, attempt, _) in enumerate(states) if (state, attempt) == ("claimed", 2))
    before = states[at - 1]
    assert (before[0] == "queued" and "self-fenced" in before[2]) or "expired" in states[at][2], states


def test_a_machine_that_finds_its_lease_taken_stops_its_agent_and_its_writes_are_refused(
    fleet_db: str, ccm_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, jobs: list[FleetJob]
) -> None:
    from ccm_agentd.fleet import claiming
    from ccm_hooks.statedir.fleetconf import FleetSettings

    tid = add_task(fleet_db)
    job, tasks = make_job(jobs, ccm_home, fleet_db, monkeypatch, projects={"web": str(tmp_path)}, lease_s=5.0)
    pump(job, ccm_home, lambda: task_row(fleet_db, tid)["state"] == "starting")
    (_local_id,) = tasks.tasks
    # As if this machine had been frozen past its lease: it expires and b takes attempt 2.
    sql(fleet_db, "UPDATE ccm.tasks SET lease_until = now() - interval '1 s' WHERE id = %s", tid)
    with psycopg.connect(fleet_db, autocommit=True) as conn:
        (t,) = claiming.claim(conn, FleetSettings(system="b"), {"web": 1}, 1)
    assert t["attempt"] == 2
    pump(job, ccm_home, lambda: tasks.calls[-1][0] == "stop", timeout=15, what="the agent stopped")
    assert "lost its lease" in tasks.calls[-1][2]
    lease = fence.read_lease(fence.lease_path(str(ccm_home), tid))
    assert (
        lease is None or lease.status == fence.LOST
    )  # lost (the wrapper kills), or forgotten once it is gone
    row = task_row(fleet_db, tid)
    assert (row["claimed_by"], row["attempt"], row["state"]) == (
        "b",
        2,
        "claimed",
    )  # a's failure did not land


def test_after_a_crash_the_tasks_the_database_says_it_holds_are_adopted(
    fleet_db: str, ccm_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, jobs: list[FleetJob]
) -> None:
    tid = add_task(fleet_db)
    job, tasks = make_job(jobs, ccm_home, fleet_db, monkeypatch, projects={"web": str(tmp_path)})
    pump(job, ccm_home, lambda: task_row(fleet_db, tid)["state"] == "starting")
    job.close()
    jobs.remove(job)
    fence.LeaseFiles(str(ccm_home)).forget(tid)  # killed between the claim's commit and its lease file
    again, _ = make_job(jobs, ccm_home, fleet_db, monkeypatch, local=tasks, projects={"web": str(tmp_path)})
    pump(again, ccm_home, lambda: [c[0] for c in tasks.calls] == ["create", "create"], what="adopted")
    assert len(tasks.tasks) == 1  # the same local task: create is idempotent per attempt
    assert fence.read_lease(fence.lease_path(str(ccm_home), tid)).status == fence.HELD  # type: ignore[union-attr]


def test_a_task_that_ends_while_the_database_is_down_is_reported_later_not_fenced(
    pg_private: Any, ccm_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, jobs: list[FleetJob]
) -> None:
    from ccm_agentd.fleet import migrations

    cluster: PgCluster = pg_private()
    dsn = cluster.dsn()
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrations.migrate(conn)
    tid = add_task(dsn)
    job, tasks = make_job(jobs, ccm_home, dsn, monkeypatch, projects={"web": str(tmp_path)}, lease_s=6.0)
    pump(job, ccm_home, lambda: task_row(dsn, tid)["state"] == "starting")
    (local_id,) = tasks.tasks
    tasks.set(local_id, "running", session_id=SID)
    pump(job, ccm_home, lambda: task_row(dsn, tid)["state"] == "running")
    cluster.stop()
    tasks.set(local_id, "done", reason="done marker", result={"turns": 1})
    deadline = time.monotonic() + 7.0  # past the point a running agent would be fenced (2/3 of 6 s)
    while time.monotonic() < deadline:
        wake(job, ccm_home)
        time.sleep(0.2)
    assert [c[0] for c in tasks.calls] == ["create"]  # nothing stopped, nothing given back
    cluster.start()
    pump(job, ccm_home, lambda: task_row(dsn, tid)["state"] == "done", timeout=60, what="the end reported")
    assert task_row(dsn, tid)["attempt"] == 1


def test_a_claim_whose_local_task_was_never_made_is_adopted_after_a_restart(
    fleet_db: str, ccm_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, jobs: list[FleetJob]
) -> None:
    tid = add_task(fleet_db)
    job, _tasks = make_job(jobs, ccm_home, fleet_db, monkeypatch, projects={"web": str(tmp_path)})
    pump(job, ccm_home, lambda: task_row(fleet_db, tid)["state"] == "starting")
    job.close()
    jobs.remove(job)
    # As if killed after the claim and its lease file, before the local task was made.
    leases = fence.LeaseFiles(str(ccm_home))
    lease = leases.snapshot()[tid]
    leases.forget(tid)
    leases.renewed(tid, lease.attempt, fence.boot_clock(), lease.lease_until, system="a", lease_s=60,
                   project="web")  # fmt: skip
    fresh = FakeTasks()
    again, _ = make_job(jobs, ccm_home, fleet_db, monkeypatch, local=fresh, projects={"web": str(tmp_path)})
    pump(again, ccm_home, lambda: [c[0] for c in fresh.calls] == ["create"], what="made after the restart")
    assert fence.LeaseFiles(str(ccm_home)).snapshot()[tid].local_id == f"L{tid}-1"
