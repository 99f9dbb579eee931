"""The queue's protocol from a machine's side: claim, renew, report, heartbeat (spec/fleet.md#the-queue).

Thin calls to the SQL functions of ``sql/002_queue.sql``, where the rules live (and hold for any client):
``ccm.claim`` takes tasks with ``FOR UPDATE SKIP LOCKED`` and a lease, ``ccm.renew`` extends the leases a
machine still holds, ``ccm.report`` writes a state back only for the attempt (fencing token) named.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import datetime as dt

    import psycopg

    from ccm_hooks.statedir.fleetconf import FleetSettings

TASK_COLUMNS = (
    "id", "prompt", "project", "name", "priority", "on_system", "labels", "options", "max_attempts",
    "state", "reason", "attempt", "claimed_by", "lease_until", "cancel_requested_at", "created_at",
)  # fmt: skip


@dataclass(frozen=True)
class Renewed:
    task_id: str
    attempt: int
    lease_until: dt.datetime
    cancel_requested: bool


def _task(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in TASK_COLUMNS}


def claim(
    conn: psycopg.Connection[Any], s: FleetSettings, capacity: Mapping[str, int], limit: int
) -> list[dict[str, Any]]:
    """Claim up to ``limit`` tasks; ``capacity`` is the free slots per project this machine has a clone of."""
    if limit <= 0 or not any(n > 0 for n in capacity.values()):
        return []
    from psycopg.rows import dict_row

    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT * FROM ccm.claim(%s, %s::jsonb, %s::jsonb, %s, %s)",
            (s.system, json.dumps(s.labels), json.dumps(dict(capacity)), limit, s.lease_s),
        )
        return [_task(r) for r in cur.fetchall()]


def renew(
    conn: psycopg.Connection[Any], system: str, held: Mapping[str, int], lease_s: float
) -> dict[str, Renewed]:
    """Extend the leases of ``held`` ({task id: attempt}); those missing from the result are lost."""
    if not held:
        return {}
    ids = list(held)
    rows = conn.execute(
        "SELECT * FROM ccm.renew(%s, %s::text[], %s::integer[], %s)",
        (system, ids, [held[i] for i in ids], lease_s),
    ).fetchall()
    return {str(r[0]): Renewed(str(r[0]), int(r[1]), r[2], bool(r[3])) for r in rows}


def report(
    conn: psycopg.Connection[Any], system: str, task_id: str, attempt: int, state: str,
    reason: str | None = None, fields: Mapping[str, Any] | None = None,
) -> str | None:  # fmt: skip
    """Write attempt ``attempt``'s state back. The state written (``queued`` may become ``failed`` when no
    attempt is left), or None when the database refused it: a newer attempt holds the task."""
    row = conn.execute(
        "SELECT ccm.report(%s, %s, %s, %s, %s, %s::jsonb)",
        (system, task_id, attempt, state, reason, json.dumps(dict(fields or {}), default=str)),
    ).fetchone()
    return None if row is None or row[0] is None else str(row[0])


def held_by(conn: psycopg.Connection[Any], system: str) -> list[dict[str, Any]]:
    """The tasks this system holds in the database (after a restart: what to adopt or give back)."""
    from psycopg.rows import dict_row

    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT * FROM ccm.tasks WHERE claimed_by = %s AND state IN ('claimed', 'starting', 'running')"
            " ORDER BY claimed_at",
            (system,),
        )
        return [_task(r) for r in cur.fetchall()]


def cancel_requested(conn: psycopg.Connection[Any], ids: list[str]) -> set[str]:
    if not ids:
        return set()
    rows = conn.execute(
        "SELECT id FROM ccm.tasks WHERE id = ANY(%s::text[]) AND cancel_requested_at IS NOT NULL", (ids,)
    ).fetchall()
    return {str(r[0]) for r in rows}


def heartbeat(
    conn: psycopg.Connection[Any], s: FleetSettings, *, version: str, max_agents: int | None,
    agents: int, health: Mapping[str, Any], started_at: float,
) -> None:  # fmt: skip
    conn.execute(
        """
        INSERT INTO ccm.systems AS y (system, labels, projects, version, max_agents, agents, health,
                                      started_at, heartbeat_at)
        VALUES (%s, %s::jsonb, %s::text[], %s, %s, %s, %s::jsonb, to_timestamp(%s), now())
        ON CONFLICT (system) DO UPDATE
           SET labels = EXCLUDED.labels, projects = EXCLUDED.projects, version = EXCLUDED.version,
               max_agents = EXCLUDED.max_agents, agents = EXCLUDED.agents, health = EXCLUDED.health,
               started_at = EXCLUDED.started_at, heartbeat_at = now()
        """,
        (s.system, json.dumps(s.labels), sorted(s.projects), version, max_agents, agents,
         json.dumps(dict(health), default=str), started_at),
    )  # fmt: skip
