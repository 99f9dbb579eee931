"""``ccm-hooks prune --older-than AGE``: remove the files of sessions that are over, never a live one's.

A session's files (``events/<id>.jsonl``, ``status/<id>.json``, ``locks/<id>.lock``) go only when all of this
holds: its status says ``ended``; the claude process it names (``claude_pid``) no longer runs; nothing was
written for it (log, status, ``updated_at``) for longer than AGE; and its session lock is free. The lock is
held while the files go, and the status is read again under it, so a hook that arrives meanwhile (a
``--resume``) either sees the whole session or a fresh one, never a half-removed one. A session without a
status is kept: nothing says it ended. Temp files left by writers that died are removed too (spec/layout.md,
"Temp files": older than a minute is garbage).
"""

from __future__ import annotations

import fcntl
import os
import time
from dataclasses import dataclass
from typing import Any

from ccm_hooks import fileio, paths
from ccm_hooks.errors import CcmError
from ccm_hooks.statedir import reader, timefmt
from ccm_hooks.statedir.safetext import one_line
from ccm_hooks.statedir.timefmt import format_age, parse_ts

STALE_TEMP_S = 60.0


def parse_older_than(text: str) -> float:
    seconds = timefmt.parse_age(text)
    if seconds is None or not 0 < seconds < 100 * 365 * 86400:
        raise CcmError(f"--older-than {text!r}: give an age such as 90m, 12h, 7d or 2w")
    return seconds


def pid_alive(pid: object) -> bool:
    """Whether a process with this id exists (a reused pid keeps a session: erring on the safe side)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # EPERM: it exists, as another user
    return True


@dataclass
class Verdict:
    sid: str
    remove: bool
    why: str
    files: list[str]
    size: int


def _files(root: str, sid: str) -> list[str]:
    return [
        p
        for p in (paths.events_path(root, sid), paths.status_path(root, sid), paths.lock_path(root, sid))
        if os.path.lexists(p)
    ]


def _last_write(files: list[str], status: dict[str, Any]) -> float:
    newest = parse_ts(status.get("updated_at")) or 0.0
    for path in files:
        try:
            newest = max(newest, os.lstat(path).st_mtime)
        except OSError:
            pass
    return newest


def judge(root: str, sid: str, older_than: float, now: float) -> Verdict:
    files = _files(root, sid)
    size = sum(_disk_size(p) for p in files)
    status = reader.read_status(paths.status_path(root, sid))
    if status is None:
        return Verdict(sid, False, "no status says it ended", files, size)
    if status.get("state") != "ended":
        return Verdict(sid, False, f"{one_line(str(status.get('state')))}, not ended", files, size)
    if pid_alive(status.get("claude_pid")):
        why = f"ended, but its claude (pid {status['claude_pid']}) still runs"
        return Verdict(sid, False, why, files, size)
    idle = now - _last_write(files, status)
    if idle <= older_than:
        return Verdict(sid, False, f"ended {format_age(idle)} ago", files, size)
    return Verdict(sid, True, f"ended, idle {format_age(idle)}", files, size)


def _disk_size(path: str) -> int:
    try:
        st = os.lstat(path)
    except OSError:
        return 0
    return st.st_blocks * 512 if hasattr(st, "st_blocks") else st.st_size


def _remove_locked(root: str, sid: str, older_than: float) -> Verdict | None:
    """Remove one session's files under its lock, after judging it again; None if the lock is busy."""
    lock = paths.lock_path(root, sid)
    fd = -1
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None  # a hook holds it right now: the session is not over
    except OSError:
        if fd >= 0:
            os.close(fd)
        fd = -1  # no lock file (or an odd one): nothing can be holding it
    try:
        verdict = judge(root, sid, older_than, time.time())
        if verdict.remove:
            for path in verdict.files:  # the lock last: a hook that waits on it finds nothing half-gone
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
        return verdict
    finally:
        if fd >= 0:
            os.close(fd)


def stale_temps(root: str) -> list[str]:
    """Temp files of writers that died, in the directories ccm-hooks writes."""
    found: list[str] = []
    for directory in (paths.status_dir(root), root):
        # The hot path's own finder (fileio.stale_temp_files) once it is on main; until then, the same rule:
        # a dot name ending in .tmp, last written more than STALE_TEMP_S ago.
        finder = getattr(fileio, "stale_temp_files", None)
        if finder is not None:
            found.extend(finder(directory, STALE_TEMP_S))
            continue
        try:
            names = os.listdir(directory)
        except OSError:
            continue
        for name in names:
            path = os.path.join(directory, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            old = time.time() - st.st_mtime > STALE_TEMP_S
            if name.startswith(".") and name.endswith(".tmp") and old and not os.path.isdir(path):
                found.append(path)
    return found


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB"


def prune_cmd(older_than_text: str, dry_run: bool) -> int:
    older_than = parse_older_than(older_than_text)
    root = paths.state_dir()
    sessions = sorted(set(reader.status_files(root)) | set(reader.event_files(root)))
    now = time.time()
    removed, freed, kept = 0, 0, 0
    verb = "would remove" if dry_run else "removed"
    lines = []
    for sid in sessions:
        verdict = judge(root, sid, older_than, now)
        if verdict.remove and not dry_run:
            verdict = _remove_locked(root, sid, older_than) or Verdict(sid, False, "busy", [], 0)
        if not verdict.remove:
            kept += 1
            continue
        removed += 1
        freed += verdict.size
        lines.append(f"{verb} {sid} ({verdict.why}; {len(verdict.files)} files, {_mib(verdict.size)})")
    temps = stale_temps(root)
    for path in temps:
        freed += _disk_size(path)
        if not dry_run:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        lines.append(f"{verb} {path} (a temp file left by a writer that died)")
    lines.append(
        f"{verb} {removed} sessions and {len(temps)} temp files, {_mib(freed)}; "
        f"kept {kept} sessions (live, not ended, or idle for less than {older_than_text})"
    )
    print("\n".join(lines))
    return 0
