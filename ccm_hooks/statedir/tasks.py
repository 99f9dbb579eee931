"""Tasks: the queue of work ccm-agentd launches as Claude Code agents (spec/tasks.md). Format and store,
shared by the CLI (``ccm-hooks task ...``) and the daemon (``ccm_agentd.tasks``).

Layout under ``$CCM_HOME``::

    tasks/<id>.jsonl       the task's log, append-only: a ``created`` record, then ``transition``/``update``
    tasks/<id>.json        the task now: the fold of its log, replaced atomically
    tasks/<id>/            what a headless attempt printed (``attempt-<n>.jsonl``, stream-json)
    locks/task-<id>.lock   flock serialising one task's writers; ``locks/tasks.lock``: adding tasks

The log is the truth, as a session's event log is: a writer appends its record, then replaces the file
with the fold, both under the task's lock. A writer killed in between leaves the file one record behind,
and every reader (and the next writer) refolds the log when the file's ``seq`` is behind it.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from ccm_hooks import fileio, jsonl, paths
from ccm_hooks.errors import CcmError
from ccm_hooks.record import iso_utc
from ccm_hooks.statedir.tasks_check import check_id

FORMAT_VERSION = 1
STATES = ("queued", "starting", "waiting", "running", "done", "failed", "cancelled")
FINAL = frozenset({"done", "failed", "cancelled"})
LIVE = frozenset({"starting", "waiting", "running"})  # an attempt exists that may have an agent
# Which transitions the store accepts (spec/tasks.md#states): anything else is a bug or a race lost.
TRANSITIONS: dict[str, frozenset[str]] = {
    "queued": frozenset({"starting", "cancelled"}),
    "starting": frozenset({"running", "waiting", "queued", "failed", "cancelled"}),
    "waiting": frozenset({"starting", "running", "queued", "failed", "cancelled"}),
    "running": frozenset({"done", "failed", "queued", "cancelled"}),
    "done": frozenset(),
    "failed": frozenset({"queued"}),
    "cancelled": frozenset({"queued"}),
}
DEFAULT_MAX_PENDING = 100
DEFAULT_ERROR_MARKER = r"\[ERROR\]"
DEFAULT_MAX_TURNS = 10
DEFAULT_RETRIES = 1
LOCK_TIMEOUT_S = 5.0


# --- where -----------------------------------------------------------------------------------------


def tasks_dir(root: str) -> str:
    return os.path.join(root, "tasks")


def task_path(root: str, task_id: str) -> str:
    return os.path.join(root, "tasks", task_id + ".json")


def log_path(root: str, task_id: str) -> str:
    return os.path.join(root, "tasks", task_id + ".jsonl")


def output_dir(root: str, task_id: str) -> str:
    return os.path.join(root, "tasks", task_id)


def lock_path(root: str, task_id: str) -> str:
    return os.path.join(paths.locks_dir(root), f"task-{task_id}.lock")


def queue_lock_path(root: str) -> str:
    return os.path.join(paths.locks_dir(root), "tasks.lock")


def branch_name(task_id: str) -> str:
    return f"ccm/{task_id}"


def worktree_path(project: str, task_id: str) -> str:
    """Under the project, where ``claude --worktree`` puts its own: Claude Code trusts a folder inside a
    trusted one (spec/tasks.md#trust), so nothing in ~/.claude.json needs changing, or undoing."""
    return os.path.join(project, ".claude", "worktrees", f"ccm-{task_id}")


def new_task_id() -> str:
    """8 hex digits: short to type, a unique prefix after a character or two, a valid branch name."""
    return secrets.token_hex(4)


def stop_marker(task: Mapping[str, Any]) -> str | None:
    """Watch mode's done marker for the agent: the task's done marker or its error marker, so an agent that
    says it failed is not auto-continued past it (the monitor then tells the two apart)."""
    done, failed = task.get("done_marker"), task.get("error_marker")
    if not done or not failed:
        return done or None
    return f"(?:{done})|(?:{failed})"


# --- reading -------------------------------------------------------------------------------------------


def fold(task: dict[str, Any] | None, rec: Mapping[str, Any]) -> dict[str, Any] | None:
    """The task after one log record (a pure function; ``task`` is not modified)."""
    event = rec.get("event")
    if event == "created":
        base = rec.get("task")
        if not isinstance(base, dict):
            return task
        new = dict(base)
        new.update(state="queued", state_since=rec["ts"], reason=None, updated_at=rec["ts"])
        new.setdefault("attempts", [])
    elif task is None:
        return None
    else:
        new = dict(task)
        if event == "transition":
            to = rec.get("to")
            if to in STATES and to != new.get("state"):
                new["state_since"] = rec["ts"]
            if to in STATES:
                new["state"] = to
                new["reason"] = rec.get("reason")
    if task is not None or event == "created":
        changes = rec.get("set")
        if isinstance(changes, dict):
            new.update(changes)
        attempt = rec.get("attempt")
        if isinstance(attempt, dict) and isinstance(attempt.get("n"), int):
            attempts = [dict(a) for a in new.get("attempts") or []]
            n = attempt["n"]
            if n == len(attempts) + 1:
                attempts.append(dict(attempt))
            elif 1 <= n <= len(attempts):
                attempts[n - 1].update(attempt)
            new["attempts"] = attempts
        new["seq"] = rec.get("seq")
        new["updated_at"] = rec["ts"]
    return new


def read_log(root: str, task_id: str) -> list[dict[str, Any]]:
    try:
        fd = os.open(log_path(root, task_id), os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return []
    with os.fdopen(fd, "rb") as fh:
        data = fh.read()
    return [rec for _, rec in fileio.iter_lines(data)]


def replay(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    task: dict[str, Any] | None = None
    for rec in records:
        if isinstance(rec.get("seq"), int) and isinstance(rec.get("ts"), str):
            task = fold(task, rec)
    return task


def load(root: str, task_id: str) -> dict[str, Any] | None:
    """The task now, or None if there is no such task. Refolds the log when the file is behind it."""
    try:
        task = fileio.read_json(task_path(root, task_id))
    except (OSError, ValueError):
        task = None
    last = jsonl.last_record(log_path(root, task_id), chunk=8192)
    last_seq = last.get("seq") if last else None
    if isinstance(task, dict) and task.get("id") == task_id and task.get("seq") == last_seq:
        return task
    if last is None and isinstance(task, dict) and task.get("id") == task_id:
        return task  # the log is gone (removed by hand): the file is all there is
    return replay(read_log(root, task_id))


def task_ids(root: str) -> list[str]:
    """Ids of every task with a log or a file (temp files and strays ignored)."""
    try:
        names = os.listdir(tasks_dir(root))
    except FileNotFoundError:
        return []
    ids = set()
    for name in names:
        stem, dot, ext = name.rpartition(".")
        if dot and ext in ("json", "jsonl") and paths.valid_session_id(stem):
            ids.add(stem)
    return sorted(ids)


def load_all(root: str) -> list[dict[str, Any]]:
    out = []
    for task_id in task_ids(root):
        task = load(root, task_id)
        if task is not None:
            out.append(task)
    return out


def resolve(root: str, wanted: str) -> str:
    """A task id from an id or a unique prefix."""
    known = task_ids(root)
    if wanted in known:
        return wanted
    matches = [t for t in known if t.startswith(wanted)] if wanted else []
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise CcmError(f"no task matches {wanted!r}; `ccm-hooks task list` lists them")
    raise CcmError(
        f"{wanted!r} matches {len(matches)} tasks ({', '.join(matches[:4])}…); give more of the id"
    )


def order_key(task: Mapping[str, Any]) -> tuple[int, str, str]:
    """Launch order: higher priority first, then first queued first (FIFO)."""
    return (-int(task.get("priority") or 0), str(task.get("created_at") or ""), str(task.get("id")))


def current_attempt(task: Mapping[str, Any]) -> dict[str, Any] | None:
    attempts = task.get("attempts") or []
    return attempts[-1] if attempts else None


# --- writing -----------------------------------------------------------------------------------------


def _record(task_id: str, seq: int, event: str, by: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    rec: dict[str, Any] = {"v": FORMAT_VERSION, "ts": iso_utc(time.time()), "seq": seq, "task_id": task_id}
    rec.update(event=event, by=by)
    rec.update({k: v for k, v in fields.items() if v is not None})
    return rec


def _write(root: str, task: dict[str, Any] | None, rec: dict[str, Any]) -> dict[str, Any]:
    task_id = rec["task_id"]
    fileio.append_line(log_path(root, task_id), fileio.encode_line(rec))
    new = fold(task, rec)
    assert new is not None
    fileio.atomic_write(task_path(root, task_id), fileio.encode_line(new))
    return new


def _locked(root: str, task_id: str) -> fileio.FileLock:
    paths.ensure_dir(paths.locks_dir(root))
    return fileio.FileLock(lock_path(root, task_id), LOCK_TIMEOUT_S)


def pending_count(root: str) -> int:
    return sum(1 for t in load_all(root) if t.get("state") == "queued")


def create(
    root: str, items: Sequence[Mapping[str, Any]], by: str, max_pending: int = DEFAULT_MAX_PENDING
) -> list[str]:
    """Add tasks (each item's fields already checked by the caller): all or none. Returns their ids.

    Under the queue lock, so two ``task add`` at once cannot both slip under the bound.
    """
    paths.ensure_layout(root)
    paths.ensure_dir(tasks_dir(root))
    with fileio.FileLock(queue_lock_path(root), LOCK_TIMEOUT_S):
        pending = pending_count(root)
        if pending + len(items) > max_pending:
            raise CcmError(
                f"the queue is full: {pending} tasks pending, the limit is {max_pending} "
                "([tasks] max_pending in config.toml); wait for some to start, or cancel some"
            )
        ids: list[str] = []
        taken = set(task_ids(root))
        for fields in items:
            task = dict(fields)
            task_id = check_id(task["id"]) if task.get("id") else new_task_id()
            if task.get("id") and task_id in taken:
                raise CcmError(f"a task {task_id} exists already")
            while task_id in taken:
                task_id = new_task_id()
            taken.add(task_id)
            task["id"] = task_id
            if not task.get("in_place") and task.get("git"):
                task["branch"] = branch_name(task_id)
                task["workdir"] = worktree_path(str(task["project"]), task_id)
            task["created_by"] = by
            with _locked(root, task_id):
                rec = _record(task_id, 1, "created", by, {})
                task["created_at"] = rec["ts"]
                rec["task"] = task
                _write(root, None, rec)
            ids.append(task_id)
    return ids


class Conflict(Exception):
    """The task is not in a state this change applies to (another writer got there first)."""


def change(
    root: str,
    task_id: str,
    by: str,
    *,
    to: str | None = None,
    reason: str | None = None,
    expect: frozenset[str] | tuple[str, ...] | None = None,
    changes: Mapping[str, Any] | None = None,
    attempt: Mapping[str, Any] | None = None,
    note: str | None = None,
) -> dict[str, Any]:
    """Append one record (a transition when ``to`` is given, else an update) and replace the task file.

    ``expect``: the states the caller decided on; if the task moved on meanwhile, nothing is written and
    Conflict is raised. A transition the state machine does not allow raises Conflict too.
    """
    with _locked(root, task_id):
        task = load(root, task_id)
        if task is None:
            raise CcmError(f"no task {task_id}")
        state = str(task.get("state"))
        if expect is not None and state not in expect:
            raise Conflict(f"task {task_id} is {state}, not {'/'.join(expect)}")
        if to is not None and to != state and to not in TRANSITIONS.get(state, frozenset()):
            raise Conflict(f"task {task_id}: {state} cannot become {to}")
        fields: dict[str, Any] = {"set": dict(changes) if changes else None, "attempt": attempt, "note": note}
        if to is not None:
            fields.update({"from": state, "to": to, "reason": reason})
        rec = _record(task_id, int(task.get("seq") or 0) + 1, "transition" if to else "update", by, fields)
        return _write(root, task, rec)


def history(root: str, task_id: str) -> Iterator[dict[str, Any]]:
    """The task's log records, oldest first."""
    yield from read_log(root, task_id)
