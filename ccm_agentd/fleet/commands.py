"""``ccm-agentd fleet init`` (apply the schema) and ``ccm-agentd fleet status [--json]`` (the connection,
this system, the shipping backlog and lag). The DSN is never printed: host, port, database and user are."""

from __future__ import annotations

import json
import os
import time
from typing import Any

from ccm_agentd.fleet import connection, migrations, shipping
from ccm_hooks import fastjson, paths
from ccm_hooks.errors import CcmError
from ccm_hooks.statedir import fleetconf, fleetdb
from ccm_hooks.statedir.timefmt import format_age


def ccm_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ccm")
    except PackageNotFoundError:
        return "unknown"


def _where(dsn: str) -> str:
    d = fleetconf.describe(dsn)
    return f"{d['user']}@{d['host']}:{d['port']}/{d['dbname']}"


def _settings(root: str) -> fleetconf.FleetSettings:
    # init works before [fleet] exists (the DSN may come from the environment); status needs it.
    return fleetconf.settings_from(fleetconf.fleet_table(root) or {}, root)


def init_cmd() -> int:
    root = paths.state_dir()
    s = _settings(root)
    dsn = fleetconf.load_dsn(s)
    warning = fleetconf.pooler_warning(dsn)
    with fleetdb.connect_cli(dsn, "ccm-agentd fleet init") as conn:
        try:
            out = migrations.migrate(conn)
        except Exception as exc:
            import psycopg

            if isinstance(exc, psycopg.errors.InsufficientPrivilege):
                raise CcmError(
                    f"the fleet database refused ({connection.error_line(exc)}): run `fleet init` as a role "
                    "that may create schemas and roles (Supabase: postgres; spec/supabase.md)"
                ) from None
            raise
    if out.applied:
        print(f"fleet database {_where(dsn)}: applied {', '.join(out.applied)}; schema version {out.current}")
    else:
        print(f"fleet database {_where(dsn)}: schema version {out.current}, nothing to apply")
    if out.changed:
        print(
            f"warning: applied migrations differ from this ccm's files: {', '.join(out.changed)} "
            "(a released migration is never edited)"
        )
    if out.unknown:
        print(
            f"warning: the database has migrations this ccm does not know ({out.unknown}): upgrade ccm here"
        )
    if warning:
        print(f"warning: {warning}")
    return 0


def local_backlog(root: str, fleet_id: str | None) -> dict[str, Any]:
    """What this machine has not shipped yet, from the logs and the cursors: bytes, sessions, and the age
    of the oldest unshipped record (the lag a reader of the fleet sees at worst)."""
    outbox = shipping.Outbox(root, fleet_id or "")
    behind = 0
    sessions = 0
    oldest: float | None = None
    for sid in outbox.moved():
        path = paths.events_path(root, sid)
        cursor = outbox.cursors.get(sid, shipping.Cursor())
        try:
            size = os.stat(path).st_size
            with open(path, "rb") as fh:
                fh.seek(cursor.offset if cursor.offset <= size else 0)
                first = fh.readline()
        except OSError:
            continue
        if size <= cursor.offset or not first.endswith(b"\n"):
            continue
        behind += size - cursor.offset
        sessions += 1
        try:
            ts = shipping._ts(fastjson.loads(first).get("ts"))
        except (ValueError, AttributeError):
            ts = None
        if ts is not None:
            oldest = ts.timestamp() if oldest is None else min(oldest, ts.timestamp())
    return {"bytes": behind, "sessions": sessions, "lag_s": None if oldest is None else time.time() - oldest}


