"""A full disk: the handler fails open, leaves no temp file behind, and the next hook with room repairs
the status from the log. With RLIMIT_FSIZE (EFBIG, anywhere) and a real full tmpfs (ENOSPC, where this
machine lets root mount one); issue 9, item 7."""

from __future__ import annotations

import errno
import os
import resource
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ccm_hooks import fileio, state
from tests.hookrun import payload, read_status
from tests.hostile import assert_quiet, logged, run_handler

SID = "d15cf011-0000-4000-8000-000000000001"


def _temps(home: Path) -> list[Path]:
    return [p for p in home.rglob(".*") if fileio.is_temp_name(p.name)]


def _replay(home: Path) -> dict[str, object]:
    data = (home / "events" / f"{SID}.jsonl").read_bytes()
    status = None
    for _, rec in fileio.iter_lines(data):
        status = state.apply(status, rec)
    assert status is not None
    return status


def _limited(max_bytes: int) -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill, as ENOSPC would be
    resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))


def test_a_status_that_cannot_be_written_leaves_no_temp_file_and_is_repaired(ccm_home: Path) -> None:
    start = payload("SessionStart__startup_p", session_id=SID)
    # Room for the record (a few hundred bytes) but not for the status (over a KB).
    proc, _ = run_handler(start, preexec=lambda: _limited(700))
    assert_quiet(proc)
    assert (ccm_home / "events" / f"{SID}.jsonl").stat().st_size < 700
    assert not (ccm_home / "status" / f"{SID}.json").exists()
    assert _temps(ccm_home) == []
    [entry] = logged(ccm_home)
    assert "File too large" in entry["error"]
    assert_quiet(run_handler(payload("UserPromptSubmit__p", session_id=SID))[0])
    st = read_status(ccm_home, SID)
    assert st["seq"] == 2 and st["counters"] == _replay(ccm_home)["counters"]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs, as root; skipped where mounting is not allowed."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(disk: Path) -> Path:
    filler = disk / f"filler-{uuid.uuid4().hex}"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def test_a_really_full_disk(small_disk: Path) -> None:
    home = small_disk / "ccm"
    env = {"CCM_HOME": str(home)}
    assert_quiet(run_handler(payload("SessionStart__startup_p", session_id=SID), env=env)[0])
    filler = _fill(small_disk)
    # Events keep coming: appends fit in the log's last page for a while, statuses need a new page.
    for i in range(12):
        proc, _ = run_handler(payload("PreToolUse__Bash", session_id=SID, tool_use_id=f"t{i}"), env=env)
        assert_quiet(proc)
        assert _temps(home) == []
    assert read_status(home, SID)["seq"] < 13  # the status fell behind (or stayed at the start)
    filler.unlink()
    assert_quiet(run_handler(payload("PostToolUse__Bash", session_id=SID, tool_use_id="t0"), env=env)[0])
    st = read_status(home, SID)
    replay = _replay(home)
    assert st["seq"] == replay["seq"] and st["counters"] == replay["counters"]
    assert _temps(home) == []
