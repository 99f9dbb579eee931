"""``ccm-hooks validate``: check a state dir against spec/ (layout, modes, every record and status file).

CLI only, never imported by the handler, so ``jsonschema`` is fine here. The schemas are loaded from the
package (``ccm_hooks/schemas`` is a symlink to ``spec/schemas``), so the spec is the single source of truth.
This module checks the tree: what belongs where (LAYOUT, from spec/layout.md) and the modes; validatelog.py
checks each session (its log line by line, streamed, its status, and the replay).

Everything, always: there is no sampling. Cost is a few microseconds a record (the C JSON scanner, a
hand-written check of the common record shapes with jsonschema only for the rest, the replay), and memory
does not grow with the logs (bench/readers.py measures it).

Severity: an *error* is something the spec says cannot happen (a bad line, a seq gap, a status that is not
the replay of its log); a *warning* is a state a working system can legitimately be in (a write in
progress, a crashed writer's fragment, a status not yet written, handler errors in hooks.log).
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

from ccm_hooks import paths
from ccm_hooks.commands import validatelog
from ccm_hooks.errors import CcmError
from ccm_hooks.statedir import reader
from ccm_hooks.statedir.safetext import one_line

SUBDIRS = ("events", "status", "locks", "log")  # the handler creates these on the first event
# Everything else ccm may create at the top of the state dir (spec/layout.md, "Tree"): who makes it.
OTHER_DIRS = {
    "bin": "ccm-hooks install",
    "backups": "ccm-hooks install",
    "queue": "ccm-hooks send",
    "agentd": "ccm-agentd",
    "fleet": "ccm-agentd's fleet job",
}
CHECKED_ELSEWHERE = ("tasks",)  # task files: validate_tasks.py, with their own schemas (spec/tasks.md)
# .bak: left by older releases; fleet.dsn: the fleet database's address, the user's (spec/fleet.md)
ROOT_FILES = ("config.toml", "config.toml.bak", "config.snapshot.json", "fleet.dsn")
LOG_FILES = ("hooks.log", "hooks.log.1", "cli.log", "notify.log", "notify.log.1", "agentd.launchd.log",
             "agentd.log", "agentd.log.1", "agentd.log.2", "agentd.log.3")  # fmt: skip
LOCK_NAMES = ("config.lock",)  # besides <session id>.lock and settings-<slug>.lock (spec/layout.md)


class Report:
    """Problems, printed as they are found (a damaged 500 MB log must not be held as a list of lines)."""

    def __init__(self) -> None:
        self.errors = 0
        self.warnings = 0
        self.out = sys.stdout

    def _say(self, where: str, kind: str, message: str) -> None:
        self.out.write(one_line(f"{where}: {kind}: {message}") + "\n")

    def error(self, where: str, message: str) -> None:
        self.errors += 1
        self._say(where, "error", message)

    def warn(self, where: str, message: str) -> None:
        self.warnings += 1
        self._say(where, "warning", message)


def validate_cmd(home: Path | None) -> int:
    root = os.path.abspath(home) if home is not None else paths.state_dir()
    try:
        st = os.stat(root)
    except FileNotFoundError:
        raise CcmError(f"state dir {root} does not exist; no hook has run yet (or pass --home DIR)") from None
    except OSError as exc:
        raise CcmError(f"cannot read state dir {root}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise CcmError(f"{root} is not a directory; point --home (or $CCM_HOME) at a ccm state dir")
    report = Report()
    try:
        records, sessions = _check_tree(root, report)
        # Tasks (spec/tasks.md): checked by their own module, with this report's error and warn.
        from ccm_hooks.commands import validate_tasks

        task_count = validate_tasks.check(root, report.error, report.warn)
    except PermissionError as exc:
        raise CcmError(f"cannot read {exc.filename}: permission denied; run as the owner of {root}") from None
    verdict = "ok" if not report.errors else "FAILED"
    print(
        f"{one_line(root)}: {verdict}: {sessions} sessions, {records} records, "
        + (f"{task_count} tasks, " if task_count else "")
        + f"{report.errors} errors, {report.warnings} warnings"
    )
    return 1 if report.errors else 0


def _check_mode(path: str, st: os.stat_result, report: Report, *, is_root: bool = False) -> None:
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISDIR(st.st_mode):
        if mode & 0o700 != 0o700:
            report.error(path, f"mode {mode:04o}: the owner needs rwx (want 0700)")
        elif mode & 0o022:
            report.error(path, f"mode {mode:04o}: writable by others, who could forge status (want 0700)")
        elif mode & 0o077:
            # ccm creates 0700 but keeps the mode of a root the user made; the subdirs still protect
            # the content, so a readable root is a choice worth flagging, not a broken install.
            say = report.warn if is_root else report.error
            say(path, f"mode {mode:04o}: readable by others (want 0700)")
    elif mode & 0o600 != 0o600:
        report.error(path, f"mode {mode:04o}: the owner needs rw (want 0600)")
    elif mode & 0o077:
        report.error(path, f"mode {mode:04o}: open to others; it holds prompts and commands (want 0600)")


def _check_tree(root: str, report: Report) -> tuple[int, int]:
    _check_mode(root, os.stat(root), report, is_root=True)
    for name in sorted(os.listdir(root)):
        known = name in SUBDIRS or name in OTHER_DIRS or name in ROOT_FILES or name in CHECKED_ELSEWHERE
        if not known and not name.startswith("."):
            report.warn(os.path.join(root, name), "not part of the layout (spec/layout.md); ccm ignores it")
    for sub in (*SUBDIRS, *OTHER_DIRS):
        path = os.path.join(root, sub)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            if sub in SUBDIRS:
                report.warn(path, "missing; the handler creates it on the first hook event")
            continue
        if stat.S_ISLNK(st.st_mode) and sub in SUBDIRS:
            st = os.stat(path)  # the handler's directories may be symlinks (spec/layout.md)
        if not stat.S_ISDIR(st.st_mode):
            report.error(path, "not a directory")
        else:
            _check_mode(path, st, report)
            if sub in OTHER_DIRS:
                _check_other(path, report)
    for name in ROOT_FILES:
        _check_file(os.path.join(root, name), report)
    events = _session_files(paths.events_dir(root), ".jsonl", report)
    statuses = _session_files(paths.status_dir(root), ".json", report)
    _session_files(paths.locks_dir(root), ".lock", report)
    _check_logs(root, report)
    records = 0
    for sid in sorted(set(events) | set(statuses)):
        records += validatelog.check_session(root, sid, sid in events, sid in statuses, report)
    return records, len(set(events) | set(statuses))


def _check_file(path: str, report: Report) -> None:
    """A file ccm writes outside the session dirs: if there, a regular file, private."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISREG(st.st_mode):
        report.error(path, "not a regular file (ccm reads and replaces it)")
    else:
        _check_mode(path, st, report)


