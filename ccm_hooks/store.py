"""Record one event: under the session lock, append the record and replace the status file.

Standard library only. Holding one lock per session across read-status / append / replace-status is what
makes ``seq`` unique and strictly increasing in file order and keeps every counter exact when parallel tool
calls run handlers at the same moment. The critical section is a few hundred microseconds.
"""

from __future__ import annotations

import os
import time

from ccm_hooks import fileio, paths, record, state, watch

TYPE_CHECKING = False  # not `from typing import ...`: importing typing costs ~3 ms per hook call
if TYPE_CHECKING:
    from typing import Any

LOCK_TIMEOUT_S = 5.0  # well inside the 10 s hook timeout we register
MAX_LINE_BYTES = 1 << 20  # hard bound on one record, whatever the field cap says
# Re-clipping every free-text field to this bounds a line to a few tens of KB by construction (about 25
# fields of at most 200 chars, 6 bytes each once JSON-escaped).
FALLBACK_CAP = record.SHORT_CAP


def process_context(environ: os._Environ[str] | dict[str, str]) -> dict[str, Any]:
    """Facts about the running claude that are not in the payload: where it runs in tmux, its pid."""
    tmux = environ.get("TMUX") or ""
    # $TMUX is "<socket path>,<server pid>,<session index>"; the socket path is what `tmux -S` takes.
    socket = tmux.split(",", 1)[0] if tmux else None
    # Claude runs `/bin/sh -c '... exec shim'`, so our parent is claude itself (or the sh if it did not exec).
    return {
        "tmux_pane": environ.get("TMUX_PANE") or None,
        "tmux_socket": socket or None,
        "claude_pid": os.getppid(),
    }


def _load_status(root: str, session_id: str) -> dict[str, Any] | None:
    try:
        status = fileio.read_json(paths.status_path(root, session_id))
    except (OSError, ValueError):
        status = None  # unreadable: rebuilt below from the log
    if not isinstance(status, dict) or not isinstance(status.get("seq"), int):
        return None
    # A status written by another format version is rebuilt from the log rather than folded into.
    return status if status.get("v") == record.FORMAT_VERSION else None


