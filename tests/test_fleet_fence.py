"""The fence wrapper (python -m ccm_agentd.fleet.fence LEASE -- COMMAND): the agent dies before its lease can
expire, even when ccm-agentd is dead; and the lease files' rules."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from ccm_agentd.fleet import fence
from ccm_agentd.fleet.fence import LeaseFiles, boot_clock


def held(root: Path, lease_s: float, renewed_ago: float = 0.0, task: str = "f1") -> LeaseFiles:
    leases = LeaseFiles(str(root))
    leases.renewed(
        task, 1, boot_clock() - renewed_ago, "2030-01-01T00:00:00+00:00", system="a", lease_s=lease_s
    )
    return leases


def wrap(root: Path, *command: str, task: str = "f1") -> subprocess.Popen[bytes]:
    lease = fence.lease_path(str(root), task)
    return subprocess.Popen(
        [sys.executable, "-m", "ccm_agentd.fleet.fence", lease, "--", *command], stderr=subprocess.PIPE
    )


def test_the_wrapper_ends_the_agent_before_the_lease_would_expire(tmp_path: Path) -> None:
    held(tmp_path, lease_s=3.0)  # killed at 5/6 of it: 2.5 s after the renewal, nobody renews
    started = time.monotonic()
    proc = wrap(tmp_path, "sleep", "60")
    assert proc.wait(timeout=20) == fence.EXIT_FENCED
    took = time.monotonic() - started
    assert 2.0 < took < 3.0 + 1.0  # well before 60 s; about kill_at, never after the lease
    assert proc.stderr is not None and b"self-fencing" in proc.stderr.read()


def test_renewals_keep_the_agent_alive_and_an_ended_attempt_is_not_fenced(tmp_path: Path) -> None:
    leases = held(tmp_path, lease_s=3.0)
    proc = wrap(tmp_path, "sleep", "4")
    deadline = time.monotonic() + 3.5
    while time.monotonic() < deadline:  # renew like the link does, every lease/4
        leases.renewed("f1", 1, boot_clock(), "2030-01-01T00:00:00+00:00", system="a", lease_s=3.0)
        time.sleep(0.75)
    leases.end("f1", 1)
    assert proc.wait(timeout=20) == 0


def test_a_lost_or_fenced_lease_kills_at_once_and_a_late_renewal_cannot_revive_it(tmp_path: Path) -> None:
    leases = held(tmp_path, lease_s=60.0)
    proc = wrap(tmp_path, "sleep", "60")
    time.sleep(0.5)
    assert proc.poll() is None
    leases.lost("f1", 1)
    assert proc.wait(timeout=10) == fence.EXIT_FENCED
    assert not leases.renewed("f1", 1, boot_clock(), "x", system="a", lease_s=60.0)
    assert leases.snapshot()["f1"].status == fence.LOST


def test_no_lease_no_agent(tmp_path: Path) -> None:
    proc = wrap(tmp_path, "touch", str(tmp_path / "ran"))
    assert proc.wait(timeout=10) == fence.EXIT_FENCED
    assert not (tmp_path / "ran").exists()
    held(tmp_path, lease_s=6.0, renewed_ago=10.0)  # expired already
    assert wrap(tmp_path, "touch", str(tmp_path / "ran")).wait(timeout=10) == fence.EXIT_FENCED
    assert not (tmp_path / "ran").exists()


def test_the_agent_keeps_its_exit_status_and_its_signals(tmp_path: Path) -> None:
    held(tmp_path, lease_s=60.0)
    assert wrap(tmp_path, "sh", "-c", "exit 7").wait(timeout=10) == 7
    proc = wrap(tmp_path, "sh", "-c", "trap 'exit 9' TERM; sleep 30 & wait")
    time.sleep(0.5)
    proc.terminate()  # forwarded to the agent, which decides
    assert proc.wait(timeout=10) == 9


def test_lease_files_survive_a_restart_and_a_reboot_expires_them(tmp_path: Path) -> None:
    leases = held(tmp_path, lease_s=60.0)
    leases.attach("f1", 1, "local-1")
    again = LeaseFiles(str(tmp_path)).snapshot()["f1"]
    assert (again.attempt, again.local_id, again.status) == (1, "local-1", fence.HELD)
    assert again.stop_at > boot_clock()
    path = Path(fence.lease_path(str(tmp_path), "f1"))
    path.write_text(path.read_text().replace(again.boot, "another-boot"))
    assert LeaseFiles(str(tmp_path)).snapshot()["f1"].stop_at < boot_clock()
