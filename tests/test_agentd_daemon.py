"""ccm-agentd's loop: work proportional to what changed, settings that cannot make it spin or crash, a full
disk it survives, and what `ccm-agentd status` says. Statuses are written by the real hook code
(``store.record_event``, what the handler runs); the daemon is the real one, stepped in-process or run as
a child process."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from ccm_agentd import daemon, sessions
from ccm_hooks import paths, record, store
from ccm_hooks.statedir import agentd_settings
from ccm_hooks.statedir.fswatch import Changes
from tests.agentdrun import Agentd, agentd_cli, configure
from tests.claude_harness import wait_for
from tests.hookrun import payload


def _session(root: Path, event: str = "Stop", **changes: Any) -> str:
    """A session whose last hook event was ``event`` (idle after a Stop), written by the handler's code."""
    sid = str(uuid.uuid4())
    env = {"CLAUDE_PROJECT_DIR": "/w/app"}
    for name in ("SessionStart__startup_interactive", "UserPromptSubmit__p", f"{event}__first"):
        data = payload(name, session_id=sid, **changes)
        store.record_event(str(root), data, data["hook_event_name"], record.iso_utc(time.time()), env)
    return sid


def _end(root: Path, sid: str) -> None:
    data = payload("SessionEnd__other_p", session_id=sid)
    store.record_event(str(root), data, "SessionEnd", record.iso_utc(time.time()), {})


class _Reads:
    """Counts the status files the daemon reads."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.paths: list[str] = []
        real = sessions.read_status

        def counting(path: str) -> Any:
            self.paths.append(path)
            return real(path)

        monkeypatch.setattr(sessions, "read_status", counting)

    def take(self) -> list[str]:
        taken, self.paths = self.paths, []
        return taken


def test_one_changed_session_costs_one_read_whatever_is_on_disk(
    ccm_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sids = [_session(ccm_home) for _ in range(40)]
    for sid in sids[:30]:
        _end(ccm_home, sid)
    reads = _Reads(monkeypatch)
    d = daemon.Daemon(str(ccm_home))
    d.load_config()
    d.step(Changes(), startup=True)
    assert len(reads.take()) == 40  # start-up reads everything once
    assert len(d.timers) == 10  # a timer for each live session (its next liveness look), none for ended ones

    busy = sids[35]
    data = payload("PreToolUse__Bash", session_id=busy)
    store.record_event(str(ccm_home), data, "PreToolUse", record.iso_utc(time.time()), {})
    status_dir = paths.status_dir(str(ccm_home))
    # What the watcher reports for one atomic status replace: the temp file and the final name.
    names = {f".{busy}.json.123.tmp", f"{busy}.json"}
    d.step(Changes({status_dir: names}))
    assert reads.take() == [os.path.join(status_dir, f"{busy}.json")]
    assert d.cache.get(busy)["state"] == "working"  # type: ignore[index]

    d.next_rescan = 0  # the periodic rescan: stats everything, reads nothing that did not move
    d.step(Changes())
    assert reads.take() == []


def test_a_rescan_finds_what_the_watcher_missed_and_forgets_what_was_removed(
    ccm_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = _session(ccm_home), _session(ccm_home)
    d = daemon.Daemon(str(ccm_home))
    d.load_config()
    d.step(Changes(), startup=True)
    data = payload("UserPromptSubmit__p", session_id=first)
    store.record_event(str(ccm_home), data, "UserPromptSubmit", record.iso_utc(time.time()), {})
    os.unlink(paths.status_path(str(ccm_home), second))
    d.step(Changes(overflow=True))  # the watcher lost events
    assert d.cache.get(first)["state"] == "processing"  # type: ignore[index]
    assert d.cache.get(second) is None
    assert len(d.timers) == 1


@pytest.mark.parametrize(
    ("value", "why"),
    [("0", "from 0.1"), ("-1", "from 0.1"), ("inf", "from 0.1"), ("nan", "from 0.1"), ('"10"', "number"),
     ("true", "number")],
)  # fmt: skip
def test_a_bad_number_takes_its_default_and_is_reported(value: str, why: str) -> None:
    import tomllib

    table = tomllib.loads(f"liveness_s = {value}\nrate_limit_wait_s = inf\nstall_after_s = 30\n")
    s = agentd_settings.parse(table)
    assert s.liveness_s == agentd_settings.AgentdSettings().liveness_s
    assert s.rate_limit_wait_s == 3600.0 and s.stall_after_s == 30.0
    assert len(s.errors) == 2 and why in s.errors[0] and "rate_limit_wait_s" in s.errors[1]


def test_unknown_settings_and_untypable_prompts_are_reported() -> None:
    s = agentd_settings.parse({"livenes_s": 5, "resume_prompt": "go on\u001b[2J", "notify_commands": "echo"})
    assert s.resume_prompt == "continue" and s.notify_commands == ()
    assert [e.split(":")[0] for e in s.errors] == [
        "[agentd] livenes_s", "[agentd] resume_prompt", "[agentd] notify_commands"
    ]  # fmt: skip


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_liveness_zero_is_refused_not_a_busy_loop_and_status_says_so(ccm_home: Path, agentd: Agentd) -> None:
    for _ in range(3):
        _session(ccm_home)
    configure(ccm_home, liveness_s=0, heartbeat_s=1)
    agentd.start()
    assert agentd.proc is not None
    wait_for(lambda: "liveness_s" in agentd.log(), what="the config error in the log")
    before = _cpu_seconds(agentd.proc.pid)
    time.sleep(2.0)
    assert _cpu_seconds(agentd.proc.pid) - before < 0.3  # not spinning
    out = agentd_cli("status")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("ccm-agentd running (pid ")
    assert lines[1] == "sessions: 3 idle"
    assert "queue: empty" in lines
    assert any(line.startswith("config.toml error (default used): [agentd] liveness_s = 0") for line in lines)
    assert any(line.startswith("notifications: nothing") for line in lines)
    log = ccm_home / "log" / "agentd.log"
    assert stat.S_IMODE(log.stat().st_mode) == 0o600


@pytest.fixture
def small_disk(tmp_path: Path) -> Any:
    """A 1 MiB tmpfs to fill up (as root); None where mounting is not allowed."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_full_disk_neither_stops_the_daemon_nor_keeps_it_from_starting(small_disk: Path) -> None:
    home = small_disk / "ccm"
    home.mkdir()
    env = {**os.environ, "CCM_HOME": str(home)}
    configure(home, heartbeat_s=1)
    d = Agentd(home, env).start()
    assert d.proc is not None
    health = home / "agentd" / "health.json"
    filler = small_disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:  # fill the disk to the last byte
        while os.write(fd, b"\0" * 512):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    time.sleep(2.5)  # two heartbeats fail
    assert d.proc.poll() is None, d.proc.communicate()
    assert "cannot write agentd/health.json" in (home / "log" / "agentd.log").read_text(errors="replace")
    assert d.kill(signal.SIGTERM) == 0
    # Starting on a full disk works too; it writes its heartbeat once there is room again.
    again = Agentd(home, env).start()
    assert again.proc is not None and again.proc.poll() is None
    filler.unlink()
    wait_for(lambda: json.loads(health.read_text())["pid"] == again.proc.pid, timeout=10, what="a heartbeat")
    assert again.kill(signal.SIGTERM) == 0


