"""``ccm-agentd install-service`` / ``uninstall-service``: a systemd user unit or a launchd agent.

The files are rendered from ``templates/`` (shipped in the package through the ``ccm_agentd/templates``
symlink). A service manager starts programs with a minimal PATH and none of the shell's setup, so
everything the daemon needs is captured here, at install time, as absolute paths: the program, tmux,
claude, and an explicit PATH (claude is a node script: its ``#!/usr/bin/env node`` needs node on it).

Like ``ccm-hooks install``: never overwrite a file ccm did not write, re-installing identical content
changes nothing on disk, every expected failure is one line saying what to do.
"""

from __future__ import annotations

import getpass
import os
import plistlib
import re
import shlex
import shutil
import string
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ccm_hooks import fileio, paths
from ccm_hooks.errors import CcmError

LABEL = "com.ccm.agentd"
UNIT = "ccm-agentd.service"
PLIST = f"{LABEL}.plist"
MARKER = b"written by ccm-agentd install-service"  # first comment of both templates
# Read by the service manager, like the files `systemctl edit` and `brew services` write; nothing secret.
SERVICE_FILE_MODE = 0o644
TIMEOUT = 45.0  # seconds per loader command; above the unit's TimeoutStartSec (restart waits for READY=1)
BOOTSTRAP_RETRIES, BOOTSTRAP_RETRY_DELAY = 5, 1.0
_SYSTEMD_SAFE = re.compile(r"[A-Za-z0-9/_.,:+=@-]+")


def template_text(name: str) -> str:
    return resources.files("ccm_agentd").joinpath("templates", name).read_text("utf-8")


@dataclass(frozen=True)
class Tools:
    argv: tuple[str, ...]  # what the service runs
    tmux: str
    claude: str  # "" when not found
    path: str  # the PATH the service gets


@dataclass(frozen=True)
class Host:
    """Where to install: the platform, home, environment and uid of this process unless a test says."""

    platform: str = sys.platform
    home: Path = field(default_factory=Path.home)
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    uid: int = field(default_factory=os.getuid)

    @property
    def kind(self) -> str:
        if self.platform == "darwin":
            return "launchd"
        if self.platform.startswith("linux"):
            return "systemd"
        raise CcmError(
            f"install-service supports Linux (systemd) and macOS (launchd), not {self.platform}; "
            "run `ccm-agentd run` under your own supervisor"
        )

    @property
    def file(self) -> Path:
        if self.kind == "launchd":
            return self.home / "Library" / "LaunchAgents" / PLIST
        # A relative XDG_CONFIG_HOME is invalid by the XDG spec and is ignored, as systemd does.
        config = self.environ.get("XDG_CONFIG_HOME", "")
        return (Path(config) if os.path.isabs(config) else self.home / ".config") / "systemd" / "user" / UNIT

    @property
    def service(self) -> str:  # launchd's name for the loaded agent
        return f"gui/{self.uid}/{LABEL}"


def _tool(name: str, var: str, environ: Mapping[str, str], search: str, extra: Sequence[Path] = ()) -> str:
    override = environ.get(var, "")
    if override:
        if not (os.path.isabs(override) and os.path.isfile(override) and os.access(override, os.X_OK)):
            raise CcmError(
                f"{var}={override} is not an executable file; set it to the absolute path of {name}"
            )
        return override
    found = shutil.which(name, path=search)
    if found is None:
        found = next((os.fspath(p) for p in extra if p.is_file() and os.access(p, os.X_OK)), None)
    return os.path.abspath(found) if found else ""


