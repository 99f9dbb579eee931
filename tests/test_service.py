"""install-service / uninstall-service: rendered files checked by systemd-analyze and plistlib, flows run
against stub systemctl / launchctl (the real managers cannot run here) that record their argv."""

from __future__ import annotations

import os
import plistlib
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from ccm_agentd import service
from ccm_hooks.errors import CcmError

REPO = Path(__file__).resolve().parent.parent
CLI = Path(sys.executable).parent / "ccm-agentd"
UID = 501

STUB = """#!/bin/sh
echo "${0##*/} $*" >> "$STUB_LOG"
for word in "$@"; do
    [ "$word" = "${STUB_FAIL:-}" ] || continue
    failed=$(cat "$STUB_LOG.failed" 2>/dev/null || echo 0)
    echo $((failed + 1)) > "$STUB_LOG.failed"
    if [ "$failed" -lt "${STUB_FAIL_TIMES:-999}" ]; then echo "${STUB_MESSAGE:-it failed}" >&2; exit 1; fi
done
if [ "${0##*/}" = launchctl ] && [ "$1" = print ]; then
    [ -n "${STUB_LOADED:-}" ] && exit 0
    echo "Could not find service" >&2; exit 113
fi
exit 0
"""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("CCM_TMUX", "CCM_CLAUDE", "XDG_CONFIG_HOME", "NOTIFY_SOCKET", "STUB_FAIL", "STUB_FAIL_TIMES",
                "STUB_LOADED"):  # fmt: skip
        monkeypatch.delenv(var, raising=False)


