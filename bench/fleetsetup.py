"""Shared set-up of the fleet benchmarks: a private PostgreSQL (tests/pgcluster.py), state dirs with or
without ``[fleet]``, ccm-agentd processes, the real handler run as Claude Code runs it, CPU from /proc."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import psycopg  # noqa: E402

from ccm_agentd.fleet import migrations  # noqa: E402
from ccm_hooks.commands import settings_merge, shim  # noqa: E402
from tests.pgcluster import PgCluster  # noqa: E402

BIN = Path(sys.executable).parent
PAYLOADS = REPO / "tests" / "fixtures" / "payloads"


def cluster() -> PgCluster:
    return PgCluster.create().start()


def fresh_database(pg: PgCluster) -> str:
    name = pg.create_database("bench")
    dsn = pg.dsn(name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrations.migrate(conn)
    return dsn


def make_home(dsn: str | None, system: str = "bench", **fleet: Any) -> Path:
    """A scratch HOME with a state dir whose config.toml has [fleet] when ``dsn`` is given."""
    home = Path(tempfile.mkdtemp(prefix="ccm-bench-fleet-"))
    ccm = home / ".ccm"
    ccm.mkdir(mode=0o700)
    lines = ["[agentd]", "notify_desktop = false"]
    if dsn is not None:
        lines += ["[fleet]", f'system = "{system}"', *(f"{k} = {json.dumps(v)}" for k, v in fleet.items())]
        fd = os.open(ccm / "fleet.dsn", os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, dsn.encode() + b"\n")
        os.close(fd)
    (ccm / "config.toml").write_text("\n".join(lines) + "\n")
    shim.write_shim(str(ccm))
    return home


def env_of(home: Path) -> dict[str, str]:
    return {"HOME": str(home), "CCM_HOME": str(home / ".ccm"), "PATH": "/usr/bin:/bin"}


def start_daemon(home: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, **env_of(home)}
    env.pop("CCM_FLEET_DSN", None)
    proc = subprocess.Popen([str(BIN / "ccm-agentd"), "run"], env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not (home / ".ccm" / "agentd" / "health.json").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("ccm-agentd did not start")
        time.sleep(0.05)
    return proc


def stop_daemon(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def wait(predicate: Any, timeout: float, what: str, interval: float = 0.005) -> float:
    """Poll until ``predicate()``; the time.perf_counter() when it first held."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return time.perf_counter()
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(interval)


def payload(name: str, session_id: str) -> bytes:
    data = json.loads((PAYLOADS / f"{name}.json").read_text())
    data["session_id"] = session_id
    return json.dumps(data).encode()


def run_hook(home: Path, event: str, stdin: bytes) -> float:
    """One hook as Claude Code runs it (``/bin/sh -c`` the registered command); its wall time in seconds."""
    start = time.perf_counter()
    proc = subprocess.run(["/bin/sh", "-c", settings_merge.hook_command(event)], input=stdin,
                          env=env_of(home), capture_output=True)  # fmt: skip
    elapsed = time.perf_counter() - start
    if proc.returncode != 0 or proc.stdout:
        raise SystemExit(f"the hook failed: {proc.returncode} {proc.stdout[:200]!r}")
    return elapsed


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fleet_health(home: Path) -> dict[str, Any]:
    try:
        data = json.loads((home / ".ccm" / "agentd" / "health.json").read_text())
    except (OSError, ValueError):
        return {}
    fleet: dict[str, Any] = (data.get("jobs") or {}).get("fleet") or {}
    return fleet


def count(dsn: str, sql: str, *args: Any) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(sql.encode(), args or None).fetchone()
    return int(row[0]) if row and row[0] is not None else 0
