"""ccm-hooks doctor: each check, its ok/FIX line and the exit code, on real files and a fake claude."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ccm_hooks.commands import doctor, doctor_agentd, installer, settings_merge, shim
from ccm_hooks.errors import CcmError

CLI = shutil.which("ccm-hooks", path=os.path.dirname(sys.executable)) or "ccm-hooks"


@pytest.fixture
def project(project_dir: Path) -> Path:
    return project_dir  # the harness's scratch project (tests/claude_harness.py)


def fake_claude(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str = "echo '2.1.197 (Claude Code)'"
) -> Path:
    bindir = tmp_path / "fakebin"
    bindir.mkdir(exist_ok=True)
    exe = bindir / "claude"
    exe.write_text(f"#!/bin/sh\n{body}\n")
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return exe


def run_doctor(project: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    code = doctor.doctor_cmd(project)
    lines = capsys.readouterr().out.splitlines()
    assert all(line[:5] in ("ok   ", "warn ", "FIX  ") for line in lines), lines
    return code, lines


def fixes(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("FIX")]


def quiet_install(scope: str, project: Path) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        assert installer.install_cmd(scope, project, False) == 0


@pytest.fixture
def healthy(project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    fake_claude(tmp_path, monkeypatch)
    quiet_install("user", project)
    return project


def test_healthy_install_is_all_ok_and_fast(healthy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    code, lines = run_doctor(healthy, capsys)
    elapsed = time.monotonic() - started
    assert code == 0, lines
    assert not fixes(lines)
    text = "\n".join(lines)
    assert "ok   user scope" in text and "13 ccm hooks" in text
    assert f"ok   all {len(settings_merge.EVENTS)} events have a ccm hook" in text
    assert "ok   hook shim" in text and "ok   claude 2.1.197" in text
    assert elapsed < 1.0, f"doctor took {elapsed:.2f}s"


def test_cli_exit_codes(healthy: Path, private_home: Path) -> None:
    proc = subprocess.run(
        [CLI, "doctor"], cwd=healthy, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (private_home / ".claude" / "settings.json").unlink()
    proc = subprocess.run(
        [CLI, "doctor"], cwd=healthy, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 1
    assert "FIX  ccm hooks are not installed in any scope: run ccm-hooks install" in proc.stdout


def test_state_dir_missing_or_not_a_dir(
    project: Path, ccm_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, lines = run_doctor(project, capsys)
    assert code == 1
    assert f"FIX  state dir {ccm_home} does not exist: run ccm-hooks install" in lines
    ccm_home.write_text("oops")  # one line, exit 1 (tests/test_installer.py runs the CLI)
    with pytest.raises(
        CcmError,
        match=re.escape(f"$CCM_HOME ({ccm_home}) is a regular file, not a directory; point CCM_HOME at"),
    ):
        doctor.doctor_cmd(project)


def test_state_dir_open_to_others(healthy: Path, ccm_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ccm_home.chmod(0o755)
    code, lines = run_doctor(healthy, capsys)
    assert code == 1
    assert fixes(lines) == [
        f"FIX  state dir {ccm_home} is open to others (mode 0755): run chmod 700 {ccm_home}"
    ]


def test_missing_events_are_named(
    healthy: Path, private_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = private_home / ".claude" / "settings.json"
    doc = json.loads(path.read_text())
    del doc["hooks"]["Stop"], doc["hooks"]["SessionEnd"]
    path.write_text(json.dumps(doc))
    code, lines = run_doctor(healthy, capsys)
    assert code == 1
    assert any("user scope" in line and "ccm-hooks install --scope user" in line for line in fixes(lines))
    assert any(line.startswith("FIX  events with no ccm hook: Stop, SessionEnd") for line in lines)


def test_events_covered_across_scopes(
    healthy: Path, private_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # user scope lacks Stop, but local scope has everything: every event is covered.
    path = private_home / ".claude" / "settings.json"
    doc = json.loads(path.read_text())
    del doc["hooks"]["Stop"]
    path.write_text(json.dumps(doc))
    quiet_install("local", healthy)
    _, lines = run_doctor(healthy, capsys)
    assert any(line.startswith("ok   all 13 events") for line in lines)
    assert any(line.startswith("ok   local scope") for line in lines)


def test_disable_all_hooks(healthy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    local = healthy / ".claude" / "settings.local.json"
    local.parent.mkdir()
    local.write_text('{"disableAllHooks": true}\n')
    code, lines = run_doctor(healthy, capsys)
    assert code == 1
    assert fixes(lines) == [
        f'FIX  local scope ({local}): "disableAllHooks": true turns every hook off: remove it from {local}'
    ]


def test_malformed_settings_reported(healthy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = healthy / ".claude" / "settings.json"
    path.parent.mkdir()
    path.write_text('{"hooks": [}')
    code, lines = run_doctor(healthy, capsys)
    assert code == 1
    assert any(line.startswith(f"FIX  {path} is not valid JSON (line 1, column 12") for line in lines)


def test_shim_problems(
    healthy: Path, ccm_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = ccm_home / "bin" / "ccm-hook"
    path.chmod(0o600)
    _, lines = run_doctor(healthy, capsys)
    assert fixes(lines) == [f"FIX  hook shim {path} is not executable: run ccm-hooks install"]

    path.write_text(shim.render(sys.executable, str(tmp_path / "moved")))
    path.chmod(0o700)
    _, lines = run_doctor(healthy, capsys)
    [line] = fixes(lines)
    assert line.startswith(
        f"FIX  hook shim {path} printed output on an empty payload (ccm-hook: cannot import"
    )
    assert not (ccm_home / "log" / "hooks.log").exists()  # the trial run used a scratch state dir

    path.write_text(shim.render(str(tmp_path / "no-python"), shim.package_parent()))
    _, lines = run_doctor(healthy, capsys)
    assert fixes(lines) == [
        f"FIX  hook shim {path} runs {tmp_path / 'no-python'}, which no longer exists: run ccm-hooks install"
    ]

    path.unlink()
    code, lines = run_doctor(healthy, capsys)
    assert code == 1
    assert fixes(lines) == [
        f"FIX  hook shim {path} is missing, so every hook does nothing: run ccm-hooks install"
    ]


def test_claude_missing_other_version_and_hanging(
    healthy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_claude(tmp_path, monkeypatch, "echo '2.3.0 (Claude Code)'")
    code, lines = run_doctor(healthy, capsys)
    assert code == 0
    assert any(line.startswith("warn claude 2.3.0") and "tested with 2.1.x" in line for line in lines)

    fake_claude(tmp_path, monkeypatch, "exec sleep 30")
    monkeypatch.setattr(doctor, "CLAUDE_TIMEOUT", 0.3)
    started = time.monotonic()
    code, lines = run_doctor(healthy, capsys)
    assert time.monotonic() - started < 3
    assert code == 0 and any(line.startswith("warn claude") and "did not answer" in line for line in lines)

    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # no claude, no tmux
    code, lines = run_doctor(healthy, capsys)
    assert code == 1
    assert fixes(lines) == [
        "FIX  claude is not on PATH: install it (npm install -g @anthropic-ai/claude-code)"
    ]
    assert any(line.startswith("warn tmux is not on PATH") for line in lines)


def test_tmux_version_reported(healthy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if shutil.which("tmux") is None:
        pytest.skip("tmux not installed")
    _, lines = run_doctor(healthy, capsys)
    assert any(line.startswith("ok   tmux ") for line in lines)


def test_hook_errors_in_log(healthy: Path, ccm_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = ccm_home / "log" / "hooks.log"
    old = {"ts": "2020-01-01T00:00:00.000000Z", "error": "ValueError: ancient"}
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
    new = [{"ts": now, "error": f"ValueError: recent {i}"} for i in range(3)]
    log.write_text("".join(json.dumps(e) + "\n" for e in [old]))
    code, lines = run_doctor(healthy, capsys)
    assert code == 0 and any(line.startswith("ok   no hook errors in the last 24h") for line in lines)
    log.write_text("".join(json.dumps(e) + "\n" for e in [old, *new]))
    code, lines = run_doctor(healthy, capsys)
    assert code == 0  # a warning, not a failure: recording still works
    [warn] = [line for line in lines if "hook error" in line]
    assert warn.startswith("warn 3 hook error(s) in the last 24h") and warn.endswith("ValueError: recent 2")


def test_real_handler_failure_shows_up(
    healthy: Path, ccm_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Feed the real shim a bad payload: whatever the handler logs must be readable by doctor.
    env = {**os.environ, "CCM_HOME": str(ccm_home)}
    proc = subprocess.run(
        [str(ccm_home / "bin" / "ccm-hook"), "Stop"],
        input=b"not json",
        env=env,
        capture_output=True,
        check=False,
    )
    assert proc.returncode == 0 and proc.stdout == b""
    _, lines = run_doctor(healthy, capsys)
    if (ccm_home / "log" / "hooks.log").exists():
        assert any(line.startswith("warn 1 hook error(s)") for line in lines), lines


def test_watch_config_mistakes_are_named(
    healthy: Path, ccm_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = ccm_home / "config.toml"
    config.write_text('[watch]\nenabled = true\nmax_turns = 0\n[projects."rel".watch]\nenabled = true\n')
    code, lines = run_doctor(healthy, capsys)
    assert code == 1
    ignored = "(that setting is ignored)"
    assert fixes(lines) == [
        f"FIX  {config}: [watch]: max_turns must be a whole number from 1 to 10000 (got 0) {ignored}",
        f'FIX  {config}: [projects."rel".watch]: the project must be an absolute directory {ignored}',
    ]
    config.write_text("[watch\n")
    code, lines = run_doctor(healthy, capsys)
    assert code == 1 and any("is not valid TOML" in line for line in fixes(lines))
    config.write_text("[watch]\nenabled = true\n")
    code, lines = run_doctor(healthy, capsys)
    assert code == 0 and f"ok   watch defaults in {config}" in lines


# --- whose files, the daemon, notifications, subdirectories -----------------------------------------


def test_files_of_another_user_or_open_to_writes(
    healthy: Path, ccm_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shim_file = ccm_home / "bin" / "ccm-hook"
    ran = tmp_path / "ran"
    shim_file.write_text(f"#!/bin/sh\ntouch {ran}\n")
    os.chown(shim_file, 65534, 65534)  # the tests run as root: a foreign uid is a chown away
    config = ccm_home / "config.toml"
    config.write_text("[watch]\nenabled = false\n")
    os.chown(config, 65534, 65534)
    code, lines = run_doctor(healthy, capsys)
    assert code == 1
    owner = "(uid 65534), not to you"
    assert [line for line in fixes(lines) if owner in line] == [
        f"FIX  {shim_file} belongs to nobody {owner}: "
        "remove it (as its owner or root), then run ccm-hooks install",
        f"FIX  {config} belongs to nobody {owner}: check it, then make it yours: "
        "cp config.toml config.toml.new && mv config.toml.new config.toml",
    ]
    assert not ran.exists()  # doctor never runs a shim that may be someone else's
    os.chown(shim_file, os.getuid(), os.getgid())
    os.chown(config, os.getuid(), os.getgid())
    (ccm_home / "bin").chmod(0o777)
    _, lines = run_doctor(healthy, capsys)
    bindir = ccm_home / "bin"
    assert f"FIX  {bindir} is writable by others (mode 0777): run chmod go-w {bindir}" in lines
    (ccm_home / "bin").chmod(0o700)
    os.chown(ccm_home, 65534, 65534)
    _, lines = run_doctor(healthy, capsys)
    assert any(line.startswith(f"FIX  $CCM_HOME ({ccm_home}) belongs to uid ") for line in lines)
    os.chown(ccm_home, os.getuid(), os.getgid())


def test_fifos_do_not_hang_doctor(healthy: Path, ccm_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = healthy / ".claude" / "settings.json"
    settings.parent.mkdir()
    for fifo in (settings, ccm_home / "config.toml", ccm_home / "log" / "hooks.log"):
        fifo.parent.mkdir(exist_ok=True)
        os.mkfifo(fifo)
    code, lines = run_doctor(healthy, capsys)  # a blocking open would hang here
    assert code == 1
    assert f"FIX  {settings} is a FIFO (named pipe), not a regular file: move it aside" in lines
    assert (
        f"FIX  {ccm_home / 'config.toml'} is a FIFO (named pipe), not a regular file: move it aside" in lines
    )
    assert any(line.startswith(f"warn {ccm_home / 'log' / 'hooks.log'} is a FIFO") for line in lines)


def test_agentd_running_or_not(
    healthy: Path, ccm_home: Path, agentd: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    _, lines = run_doctor(healthy, capsys)
    [line] = [line for line in lines if "ccm-agentd" in line]
    assert line.startswith(f"warn ccm-agentd is not running for {ccm_home}: sessions are recorded, but")
    assert line.endswith("start it: ccm-agentd install-service (or ccm-agentd run in a terminal)")
    agentd.start()
    _, lines = run_doctor(healthy, capsys)
    [line] = [line for line in lines if "ccm-agentd" in line]
    assert line.startswith(f"ok   ccm-agentd is running for {ccm_home} (pid {agentd.proc.pid}, heartbeat")
    health = json.loads((ccm_home / "agentd" / "health.json").read_text())
    agentd.proc.send_signal(signal.SIGSTOP)  # alive, holding its lock, but no longer beating
    try:
        health["heartbeat_at"] = "2020-01-01T00:00:00.000000Z"
        (ccm_home / "agentd" / "health.json").write_text(json.dumps(health))
        _, lines = run_doctor(healthy, capsys)
        [line] = [line for line in lines if "ccm-agentd" in line]
        assert line.startswith(
            f"warn ccm-agentd (pid {agentd.proc.pid}) holds its lock but its last heartbeat"
        )
    finally:
        agentd.proc.send_signal(signal.SIGCONT)


def test_notifications(
    healthy: Path, ccm_home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for var in ("DISPLAY", "WAYLAND_DISPLAY", "DBUS_SESSION_BUS_ADDRESS"):
        monkeypatch.delenv(var, raising=False)
    _, lines = run_doctor(healthy, capsys)
    [line] = [line for line in lines if "notification is configured" in line]
    assert line.startswith("warn no notification is configured, so nothing will be sent when a session needs")
    assert (
        "there is no desktop notifier here" in line
        and f"under [agentd] in {ccm_home / 'config.toml'}" in line
    )
    (ccm_home / "config.toml").write_text('[agentd]\nnotify_commands = ["logger ccm"]\n')
    _, lines = run_doctor(healthy, capsys)
    assert f"ok   notifications: 1 notify_commands in {ccm_home / 'config.toml'}" in lines
    (ccm_home / "config.toml").write_text("[agentd]\nnotify_desktop = false\n")
    bindir = healthy.parent / "notifybin"
    bindir.mkdir()
    (bindir / "notify-send").write_text("#!/bin/sh\n")
    (bindir / "notify-send").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    monkeypatch.setenv("DISPLAY", ":0")
    _, lines = run_doctor(healthy, capsys)
    assert any(
        line.startswith("warn no notification") and "(notify_desktop = false)" in line for line in lines
    )
    (ccm_home / "config.toml").write_text("")
    assert doctor_agentd.desktop_notifier() == "notify-send"
    _, lines = run_doctor(healthy, capsys)
    assert any(line.startswith("ok   notifications: desktop (notify-send)") for line in lines)


@pytest.mark.parametrize("git", [True, False], ids=["git-repo", "plain-dir"])
def test_doctor_in_a_subdirectory_points_at_the_hooked_root(
    project: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    git: bool,
) -> None:
    fake_claude(tmp_path, monkeypatch)
    if git:
        subprocess.run(["git", "init", "-q", str(project)], check=True)
    quiet_install("project", project)
    sub = project / "src" / "deep"
    sub.mkdir(parents=True)
    code, lines = run_doctor(sub, capsys)
    settings = project / ".claude" / "settings.json"
    assert code == 1
    assert fixes(lines) == [
        f"FIX  ccm hooks are installed in {settings}, but claude started in {sub} does not read it: "
        "Claude Code takes project settings only from the directory it starts in; "
        f"start claude in {project}, or run ccm-hooks install --scope user"
    ]
    quiet_install("user", project)
    code, lines = run_doctor(sub, capsys)
    assert code == 0
    assert any(line.startswith(f"warn ccm hooks are installed in {settings}, but") for line in lines)
    code, lines = run_doctor(project, capsys)
    assert code == 0 and not any("claude started in" in line for line in lines)


@pytest.mark.e2e
def test_claude_started_in_a_subdirectory_does_not_run_the_roots_hooks(
    claude_bin: str, fake_api: Any, project: Path, tmp_path: Path
) -> None:
    """What doctor's subdirectory line claims, checked on the real claude (git repository)."""
    from tests.claude_harness import claude_env, run_claude_p

    subprocess.run(["git", "init", "-q", str(project)], check=True)
    seen = tmp_path / "seen.txt"
    hook = {"type": "command", "command": f'echo "$CLAUDE_PROJECT_DIR" >> {seen}'}
    (project / ".claude").mkdir()
    (project / ".claude" / "settings.json").write_text(
        json.dumps({"hooks": {"SessionStart": [{"hooks": [hook]}]}})
    )
    sub = project / "sub"
    sub.mkdir()
    env = claude_env(fake_api)
    assert run_claude_p(claude_bin, sub, "hi", env).returncode == 0
    assert not seen.exists()
    assert run_claude_p(claude_bin, project, "hi", env).returncode == 0
    assert seen.read_text().splitlines() == [str(project)]
