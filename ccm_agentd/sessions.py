"""The daemon's view of every session, kept current at a cost proportional to what changed.

``SessionCache`` holds each session's last status and the stamp (inode, size, mtime) of the file it was
read from. The watcher names the status files that changed, and only those are read again; a periodic
``rescan`` stats every file (no reads for unchanged ones) to catch what a watcher dropped, and removes the
temp files of writers that died. ``Timers`` holds when each session next needs a look without a change (a
retry, a resume, a liveness check). A file that is not one ccm may use (a FIFO, a symlink, another user's,
not a status) is logged once, not on every pass (``Problems``), and never believed.
"""

from __future__ import annotations

import heapq
import logging
import os
import stat
import time
from collections.abc import Iterable
from typing import Any

from ccm_hooks import fastjson, fileio, paths
from ccm_hooks.statedir.reader import SUFFIX_STATUS

log = logging.getLogger("ccm_agentd")

Stamp = tuple[int, int, int]
MAX_STATUS_BYTES = 1 << 22  # a status is a few KB; anything this big is not ours


def sid_of(name: str) -> str | None:
    """The session id a status file name stands for, or None (temp files, strays)."""
    if not name.endswith(SUFFIX_STATUS) or name.startswith("."):
        return None
    sid = name[: -len(SUFFIX_STATUS)]
    return sid if paths.valid_session_id(sid) else None


def read_status(path: str) -> tuple[Stamp, dict[str, Any] | None] | None:
    """(stamp, status) of a regular status file of the user's, status None if it is not a JSON object; None
    if there is no such file. Opened non-blocking and without following links (``fileio.open_regular``): a
    FIFO, a symlink or another user's file planted here can neither hang the daemon nor steer it."""
    try:
        fd, st = fileio.open_regular_stat(path, os.O_RDONLY | os.O_NONBLOCK, private=True)
    except OSError:
        return None
    try:
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if st.st_size > MAX_STATUS_BYTES:
            return stamp, None
        data = os.pread(fd, st.st_size + 1, 0)
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        obj = fastjson.loads(data)
    except ValueError:
        return stamp, None
    return stamp, obj if isinstance(obj, dict) and obj.get("session_id") is not None else None


def _stamp_of(st: os.stat_result) -> Stamp:
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class Problems:
    """Files the daemon refuses, each logged once: again only after it was fixed or removed and came back."""

    def __init__(self) -> None:
        self.known: dict[str, str] = {}

    def note(self, path: str, problem: str | None) -> None:
        if problem is None:
            self.known.pop(path, None)
        elif self.known.get(path) != problem:
            self.known[path] = problem
            log.warning("%s; ccm-agentd ignores it", problem)

    def keep_only(self, paths_now: Iterable[str]) -> None:
        """Forget the problems of files that are gone (a full pass saw all that are left)."""
        now = set(paths_now)
        for path in [p for p in self.known if p not in now]:
            del self.known[path]


