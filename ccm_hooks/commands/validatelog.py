"""``ccm-hooks validate``, one session: every line of its log, its status, and the status against the replay.

Streamed: the log is read in chunks and replayed as it goes, so memory does not grow with the log. The
session lock is held (shared) only to take a consistent pair: the status and the log's size at that moment
(a handler appends, then replaces the status, under the lock); the log is append-only, so the lines up to
that size can be read after the lock is released, without holding up the session's hooks.

Each record is checked by ``schemacheck`` first and by jsonschema only when that fast check cannot vouch
for it (schemacheck.py says why the verdicts are the same); lines are parsed by the C scanner, and again by
the strict parser only when they hold NaN or Infinity or fail to parse.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import time
from collections.abc import Callable, Iterator
from importlib import resources
from typing import TYPE_CHECKING, Any

from ccm_hooks import fastjson, paths, state, store
from ccm_hooks.commands import schemacheck
from ccm_hooks.statedir.reader import open_regular

if TYPE_CHECKING:
    from ccm_hooks.commands.validate import Report

CTX_FIELDS = ("tmux_pane", "tmux_socket", "claude_pid")  # from the process, not the log: not replayable
# Every record the encoder writes starts like this (dict order), so a line that does not parse but starts
# so is a record cut short by a writer that died mid-write, which the next append terminated.
RECORD_PREFIX = b'{"v":'
LOCK_WAIT_S = 2.0  # handlers wait 5 s for the session lock; never make one wait near that
MAX_SCHEMA_ERRORS = 3  # per line: the first few say what is wrong, the rest repeat it
CHUNK = 1 << 20
KEEP_LINE = 4 << 20  # a longer line is an error anyway: only its length and first bytes are kept
# The event schema's else/allOf holds its two conditional rule sets, in this order (see the schema's
# $defs); an error inside one of them ("'X' was expected") needs to say which rule it comes from.
RULES = (
    "a field of this record does not belong on this event: spec/events.md",
    "this tool's summary keeps other keys: spec/events.md#tool_input",
)
FAST = True  # tests turn the fast check off to compare verdicts


@functools.cache
def schema(name: str) -> Any:
    import jsonschema  # type: ignore[import-untyped]  # no py.typed; only used through these calls

    text = resources.files("ccm_hooks").joinpath("schemas", name).read_text("utf-8")
    loaded = json.loads(text)
    jsonschema.Draft202012Validator.check_schema(loaded)
    return jsonschema.Draft202012Validator(loaded)


@functools.cache
def _fast_for(name: str) -> bool:
    """Whether schemacheck was written against this version of the schema (else it steps aside)."""
    text = resources.files("ccm_hooks").joinpath("schemas", name).read_text("utf-8")
    return schemacheck.fingerprint(json.loads(text)) == schemacheck.SCHEMA_FINGERPRINTS[name]


def problems(name: str, obj: Any, fast: Callable[[Any], bool]) -> list[Any]:
    """jsonschema's errors for ``obj`` (sorted by path), skipping jsonschema when the fast check vouches."""
    if FAST and _fast_for(name) and fast(obj):
        return []
    return sorted(schema(name).iter_errors(obj), key=lambda e: list(e.path))


class NotStrictJson(ValueError):
    """Parsed by Python's json, which accepts NaN and Infinity, but not JSON (RFC 8259) for other readers."""


def _strict_constant(name: str) -> Any:
    raise NotStrictJson(f"{name} is not JSON (RFC 8259); strict parsers reject the line")


def parse_strict(data: bytes) -> Any:
    return json.loads(data.decode("utf-8"), parse_constant=_strict_constant)


def _has_constant(obj: Any) -> bool:
    """Whether a parsed value holds NaN or +-Infinity (which only the lenient parser accepts)."""
    if type(obj) is float:
        return obj != obj or obj in (float("inf"), float("-inf"))
    if type(obj) is dict:
        return any(_has_constant(v) for v in obj.values())
    if type(obj) is list:
        return any(_has_constant(v) for v in obj)
    return False


