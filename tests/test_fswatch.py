"""DirWatcher, both backends, on real directories: inotify, and watchfiles (what macOS uses, run here on
Linux through the same code path)."""

from __future__ import annotations

import os
import select
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ccm_hooks.statedir.fswatch import BACKENDS, DirWatcher, default_backend


@pytest.fixture(params=BACKENDS)
def watcher(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DirWatcher]:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    dirs = [str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "missing")]
    with DirWatcher(dirs, backend=request.param) as w:
        assert w.backend == request.param and len(w.dirs) == 2  # a missing directory is left out
        time.sleep(0.2)  # watchfiles starts its watch in a thread
        yield w


def _readable(fd: int, timeout: float) -> bool:
    return bool(select.select([fd], [], [], timeout)[0])


def test_nothing_happening_times_out_on_time(watcher: DirWatcher) -> None:
    start = time.monotonic()
    assert watcher.wait(0.3) is False
    assert 0.25 <= time.monotonic() - start < 1.0
    assert not _readable(watcher.fileno(), 0)


@pytest.mark.parametrize("change", ["create", "atomic replace", "append", "delete"])
def test_each_kind_of_change_wakes_a_select_on_its_descriptor(
    watcher: DirWatcher, tmp_path: Path, change: str
) -> None:
    target = tmp_path / "b" / "status.json"
    target.write_text("{}")
    watcher.wait(0.5)  # drain the setup's own events
    while watcher.wait(0.1):
        pass
    if change == "create":
        (tmp_path / "a" / "new.json").write_text("{}")
    elif change == "atomic replace":
        temp = tmp_path / "b" / ".status.json.tmp"
        temp.write_text('{"v": 1}')
        os.replace(temp, target)
    elif change == "append":
        with open(target, "a") as fh:
            fh.write("\n")
    else:
        target.unlink()
    assert _readable(watcher.fileno(), 5.0)
    assert watcher.wait(0) is True
    while watcher.wait(0.1):  # drained: no change left behind
        pass
    assert not _readable(watcher.fileno(), 0)


def test_take_names_what_changed_in_which_directory(watcher: DirWatcher, tmp_path: Path) -> None:
    watcher.wait(0.3)
    watcher.take()
    temp = tmp_path / "b" / ".one.json.tmp"
    temp.write_text("{}")
    os.replace(temp, tmp_path / "b" / "one.json")
    (tmp_path / "a" / "two.jsonl").write_text("x\n")
    deadline = time.monotonic() + 5
    seen: dict[str, set[str]] = {}
    while time.monotonic() < deadline and not (
        "one.json" in seen.get(str(tmp_path / "b"), set())
        and "two.jsonl" in seen.get(str(tmp_path / "a"), set())
    ):
        watcher.wait(0.1)
        for directory, names in watcher.take().names.items():
            seen.setdefault(directory, set()).update(names)
    assert "one.json" in seen[str(tmp_path / "b")]
    assert "two.jsonl" in seen[str(tmp_path / "a")]
    assert not watcher.take()  # taken: nothing left


def test_close_stops_the_watchfiles_thread_and_closes_its_pipe(tmp_path: Path) -> None:
    w = DirWatcher([str(tmp_path)], backend="watchfiles")
    fd = w.fileno()
    time.sleep(0.1)
    start = time.monotonic()
    w.close()
    assert time.monotonic() - start < 1.0
    assert not [t for t in threading.enumerate() if t.name == "ccm-watchfiles"]
    with pytest.raises(OSError):
        os.fstat(fd)


def test_the_backend_can_be_chosen_by_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CCM_WATCHER", "watchfiles")
    assert default_backend() == "watchfiles"
    monkeypatch.setenv("CCM_WATCHER", "nonsense")
    assert default_backend() == ("inotify" if sys.platform.startswith("linux") else "watchfiles")
