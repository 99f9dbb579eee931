"""ccm-hooks doctor: each check, its ok/FIX line and the exit code, on real files and a fake claude."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ccm_hooks.commands import doctor, installer, settings_merge, shim

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
    ccm_home.write_text("oops")
    _, lines = run_doctor(project, capsys)
    assert any("is not a directory" in line for line in fixes(lines))


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
