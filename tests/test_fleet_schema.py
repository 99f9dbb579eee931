"""The fleet's schema on a real PostgreSQL: migrations, the queue's protocol (claims, leases, fencing) and
row-level security, driven through the SQL functions the daemon calls (spec/fleet.md)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from ccm_agentd.fleet import claiming, migrations
from ccm_hooks.statedir.fleetconf import FleetSettings
from tests.pgcluster import PgCluster, import_psycopg

psycopg = import_psycopg()


@pytest.fixture
def db(fleet_db: str) -> str:
    """A migrated database with machine roles for systems a and b, and a reader role dash."""
    return fleet_db


def connect(pg_cluster: PgCluster, dsn: str, user: str = "postgres") -> psycopg.Connection[Any]:
    dbname = dict(p.split("=") for p in dsn.split())["dbname"]
    return psycopg.connect(pg_cluster.dsn(dbname, user), autocommit=True)


def settings(system: str, lease_s: float = 60.0, **kw: Any) -> FleetSettings:
    return FleetSettings(system=system, lease_s=lease_s, **kw)


def add(conn: psycopg.Connection[Any], n: int = 1, project: str = "web", **cols: Any) -> list[str]:
    ids = []
    for i in range(n):
        names = ["prompt", "project", *cols]
        row = conn.execute(
            f"INSERT INTO ccm.tasks ({', '.join(names)}) VALUES ({', '.join(['%s'] * len(names))})"
            " RETURNING id",
            [f"task {i}", project, *cols.values()],
        ).fetchone()
        assert row is not None
        ids.append(str(row[0]))
        time.sleep(0.001)  # distinct created_at: FIFO order is observable
    return ids


def transitions(conn: psycopg.Connection[Any], task_id: str) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT from_state, to_state, attempt, system, reason FROM ccm.task_transitions WHERE task_id = %s"
        " ORDER BY id",
        (task_id,),
    ).fetchall()


def task(conn: psycopg.Connection[Any], task_id: str) -> dict[str, Any]:
    from psycopg.rows import dict_row

    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute("SELECT * FROM ccm.tasks WHERE id = %s", (task_id,)).fetchone()
    assert row is not None
    return row


# --- migrations ------------------------------------------------------------------------------------------


def test_migrations_from_empty_then_rerun_changes_nothing(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert migrations.version(conn) == 0
        first = migrations.migrate(conn)
        assert first.applied == [f"{m.version:03d}_{m.name}" for m in migrations.available()]
        assert first.current == migrations.latest() and not first.changed and not first.unknown
        again = migrations.migrate(conn)
        assert again.applied == [] and again.current == migrations.latest()
        rows = conn.execute("SELECT version FROM ccm.migrations ORDER BY version").fetchall()
        assert [r[0] for r in rows] == [m.version for m in migrations.available()]


def test_two_machines_migrating_at_once_apply_each_migration_once(pg_dsn: str) -> None:
    outcomes: list[migrations.Outcome] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def run() -> None:
        try:
            with psycopg.connect(pg_dsn, autocommit=True) as conn:
                barrier.wait()
                outcomes.append(migrations.migrate(conn))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    applied = [name for o in outcomes for name in o.applied]
    assert sorted(applied) == sorted(f"{m.version:03d}_{m.name}" for m in migrations.available())
    assert all(o.current == migrations.latest() for o in outcomes)


def test_a_failed_migration_leaves_nothing_behind(pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = [*migrations.available(), migrations.Migration(999, "broken", "SELECT no_such_function();")]
    monkeypatch.setattr(migrations, "available", lambda: broken)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.UndefinedFunction):
            migrations.migrate(conn)
        assert migrations.version(conn) == 0
        assert conn.execute("SELECT to_regclass('ccm.tasks')").fetchone() == (None,)


def test_an_edited_migration_is_reported_not_rerun(pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        migrations.migrate(conn)
        edited = [
            migrations.Migration(m.version, m.name, m.sql + "\n-- edited") for m in migrations.available()
        ]
        monkeypatch.setattr(migrations, "available", lambda: edited[:1])
        out = migrations.migrate(conn)
        assert out.applied == [] and out.changed == ["001_schema"]
        assert out.unknown == [m.version for m in edited[1:]]


# --- the queue -------------------------------------------------------------------------------------------


def test_a_row_with_only_a_prompt_and_a_project_is_a_task(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("INSERT INTO ccm.tasks (prompt, project) VALUES ('fix the tests', 'web')")
        t = task(conn, str(conn.execute("SELECT id FROM ccm.tasks").fetchone()[0]))  # type: ignore[index]
        assert t["state"] == "queued" and t["attempt"] == 0 and t["max_attempts"] == 3
        assert t["labels"] == {} and t["options"] == {} and t["priority"] == 0
        assert transitions(conn, t["id"]) == [(None, "queued", 0, None, None)]
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("INSERT INTO ccm.tasks (prompt, project) VALUES ('', 'web')")
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("INSERT INTO ccm.tasks (prompt, project) VALUES ('x', '../etc')")


def test_claims_follow_priority_then_fifo_and_respect_projects_labels_and_systems(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        low, high = add(conn, 2)
        conn.execute("UPDATE ccm.tasks SET priority = 5 WHERE id = %s", (high,))
        (gpu,) = add(conn, 1, labels='{"gpu": "yes"}')
        (only_b,) = add(conn, 1, on_system="b")
        (other,) = add(conn, 1, project="api")
        got = claiming.claim(conn, settings("a"), {"web": 10}, 10)
        assert [t["id"] for t in got] == [high, low]  # not gpu (a has no such label), not b's, not api
        got = claiming.claim(conn, settings("b", labels={"gpu": "yes"}), {"web": 10, "api": 1}, 10)
        assert [t["id"] for t in got] == [gpu, only_b, other]
        assert all(t["state"] == "claimed" and t["attempt"] == 1 and t["claimed_by"] == "b" for t in got)


def test_capacity_per_project_bounds_a_claim(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        add(conn, 3, project="web")
        add(conn, 3, project="api")
        got = claiming.claim(conn, settings("a"), {"web": 1, "api": 2}, 10)
        assert sorted(t["project"] for t in got) == ["api", "api", "web"]
        assert claiming.claim(conn, settings("a"), {"web": 0}, 10) == []


def test_machines_claiming_at_once_never_share_a_task(pg_cluster: PgCluster, db: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        ids = add(conn, 40)
    got: dict[str, list[str]] = {"a": [], "b": []}
    barrier = threading.Barrier(2)

    def worker(system: str) -> None:
        with connect(pg_cluster, db, f"ccm_m_{system}") as conn:
            barrier.wait()
            while True:
                claimed = claiming.claim(conn, settings(system), {"web": 3}, 3)
                if not claimed:
                    return
                got[system].extend(t["id"] for t in claimed)

    threads = [threading.Thread(target=worker, args=(s,)) for s in got]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(got["a"] + got["b"]) == sorted(ids)
    assert not set(got["a"]) & set(got["b"])
    assert got["a"] and got["b"]


def test_a_lease_is_renewed_while_held_and_lost_once_expired(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        (tid,) = add(conn)
        claiming.claim(conn, settings("a", lease_s=1.0), {"web": 1}, 1)
        renewed = claiming.renew(conn, "a", {tid: 1}, 1.0)
        assert renewed[tid].attempt == 1 and not renewed[tid].cancel_requested
        assert claiming.renew(conn, "a", {tid: 2}, 1.0) == {}  # not the attempt it holds
        assert claiming.renew(conn, "b", {tid: 1}, 1.0) == {}  # not b's
        assert claiming.claim(conn, settings("b"), {"web": 1}, 1) == []  # held: nobody else may take it
        time.sleep(1.2)
        assert claiming.renew(conn, "a", {tid: 1}, 1.0) == {}  # expired: too late to extend


def test_after_a_lease_expires_another_machine_takes_a_new_attempt_and_the_old_one_is_fenced(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        (tid,) = add(conn)
        claiming.claim(conn, settings("a", lease_s=0.5), {"web": 1}, 1)
        assert claiming.report(conn, "a", tid, 1, "running", fields={"session_id": "s-a"}) == "running"
        time.sleep(0.7)
        (t,) = claiming.claim(conn, settings("b"), {"web": 1}, 1)
        assert (t["attempt"], t["claimed_by"], t["state"]) == (2, "b", "claimed")
        assert "the lease of a (attempt 1) expired" in t["reason"]
        # Every write of the old attempt is refused: it changes nothing.
        assert claiming.report(conn, "a", tid, 1, "done", fields={"result": {"x": 1}}) is None
        assert claiming.report(conn, "b", tid, 1, "done") is None  # right machine, wrong attempt
        assert claiming.renew(conn, "a", {tid: 1}, 60) == {}
        assert claiming.report(conn, "b", tid, 2, "running") == "running"
        assert claiming.report(conn, "b", tid, 2, "done", "ok", {"result": {"turns": 1}}) == "done"
        assert claiming.report(conn, "b", tid, 2, "done") == "done"  # repeated after a crash: harmless
        assert claiming.report(conn, "b", tid, 2, "failed") is None  # ended is ended
        row = task(conn, tid)
        assert (row["state"], row["result"], row["session_id"]) == ("done", {"turns": 1}, None)
        assert [(f, to, n, s) for f, to, n, s, _ in transitions(conn, tid)] == [
            (None, "queued", 0, None),
            ("queued", "claimed", 1, "a"),
            ("claimed", "running", 1, "a"),
            ("running", "claimed", 2, "b"),
            ("claimed", "running", 2, "b"),
            ("running", "done", 2, "b"),
        ]


def test_a_task_whose_last_attempt_expired_fails_and_says_why(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        (tid,) = add(conn, max_attempts=1)
        claiming.claim(conn, settings("a", lease_s=0.3), {"web": 1}, 1)
        time.sleep(0.5)
        assert claiming.claim(conn, settings("b"), {"web": 1}, 1) == []
        row = task(conn, tid)
        assert row["state"] == "failed"
        assert (
            row["reason"].startswith("the lease of a (attempt 1 of 1) expired")
            and "no attempts left" in row["reason"]
        )


def test_giving_a_task_back_makes_it_claimable_as_a_new_attempt_until_none_is_left(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        (tid,) = add(conn, max_attempts=2)
        claiming.claim(conn, settings("a"), {"web": 1}, 1)
        assert (
            claiming.report(conn, "a", tid, 1, "queued", "a lost the database; stopped its agent") == "queued"
        )
        (t,) = claiming.claim(conn, settings("a"), {"web": 1}, 1)
        assert t["attempt"] == 2
        assert claiming.report(conn, "a", tid, 2, "queued", "again") == "failed"


def test_cancel_a_queued_task_at_once_and_a_held_one_through_its_holder(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        queued, held = add(conn, 2)
        conn.execute("UPDATE ccm.tasks SET priority = 1 WHERE id = %s", (held,))
        claiming.claim(conn, settings("a"), {"web": 1}, 1)
        conn.execute("LISTEN ccm_tasks")
        assert conn.execute("SELECT ccm.cancel(%s)", (queued,)).fetchone() == ("cancelled",)
        assert conn.execute("SELECT ccm.cancel(%s)", (held,)).fetchone() == ("claimed",)
        assert conn.execute("SELECT ccm.cancel('nope')").fetchone() == (None,)
        notes = [n.payload for n in conn.notifies(timeout=1, stop_after=1)]
        assert notes and '"cancel"' in notes[0] and held in notes[0]
        assert claiming.renew(conn, "a", {held: 1}, 60)[held].cancel_requested
        assert claiming.report(conn, "a", held, 1, "cancelled", "cancelled on request") == "cancelled"


def test_new_tasks_notify_listeners(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as listener, psycopg.connect(db, autocommit=True) as conn:
        listener.execute("LISTEN ccm_tasks")
        (tid,) = add(conn)
        notes = list(listener.notifies(timeout=2, stop_after=1))
        assert notes and tid in notes[0].payload and '"queued"' in notes[0].payload


# --- row-level security ----------------------------------------------------------------------------------


def test_a_machine_writes_only_its_own_rows(pg_cluster: PgCluster, db: str) -> None:
    with connect(pg_cluster, db, "ccm_m_a") as a:
        claiming.heartbeat(a, settings("a"), version="t", max_agents=2, agents=0, health={}, started_at=0)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            claiming.heartbeat(a, settings("b"), version="t", max_agents=2, agents=0, health={}, started_at=0)
        a.execute(
            "INSERT INTO ccm.events (system, session_id, seq, event, record) VALUES ('a','s',1,'X','{}')"
        )
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            a.execute(
                "INSERT INTO ccm.events (system, session_id, seq, event, record) VALUES ('b','s',1,'X','{}')"
            )
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            a.execute("INSERT INTO ccm.sessions (system, session_id, seq, status) VALUES ('b','s',1,'{}')")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            a.execute(
                "INSERT INTO ccm.task_transitions (task_id, to_state, attempt, by_role)"
                " VALUES ('x', 'done', 1, 'a')"
            )
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            a.execute("DELETE FROM ccm.events")
    with connect(pg_cluster, db, "ccm_m_b") as b:
        claiming.heartbeat(b, settings("b"), version="t", max_agents=2, agents=0, health={}, started_at=0)
        b.execute("INSERT INTO ccm.sessions (system, session_id, seq, status) VALUES ('b','s',1,'{}')")
    with connect(pg_cluster, db, "ccm_m_a") as a:
        # b's rows are invisible to a's UPDATE: nothing changes, no error.
        assert a.execute("UPDATE ccm.sessions SET state = 'hacked' WHERE system = 'b'").rowcount == 0
        assert a.execute("UPDATE ccm.systems SET version = 'hacked' WHERE system = 'b'").rowcount == 0
        assert a.execute("SELECT count(*) FROM ccm.sessions").fetchone() == (1,)  # but it may read them


def test_a_machine_cannot_take_or_rewrite_a_task_another_holds(pg_cluster: PgCluster, db: str) -> None:
    with connect(pg_cluster, db, "ccm_m_a") as a, connect(pg_cluster, db, "ccm_m_b") as b:
        (tid,) = add(a)  # any machine may queue a task
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            a.execute(
                "INSERT INTO ccm.tasks (prompt, project, state, claimed_by) VALUES ('x','web','claimed','a')"
            )
        claiming.claim(b, settings("b"), {"web": 1}, 1)
        assert a.execute("UPDATE ccm.tasks SET state = 'done' WHERE id = %s", (tid,)).rowcount == 0
        assert claiming.report(a, "a", tid, 1, "done") is None
        assert claiming.report(a, "b", tid, 1, "done") is None  # naming b does not make a b
        assert claiming.renew(a, "b", {tid: 1}, 60) == {}
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            b.execute("UPDATE ccm.tasks SET prompt = 'something else' WHERE id = %s", (tid,))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            b.execute("UPDATE ccm.tasks SET attempt = 5 WHERE id = %s", (tid,))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # its own claim, not claimable again
            b.execute("UPDATE ccm.tasks SET attempt = attempt + 1, state = 'claimed' WHERE id = %s", (tid,))
        assert claiming.report(b, "b", tid, 1, "done") == "done"
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            b.execute("UPDATE ccm.tasks SET state = 'queued' WHERE id = %s", (tid,))
        # Cancelling is open to every machine, through ccm.cancel.
        (other,) = add(a)
        assert b.execute("SELECT ccm.cancel(%s)", (other,)).fetchone() == ("cancelled",)
        assert transitions(a, other)[-1][4] == "cancelled by ccm_m_b before it was claimed"


def test_the_reader_role_reads_everything_and_writes_nothing(pg_cluster: PgCluster, db: str) -> None:
    with psycopg.connect(db, autocommit=True) as admin:
        (tid,) = add(admin)
    with connect(pg_cluster, db, "dash") as dash:
        assert dash.execute("SELECT count(*) FROM ccm.tasks").fetchone() == (1,)
        for sql in (
            "INSERT INTO ccm.tasks (prompt, project) VALUES ('x', 'web')",
            "UPDATE ccm.tasks SET priority = 9",
            "DELETE FROM ccm.tasks",
            "INSERT INTO ccm.events (system, session_id, seq, event, record) VALUES ('a','s',1,'X','{}')",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                dash.execute(sql)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            dash.execute("SELECT ccm.cancel(%s)", (tid,))


def test_a_role_outside_the_fleet_sees_nothing(pg_cluster: PgCluster, db: str) -> None:
    with psycopg.connect(db, autocommit=True) as admin:
        admin.execute(
            "DO $$ BEGIN CREATE ROLE stranger LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$"
        )
    with connect(pg_cluster, db, "stranger") as s, pytest.raises(psycopg.errors.InsufficientPrivilege):
        s.execute("SELECT * FROM ccm.tasks")
