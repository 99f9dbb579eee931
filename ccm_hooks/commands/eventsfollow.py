"""``ccm-hooks events --follow``: like ``tail -n N -f``, over every session's log, new sessions included.

The last N records print first (the watcher's imports cost more than that), each log's offset just after
the last line considered; then the watcher starts and one pass over the directory catches whatever was
appended in between, so nothing is missed. From then on work follows what changed: the watcher says which
logs were written (``DirWatcher.take()``), and only those are read, from their offsets. Every
FOLLOW_RESCAN_S (and when the watcher lost events) the directory is listed and each log's size compared
with its offset: a stat per log, no reads unless it grew.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ccm_hooks import paths
from ccm_hooks.commands.eventsview import FOLLOW_RESCAN_S, Ends, Output, Query, history, kept, log_files
from ccm_hooks.statedir import logscan, reader

if TYPE_CHECKING:
    from collections.abc import Iterable


@dataclass
class Followed:
    path: str
    offset: int  # just after the last complete line handled
    inode: int | None = None
    exact: bool = True  # False: the log's size when following began; the line end below it is found lazily


def follow_logs(root: str, query: Query, out: Output) -> None:
    paths.ensure_layout(root)
    events_dir = paths.events_dir(root)
    ends: Ends = {}
    for line, rec in history(root, query, ends):
        out.record(line, rec)
    out.flush()
    # A log not in ends appeared after the history was read: all of it is new.
    logs = {
        sid: Followed(path, ends[sid][0], _inode(path), ends[sid][1])
        for sid, path in log_files(root, query).items()
        if sid in ends
    }
    from ccm_hooks.statedir.fswatch import DirWatcher

    with DirWatcher([events_dir]) as watcher:
        _print_new(root, _rescan(root, query, logs), logs, query, out)  # what came while the watcher started
        rescanned = time.monotonic()
        while True:
            watcher.wait(max(0.0, rescanned + FOLLOW_RESCAN_S - time.monotonic()))
            changes = watcher.take()
            if changes.overflow or time.monotonic() - rescanned >= FOLLOW_RESCAN_S:
                due = _rescan(root, query, logs)
                rescanned = time.monotonic()
            else:
                names = changes.names.get(events_dir, set())
                due = [sid for sid in map(_sid_of, names) if sid and _wanted(sid, query)]
            _print_new(root, due, logs, query, out)


def _sid_of(name: str) -> str | None:
    sid = name[: -len(reader.SUFFIX_EVENTS)] if name.endswith(reader.SUFFIX_EVENTS) else ""
    return sid if paths.valid_session_id(sid) else None


def _wanted(sid: str, query: Query) -> bool:
    return query.session is None or sid == query.session


def _inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def _rescan(root: str, query: Query, logs: dict[str, Followed]) -> list[str]:
    """The logs whose size or identity differs from what was read: one stat each."""
    files = log_files(root, query)
    for gone in logs.keys() - files.keys():
        del logs[gone]
    due = []
    for sid, path in files.items():
        known = logs.get(sid)
        try:
            st = os.stat(path)
        except OSError:
            continue
        if known is None or st.st_ino != known.inode or st.st_size != known.offset:
            due.append(sid)
    return due


def _print_new(root: str, due: Iterable[str], logs: dict[str, Followed], query: Query, out: Output) -> None:
    """Each due log from its offset to its end now, merged in time order (streamed: a log that grew by
    gigabytes between two wake-ups is still read in chunks)."""
    streams: list[tuple[Followed, logscan.LogStream]] = []
    for sid in sorted(set(due)):
        path = paths.events_path(root, sid)
        got = logscan.open_log(path)
        if got is None:
            continue
        fd, st = got
        os.close(fd)
        log = logs.get(sid)
        if log is None:
            log = logs[sid] = Followed(path, 0, st.st_ino)  # a session that started after us: all of it
        elif st.st_ino != log.inode or st.st_size < log.offset:
            log.offset, log.inode, log.exact = 0, st.st_ino, True  # replaced or truncated: start over
        elif not log.exact:
            # A log not read when following began: it may then have ended in a record being written,
            # whose start is the last line end below the size seen then.
            log.offset, log.exact = logscan.end_of_lines(path, log.offset), True
        if st.st_size > log.offset:
            streams.append((log, logscan.LogStream(path, log.offset, stop=st.st_size, inode=st.st_ino)))
    if not streams:
        return
    chunk = logscan.chunk_for(len(streams))
    for _, stream in streams:
        stream.chunk = chunk
    sources = [kept(stream, query) for _, stream in streams]
    for line, rec in sources[0] if len(sources) == 1 else logscan.merge(sources):
        out.record(line, rec)
    for log, stream in streams:
        log.offset = stream.offset
    out.flush()