def _rebuild_status(root: str, session_id: str) -> dict[str, Any] | None:
    """Replay the event log: used when the status file is missing or corrupt but events exist."""
    try:
        with open(paths.events_path(root, session_id), "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        return None
    status: dict[str, Any] | None = None
    for _, rec in fileio.iter_lines(data):
        if isinstance(rec.get("seq"), int) and isinstance(rec.get("ts"), str) and rec.get("event"):
            status = state.apply(status, rec)
    return status


def build_bounded(
    payload: dict[str, Any], event: str, seq: int, ts: str, environ: os._Environ[str] | dict[str, str]
) -> tuple[dict[str, Any], bytes]:
    """The record and its line, at most MAX_LINE_BYTES.

    Only a huge CCM_FIELD_CAP with many big fields can overflow; then every free-text field is clipped
    again to FALLBACK_CAP. The record keeps all its fields, so the status computed from it (and any replay
    of the log) sees exactly what was written.
    """
    rec = record.build_record(
        payload, event=event, seq=seq, ts=ts, environ=environ, cap=record.field_cap(environ)
    )
    line = fileio.encode_line(rec)
    if len(line) > MAX_LINE_BYTES:
        rec = record.build_record(payload, event=event, seq=seq, ts=ts, environ=environ, cap=FALLBACK_CAP)
        line = fileio.encode_line(rec)
    return rec, line


def record_event(
    root: str,
    payload: dict[str, Any],
    event: str,
    ts: str,
    environ: os._Environ[str] | dict[str, str],
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None, list[str]]:
    """Append the record for ``payload`` and update the status.

    Returns (record, new status, watch decision or None, problems worth logging). At a session's first
    event the watch settings are resolved and, if any layer set one, logged as a ``ccm.watch`` record; at
    the end of a turn the watch decision is logged as a ``ccm.decision`` record. Both under the same lock,
    so no two handlers can count the same continue.
    """
    session_id: str = payload["session_id"]
    # Every call, not only on a first failure: a few mkdir syscalls (microseconds) repair a state dir whose
    # events/ or status/ someone removed, instead of losing the event.
    paths.ensure_layout(root)
    lock = fileio.FileLock(paths.lock_path(root, session_id), LOCK_TIMEOUT_S)
    lock.__enter__()
    try:
        events_file = paths.events_path(root, session_id)
        status, last_seq = _current(root, session_id, events_file)
        first = status is None and last_seq == 0
        seq = max(status["seq"] if status else 0, last_seq) + 1
        rec, line = build_bounded(payload, event, seq, ts, environ)
        fileio.append_line(events_file, line)
        new_status = state.apply(status, rec, process_context(environ))
        problems: list[str] = []
        if first:
            settings, problems = watch.resolve(root, environ, rec.get("project") or rec.get("cwd"))
            if settings["source"] != "default":
                new_status = _append_ccm(
                    events_file, new_status, "ccm.watch", {"by": "handler", "watch": settings}
                )
        decision = None
        if event in watch.DECISION_EVENTS:
            decision = watch.decide(new_status, event, payload, environ, root)
            if decision is not None:
                new_status = _append_ccm(events_file, new_status, "ccm.decision", {"decision": decision})
        # One line, like a record: `jq .` pretty-prints it, and indenting would need the slow json module.
        fileio.atomic_write(paths.status_path(root, session_id), fileio.encode_line(new_status))
    finally:
        lock.__exit__(None, None, None)
    return rec, new_status, decision, problems


def _current(root: str, session_id: str, events_file: str) -> tuple[dict[str, Any] | None, int]:
    """The session's status (rebuilt from the log if missing or behind it) and the log's last seq."""
    # The log, not the status, decides seq: a handler killed between its append and its status replace
    # leaves the status one behind, and seq must not repeat. Replaying the log then also repairs the
    # status. The tail read is one pread of a few KB.
    last = fileio.last_record(events_file, chunk=8192)
    last_seq = last["seq"] if last is not None and isinstance(last.get("seq"), int) else 0
    status = _load_status(root, session_id)
    if status is None or status["seq"] < last_seq:
        status = _rebuild_status(root, session_id)
    return status, last_seq


def _append_ccm(
    events_file: str, status: dict[str, Any], event: str, fields: dict[str, Any]
) -> dict[str, Any]:
    """Append one of ccm's own records after the one just written; return the status folded with it."""
    rec = record.ccm_record(status, event, status["seq"] + 1, record.iso_utc(time.time()), fields)
    fileio.append_line(events_file, fileio.encode_line(rec))
    return state.apply(status, rec)


def append_ccm(
    root: str, session_id: str, event: str, fields: dict[str, Any], expect_seq: int | None = None
) -> dict[str, Any] | None:
    """For the CLI and ccm-agentd: append a ccm record (``ccm.watch``, ``ccm.state``, ...) to a session's
    log under its lock and replace its status. Returns the new status.

    With ``expect_seq``, nothing is written (and None returned) unless the log still ends at that seq: the
    caller decided on that status, and a decision about a session that moved on meanwhile is stale.
    """
    paths.ensure_layout(root)
    with fileio.FileLock(paths.lock_path(root, session_id), LOCK_TIMEOUT_S):
        events_file = paths.events_path(root, session_id)
        status, last_seq = _current(root, session_id, events_file)
        if status is None:
            from ccm_hooks.errors import CcmError

            raise CcmError(f"session {session_id} has no events yet; start it first")
        status = dict(status, seq=max(status["seq"], last_seq))
        if expect_seq is not None and status["seq"] != expect_seq:
            return None
        new_status = _append_ccm(events_file, status, event, fields)
        fileio.atomic_write(paths.status_path(root, session_id), fileio.encode_line(new_status))
    return new_status
