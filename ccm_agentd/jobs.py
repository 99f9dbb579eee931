"""How a job plugs into ccm-agentd's loop (the tasks launcher, the fleet link, ...).

The daemon owns the loop, the file watcher, the cache of every session's status, the tmux client and the
notifier. A job is woken with what changed since its last wake-up and returns when it next needs waking
without a change. Work per wake-up is proportional to what changed: a job never reads every status file
(``Wake.sessions`` is the daemon's cache), and at rest it costs nothing but its timer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ccm_agentd.metrics import Metrics


@dataclass(frozen=True)
class Wake:
    now: float  # time.time() of this wake-up
    sessions: Mapping[str, dict[str, Any]]  # the daemon's cache: session id -> its current status (read-only)
    changed: frozenset[str]  # session ids whose status changed since this job's last wake-up
    names: Mapping[str, frozenset[str]]  # each of the job's dirs -> file names changed in it since then
    rescan: bool  # a periodic full pass (every 30 s): anything may have changed unseen


# notify(kind, session_id, summary, **facts): a notification through the daemon's notifier (spec/agentd.md);
# deduplicated per (session or task, kind, since) like the daemon's own.
Notify = Callable[..., None]


class Job(Protocol):
    name: str

    def dirs(self) -> list[str]:
        """Extra directories to watch; the daemon creates them (0700) before watching."""
        ...

    def fileno(self) -> int | None:
        """An extra descriptor the loop selects on (a database connection), or None."""
        ...

    def configure(self, table: Mapping[str, Any]) -> None:
        """Apply the job's table of config.toml (``[tasks]``, ``[fleet]``): at start and on SIGHUP."""
        ...

    def wake(self, w: Wake) -> float | None:
        """Act on what changed; return when to be woken without a change (epoch seconds), or None.

        Called when one of its dirs changed, its descriptor is readable, its time came, a session changed,
        or at a rescan. Must return quickly: slow work (git, tmux, the network) is bounded by timeouts.
        Exceptions are logged by the daemon, which keeps running.
        """
        ...

    def health(self) -> dict[str, Any]:
        """A small JSON-able summary for agentd/health.json and ``ccm-agentd status``."""
        ...

    def metrics(self, m: Metrics) -> None:
        """Set the job's gauges and counters before metrics.prom is written (every heartbeat)."""
        ...

    def close(self) -> None: ...