def _check_other(directory: str, report: Report, depth: int = 0) -> None:
    """queue/, agentd/, bin/, backups/: their contents belong to the tools that write them (spec/agentd.md,
    spec/settings.md); here only what must hold for all: private modes, nothing but files and dirs."""
    for name in sorted(os.listdir(directory)):
        if name.startswith("."):
            continue  # temp files
        path = os.path.join(directory, name)
        st = os.lstat(path)
        if stat.S_ISDIR(st.st_mode) and depth < 2:
            _check_mode(path, st, report)
            _check_other(path, report, depth + 1)
        elif stat.S_ISREG(st.st_mode):
            _check_mode(path, st, report)
        elif not stat.S_ISDIR(st.st_mode):
            report.error(path, "not a regular file")


def _session_files(directory: str, suffix: str, report: Report) -> set[str]:
    """Session ids of the ``<id><suffix>`` regular files in ``directory``; reports everything else."""
    try:
        names = sorted(os.listdir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return set()
    found = set()
    for name in names:
        if name.startswith("."):
            continue  # temp files of an atomic replace (spec/layout.md): never read them
        path = os.path.join(directory, name)
        st = os.lstat(path)
        sid = name[: -len(suffix)] if name.endswith(suffix) else ""
        if suffix == ".lock" and (name in LOCK_NAMES or name.startswith("settings-")):
            sid = ""  # not a session's: checked for its mode only
            if stat.S_ISREG(st.st_mode):
                _check_mode(path, st, report)
                continue
        if not paths.valid_session_id(sid):
            report.error(path, f"unexpected name: want <session id>{suffix} (spec/layout.md)")
        elif stat.S_ISLNK(st.st_mode):
            report.error(path, "a symlink: the handler opens files with O_NOFOLLOW and will fail on it")
        elif not stat.S_ISREG(st.st_mode):
            report.error(path, "not a regular file")
        else:
            _check_mode(path, st, report)
            found.add(sid)
    return found


def _check_logs(root: str, report: Report) -> None:
    for name in LOG_FILES:
        _check_file(os.path.join(paths.log_dir(root), name), report)
    path = paths.hooks_log_path(root)
    got = reader.open_regular(path)
    if got is None:
        return
    fd, st = got
    try:
        data = os.pread(fd, min(st.st_size, 4 << 20), max(0, st.st_size - (4 << 20)))  # rotated at 1 MiB
    finally:
        os.close(fd)
    lines = data.splitlines()
    if lines:
        # Each line is a hook call that recorded nothing: an event the log and status never saw.
        try:
            last = validatelog.parse(lines[-1])
            detail = f"last at {last.get('ts')}: {last.get('error')}"
        except (ValueError, AttributeError):
            detail = "the last line is not a JSON object"
        report.warn(path, f"{len(lines)} handler failures (events lost); {detail}")
