"""The shim and the registered command, run the way Claude Code runs them: ``/bin/sh -c`` with a bare env."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from ccm_hooks.commands import installer, settings_merge, shim

PAYLOADS = Path(__file__).resolve().parent / "fixtures" / "payloads"
CLI = shutil.which("ccm-hooks", path=os.path.dirname(sys.executable)) or "ccm-hooks"
# The handler is written by someone else; until it exists the end-to-end tests check only what the
# command itself guarantees (exit 0, silence).
HAVE_HANDLER = importlib.util.find_spec("ccm_hooks.handler") is not None
MINIMAL_PATH = "/usr/bin:/bin"  # what tmux/launchd/cron often give claude: no venv on it


def registered_command(settings: Path, event: str) -> str:
    doc = json.loads(settings.read_text())
    cmd: str
    [cmd] = [h["command"] for g in doc["hooks"][event] for h in g["hooks"] if settings_merge.is_ours(h)]
    return cmd


def run_as_claude(
    cmd: str, payload: bytes, env: dict[str, str], cwd: Path
) -> subprocess.CompletedProcess[bytes]:
    """Run a hook command as Claude Code does: /bin/sh -c, payload on stdin, only the env given."""
    return subprocess.run(
        ["env", "-i", *(f"{k}={v}" for k, v in env.items()), "/bin/sh", "-c", cmd],
        input=payload,
        capture_output=True,
        cwd=cwd,
        timeout=30,
        check=False,
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    p = tmp_path / "proj"
    p.mkdir()
    return p


def test_write_shim_layout_and_modes(ccm_home: Path) -> None:
    path = shim.write_shim(ccm_home)
    assert path == ccm_home / "bin" / "ccm-hook"
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    text = path.read_text()
    first, *rest = text.splitlines()
    assert first == f"#!{os.path.abspath(sys.executable)} -IS"
    assert any("Written by `ccm-hooks install`" in line for line in rest)
    assert repr(shim.package_parent()) in text
    assert shim.shim_python(text) == os.path.abspath(sys.executable)
    assert os.listdir(path.parent) == ["ccm-hook"]  # no temp file left


def test_write_shim_replaces_and_tightens_existing(ccm_home: Path) -> None:
    bindir = ccm_home / "bin"
    bindir.mkdir(parents=True, mode=0o755)
    os.chmod(bindir, 0o755)
    (bindir / "ccm-hook").write_text("#!/bin/sh\necho stale\n")
    path = shim.write_shim(ccm_home)
    assert "stale" not in path.read_text()
    assert stat.S_IMODE(bindir.stat().st_mode) == 0o700


def test_package_parent_holds_ccm_hooks() -> None:
    assert (Path(shim.package_parent()) / "ccm_hooks" / "handler.py").exists() or not HAVE_HANDLER
    assert (Path(shim.package_parent()) / "ccm_hooks" / "commands" / "shim.py").exists()


@pytest.mark.parametrize("python", ["/opt/my tools/bin/python3", "/" + "x" * 130 + "/python3"])
def test_awkward_interpreter_paths_get_a_sh_wrapper(python: str) -> None:
    text = shim.render(python, "/some/site-packages")
    assert text.startswith("#!/bin/sh\n")
    assert shim.shim_python(text) == python
    proc = subprocess.run(["/bin/sh", "-n", "-c", text], capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_sh_wrapper_really_runs(ccm_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spaced = tmp_path / "dir with space"
    spaced.mkdir()
    (spaced / "python3").symlink_to(sys.executable)
    monkeypatch.setattr(sys, "executable", str(spaced / "python3"))
    path = shim.write_shim(ccm_home)
    assert path.read_text().startswith("#!/bin/sh\n")
    payload = (PAYLOADS / "PreToolUse__Bash.json").read_bytes()
    env = {"HOME": os.environ["HOME"], "CCM_HOME": str(ccm_home), "PATH": MINIMAL_PATH}
    proc = run_as_claude(f"exec {path} PreToolUse", payload, env, tmp_path)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"", b"")
    if HAVE_HANDLER:
        assert (ccm_home / "events" / f"{json.loads(payload)['session_id']}.jsonl").exists()


def test_registered_command_records_under_minimal_env(project: Path, ccm_home: Path) -> None:
    """THE one that matters: install, then run the registered command exactly as claude would."""
    proc = subprocess.run(
        [CLI, "install"], cwd=project, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    cmd = registered_command(project / ".claude" / "settings.json", "PreToolUse")
    payload = (PAYLOADS / "PreToolUse__Bash.json").read_bytes()
    session_id = json.loads(payload)["session_id"]
    env = {"HOME": os.environ["HOME"], "CCM_HOME": str(ccm_home), "PATH": MINIMAL_PATH}
    proc2 = run_as_claude(cmd, payload, env, project)
    assert proc2.returncode == 0
    assert proc2.stdout == b"" and proc2.stderr == b""
    if HAVE_HANDLER:
        events = ccm_home / "events" / f"{session_id}.jsonl"
        assert events.exists()
        [line] = events.read_text().splitlines()
        assert json.loads(line)  # one whole JSON record
        assert not (ccm_home / "log" / "hooks.log").exists()


def test_registered_command_uses_home_default_without_ccm_home(
    project: Path, private_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CCM_HOME")
    assert installer.install_cmd("local", project, False) == 0
    state = private_home / ".ccm"
    assert (state / "bin" / "ccm-hook").exists()
    cmd = registered_command(project / ".claude" / "settings.local.json", "Stop")
    payload = (PAYLOADS / "Stop__first.json").read_bytes()
    proc = run_as_claude(cmd, payload, {"HOME": str(private_home), "PATH": MINIMAL_PATH}, project)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"", b"")
    if HAVE_HANDLER:
        assert list((state / "events").glob("*.jsonl"))


def test_every_registered_event_with_captured_payloads(project: Path, ccm_home: Path) -> None:
    installer.install_cmd("project", project, False)
    settings = project / ".claude" / "settings.json"
    env = {"HOME": os.environ["HOME"], "CCM_HOME": str(ccm_home), "PATH": MINIMAL_PATH}
    ran = 0
    for payload_file in sorted(PAYLOADS.glob("*.json")):
        event = payload_file.name.split("__")[0]
        if event not in settings_merge.EVENTS:
            continue
        proc = run_as_claude(registered_command(settings, event), payload_file.read_bytes(), env, project)
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"", b""), payload_file.name
        ran += 1
    assert ran >= 10


def test_command_without_shim_is_a_silent_no_op(tmp_path: Path) -> None:
    empty_home = tmp_path / "teammate"
    empty_home.mkdir()
    payload = (PAYLOADS / "PreToolUse__Bash.json").read_bytes()
    for event in settings_merge.EVENTS:
        cmd = settings_merge.hook_command(event)
        for env in (
            {"HOME": str(empty_home), "PATH": MINIMAL_PATH},
            {"HOME": str(empty_home), "CCM_HOME": str(tmp_path / "nope"), "PATH": MINIMAL_PATH},
            {"PATH": MINIMAL_PATH},  # not even HOME
        ):
            proc = run_as_claude(cmd, payload, env, tmp_path)
            assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"", b"")
    assert not any(empty_home.iterdir())


def test_command_with_non_executable_shim_is_a_silent_no_op(ccm_home: Path, tmp_path: Path) -> None:
    path = shim.write_shim(ccm_home)
    os.chmod(path, 0o600)
    env = {"HOME": os.environ["HOME"], "CCM_HOME": str(ccm_home), "PATH": MINIMAL_PATH}
    proc = run_as_claude(settings_merge.hook_command("Stop"), b"{}", env, tmp_path)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"", b"")


def test_command_is_posix_sh(tmp_path: Path) -> None:
    # dash is Debian's /bin/sh; posh/busybox would be stricter still, dash is what Claude meets in practice.
    dash = shutil.which("dash")
    if dash is None:
        pytest.skip("dash not installed")
    for event in settings_merge.EVENTS:
        proc = subprocess.run(
            [dash, "-c", settings_merge.hook_command(event)],
            env={"HOME": str(tmp_path), "PATH": MINIMAL_PATH},
            capture_output=True,
            check=False,
        )
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"", b"")


def test_shim_with_missing_package_exits_0_and_says_why(ccm_home: Path, tmp_path: Path) -> None:
    (ccm_home / "log").mkdir(parents=True)
    path = ccm_home / "bin" / "ccm-hook"
    path.parent.mkdir()
    path.write_text(shim.render(os.path.abspath(sys.executable), str(tmp_path / "gone")))
    os.chmod(path, 0o700)
    env = {"HOME": os.environ["HOME"], "CCM_HOME": str(ccm_home), "PATH": MINIMAL_PATH}
    proc = run_as_claude(settings_merge.hook_command("Stop"), b"{}", env, tmp_path)
    assert proc.returncode == 0 and proc.stdout == b""
    assert b"cannot import ccm_hooks.handler" in proc.stderr
    entry = json.loads((ccm_home / "log" / "hooks.log").read_text().splitlines()[-1])
    assert entry["event"] == "Stop" and "cannot import" in entry["error"] and entry["ts"].endswith("Z")


def test_shim_ignores_pythonpath_and_pythonhome(ccm_home: Path, tmp_path: Path) -> None:
    # A poisoned ccm_hooks on PYTHONPATH must not be picked up: -I ignores PYTHON* variables.
    evil = tmp_path / "evil" / "ccm_hooks"
    evil.mkdir(parents=True)
    (evil / "__init__.py").write_text("")
    (evil / "handler.py").write_text("def main():\n    print('EVIL')\n    return 3\n")
    path = shim.write_shim(ccm_home)
    env = {
        "HOME": os.environ["HOME"],
        "CCM_HOME": str(ccm_home),
        "PATH": MINIMAL_PATH,
        "PYTHONPATH": str(tmp_path / "evil"),
    }
    payload = (PAYLOADS / "PreToolUse__Bash.json").read_bytes()
    proc = run_as_claude(f'exec "{path}" PreToolUse', payload, env, tmp_path)
    assert b"EVIL" not in proc.stdout and proc.returncode == 0


def test_install_rewrites_shim_even_when_settings_unchanged(project: Path, ccm_home: Path) -> None:
    installer.install_cmd("project", project, False)
    path = ccm_home / "bin" / "ccm-hook"
    path.unlink()
    settings = project / ".claude" / "settings.json"
    mtime = settings.stat().st_mtime_ns
    proc = subprocess.run(
        [CLI, "install"], cwd=project, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0
    assert "already installed" in proc.stdout and f"wrote hook shim {path}" in proc.stdout
    assert path.exists() and settings.stat().st_mtime_ns == mtime


# --- whose shim runs --------------------------------------------------------------------------------

FAKE_SHIM = '#!/bin/sh\necho "ran $1" >> "$MARK"\n'
SHELLS = {  # what /bin/sh is on Debian (dash), on macOS (bash in POSIX mode; zsh on request), elsewhere
    "dash": ["dash", "-c"],
    "bash-posix": ["bash", "--posix", "-c"],
    "bash": ["bash", "-c"],
    "zsh-sh": ["zsh", "--emulate", "sh", "-c"],
    "busybox": ["busybox", "sh", "-c"],
    "mksh": ["mksh", "-c"],
}


def fake_state_dir(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "state"
    shim_file = root / "bin" / "ccm-hook"
    shim_file.parent.mkdir(parents=True, mode=0o700)
    shim_file.write_text(FAKE_SHIM)
    shim_file.chmod(0o700)
    return root, tmp_path / "ran.txt"


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_registered_command_runs_only_a_shim_of_the_user(tmp_path: Path, shell: str) -> None:
    """[ -O ] on the shim and on bin/: a file (or directory) of another user is never executed."""
    argv = SHELLS[shell]
    if shutil.which(argv[0]) is None:
        if shell in ("dash", "bash"):
            raise AssertionError(f"{argv[0]} is missing")
        pytest.skip(f"{argv[0]} not installed")
    root, mark = fake_state_dir(tmp_path)
    shim_file = root / "bin" / "ccm-hook"
    cmd = settings_merge.hook_command("Stop")

    def run() -> tuple[int, bytes, bytes, str]:
        env = ["env", "-i", f"HOME={tmp_path}", f"CCM_HOME={root}", f"PATH={MINIMAL_PATH}", f"MARK={mark}"]
        proc = subprocess.run([*env, *argv, cmd], capture_output=True, timeout=30, check=False)
        ran = mark.read_text() if mark.exists() else ""
        mark.unlink(missing_ok=True)
        return proc.returncode, proc.stdout, proc.stderr, ran

    assert run() == (0, b"", b"", "ran Stop\n")
    os.chown(shim_file, 65534, 65534)  # the tests run as root: another user's file is a chown away
    assert run() == (0, b"", b"", "")
    os.chown(shim_file, os.getuid(), os.getgid())
    os.chown(shim_file.parent, 65534, 65534)
    assert run() == (0, b"", b"", "")
    os.chown(shim_file.parent, os.getuid(), os.getgid())
    shim_file.unlink()
    assert run() == (0, b"", b"", "")


@pytest.mark.parametrize("what", ["shim", "bin"])
def test_shim_writable_by_others_refuses_to_run(ccm_home: Path, tmp_path: Path, what: str) -> None:
    """What [ -O ] cannot see: the shim or bin/ open to writes by others. The shim checks itself."""
    path = shim.write_shim(ccm_home)
    (path if what == "shim" else path.parent).chmod(0o770 if what == "bin" else 0o720)
    payload = (PAYLOADS / "PreToolUse__Bash.json").read_bytes()
    env = {"HOME": os.environ["HOME"], "CCM_HOME": str(ccm_home), "PATH": MINIMAL_PATH}
    proc = run_as_claude(settings_merge.hook_command("PreToolUse"), payload, env, tmp_path)
    assert proc.returncode == 0 and proc.stdout == b""
    bad = path if what == "shim" else path.parent
    assert proc.stderr == f"ccm-hook: not run: {bad} is not yours alone; run ccm-hooks doctor\n".encode()
    assert not list(ccm_home.glob("events/*.jsonl"))  # the handler never ran


def test_install_refuses_a_bin_dir_of_another_user(ccm_home: Path, tmp_path: Path) -> None:
    (ccm_home / "bin").mkdir(parents=True)
    os.chown(ccm_home / "bin", 65534, 65534)
    project = tmp_path / "p"
    project.mkdir()
    proc = subprocess.run(
        [CLI, "install"], cwd=project, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert f"{ccm_home / 'bin'} belongs to " in proc.stderr
    assert "(uid 65534), not a directory of yours: remove it, then run ccm-hooks install again" in proc.stderr
    assert not (project / ".claude").exists()