def executable(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


@pytest.fixture
def stubs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """systemctl and launchctl stubs first on PATH, plus a claude (a node script, as npm installs it)."""
    bin_dir = tmp_path / "stubs"
    for name in ("systemctl", "launchctl"):
        executable(bin_dir / name, STUB)
    executable(tmp_path / "tools" / "claude", "#!/usr/bin/env node\n")
    log = tmp_path / "loader.log"
    log.touch()
    monkeypatch.setenv("STUB_LOG", os.fspath(log))
    monkeypatch.setenv("PATH", f"{bin_dir}:{tmp_path / 'tools'}:{os.environ['PATH']}")
    return log


def calls(log: Path) -> list[str]:
    return log.read_text().splitlines()


def host(platform: str = "linux", **env: str) -> service.Host:
    return service.Host(platform=platform, home=Path.home(), environ={**os.environ, **env}, uid=UID)


def tools_here() -> service.Tools:
    return service.discover(os.environ, Path.home())


def need_tmux() -> None:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (install/dev-setup.sh installs it)")


# --- templates and rendering -----------------------------------------------------------------------------


def test_the_package_ships_the_templates_through_a_symlink() -> None:
    link = REPO / "ccm_agentd" / "templates"
    assert link.is_symlink() and os.readlink(link) == "../templates"
    for name in (service.UNIT, service.PLIST):
        packaged = resources.files("ccm_agentd").joinpath("templates", name).read_text("utf-8")
        assert packaged == (REPO / "templates" / name).read_text("utf-8")
        assert service.MARKER.decode() in packaged.splitlines()[0 if name == service.UNIT else 2]


def test_unit_has_what_systemd_needs(stubs: Path) -> None:
    need_tmux()
    tools = tools_here()
    unit = service.render_unit(tools, "/srv/ccm state")
    lines = unit.splitlines()
    expected = [
        "Type=notify",
        "NotifyAccess=main",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
    ]
    expected += ["RestartSec=5", "WatchdogSec=60", "WantedBy=default.target", "KillMode=process"]
    assert set(expected) <= set(lines)
    assert re.search(r"^Description=\S", unit, re.M) and re.search(r"^Documentation=file:///\S", unit, re.M)
    assert f"ExecStart={CLI} run" in lines
    assert f'Environment="PATH={tools.path}"' in lines
    assert 'Environment="CCM_HOME=/srv/ccm state"' in lines
    assert f'Environment="CCM_TMUX={shutil.which("tmux")}"' in lines
    assert f'Environment="CCM_CLAUDE={stubs.parent / "tools" / "claude"}"' in lines
    assert "$" not in unit.replace("$MAINPID", "").replace("$WATCHDOG_USEC", "")


def systemd_verify(unit_text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt install systemd)")
    unit = tmp_path / "verify" / service.UNIT
    unit.parent.mkdir()
    unit.write_text(unit_text)
    runtime = tmp_path / "runtime"  # --user needs a runtime dir even to verify; a private one will do
    runtime.mkdir(mode=0o700)
    env = {**os.environ, "XDG_RUNTIME_DIR": os.fspath(runtime), "SYSTEMD_LOG_COLOR": "0"}
    return subprocess.run(
        [analyze, "verify", "--user", os.fspath(unit)], env=env, capture_output=True, text=True, timeout=60
    )


def test_rendered_unit_passes_systemd_analyze_verify(stubs: Path, tmp_path: Path) -> None:
    need_tmux()
    result = systemd_verify(service.render_unit(tools_here(), paths_ccm_home()), tmp_path)
    assert (result.returncode, result.stderr, result.stdout) == (0, "", "")


def paths_ccm_home() -> str:
    return os.environ["CCM_HOME"]


def test_awkward_paths_are_quoted_so_systemd_reads_them_back(tmp_path: Path) -> None:
    """systemd-analyze only accepts the ExecStart binary if it unquotes it to the real file's name, and
    reports any Environment= line it cannot parse."""
    odd = tmp_path / "dir with $HOME and 100%"
    python = odd / "py thon"
    odd.mkdir()
    python.symlink_to(sys.executable)
    nasty = f"{odd}/\"quoted\" \\back 'single'"
    tools = service.Tools((os.fspath(python), "-c", nasty, "run"), "/usr/bin/tmux", nasty, os.fspath(odd))
    unit = service.render_unit(tools, nasty)
    assert f'ExecStart="{tmp_path}/dir with $HOME and 100%%/py thon" -c ' in unit
    result = systemd_verify(unit, tmp_path)
    assert (result.returncode, result.stderr) == (0, "")
    with pytest.raises(CcmError, match="control character"):
        service.render_unit(service.Tools(("/bin/a\nb", "run"), "/usr/bin/tmux", "", "/bin"), "/x")
    with pytest.raises(CcmError, match="systemd cannot run"):
        service.render_unit(service.Tools(('/opt/"x"/python', "run"), "/usr/bin/tmux", "", "/bin"), "/x")


def systemd_dump(unit_text: str) -> list[str]:
    """The ccm-agentd.service section of `systemd --test --user`: the unit as the manager parsed it."""
    systemd = next(
        (p for p in ("/lib/systemd/systemd", "/usr/lib/systemd/systemd") if os.access(p, os.X_OK)), None
    )
    if systemd is None:
        pytest.skip("no systemd binary (apt install systemd)")
    prefix: list[str] = []
    if os.getuid() == 0:  # systemd refuses test mode as root: run it as nobody
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root and setpriv (util-linux) is missing")
        prefix = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
    base = Path(tempfile.mkdtemp(prefix="ccm-sd-"))  # outside tmp_path, which nobody cannot enter
    try:
        base.chmod(0o755)
        unit = base / "home" / ".config" / "systemd" / "user" / service.UNIT
        unit.parent.mkdir(parents=True)
        for d in (base / "home", *unit.parents[:3]):
            d.chmod(0o755)
        unit.write_text(unit_text)
        unit.chmod(0o644)
        runtime = base / "run"
        runtime.mkdir(mode=0o700)
        if prefix:
            os.chown(runtime, 65534, 65534)
        env = {"HOME": os.fspath(base / "home"), "XDG_RUNTIME_DIR": os.fspath(runtime), "PATH": os.defpath}
        cmd = [*prefix, systemd, "--test", "--user", f"--unit={service.UNIT}", "--log-target=console"]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60).stdout
    finally:
        shutil.rmtree(base)
    lines = out.splitlines()
    start = next((n for n, line in enumerate(lines) if line.strip() == f"-> Unit {service.UNIT}:"), None)
    if start is None:
        pytest.skip("`systemd --test --user` did not dump the unit (changed output in this systemd version?)")
    end = next((n for n in range(start + 1, len(lines)) if lines[n].startswith("\t-> Unit ")), len(lines))
    return [line.strip() for line in lines[start + 1 : end]]


def test_systemd_parses_the_values_back_exactly() -> None:
    """verify does not notice a mis-quoted Environment=; the manager's own dump of the parsed unit does."""
    nasty = "/o d/\"q\" \\b 'single' $HOME 100% ;x"
    tools = service.Tools(("/usr/bin/env", nasty, "run"), "/usr/bin/tmux", nasty, f"/usr/bin:{nasty}")
    dump = systemd_dump(service.render_unit(tools, "/h o/me"))
    assert [line for line in dump if line.startswith("Environment:")] == [
        f"Environment: PATH=/usr/bin:{nasty}",
        "Environment: CCM_HOME=/h o/me",
        "Environment: CCM_TMUX=/usr/bin/tmux",
        f"Environment: CCM_CLAUDE={nasty}",
    ]
    # Shown shell-quoted (`$` as `\$`, which shlex leaves alone); `$$` is kept as written until the command
    # runs, then becomes `$`.
    [command] = [
        line.removeprefix("Command Line: ") for line in dump if line.startswith("Command Line: /usr/bin/env")
    ]
    assert shlex.split(command.replace("\\$", "$")) == ["/usr/bin/env", nasty.replace("$", "$$"), "run"]
    for line in (
        "Type: notify",
        "NotifyAccess: main",
        "Restart: on-failure",
        "WatchdogSec: 1min",
        "KillMode: process",
    ):
        assert line in dump


