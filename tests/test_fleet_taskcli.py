"""`ccm-hooks task add|list|cancel --fleet`: the shared queue from the command line (spec/fleet.md)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.agentdrun import BIN
from tests.fleetrun import write_fleet_config
from tests.pgcluster import import_psycopg

psycopg = import_psycopg()


def ccm(home: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CCM_HOME": str(home)}
    return subprocess.run(
        [str(BIN / "ccm-hooks"), *args], capture_output=True, text=True, timeout=60, env=env, cwd=cwd
    )


def test_add_list_and_cancel_fleet_tasks(fleet_db: str, ccm_home: Path, tmp_path: Path) -> None:
    clone = tmp_path / "web"
    (clone / "sub").mkdir(parents=True)
    write_fleet_config(ccm_home, fleet_db, system="a", projects={"web": str(clone)})
    out = ccm(
        ccm_home,
        "task",
        "add",
        "--fleet",
        "fix it",
        "--label",
        "gpu=yes",
        "--max-turns",
        "3",
        "--priority",
        "5",
        "--name",
        "the fix",
        cwd=clone / "sub",
    )
    assert out.returncode == 0, out.stderr
    first = out.stdout.strip()
    out = ccm(ccm_home, "task", "add", "--fleet", "--on", "b", "docs", "--project", str(clone))
    second = out.stdout.strip()
    with psycopg.connect(fleet_db, autocommit=True) as conn:
        row = conn.execute(
            "SELECT project, labels, options, priority, name, on_system FROM ccm.tasks WHERE id = %s",
            (first,),
        ).fetchone()
    assert row == ("web", {"gpu": "yes"}, {"max_turns": 3}, 5, "the fix", None)
    listed = json.loads(ccm(ccm_home, "task", "list", "--fleet", "--json").stdout)
    assert {t["id"] for t in listed} == {first, second}
    table = ccm(ccm_home, "task", "list", "--fleet").stdout
    assert first in table and "the fix" in table
    assert "cancelled" in ccm(ccm_home, "task", "cancel", "--fleet", second).stdout
    assert (
        json.loads(ccm(ccm_home, "task", "list", "--fleet", "--state", "cancelled", "--json").stdout)[0]["id"]
        == second
    )
    bad = ccm(ccm_home, "task", "add", "--fleet", "x", "--project", str(tmp_path))
    assert bad.returncode == 1 and "[fleet.projects]" in bad.stderr
    assert ccm(ccm_home, "task", "cancel", "--fleet", "nope").returncode == 1
