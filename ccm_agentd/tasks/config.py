"""``[tasks]`` in config.toml: limits and where agents run (spec/tasks.md#configuration)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ccm_hooks import paths
from ccm_hooks.statedir import tasks

log = logging.getLogger("ccm_agentd.tasks")


@dataclass(frozen=True)
class TasksConfig:
    max_agents: int = 4
    max_agents_per_project: int = 2
    max_pending: int = tasks.DEFAULT_MAX_PENDING
    tmux_socket: str | None = None  # None: the user's default tmux server
    tmux_session: str = "ccm"
    claude: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    launch_timeout_s: float = 60.0  # from the window opening to the agent's first UserPromptSubmit
    close_after_s: float = 300.0  # a done task's window stays this long; a failed one stays
    retry_backoff_s: tuple[float, ...] = (30.0, 120.0, 600.0)
    memory_max: str | None = None  # e.g. "4G": systemd-run --user --scope -p MemoryMax=
    instructions: bool = True  # tell the agent about the markers and its branch, after the prompt
    end_grace_s: float = 2.0  # after Esc, how long an agent may take to stop before its window is closed


def _number(table: Mapping[str, Any], key: str, default: float, low: float) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low:
        log.error("[tasks] %s = %r is not a number >= %s; using %s", key, value, low, default)
        return default
    return float(value)


def from_table(table: Mapping[str, Any]) -> TasksConfig:
    """The config of a ``[tasks]`` table; a bad value is logged and replaced by its default."""
    d = TasksConfig()
    env = table.get("env", {})
    if not isinstance(env, Mapping) or not all(isinstance(v, str) for v in env.values()):
        log.error("[tasks] env must be a table of strings; ignored")
        env = {}
    backoff = table.get("retry_backoff_s", list(d.retry_backoff_s))
    if (
        not isinstance(backoff, list)
        or not backoff
        or not all(isinstance(b, (int, float)) and not isinstance(b, bool) and b >= 0 for b in backoff)
    ):
        log.error("[tasks] retry_backoff_s must be a list of seconds; using %s", d.retry_backoff_s)
        backoff = list(d.retry_backoff_s)

    def text(key: str) -> str | None:
        value = table.get(key)
        return value if isinstance(value, str) and value.strip() else None

    session = text("tmux_session")
    if session is not None and not paths.valid_session_id(session):
        log.error("[tasks] tmux_session = %r is not a plain name; using %s", session, d.tmux_session)
        session = None
    return TasksConfig(
        max_agents=int(_number(table, "max_agents", d.max_agents, 1)),
        max_agents_per_project=int(_number(table, "max_agents_per_project", d.max_agents_per_project, 1)),
        max_pending=int(_number(table, "max_pending", d.max_pending, 1)),
        tmux_socket=text("tmux_socket"),
        tmux_session=session or d.tmux_session,
        claude=text("claude"),
        env={str(k): str(v) for k, v in env.items()},
        launch_timeout_s=_number(table, "launch_timeout_s", d.launch_timeout_s, 1),
        close_after_s=_number(table, "close_after_s", d.close_after_s, 0),
        retry_backoff_s=tuple(float(b) for b in backoff),
        memory_max=text("memory_max"),
        instructions=table.get("instructions", True) is not False,
        end_grace_s=_number(table, "end_grace_s", d.end_grace_s, 0),
    )