def test_plist_parses_and_has_the_keys_launchd_needs(stubs: Path) -> None:
    need_tmux()
    tools = tools_here()
    data = service.render("launchd", tools, "/Users/me/.ccm")
    doc: dict[str, Any] = plistlib.loads(data)
    template = plistlib.loads((REPO / "templates" / service.PLIST).read_bytes())
    assert list(doc) == list(template)  # the template is the source of the keys and their order
    assert doc["Label"] == "com.ccm.agentd"
    assert doc["ProgramArguments"] == [os.fspath(CLI), "run"]
    assert all(os.path.isabs(arg) for arg in doc["ProgramArguments"][:1])
    assert doc["EnvironmentVariables"] == {
        "PATH": tools.path,
        "CCM_HOME": "/Users/me/.ccm",
        "CCM_TMUX": shutil.which("tmux"),
        "CCM_CLAUDE": os.fspath(stubs.parent / "tools" / "claude"),
    }
    assert doc["RunAtLoad"] is True
    assert doc["KeepAlive"] == {"SuccessfulExit": False}
    assert doc["ThrottleInterval"] == 5 and doc["ProcessType"] == "Background"
    assert doc["StandardOutPath"] == doc["StandardErrorPath"] == "/Users/me/.ccm/log/agentd.launchd.log"
    assert service.MARKER in data and data.startswith(b"<?xml")


def test_plist_escapes_xml_and_splices_the_argv() -> None:
    weird = "/Users/a&b <c> 'd' \"e\" ]]>/bin"
    tools = service.Tools((f"{weird}/python3", "-m", "ccm_agentd", "run"), f"{weird}/tmux", "", weird)
    doc = plistlib.loads(service.render_plist(tools, weird))
    assert doc["ProgramArguments"] == [f"{weird}/python3", "-m", "ccm_agentd", "run"]
    assert doc["EnvironmentVariables"]["PATH"] == weird
    assert doc["EnvironmentVariables"]["CCM_CLAUDE"] == ""


# --- discovery -------------------------------------------------------------------------------------------


def test_path_puts_the_tools_dirs_first_and_keeps_only_real_absolute_dirs(tmp_path: Path) -> None:
    need_tmux()
    tmux_dir = os.path.dirname(shutil.which("tmux") or "")
    claude = executable(tmp_path / "node-bin" / "claude", "#!/usr/bin/env node\n")
    env = {"PATH": f"relative:{tmp_path / 'missing'}:/usr/bin:{tmux_dir}:/usr/bin/:{claude.parent}:/bin"}
    tools = service.discover(env, Path.home())
    entries = tools.path.split(":")
    assert entries[:3] == [os.path.dirname(sys.executable), tmux_dir, os.fspath(claude.parent)]
    assert len(entries) == len(set(entries))
    assert all(os.path.isabs(e) and os.path.isdir(e) for e in entries)
    assert "/bin" in entries and "/usr/bin" in entries
    assert tools.argv == (os.fspath(CLI), "run")


def test_tmux_missing_is_an_error_saying_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(CcmError, match=r"tmux not found on PATH; install it .* or set CCM_TMUX"):
        service.discover({"PATH": os.fspath(tmp_path)}, Path.home())


def test_overrides_and_the_claude_installers_locations(tmp_path: Path, private_home: Path) -> None:
    tmux = executable(tmp_path / "opt" / "tmux", "#!/bin/sh\n")
    claude = executable(private_home / ".local" / "bin" / "claude", "#!/bin/sh\n")
    tools = service.discover({"PATH": os.fspath(tmp_path), "CCM_TMUX": os.fspath(tmux)}, private_home)
    assert (tools.tmux, tools.claude) == (os.fspath(tmux), os.fspath(claude))
    with pytest.raises(CcmError, match="CCM_CLAUDE=claude is not an executable file"):
        service.discover({"PATH": "/bin", "CCM_TMUX": os.fspath(tmux), "CCM_CLAUDE": "claude"}, private_home)


