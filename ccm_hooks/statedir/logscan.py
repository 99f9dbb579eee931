"""Reading event logs at a cost set by the question, not by the size of the log.

- ``LogStream``: the complete records of one log from a byte offset on, read in bounded chunks (a file is
  opened per chunk, so thousands of streams hold no descriptors), so memory is one chunk whatever the size.
- ``seek_since``: where in a log the records at or after a time start, by binary search over line starts.
- ``tail_start``: where the last N matching records of a log start, reading backwards from the end.
- ``merge``: many sessions' streams in time order through a heap, each session kept in file (seq) order.

How ``seek_since`` finds the start (spec/events.md, "Reading"): ``ts`` is when a handler started, and a
handler waits at most 5 s for the session lock, so a record can sit after records whose ``ts`` is later than
its own, but never by more than that wait (and its own run time). Call that bound D. The search treats the
log as sorted by ``ts`` against a threshold ``since - SEEK_MARGIN_S`` (60 s, far above D): it narrows
[lo, hi) keeping "the line that ends at lo has ts < threshold" and "the line that starts at hi has
ts >= threshold", probing the first whole line after the midpoint. Every record with ts >= since lies at
or after lo: any line after such a record has ts >= since - D >= threshold, so no line after it could have
been a lo line. The scan then starts at lo and keeps the records with ts >= since. A wall clock stepped
back by more than the margin breaks the assumption for the records around the step.
"""

from __future__ import annotations

import heapq
import os

from ccm_hooks import fastjson
from ccm_hooks.statedir.reader import open_regular

TYPE_CHECKING = False  # no typing/dataclasses at run time on the read commands' path (main.py says why)
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from typing import Any

    Record = dict[str, Any]
    Keep = Callable[[Record], bool]

CHUNK = 1 << 20  # bytes per read for one stream
MIN_CHUNK = 16 << 10
MERGE_BUDGET = 32 << 20  # read buffers of all streams of one merge together
MAX_LINE = 2 << 20  # the spec bounds a line at 1 MiB; a longer one is damage and is skipped unread
SEEK_MARGIN_S = 60.0
MTIME_SLACK_S = 2.0  # a file's mtime comes from a coarse kernel clock that can trail time.time()
SEEK_WINDOW = 64 << 10  # below this many bytes, scanning beats probing
RECORD_TS_PREFIX = b'{"v":1,"ts":"'  # every record the handler writes starts so (spec/events.md)
TS_LEN = 27


def open_log(path: str) -> tuple[int, os.stat_result] | None:
    """A read-only descriptor and its stat for a regular file, or None (gone, a FIFO, a symlink, ...)."""
    return open_regular(path)


def parse(line: bytes) -> Record | None:
    """A record, or None for a line that is not a JSON object (readers skip those: spec/events.md)."""
    try:
        obj = fastjson.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    return obj if isinstance(obj, dict) else None


