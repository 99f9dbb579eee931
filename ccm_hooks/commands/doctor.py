"""``ccm-hooks doctor``: check the installation and say exactly what to run to fix it.

Each check prints one line: ``ok   ...``, ``warn ...`` (worth knowing, not broken) or ``FIX  ...`` (with the
command to run). Exit 1 if any line is FIX. Everything is local and fast except ``claude --version``,
which is bounded by a timeout.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from ccm_hooks import paths
from ccm_hooks.commands import installer, jsontext, settings_merge, shim
from ccm_hooks.errors import CcmError
from ccm_hooks.statedir import editfile

TESTED_CLAUDE = (2, 1)  # the major.minor the hook facts in docs were verified against
CLAUDE_TIMEOUT = 5.0
SHIM_TIMEOUT = 5.0
RECENT = datetime.timedelta(hours=24)
LOG_TAIL_BYTES = 64 * 1024  # enough for the recent errors; a huge log must not slow doctor down
MANAGED_SETTINGS = Path("/etc/claude-code/managed-settings.json")
_VERSION_RE = re.compile(r"(\d+)\.(\d+)\.(\d+)")
_STAMP_RE = re.compile(r"\[?(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)")


class Report:
    def __init__(self, emit: Callable[[str], None] = print) -> None:
        self.emit = emit
        self.failed = False

    def ok(self, msg: str) -> None:
        self.emit(f"ok   {msg}")

    def warn(self, msg: str) -> None:
        self.emit(f"warn {msg}")

    def fix(self, msg: str) -> None:
        self.failed = True
        self.emit(f"FIX  {msg}")


def doctor_cmd(project: Path) -> int:
    root = paths.state_dir()
    problem = shim.state_dir_problem(root)
    if problem is not None and os.path.exists(root) and not os.path.isdir(root):
        raise CcmError(problem)  # nothing below can be checked: one line, exit 1
    report = Report()
    project_dir = Path(project).expanduser().resolve()
    check_state_dir(report, root)
    check_scopes(report, project_dir)
    check_shim(report, root)
    check_claude(report)
    check_tmux(report)
    check_log(report, root)
    check_watch_config(report, root)
    from ccm_hooks.commands import doctor_agentd

    doctor_agentd.check_agentd(report, root)
    doctor_agentd.check_notify(report, root)
    return 1 if report.failed else 0


def check_watch_config(report: Report, root: str) -> None:
    """config.toml is hand-edited: a mistake there silently means "no watch defaults" for handlers."""
    from ccm_hooks import watch

    path = watch.config_path(root)
    if shim.state_dir_problem(root) is not None:
        return  # said by check_state_dir; compiling would write a snapshot into a dir not ours alone
    try:
        st = os.lstat(path)
    except OSError:
        return
    if not stat.S_ISREG(st.st_mode):  # reading a FIFO would hang doctor (and every handler)
        report.fix(f"{path} is {paths.file_kind(st.st_mode)}, not a regular file: move it aside")
        return
    try:
        snapshot = watch.compile_config(root)
    except (OSError, ValueError) as exc:
        report.fix(f"{exc}: handlers ignore the whole file until it is fixed")
        return
    for error in snapshot.get("errors") or []:
        report.fix(f"{path}: {error} (that setting is ignored)")
    if not snapshot.get("errors"):
        report.ok(f"watch defaults in {path}")


def check_state_dir(report: Report, root: str) -> None:
    try:
        st = os.stat(root)
    except FileNotFoundError:
        report.fix(f"state dir {root} does not exist: run ccm-hooks install")
        return
    if not stat.S_ISDIR(st.st_mode):
        report.fix(f"state dir {root} is not a directory: move it aside, then run ccm-hooks install")
        return
    mode = stat.S_IMODE(st.st_mode)
    foreign = shim.ownership_problems(root)
    for problem in foreign:
        report.fix(problem)
    if foreign:
        return
    # Events hold prompts, commands and file paths: nobody else should read them.
    if mode & 0o077:
        report.fix(f"state dir {root} is open to others (mode {mode:04o}): run chmod 700 {shlex.quote(root)}")
    elif not os.access(root, os.W_OK | os.X_OK):
        report.fix(f"state dir {root} is not writable by you: run chmod u+rwx {shlex.quote(root)}")
    else:
        report.ok(f"state dir {root} (mode {mode:04o})")


def _install_hint(scope: str, project: Path) -> str:
    if scope == "user":
        return "ccm-hooks install --scope user"
    return f"ccm-hooks install --scope {scope} --project {shlex.quote(str(project))}"


def _read_settings(path: Path) -> settings_merge.Settings | None:
    """The settings at ``path`` (None: no file). Raises CcmError with a one-line reason, never blocks."""
    try:
        snap = editfile.read(os.path.realpath(path))
    except editfile.NotRegular as exc:
        raise CcmError(f"{path} is {exc.kind}, not a regular file: move it aside") from None
    except (OSError, editfile.TooLarge) as exc:
        raise CcmError(f"cannot read {path} ({exc}); fix it, then run ccm-hooks doctor again") from None
    if snap.raw is None:
        return None
    try:
        text = snap.raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CcmError(f"{path} is not UTF-8 text (byte {exc.start}); fix it or move it aside") from None
    return settings_merge.parse(text, str(path), "doctor")


def check_scopes(report: Report, project: Path) -> None:
    """Which scopes hold our entries, whether they are current, and whether every event is covered."""
    covered: set[str] = set()
    in_project = False
    for scope in ("user", "project", "local"):
        try:
            path = installer.settings_path(scope, project)
            doc = _read_settings(path)
        except CcmError as exc:
            report.fix(str(exc))
            continue
        label = f"{scope} scope ({path})"
        if doc is None:
            report.ok(f"{label}: no file, no ccm hooks")
            continue
        counts = settings_merge.count_ours(doc)
        if not counts:
            report.ok(f"{label}: no ccm hooks")
        elif not jsontext.same(settings_merge.install(doc), doc):
            # Ours but not what this version writes (older ccm, hand edits, missing events).
            report.fix(f"{label}: ccm hooks are outdated or incomplete: run {_install_hint(scope, project)}")
        else:
            report.ok(f"{label}: {sum(counts.values())} ccm hooks")
        covered.update(e for e in counts if e in settings_merge.EVENTS)
        in_project = in_project or (scope != "user" and bool(counts))
        if doc.get("disableAllHooks") is True:
            report.fix(f'{label}: "disableAllHooks": true turns every hook off: remove it from {path}')
    missing = [e for e in settings_merge.EVENTS if e not in covered]
    above = None if in_project else _hooked_parent(project)
    if above is not None:
        # Verified with claude 2.1.197 and 2.1.328, in git repositories and plain directories alike.
        where = (
            f"ccm hooks are installed in {above}, but claude started in {project} does not read it: "
            f"Claude Code takes project settings only from the directory it starts in"
        )
        if missing:
            report.fix(
                f"{where}; start claude in {above.parent.parent}, or run {_install_hint('user', project)}"
            )
        else:
            report.warn(f"{where} (sessions started here are recorded through the user scope)")
    if not covered:
        if above is None:
            report.fix(f"ccm hooks are not installed in any scope: run {_install_hint('user', project)}")
    elif missing:
        report.fix(f"events with no ccm hook: {', '.join(missing)}: run {_install_hint('project', project)}")
    else:
        report.ok(f"all {len(settings_merge.EVENTS)} events have a ccm hook")
    _check_managed(report)


def _hooked_parent(project: Path) -> Path | None:
    """The nearest settings file above ``project`` holding ccm hooks (not the user's own settings)."""
    user = installer.settings_path("user", project)
    for parent in project.parents:
        for name in ("settings.json", "settings.local.json"):
            path = parent / ".claude" / name
            if path == user:
                continue
            try:
                doc = _read_settings(path)
            except CcmError:
                continue
            if doc is not None and settings_merge.count_ours(doc):
                return path
    return None


def _check_managed(report: Report) -> None:
    # Enterprise policy settings can switch hooks off too; only an administrator can change them.
    try:
        text = MANAGED_SETTINGS.read_text("utf-8")
        doc = settings_merge.parse(text, str(MANAGED_SETTINGS), "doctor")
    except (OSError, UnicodeDecodeError, CcmError):
        return
    if doc.get("disableAllHooks") is True or doc.get("allowManagedHooksOnly") is True:
        report.fix(f"{MANAGED_SETTINGS} disables user hooks: ask your administrator to allow them")


def check_shim(report: Report, root: str) -> None:
    path = shim.shim_path(root)
    fix_cmd = "run ccm-hooks install"
    if shim.ownership_problems(root):
        return  # said by check_state_dir; a shim that may not be the user's is never run
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            report.fix(f"hook shim {path} is not a regular file: remove it, then {fix_cmd}")
            return
        text = path.read_text("utf-8")
    except FileNotFoundError:
        report.fix(f"hook shim {path} is missing, so every hook does nothing: {fix_cmd}")
        return
    except (OSError, UnicodeDecodeError) as exc:
        report.fix(f"hook shim {path} cannot be read ({exc}): {fix_cmd}")
        return
    if not os.access(path, os.X_OK):
        report.fix(f"hook shim {path} is not executable: {fix_cmd}")
        return
    python = shim.shim_python(text)
    if python is None:
        report.fix(f"hook shim {path} was not written by ccm-hooks: {fix_cmd}")
        return
    if not os.access(python, os.X_OK):
        report.fix(f"hook shim {path} runs {python}, which no longer exists: {fix_cmd}")
        return
    problem = _run_shim(path)
    if problem:
        report.fix(f"hook shim {path} {problem}: {fix_cmd}")
        return
    report.ok(f"hook shim {path} (python: {python})")
    if os.path.abspath(python) != shim.current_python():
        report.warn(f"hook shim uses {python} but this ccm-hooks runs on {shim.current_python()}: {fix_cmd}")


def _run_shim(path: Path) -> str | None:
    """Run the shim as claude would, with an empty payload; None if it exits 0 silently."""
    # A throwaway state dir: the handler may log "empty payload", which must not count as a real error.
    with tempfile.TemporaryDirectory(prefix="ccm-doctor-") as scratch:
        env = {**os.environ, "CCM_HOME": scratch}
        try:
            proc = subprocess.run(
                [os.fspath(path), "SessionStart"],
                input=b"",
                capture_output=True,
                env=env,
                timeout=SHIM_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return f"did not finish within {SHIM_TIMEOUT:.0f}s"
        except OSError as exc:
            return f"cannot be run ({exc.strerror})"
    if proc.returncode != 0:
        return f"exited {proc.returncode} on an empty payload"
    out = (proc.stdout + proc.stderr).decode("utf-8", "replace").strip()
    if out:
        return f"printed output on an empty payload ({out.splitlines()[-1][:200]})"
    return None


def check_claude(report: Report) -> None:
    exe = shutil.which("claude")
    if exe is None:
        report.fix("claude is not on PATH: install it (npm install -g @anthropic-ai/claude-code)")
        return
    try:
        proc = subprocess.run(
            [exe, "--version"],
            capture_output=True,
            text=True,
            timeout=CLAUDE_TIMEOUT,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired:
        report.warn(f"claude ({exe}) did not answer --version within {CLAUDE_TIMEOUT:.0f}s")
        return
    except OSError as exc:
        report.fix(f"claude ({exe}) cannot be run ({exc.strerror}): reinstall it")
        return
    match = _VERSION_RE.search(proc.stdout)
    if proc.returncode != 0 or match is None:
        report.warn(f"claude ({exe}) --version printed no version (exit {proc.returncode})")
        return
    version = match.group(0)
    major, minor = int(match.group(1)), int(match.group(2))
    if (major, minor) == TESTED_CLAUDE:
        report.ok(f"claude {version} ({exe})")
    else:
        tested = ".".join(map(str, TESTED_CLAUDE))
        report.warn(f"claude {version} ({exe}); ccm was tested with {tested}.x, hook payloads may differ")


def check_tmux(report: Report) -> None:
    # Recording works without tmux; only running sessions unattended (ccm-agentd) needs it.
    exe = shutil.which("tmux")
    if exe is None:
        report.warn("tmux is not on PATH: ccm-agentd needs it (apt install tmux / brew install tmux)")
        return
    try:
        proc = subprocess.run([exe, "-V"], capture_output=True, text=True, timeout=2, check=False)
    except (subprocess.TimeoutExpired, OSError):
        report.warn(f"tmux ({exe}) did not report its version")
        return
    report.ok(f"{proc.stdout.strip() or 'tmux'} ({exe})")


def check_log(report: Report, root: str) -> None:
    log = Path(paths.hooks_log_path(root))
    try:
        fd = os.open(log, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                report.warn(f"{log} is {paths.file_kind(st.st_mode)}, not a regular file: move it aside")
                return
            tail = os.pread(fd, LOG_TAIL_BYTES, max(0, st.st_size - LOG_TAIL_BYTES)).decode(
                "utf-8", "replace"
            )
        finally:
            os.close(fd)
    except FileNotFoundError:
        report.ok("no hook errors logged")
        return
    except OSError as exc:
        report.warn(f"cannot read {log} ({exc.strerror})")
        return
    lines = [line for line in tail.splitlines() if line.strip()]
    if st.st_size > LOG_TAIL_BYTES and lines:
        lines = lines[1:]  # the first line of the tail is probably cut
    recent = _recent(lines, st.st_mtime)
    if not recent:
        report.ok(f"no hook errors in the last {RECENT.total_seconds() / 3600:.0f}h ({log})")
        return
    when, text = recent[-1]
    report.warn(f"{len(recent)} hook error(s) in the last 24h in {log}; last at {when}: {text[:200]}")


def _recent(lines: list[str], mtime: float) -> list[tuple[str, str]]:
    """(when, text) of lines logged within ``RECENT``.

    The handler logs JSON lines with an ISO ``ts`` and an ``error``; a plain line starting with an ISO
    time is read too. Lines with no time at all count as recent if the file changed recently.
    """
    now = datetime.datetime.now(datetime.UTC)
    modified = datetime.datetime.fromtimestamp(mtime, datetime.UTC)
    out: list[tuple[str, str]] = []
    for line in lines:
        when, text = _parse_log_line(line)
        stamp = when or modified
        if now - stamp <= RECENT:
            out.append((stamp.isoformat(timespec="seconds"), text))
    return out


def _parse_log_line(line: str) -> tuple[datetime.datetime | None, str]:
    raw_ts: object = None
    text = line
    if line.startswith("{"):
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        if isinstance(entry, dict):
            raw_ts = entry.get("ts")
            text = str(entry.get("error") or line)
    if raw_ts is None:
        match = _STAMP_RE.match(line)
        raw_ts = match.group(1) if match else None
    if not isinstance(raw_ts, str):
        return None, text
    try:
        when = datetime.datetime.fromisoformat(raw_ts)
    except ValueError:
        return None, text
    return (when if when.tzinfo else when.replace(tzinfo=datetime.UTC)), text