def discover(environ: Mapping[str, str], home: Path) -> Tools:
    """The absolute paths the service will use, found with the current PATH (and CCM_TMUX / CCM_CLAUDE)."""
    python = os.path.abspath(sys.executable)  # not resolved: a venv's python survives a base upgrade
    script = Path(python).parent / "ccm-agentd"
    argv = (os.fspath(script), "run") if os.access(script, os.X_OK) else (python, "-m", "ccm_agentd", "run")
    # Only absolute entries: a relative one would mean whatever directory the service manager starts in.
    current = [d for d in environ.get("PATH", os.defpath).split(os.pathsep) if os.path.isabs(d)]
    search = os.pathsep.join(current)
    tmux = _tool("tmux", "CCM_TMUX", environ, search)
    if not tmux:
        raise CcmError(
            "tmux not found on PATH; install it (apt install tmux / brew install tmux) or set CCM_TMUX "
            "to its absolute path, then run ccm-agentd install-service again"
        )
    # claude missing is not fatal: the daemon acts on sessions through tmux and needs claude only to start
    # new ones, so the service is still useful; install_service warns, and CCM_CLAUDE is left empty.
    installers = (home / ".local" / "bin" / "claude", home / ".claude" / "local" / "claude")
    claude = _tool("claude", "CCM_CLAUDE", environ, search, installers)
    # The tools' own directories first: node usually sits next to claude (nvm, npm prefix, Homebrew).
    dirs = [os.path.dirname(p) for p in (python, tmux, claude) if p] + current
    keep = [d for d in dict.fromkeys(os.path.normpath(d) for d in dirs) if ":" not in d and os.path.isdir(d)]
    return Tools(argv, tmux, claude, os.pathsep.join(keep))


# --- rendering ------------------------------------------------------------------------------------------


def _check(value: str) -> str:
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise CcmError(f"{value!r} contains a control character; use paths without line breaks or tabs")
    return value


def _sd_quoted(value: str, exec_line: bool = False) -> str:
    """``value`` as the inside of a double-quoted systemd string (``%`` is a specifier, ``$`` expands)."""
    text = _check(value).replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    return text.replace("$", "$$") if exec_line else text


def _sd_exec(argv: Sequence[str]) -> str:
    """An ExecStart line: each word bare when plainly safe, else double-quoted."""
    if any(c in "\"'\\" for c in argv[0]):  # systemd refuses these in the program path, even quoted
        raise CcmError(f"systemd cannot run {argv[0]!r} (quotes or backslashes); install ccm in another venv")
    # The program path gets specifier (%) expansion only; the arguments also get $VAR expansion.
    words = [_sd_quoted(arg, exec_line=n > 0) for n, arg in enumerate(argv)]
    return " ".join(w if _SYSTEMD_SAFE.fullmatch(w) else f'"{w}"' for w in words)


def _documentation() -> str:
    # No project URL yet: the README of a checkout (editable install), else the installed package.
    package = Path(__file__).resolve().parent
    readme = package.parent / "README.md"
    return (readme if readme.is_file() else package).as_uri()


def render_unit(tools: Tools, ccm_home: str) -> str:
    return string.Template(template_text(UNIT)).substitute(
        documentation=_sd_quoted(_documentation()),
        exec_start=_sd_exec(tools.argv),
        path=_sd_quoted(tools.path),
        ccm_home=_sd_quoted(ccm_home),
        tmux=_sd_quoted(tools.tmux),
        claude=_sd_quoted(tools.claude),
    )


def _fill(node: Any, values: Mapping[str, str], lists: Mapping[str, list[str]]) -> Any:
    """Substitute ``${name}`` in every string; an array item that is exactly ``${name}`` of a list splices."""
    if isinstance(node, dict):
        return {key: _fill(value, values, lists) for key, value in node.items()}
    if isinstance(node, list):
        out: list[Any] = []
        for item in node:
            spliced = lists.get(item[2:-1]) if isinstance(item, str) and item.startswith("${") else None
            out.extend(spliced if spliced is not None else [_fill(item, values, lists)])
        return out
    if isinstance(node, str):
        return string.Template(node).substitute(values)
    return node


def render_plist(tools: Tools, ccm_home: str) -> bytes:
    """The launchd agent: the template's keys and order, values escaped by plistlib, its comment kept."""
    text = template_text(PLIST)
    values = {
        "label": LABEL,
        "path": tools.path,
        "ccm_home": ccm_home,
        "tmux": tools.tmux,
        "claude": tools.claude,
        # Only the daemon's stdout/stderr (crashes before its own rotating log is set up): small.
        "log": os.path.join(paths.log_dir(ccm_home), "agentd.launchd.log"),
    }
    for value in (*values.values(), *tools.argv):
        _check(value)
    doc = _fill(plistlib.loads(text.encode("utf-8")), values, {"argv": list(tools.argv)})
    comment = re.search(r"<!--.*?-->", text, re.DOTALL)
    body = plistlib.dumps(doc, sort_keys=False)
    return body.replace(b"<plist ", comment.group(0).encode("utf-8") + b"\n<plist ", 1) if comment else body


