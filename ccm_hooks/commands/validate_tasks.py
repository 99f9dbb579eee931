"""``ccm-hooks validate``, the tasks part: ``$CCM_HOME/tasks/`` against spec/tasks.md and its two schemas.

Every log line against task-transition.schema.json, seq 1, 2, 3 ... with a ``created`` record first, every
task file against task.schema.json and against the fold of its log, modes and names. Called by
validate.py with its own error and warning functions, so this module knows nothing of its report.
"""

from __future__ import annotations

import functools
import json
import os
import stat
from collections.abc import Callable
from importlib import resources
from typing import Any

import jsonschema  # type: ignore[import-untyped]

from ccm_hooks import paths
from ccm_hooks.statedir import tasks

Say = Callable[[str, str], None]  # (where, message)


@functools.cache
def _validator(name: str) -> Any:
    schema = json.loads(resources.files("ccm_hooks").joinpath("schemas", name).read_text("utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def check(root: str, error: Say, warn: Say) -> int:
    """Check every task under ``root``; returns how many tasks were checked."""
    directory = tasks.tasks_dir(root)
    try:
        st = os.lstat(directory)
    except FileNotFoundError:
        return 0
    if not stat.S_ISDIR(st.st_mode):
        error(directory, "not a directory")
        return 0
    _mode(directory, st, error)
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        stem, dot, ext = name.rpartition(".")
        if name.startswith("."):
            continue  # a temp file of an atomic replace
        if os.path.isdir(path) and paths.valid_session_id(name):
            _mode(path, os.lstat(path), error)
            for inner in os.listdir(path):
                _mode(os.path.join(path, inner), os.lstat(os.path.join(path, inner)), error)
            continue
        if not (dot and ext in ("json", "jsonl") and paths.valid_session_id(stem)):
            warn(path, "not a task file (tasks/<id>.json, <id>.jsonl, <id>/): ignored")
    ids = tasks.task_ids(root)
    for task_id in ids:
        _check_task(root, task_id, error, warn)
    return len(ids)


def _mode(path: str, st: os.stat_result, error: Say) -> None:
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISLNK(st.st_mode):
        error(path, "a symlink: ccm never writes through one")
    elif stat.S_ISDIR(st.st_mode) and mode & 0o077:
        error(path, f"mode {mode:04o}: others may read or write it (want 0700)")
    elif stat.S_ISREG(st.st_mode) and mode & 0o077:
        error(path, f"mode {mode:04o}: tasks hold prompts; others may read it (want 0600)")


def _check_task(root: str, task_id: str, error: Say, warn: Say) -> None:
    log = tasks.log_path(root, task_id)
    records: list[dict[str, Any]] = []
    try:
        with open(log, "rb") as fh:
            _mode(log, os.fstat(fh.fileno()), error)
            data = fh.read()
    except FileNotFoundError:
        error(log, "missing: a task file without its log (the log is the truth; spec/tasks.md#the-log)")
        data = b""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    elif lines:
        warn(f"{log}:{len(lines)}", "an incomplete last line (a write in progress or a killed writer)")
        lines.pop()
    transition = _validator("task-transition.schema.json")
    for number, line in enumerate(lines, 1):
        where = f"{log}:{number}"
        try:
            rec = json.loads(line)
        except ValueError:
            error(where, "not JSON")
            continue
        for problem in list(transition.iter_errors(rec))[:3]:
            error(where, f"{'/'.join(map(str, problem.absolute_path)) or 'record'}: {problem.message}")
        if isinstance(rec, dict):
            if rec.get("seq") != len(records) + 1:
                error(where, f"seq {rec.get('seq')!r}, expected {len(records) + 1}")
            if rec.get("task_id") != task_id:
                error(where, f"task_id {rec.get('task_id')!r} in the log of {task_id}")
            if not records and rec.get("event") != "created":
                error(where, "the first record of a task's log must be `created`")
            records.append(rec)
    path = tasks.task_path(root, task_id)
    try:
        with open(path, "rb") as fh:
            _mode(path, os.fstat(fh.fileno()), error)
            task = json.loads(fh.read())
    except FileNotFoundError:
        if records:
            warn(path, "missing: readers rebuild it from the log; the next change writes it")
        return
    except ValueError:
        error(path, "not JSON")
        return
    for problem in list(_validator("task.schema.json").iter_errors(task))[:5]:
        error(path, f"{'/'.join(map(str, problem.absolute_path)) or 'task'}: {problem.message}")
    if not records:
        return
    folded = tasks.replay(records)
    seq = task.get("seq") if isinstance(task, dict) else None
    if folded != task and isinstance(seq, int) and seq > len(records):
        # The file is ahead of the log as read: a live writer appended its record (it always appends first)
        # and replaced the file after the log was read. The log read again holds that record.
        records = tasks.read_log(root, task_id)
        folded = tasks.replay(records)
    if folded != task:
        behind = tasks.replay(records[:-1])
        if behind == task:
            warn(path, "one record behind its log (its writer was killed before the replace); readers refold")
        else:
            error(path, "differs from the fold of its log")
