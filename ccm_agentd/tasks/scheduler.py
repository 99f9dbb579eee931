"""Which queued tasks start now: priority then FIFO, ``--after`` honoured, within ``max_agents`` and
``max_agents_per_project`` (spec/tasks.md#ordering-and-limits). Pure: no files, no clock of its own."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ccm_hooks.statedir import tasks
from ccm_hooks.statedir.timefmt import parse_ts

Task = Mapping[str, Any]


def blocked_by(task: Task, by_id: Mapping[str, Task]) -> str | None:
    """Why ``task`` cannot start yet because of ``--after`` (None when every task it waits for is done)."""
    for dep in task.get("after") or []:
        other = by_id.get(dep)
        if other is None:
            return f"waits for task {dep}, which does not exist"
        if other.get("state") != "done":
            return f"waits for task {dep} ({other.get('state')})"
    return None


def due(task: Task, now: float) -> bool:
    """A retry's backoff is over (or there is none)."""
    when = parse_ts(task.get("not_before"))
    return when is None or when <= now


def pick(
    candidates: Iterable[Task], by_id: Mapping[str, Task], max_agents: int, max_per_project: int, now: float
) -> list[Task]:
    """The queued tasks to launch now, in launch order. ``candidates``: at least every live and every queued
    task (others are ignored); ``by_id``: every task, for ``--after``."""
    everything = list(candidates)
    live = [t for t in everything if t.get("state") in tasks.LIVE]
    per_project: dict[str, int] = {}
    for t in live:
        per_project[str(t.get("project"))] = per_project.get(str(t.get("project")), 0) + 1
    slots = max_agents - len(live)
    chosen: list[Task] = []
    queued = sorted((t for t in everything if t.get("state") == "queued"), key=tasks.order_key)
    for t in queued:
        if slots <= 0:
            break
        project = str(t.get("project"))
        if per_project.get(project, 0) >= max_per_project:
            continue
        if not due(t, now) or blocked_by(t, by_id) is not None:
            continue
        chosen.append(t)
        slots -= 1
        per_project[project] = per_project.get(project, 0) + 1
    return chosen