def render(kind: str, tools: Tools, ccm_home: str) -> bytes:
    if kind == "launchd":
        return render_plist(tools, ccm_home)
    return render_unit(tools, ccm_home).encode("utf-8")


# --- loading --------------------------------------------------------------------------------------------


def _run(argv: Sequence[str], host: Host) -> subprocess.CompletedProcess[str] | None:
    """Run systemctl / launchctl found on the caller's PATH (tests put stubs there); None: not installed."""
    exe = shutil.which(argv[0], path=host.environ.get("PATH", os.defpath))
    if exe is None:
        return None
    try:
        # The caller's environment: systemctl --user finds the user bus through XDG_RUNTIME_DIR.
        return subprocess.run(
            [exe, *argv[1:]], env=dict(host.environ), stdin=subprocess.DEVNULL, capture_output=True,
            text=True, timeout=TIMEOUT, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise CcmError(
            f"`{shlex.join(argv)}` did not finish within {TIMEOUT:.0f}s; check the service manager "
            "(and the daemon's log), then run the command again"
        ) from None


def _failed(argv: list[str], result: subprocess.CompletedProcess[str], host: Host, action: str) -> CcmError:
    lines = [line.strip() for line in (result.stderr + "\n" + result.stdout).splitlines() if line.strip()]
    reason = lines[0][:300] if lines else f"exit status {result.returncode}"
    if host.kind == "launchd":
        hint = f"see `launchctl print {host.service}` and the logs under $CCM_HOME/log"
    elif "bus" in reason.lower() or "XDG_RUNTIME_DIR" in reason:
        hint = (
            "no systemd user manager is reachable from here: run this from a login session (not sudo/su), "
            "or `loginctl enable-linger $USER` and export XDG_RUNTIME_DIR=/run/user/$(id -u)"
        )
    else:
        hint = f"see `systemctl --user status {UNIT}` and `journalctl --user -u {UNIT}`"
    state = "written" if action == "install-service" else "left in place; or delete it by hand"
    return CcmError(f"`{shlex.join(argv)}` failed: {reason}; {hint}, then run ccm-agentd {action} again "
                    f"({host.file} is {state})")  # fmt: skip


def _systemctl(*args: str) -> list[str]:
    return ["systemctl", "--user", *args]


def _load_commands(host: Host) -> list[list[str]]:
    if host.kind == "systemd":
        # restart, not enable --now: a reinstall must replace a daemon that is already running.
        return [_systemctl("daemon-reload"), _systemctl("enable", UNIT), _systemctl("restart", UNIT)]
    # enable: undoes an earlier `launchctl disable`, which would make bootstrap fail.
    return [
        ["launchctl", "enable", host.service],
        ["launchctl", "bootstrap", f"gui/{host.uid}", str(host.file)],
    ]


def _launchd_loaded(host: Host) -> bool:
    result = _run(["launchctl", "print", host.service], host)
    return result is not None and result.returncode == 0


def _load(host: Host) -> None:
    commands = _load_commands(host)
    if host.kind == "launchd" and _launchd_loaded(host):
        # bootstrap refuses a loaded label, and the old agent would keep running with the old paths.
        commands.insert(0, ["launchctl", "bootout", host.service])
    for done, cmd in enumerate(commands):
        result = _run(cmd, host)
        # Right after a bootout launchd may still be draining the old job and bootstrap fails (errno 5).
        retries = BOOTSTRAP_RETRIES if cmd[1] == "bootstrap" and commands[0][1] == "bootout" else 0
        while result is not None and result.returncode != 0 and retries:
            retries -= 1
            time.sleep(BOOTSTRAP_RETRY_DELAY)
            result = _run(cmd, host)
        if result is None:
            by_hand = " && ".join(shlex.join(c) for c in commands[done:])
            raise CcmError(f"wrote {host.file}, but {cmd[0]} is not on PATH; load it by hand: {by_hand}")
        if result.returncode != 0:
            raise _failed(cmd, result, host, "install-service")


# --- commands -------------------------------------------------------------------------------------------


def _existing(file: Path, action: str) -> bytes | None:
    """The bytes at ``file`` if install-service wrote them, None if there is no file; refuse anything else."""
    again = f"then run ccm-agentd {action} again"
    if file.is_symlink():
        raise CcmError(f"{file} is a symlink, not a file install-service wrote; move it aside, {again}")
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CcmError(f"cannot read {file}: {exc.strerror}; fix or move it aside, {again}") from None
    if MARKER not in data[:1024]:
        raise CcmError(
            f"{file} was not written by ccm-agentd install-service; to replace it move it aside, {again}"
        )
    return data


def _ccm_home(environ: Mapping[str, str]) -> str:
    env = environ.get("CCM_HOME", "")
    if env and not os.path.isabs(env):
        # The hooks and the daemon must agree on one state dir; a relative one depends on the cwd.
        raise CcmError(f"CCM_HOME={env} is a relative path; set it to an absolute one")
    return paths.state_dir(dict(environ))


def install_service(dry_run: bool = False, host: Host | None = None) -> int:
    host = host or Host()
    ccm_home = _ccm_home(host.environ)
    tools = discover(host.environ, host.home)
    data = render(host.kind, tools, ccm_home)
    file = host.file
    existing = _existing(file, "install-service")
    if not tools.claude:
        print(
            "ccm-agentd: warning: claude not found on PATH; the daemon can act on running sessions but not "
            "start new ones (set CCM_CLAUDE to its absolute path and install again to fix)",
            file=sys.stderr,
        )
    if dry_run:
        print(f"# {file}\n{data.decode('utf-8')}", end="")
        if host.kind == "launchd":
            print(f"would run: launchctl bootout {host.service} (if loaded)")
        print("".join(f"would run: {shlex.join(cmd)}\n" for cmd in _load_commands(host)), end="")
        print(f"dry run: would install the {host.kind} service {file}; nothing written", file=sys.stderr)
        return 0
    if existing == data:
        print(f"{file} is up to date")
    else:
        try:
            paths.ensure_dir(os.fspath(file.parent))
            paths.ensure_dir(paths.log_dir(ccm_home))  # launchd does not create StandardOutPath's directory
            fileio.atomic_write(os.fspath(file), data, SERVICE_FILE_MODE)
        except OSError as exc:
            raise CcmError(f"cannot write {file}: {exc.strerror}; fix its directory's permissions") from None
        print(f"wrote {file} (runs {shlex.join(tools.argv)})")
    _load(host)
    logs = os.path.join(paths.log_dir(ccm_home), "agentd.log")
    if host.kind == "launchd":
        print(f"loaded {LABEL} into gui/{host.uid}; logs: {logs}")
        return 0
    print(f"enabled and (re)started {UNIT}; logs: {logs}, journalctl --user -u {UNIT}")
    if not os.path.exists(f"/var/lib/systemd/linger/{getpass.getuser()}"):
        print("note: the service stops when you log out; `loginctl enable-linger $USER` keeps it running")
    return 0


def uninstall_service(host: Host | None = None) -> int:
    host = host or Host()
    file = host.file
    if _existing(file, "uninstall-service") is None:
        print(f"no ccm-agentd service installed ({file} does not exist), nothing to change")
        return 0
    if host.kind == "systemd":
        stop = _systemctl("disable", "--now", UNIT)
    else:
        stop = ["launchctl", "bootout", host.service] if _launchd_loaded(host) else []
    # None: no systemctl/launchctl here, so nothing can have loaded the file; removing it is the uninstall.
    result = _run(stop, host) if stop else None
    if result is not None and result.returncode != 0:
        raise _failed(stop, result, host, "uninstall-service")
    stopped = f"stopped: {shlex.join(stop)}" if result is not None else f"{file.name} was not loaded"
    print(stopped)
    try:
        file.unlink()
    except OSError as exc:
        raise CcmError(f"cannot remove {file}: {exc.strerror}; remove it by hand") from None
    print(f"removed {file}")
    if host.kind == "systemd" and result is not None:
        reload = _run(_systemctl("daemon-reload"), host)
        if reload is not None and reload.returncode != 0:  # cosmetic: the unit is stopped and its file gone
            print(
                f"ccm-agentd: warning: systemctl --user daemon-reload failed, exit {reload.returncode}",
                file=sys.stderr,
            )
    return 0


def install_service_cmd(dry_run: bool) -> int:
    return install_service(dry_run)


def uninstall_service_cmd() -> int:
    return uninstall_service()