def status_cmd(as_json: bool) -> int:
    root = paths.state_dir()
    s = fleetconf.load_settings(root)
    dsn = fleetconf.load_dsn(s)
    info: dict[str, Any] = {
        "system": s.system, "labels": s.labels, "projects": s.projects,
        "database": fleetconf.describe(dsn), "warning": fleetconf.pooler_warning(dsn),
    }  # fmt: skip
    try:
        conn = fleetdb.connect_cli(dsn, "ccm-agentd fleet status")
    except CcmError as exc:
        info.update(connected=False, error=str(exc), backlog=local_backlog(root, _cursor_fleet(root)))
        _print(info, as_json)
        return 1
    with conn:
        info["connected"] = True
        info["server"] = conn.info.parameter_status("server_version")
        info["tls"] = bool(conn.pgconn.ssl_in_use)
        info["listen"] = connection.probe_listen(conn)
        info["schema"] = {"version": migrations.version(conn), "needed": migrations.latest()}
        fleet_id = None
        if info["schema"]["version"]:
            row = conn.execute("SELECT fleet_id::text FROM ccm.meta").fetchone()
            fleet_id = str(row[0]) if row else None
            info.update(_fleet_facts(conn, s.system))
        info["backlog"] = local_backlog(root, fleet_id)
    _print(info, as_json)
    return 0


def _cursor_fleet(root: str) -> str | None:
    try:
        with open(shipping.cursors_path(root), "rb") as fh:
            data = fastjson.loads(fh.read())
    except (OSError, ValueError):
        return None
    return str(data.get("fleet_id")) if isinstance(data, dict) else None


def _fleet_facts(conn: Any, system: str) -> dict[str, Any]:
    from psycopg.rows import dict_row

    with conn.cursor(row_factory=dict_row) as cur:
        me = cur.execute(
            "SELECT system, labels, projects, version, agents, max_agents,"
            " extract(epoch FROM now() - heartbeat_at)::float AS heartbeat_age_s"
            " FROM ccm.systems WHERE system = %s",
            (system,),
        ).fetchone()
        systems = cur.execute("SELECT count(*) AS n FROM ccm.systems").fetchone()
        tasks = cur.execute(
            "SELECT state, count(*) AS n FROM ccm.tasks GROUP BY state ORDER BY state"
        ).fetchall()
        held = cur.execute(
            "SELECT count(*) AS n FROM ccm.tasks"
            " WHERE claimed_by = %s AND state IN ('claimed', 'starting', 'running')",
            (system,),
        ).fetchone()
    return {"this_system": me, "systems": systems["n"] if systems else 0,
            "tasks": {r["state"]: r["n"] for r in tasks}, "held": held["n"] if held else 0}  # fmt: skip


def _print(info: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(info, indent=2, default=str))
        return
    db = info["database"]
    where = f"{db['user']}@{db['host']}:{db['port']}/{db['dbname']}"
    if not info.get("connected"):
        print(f"fleet database {where}: NOT CONNECTED: {info.get('error')}")
    else:
        tls = "TLS" if info["tls"] else "no TLS"
        print(f"fleet database {where} (PostgreSQL {info['server']}, sslmode {db['sslmode']}, {tls})")
        schema = info["schema"]
        state = "current" if schema["version"] >= schema["needed"] else "run `ccm-agentd fleet init`"
        print(f"schema: version {schema['version']} ({state})")
        print(
            "LISTEN: ok" if info["listen"] else "LISTEN: notifications do not arrive (a transaction pooler?)"
        )
    if info.get("warning"):
        print(f"warning: {info['warning']}")
    labels = ", ".join(f"{k}={v}" for k, v in sorted(info["labels"].items())) or "none"
    projects = ", ".join(sorted(info["projects"])) or "none"
    line = f"this system: {info['system']} (labels {labels}; projects {projects})"
    me = info.get("this_system")
    if info.get("connected") and info["schema"]["version"]:
        if me:
            line += f"; heartbeat {format_age(me['heartbeat_age_s'])} ago; holds {info['held']} task(s)"
        else:
            line += "; not in the database yet (is ccm-agentd running with [fleet]?)"
    print(line)
    if info.get("tasks") is not None:
        tasks = ", ".join(f"{n} {state}" for state, n in info["tasks"].items()) or "none"
        print(f"fleet: {info['systems']} system(s); tasks: {tasks}")
    b = info["backlog"]
    lag = (
        "nothing unshipped" if b["lag_s"] is None else f"oldest unshipped record {format_age(b['lag_s'])} old"
    )
    print(f"shipping: {b['bytes']} bytes behind in {b['sessions']} session(s); {lag}")
