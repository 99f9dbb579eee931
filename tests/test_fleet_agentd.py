"""The fleet through the real commands: ``ccm-agentd run`` processes as machines on one database,
``ccm-agentd fleet init|status``, ``ccm-hooks status|top --fleet``; without [fleet] nothing of it runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.agentdrun import BIN, Agentd, configure
from tests.claude_harness import wait_for
from tests.fleetrun import append_records, db_events, log_seqs, write_fleet_config
from tests.pgcluster import PgCluster, import_psycopg

psycopg = import_psycopg()

SA = "aaaaaaaa-0000-4000-8000-00000000000a"
SB = "bbbbbbbb-0000-4000-8000-00000000000b"


def run(home: Path, *args: str, tool: str = "ccm-hooks") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CCM_HOME": str(home)}
    env.pop("CCM_FLEET_DSN", None)
    return subprocess.run([str(BIN / tool), *args], capture_output=True, text=True, timeout=60, env=env)


def machine(made: list[Agentd], home: Path, dsn: str, system: str) -> Agentd:
    configure(home)
    write_fleet_config(home, dsn, system=system, heartbeat_s=1)
    d = Agentd(home, {"CCM_HOME": str(home)})
    made.append(d)
    return d


def test_init_applies_the_schema_once_and_status_never_shows_the_password(
    pg_cluster: PgCluster, pg_dsn: str, ccm_home: Path
) -> None:
    pg_cluster.execute(
        "DO $$ BEGIN CREATE ROLE fleetadmin LOGIN SUPERUSER PASSWORD 'hunter2-secret';"
        " EXCEPTION WHEN duplicate_object THEN NULL; END $$"
    )
    dsn = pg_dsn.replace("user=postgres", "user=fleetadmin password=hunter2-secret")
    write_fleet_config(ccm_home, dsn, system="lap")
    first = run(ccm_home, "fleet", "init", tool="ccm-agentd")
    assert first.returncode == 0, first.stderr
    assert "applied 001_schema, 002_queue, 003_security" in first.stdout
    again = run(ccm_home, "fleet", "init", tool="ccm-agentd")
    assert again.returncode == 0 and "nothing to apply" in again.stdout
    status = run(ccm_home, "fleet", "status", tool="ccm-agentd")
    assert status.returncode == 0, status.stderr
    assert "fleetadmin@" in status.stdout and "schema: version 3 (current)" in status.stdout
    assert "LISTEN: ok" in status.stdout and "this system: lap" in status.stdout
    info = json.loads(run(ccm_home, "fleet", "status", "--json", tool="ccm-agentd").stdout)
    assert info["connected"] and info["schema"] == {"version": 3, "needed": 3}
    for out in (first, again, status):
        assert "hunter2" not in out.stdout + out.stderr


def test_a_wide_dsn_file_or_an_unreachable_database_is_one_line(ccm_home: Path) -> None:
    write_fleet_config(ccm_home, "postgresql://me:pw@127.0.0.1:1/x", system="lap")
    (ccm_home / "fleet.dsn").chmod(0o644)
    out = run(ccm_home, "fleet", "status", tool="ccm-agentd")
    assert out.returncode == 1 and "chmod 600" in out.stderr and len(out.stderr.splitlines()) == 1
    (ccm_home / "fleet.dsn").chmod(0o600)
    out = run(ccm_home, "fleet", "init", tool="ccm-agentd")
    assert out.returncode == 1 and "cannot reach the fleet database me@127.0.0.1:1/x" in out.stderr
    assert "pw" not in out.stderr.replace("me@", "")


def test_two_daemons_mirror_two_systems_and_the_readers_see_both(
    fleet_db: str, tmp_path: Path, machines: list[Agentd]
) -> None:
    homes = {"a": tmp_path / "a" / ".ccm", "b": tmp_path / "b" / ".ccm"}
    for system, home in homes.items():
        machine(machines, home, fleet_db, system).start()
    append_records(homes["a"], SA, 30)
    append_records(homes["b"], SB, 20)
    want = sorted(
        [("a", SA, s) for s in log_seqs(homes["a"], SA)] + [("b", SB, s) for s in log_seqs(homes["b"], SB)]
    )
    wait_for(lambda: db_events(fleet_db) == want, timeout=30, what="both systems' records")
    shown = run(homes["a"], "status", "--fleet", "--json")
    assert shown.returncode == 0, shown.stderr
    assert sorted((s["system"], s["session_id"]) for s in json.loads(shown.stdout)) == [("a", SA), ("b", SB)]
    table = run(homes["b"], "status", "--fleet").stdout
    assert "SYSTEM" in table and SA[:8] in table and SB[:8] in table
    snap = run(homes["a"], "top", "--fleet", "-n", "1")
    assert snap.returncode == 0 and SA[:8] in snap.stdout and "b " in snap.stdout

    def fleet_health() -> dict[str, object]:
        h: dict[str, object] = json.loads((homes["a"] / "agentd" / "health.json").read_text())["jobs"][
            "fleet"
        ]
        return h

    health = wait_for(lambda: (h := fleet_health())["connected"] and h, timeout=30, what="a heartbeat")
    assert health["system"] == "a" and health["shipped"] == 30


def test_without_a_fleet_table_nothing_of_the_fleet_is_imported(ccm_home: Path) -> None:
    code = (
        "import sys; from ccm_agentd import daemon, panes; "
        "jobs = daemon.default_jobs(sys.argv[1], panes.Tmux(), lambda *a, **k: None); "
        "print('fleet' in [j.name for j in jobs], "
        "any(m.startswith(('ccm_agentd.fleet', 'psycopg')) for m in sys.modules))"
    )
    configure(ccm_home)
    out = subprocess.run(
        [sys.executable, "-c", code, str(ccm_home)], capture_output=True, text=True, timeout=60
    )
    assert out.stdout.split() == ["False", "False"], out.stderr
    write_fleet_config(ccm_home, "host=/nonexistent dbname=x", system="a")
    out = subprocess.run(
        [sys.executable, "-c", code, str(ccm_home)], capture_output=True, text=True, timeout=60
    )
    assert out.stdout.split() == ["True", "True"], out.stderr