def _finished(root: Path, environ: dict[str, str]) -> str:
    """A session that just finished a turn (idle after a Stop), started with ``environ``'s process facts."""
    sid = str(uuid.uuid4())
    for name in ("SessionStart__startup_p", "UserPromptSubmit__p", "Stop__first"):
        data = payload(name, session_id=sid)
        store.record_event(str(root), data, data["hook_event_name"], record.iso_utc(time.time()), environ)
    return sid


@pytest.mark.parametrize("notify_headless", [False, True])
def test_a_headless_run_finishing_is_notified_only_with_notify_headless(
    ccm_home: Path, tmp_path: Path, notify_headless: bool
) -> None:
    from tests.agentdrun import notifications

    notified = tmp_path / "notified.tsv"
    configure(ccm_home, notified, notify_headless=notify_headless)
    headless = _finished(ccm_home, {"CLAUDE_CODE_ENTRYPOINT": "sdk-cli"})  # claude -p
    interactive = _finished(ccm_home, {"CLAUDE_CODE_ENTRYPOINT": "cli"})
    background = _finished(ccm_home, {"CLAUDE_CODE_ENTRYPOINT": "cli", "CLAUDE_JOB_DIR": "/tmp/jobs/j-1/"})
    failed = _finished(ccm_home, {"CLAUDE_CODE_ENTRYPOINT": "sdk-cli"})
    data = payload("StopFailure__http400", session_id=failed)
    store.record_event(str(ccm_home), data, "StopFailure", record.iso_utc(time.time()), {})
    d = daemon.Daemon(str(ccm_home), jobs=[])
    d.load_config()
    d.step(Changes(), startup=True)
    want = {interactive: "finished", background: "finished", failed: "error"}
    if notify_headless:
        want[headless] = "finished"

    def sent() -> dict[str, str] | None:
        assert d.notifier is not None
        d.notifier.reap()
        got = {n["session_id"]: n["kind"] for n in notifications(notified)}
        return got if len(got) >= len(want) and not d.notifier.running else None

    assert wait_for(sent, timeout=15, what="the notifications") == want
    d.step(Changes())  # nothing more on a later pass either
    assert d.notifier is not None
    d.notifier.close()
    assert {n["session_id"]: n["kind"] for n in notifications(notified)} == want
