"""Reading the state dir while handlers write to it: no locks taken, torn last lines skipped.

Used by the CLI, ``top`` and the daemon. Status files are replaced atomically, so a reader sees a whole old
or a whole new file; event logs are append-only, so a reader keeps a byte offset per file and resumes at
the start of any line still being written.
"""

from __future__ import annotations

import os
import stat

from ccm_hooks import fastjson, fileio, paths

TYPE_CHECKING = False  # the read commands import this: no typing/dataclasses at run time (main.py says why)
if TYPE_CHECKING:
    from typing import Any

SUFFIX_EVENTS = ".jsonl"
SUFFIX_STATUS = ".json"


def _session_files(directory: str, suffix: str, prefix: str = "") -> dict[str, str]:
    """{session_id: path} for the well-named files of one kind (whose id starts with ``prefix``); temp
    files and strays are ignored. (String operations, not os.path.join: 10,000 names add up.)"""
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return {}
    base = directory + os.sep
    cut = -len(suffix)
    valid = paths.valid_session_id
    return {
        name[:cut]: base + name
        for name in names
        if name.endswith(suffix) and name.startswith(prefix) and valid(name[:cut])
    }


def status_files(root: str) -> dict[str, str]:
    return _session_files(paths.status_dir(root), SUFFIX_STATUS)


def event_files(root: str) -> dict[str, str]:
    return _session_files(paths.events_dir(root), SUFFIX_EVENTS)


MAX_STATUS_BYTES = 4 << 20  # a status is a few KB; anything this large is not one of ours


def open_regular(path: str) -> tuple[int, os.stat_result] | None:
    """A read-only descriptor and its stat, for a regular file only; None if gone or anything else.

    ``O_NONBLOCK`` so that opening a FIFO planted at the name returns at once instead of waiting for a
    writer, ``O_NOFOLLOW`` so that a symlink is refused (spec/layout.md).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
    except OSError:
        os.close(fd)
        return None
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        return None
    return fd, st


def read_status_stat(path: str) -> tuple[dict[str, Any] | None, os.stat_result | None]:
    """The status object and the stat of the very file it came from (None, None if it is gone or not a
    regular file; (None, stat) if it is not a JSON object: hand-edited, foreign, truncated)."""
    got = open_regular(path)
    if got is None:
        return None, None
    fd, st = got
    try:
        data = os.read(fd, min(st.st_size, MAX_STATUS_BYTES) + 1) if st.st_size <= MAX_STATUS_BYTES else b""
    except OSError:
        data = b""
    finally:
        os.close(fd)
    try:
        obj = fastjson.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None, st
    return (obj if isinstance(obj, dict) else None), st


def read_status(path: str) -> dict[str, Any] | None:
    """The status object, or None if it is gone or not a JSON object (hand-edited, foreign file)."""
    return read_status_stat(path)[0]


def newest_first(statuses: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sorted by ``updated_at``, newest first (ties: by session id, so the order is stable)."""

    def key(s: dict[str, Any]) -> tuple[str, str]:
        return str(s.get("updated_at") or ""), str(s.get("session_id") or "")

    statuses.sort(key=key, reverse=True)
    return statuses


def load_statuses(root: str) -> list[dict[str, Any]]:
    """Every session's status, newest ``updated_at`` first."""
    return newest_first([s for s in (read_status(p) for p in status_files(root).values()) if s is not None])


def resolve_session(root: str, wanted: str) -> str:
    """A full session id from an id or a unique prefix (as git does with commits)."""
    from ccm_hooks.errors import CcmError

    if paths.valid_session_id(wanted) and any(
        os.path.lexists(p) for p in (paths.events_path(root, wanted), paths.status_path(root, wanted))
    ):
        return wanted  # a whole id: no need to list thousands of files
    known = set(_session_files(paths.status_dir(root), SUFFIX_STATUS, wanted))
    known |= set(_session_files(paths.events_dir(root), SUFFIX_EVENTS, wanted))
    matches = sorted(known)
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise CcmError(f"no session matches {wanted!r}; `ccm-hooks status` lists the sessions")
    raise CcmError(
        f"{wanted!r} matches {len(matches)} sessions ({', '.join(m[:12] for m in matches[:4])}…); "
        "give more of the id"
    )


class LogTail:
    """Incremental reader of one JSONL file: each ``read_new`` returns the complete records added since."""

    def __init__(self, path: str, offset: int = 0, inode: int | None = None) -> None:
        self.path = path
        self.offset = offset
        self.inode = inode

    def __repr__(self) -> str:
        return f"LogTail(path={self.path!r}, offset={self.offset})"

    def read_new(self) -> list[dict[str, Any]]:
        got = open_regular(self.path)
        if got is None:
            return []
        fd, st = got
        try:
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