class LogStream:
    """The complete, parseable records of one log between ``start`` and ``stop`` (None: the end as it is
    when each chunk is read). ``offset`` is just after the last line consumed, so a follower resumes there;
    a torn last line is left for next time. Lines over MAX_LINE are skipped without holding them.
    ``inode``: the file this must be (a replaced file ends the stream)."""

    def __init__(
        self,
        path: str,
        start: int = 0,
        stop: int | None = None,
        chunk: int = CHUNK,
        inode: int | None = None,
        min_ts: str = "",
    ) -> None:
        self.path = path
        self.start = self.offset = start
        self.stop = stop
        self.chunk = chunk
        self.inode = inode
        self.min_ts = min_ts  # lines with an earlier ts are skipped unparsed (a --since scan)

    def lines(self) -> Iterator[tuple[bytes, Record]]:
        """(raw line without its newline, record) in file order."""
        buf = b""  # bytes not yet split into lines; buf[0] is at file offset self.offset
        pos = self.offset  # where the next read starts
        skipping = False  # inside a line longer than MAX_LINE: drop bytes up to its newline
        while True:
            got = open_log(self.path)
            if got is None:
                return
            fd, st = got
            try:
                if self.inode is None:
                    self.inode = st.st_ino
                elif st.st_ino != self.inode:
                    return  # replaced under us: what follows belongs to another file
                end = st.st_size if self.stop is None else min(self.stop, st.st_size)
                data = os.pread(fd, min(self.chunk, end - pos), pos) if pos < end else b""
            finally:
                os.close(fd)
            if not data:
                return
            pos += len(data)
            if skipping:
                nl = data.find(b"\n")
                if nl < 0:
                    continue
                data, skipping = data[nl + 1 :], False
                self.offset = pos - len(data)
            buf += data
            start = 0
            while True:
                nl = buf.find(b"\n", start)
                if nl < 0:
                    break
                line = buf[start:nl]
                start = nl + 1
                self.offset += len(line) + 1
                if line:
                    if self.min_ts and (line_ts(line) or "") < self.min_ts:
                        continue
                    rec = parse(line)
                    if rec is not None:
                        yield line, rec
            buf = buf[start:]
            if len(buf) > MAX_LINE:
                buf, skipping = b"", True

    def __iter__(self) -> Iterator[Record]:
        for _, rec in self.lines():
            yield rec


def _read_line_at(fd: int, pos: int, hi: int) -> tuple[int, bytes] | None:
    """(start, line) of the first whole line starting at or after ``pos`` and before ``hi``."""
    if pos > 0:
        probe = pos - 1
        while True:
            block = os.pread(fd, SEEK_WINDOW, probe)
            nl = block.find(b"\n")
            if nl >= 0:
                pos = probe + nl + 1
                break
            if not block or probe + len(block) >= hi:
                return None
            probe += len(block)
    if pos >= hi:
        return None
    line = b""
    while len(line) <= MAX_LINE:
        block = os.pread(fd, SEEK_WINDOW, pos + len(line))
        nl = block.find(b"\n")
        if nl >= 0:
            return pos, line + block[:nl]
        if not block:
            return None  # a torn last line
        line += block
    return pos, line[:0]  # too long to be a record: the caller skips it


def line_ts(line: bytes) -> str | None:
    """A record's ``ts`` without parsing the whole line when it is in the handler's layout."""
    if line.startswith(RECORD_TS_PREFIX) and line[13 + TS_LEN : 14 + TS_LEN] == b'"':
        return line[13 : 13 + TS_LEN].decode("ascii", "replace")
    rec = parse(line)
    ts = rec.get("ts") if rec is not None else None
    return ts if isinstance(ts, str) else None


