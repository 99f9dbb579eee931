"""The fleet's side of the tasks job (spec/tasks.md): a claimed fleet task becomes a local task, which the
tasks job launches, follows and ends like any other; the fleet job reads it back and reports to the row.

The local task's id is the fleet task's id and attempt (``<id>-<attempt>``), so making it is idempotent: a
restart that finds the claim again finds its local task. The task carries ``fleet`` (the row, the attempt,
the lease file): the launcher runs its agent under the fence wrapper, which ends it before the lease can
expire (fence.py). Stopping and cancelling go through the task's ``cancel`` request, as ``ccm-hooks task
cancel`` does: the tasks job interrupts the agent, ends it and closes its window.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

from ccm_agentd.fleet.job import LocalTask
from ccm_agentd.tasks import config as tasks_config
from ccm_hooks import paths
from ccm_hooks.errors import CcmError
from ccm_hooks.record import iso_utc
from ccm_hooks.statedir import config, tasks

BY = "ccm-agentd fleet"
# What a row's ``options`` may set on the local task: `ccm-hooks task add`'s options (spec/tasks.md).
OPTIONS = ("base", "in_place", "max_turns", "done_marker", "error_marker", "retries", "timeout", "model",
           "permission_mode", "headless")  # fmt: skip
ACTIVE = tasks.LIVE | {"queued"}


def local_id_of(row: Mapping[str, Any]) -> str:
    return f"{row['id']}-{row['attempt']}"


class TasksBridge:
    def __init__(self, root: str, tmux: object) -> None:
        self.root = root
        self._cache: dict[str, tuple[tuple[int, int, int] | None, dict[str, Any] | None]] = {}
        self._loaded = False
        self._config: tuple[tuple[int, int, int] | None, dict[str, Any]] = (None, {})

    def watch_dir(self) -> str | None:
        return tasks.tasks_dir(self.root)

    # --- reading ------------------------------------------------------------------------------------------

    def refresh(self, names: frozenset[str], rescan: bool) -> None:
        """Re-read the local tasks whose files changed (all of them at a rescan or the first time)."""
        if rescan or not self._loaded:
            ids = tasks.task_ids(self.root)
            for gone in set(self._cache) - set(ids):
                del self._cache[gone]
            self._loaded = True
        else:
            ids = sorted({n.rpartition(".")[0] for n in names if n.endswith((".json", ".jsonl"))})
        for task_id in ids:
            if paths.valid_session_id(task_id):
                self._read(task_id)

    def _read(self, task_id: str) -> dict[str, Any] | None:
        try:
            st = os.stat(tasks.log_path(self.root, task_id))
            stamp: tuple[int, int, int] | None = (st.st_ino, st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            stamp = None
        cached = self._cache.get(task_id)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        task = tasks.load(self.root, task_id)
        self._cache[task_id] = (stamp, task)
        return task

    def get(self, local_id: str) -> LocalTask | None:
        task = self._read(local_id)
        if task is None:
            return None
        attempt = tasks.current_attempt(task) or {}
        return LocalTask(
            state=str(task.get("state")), reason=task.get("reason"), session_id=attempt.get("session_id"),
            result=task.get("result") if isinstance(task.get("result"), dict) else None,
        )  # fmt: skip

    def capacity(self, projects: Mapping[str, str]) -> tuple[dict[str, int], int | None, int]:
        """Free slots per project name under ``[tasks]``'s limits, counting every local task that runs or
        waits to (fleet tasks included: they are local tasks too)."""
        cfg = tasks_config.from_table(self._tasks_table())
        active = [t for _, t in self._cache.values() if t is not None and t.get("state") in ACTIVE]
        by_clone: dict[str, int] = {}
        for t in active:
            key = os.path.realpath(str(t.get("project") or ""))
            by_clone[key] = by_clone.get(key, 0) + 1
        room = cfg.max_agents - len(active)
        free = {name: min(room, cfg.max_agents_per_project - by_clone.get(os.path.realpath(clone), 0))
                for name, clone in projects.items()}  # fmt: skip
        return free, cfg.max_agents, len(active)

    def _tasks_table(self) -> dict[str, Any]:
        """``[tasks]`` of config.toml, parsed again only when the file changed (this runs every wake-up)."""
        path = os.path.join(self.root, "config.toml")
        try:
            st = os.stat(path)
            stamp: tuple[int, int, int] | None = (st.st_ino, st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            stamp = None
        if stamp != self._config[0]:
            try:
                table = config.read_config(self.root).get("tasks", {})
            except CcmError:
                table = {}  # the daemon reports a broken config.toml
            self._config = (stamp, table if isinstance(table, dict) else {})
        return self._config[1]

    # --- writing ------------------------------------------------------------------------------------------

    def create(self, row: Mapping[str, Any], clone: str, lease_file: str) -> str:
        local_id = local_id_of(row)
        if self._read(local_id) is not None:
            return local_id  # made before a restart
        from ccm_hooks.commands import taskcmd  # the checks `task add` makes, for a row anyone may write

        options = row.get("options") or {}
        spec: dict[str, Any] = {k: options[k] for k in OPTIONS if options.get(k) is not None}
        spec.update(prompt=row["prompt"], project=clone, priority=int(row.get("priority") or 0))
        if row.get("name"):
            spec["name"] = str(row["name"])
        fields = taskcmd.build(self.root, spec, self._tasks_table(), clone)
        fields["id"] = local_id
        fields["fleet"] = {"task_id": str(row["id"]), "attempt": int(row["attempt"]),
                           "system": str(row.get("claimed_by") or ""), "lease": lease_file}  # fmt: skip
        # A claimed task runs now: the fleet's queue had it; the local bound on pending tasks is not for it.
        tasks.create(self.root, [fields], BY, max_pending=1 << 30)
        self._read(local_id)
        return local_id

    def stop(self, local_id: str, reason: str) -> None:
        self._end(local_id, reason)

    def cancel(self, local_id: str, reason: str) -> None:
        self._end(local_id, reason)

    def _end(self, local_id: str, reason: str) -> None:
        """Cancel the local task: at once if it has not started, else through its cancel request (the tasks
        job ends the agent). Its final state says ``reason``."""
        for _ in range(3):
            task = tasks.load(self.root, local_id)
            if task is None or task.get("state") in tasks.FINAL:
                return
            try:
                if task.get("state") == "queued":
                    tasks.change(self.root, local_id, BY, to="cancelled", reason=reason, expect=("queued",))
                else:
                    request = {"at": iso_utc(time.time()), "by": f"the fleet ({reason})"}
                    tasks.change(
                        self.root, local_id, BY, expect=tuple(tasks.LIVE), changes={"cancel": request}
                    )
                return
            except tasks.Conflict:
                continue
        raise CcmError(f"local task {local_id} keeps changing; could not stop it")
