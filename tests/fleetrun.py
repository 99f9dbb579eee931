"""Helpers for the fleet's tests: a migrated database, config.toml's [fleet] and the DSN file, a stand-in
for the tasks job, driving a FleetJob's wake-ups, and writing session logs the way handlers do."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from ccm_agentd.fleet import migrations
from ccm_agentd.fleet.job import FleetJob, LocalTask
from ccm_agentd.jobs import Wake
from ccm_hooks import record, store
from ccm_hooks.statedir import reader
from tests.agentdrun import Agentd
from tests.claude_harness import wait_for
from tests.pgcluster import PgCluster

T = TypeVar("T")


@pytest.fixture
def machines() -> Iterator[list[Agentd]]:
    """The ccm-agentd processes a test starts as machines (it appends them); killed afterwards if running."""
    made: list[Agentd] = []
    yield made
    for d in made:
        if d.proc is not None and d.proc.poll() is None:
            d.kill()


@pytest.fixture(scope="session")
def fleet_template(pg_cluster: PgCluster) -> str:
    """A migrated database with machine roles a and b and a reader role dash, to copy per test."""
    import psycopg

    name = pg_cluster.create_database("fleet_tmpl")
    with psycopg.connect(pg_cluster.dsn(name), autocommit=True) as conn:
        migrations.migrate(conn)
        conn.execute("SELECT ccm.create_machine_role('a'), ccm.create_machine_role('b')")
        conn.execute(
            "DO $$ BEGIN CREATE ROLE dash LOGIN IN ROLE ccm_reader; "
            "EXCEPTION WHEN duplicate_object THEN NULL; END $$"
        )
    return name


@pytest.fixture
def fleet_db(pg_cluster: PgCluster, fleet_template: str) -> Iterator[str]:
    """A fresh migrated database (a copy of the template); the superuser's DSN."""
    name = pg_cluster.create_database("fleet")
    pg_cluster.drop_database(name)
    pg_cluster.execute(f'CREATE DATABASE "{name}" TEMPLATE "{fleet_template}"')
    yield pg_cluster.dsn(name)
    pg_cluster.drop_database(name)


def dsn_with(dsn: str, **changes: str | int) -> str:
    params = dict(p.split("=", 1) for p in dsn.split())
    params.update({k: str(v) for k, v in changes.items()})
    return " ".join(f"{k}={v}" for k, v in params.items())


def write_fleet_config(home: Path, dsn: str, system: str = "a", **settings: Any) -> None:
    """config.toml's [fleet] (replacing any) and the DSN file (0600)."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / "config.toml"
    text = path.read_text() if path.exists() else ""
    text = text.split("[fleet]")[0]
    lines = ["[fleet]", f'system = "{system}"']
    projects = settings.pop("projects", {})
    labels = settings.pop("labels", {})
    lines += [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
    if labels:
        lines.append("labels = { " + ", ".join(f'{k} = "{v}"' for k, v in labels.items()) + " }")
    if projects:
        lines.append("[fleet.projects]")
        lines += [f'{k} = "{v}"' for k, v in projects.items()]
    path.write_text(text + "\n".join(lines) + "\n")
    fd = os.open(home / "fleet.dsn", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(dsn + "\n")


@dataclass
class FakeTasks:
    """The tasks job as the fleet sees it: local tasks in memory, moved by the test."""

    max_agents: int = 2
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: list[tuple[str, str, str]] = field(default_factory=list)

    def watch_dir(self) -> str | None:
        return None

    def refresh(self, names: frozenset[str], rescan: bool) -> None:
        return None

    def create(self, row: Mapping[str, Any], clone: str, lease_file: str) -> str:
        local_id = f"L{row['id']}-{row['attempt']}"
        self.tasks.setdefault(
            local_id,
            {
                "state": "queued",
                "row": dict(row),
                "clone": clone,
                "lease": lease_file,
                "project": row["project"],
            },
        )
        self.calls.append(("create", local_id, ""))
        return local_id

    def get(self, local_id: str) -> LocalTask | None:
        t = self.tasks.get(local_id)
        if t is None:
            return None
        return LocalTask(t["state"], t.get("reason"), t.get("session_id"), t.get("result"))

    def set(self, local_id: str, state: str, **facts: Any) -> None:
        self.tasks[local_id].update(state=state, **facts)

    def stop(self, local_id: str, reason: str) -> None:
        self.calls.append(("stop", local_id, reason))
        self.set(local_id, "failed", reason=reason)

    def cancel(self, local_id: str, reason: str) -> None:
        self.calls.append(("cancel", local_id, reason))
        self.set(local_id, "cancelled", reason=reason)

    def active(self) -> list[str]:
        return [k for k, t in self.tasks.items() if t["state"] not in ("done", "failed", "cancelled")]

    def capacity(self, projects: Mapping[str, str]) -> tuple[dict[str, int], int | None, int]:
        running = len(self.active())
        return {p: self.max_agents - running for p in projects}, self.max_agents, running


def wake(
    job: FleetJob, root: Path, changed: frozenset[str] = frozenset(), rescan: bool = False
) -> float | None:
    sessions = {st["session_id"]: st for st in reader.load_statuses(str(root))}
    return job.wake(Wake(time.time(), sessions, changed, {}, rescan))


def pump(
    job: FleetJob, root: Path, until: Callable[[], T | None], timeout: float = 30.0, what: str = "it"
) -> T:
    """Wake the job as the daemon would (each time its descriptor is readable, or every 0.1 s) until
    ``until()`` holds."""

    def step() -> T | None:
        wake(job, root, rescan=True)
        return until()

    return wait_for(step, timeout=timeout, interval=0.05, what=what)


def append_records(root: Path, session_id: str, n: int, event: str = "PostToolUse") -> None:
    """``n`` records through the handler's own store (locks, seq, status), as hooks would write them."""
    env = {"CLAUDE_PROJECT_DIR": "/work/proj"}
    for i in range(n):
        payload = {
            "session_id": session_id,
            "hook_event_name": event,
            "cwd": "/work/proj",
            "tool_name": "Bash",
            "tool_input": {"command": f"echo {i}"},
            "tool_use_id": f"t{i}",
        }
        store.record_event(str(root), payload, event, record.iso_utc(time.time()), env)


def db_events(dsn: str, system: str | None = None) -> list[tuple[str, str, int]]:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT system, session_id, seq FROM ccm.events WHERE %s::text IS NULL OR system = %s"
            " ORDER BY system, session_id, seq",
            (system, system),
        ).fetchall()
    return [(str(a), str(b), int(c)) for a, b, c in rows]


def log_seqs(root: Path, session_id: str) -> list[int]:
    return [r["seq"] for r in reader.read_events(str(root / "events" / f"{session_id}.jsonl"))]
