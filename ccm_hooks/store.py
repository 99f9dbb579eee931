"""Record one event: under the session lock, append the record and replace the status file.

Standard library only. Holding one lock per session across read-status / append / replace-status is what
makes ``seq`` unique and strictly increasing in file order and keeps every counter exact when parallel tool
calls run handlers at the same moment. The critical section is a few hundred microseconds.

Its cost does not grow with the log: the status says which seq it has folded, and only the records after
that one are read (``jsonl.offset_after_seq``). A status that is missing or unusable means replaying the
whole log, streamed, and for at most CATCH_UP_BUDGET_S: a longer replay is written as a status behind its
log, which the next event catches up from (spec/layout.md#catching-up).
"""

from __future__ import annotations

import os
import time

from ccm_hooks import fastjson, fileio, jsonl, paths, record, state, watch

TYPE_CHECKING = False  # not `from typing import ...`: importing typing costs ~3 ms per hook call
if TYPE_CHECKING:
    from typing import Any

LOCK_TIMEOUT_S = 5.0  # well inside the 10 s hook timeout we register
# A handler folds the log for at most this long, then writes what it has (other handlers of the session
# wait for the lock meanwhile, at most LOCK_TIMEOUT_S).
CATCH_UP_BUDGET_S = 1.0
MAX_LINE_BYTES = 1 << 20  # hard bound on one record, whatever the field cap says
MAX_STATUS_BYTES = 1 << 20  # a status is a few KB; a larger file is not one ccm wrote: rebuilt
# Re-clipping every free-text field to this bounds a line to a few tens of KB by construction (about 25
# fields of at most 200 chars, 6 bytes each once JSON-escaped).
FALLBACK_CAP = record.SHORT_CAP
_EVENTS_FLAGS = os.O_RDWR | os.O_APPEND | os.O_CREAT  # O_RDWR: catching up and the torn-line check read it


def _digits(value: str, limit: int) -> bool:
    return 0 < len(value) <= limit and value.isascii() and value.isdigit()


def claude_version(agent: str) -> str | None:
    """Claude Code's version from ``$AI_AGENT`` (``claude-code_2-1-328_harness`` -> ``2.1.328``), which both
    supported versions set for their hooks (spec/claude-versions.md)."""
    if not agent.startswith("claude-code_"):
        return None
    version = agent.split("_")[1].replace("-", ".")
    return version if all(_digits(part, 6) for part in version.split(".")) else None


def process_context(environ: os._Environ[str] | dict[str, str]) -> dict[str, Any]:
    """Facts about the running claude that are not in the payload: where it runs in tmux, its pid, its
    version, how it was started (``claude -p``: ``sdk-cli``) and, for ``claude --bg``, its job."""
    tmux = environ.get("TMUX") or ""
    # $TMUX is "<socket path>,<server pid>,<session index>"; the socket path is what `tmux -S` takes.
    socket = tmux.split(",", 1)[0] if tmux else None
    # Claude runs `/bin/sh -c '... exec shim'`, so our parent is claude itself (or the sh if it did not
    # exec); 2.1.328 also says its pid in CLAUDE_PID.
    pid = environ.get("CLAUDE_PID") or ""
    job = (environ.get("CLAUDE_JOB_DIR") or "").rstrip("/")  # only background sessions have it
    return {
        "tmux_pane": environ.get("TMUX_PANE") or None,
        "tmux_socket": socket or None,
        "claude_pid": int(pid) if _digits(pid, 9) else os.getppid(),
        "claude_version": claude_version(environ.get("AI_AGENT") or ""),
        "entrypoint": (environ.get("CLAUDE_CODE_ENTRYPOINT") or "")[:64] or None,
        "background": os.path.basename(job)[:128] or None,
    }


TRANSCRIPT_TAIL_BYTES = 1 << 16


