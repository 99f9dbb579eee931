"""The tasks part of ``ccm-hooks top``: queued tasks, running ones with their session's state, and the ones
that finished in the last ``RECENT_S`` seconds. Task files are re-read only when they change."""

from __future__ import annotations

import os
from typing import Any

from ccm_hooks import paths
from ccm_hooks.statedir import tasks
from ccm_hooks.statedir.timefmt import format_age, parse_ts

RECENT_S = 600.0
MAX_FINISHED = 5
COLUMNS = (("TASK", 8), ("STATE", 9), ("AGENT", 12), ("AGE", 4), ("PROJECT", 12))


class TaskView:
    """The task files, cached by their log's (inode, size, mtime)."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.cache: dict[str, tuple[tuple[int, int, int], dict[str, Any]]] = {}

    def load(self) -> list[dict[str, Any]]:
        try:
            entries = list(os.scandir(tasks.tasks_dir(self.root)))
        except FileNotFoundError:
            return []
        seen = set()
        for entry in entries:
            task_id, dot, ext = entry.name.rpartition(".")
            if ext != "jsonl" or not dot or not paths.valid_session_id(task_id):
                continue
            seen.add(task_id)
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
            cached = self.cache.get(task_id)
            if cached is None or cached[0] != stamp:
                task = tasks.load(self.root, task_id)
                if task is not None:
                    self.cache[task_id] = (stamp, task)
        for gone in set(self.cache) - seen:
            del self.cache[gone]
        return [task for _, task in self.cache.values()]


def shown(all_tasks: list[dict[str, Any]], now: float) -> list[dict[str, Any]]:
    """Live and queued tasks in launch order, then up to MAX_FINISHED that ended in the last RECENT_S."""
    active = sorted((t for t in all_tasks if t.get("state") not in tasks.FINAL), key=tasks.order_key)
    recent = [t for t in all_tasks if t.get("state") in tasks.FINAL
              and now - (parse_ts(t.get("state_since")) or 0) <= RECENT_S]  # fmt: skip
    recent.sort(key=lambda t: str(t.get("state_since")), reverse=True)
    return active + recent[:MAX_FINISHED]


def _agent(root: str, task: dict[str, Any], statuses: dict[str, dict[str, Any]]) -> str:
    attempt = tasks.current_attempt(task)
    if attempt is None or task.get("state") not in tasks.LIVE:
        return "-"
    status = statuses.get(str(attempt.get("session_id")))
    return str(status.get("state")) if status else "-"


def _what(task: dict[str, Any]) -> str:
    if task.get("state") in tasks.FINAL or task.get("state") == "waiting":
        return str(task.get("reason") or "")
    return str(task.get("name") or task.get("prompt") or "")


def rows(
    root: str, all_tasks: list[dict[str, Any]], statuses: list[dict[str, Any]], now: float
) -> list[list[str]]:
    """The cells of each task row (WHAT last), for the tasks ``shown`` picks."""
    by_sid = {str(st.get("session_id")): st for st in statuses}
    out = []
    for t in shown(all_tasks, now):
        age = format_age(now - (parse_ts(t.get("state_since")) or now))
        project = os.path.basename(str(t.get("project") or "").rstrip("/")) or "-"
        out.append([str(t.get("id")), str(t.get("state")), _agent(root, t, by_sid), age, project, _what(t)])
    return out


def format_task_row(values: list[str], width: int | None) -> str:
    cells = []
    for value, (_, size) in zip(values[:-1], COLUMNS, strict=True):
        flat = " ".join(value.split())
        cells.append((flat[: size - 1] + "…" if len(flat) > size else flat).ljust(size))
    what = " ".join(values[-1].split())
    line = " ".join(cells) + " " + "".join(ch if ch.isprintable() else "?" for ch in what)
    return line if width is None else line[:width]


HEADER = [title for title, _ in COLUMNS] + ["WHAT"]


def lines(view: TaskView, statuses: list[dict[str, Any]], now: float, width: int | None) -> list[str]:
    """The header and one line per task shown; nothing at all when there are no tasks to show."""
    found = rows(view.root, view.load(), statuses, now)
    if not found:
        return []
    return [format_task_row(HEADER, width), *(format_task_row(r, width) for r in found)]


_views: dict[str, TaskView] = {}


def view_for(root: str) -> TaskView:
    """One cached view per state dir, for top's redraws."""
    if root not in _views:
        _views[root] = TaskView(root)
    return _views[root]