def seek_since(path: str, threshold: str) -> int:
    """An offset at or before the first record whose ``ts`` is at or after ``threshold`` (see the module
    docstring for why records in the small out-of-order window are still found: pass since - margin)."""
    got = open_log(path)
    if got is None:
        return 0
    fd, st = got
    try:
        lo, hi = 0, st.st_size
        last = _last_ts(fd, hi)
        if last is not None and last < threshold:
            return hi  # even the newest record is older: nothing in this log (the common case for --since)
        while hi - lo > SEEK_WINDOW:
            probe = _read_line_at(fd, (lo + hi) // 2, hi)
            ts = None
            while probe is not None:
                start, line = probe
                ts = line_ts(line) if line else None
                if ts is not None:
                    break
                probe = _read_line_at(fd, start + len(line) + 1, hi)  # no ts here: try the next line
            if probe is None or ts is None:
                break  # nothing to probe between the midpoint and hi
            start, line = probe
            if ts < threshold:
                lo = start + len(line) + 1
            else:
                hi = start
        return lo
    finally:
        os.close(fd)


def _last_ts(fd: int, size: int) -> str | None:
    """The ts of the last complete line that has one, looking at the last few KB (up to SEEK_WINDOW)."""
    block_size = 4096
    while True:
        start = max(0, size - block_size)
        block = os.pread(fd, size - start, start)
        lines = block.split(b"\n")[:-1]  # the piece after the last newline is torn (or empty)
        for line in reversed(lines[1:] if start > 0 else lines):  # the first may be cut
            ts = line_ts(line) if line else None
            if ts is not None:
                return ts
        if start == 0 or block_size >= SEEK_WINDOW:
            return None
        block_size *= 4


def last_ts(path: str) -> str | None:
    """The ts of a log's last record (every record's ts is at most SEEK_MARGIN_S after it)."""
    got = open_log(path)
    if got is None:
        return None
    fd, st = got
    try:
        return _last_ts(fd, st.st_size)
    finally:
        os.close(fd)


def tail_start(path: str, n: int, keep: Keep, stop_ts: str = "") -> tuple[int, int]:
    """(offset, end): the last ``n`` records ``keep`` accepts start at ``offset``; ``end`` is just after the
    last complete line. Reads backwards in growing blocks; stops early at a line whose ts is below
    ``stop_ts`` (a --since threshold already lowered by the margin)."""
    got = open_log(path)
    if got is None:
        return 0, 0
    fd, st = got
    try:
        pos, block = st.st_size, 64 << 10
        carry = b""  # the start of a line cut by the previous block boundary (ends with its newline)
        end: int | None = None
        dropping = True  # bytes after the last newline (a torn line, or an over-long one) are not lines
        found = 0
        while pos > 0 or carry:
            start = max(0, pos - block)
            data = os.pread(fd, pos - start, start) + carry
            pos, block = start, min(block * 2, CHUNK)
            if dropping:
                cut = data.rfind(b"\n")
                if cut < 0:
                    carry = b""
                    continue
                data, dropping = data[: cut + 1], False
                if end is None:
                    end = start + cut + 1
            first = data.find(b"\n") + 1 if start > 0 else 0
            carry = data[:first]
            if len(carry) > MAX_LINE:
                carry, dropping = b"", True
            offset = start + len(data)
            for line in reversed(data[first:-1].split(b"\n") if len(data) > first else []):
                offset -= len(line) + 1
                rec = parse(line) if line else None
                if rec is None:
                    continue
                if stop_ts and str(rec.get("ts") or "") < stop_ts:
                    return offset + len(line) + 1, end or 0
                if keep(rec):
                    found += 1
                    if found >= n:
                        return offset, end or 0
            if start == 0 and not carry:
                break
        return 0, end or 0
    finally:
        os.close(fd)


def end_of_lines(path: str, limit: int | None = None) -> int:
    """The offset just after the last complete line (among the first ``limit`` bytes): where a follower
    starts reading new records."""
    got = open_log(path)
    if got is None:
        return 0
    fd, st = got
    try:
        pos = st.st_size if limit is None else min(limit, st.st_size)
        while pos > 0:
            start = max(0, pos - SEEK_WINDOW)
            block = os.pread(fd, pos - start, start)
            nl = block.rfind(b"\n")
            if nl >= 0:
                return start + nl + 1
            pos = start
        return 0
    finally:
        os.close(fd)


def merge_key(rec: Record) -> tuple[str, str, int]:
    """Across sessions: ts, then session id, then seq (spec/events.md)."""
    seq = rec.get("seq")
    return str(rec.get("ts") or ""), str(rec.get("session_id") or ""), seq if isinstance(seq, int) else 0


def merge(streams: Iterable[Iterator[tuple[bytes, Record]]]) -> Iterator[tuple[bytes, Record]]:
    """One stream of (line, record) in merge_key order. Each input is consumed strictly in its own order, so
    one session's records stay in file order even where their ts are not."""
    return heapq.merge(*streams, key=lambda item: merge_key(item[1]))


def chunk_for(streams: int) -> int:
    """A read size per stream that keeps a merge of ``streams`` logs within MERGE_BUDGET."""
    return max(MIN_CHUNK, min(CHUNK, MERGE_BUDGET // max(1, streams)))
