"""``ccm-hooks events``: the event logs, read back for people and for jq, at the cost of what is asked.

- One session (``-s``): its log in file order, which is seq order (spec/events.md), streamed.
- Every session: each log streamed and merged in time order through a heap (``logscan.merge``).
- ``--since``: each log entered by binary search on ``ts`` (``logscan.seek_since`` says how), and logs not
  written since then (mtime) are not opened at all.
- ``-n N`` and ``--follow``: like ``tail -n N -f``: the last N records (10 with ``--follow``), found by
  reading backwards, then new records as the watcher reports which logs grew.
Memory stays bounded by the read buffers, whatever the size of the logs. ``--json`` prints each record's
line as stored (exact, and already jq-ready); the text form goes through ``safetext``.
"""

from __future__ import annotations

import datetime as dt
import heapq
import os
import sys
import time

from ccm_hooks import paths
from ccm_hooks.statedir import logscan, reader
from ccm_hooks.statedir.safetext import clean, json_safe_bytes, one_line
from ccm_hooks.statedir.timefmt import iso_utc, parse_since, shift_ts

TYPE_CHECKING = False  # no typing/dataclasses at run time on this path (main.py says why)
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

FOLLOW_RESCAN_S = 5.0  # watchers can miss events: compare every log's size this often anyway
FOLLOW_DEFAULT_LINES = 10
FLUSH_BYTES = 1 << 16


class Query:
    """What to print: ``session`` a full id or None for all; ``since`` in ts format; ``lines``: the last N."""

    def __init__(self, session: str | None, events: frozenset[str], since: str | None, lines: int | None):
        self.session, self.events, self.since, self.lines = session, events, since, lines

    def keep(self, rec: dict[str, Any]) -> bool:
        if self.events and rec.get("event") not in self.events:
            return False
        return not (self.since and str(rec.get("ts") or "") < self.since)

    @property
    def threshold(self) -> str:
        """``since`` lowered by the out-of-order margin: where seeking and pruning may stop."""
        return shift_ts(self.since, -logscan.SEEK_MARGIN_S) if self.since else ""


