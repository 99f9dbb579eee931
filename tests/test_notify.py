"""Notifications through real children: facts in the environment only, dedupe across restarts, timeouts,
the concurrency cap and the desktop defaults (stub notify-send/osascript first on PATH)."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from ccm_agentd.notify import ENV_NAMES, OSASCRIPT, Notification, Notifier, desktop_argv

SID = "1a2b3c4d-0000-4000-8000-000000000001"
HOSTILE = "permission: Bash: $(touch pwned) `touch pwned2` \"dq\" 'sq' \\ \n; touch pwned3\nlast line"


def _note(**changes: Any) -> Notification:
    base: dict[str, Any] = {
        "kind": "needs_human",
        "session_id": SID,
        "state": "waiting",
        "since": "2025-01-02T03:04:05.678Z",
        "project": "/w/app",
        "reason": "permission: Bash: rm -rf build",
        "tmux_pane": "%3",
        "tmux_socket": "/tmp/tmux-1000/default",
        "summary": "ccm: 1a2b3c4d needs you: permission: Bash: rm",
    }
    return Notification(**{**base, **changes})


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DISPLAY", "WAYLAND_DISPLAY", "DBUS_SESSION_BUS_ADDRESS")
    }
    return {**env, "OUT_DIR": str(out), **extra}


def _wait_idle(notifier: Notifier, deadline: float = 5.0) -> None:
    end = time.monotonic() + deadline
    while notifier.children:
        assert time.monotonic() < end, "notifier children still running"
        notifier.reap()
        time.sleep(0.01)


def _stub(bin_dir: Path, name: str) -> None:
    """An executable that records its arguments NUL-separated in $OUT_DIR/<name>."""
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / name
    path.write_text(f'#!/bin/sh\nfor a in "$@"; do printf \'%s\\0\' "$a"; done > "$OUT_DIR/{name}"\n')
    path.chmod(0o755)


def _recorded_argv(path: Path) -> list[str]:
    return path.read_bytes().decode().split("\0")[:-1]


def _live_in_group(pgid: int) -> list[int]:
    """Pids in process group ``pgid`` that are not zombies (an orphaned zombie may wait for a lazy init)."""
    live = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            data = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = data[data.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            live.append(int(entry))
    return live


def test_command_receives_every_fact_in_its_environment(ccm_home: Path, tmp_path: Path) -> None:
    cmd = 'env | grep ^CCM_ > "$OUT_DIR/$CCM_SESSION_ID.$CCM_NOTIFY_KIND"'
    notifier = Notifier(str(ccm_home), [cmd], environ=_env(tmp_path))
    n = _note(project=None, tmux_socket=None)
    assert notifier.send(n) is True
    _wait_idle(notifier)
    assert (notifier.sent, notifier.failed, notifier.deduped) == (1, 0, 0)
    lines = (tmp_path / "out" / f"{SID}.needs_human").read_text().splitlines()
    got = dict(line.split("=", 1) for line in lines)
    assert {k: got[k] for k in ENV_NAMES} == {
        "CCM_NOTIFY_KIND": "needs_human",
        "CCM_SESSION_ID": SID,
        "CCM_STATE": "waiting",
        "CCM_SINCE": "2025-01-02T03:04:05.678Z",
        "CCM_PROJECT": "",
        "CCM_REASON": "permission: Bash: rm -rf build",
        "CCM_TMUX_PANE": "%3",
        "CCM_TMUX_SOCKET": "",
        "CCM_SUMMARY": "ccm: 1a2b3c4d needs you: permission: Bash: rm",
    }


def test_hostile_facts_pass_verbatim_and_never_run(
    ccm_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)  # where an injected `touch pwned` would land
    cmds = ['printf %s "$CCM_REASON" > "$OUT_DIR/reason"', 'printf %s "$CCM_SUMMARY" > "$OUT_DIR/summary"']
    notifier = Notifier(str(ccm_home), cmds, environ=_env(tmp_path))
    assert notifier.send(_note(reason=HOSTILE, summary="ccm: $(touch pwned) x", project="$(touch pwned)"))
    _wait_idle(notifier)
    assert notifier.sent == 2 and notifier.failed == 0
    assert (tmp_path / "out" / "reason").read_bytes() == HOSTILE.encode()
    assert (tmp_path / "out" / "summary").read_text() == "ccm: $(touch pwned) x"
    assert sorted(os.listdir(work)) == []


def test_nul_and_lone_surrogates_cannot_break_the_environment(ccm_home: Path, tmp_path: Path) -> None:
    notifier = Notifier(
        str(ccm_home), ['printf %s "$CCM_REASON" > "$OUT_DIR/reason"'], environ=_env(tmp_path)
    )
    assert notifier.send(_note(reason="a\0b\udcffc"))
    _wait_idle(notifier)
    assert notifier.sent == 1
    assert (tmp_path / "out" / "reason").read_text() == "a\ufffdb\\udcffc"


def _remembered(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_same_transition_is_notified_once_even_across_a_restart(ccm_home: Path, tmp_path: Path) -> None:
    cmd = 'echo "$CCM_NOTIFY_KIND $CCM_SINCE" >> "$OUT_DIR/log"'
    env = _env(tmp_path)
    first = Notifier(str(ccm_home), [cmd], environ=env)
    waiting = _note()
    assert first.send(waiting) is True
    assert first.send(waiting) is False
    assert first.deduped == 1
    finished = _note(kind="finished", state="idle", since="2025-01-02T03:05:00.000Z")
    assert first.send(finished) is True  # the session moved on: another transition
    _wait_idle(first)
    first.close()

    restarted = Notifier(str(ccm_home), [cmd], environ=env)
    assert restarted.send(finished) is False
    assert restarted.send(_note(since="2025-01-02T03:09:00.000Z")) is True  # entered the state again
    _wait_idle(restarted)
    assert restarted.deduped == 1 and restarted.sent == 1
    # sorted: the first two children may run concurrently.
    assert sorted((tmp_path / "out" / "log").read_text().splitlines()) == [
        "finished 2025-01-02T03:05:00.000Z",
        "needs_human 2025-01-02T03:04:05.678Z",
        "needs_human 2025-01-02T03:09:00.000Z",
    ]
    path = ccm_home / "agentd" / "notified.jsonl"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((ccm_home / "agentd").stat().st_mode) == 0o700
    assert [(e["k"], e["t"]) for e in _remembered(path)] == [
        ("needs_human", "2025-01-02T03:04:05.678Z"),
        ("finished", "2025-01-02T03:05:00.000Z"),
        ("needs_human", "2025-01-02T03:09:00.000Z"),
    ]


def test_one_transition_per_session_is_remembered_whatever_the_number_of_sessions(ccm_home: Path) -> None:
    """5,000 sessions (once 2,000 keys were kept, and the 2,001st session's notification evicted the first,
    which was then notified again at the next pass, for ever): every one is remembered, the file stays
    about one line per session, and a restart remembers them all."""
    notifier = Notifier(str(ccm_home), ["true"], desktop=False)
    notes = [_note(session_id=f"s{i:05d}", kind="finished", since=f"t{i}") for i in range(5000)]
    for _ in range(3):  # three passes of the daemon over the same sessions
        for n in notes:
            notifier.send(n)
        notifier.reap()
    notifier.close()
    assert notifier.sent + notifier.failed == 5000 and notifier.deduped == 10_000
    lines = _remembered(ccm_home / "agentd" / "notified.jsonl")
    assert len(lines) <= 2 * 5000 + 1024
    restarted = Notifier(str(ccm_home), ["true"], desktop=False)
    assert not any(restarted.send(n) for n in notes)
    restarted.compact(keep={"s00001"})
    assert _remembered(ccm_home / "agentd" / "notified.jsonl") == [
        {"s": "s00001", "k": "finished", "t": "t1"}
    ]


def test_with_nothing_configured_nothing_is_sent_recorded_or_logged_as_sent(ccm_home: Path) -> None:
    notifier = Notifier(str(ccm_home), None, desktop=False)
    assert not notifier.active
    assert "nothing is sent" in notifier.describe()
    assert notifier.send(_note()) is False
    assert not (ccm_home / "agentd" / "notified.jsonl").exists()


@pytest.mark.parametrize("content", [b"{not json\n", b'{"a": 1}\n', b"", b"\xff\xfe"])
def test_corrupt_dedupe_lines_are_skipped(ccm_home: Path, content: bytes) -> None:
    path = ccm_home / "agentd" / "notified.jsonl"
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    notifier = Notifier(str(ccm_home), ["true"], desktop=False)
    assert notifier.send(_note()) is True
    notifier.close()
    assert json.loads(path.read_bytes().splitlines()[-1]) == {
        "s": SID,
        "k": "needs_human",
        "t": _note().since,
    }


def test_slow_notifier_is_killed_with_its_whole_process_group(ccm_home: Path, tmp_path: Path) -> None:
    # `&` plus `wait`: sh must fork, so the kill has a grandchild to reach.
    cmd = 'sleep 30 & echo $! > "$OUT_DIR/bg"; wait'
    notifier = Notifier(str(ccm_home), [cmd], timeout=0.5, environ=_env(tmp_path))
    started = time.monotonic()
    assert notifier.send(_note())
    assert time.monotonic() - started < 0.5  # send() does not wait for the child
    pgid = notifier.children[0].proc.pid
    bg = tmp_path / "out" / "bg"
    end = time.monotonic() + 5
    while notifier.failed == 0 or notifier.children or not bg.exists():
        assert time.monotonic() < end, "timed-out notifier was not killed"
        notifier.reap()
        time.sleep(0.02)
    assert (notifier.sent, notifier.failed) == (0, 1)
    while _live_in_group(pgid):
        assert time.monotonic() < end, f"process group {pgid} survived: {_live_in_group(pgid)}"
        time.sleep(0.02)
    assert int(bg.read_text()) not in _live_in_group(pgid)


def test_nonzero_exit_counts_as_failed_and_output_is_logged(ccm_home: Path, tmp_path: Path) -> None:
    notifier = Notifier(
        str(ccm_home), ["echo oops-from-notifier >&2; exit 3", "true"], environ=_env(tmp_path)
    )
    assert notifier.send(_note())
    _wait_idle(notifier)
    assert (notifier.sent, notifier.failed) == (1, 1)
    log = ccm_home / "log" / "notify.log"
    assert "oops-from-notifier" in log.read_text()
    assert stat.S_IMODE(log.stat().st_mode) == 0o600


def test_running_children_are_capped(ccm_home: Path, tmp_path: Path) -> None:
    notifier = Notifier(str(ccm_home), ["sleep 30"], timeout=30, environ=_env(tmp_path), max_children=2)
    started = time.monotonic()
    for i in range(3):
        assert notifier.send(_note(since=str(i))) is True
    assert time.monotonic() - started < 1.0
    assert notifier.running == 2 and notifier.failed == 1
    pgids = [c.proc.pid for c in notifier.children]
    notifier.close(grace=0.1)
    assert notifier.running == 0 and notifier.failed == 3
    end = time.monotonic() + 5
    while any(_live_in_group(p) for p in pgids):  # SIGKILL is delivered asynchronously to a grandchild
        assert time.monotonic() < end, "killed notifiers survived"
        time.sleep(0.02)


def test_linux_desktop_default_is_notify_send(ccm_home: Path, tmp_path: Path) -> None:
    _stub(tmp_path / "bin", "notify-send")
    env = _env(tmp_path, PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}", DISPLAY=":0")
    notifier = Notifier(str(ccm_home), None, environ=env, platform="linux")
    summary = '-ccm: 1a2b3c4d needs you: $(touch pwned) "x"'
    assert notifier.send(_note(summary=summary))
    _wait_idle(notifier)
    assert notifier.sent == 1
    argv = _recorded_argv(tmp_path / "out" / "notify-send")
    assert argv == ["--app-name=ccm", "--", "ccm: app", summary]


@pytest.mark.parametrize("var", ["WAYLAND_DISPLAY", "DBUS_SESSION_BUS_ADDRESS"])
def test_other_graphical_session_markers_enable_notify_send(ccm_home: Path, tmp_path: Path, var: str) -> None:
    _stub(tmp_path / "bin", "notify-send")
    env = _env(tmp_path, PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}", **{var: "x"})
    argv = desktop_argv(_note(project=None), "linux", env)
    assert argv is not None and argv[1:] == ["--app-name=ccm", "--", "ccm", _note().summary]


def test_macos_desktop_default_is_osascript_with_arguments(ccm_home: Path, tmp_path: Path) -> None:
    _stub(tmp_path / "bin", "osascript")
    env = _env(tmp_path, PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    notifier = Notifier(str(ccm_home), [], environ=env, platform="darwin")
    summary = 'ccm: 1a2b3c4d finished: said "done" \\ ok'
    assert notifier.send(_note(kind="finished", summary=summary))
    _wait_idle(notifier)
    assert notifier.sent == 1
    assert _recorded_argv(tmp_path / "out" / "osascript") == [*OSASCRIPT, "ccm: app", summary]


def test_no_desktop_notifier_without_a_graphical_session(ccm_home: Path, tmp_path: Path) -> None:
    _stub(tmp_path / "bin", "notify-send")
    env = _env(tmp_path, PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    notifier = Notifier(str(ccm_home), None, environ=env, platform="linux")
    assert not notifier.active
    assert notifier.send(_note()) is False  # nothing can show it: nothing started, nothing recorded
    assert notifier.running == 0
    assert not (tmp_path / "out" / "notify-send").exists()
    assert desktop_argv(_note(), "win32", {**env, "DISPLAY": ":0"}) is None


def test_configured_commands_or_desktop_false_replace_the_desktop_default(
    ccm_home: Path, tmp_path: Path
) -> None:
    _stub(tmp_path / "bin", "notify-send")
    env = _env(tmp_path, PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}", DISPLAY=":0")
    configured = Notifier(str(ccm_home), ["true"], environ=env, platform="linux")
    assert configured.send(_note(since="1"))
    silent = Notifier(str(ccm_home), None, desktop=False, environ=env, platform="linux")
    assert silent.send(_note(since="2")) is False and silent.running == 0
    _wait_idle(configured)
    assert configured.sent == 1
    assert not (tmp_path / "out" / "notify-send").exists()


def test_configure_keeps_children_counters_and_dedupe(ccm_home: Path, tmp_path: Path) -> None:
    notifier = Notifier(str(ccm_home), ["sleep 30"], timeout=30, environ=_env(tmp_path))
    assert notifier.send(_note())
    notifier.configure(["exit 1"], timeout=0.5)  # a SIGHUP reload: returns at once
    assert notifier.running == 1 and notifier.send(_note()) is False
    assert notifier.send(_note(since="2"))
    end = time.monotonic() + 5
    while notifier.children:  # the old child now times out under the new timeout too
        assert time.monotonic() < end
        notifier.reap()
        time.sleep(0.02)
    assert (notifier.sent, notifier.failed, notifier.deduped) == (0, 2, 1)