def lost_api_error(transcript_path: object) -> dict[str, Any]:
    """At a SessionEnd that finds a turn still open: the API error that ended it, from the transcript.

    `claude -p` on 2.1.328 fires StopFailure after SessionEnd and may end the process before that hook
    finishes; its record is then lost (spec/hooks-timing.md). Claude Code writes the error into the
    transcript as an assistant record with ``isApiErrorMessage`` (both versions), so the SessionEnd record
    carries it (``error``, ``last_assistant_message``). One bounded read of the transcript's tail, only in
    this case; anything unexpected there means nothing is added.
    """
    if not isinstance(transcript_path, str) or not transcript_path:
        return {}
    try:
        fd, st = fileio.open_regular_stat(transcript_path, os.O_RDONLY, private=True)
    except OSError:
        return {}
    try:
        start = max(0, st.st_size - TRANSCRIPT_TAIL_BYTES)
        data = os.pread(fd, st.st_size - start, start)
    except OSError:
        return {}
    finally:
        os.close(fd)
    for line in reversed(data.split(b"\n")):
        if b'"isApiErrorMessage":true' not in line:
            if b'"type":"user"' in line:
                return {}  # a prompt after the last error: the error belongs to an earlier turn
            continue
        try:
            rec = fastjson.loads(line)
        except ValueError:
            return {}
        content = (rec.get("message") or {}).get("content") if isinstance(rec, dict) else None
        texts = [b.get("text") for b in content if isinstance(b, dict)] if isinstance(content, list) else []
        text = next((t for t in texts if isinstance(t, str)), None)
        error = rec.get("error") if isinstance(rec.get("error"), str) else None
        return {k: v for k, v in (("error", error), ("last_assistant_message", text)) if v}
    return {}


class Current:
    """A session's state under its lock: the status caught up with the log (as far as the budget went),
    the log's last seq, and whether the status includes every record of the log."""

    __slots__ = ("complete", "last_seq", "problems", "status")

    def __init__(self, status: dict[str, Any] | None, last_seq: int, complete: bool, problems: list[str]):
        self.status = status
        self.last_seq = last_seq
        self.complete = complete
        self.problems = problems


def _load_status(root: str, session_id: str, problems: list[str]) -> dict[str, Any] | None:
    path = paths.status_path(root, session_id)
    try:
        status = fileio.read_json(path, max_bytes=MAX_STATUS_BYTES)
    except paths.UnsafePath as exc:
        # A FIFO, a symlink, another user's file: never read, and replaced (os.replace does not open it).
        # A directory cannot be replaced by a file: then the event is refused before anything is written.
        if os.path.isdir(path) and not os.path.islink(path):
            raise
        problems.append(f"{exc}; it is rebuilt from the log and replaced")
        return None
    except (OSError, ValueError):
        return None  # unreadable or torn by hand: rebuilt from the log
    if not isinstance(status, dict) or jsonl.record_seq(status) is None:
        return None
    # A status written by another format version is rebuilt from the log rather than folded into.
    return status if status.get("v") == record.FORMAT_VERSION else None


def _foldable(rec: dict[str, Any]) -> bool:
    event = rec.get("event")
    return isinstance(rec.get("ts"), str) and isinstance(event, str) and bool(event)


def catch_up(root: str, session_id: str, events_fd: int, budget_s: float | None = None) -> Current:
    """The session's status folded with every record of its log after the status's seq.

    Reads only the records after the status's seq (``offset_after_seq``): a hook's cost does not grow
    with the log. Without a usable status, replays the whole log, streamed in chunks (bounded memory),
    for at most ``budget_s`` (default CATCH_UP_BUDGET_S); then ``complete`` is False and the status is
    the fold so far (the caller writes it: the next event goes on from there). The caller holds the
    session lock.
    """
    problems: list[str] = []
    status = _load_status(root, session_id, problems)
    done = jsonl.record_seq(status) or 0
    size = os.fstat(events_fd).st_size
    start = jsonl.offset_after_seq(events_fd, done, size) if status is not None else 0
    budget_s = CATCH_UP_BUDGET_S if budget_s is None else budget_s
    deadline = time.monotonic() + budget_s
    last_seq = done
    read = 0
    for end, rec in jsonl.iter_records(events_fd, start):
        read += 1
        seq = jsonl.record_seq(rec)
        if seq is None or seq <= last_seq:
            continue  # before the status (the search window), or damage
        last_seq = seq
        if _foldable(rec):
            try:
                status = state.apply(status, rec)
            except Exception:  # a record no ccm wrote (a hand edit): skipped, as readers skip bad lines
                status = dict(status, seq=seq) if status is not None else None
        if not read & 1023 and time.monotonic() > deadline and end < size:
            last = jsonl.last_record_fd(events_fd, size)
            left = size - end
            problems.append(
                f"catching the status up with events/{session_id}.jsonl: {read} records in "
                f"{budget_s:.1f} s, {left} bytes left for the next events"
            )
            return Current(status, max(last_seq, jsonl.record_seq(last) or 0), False, problems)
    return Current(status, last_seq, True, problems)


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
) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, Any] | None, list[str]]:
    """Append the record for ``payload`` and update the status.

    Returns (record, new status or None, watch decision or None, problems worth logging). At a session's
    first event the watch settings are resolved and, if any layer set one, logged as a ``ccm.watch``
    record; the environment's numbers are checked then too. At the end of a turn the watch decision is
    logged as a ``ccm.decision`` record. Both under the same lock, so no two handlers can count the same
    continue. While the status is still being caught up with a long log, the record is appended, the
    status written is the fold so far (it does not include this record yet) and nothing is decided.
    """
    session_id: str = payload["session_id"]
    # Every call, not only on a first failure: a stat per directory (microseconds) repairs a state dir
    # whose events/ or status/ someone removed, and refuses one another user owns or can write.
    paths.ensure_layout(root)
    with fileio.FileLock(paths.lock_path(root, session_id), LOCK_TIMEOUT_S):
        events_file = paths.events_path(root, session_id)
        fd = fileio.open_regular(events_file, _EVENTS_FLAGS, private=True)
        try:
            cur = catch_up(root, session_id, fd)
            status = cur.status
            problems = cur.problems
            first = status is None and cur.last_seq == 0
            seq = max(jsonl.record_seq(status) or 0, cur.last_seq) + 1
            if (
                event == "SessionEnd"
                and status is not None
                and status.get("state") in ("processing", "working")
            ):
                payload = {**payload, **lost_api_error(status.get("transcript_path"))}
            rec, line = build_bounded(payload, event, seq, ts, environ)
            fileio.append_fd(fd, line)
            if not cur.complete:
                if status is not None:
                    _write_status(root, session_id, status)
                return rec, None, None, problems
            new_status = state.apply(status, rec, process_context(environ))
            if first:
                settings, errors = watch.resolve(root, environ, rec.get("project") or rec.get("cwd"))
                problems += errors
                problems += [p for p in (record.field_cap_problem(environ),) if p]
                if settings["source"] != "default":
                    new_status = _append_ccm(
                        fd, new_status, "ccm.watch", {"by": "handler", "watch": settings}
                    )
            decision = None
            if event in watch.DECISION_EVENTS:
                decision = watch.decide(new_status, event, payload, environ, root)
                if decision is not None:
                    new_status = _append_ccm(fd, new_status, "ccm.decision", {"decision": decision})
            _write_status(root, session_id, new_status)
        finally:
            os.close(fd)
    return rec, new_status, decision, problems