class Output:
    """Lines written in large chunks (never a write per token), text made safe for a terminal."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.parts: list[bytes] = []
        self.size = 0
        self.stamps = Stamps()
        self.encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
        self.out = sys.stdout.buffer

    def record(self, line: bytes, rec: dict[str, Any]) -> None:
        if self.as_json:
            data = json_safe_bytes(line) + b"\n"
        else:
            data = (format_event(rec, self.stamps) + "\n").encode(self.encoding, "replace")
        self.parts.append(data)
        self.size += len(data)
        if self.size >= FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        if self.parts:
            self.out.write(b"".join(self.parts))
            self.parts, self.size = [], 0
        self.out.flush()


class Stamps:
    """A record's ts as local time: HH:MM:SS today, MM-DD HH:MM before. Cached per minute: printing a
    million records must not convert a million datetimes."""

    def __init__(self) -> None:
        self.today = time.strftime("%Y-%m-%d")
        self.minutes: dict[str, tuple[str, bool]] = {}

    def __call__(self, ts: object) -> str:
        if not isinstance(ts, str) or len(ts) < 19:
            return "?"
        minute = self.minutes.get(ts[:16])
        if minute is None:
            try:
                utc = dt.datetime.fromisoformat(ts[:16] + ":00+00:00")
            except ValueError:
                return "?"
            local = time.localtime(utc.timestamp())
            today = time.strftime("%Y-%m-%d", local) == self.today
            minute = (time.strftime("%H:%M" if today else "%m-%d %H:%M", local), today)
            if len(self.minutes) > 4096:
                self.minutes.clear()
            self.minutes[ts[:16]] = minute
        return f"{minute[0]}:{ts[17:19]}" if minute[1] else minute[0]


def describe(rec: dict[str, Any]) -> str:
    """The interesting part of one record, in one line (not yet made safe: format_event does that)."""
    from ccm_hooks.record import tool_summary

    event = rec.get("event")
    tool_input = rec.get("tool_input") if isinstance(rec.get("tool_input"), dict) else None
    name = rec.get("tool_name") if isinstance(rec.get("tool_name"), str) else None
    action = tool_summary(name, tool_input) or ""
    if event == "PostToolUse":
        took = f" {rec['duration_ms']}ms" if isinstance(rec.get("duration_ms"), int) else ""
        return f"{action} ok{took}"
    if event == "PostToolUseFailure":
        code = f" exit {rec['exit_code']}" if rec.get("exit_code") is not None else ""
        error = str(rec.get("error") or "").split("\n", 1)[-1] if code else str(rec.get("error") or "")
        return f"{action} FAILED{code}: {error}"
    if event == "PermissionRequest":
        return f"asks permission: {action}"
    if event == "UserPromptSubmit":
        return repr(one_line(rec.get("prompt"), 200))
    if event == "Notification":
        return f"[{rec.get('notification_type')}] {rec.get('message') or ''}"
    if event in ("Stop", "SubagentStop"):
        who = f"({rec.get('agent_type') or 'subagent'}) " if event == "SubagentStop" else ""
        return who + one_line(rec.get("last_assistant_message"), 200)
    if event == "StopFailure":
        return f"error: {rec.get('error')}  {one_line(rec.get('last_assistant_message'), 120)}"
    if event == "SessionStart":
        return " ".join(str(x) for x in (rec.get("source"), rec.get("model"), rec.get("cwd")) if x)
    if event == "SessionEnd":
        return str(rec.get("reason") or "")
    if event == "SubagentStart":
        return str(rec.get("agent_type") or "")
    if event == "PreCompact":
        return str(rec.get("trigger") or "")
    return _describe_ccm(event, rec) if isinstance(event, str) and event.startswith("ccm.") else action


def _describe_ccm(event: str, rec: dict[str, Any]) -> str:
    def part(key: str) -> dict[str, Any]:
        value = rec.get(key)
        return value if isinstance(value, dict) else {}

    if event == "ccm.watch":
        w = part("watch")
        settings = f"max {w.get('max_turns')} turns, prompt {w.get('prompt')!r}, source {w.get('source')}"
        return f"watch {'on' if w.get('enabled') else 'off'} by {rec.get('by')}: {settings}"
    if event == "ccm.watch_reset":
        return f"watch run reset by {rec.get('by')}"
    if event == "ccm.decision":
        d = part("decision")
        why = f" ({d.get('reason')})" if d.get("reason") else ""
        return f"{d.get('action')}{why}: {d.get('detail')}"
    if event == "ccm.state":
        s = part("set_state")
        return f"{s.get('state')}: {s.get('reason') or ''}"
    if event == "ccm.delivery":
        d = part("delivery")
        step = f"{d.get('kind')} {d.get('item')} attempt {d.get('attempt')}"
        return f"{step}: {d.get('outcome')} {d.get('detail')}"
    if event == "ccm.queued":
        q = part("queued")
        return f"queued {q.get('item')}: {q.get('text')!r}"
    return ""


def format_event(rec: dict[str, Any], stamps: Stamps) -> str:
    agent = f" [{rec['agent_type'] or 'agent'}]" if rec.get("agent_id") else ""
    line = (
        f"{stamps(rec.get('ts'))}  {str(rec.get('session_id'))[:8]}  #{rec.get('seq')!s:<4} "
        f"{rec.get('event')!s:<18}{agent} "
    )
    return clean(line) + one_line(describe(rec), 400)


def events_cmd(
    session: str | None,
    events: list[str],
    since: str | None,
    follow: bool,
    as_json: bool,
    lines: int | None = None,
) -> int:
    from ccm_hooks.errors import CcmError

    if lines is not None and lines < 0:
        raise CcmError("-n/--lines must be 0 or more")
    root = paths.state_dir()
    query = Query(
        session=reader.resolve_session(root, session) if session else None,
        events=frozenset(events),
        since=parse_since(since, time.time()) if since else None,
        lines=lines if lines is not None else (FOLLOW_DEFAULT_LINES if follow else None),
    )
    out = Output(as_json)
    if not follow:
        for line, rec in history(root, query):
            out.record(line, rec)
        out.flush()
        return 0
    from ccm_hooks.commands.eventsfollow import follow_logs

    follow_logs(root, query, out)
    return 0


def log_files(root: str, query: Query) -> dict[str, str]:
    if query.session is not None:
        path = paths.events_path(root, query.session)
        return {query.session: path} if os.path.lexists(path) else {}
    return reader.event_files(root)


Ends = dict[str, tuple[int, bool]]  # session id -> (offset, exact)


def history(root: str, query: Query, ends: Ends | None = None) -> Iterator[tuple[bytes, Any]]:
    """What to print before following: every matching record, or the last ``query.lines`` of them.
    ``ends``, when given, gets each log's offset just after the last line considered, exact, or for a log
    that was not read, its size then (not exact: the follower finds the last line end below it when the
    log grows, which needs no read now: bytes before that size never change)."""
    files = log_files(root, query)
    if query.lines is not None:
        yield from _tail(files, query, ends)
        return
    threshold = query.threshold
    streams = []
    for sid, path in sorted(files.items()):
        if threshold and _newest_possible(path) < threshold:
            continue  # not written since: no record in it can be that new (ts <= write time)
        start = logscan.seek_since(path, threshold) if threshold else 0
        streams.append((sid, path, start))
    chunk = logscan.chunk_for(len(streams))
    since = query.since or ""
    sources = [
        kept(logscan.LogStream(path, start, chunk=chunk, min_ts=since), query) for _, path, start in streams
    ]
    yield from sources[0] if len(sources) == 1 else logscan.merge(sources)


def kept(stream: logscan.LogStream, query: Query) -> Iterator[tuple[bytes, Any]]:
    for line, rec in stream.lines():
        if query.keep(rec):
            yield line, rec


def _may_hold(newest: str, n: int, best: list[Any], threshold: str) -> bool:
    """Whether a log whose records are all at or before ``newest`` can add to the newest ``n``."""
    if n == 0 or not newest:
        return n > 0
    if threshold and newest < threshold:
        return False
    return len(best) < n or newest >= best[0][0][0]


def _newest_possible(path: str) -> str:
    """A ts no record of this log can exceed: its last write time (a record's ts is taken before its
    write), plus slack for the kernel's coarse file clock."""
    try:
        return _newest_by_mtime(os.stat(path))
    except OSError:
        return ""


