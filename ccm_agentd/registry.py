"""Claude Code's own live registry of sessions: ``~/.claude/sessions/<pid>.json``, one per running claude.

Both supported versions keep it (spec/claude-versions.md): ``status`` is ``idle`` at the prompt, ``busy``
during a turn, ``waiting`` while a dialog is open (``waitingFor``: ``permission prompt``, ``dialog open``),
rewritten within a fraction of a second of a change. It is the structured signal for what hooks do not
tell: an Esc that ended a turn, a dialog answered No or dismissed. ccm reads it before the screen, and
types only when both agree; an entry that is missing, unreadable, for another session, or with a status it
does not know means "unknown": type nothing.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from typing import Any

KNOWN_STATUSES = ("idle", "busy", "waiting")
MAX_BYTES = 1 << 16


def sessions_dir(environ: dict[str, str] | os._Environ[str] | None = None) -> str:
    """Where Claude Code keeps the registry: ``$CLAUDE_CONFIG_DIR/sessions``, else ``~/.claude/sessions``."""
    env = os.environ if environ is None else environ
    base = env.get("CLAUDE_CONFIG_DIR") or os.path.join(env.get("HOME") or os.path.expanduser("~"), ".claude")
    return os.path.join(base, "sessions")


@dataclass(frozen=True)
class Entry:
    pid: int
    session_id: str | None
    status: str | None  # idle | busy | waiting | something newer (treated as unknown)
    waiting_for: str | None
    version: str | None
    kind: str | None  # interactive | bg
    updated_at: float | None  # epoch seconds (the file stores milliseconds)
    raw: dict[str, Any]

    @property
    def known(self) -> bool:
        return self.status in KNOWN_STATUSES


def read(pid: object, directory: str | None = None) -> Entry | None:
    """The registry entry of the claude with this pid, or None (not running, not written yet, not ours)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return None
    path = os.path.join(directory or sessions_dir(), f"{pid}.json")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_size > MAX_BYTES:
            return None
        data = os.read(fd, MAX_BYTES)
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        doc = json.loads(data)
    except ValueError:
        return None  # caught mid-write by a writer that does not replace atomically: unknown this time
    if not isinstance(doc, dict):
        return None
    updated = doc.get("statusUpdatedAt") or doc.get("updatedAt")
    if not isinstance(updated, (int, float)) or isinstance(updated, bool):
        updated = None

    def text(key: str) -> str | None:
        value = doc.get(key)
        return value if isinstance(value, str) else None

    return Entry(
        pid=pid,
        session_id=text("sessionId"),
        status=text("status"),
        waiting_for=text("waitingFor"),
        version=text("version"),
        kind=text("kind"),
        updated_at=updated / 1000.0
        if isinstance(updated, (int, float)) and not isinstance(updated, bool)
        else None,
        raw=doc,
    )
