"""The fleet's side of the tasks job: a claimed fleet task becomes a local task, launched like any other.

Until the tasks launcher (issue 10) is in this tree, there is no local task to make: the fleet job then
mirrors this machine and claims nothing (no capacity).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ccm_agentd.fleet.job import LocalTask
from ccm_hooks.errors import CcmError


class TasksBridge:
    def __init__(self, root: str, tmux: object) -> None:
        self.root = root

    def watch_dir(self) -> str | None:
        return None

    def refresh(self, names: frozenset[str], rescan: bool) -> None:
        return None

    def create(self, row: Mapping[str, Any], clone: str, lease_file: str) -> str:
        raise CcmError("this ccm has no tasks launcher")

    def get(self, local_id: str) -> LocalTask | None:
        return None

    def stop(self, local_id: str, reason: str) -> None:
        return None

    def cancel(self, local_id: str, reason: str) -> None:
        return None

    def capacity(self, projects: Mapping[str, str]) -> tuple[dict[str, int], int | None, int]:
        return {}, None, 0