def _write_status(root: str, session_id: str, status: dict[str, Any]) -> None:
    # One line, like a record: `jq .` pretty-prints it, and indenting would need the slow json module.
    fileio.atomic_write(paths.status_path(root, session_id), fileio.encode_line(status))


def _append_ccm(fd: int, status: dict[str, Any], event: str, fields: dict[str, Any]) -> dict[str, Any]:
    """Append one of ccm's own records after the one just written; return the status folded with it."""
    rec = record.ccm_record(status, event, status["seq"] + 1, record.iso_utc(time.time()), fields)
    fileio.append_fd(fd, fileio.encode_line(rec))
    return state.apply(status, rec)


def append_ccm(
    root: str, session_id: str, event: str, fields: dict[str, Any], expect_seq: int | None = None
) -> dict[str, Any] | None:
    """For the CLI and ccm-agentd: append a ccm record (``ccm.watch``, ``ccm.state``, ...) to a session's
    log under its lock and replace its status. Returns the new status.

    With ``expect_seq``, nothing is written (and None returned) unless the log still ends at that seq: the
    caller decided on that status, and a decision about a session that moved on meanwhile is stale.
    Raises CcmError if the session has no events, or if its status is still being rebuilt from a long
    log (the fold so far is saved; retrying goes on from there).
    """
    from ccm_hooks.errors import CcmError

    paths.ensure_layout(root)
    with fileio.FileLock(paths.lock_path(root, session_id), LOCK_TIMEOUT_S):
        events_file = paths.events_path(root, session_id)
        try:
            fd = fileio.open_regular(events_file, _EVENTS_FLAGS & ~os.O_CREAT, private=True)
        except FileNotFoundError:
            raise CcmError(f"session {session_id} has no events yet; start it first") from None
        try:
            cur = catch_up(root, session_id, fd)
            status = cur.status
            if status is None:
                raise CcmError(f"session {session_id} has no events yet; start it first")
            if not cur.complete:
                _write_status(root, session_id, status)
                raise CcmError(
                    f"session {session_id}'s status is being rebuilt from its long log; try again in a moment"
                )
            status = dict(status, seq=max(status["seq"], cur.last_seq))
            if expect_seq is not None and status["seq"] != expect_seq:
                return None
            new_status = _append_ccm(fd, status, event, fields)
            try:
                _write_status(root, session_id, new_status)
            except OSError:
                # The record is in the log, which is the truth: undoing what it says (a queued item, a
                # state) would make the log lie. The status stays one record behind until the next
                # writer catches it up from its seq (a full disk: spec/layout.md).
                pass
        finally:
            os.close(fd)
    return new_status