def _newest_by_mtime(st: os.stat_result) -> str:
    return iso_utc(st.st_mtime + logscan.MTIME_SLACK_S)


def _stats(files: dict[str, str]) -> list[tuple[str, int, str, str]]:
    """(newest possible ts, size, session id, path) per log, newest first: one stat each."""
    out = []
    for sid, path in files.items():
        try:
            st = os.stat(path)
        except OSError:
            continue
        out.append((_newest_by_mtime(st), st.st_size, sid, path))
    out.sort(reverse=True)
    return out


def _tail(files: dict[str, str], query: Query, ends: Ends | None) -> Iterator[tuple[bytes, Any]]:
    """The last N matching records. One log: exactly its last N, in file order. Several: each log's last N,
    the newest N of those in merge order. Logs are visited newest-written first, and a log last written
    before the oldest record kept so far is not read: none of its records can be newer (ts is taken before
    the write). So the cost follows N, not the number of sessions."""
    n = query.lines or 0
    threshold = query.threshold
    if len(files) == 1:
        ((sid, path),) = files.items()
        start, end = logscan.tail_start(path, n, query.keep, threshold) if n else (0, -1)
        end = logscan.end_of_lines(path) if end < 0 else end
        if ends is not None:
            ends[sid] = (end, True)
        if n:
            yield from kept(logscan.LogStream(path, start, stop=end), query)
        return
    best: list[tuple[tuple[str, str, int], int, str, bytes, Any]] = []  # min-heap of the newest n so far
    counter = 0
    for mtime, size, sid, path in _stats(files):
        # Two bounds on the newest ts in this log: its mtime (cheap: already stat'ed), and its last
        # record's ts plus the margin (a small read), for logs whose mtime says little (copied, touched).
        if not _may_hold(mtime, n, best, threshold) or not _may_hold(
            shift_ts(logscan.last_ts(path) or "", logscan.SEEK_MARGIN_S), n, best, threshold
        ):
            if ends is not None:
                ends[sid] = (size, False)
            continue
        start, end = logscan.tail_start(path, n, query.keep, threshold)
        if ends is not None:
            ends[sid] = (end, True)
        for line, rec in kept(logscan.LogStream(path, start, stop=end), query):
            counter += 1
            item = (logscan.merge_key(rec), counter, sid, line, rec)
            if len(best) < n:
                heapq.heappush(best, item)
            elif item[0] > best[0][0]:
                heapq.heapreplace(best, item)
    # Merge the kept records back per session, each in the order it was read (file order).
    per_session: dict[str, list[tuple[int, bytes, Any]]] = {}
    for _, count, sid, line, rec in best:
        per_session.setdefault(sid, []).append((count, line, rec))
    groups = [[(line, rec) for _, line, rec in sorted(items)] for items in per_session.values()]
    yield from logscan.merge(iter(g) for g in groups)
