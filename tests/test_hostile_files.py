"""Nothing in the state dir can hang the handler or make it write where it should not: FIFOs, sockets,
devices, directories and symlinks where files belong, planted temp files, stale temp files, odd umasks.
Real files and the real handler; issue 9, items 1, 2 and 8."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from ccm_hooks import fileio, paths
from tests.hookrun import payload, read_log, read_status, run_hook
from tests.hostile import KINDS, QUICK_S, assert_quiet, logged, make_special, run_handler

SID = "f1f0f1f0-0000-4000-8000-000000000001"
TOOL = payload("PreToolUse__Bash", session_id=SID)
STOP = payload("Stop__first", session_id=SID)


def _started(home: Path) -> None:
    assert_quiet(run_hook(payload("SessionStart__startup_p", session_id=SID)))
    assert (home / "status" / f"{SID}.json").is_file()


@pytest.mark.parametrize("kind", KINDS)
def test_a_status_that_is_not_a_regular_file_is_never_opened_and_is_replaced(
    kind: str, ccm_home: Path, tmp_path: Path
) -> None:
    _started(ccm_home)
    status = ccm_home / "status" / f"{SID}.json"
    outside = tmp_path / "outside.json"
    outside.write_text('{"v":1,"seq":99}')
    status.unlink()
    make_special(status, kind, target=outside)
    if kind == "directory":
        (status / "keep").write_text("x")  # os.replace cannot replace a non-empty directory
    proc, took = run_handler(TOOL)
    assert_quiet(proc)
    assert took < QUICK_S
    [entry] = logged(ccm_home)
    assert entry["session_id"] == SID and "not a regular file" in entry["error"]
    if kind == "directory":  # cannot be replaced by a file: refused before anything is written
        assert [r["event"] for r in read_log(ccm_home, SID)] == ["SessionStart"]
        assert (status / "keep").read_text() == "x"
        return
    # Rebuilt from the log and renamed over whatever was there (a rename never opens it).
    assert stat.S_ISREG(os.lstat(status).st_mode)
    st = read_status(ccm_home, SID)
    assert st["seq"] == 2 and st["state"] == "working"
    assert outside.read_text() == '{"v":1,"seq":99}'


@pytest.mark.parametrize("kind", KINDS)
def test_an_events_file_that_is_not_a_regular_file_is_refused_quickly(
    kind: str, ccm_home: Path, tmp_path: Path
) -> None:
    _started(ccm_home)
    events = ccm_home / "events" / f"{SID}.jsonl"
    outside = tmp_path / "outside.jsonl"
    outside.write_text("")
    events.unlink()
    make_special(events, kind, target=outside)
    before = (ccm_home / "status" / f"{SID}.json").read_bytes()
    proc, took = run_handler(TOOL)
    assert_quiet(proc)
    assert took < QUICK_S
    [entry] = logged(ccm_home)
    assert "not a regular file" in entry["error"] and str(events) in entry["error"]
    assert (ccm_home / "status" / f"{SID}.json").read_bytes() == before
    assert outside.read_text() == ""  # nothing written through a symlink


@pytest.mark.parametrize("kind", KINDS)
def test_a_lock_file_that_is_not_a_regular_file_is_refused_quickly(
    kind: str, ccm_home: Path, tmp_path: Path
) -> None:
    _started(ccm_home)
    lock = ccm_home / "locks" / f"{SID}.lock"
    lock.unlink()
    make_special(lock, kind, target=tmp_path / "elsewhere.lock")
    proc, took = run_handler(TOOL)
    assert_quiet(proc)
    assert took < QUICK_S
    [entry] = logged(ccm_home)
    assert "not a regular file" in entry["error"] and "locks" in entry["error"]
    assert not (tmp_path / "elsewhere.lock").exists()
    assert [r["event"] for r in read_log(ccm_home, SID)] == ["SessionStart"]


@pytest.mark.parametrize("name", ["config.toml", "config.snapshot.json"])
def test_a_fifo_config_blocks_no_session_start(name: str, ccm_home: Path) -> None:
    paths.ensure_layout(str(ccm_home))
    if name == "config.snapshot.json":  # a good config.toml: the snapshot is rebuilt from it
        (ccm_home / "config.toml").write_text('[watch]\nenabled = true\nprompt = "go on"\n')
        os.chmod(ccm_home / "config.toml", 0o600)
    make_special(ccm_home / name, "fifo")
    proc, took = run_handler(STOP)
    assert took < QUICK_S
    assert proc.returncode == 0 and proc.stderr == b""
    watch = read_status(ccm_home, SID)["watch"]
    if name == "config.toml":
        assert proc.stdout == b"" and watch["enabled"] is False  # ignored, the event recorded
        [entry] = logged(ccm_home)
        assert "config.toml is a FIFO" in entry["error"]
    else:
        assert proc.stdout == b'{"decision":"block","reason":"go on"}'
        assert stat.S_ISREG(os.lstat(ccm_home / name).st_mode)  # replaced by the recompiled snapshot
        assert logged(ccm_home) == []


def test_a_fifo_hooks_log_gets_nothing_and_blocks_nothing(ccm_home: Path) -> None:
    paths.ensure_layout(str(ccm_home))
    make_special(ccm_home / "log" / "hooks.log", "fifo")
    proc, took = run_handler(b"not json")  # a failure the handler would log
    assert_quiet(proc)
    assert took < QUICK_S
    assert stat.S_ISFIFO(os.lstat(ccm_home / "log" / "hooks.log").st_mode)


def test_a_planted_hard_link_at_a_temp_name_is_never_written(ccm_home: Path, tmp_path: Path) -> None:
    """The old temp name was predictable (``.<sid>.json.<pid>.tmp``) and opened with O_TRUNC: a hard
    link planted there made the handler overwrite a file outside $CCM_HOME. Plant one for every pid the
    next handlers can get, and for the names a fixed random source would give."""
    _started(ccm_home)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    status_dir = ccm_home / "status"
    last_pid = int(Path("/proc/sys/kernel/ns_last_pid").read_text())
    for pid in range(last_pid + 1, last_pid + 400):
        os.link(victim, status_dir / f".{SID}.json.{pid}.tmp")
    for i in range(5):
        assert_quiet(run_hook({**TOOL, "tool_use_id": f"t{i}"}))
    assert victim.read_text() == "precious"
    assert read_status(ccm_home, SID)["seq"] == 6


def test_atomic_write_never_opens_what_is_at_its_temp_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    names = iter([".x.json.a.tmp", ".x.json.b.tmp", ".x.json.c.tmp", ".x.json.d.tmp"])
    monkeypatch.setattr(fileio, "temp_name", lambda name: next(names))
    os.link(victim, tmp_path / ".x.json.a.tmp")  # a hard link
    (tmp_path / ".x.json.b.tmp").symlink_to(victim)  # a symlink
    os.mkfifo(tmp_path / ".x.json.c.tmp")  # a FIFO: opening it for writing would block
    fileio.atomic_write(str(tmp_path / "x.json"), b"{}\n")
    assert (tmp_path / "x.json").read_text() == "{}\n"
    assert victim.read_text() == "precious"
    assert not (tmp_path / ".x.json.d.tmp").exists()  # renamed into place
    assert stat.S_IMODE(os.stat(tmp_path / "x.json").st_mode) == 0o600


def test_temp_names_are_unpredictable() -> None:
    names = {fileio.temp_name("s.json") for _ in range(1000)}
    assert len(names) == 1000
    assert all(fileio.is_temp_name(n) and n.startswith(".s.json.") for n in names)


def test_a_failed_write_leaves_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tmp_path = tmp_path / "d"
    tmp_path.mkdir()

    def full(fd: int, data: bytes) -> None:
        os.write(fd, data[:3])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fileio, "write_all", full)
    with pytest.raises(OSError):
        fileio.atomic_write(str(tmp_path / "x.json"), b"{}\n" * 100)
    assert list(tmp_path.iterdir()) == []


def test_stale_temp_files_are_found_and_cleaned_without_touching_anything_else(tmp_path: Path) -> None:
    tmp_path = tmp_path / "d"
    tmp_path.mkdir()
    now = time.time()
    old = [".a.json.1234.tmp", ".b.json.0123456789abcdef.tmp"]
    fresh = [".c.json.feedfacecafebeef.tmp"]
    keep = ["a.json", ".hidden", "x.tmp"]
    for name in old + fresh + keep:
        (tmp_path / name).write_text("")
    for name in old + keep:
        os.utime(tmp_path / name, (now - 3600, now - 3600))
    (tmp_path / ".d.json.0000.tmp").mkdir()  # a directory is never a temp file of ours
    os.utime(tmp_path / ".d.json.0000.tmp", (now - 3600, now - 3600))
    found = sorted(os.path.basename(p) for p in fileio.stale_temp_files(str(tmp_path), 60))
    assert found == sorted(old)
    assert fileio.clean_stale_temps(str(tmp_path), 60) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*fresh, *keep, ".d.json.0000.tmp"])
    assert fileio.stale_temp_files(str(tmp_path / "missing"), 60) == []


def test_open_regular_refuses_without_blocking_and_says_what_is_wrong(tmp_path: Path) -> None:
    for kind in KINDS:
        path = tmp_path / f"thing-{kind}"
        make_special(path, kind, target=tmp_path / "target")
        for flags in (os.O_RDONLY, os.O_WRONLY | os.O_APPEND, os.O_RDWR | os.O_CREAT):
            with pytest.raises(fileio.UnsafePath) as err:
                fileio.open_regular(str(path), flags, private=True)
            assert str(path) in str(err.value) and "not a regular file" in str(err.value)
    regular = tmp_path / "regular"
    fd = fileio.open_regular(str(regular), os.O_RDWR | os.O_CREAT, private=True)
    try:
        import fcntl

        assert not fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK  # cleared again
        assert stat.S_IMODE(os.fstat(fd).st_mode) == 0o600
    finally:
        os.close(fd)
    os.chmod(regular, 0o620)
    with pytest.raises(fileio.UnsafePath, match="writable by group"):
        fileio.open_regular(str(regular), os.O_RDONLY, private=True)
    os.close(fileio.open_regular(str(regular), os.O_RDONLY, private=False))


def test_whole_file_reads_are_bounded(tmp_path: Path) -> None:
    big = tmp_path / "big.json"
    big.write_bytes(b" " * 2000 + b"{}")
    with pytest.raises(ValueError, match="more than the 1000 ccm reads"):
        fileio.read_json(str(big), max_bytes=1000)
    assert fileio.read_json(str(big)) == {}
    assert fileio.read_json(str(tmp_path / "missing.json")) is None


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077, 0o027])
def test_everything_the_handler_creates_is_private_whatever_the_umask(umask: int, ccm_home: Path) -> None:
    config = ccm_home / "config.toml"
    ccm_home.mkdir(mode=0o700)
    config.write_text("[watch]\nenabled = true\n")
    os.chmod(config, 0o600)
    for data in (payload("SessionStart__startup_p", session_id=SID), STOP, b"broken"):
        proc, _ = run_handler(data, preexec=lambda: os.umask(umask) and None)
        assert proc.returncode == 0
    assert logged(ccm_home)  # hooks.log was created too
    for path in [ccm_home, *ccm_home.rglob("*")]:
        mode = stat.S_IMODE(os.lstat(path).st_mode)
        if path == config:
            continue
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))