class SessionCache:
    """session id -> its current status, re-read only when its file changed."""

    def __init__(self, root: str) -> None:
        self.dir = paths.status_dir(root)
        self.statuses: dict[str, dict[str, Any]] = {}
        self.problems = Problems()
        self._stamps: dict[str, Stamp] = {}  # of the file last read, also of one refused (not re-read)
        self._sids: dict[str, str] = {}  # file name -> session id, validated once

    def get(self, sid: str) -> dict[str, Any] | None:
        return self.statuses.get(sid)

    def put(self, sid: str, status: dict[str, Any]) -> None:
        """A status the daemon wrote itself (ccm.state, ccm.delivery): known without reading the file."""
        self.statuses[sid] = status

    def refresh(self, sids: Iterable[str]) -> set[str]:
        """Read these sessions' status files again; the ids whose status is new, different or gone."""
        changed = set()
        for sid in sids:
            if self._load(sid, os.path.join(self.dir, sid + SUFFIX_STATUS)):
                changed.add(sid)
        return changed

    def rescan(self, now: float | None = None) -> set[str]:
        """Stat every status file; read those whose stamp moved; forget vanished ones; remove temp files
        older than fileio.STALE_TEMP_S (spec/layout.md#temp-files). The changed ids."""
        now = time.time() if now is None else now
        changed: set[str] = set()
        seen: set[str] = set()
        try:
            entries = list(os.scandir(self.dir))
        except OSError:
            entries = []
        for entry in entries:
            name = entry.name
            sid = self._sids.get(name)
            if sid is None:
                if fileio.is_temp_name(name):
                    self._clean_temp(entry, now)
                    continue
                sid = sid_of(name)
                if sid is None:
                    continue
                self._sids[name] = sid
            seen.add(sid)
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if self._stamps.get(sid) == _stamp_of(st):
                continue  # read (or refused) as it is now
            if self._load(sid, entry.path):
                changed.add(sid)
        for sid in (set(self.statuses) | set(self._stamps)) - seen:
            if sid in self.statuses:
                changed.add(sid)
            self._forget(sid)
        self.problems.keep_only(os.path.join(self.dir, sid + SUFFIX_STATUS) for sid in seen)
        return changed

    def _clean_temp(self, entry: os.DirEntry[str], now: float) -> None:
        try:
            st = entry.stat(follow_symlinks=False)
            if now - st.st_mtime > fileio.STALE_TEMP_S and not stat.S_ISDIR(st.st_mode):
                os.unlink(entry.path)
                log.info("removed %s: a temp file left by a writer that died", entry.path)
        except OSError:
            pass

    def _load(self, sid: str, path: str) -> bool:
        found = read_status(path)
        status = found[1] if found is not None else None
        if found is None or status is None or status.get("session_id") != sid:
            was = sid in self.statuses
            self._refused(sid, path, found[0] if found is not None else None)
            return was
        self.problems.note(path, None)
        self._stamps[sid] = found[0]
        if self.statuses.get(sid) == status:
            return False
        self.statuses[sid] = status
        return True

    def _refused(self, sid: str, path: str, stamp: Stamp | None) -> None:
        """The file is missing or not a status ccm may believe: forget the session, say why once."""
        self.statuses.pop(sid, None)
        try:
            st = os.lstat(path)
        except OSError:  # gone
            self._forget(sid)
            self.problems.note(path, None)
            return
        self._stamps[sid] = stamp or _stamp_of(st)
        problem = paths.file_problem(st, path, private=True) or (
            f"{path} is not a status of session {sid} (a JSON object with its session_id)"
        )
        self.problems.note(path, problem)

    def _forget(self, sid: str) -> None:
        self.statuses.pop(sid, None)
        self._stamps.pop(sid, None)
        self._sids.pop(sid + SUFFIX_STATUS, None)


class Timers:
    """When each key next needs a look: one due time per key, the earliest found in O(log n)."""

    def __init__(self) -> None:
        self._due: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []

    def set(self, key: str, due: float | None) -> None:
        """Set (or with None, clear) the key's due time."""
        if due is None:
            self._due.pop(key, None)
            return
        if self._due.get(key) == due:
            return
        self._due[key] = due
        heapq.heappush(self._heap, (due, key))
        if len(self._heap) > 4 * len(self._due) + 64:  # drop stale entries now and then
            self._heap = [(d, k) for k, d in self._due.items()]
            heapq.heapify(self._heap)

    def pop_due(self, now: float) -> list[str]:
        """The keys due at ``now``, removed."""
        out = []
        while self._heap and self._heap[0][0] <= now:
            due, key = heapq.heappop(self._heap)
            if self._due.get(key) == due:
                del self._due[key]
                out.append(key)
        return out

    def next_due(self) -> float | None:
        while self._heap and self._due.get(self._heap[0][1]) != self._heap[0][0]:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def __len__(self) -> int:
        return len(self._due)


class QueueView:
    """The pending prompt queue by session, read again only when ``queue/`` changed."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.by_session: dict[str, list[dict[str, Any]]] = {}
        self.problems = Problems()

    def reload(self) -> set[str]:
        """Read the pending items again; the session ids whose items changed."""
        from ccm_hooks.statedir import sendqueue

        fresh: dict[str, list[dict[str, Any]]] = {}
        refused: dict[str, str] = {}
        for item in sendqueue.pending(self.root, refused):
            fresh.setdefault(str(item["session_id"]), []).append(item)
        for path, problem in refused.items():
            self.problems.note(path, problem)
        self.problems.keep_only(refused)
        changed = {
            sid for sid in set(fresh) | set(self.by_session) if fresh.get(sid) != self.by_session.get(sid)
        }
        self.by_session = fresh
        return changed

    def items(self, sid: str) -> list[dict[str, Any]]:
        return self.by_session.get(sid, [])

    def __len__(self) -> int:
        return sum(len(items) for items in self.by_session.values())
