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
from tests.hookrun import CCM_HOOKS, payload, read_status
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


# --- `ccm-hooks send` on a full disk: all or nothing, so a retry never queues twice ---------------------

IN_TMUX = {"TMUX": "/tmp/tmux-0/default,1,0", "TMUX_PANE": "%1"}  # send refuses sessions outside tmux


def _send(home: Path, sid: str, text: str, max_bytes: int | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CCM_HOOKS, "send", sid, text], capture_output=True, text=True, timeout=60,
        env={**os.environ, "CCM_HOME": str(home)},
        preexec_fn=None if max_bytes is None else lambda: _limited(max_bytes),
    )  # fmt: skip


def _queued(home: Path, sid: str) -> tuple[list[str], list[str]]:
    """(the ids of the pending items, the items of the ccm.queued records in the session's log)."""
    items = sorted(p.stem for p in (home / "queue").glob("*.json")) if (home / "queue").exists() else []
    log = (home / "events" / f"{sid}.jsonl").read_bytes()  # a record torn by the limit is no record
    records = [r["queued"]["item"] for _, r in fileio.iter_lines(log) if r["event"] == "ccm.queued"]
    return items, records


def _assert_sent_once(home: Path, sid: str, first: subprocess.CompletedProcess[str]) -> None:
    """Whatever failed, the outcome is one item and one record, or (exit 1, one line) neither; a retry
    then queues exactly one."""
    items, records = _queued(home, sid)
    if first.returncode == 0:
        assert items == records and len(items) == 1, (first.stderr, items, records)
        return
    assert first.returncode == 1 and first.stdout == "", first
    assert first.stderr.startswith("ccm-hooks: nothing was queued") and first.stderr.count("\n") == 1
    assert (items, records) == ([], []), first.stderr
    retry = _send(home, sid, "hello")
    assert retry.returncode == 0, retry.stderr
    items, records = _queued(home, sid)
    assert items == records and len(items) == 1


def test_send_at_every_write_limit_queues_once_or_not_at_all(ccm_home: Path) -> None:
    # Limits from nothing at all to room for everything: the item, the record and the status fail in turn.
    outcomes = set()
    for limit in range(0, 2600, 100):
        sid = str(uuid.uuid4())
        assert_quiet(
            run_handler(payload("SessionStart__startup_interactive", session_id=sid), env=IN_TMUX)[0]
        )
        first = _send(ccm_home, sid, "hello", max_bytes=limit)
        _assert_sent_once(ccm_home, sid, first)
        outcomes.add(first.returncode)
        for path in (ccm_home / "queue").glob("*.json"):
            path.unlink()  # the next session starts with an empty queue
        assert _temps(ccm_home) == []
    assert outcomes == {0, 1}


def test_send_on_a_really_full_disk_queues_nothing_then_once(small_disk: Path) -> None:
    home = small_disk / "ccm"
    sid = str(uuid.uuid4())
    env = {"CCM_HOME": str(home), **IN_TMUX}
    assert_quiet(run_handler(payload("SessionStart__startup_interactive", session_id=sid), env=env)[0])
    (home / "queue").mkdir(mode=0o700)
    filler = _fill(small_disk)
    first = _send(home, sid, "hello")
    assert first.returncode == 1 and "No space left on device" in first.stderr, first
    assert _queued(home, sid) == ([], [])
    assert _temps(home) == []
    filler.unlink()
    _assert_sent_once(home, sid, first)
