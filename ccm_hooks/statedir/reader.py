"""Reading the state dir while handlers write to it: no locks taken, torn last lines skipped.

Used by the CLI, ``top`` and the daemon. Status files are replaced atomically, so a reader sees a whole old
or a whole new file; event logs are append-only, so a reader keeps a byte offset per file and resumes at
the start of any line still being written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from ccm_hooks import fileio, paths

SUFFIX_EVENTS = ".jsonl"
SUFFIX_STATUS = ".json"


def _session_files(directory: str, suffix: str) -> dict[str, str]:
    """{session_id: path} for the well-named files of one kind; temp files and strays are ignored."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return {}
    out = {}
    for name in names:
        if name.endswith(suffix):
            sid = name[: -len(suffix)]
            if paths.valid_session_id(sid):
                out[sid] = os.path.join(directory, name)
    return out


def status_files(root: str) -> dict[str, str]:
    return _session_files(paths.status_dir(root), SUFFIX_STATUS)


def event_files(root: str) -> dict[str, str]:
    return _session_files(paths.events_dir(root), SUFFIX_EVENTS)


def read_status(path: str) -> dict[str, Any] | None:
    """The status object, or None if it is gone or not a JSON object (hand-edited, foreign file)."""
    try:
        obj = fileio.read_json(path)
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def load_statuses(root: str) -> list[dict[str, Any]]:
    """Every session's status, newest ``updated_at`` first."""
    found = [s for s in (read_status(p) for p in status_files(root).values()) if s is not None]
    found.sort(key=lambda s: str(s.get("updated_at") or ""), reverse=True)
    return found


def resolve_session(root: str, wanted: str) -> str:
    """A full session id from an id or a unique prefix (as git does with commits)."""
    from ccm_hooks.errors import CcmError

    known = set(status_files(root)) | set(event_files(root))
    if wanted in known:
        return wanted
    matches = sorted(sid for sid in known if sid.startswith(wanted))
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise CcmError(f"no session matches {wanted!r}; `ccm-hooks status` lists the sessions")
    raise CcmError(
        f"{wanted!r} matches {len(matches)} sessions ({', '.join(m[:12] for m in matches[:4])}…); "
        "give more of the id"
    )


@dataclass
class LogTail:
    """Incremental reader of one JSONL file: each ``read_new`` returns the complete records added since."""

    path: str
    offset: int = 0
    inode: int | None = field(default=None, repr=False)

    def read_new(self) -> list[dict[str, Any]]:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return []
        try:
            st = os.fstat(fd)
            if self.inode is not None and (st.st_ino != self.inode or st.st_size < self.offset):
                self.offset = 0  # replaced or truncated by someone: start over
            self.inode = st.st_ino
            if st.st_size <= self.offset:
                return []
            data = os.pread(fd, st.st_size - self.offset, self.offset)
        finally:
            os.close(fd)
        # Everything up to the last newline is consumed (unparseable lines included, they are skipped);
        # a torn tail is left for next time.
        self.offset += data.rfind(b"\n") + 1
        return [rec for _, rec in fileio.iter_lines(data)]


def read_events(path: str) -> list[dict[str, Any]]:
    return LogTail(path).read_new()
