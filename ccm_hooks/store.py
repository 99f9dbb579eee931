"""Record one event: under the session lock, append the record and replace the status file.

Standard library only. Holding one lock per session across read-status / append / replace-status is what
makes ``seq`` unique and strictly increasing in file order and keeps every counter exact when parallel tool
calls run handlers at the same moment. The critical section is a few hundred microseconds.
"""

from __future__ import annotations

import json
import os

from ccm_hooks import fileio, paths, record, state

TYPE_CHECKING = False  # not `from typing import ...`: importing typing costs ~3 ms per hook call
if TYPE_CHECKING:
    from typing import Any

LOCK_TIMEOUT_S = 5.0  # well inside the 10 s hook timeout we register
MAX_LINE_BYTES = 1 << 20  # hard bound on one record, whatever the field cap says


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
    return status if isinstance(status, dict) and isinstance(status.get("seq"), int) else None


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


def encode_bounded(rec: dict[str, Any]) -> bytes:
    line = fileio.encode_line(rec)
    if len(line) <= MAX_LINE_BYTES:
        return line
    # Only reachable with a huge CCM_FIELD_CAP and many big fields: keep the identity, drop the bulk.
    keep = ("v", "ts", "seq", "session_id", "event", "cwd", "project", "tool_name", "tool_use_id", "task_id")
    slim = {k: rec[k] for k in keep if k in rec}
    slim["truncated"] = {"record": len(line)}
    return fileio.encode_line(slim)


def record_event(
    root: str,
    payload: dict[str, Any],
    event: str,
    ts: str,
    environ: os._Environ[str] | dict[str, str],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Append the record for ``payload`` and update the status. Returns (record, new status)."""
    session_id: str = payload["session_id"]
    try:
        lock = fileio.FileLock(paths.lock_path(root, session_id), LOCK_TIMEOUT_S)
        lock.__enter__()
    except FileNotFoundError:
        paths.ensure_layout(root)  # first event ever, or the dir was removed: create and retry once
        lock = fileio.FileLock(paths.lock_path(root, session_id), LOCK_TIMEOUT_S)
        lock.__enter__()
    try:
        events_file = paths.events_path(root, session_id)
        # The log, not the status, decides seq: a handler killed between its append and its status replace
        # leaves the status one behind, and seq must not repeat. Replaying the log then also repairs the
        # status. The tail read is one pread of a few KB.
        last = fileio.last_record(events_file, chunk=8192)
        last_seq = last["seq"] if last is not None and isinstance(last.get("seq"), int) else 0
        status = _load_status(root, session_id)
        if status is None or status["seq"] < last_seq:
            status = _rebuild_status(root, session_id)
        seq = max(status["seq"] if status else 0, last_seq) + 1
        rec = record.build_record(
            payload, event=event, seq=seq, ts=ts, environ=environ, cap=record.field_cap(environ)
        )
        fileio.append_line(events_file, encode_bounded(rec))
        new_status = state.apply(status, rec, process_context(environ))
        data = json.dumps(new_status, ensure_ascii=False, indent=1).encode("utf-8", "backslashreplace")
        fileio.atomic_write(paths.status_path(root, session_id), data + b"\n")
    finally:
        lock.__exit__(None, None, None)
    return rec, new_status
