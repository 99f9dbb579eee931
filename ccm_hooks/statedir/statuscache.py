"""Every session's status, kept current at the cost of what changed (for ``top`` and ``status --watch``).

A status file is replaced by a rename, so a new version is a new inode: (inode, size, mtime) tells without
reading whether a file is the one already parsed. ``update`` re-reads the names a watcher reported
(``DirWatcher.take()``); ``rescan`` lists the directory and stats every file, reading only those that
differ, and is the only full pass: run it at start, when the watcher lost events, and every few seconds.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from ccm_hooks import paths
from ccm_hooks.statedir import reader
from ccm_hooks.statedir.fswatch import Changes

Key = tuple[int, int, int]


class StatusCache:
    def __init__(self, root: str) -> None:
        self.root = root
        self.dir = paths.status_dir(root)
        self._entries: dict[str, tuple[Key, dict[str, Any] | None]] = {}
        self._sorted: list[dict[str, Any]] | None = None
        self.reads = 0  # files parsed so far (the benchmarks and tests watch this)

    def _sid(self, name: str) -> str | None:
        if not name.endswith(reader.SUFFIX_STATUS):
            return None
        sid = name[: -len(reader.SUFFIX_STATUS)]
        return sid if paths.valid_session_id(sid) else None

    def _refresh(self, sid: str) -> bool:
        """Re-read one session's status if its file is not the one cached; True if anything changed."""
        path = os.path.join(self.dir, sid + reader.SUFFIX_STATUS)
        try:
            st = os.stat(path, follow_symlinks=False)
        except OSError:
            return self._entries.pop(sid, None) is not None
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        old = self._entries.get(sid)
        if old is not None and old[0] == key:
            return False
        status, got = reader.read_status_stat(path)
        self.reads += 1
        if got is None:
            return self._entries.pop(sid, None) is not None
        self._entries[sid] = ((got.st_ino, got.st_size, got.st_mtime_ns), status)
        return old is None or old[1] != status

    def update(self, names: Iterable[str]) -> bool:
        """Re-read the named files (names in the status dir, as a watcher gives them)."""
        changed = False
        for sid in {self._sid(name) for name in names} - {None}:
            assert sid is not None
            changed |= self._refresh(sid)
        if changed:
            self._sorted = None
        return changed

    def rescan(self) -> bool:
        """List the directory, drop what is gone, re-read what differs."""
        found = set(reader.status_files(self.root))
        changed = False
        for gone in self._entries.keys() - found:
            del self._entries[gone]
            changed = True
        for sid in found:
            changed |= self._refresh(sid)
        if changed:
            self._sorted = None
        return changed

    def apply(self, changes: Changes) -> bool:
        """What a watcher reported: the names it saw, or everything when it lost events."""
        if changes.overflow:
            return self.rescan()
        return self.update(changes.names.get(self.dir, ()))

    def put(self, status: dict[str, Any]) -> None:
        """A status this process just wrote (top's w and r): shown at once, re-read when its file changes."""
        sid = str(status.get("session_id"))
        old = self._entries.get(sid)
        self._entries[sid] = (old[0] if old else (0, 0, 0), status)
        self._sorted = None

    def statuses(self) -> list[dict[str, Any]]:
        """Newest first; the same list object until something changes."""
        if self._sorted is None:
            self._sorted = reader.newest_first([s for _, s in self._entries.values() if s is not None])
        return self._sorted
