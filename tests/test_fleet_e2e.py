"""The fleet end to end: real Claude Code sessions in tmux against the scripted Messages API, two ccm-agentd
processes with two state dirs acting as two machines on one PostgreSQL (spec/fleet.md)."""

from __future__ import annotations

import itertools
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from tests.agentdrun import Agentd, configure, start_in_tmux
from tests.claude_harness import TmuxServer, seed_claude_json, submit, wait_for, wait_idle
from tests.fakeapi import FakeAnthropic, text, tool_use
from tests.fleetrun import db_events, write_fleet_config
from tests.hookrun import install_hooks, read_log
from tests.pgcluster import PgCluster, import_psycopg

psycopg = import_psycopg()
pytestmark = [pytest.mark.e2e, pytest.mark.tmux]


def steps_responder(steps: int, command: str = "echo step") -> Any:
    """Each conversation runs ``steps`` Bash calls, then says it is done."""

    def respond(body: dict[str, Any]) -> Any:
        done = sum(
            1 for m in body.get("messages", []) if isinstance(m.get("content"), list)
            for b in m["content"] if isinstance(b, dict) and b.get("type") == "tool_result"
        )  # fmt: skip
        if done < steps:
            return [tool_use("Bash", {"command": f"{command} {done + 1}", "description": f"step {done + 1}"})]
        return [text(f"All {steps} steps done.")]

    return respond


def machine(made: list[Agentd], home: Path, dsn: str, system: str) -> Agentd:
    from ccm_hooks.commands import shim

    configure(home)
    shim.write_shim(str(home))  # the hooks of sessions with this CCM_HOME run it
    write_fleet_config(home, dsn, system=system)
    d = Agentd(home, {"CCM_HOME": str(home)})
    made.append(d)
    return d.start()


def local_log(home: Path) -> list[tuple[str, dict[str, Any]]]:
    return [(p.stem, r) for p in (home / "events").glob("*.jsonl") for r in read_log(home, p.stem)]


def local_records(home: Path) -> list[tuple[str, int]]:
    return sorted((sid, r["seq"]) for sid, r in local_log(home))


def shipped(dsn: str, system: str) -> list[tuple[str, int]]:
    return [(sid, seq) for _, sid, seq in db_events(dsn, system)]


def test_two_machines_sessions_arrive_once_in_seq_order_and_status_fleet_shows_both(
    claude_bin: str, fake_api: FakeAnthropic, fleet_db: str, tmp_path: Path, tmux_server: TmuxServer,
    machines: list[Agentd],
) -> None:  # fmt: skip
    fake_api.responder = steps_responder(3)
    homes = {s: tmp_path / s / ".ccm" for s in ("a", "b")}
    for system, home in homes.items():
        machine(machines, home, fleet_db, system)
    panes = {}
    projects = {s: tmp_path / f"project-{s}" for s in homes}
    for project in projects.values():
        project.mkdir()
        install_hooks(project)
        # Both trusted before either claude starts: a running claude rewrites ~/.claude.json, and a seed
        # written meanwhile may be lost (2.1.328 then asks whether to trust project-b).
        seed_claude_json(os.environ["HOME"], project)
    for system, home in homes.items():
        project = projects[system]
        panes[system] = start_in_tmux(
            tmux_server, claude_bin, project, fake_api, extra={"CCM_HOME": str(home)}
        )
        submit(panes[system], f"work on {system}")
    for system, pane in panes.items():
        wait_for(
            lambda s=system: any(r["event"] == "Stop" for _, r in local_log(homes[s])),
            timeout=90,
            what=f"{system}'s turn",
        )
        wait_idle(pane)
    for system, home in homes.items():
        wait_for(lambda s=system, h=home: shipped(fleet_db, s) == local_records(h), timeout=30,
                 what=f"every record of {system} in the database")  # fmt: skip
    with psycopg.connect(fleet_db, autocommit=True) as conn:
        # Arrived once (the key) and in seq order: within a session, shipping order is seq order.
        rows = conn.execute(
            "SELECT system, session_id, seq, shipped_at FROM ccm.events ORDER BY system, session_id, seq"
        ).fetchall()
    for (s1, sid1, seq1, t1), (s2, sid2, seq2, t2) in itertools.pairwise(rows):
        if (s1, sid1) == (s2, sid2):
            assert seq2 == seq1 + 1 and t2 >= t1
    out = json.loads(_ccm(homes["a"], "status", "--fleet", "--json"))
    assert {(s["system"], s["state"]) for s in out} == {("a", "idle"), ("b", "idle")}


def test_the_database_down_for_60s_while_sessions_work_costs_the_hooks_nothing_and_loses_nothing(
    claude_bin: str, fake_api: FakeAnthropic, pg_private: Any, project_dir: Path, tmp_path: Path,
    tmux_server: TmuxServer, machines: list[Agentd],
) -> None:  # fmt: skip
    from ccm_agentd.fleet import migrations

    cluster: PgCluster = pg_private()
    dsn = cluster.dsn()
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrations.migrate(conn)
    home = tmp_path / "a" / ".ccm"
    machine(machines, home, dsn, "a")
    install_hooks(project_dir)
    fake_api.responder = steps_responder(12, "sleep 4; echo step")  # about 50 s of work
    pane = start_in_tmux(tmux_server, claude_bin, project_dir, fake_api, extra={"CCM_HOME": str(home)})
    wait_for(lambda: shipped(dsn, "a"), timeout=30, what="the first records shipped")
    cluster.stop()
    down_at = time.monotonic()
    before = len(local_records(home))
    submit(pane, "work while the database is down")
    # The local view goes on: records and status keep coming while the database is gone.
    wait_for(
        lambda: len(local_records(home)) > before + 10, timeout=60, what="local records during the outage"
    )
    sid = next(p.stem for p in (home / "events").glob("*.jsonl"))
    assert json.loads(_ccm(home, "status", "--json"))[0]["state"] in ("working", "processing", "idle")
    time.sleep(max(0.0, 60 - (time.monotonic() - down_at)))
    during = len(local_records(home))
    cluster.start()
    wait_idle(pane, timeout=120)
    wait_for(lambda: shipped(dsn, "a") == local_records(home), timeout=90, what="the backlog shipped")
    assert not (home / "log" / "hooks.log").exists()  # no hook failed, none waited on the database
    assert during > before + 10
    tool_calls = [r for r in read_log(home, sid) if r["event"] == "PostToolUse"]
    assert len(tool_calls) == 12
    assert all(r.get("duration_ms", 0) < 10_000 for r in tool_calls)


def _ccm(home: Path, *args: str) -> str:
    import os
    import subprocess

    from tests.agentdrun import BIN

    env = {**os.environ, "CCM_HOME": str(home)}
    out = subprocess.run([str(BIN / "ccm-hooks"), *args], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout
