"""The daemon's view of every session, kept current at a cost proportional to what changed.

``SessionCache`` holds each session's last status and the stamp (inode, size, mtime) of the file it was
read from. The watcher names the status files that changed, and only those are read again; a periodic
``rescan`` stats every file (no reads for unchanged ones) to catch what a watcher dropped. ``Timers`` holds
when each session next needs a look without a change (a retry, a resume, a liveness check).
"""

from __future__ import annotations

import heapq
import os
import stat
from collections.abc import Iterable
from typing import Any

from ccm_hooks import fastjson, paths
from ccm_hooks.statedir.reader import SUFFIX_STATUS

Stamp = tuple[int, int, int]
MAX_STATUS_BYTES = 1 << 22  # a status is a few KB; anything this big is not ours


def sid_of(name: str) -> str | None:
    """The session id a status file name stands for, or None (temp files, strays)."""
    if not name.endswith(SUFFIX_STATUS) or name.startswith("."):
        return None
    sid = name[: -len(SUFFIX_STATUS)]
    return sid if paths.valid_session_id(sid) else None


def read_status(path: str) -> tuple[Stamp, dict[str, Any] | None] | None:
    """(stamp, status) of a regular status file, status None if it is not a JSON object; None if there is
    no regular file. Opened non-blocking and without following links: a FIFO or a symlink planted here can
    neither hang the daemon nor point it elsewhere."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
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


class SessionCache:
    """session id -> its current status, re-read only when its file changed."""

    def __init__(self, root: str) -> None:
        self.dir = paths.status_dir(root)
        self.statuses: dict[str, dict[str, Any]] = {}
        self._stamps: dict[str, Stamp] = {}

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

    def rescan(self) -> set[str]:
        """Stat every status file; read those whose stamp moved; forget vanished ones. The changed ids."""
        changed: set[str] = set()
        seen: set[str] = set()
        try:
            entries = list(os.scandir(self.dir))
        except OSError:
            entries = []
        for entry in entries:
            sid = sid_of(entry.name)
            if sid is None:
                continue
            seen.add(sid)
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if self._stamps.get(sid) == (st.st_ino, st.st_size, st.st_mtime_ns) and sid in self.statuses:
                continue
            if self._load(sid, entry.path):
                changed.add(sid)
        for sid in set(self.statuses) - seen:
            self._forget(sid)
            changed.add(sid)
        return changed

    def _load(self, sid: str, path: str) -> bool:
        found = read_status(path)
        status = found[1] if found is not None else None
        if found is None or status is None or status.get("session_id") != sid:
            if sid in self.statuses:
                self._forget(sid)
                return True
            return False
        self._stamps[sid] = found[0]
        if self.statuses.get(sid) == status:
            return False
        self.statuses[sid] = status
        return True

    def _forget(self, sid: str) -> None:
        self.statuses.pop(sid, None)
        self._stamps.pop(sid, None)


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

    def reload(self) -> set[str]:
        """Read the pending items again; the session ids whose items changed."""
        from ccm_hooks.statedir import sendqueue

        fresh: dict[str, list[dict[str, Any]]] = {}
        for item in sendqueue.pending(self.root):
            fresh.setdefault(str(item["session_id"]), []).append(item)
        changed = {
            sid for sid in set(fresh) | set(self.by_session) if fresh.get(sid) != self.by_session.get(sid)
        }
        self.by_session = fresh
        return changed

    def items(self, sid: str) -> list[dict[str, Any]]:
        return self.by_session.get(sid, [])

    def __len__(self) -> int:
        return sum(len(items) for items in self.by_session.values())
