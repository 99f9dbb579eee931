"""The fleet database as its clients see it: connecting, and the queries behind ``status --fleet``,
``top --fleet``, ``task list --fleet``, ``task add --fleet`` and ``task cancel --fleet`` (spec/fleet.md).

Imports psycopg only when called: the CLI imports this module only for ``--fleet``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ccm_hooks.errors import CcmError
from ccm_hooks.statedir import fleetconf

if TYPE_CHECKING:
    import psycopg

CONNECT_TIMEOUT_S = 5
STATEMENT_TIMEOUT_MS = 30_000
# A peer gone silent is noticed in ~20 s by keepalives, and unacknowledged data fails after 15 s.
KEEPALIVE: dict[str, Any] = {
    "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3,
    "tcp_user_timeout": 15_000,
}  # fmt: skip
ACTIVE = ("queued", "claimed", "starting", "running")


def connect(dsn: str, app: str, timeout: float = CONNECT_TIMEOUT_S) -> psycopg.Connection[Any]:
    """An autocommit connection: TLS required off this machine (fleetconf.effective_dsn), a connect timeout,
    keepalives, a server-side statement timeout. ``psycopg.OperationalError`` if it cannot be reached."""
    import psycopg

    conn = psycopg.connect(
        fleetconf.effective_dsn(dsn), autocommit=True, connect_timeout=max(2, int(timeout)),
        application_name=app[:63], **KEEPALIVE,
    )  # fmt: skip
    try:
        conn.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")
    except BaseException:
        conn.close()
        raise
    return conn


def connect_cli(dsn: str, app: str) -> psycopg.Connection[Any]:
    """For commands: a failure to connect is one line saying where it tried (never the password)."""
    import psycopg

    try:
        return connect(dsn, app)
    except psycopg.OperationalError as exc:
        where = fleetconf.describe(dsn)
        text = str(exc).strip()
        first = text.splitlines()[-1] if text else type(exc).__name__
        at = f"{where['user']}@{where['host']}:{where['port']}/{where['dbname']}"
        raise CcmError(f"cannot reach the fleet database {at}: {first}") from None


def open_fleet(root: str, app: str) -> tuple[fleetconf.FleetSettings, psycopg.Connection[Any]]:
    """This machine's settings and a connection, or CcmError saying what to set up."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise CcmError("--fleet needs the fleet extra: pip install 'ccm[fleet]'") from None
    s = fleetconf.load_settings(root)
    return s, connect_cli(fleetconf.load_dsn(s), app)


def _rows(conn: psycopg.Connection[Any], sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    import psycopg
    from psycopg.rows import dict_row

    try:
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(sql.encode(), args)
            return cur.fetchall()
    except psycopg.errors.UndefinedTable:
        raise CcmError("the fleet database has no ccm schema yet: run `ccm-agentd fleet init`") from None


def sessions(conn: psycopg.Connection[Any], limit: int = 500) -> list[dict[str, Any]]:
    """Every system's sessions, newest first: each status as its machine wrote it, plus ``system``."""
    rows = _rows(conn, "SELECT system, status FROM ccm.sessions ORDER BY updated_at DESC NULLS LAST LIMIT %s",
                 (limit,))  # fmt: skip
    return [{**r["status"], "system": r["system"]} for r in rows]


def systems(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    return _rows(
        conn,
        "SELECT system, labels, projects, version, max_agents, agents, health, heartbeat_at,"
        " extract(epoch FROM now() - heartbeat_at)::float AS heartbeat_age_s"
        " FROM ccm.systems ORDER BY system",
    )


def tasks(conn: psycopg.Connection[Any], state: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
    """Tasks, the active ones first (by priority, then age), then the recently finished."""
    return _rows(
        conn,
        "SELECT id, name, prompt, project, state, reason, priority, on_system, labels, attempt, max_attempts,"
        " claimed_by, lease_until, local_id, session_id, session_state, result, created_at, created_by,"
        " updated_at, finished_at FROM ccm.tasks WHERE %s::text IS NULL OR state = %s"
        " ORDER BY state IN ('done', 'failed', 'cancelled'), CASE WHEN finished_at IS NULL"
        " THEN -priority END, coalesce(finished_at, created_at) DESC LIMIT %s",
        (state, state, limit),
    )


def transitions(conn: psycopg.Connection[Any], task_id: str) -> list[dict[str, Any]]:
    return _rows(
        conn,
        "SELECT at, from_state, to_state, attempt, system, reason, by_role FROM ccm.task_transitions"
        " WHERE task_id = %s ORDER BY id",
        (task_id,),
    )


def add_task(
    conn: psycopg.Connection[Any], prompt: str, project: str, *, name: str | None = None, priority: int = 0,
    on_system: str | None = None, labels: Mapping[str, str] | None = None,
    options: Mapping[str, Any] | None = None, max_attempts: int | None = None,
) -> str:  # fmt: skip
    """Queue a task for the whole fleet; its id."""
    if not fleetconf.NAME_RE.fullmatch(project):
        raise CcmError(f"{project!r} is not a project name (letters, digits, _ . -)")
    if on_system is not None and not fleetconf.NAME_RE.fullmatch(on_system):
        raise CcmError(f"--on {on_system!r} is not a system name")
    rows = _rows(
        conn,
        "INSERT INTO ccm.tasks (prompt, project, name, priority, on_system, labels, options, max_attempts)"
        " VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s::jsonb, coalesce(%s, 3)) RETURNING id",
        (prompt, project, name, priority, on_system, json.dumps(dict(labels or {})),
         json.dumps(dict(options or {})), max_attempts),
    )  # fmt: skip
    return str(rows[0]["id"])


def cancel_task(conn: psycopg.Connection[Any], task_id: str) -> str:
    """Cancel a fleet task: its state afterwards (cancelled, or the state of a held one, which its machine
    will end). CcmError if there is no such task."""
    rows = _rows(conn, "SELECT ccm.cancel(%s) AS state", (task_id,))
    if not rows or rows[0]["state"] is None:
        raise CcmError(f"no fleet task {task_id!r}; `ccm-hooks task list --fleet` lists them")
    return str(rows[0]["state"])
