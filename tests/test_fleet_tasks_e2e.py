"""The fleet's shared queue end to end: two ccm-agentd as two machines, each with its clone of the project
and the tasks launcher, real Claude Code agents in tmux against the scripted Messages API (spec/fleet.md)."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.agentdrun import Agentd
from tests.claude_harness import TmuxServer, seed_claude_json, wait_for
from tests.fakeapi import FakeAnthropic, text
from tests.fleetrun import write_fleet_config
from tests.hookrun import CCM_HOOKS
from tests.pgcluster import PgCluster, import_psycopg
from tests.taskrun import configure_tasks, git, git_repo, max_concurrent
from tests.tcpproxy import tcp_proxy

psycopg = import_psycopg()
pytestmark = [pytest.mark.e2e, pytest.mark.tmux]
LONG = '{"max_turns": 100}'  # a task that keeps working: watch mode continues it up to 100 turns


def machine(
    made: list[Agentd],
    home: Path,
    dsn: str,
    system: str,
    clone: Path,
    tmux: TmuxServer,
    api: FakeAnthropic,
    claude_bin: str,
    **fleet: Any,
) -> Agentd:
    from ccm_hooks.commands import shim

    configure_tasks(home, tmux, api, claude_bin, max_agents=2, tmux_session=f"ccm-{system}")
    write_fleet_config(home, dsn, system=system, projects={"web": str(clone)}, poll_s=2, **fleet)
    shim.write_shim(str(home))
    d = Agentd(home, {"CCM_HOME": str(home)})
    made.append(d)
    return d.start()


def clones(tmp_path: Path, n: int) -> list[Path]:
    origin = git_repo(tmp_path / "origin")
    out = []
    for i in range(n):
        clone = tmp_path / f"clone-{i}"
        subprocess.run(["git", "clone", "-q", str(origin), str(clone)], check=True, timeout=60)
        git(clone, "checkout", "-q", "main")
        seed_claude_json(os.environ["HOME"], clone)  # a project the user trusts (spec/tasks.md#trust)
        out.append(clone)
    return out


def rows(
    dsn: str, query: str = "SELECT * FROM ccm.tasks ORDER BY created_at", *args: Any
) -> list[dict[str, Any]]:
    from psycopg.rows import dict_row

    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
        return conn.execute(query.encode(), args or None).fetchall()


def _session_of(r: Any) -> str | None:
    return r.headers.get("X-Claude-Code-Session-Id") or r.headers.get("x-claude-code-session-id")


def session_spans(api: FakeAnthropic, token: str) -> dict[str, tuple[float, float]]:
    """Each conversation about ``token`` at the model: its first and last request times."""
    spans: dict[str, tuple[float, float]] = {}
    for r in api.main_requests():
        sid = _session_of(r)
        first = next((m for m in r.body.get("messages", []) if m.get("role") == "user"), {})
        if sid and token in str(first):
            a, b = spans.get(sid, (r.time, r.time))
            spans[sid] = (min(a, r.time), max(b, r.time))
    return spans


def test_twenty_fleet_tasks_run_exactly_once_each_across_two_machines_of_two_agents(
    claude_bin: str,
    fake_api: FakeAnthropic,
    fleet_db: str,
    tmp_path: Path,
    tmux_server: TmuxServer,
    machines: list[Agentd],
) -> None:
    fake_api.responder = lambda body: [text("Finished. [DONE]")]
    ca, cb = clones(tmp_path, 2)
    machine(machines, tmp_path / "a" / ".ccm", fleet_db, "a", ca, tmux_server, fake_api, claude_bin)
    machine(machines, tmp_path / "b" / ".ccm", fleet_db, "b", cb, tmux_server, fake_api, claude_bin)
    with psycopg.connect(fleet_db, autocommit=True) as conn:
        for i in range(20):
            conn.execute(
                "INSERT INTO ccm.tasks (prompt, project) VALUES (%s, 'web')", (f"fleet job tok{i:02d}x",)
            )
    wait_for(
        lambda: all(r["state"] in ("done", "failed", "cancelled") for r in rows(fleet_db)),
        timeout=600,
        interval=1.0,
        what="20 fleet tasks ended",
        diagnostics=lambda: _why(fleet_db, None),
    )
    done = rows(fleet_db)
    assert len(done) == 20 and {r["claimed_by"] for r in done} == {"a", "b"}
    assert all(r["attempt"] == 1 and r["result"] and r["session_id"] for r in done)
    for i in range(20):
        # Claimed once (attempt 1 above), and never two agents at once: its conversations at the model (one,
        # unless the tasks job retried a failed launch locally) never overlap.
        spans = sorted(session_spans(fake_api, f"tok{i:02d}x").values())
        assert spans and all(a[1] < b[0] for a, b in itertools.pairwise(spans)), (i, spans)
    # Never more than 2 agents at once on a machine, measured at the model as concurrent conversations.
    for system in ("a", "b"):
        mine = {r["session_id"] for r in done if r["claimed_by"] == system}
        requests = [r for r in fake_api.main_requests() if _session_of(r) in mine]
        assert 1 <= max_concurrent(requests) <= 2, system
    # The local tasks the fleet made are tasks like any other: the state dirs pass `ccm-hooks validate`.
    for system in ("a", "b"):
        home = tmp_path / system / ".ccm"
        (home / "config.toml").chmod(0o600)  # written by the test with its umask
        out = subprocess.run([CCM_HOOKS, "validate", "--home", str(home)], capture_output=True, text=True,
                             timeout=120)  # fmt: skip
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr


def _why(dsn: str, home: Path | None) -> str:
    """What the rows (and a machine's local tasks and log) say, for a wait that timed out."""
    from ccm_hooks.statedir import tasks

    out = f"rows: {[(r['id'], r['state'], r['claimed_by'], r['reason']) for r in rows(dsn)]}"
    if home is not None:
        local = [(t["id"], t["state"], t.get("reason")) for t in tasks.load_all(str(home))]
        log = home / "log" / "agentd.log"
        out += f"\nlocal: {local}\n{log.read_text()[-3000:] if log.exists() else ''}"
    return out


def _agent_pids(home: Path) -> list[int]:
    """The fence wrappers of this machine's fleet agents (their command lines name its lease files)."""
    out = subprocess.run(
        ["pgrep", "-f", f"ccm_agentd.fleet.fence {home}/fleet/leases/"], capture_output=True, text=True
    )
    return [int(p) for p in out.stdout.split()]


def test_a_daemon_killed_while_it_holds_a_claim_never_leaves_two_live_agents(
    claude_bin: str,
    fake_api: FakeAnthropic,
    fleet_db: str,
    tmp_path: Path,
    tmux_server: TmuxServer,
    machines: list[Agentd],
) -> None:
    from tests.fakeapi import tool_use

    fake_api.responder = lambda body: (
        [tool_use("Bash", {"command": "sleep 2", "description": "work"})]
        if sum(1 for m in body.get("messages", []) if m.get("role") == "assistant") < 30
        else [text("Finished. [DONE]")]
    )
    ca, cb = clones(tmp_path, 2)
    home_a, home_b = tmp_path / "a" / ".ccm", tmp_path / "b" / ".ccm"
    a = machine(machines, home_a, fleet_db, "a", ca, tmux_server, fake_api, claude_bin, lease_s=12)
    with psycopg.connect(fleet_db, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO ccm.tasks (prompt, project, options) VALUES ('long job', 'web', %s)", (LONG,)
        )
    wait_for(
        lambda: rows(fleet_db)[0]["state"] == "running",
        timeout=90,
        what="a runs it",
        diagnostics=lambda: _why(fleet_db, home_a),
    )
    wait_for(lambda: _agent_pids(home_a), timeout=30, what="a's fenced agent")
    a.kill(signal.SIGKILL)
    killed_at = time.monotonic()
    b = machine(machines, home_b, fleet_db, "b", cb, tmux_server, fake_api, claude_bin, lease_s=12)
    # a's agent is ended by its fence before the lease can expire; b takes the task only after it expired.
    wait_for(lambda: not _agent_pids(home_a), timeout=30, what="a's agent ended by its fence")
    a_gone = time.monotonic() - killed_at
    wait_for(lambda: rows(fleet_db)[0]["claimed_by"] == "b", timeout=60, what="b claims it")
    assert a_gone < 12
    row = rows(fleet_db)[0]
    trail = rows(fleet_db, "SELECT * FROM ccm.task_transitions WHERE task_id = %s ORDER BY id", row["id"])
    claim = next(t for t in trail if (t["to_state"], t["attempt"]) == ("claimed", 2))
    assert row["attempt"] == 2 and claim["system"] == "b"
    assert "the lease of a (attempt 1) expired" in claim["reason"]
    wait_for(lambda: _agent_pids(home_b), timeout=60, what="b's agent")
    assert not _agent_pids(home_a)
    # a comes back: it finds its lease gone by, ends its local task and starts nothing.
    from ccm_hooks.statedir import tasks

    a.start()
    ended = wait_for(
        lambda: [t for t in tasks.load_all(str(home_a)) if t["state"] in tasks.FINAL],
        timeout=60,
        what="a's local task ended",
        diagnostics=lambda: _why(fleet_db, home_a),
    )
    assert "self-fenced" in str(ended[0].get("reason")) or "lease" in str(ended[0].get("reason"))
    assert not _agent_pids(home_a) and _agent_pids(home_b)
    assert rows(fleet_db)[0]["claimed_by"] == "b"
    del b


def test_a_partitioned_machine_stops_its_agent_before_another_may_start_one(
    claude_bin: str,
    fake_api: FakeAnthropic,
    fleet_db: str,
    pg_cluster: PgCluster,
    tmp_path: Path,
    tmux_server: TmuxServer,
    machines: list[Agentd],
) -> None:
    from ccm_hooks.statedir import tasks
    from tests.fakeapi import tool_use
    from tests.fleetrun import dsn_with

    fake_api.responder = lambda body: (
        [tool_use("Bash", {"command": "sleep 2", "description": "work"})]
        if sum(1 for m in body.get("messages", []) if m.get("role") == "assistant") < 20
        else [text("Finished. [DONE]")]
    )
    ca, cb = clones(tmp_path, 2)
    home_a, home_b = tmp_path / "a" / ".ccm", tmp_path / "b" / ".ccm"
    lease = 12.0
    with tcp_proxy(("127.0.0.1", pg_cluster.port)) as proxy:
        behind = dsn_with(fleet_db, host="127.0.0.1", port=proxy.port, sslmode="disable")
        machine(machines, home_a, behind, "a", ca, tmux_server, fake_api, claude_bin, lease_s=lease)
        with psycopg.connect(fleet_db, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO ccm.tasks (prompt, project, options) VALUES ('long job', 'web', %s)", (LONG,)
            )
        wait_for(lambda: rows(fleet_db)[0]["state"] == "running", timeout=90, what="a runs it")
        machine(machines, home_b, fleet_db, "b", cb, tmux_server, fake_api, claude_bin, lease_s=lease)
        proxy.pause()  # a is cut off; its agent goes on working
        paused = time.monotonic()
        both: list[float] = []
        while time.monotonic() - paused < 60:
            a_alive, b_alive = bool(_agent_pids(home_a)), bool(_agent_pids(home_b))
            if a_alive and b_alive:
                both.append(time.monotonic() - paused)
            if b_alive and not a_alive:
                break
            time.sleep(0.1)
        assert not both, f"two live agents at {both}"
        assert _agent_pids(home_b), "b never took the task"
        (local,) = [t for t in tasks.load_all(str(home_a))]
        assert local["state"] == "cancelled" and "self-fenced" in local["reason"]
        proxy.resume()
    wait_for(lambda: rows(fleet_db)[0]["state"] == "done", timeout=120, what="b finishes it")
    row = rows(fleet_db)[0]
    assert (row["claimed_by"], row["attempt"]) == ("b", 2)
