"""Reading ccm's JSONL logs without reading them whole (spec/events.md#reading).

``iter_records`` streams a log in chunks (memory bounded whatever the file holds), ``last_record_fd``
reads its tail, and ``offset_after_seq`` finds where the records after a given seq start without
reading what comes before (the log is in seq order): how a handler catches a status up with its log at a
cost that does not grow with the log. For readers too (``events --since``, ``--follow``): open the file
with ``fileio.open_regular`` and pass the fd.

Standard library only: the handler imports this on every call.
"""

from __future__ import annotations

import os

from ccm_hooks import fileio

TYPE_CHECKING = False  # not `from typing import ...`: importing typing costs ~3 ms per hook call
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

MAX_LINE = 8 << 20  # streaming readers skip a longer line (ccm writes at most 1 MiB, spec/events.md)
READ_CHUNK = 1 << 20
TAIL_CHUNK = 16384  # a few records: enough for the last record and a status one or two records behind
SEARCH_WINDOW = 65536  # offset_after_seq stops bisecting below this; the caller's scan skips the rest


def iter_records(
    fd: int, start: int = 0, *, chunk: int = READ_CHUNK, max_line: int = MAX_LINE
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Stream (end offset, record) from the JSONL file ``fd``, from byte ``start`` (a line start) to its end.

    Memory stays bounded whatever the file holds: it reads ``chunk`` bytes at a time (``pread``, so the
    fd's offset is not used) and skips any line longer than ``max_line``. Like ``iter_lines``, a last line
    without its newline is not yielded and unparseable lines are skipped; the end offset of the last
    record yielded is where a follower resumes.
    """
    pos = start  # file offset of the next read
    buf = b""  # an incomplete line, starting at file offset pos - len(buf)
    skipping = False  # inside a line longer than max_line: drop bytes up to its newline
    while True:
        data = os.pread(fd, chunk, pos)
        if not data:
            return
        pos += len(data)
        if skipping:
            cut = data.find(b"\n")
            if cut < 0:
                continue
            data = data[cut + 1 :]
            skipping = False
        buf = buf + data if buf else data
        last = buf.rfind(b"\n")
        if last >= 0:
            base = pos - len(buf)
            for end, obj in fileio.iter_lines(buf[: last + 1]):
                yield base + end, obj
            buf = buf[last + 1 :]
        if len(buf) > max_line:
            buf = b""
            skipping = True


def record_seq(obj: object) -> int | None:
    """The ``seq`` of a parsed record (or status) if it is an integer, else None."""
    seq = obj.get("seq") if isinstance(obj, dict) else None
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else None


def last_record_fd(fd: int, size: int | None = None, chunk: int = TAIL_CHUNK) -> dict[str, Any] | None:
    """The last complete record of the JSONL file ``fd``, reading backwards from the end in growing
    chunks, at most ``2 * MAX_LINE`` bytes back (then None: that is not a log ccm wrote)."""
    size = os.fstat(fd).st_size if size is None else size
    while True:
        start = max(0, size - chunk)
        data = os.pread(fd, size - start, start)
        if start > 0:
            # The first line may be cut by the chunk boundary: keep only what follows a newline.
            cut = data.find(b"\n")
            data = data[cut + 1 :] if cut >= 0 else b""
        found = None
        for _, obj in fileio.iter_lines(data):
            found = obj
        if found is not None or start == 0 or chunk > 2 * MAX_LINE:
            return found
        chunk *= 4


def last_record(path: str, chunk: int = TAIL_CHUNK, *, private: bool = True) -> dict[str, Any] | None:
    """``last_record_fd`` of ``path`` (opened with ``open_regular``), or None if it does not exist."""
    try:
        fd, st = fileio.open_regular_stat(path, os.O_RDONLY, private=private)
    except FileNotFoundError:
        return None
    try:
        return last_record_fd(fd, st.st_size, chunk)
    finally:
        os.close(fd)


def _first_record_from(fd: int, mid: int, hi: int) -> tuple[int, int, int] | None:
    """(line start, line end, seq) of the first record with a seq whose line starts in [mid, hi), or None
    (also when that takes reading more than 2 * MAX_LINE bytes)."""
    pos = max(mid - 1, 0)  # from mid - 1: a newline there makes mid itself a line start
    buf = b""  # bytes from file offset pos - len(buf)
    at_line_start = mid == 0
    want = 4096  # a probe usually needs one line: read a page, more only for long lines
    while pos - mid <= 2 * MAX_LINE:
        base = pos - len(buf)
        data = os.pread(fd, want, pos)
        want = min(want * 4, SEARCH_WINDOW)
        if not data:
            return None
        buf += data
        pos += len(data)
        start = 0
        if not at_line_start:
            cut = buf.find(b"\n")
            if cut < 0:
                buf = b""
                continue
            start = cut + 1
            at_line_start = True
        while True:
            if base + start >= hi:
                return None
            end = buf.find(b"\n", start)
            if end < 0:
                break
            seq = record_seq(fileio.parse_record(buf[start:end]))
            if seq is not None:
                return base + start, base + end + 1, seq
            start = end + 1
        buf = buf[start:]
    return None


def offset_after_seq(fd: int, seq: int, size: int | None = None) -> int:
    """Where the records with a seq above ``seq`` start in the session log ``fd``: a line start.

    For catching a status (at ``seq``) up with its log without reading the log: the log is in seq order
    (spec/events.md), so this reads the tail (one ``pread``; a status one or two records behind is
    answered there) and otherwise bisects the file (one small ``pread`` per step, O(log size)) down to
    a window of SEARCH_WINDOW bytes. Every record with a seq above ``seq`` starts at or after the offset
    returned; records at or below ``seq`` (at most a window's worth, more only around damaged lines) may
    start after it too, so callers skip those as they read on.
    """
    size = os.fstat(fd).st_size if size is None else size
    start = max(0, size - TAIL_CHUNK)
    data = os.pread(fd, size - start, start)
    skip = 0
    if start > 0:
        cut = data.find(b"\n")
        skip = cut + 1 if cut >= 0 else len(data)
    end = data.rfind(b"\n") + 1  # the incomplete last line (being written, or torn) does not count
    lines = data[skip:end].split(b"\n")[:-1] if end > skip else []
    pos = start + end
    for line in reversed(lines):
        line_start = pos - len(line) - 1
        found = record_seq(fileio.parse_record(line))
        if found is not None and found <= seq:
            return pos
        pos = line_start
    if start == 0:
        return 0
    lo, hi = 0, start + skip
    while hi - lo > SEARCH_WINDOW:
        mid = (lo + hi) // 2
        probe = _first_record_from(fd, mid, hi)
        if probe is None:
            hi = mid  # only damage in [mid, hi): earlier is always safe
        elif probe[2] <= seq:
            lo = probe[1]
        else:
            hi = probe[0]
    return lo
