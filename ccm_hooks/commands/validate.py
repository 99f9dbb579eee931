"""``ccm-hooks validate``: check a state dir against spec/ (layout, modes, every record and status file).

CLI only, never imported by the handler, so ``jsonschema`` is fine here. The schemas are loaded from the
package (``ccm_hooks/schemas`` is a symlink to ``spec/schemas``), so the spec is the single source of truth.

Severity: an *error* is something the spec says cannot happen (a bad line, a seq gap, a status that is not
the replay of its log); a *warning* is a state a working system can legitimately be in (a write in
progress, a crashed writer's fragment, a status not yet written, handler errors in hooks.log).
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import stat
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # no py.typed; only used through two calls below

from ccm_hooks import paths, state, store
from ccm_hooks.errors import CcmError

SUBDIRS = ("events", "status", "locks", "log")  # the handler creates these on the first event
INSTALL_SUBDIRS = ("bin", "backups")  # only `ccm-hooks install` creates these
LOG_FILES = ("hooks.log", "hooks.log.1", "cli.log")
CTX_FIELDS = ("tmux_pane", "tmux_socket", "claude_pid")  # from the process, not the log: not replayable
# Every record the encoder writes starts like this (dict order), so a line that does not parse but starts
# so is a record cut short by a writer that died mid-write, which the next append terminated.
RECORD_PREFIX = b'{"v":'
LOCK_WAIT_S = 2.0  # handlers wait 5 s for the session lock; never make one wait near that
MAX_SCHEMA_ERRORS = 3  # per line: the first few say what is wrong, the rest repeat it

Numbered = list[tuple[int, dict[str, Any]]]  # (line number, record)
# The event schema's else/allOf holds its two conditional rule sets, in this order (see the schema's
# $defs); an error inside one of them ("'X' was expected") needs to say which rule it comes from.
RULES = (
    "a field of this record does not belong on this event: spec/events.md",
    "this tool's summary keeps other keys: spec/events.md#tool_input",
)


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    errors: int = 0
    warnings: int = 0

    def error(self, where: str, message: str) -> None:
        self.errors += 1
        self.lines.append(f"{where}: error: {message}")

    def warn(self, where: str, message: str) -> None:
        self.warnings += 1
        self.lines.append(f"{where}: warning: {message}")


@functools.cache
def _schema(name: str) -> Any:
    text = resources.files("ccm_hooks").joinpath("schemas", name).read_text("utf-8")
    schema = json.loads(text)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


class NotStrictJson(ValueError):
    """Parsed by Python's json, which accepts NaN and Infinity, but not JSON (RFC 8259) for other readers."""


def _strict_constant(name: str) -> Any:
    raise NotStrictJson(f"{name} is not JSON (RFC 8259); strict parsers reject the line")


