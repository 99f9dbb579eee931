"""Shipping: the session logs are the outbox; every record goes to ``ccm.events`` once, in seq order.

Per session a cursor (byte offset of the next unread line, last seq shipped, the log's inode) lives in
``$CCM_HOME/fleet/cursors.json``, replaced atomically, and moves only after the batch that carried those
records committed. A crash or an outage between the commit and the cursor write re-sends records the
database already has: ``(system, session_id, seq)`` is their key and ``ON CONFLICT DO NOTHING`` drops them.
So nothing is lost (the cursor never passes an uncommitted record) and nothing is duplicated (the key).

Work per call is proportional to what changed: ``read_batch`` reads only the sessions it is given, from
their cursors; ``moved`` finds, at a rescan, the logs whose size differs from what was last seen (one
``stat`` each). Status files are upserted with their session's records and never move a row backwards.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ccm_hooks import fastjson, fileio, paths
from ccm_hooks.statedir import reader

if TYPE_CHECKING:
    import psycopg

READ_CHUNK = 4 << 20  # bytes read from one log per batch at most (a record is at most 1 MiB)
CURSOR_VERSION = 1


def fleet_dir(root: str) -> str:
    return os.path.join(root, "fleet")


def cursors_path(root: str) -> str:
    return os.path.join(fleet_dir(root), "cursors.json")


@dataclass
class Cursor:
    offset: int = 0  # bytes of the log consumed (whole lines)
    seq: int = 0  # the highest seq shipped
    inode: int = 0
    size: int = 0  # the log's size when last read: a rescan reads only logs whose size moved


@dataclass
class SessionBatch:
    session_id: str
    records: list[tuple[int, dt.datetime | None, str, str]]  # seq, ts, event, the record as JSON text
    cursor: Cursor  # where the session's cursor goes once this commits
    status: dict[str, Any] | None


@dataclass
class Batch:
    sessions: list[SessionBatch] = field(default_factory=list)

    @property
    def records(self) -> int:
        return sum(len(s.records) for s in self.sessions)

    def oldest_ts(self) -> dt.datetime | None:
        stamps = [r[1] for s in self.sessions for r in s.records if r[1] is not None]
        return min(stamps) if stamps else None


def _ts(value: object) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


def _clean(value: Any) -> Any:
    """What jsonb refuses and a JSON file may hold: NUL characters and lone surrogates become U+FFFD."""
    if isinstance(value, str):
        if "\x00" in value:
            value = value.replace("\x00", "\ufffd")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            value = value.encode("utf-8", "replace").decode("utf-8").replace("?", "\ufffd")
        return value
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items()}
    return value


def jsonb_text(line: bytes, obj: Any) -> str:
    """The record as text jsonb accepts: the line as written, unless it escapes a NUL or a surrogate."""
    if b"\\u0000" in line or b"\\ud" in line or b"\\uD" in line:
        return fastjson.dumps(_clean(obj))
    return line.decode("utf-8", "replace")


class Outbox:
    """The cursors of one state dir, for one fleet database (``fleet_id``)."""

    def __init__(self, root: str, fleet_id: str) -> None:
        self.root = root
        self.fleet_id = fleet_id
        self.cursors: dict[str, Cursor] = {}
        self._load()

    def _load(self) -> None:
        try:
            data = fileio.read_json(cursors_path(self.root))
        except (OSError, ValueError):
            data = None  # unreadable: start over, the database drops what it already has
        if not isinstance(data, dict) or data.get("fleet_id") != self.fleet_id:
            return  # another database (or none yet): everything is to be shipped
        for sid, c in (data.get("sessions") or {}).items():
            if paths.valid_session_id(sid) and isinstance(c, dict):
                try:
                    self.cursors[sid] = Cursor(
                        int(c["offset"]), int(c["seq"]), int(c["inode"]), int(c["size"])
                    )
                except (KeyError, TypeError, ValueError):
                    continue

    def save(self) -> None:
        paths.ensure_dir(fleet_dir(self.root))
        data = {"v": CURSOR_VERSION, "fleet_id": self.fleet_id,
                "sessions": {sid: vars(c) for sid, c in self.cursors.items()}}  # fmt: skip
        fileio.atomic_write(cursors_path(self.root), fileio.encode_line(data))

    def moved(self) -> list[str]:
        """Sessions whose log size differs from when it was last read (a rescan: one stat per log)."""
        out = []
        logs = reader.event_files(self.root)
        for sid, path in logs.items():
            try:
                st = os.stat(path)
            except FileNotFoundError:
                continue
            c = self.cursors.get(sid)
            if c is None or st.st_size != c.size or st.st_ino != c.inode:
                out.append(sid)
        for sid in set(self.cursors) - set(logs):
            del self.cursors[sid]  # the session was deleted here; its rows stay in the database
        return out

    def backlog(self) -> tuple[int, int]:
        """(bytes not yet shipped, sessions with some) from the sizes last seen: no I/O."""
        behind = [c.size - c.offset for c in self.cursors.values() if c.size > c.offset]
        return sum(behind), len(behind)

    def read_batch(self, sessions: Iterable[str], limit: int) -> tuple[Batch, list[str]]:
        """Up to ``limit`` records from ``sessions``' logs, from their cursors; and the sessions that have
        more than fitted (to read again at once)."""
        batch = Batch()
        more: list[str] = []
        budget = limit
        for sid in sessions:
            if budget <= 0:
                more.append(sid)
                continue
            one, left = self._read_session(sid, budget)
            if one is not None:
                batch.sessions.append(one)
                budget -= len(one.records)
            if left:
                more.append(sid)
        return batch, more

    def _read_session(self, sid: str, budget: int) -> tuple[SessionBatch | None, bool]:
        if not paths.valid_session_id(sid):
            return None, False
        path = paths.events_path(self.root, sid)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return None, False
        try:
            st = os.fstat(fd)
            old = self.cursors.get(sid, Cursor())
            cur = Cursor(old.offset, old.seq, st.st_ino, st.st_size)
            if old.inode and (old.inode != st.st_ino or st.st_size < old.offset):
                cur.offset = 0  # replaced or truncated: read it again; the database drops what it has
            data = (
                os.pread(fd, min(READ_CHUNK, st.st_size - cur.offset), cur.offset)
                if st.st_size > cur.offset
                else b""
            )
        finally:
            os.close(fd)
        records: list[tuple[int, dt.datetime | None, str, str]] = []
        pos = 0
        while len(records) < budget:
            end = data.find(b"\n", pos)
            if end < 0:
                break
            line = data[pos:end]
            pos = end + 1
            try:
                obj = fastjson.loads(line)
            except ValueError:
                continue  # a torn line a crashed writer left, terminated by the next record: not a record
            seq = obj.get("seq") if isinstance(obj, dict) else None
            if not isinstance(seq, int) or isinstance(seq, bool):
                continue
            event = _clean(str(obj.get("event") or "?")[:64])
            records.append((seq, _ts(obj.get("ts")), event, jsonb_text(line, obj)))
            cur.seq = max(cur.seq, seq)
        if pos == 0 and len(data) == READ_CHUNK:
            pos = len(data)  # no newline in 4 MiB: not our format; skip it, the next line resyncs
        read_to = cur.offset + len(data)
        cur.offset += pos
        # More to read now: the budget stopped us before another whole line, or the chunk ended early.
        left = data.find(b"\n", pos) >= 0 or read_to < st.st_size
        if not records and cur == old:
            return None, False
        status = reader.read_status(paths.status_path(self.root, sid)) if records else None
        return SessionBatch(sid, records, cur, status), left

    def committed(self, batch: Batch) -> None:
        for one in batch.sessions:
            self.cursors[one.session_id] = one.cursor
        self.save()


# One statement, so one round trip and one implicit transaction: the records (re-sent ones dropped by the
# key), then each session's status, which never moves a row back to an older seq. Arrays go in binary
# (%b): text arrays of JSON would otherwise be escaped character by character.
SHIP = """
WITH new_events AS (
    INSERT INTO ccm.events (system, session_id, seq, ts, event, record)
    SELECT %(system)s, s, q, t, e, r::jsonb
      FROM unnest(%(sids)b::text[], %(seqs)b::bigint[], %(ts)b::timestamptz[], %(events)b::text[],
                  %(records)b::text[]) AS u(s, q, t, e, r)
    ON CONFLICT DO NOTHING
    RETURNING 1
), statuses AS (
    INSERT INTO ccm.sessions AS x (system, session_id, seq, state, project, cwd, task_id, updated_at, status)
    SELECT %(system)s, s, q, st, p, c, t, u, j::jsonb
      FROM unnest(%(s_sids)b::text[], %(s_seqs)b::bigint[], %(s_states)b::text[], %(s_projects)b::text[],
                  %(s_cwds)b::text[], %(s_tasks)b::text[], %(s_updated)b::timestamptz[],
                  %(s_status)b::text[]) AS v(s, q, st, p, c, t, u, j)
    ON CONFLICT (system, session_id) DO UPDATE
       SET seq = EXCLUDED.seq, state = EXCLUDED.state, project = EXCLUDED.project, cwd = EXCLUDED.cwd,
           task_id = EXCLUDED.task_id, updated_at = EXCLUDED.updated_at, status = EXCLUDED.status,
           shipped_at = now()
     WHERE x.seq <= EXCLUDED.seq
    RETURNING 1
)
SELECT (SELECT count(*) FROM new_events), (SELECT count(*) FROM statuses)
"""


def ship(conn: psycopg.Connection[Any], system: str, batch: Batch) -> int:
    """Write one batch atomically: its records, then each session's status. Returns the number of
    records that were new to the database (the others were there already: a re-send)."""
    rows = [(one.session_id, *r) for one in batch.sessions for r in one.records]
    statuses = [(one.session_id, one.status) for one in batch.sessions
                if one.status and isinstance(one.status.get("seq"), int)]  # fmt: skip
    if not rows and not statuses:
        return 0
    params = {
        "system": system,
        "sids": [r[0] for r in rows], "seqs": [r[1] for r in rows], "ts": [r[2] for r in rows],
        "events": [r[3] for r in rows], "records": [r[4] for r in rows],
        "s_sids": [sid for sid, _ in statuses], "s_seqs": [st["seq"] for _, st in statuses],
        "s_states": [_str(st.get("state")) for _, st in statuses],
        "s_projects": [_str(st.get("project")) for _, st in statuses],
        "s_cwds": [_str(st.get("cwd")) for _, st in statuses],
        "s_tasks": [_str(st.get("task_id")) for _, st in statuses],
        "s_updated": [_ts(st.get("updated_at")) for _, st in statuses],
        "s_status": [fastjson.dumps(_clean(st)) for _, st in statuses],
    }  # fmt: skip
    row = conn.execute(SHIP, params).fetchone()
    return int(row[0]) if row else 0


def _str(value: object) -> str | None:
    return _clean(value) if isinstance(value, str) else None