def parse(data: bytes) -> Any:
    """As ``parse_strict``, through the C scanner when the line is plain JSON (the common case)."""
    try:
        obj = fastjson.loads(data)
    except ValueError:
        return parse_strict(data)  # raises the same error the strict parser gives
    if (b"NaN" in data or b"Infinity" in data) and _has_constant(obj):
        return parse_strict(data)
    return obj


def _locked_snapshot(root: str, sid: str, report: Report) -> tuple[int | None, bytes | None]:
    """(the log's size, the status's bytes), taken together under a shared session lock when there is one.

    Bounded wait: a handler that cannot get the lock in 5 s drops its event, so never hold it near that.
    """
    fd = -1
    try:
        fd = os.open(paths.lock_path(root, sid), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        pass  # no lock file (or an odd one, reported by the layout check): read without it
    try:
        if fd >= 0:
            deadline = time.monotonic() + LOCK_WAIT_S
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        report.warn(paths.lock_path(root, sid), "session busy; checked without the lock")
                        break
                    time.sleep(0.01)
        size = None
        got = open_regular(paths.events_path(root, sid))
        if got is not None:
            os.close(got[0])
            size = got[1].st_size
        return size, _read_small(paths.status_path(root, sid))
    finally:
        if fd >= 0:
            os.close(fd)


def _read_small(path: str) -> bytes | None:
    got = open_regular(path)
    if got is None:
        return None
    fd, st = got
    try:
        return os.read(fd, min(st.st_size, KEEP_LINE) + 1)
    finally:
        os.close(fd)


def raw_lines(path: str, size: int) -> Iterator[tuple[bytes, int, bool]]:
    """(line, its length, complete) for each line of the first ``size`` bytes, read in chunks. A line
    longer than KEEP_LINE is given by its first KEEP_LINE bytes (and its true length). The last item is
    incomplete if the data does not end with a newline."""
    got = open_regular(path)
    if got is None:
        return
    fd, _ = got
    try:
        pos, pending, length = 0, b"", 0
        while pos < size:
            data = os.pread(fd, min(CHUNK, size - pos), pos)
            if not data:
                break
            pos += len(data)
            start = 0
            while True:
                nl = data.find(b"\n", start)
                if nl < 0:
                    piece = data[start:]
                    length += len(piece)
                    if len(pending) < KEEP_LINE:
                        pending += piece[: KEEP_LINE - len(pending)]
                    break
                piece = data[start:nl]
                yield (pending + piece if pending else piece)[:KEEP_LINE], length + len(piece), True
                pending, length, start = b"", 0, nl + 1
        if length:
            yield pending, length, False
    finally:
        os.close(fd)


def check_session(root: str, sid: str, has_events: bool, has_status: bool, report: Report) -> int:
    size, status_data = _locked_snapshot(root, sid, report)
    errors_before = report.errors
    records, last_seq, replayed = 0, 0, None
    if has_events and size is not None:
        records, last_seq, replayed = check_events(paths.events_path(root, sid), sid, size, report)
    log_is_sound = report.errors == errors_before
    status_path = paths.status_path(root, sid)
    if not has_status or status_data is None:
        if records:
            report.warn(status_path, "missing; the next hook event rebuilds it from the log")
        return records
    try:
        status = parse(status_data)
    except ValueError as exc:
        report.error(status_path, f"not JSON ({exc}); statuses are replaced atomically, never partial")
        return records
    found = problems("status.schema.json", status, schemacheck.status_ok)
    for err in found[:MAX_SCHEMA_ERRORS]:
        report.error(status_path, schema_message(err))
    if found or not isinstance(status, dict):
        return records
    if status.get("session_id") != sid:
        report.error(status_path, f"session_id {status.get('session_id')!r} is not the file's name")
    if not has_events:
        report.warn(status_path, "no event log to check it against (was events/ pruned?)")
        return records
    if status["seq"] != last_seq:
        report.error(status_path, f"seq {status['seq']}, but the log's last good record has seq {last_seq}")
        return records
    if not log_is_sound or replayed is None:
        return records  # the replay of a damaged log says nothing the errors above do not
    keys = (replayed.keys() | status.keys()) - set(CTX_FIELDS)
    differ = sorted(k for k in keys if replayed.get(k) != status.get(k))
    if differ:
        detail = "; ".join(
            f"{k} is {_brief(status.get(k))}, replay {_brief(replayed.get(k))}" for k in differ
        )
        report.error(status_path, f"differs from the replay of the log: {detail}")
    return records


def check_events(path: str, sid: str, size: int, report: Report) -> tuple[int, int, dict[str, Any] | None]:
    """Check every line; return (good records, the last good record's seq, the replay of the good ones)."""
    good, last_seq, prev_seq, replayed = 0, 0, 0, None
    number = 0
    for line, length, complete in raw_lines(path, size):
        number += 1
        where = f"{path}:{number}"
        if not complete:
            report.warn(where, "torn: no newline (in progress or crashed writer); readers skip it")
            break
        if length >= store.MAX_LINE_BYTES:
            report.error(where, f"{length + 1} bytes: past the {store.MAX_LINE_BYTES}-byte line bound")
        try:
            rec = parse(line)
        except NotStrictJson as exc:
            report.error(where, str(exc))
            continue
        except UnicodeDecodeError:
            report.error(where, "not UTF-8")
            continue
        except ValueError as exc:
            if line.startswith(RECORD_PREFIX):
                report.warn(where, "a record cut short by a writer that died; readers skip it")
            else:
                report.error(where, f"not a JSON line ({exc})"[:300])
            continue
        found = problems("event.schema.json", rec, schemacheck.event_ok)
        for err in found[:MAX_SCHEMA_ERRORS]:
            report.error(where, schema_message(err))
        seq = rec.get("seq") if isinstance(rec, dict) else None
        if not isinstance(seq, int):
            continue
        if prev_seq == 0 and seq != 1:
            report.error(where, f"the first record has seq {seq}, not 1")
        elif prev_seq and seq <= prev_seq:
            report.error(where, f"seq {seq} after {prev_seq}: not strictly increasing (duplicate or reorder)")
        elif prev_seq and seq != prev_seq + 1:
            report.error(where, f"seq {seq} after {prev_seq}: {seq - prev_seq - 1} records missing")
        prev_seq = seq  # compare each line with the one before it, so one bad seq is one error
        if found:
            continue
        if rec["session_id"] != sid:
            report.error(where, f"session_id {rec['session_id']!r} is not the file's name")
        _check_truncated(where, rec, report)
        good += 1
        last_seq = seq
        replayed = state.apply(replayed, rec)
    return good, last_seq, replayed


def _check_truncated(where: str, rec: dict[str, Any], report: Report) -> None:
    """A clipped field ends with ``…[+N chars]``, and its kept part plus N is its length in ``truncated``."""
    for name, original in (rec.get("truncated") or {}).items():
        if name == "record":
            continue
        if name.startswith("tool_input."):
            value = (rec.get("tool_input") or {}).get(name[len("tool_input.") :])
            if value is None:
                continue  # a key longer than 200 characters is stored cut, under another name
        else:
            value = rec.get(name)
        head, marker, tail = value.rpartition("…[+") if isinstance(value, str) else ("", "", "")
        cut = tail[: -len(" chars]")] if tail.endswith(" chars]") else ""
        if not marker or not cut.isdigit() or len(head) + int(cut) != original:
            report.error(where, f"truncated.{name} is {original}, but {name} lacks a matching '…[+N chars]'")


def _brief(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def schema_message(err: Any) -> str:
    where = "/".join(str(p) for p in err.absolute_path) or "(record)"
    schema_path = list(err.absolute_schema_path)
    hint = ""
    if schema_path[:1] == ["allOf"] and schema_path[1] in (0, 1):
        hint = f" ({RULES[schema_path[1]]})"
    return f"{where}: {err.message}"[:300] + hint