def _parse(data: bytes) -> Any:
    return json.loads(data.decode("utf-8"), parse_constant=_strict_constant)


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
    for line in report.lines:
        print(line)
    verdict = "ok" if not report.errors else "FAILED"
    print(
        f"{root}: {verdict}: {sessions} sessions, {records} records, "
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
        if name not in SUBDIRS + INSTALL_SUBDIRS and not name.startswith("."):
            report.warn(os.path.join(root, name), "not part of the layout (spec/layout.md); ccm ignores it")
    for sub in SUBDIRS + INSTALL_SUBDIRS:
        path = os.path.join(root, sub)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            if sub in SUBDIRS:
                report.warn(path, "missing; the handler creates it on the first hook event")
            continue
        if not stat.S_ISDIR(st.st_mode):
            report.error(path, "not a directory")
        else:
            _check_mode(path, st, report)
    events = _session_files(paths.events_dir(root), ".jsonl", report)
    statuses = _session_files(paths.status_dir(root), ".json", report)
    _session_files(paths.locks_dir(root), ".lock", report)
    _check_logs(root, report)
    records = 0
    for sid in sorted(set(events) | set(statuses)):
        records += _check_session(root, sid, sid in events, sid in statuses, report)
    return records, len(set(events) | set(statuses))


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
        path = os.path.join(paths.log_dir(root), name)
        if os.path.lexists(path):
            _check_mode(path, os.lstat(path), report)
    lines = (_read(paths.hooks_log_path(root)) or b"").splitlines()
    if lines:
        # Each line is a hook call that recorded nothing: an event the log and status never saw.
        try:
            last = _parse(lines[-1])
            detail = f"last at {last.get('ts')}: {last.get('error')}"
        except (ValueError, AttributeError):
            detail = "the last line is not a JSON object"
        report.warn(paths.hooks_log_path(root), f"{len(lines)} handler failures (events lost); {detail}")


def _locked_read(root: str, sid: str, report: Report) -> tuple[bytes | None, bytes | None]:
    """The session's log and status, read under a shared session lock when there is one.

    The lock makes the pair consistent against a live session (a handler appends, then replaces the
    status). Bounded wait: a handler that cannot get the lock in 5 s drops its event.
    """
    fd = -1
    try:
        fd = os.open(paths.lock_path(root, sid), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        pass  # no lock file (or an odd one, reported by the layout check): read without it
    try:
        if fd >= 0:
            deadline = time.monotonic() + LOCK_WAIT_S
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        report.warn(paths.lock_path(root, sid), "session busy; checked without the lock")
                        break
                    time.sleep(0.01)
        return _read(paths.events_path(root, sid)), _read(paths.status_path(root, sid))
    finally:
        if fd >= 0:
            os.close(fd)


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        return None


def _check_session(root: str, sid: str, has_events: bool, has_status: bool, report: Report) -> int:
    events_data, status_data = _locked_read(root, sid, report)
    errors_before = report.errors
    records = _check_events(paths.events_path(root, sid), sid, events_data, report) if has_events else []
    log_is_sound = report.errors == errors_before
    status_path = paths.status_path(root, sid)
    if not has_status or status_data is None:
        if records:
            report.warn(status_path, "missing; the next hook event rebuilds it from the log")
        return len(records)
    try:
        status = _parse(status_data)
    except ValueError as exc:
        report.error(status_path, f"not JSON ({exc}); statuses are replaced atomically, never partial")
        return len(records)
    problems = sorted(_schema("status.schema.json").iter_errors(status), key=lambda e: list(e.path))
    for err in problems[:MAX_SCHEMA_ERRORS]:
        report.error(status_path, _schema_message(err))
    if problems or not isinstance(status, dict):
        return len(records)
    if status.get("session_id") != sid:
        report.error(status_path, f"session_id {status.get('session_id')!r} is not the file's name")
    if not has_events:
        report.warn(status_path, "no event log to check it against (was events/ pruned?)")
        return len(records)
    last_seq = records[-1][1]["seq"] if records else 0
    if status["seq"] != last_seq:
        report.error(status_path, f"seq {status['seq']}, but the log's last good record has seq {last_seq}")
        return len(records)
    if not log_is_sound:
        return len(records)  # the replay of a damaged log says nothing the errors above do not
    replayed: dict[str, Any] | None = None
    for _, rec in records:
        replayed = state.apply(replayed, rec)
    if replayed is not None:
        keys = (replayed.keys() | status.keys()) - set(CTX_FIELDS)
        differ = sorted(k for k in keys if replayed.get(k) != status.get(k))
        if differ:
            detail = "; ".join(
                f"{k} is {_brief(status.get(k))}, replay {_brief(replayed.get(k))}" for k in differ
            )
            report.error(status_path, f"differs from the replay of the log: {detail}")
    return len(records)


def _check_events(path: str, sid: str, data: bytes | None, report: Report) -> Numbered:
    """Check every line; return (line number, record) for the records the status replay should use."""
    if data is None:
        return []
    validator = _schema("event.schema.json")
    good: Numbered = []
    lines = data.split(b"\n")
    if lines[-1]:
        report.warn(
            f"{path}:{len(lines)}", "torn: no newline (in progress or crashed writer); readers skip it"
        )
    prev_seq = 0
    for number, line in enumerate(lines[:-1], 1):
        where = f"{path}:{number}"
        if len(line) >= store.MAX_LINE_BYTES:
            report.error(where, f"{len(line) + 1} bytes: past the {store.MAX_LINE_BYTES}-byte line bound")
        try:
            rec = _parse(line)
        except NotStrictJson as exc:
            report.error(where, str(exc))
            continue
        except UnicodeDecodeError:
            report.error(where, "not UTF-8")
            continue
        except ValueError as exc:
            if line.startswith(RECORD_PREFIX):
                report.warn(where, "a record cut short by a writer that died; readers skip it")
            else:
                report.error(where, f"not a JSON line ({exc})"[:300])
            continue
        problems = sorted(validator.iter_errors(rec), key=lambda e: list(e.path))
        for err in problems[:MAX_SCHEMA_ERRORS]:
            report.error(where, _schema_message(err))
        seq = rec.get("seq") if isinstance(rec, dict) else None
        if not isinstance(seq, int):
            continue
        if prev_seq == 0 and seq != 1:
            report.error(where, f"the first record has seq {seq}, not 1")
        elif prev_seq and seq <= prev_seq:
            report.error(where, f"seq {seq} after {prev_seq}: not strictly increasing (duplicate or reorder)")
        elif prev_seq and seq != prev_seq + 1:
            report.error(where, f"seq {seq} after {prev_seq}: {seq - prev_seq - 1} records missing")
        prev_seq = seq  # compare each line with the one before it, so one bad seq is one error
        if problems:
            continue
        if rec["session_id"] != sid:
            report.error(where, f"session_id {rec['session_id']!r} is not the file's name")
        _check_truncated(where, rec, report)
        good.append((number, rec))
    return good


def _check_truncated(where: str, rec: dict[str, Any], report: Report) -> None:
    """A clipped field ends with ``…[+N chars]``, and its kept part plus N is its length in ``truncated``."""
    for name, original in (rec.get("truncated") or {}).items():
        if name == "record":
            continue
        if name.startswith("tool_input."):
            value = (rec.get("tool_input") or {}).get(name[len("tool_input.") :])
            if value is None:
                continue  # a key longer than 200 characters is stored cut, under another name
        else:
            value = rec.get(name)
        head, marker, tail = value.rpartition("…[+") if isinstance(value, str) else ("", "", "")
        cut = tail[: -len(" chars]")] if tail.endswith(" chars]") else ""
        if not marker or not cut.isdigit() or len(head) + int(cut) != original:
            report.error(where, f"truncated.{name} is {original}, but {name} lacks a matching '…[+N chars]'")


def _brief(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _schema_message(err: Any) -> str:
    where = "/".join(str(p) for p in err.absolute_path) or "(record)"
    schema_path = list(err.absolute_schema_path)
    hint = ""
    if schema_path[:1] == ["allOf"] and schema_path[1] in (0, 1):
        hint = f" ({RULES[schema_path[1]]})"
    return f"{where}: {err.message}"[:300] + hint