# --- install / uninstall flows ---------------------------------------------------------------------------

SYSTEMD_LOAD = [
    "systemctl --user daemon-reload",
    "systemctl --user enable ccm-agentd.service",
    "systemctl --user restart ccm-agentd.service",
]


def test_systemd_install_then_uninstall(
    stubs: Path, private_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    need_tmux()
    unit = private_home / ".config" / "systemd" / "user" / "ccm-agentd.service"
    assert service.install_service(host=host()) == 0
    assert calls(stubs) == SYSTEMD_LOAD
    assert unit.read_bytes() == service.render("systemd", tools_here(), paths_ccm_home())
    assert stat.S_IMODE(unit.stat().st_mode) & 0o777 == 0o644 & ~current_umask()
    out = capsys.readouterr().out
    assert f"wrote {unit} (runs {CLI} run)" in out and "enabled and (re)started ccm-agentd.service" in out

    stubs.write_text("")
    assert service.uninstall_service(host()) == 0
    assert calls(stubs) == [
        "systemctl --user disable --now ccm-agentd.service",
        "systemctl --user daemon-reload",
    ]
    assert not unit.exists()
    assert f"removed {unit}" in capsys.readouterr().out


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_reinstall_with_identical_content_changes_nothing_on_disk(stubs: Path, private_home: Path) -> None:
    need_tmux()
    assert service.install_service(host=host()) == 0
    unit = service.Host(platform="linux", home=private_home, environ=dict(os.environ)).file
    before = unit.stat()
    assert service.install_service(host=host()) == 0
    after = unit.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert calls(stubs) == SYSTEMD_LOAD * 2  # still (re)started: a reinstall is also how to pick up new code


def test_xdg_config_home_is_respected(stubs: Path, tmp_path: Path) -> None:
    need_tmux()
    assert service.install_service(host=host(XDG_CONFIG_HOME=os.fspath(tmp_path / "cfg"))) == 0
    assert (tmp_path / "cfg" / "systemd" / "user" / "ccm-agentd.service").is_file()


@pytest.mark.parametrize("loaded", [False, True])
def test_launchd_install_then_uninstall(
    stubs: Path, private_home: Path, monkeypatch: pytest.MonkeyPatch, loaded: bool
) -> None:
    need_tmux()
    if loaded:
        monkeypatch.setenv("STUB_LOADED", "1")
    plist = private_home / "Library" / "LaunchAgents" / "com.ccm.agentd.plist"
    assert service.install_service(host=host("darwin")) == 0
    target = f"gui/{UID}/com.ccm.agentd"
    bootout = [f"launchctl bootout {target}"] if loaded else []
    expected = [f"launchctl print {target}", *bootout, f"launchctl enable {target}"]
    assert calls(stubs) == [*expected, f"launchctl bootstrap gui/{UID} {plist}"]
    assert plistlib.loads(plist.read_bytes())["Label"] == "com.ccm.agentd"
    assert (Path(paths_ccm_home()) / "log").is_dir()  # launchd would not create the log's directory

    stubs.write_text("")
    assert service.uninstall_service(host("darwin")) == 0
    assert calls(stubs) == [f"launchctl print {target}", *bootout]
    assert not plist.exists()


def test_bootstrap_is_retried_while_launchd_drains_the_old_job(
    stubs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    need_tmux()
    monkeypatch.setattr(service, "BOOTSTRAP_RETRY_DELAY", 0.01)
    for var, value in (("STUB_LOADED", "1"), ("STUB_FAIL", "bootstrap"), ("STUB_FAIL_TIMES", "2")):
        monkeypatch.setenv(var, value)
    monkeypatch.setenv("STUB_MESSAGE", "Bootstrap failed: 5: Input/output error")
    assert service.install_service(host=host("darwin")) == 0
    assert [c.split()[1] for c in calls(stubs)] == ["print", "bootout", "enable", *["bootstrap"] * 3]


def test_launchd_failure_is_one_line_naming_the_command(stubs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    need_tmux()
    monkeypatch.setenv("STUB_FAIL", "bootstrap")
    with pytest.raises(CcmError) as err:
        service.install_service(host=host("darwin"))
    message = str(err.value)
    assert message.startswith(f"`launchctl bootstrap gui/{UID} {host('darwin').file}` failed: it failed; ")
    assert f"see `launchctl print gui/{UID}/com.ccm.agentd`" in message and "\n" not in message
    assert [c.split()[1] for c in calls(stubs)] == ["print", "enable", "bootstrap"]  # not loaded: no retries


@pytest.mark.parametrize("platform", ["linux", "darwin"])
def test_foreign_file_is_refused_and_left_byte_identical(stubs: Path, platform: str) -> None:
    need_tmux()
    file = host(platform).file
    file.parent.mkdir(parents=True)
    foreign = b"[Service]\nExecStart=/usr/bin/something-else\n"
    file.write_bytes(foreign)
    for uninstall in (False, True):
        with pytest.raises(CcmError, match="was not written by ccm-agentd install-service"):
            service.uninstall_service(host(platform)) if uninstall else service.install_service(
                host=host(platform)
            )
        assert file.read_bytes() == foreign
    file.unlink()
    file.symlink_to("/dev/null")
    with pytest.raises(CcmError, match="is a symlink"):
        service.install_service(host=host(platform))
    assert calls(stubs) == []


@pytest.mark.parametrize("platform", ["linux", "darwin"])
def test_dry_run_prints_the_file_and_commands_and_writes_nothing(
    stubs: Path, private_home: Path, platform: str, capsys: pytest.CaptureFixture[str]
) -> None:
    need_tmux()
    before = sorted(private_home.rglob("*"))
    assert service.install_service(True, host(platform)) == 0
    out, err = capsys.readouterr()
    data = service.render(host(platform).kind, tools_here(), paths_ccm_home()).decode()
    assert f"# {host(platform).file}\n{data}" in out
    assert ("would run: systemctl --user restart ccm-agentd.service" if platform == "linux"
            else f"would run: launchctl bootstrap gui/{UID} {host(platform).file}") in out  # fmt: skip
    assert "nothing written" in err
    assert sorted(private_home.rglob("*")) == before
    assert calls(stubs) == []


def test_uninstall_when_nothing_is_installed(stubs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert service.uninstall_service(host()) == 0
    assert "nothing to change" in capsys.readouterr().out
    assert calls(stubs) == []


def test_claude_missing_installs_with_a_warning(
    stubs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    need_tmux()
    (tmp_path / "tools" / "claude").unlink()
    if shutil.which("claude") is not None:
        pytest.skip("a real claude is on PATH")
    assert service.install_service(host=host()) == 0
    assert 'Environment="CCM_CLAUDE="' in host().file.read_text().splitlines()
    assert "warning: claude not found on PATH" in capsys.readouterr().err


def test_missing_systemctl_leaves_the_file_and_says_what_to_run(tmp_path: Path) -> None:
    need_tmux()
    env = {"PATH": os.fspath(tmp_path), "CCM_TMUX": shutil.which("tmux") or ""}
    with pytest.raises(CcmError) as err:
        service.install_service(host=host(**env))
    assert str(err.value).endswith("load it by hand: " + " && ".join(SYSTEMD_LOAD))
    assert host().file.is_file()


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=60)


def test_no_user_bus_through_the_real_cli_is_one_line_and_exit_1(stubs: Path) -> None:
    need_tmux()
    bus = "Failed to connect to bus: No medium found"
    result = run_cli("install-service", STUB_FAIL="daemon-reload", STUB_MESSAGE=bus)
    assert result.returncode == 1, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f"ccm-agentd: `systemctl --user daemon-reload` failed: {bus}; ")
    assert "loginctl enable-linger" in line and "Traceback" not in result.stderr
    assert calls(stubs) == ["systemctl --user daemon-reload"]
    assert host().file.is_file()  # written; loading it is what failed


def test_failed_start_and_failed_stop_through_the_real_cli(stubs: Path) -> None:
    need_tmux()
    result = run_cli(
        "install-service", STUB_FAIL="restart", STUB_MESSAGE="Job for ccm-agentd.service failed."
    )
    assert result.returncode == 1
    assert "see `systemctl --user status ccm-agentd.service`" in result.stderr
    assert len(result.stderr.splitlines()) == 1
    result = run_cli("uninstall-service", STUB_FAIL="disable")
    assert result.returncode == 1 and "is left in place" in result.stderr
    assert host().file.is_file()
    result = run_cli("uninstall-service")
    assert (result.returncode, result.stderr) == (0, "")
    assert not host().file.exists()


def test_dry_run_through_the_real_cli(stubs: Path) -> None:
    need_tmux()
    result = run_cli("install-service", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "Type=notify" in result.stdout and not host().file.exists()


def test_unsupported_platform_and_relative_ccm_home() -> None:
    with pytest.raises(CcmError, match=r"supports Linux .* not win32"):
        service.install_service(host=host("win32"))
    with pytest.raises(CcmError, match="CCM_HOME=rel is a relative path"):
        service.install_service(host=host(CCM_HOME="rel"))
