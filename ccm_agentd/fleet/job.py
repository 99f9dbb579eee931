"""The fleet job (ccm_agentd/jobs.py's Job): mirrors this machine into the fleet database and runs the
shared queue's tasks here as local tasks (spec/fleet.md).

The network is the link's (link.py, its own thread); this class runs in the daemon's loop and only moves
messages: it hands the link the sessions that changed, turns claimed rows into local tasks, reports the
local tasks' progress back, and fences: a lease not renewed for 2/3 of its length stops its agent here
(fence.py says why that is before any other machine may take the task). Its due time is the earliest
such fence, so the loop wakes for it even if nothing else happens.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ccm_agentd import panes
from ccm_agentd.fleet import fence
from ccm_agentd.fleet.fence import ENDED, FENCED, HELD, LOST, Lease, LeaseFiles, boot_clock
from ccm_agentd.fleet.link import Link
from ccm_agentd.fleet.mailbox import CancelAsked, Claimed, Lost, Message, Report, Reported
from ccm_agentd.jobs import Notify, Wake
from ccm_agentd.metrics import Metrics
from ccm_hooks import record
from ccm_hooks.errors import CcmError
from ccm_hooks.statedir import fleetconf

log = logging.getLogger("ccm_agentd.fleet")

TERMINAL = ("done", "failed", "cancelled")
RELEASE_GRACE_S = 2.0  # after the fenced agent is seen dead, before the task is given back


@dataclass(frozen=True)
class LocalTask:
    """What the fleet needs to know of a local task (the tasks job's file, spec/tasks.md)."""

    state: str  # queued, starting, running, waiting, done, failed, cancelled
    reason: str | None = None
    session_id: str | None = None
    result: dict[str, Any] | None = None


class LocalTasks(Protocol):
    """The tasks job, as the fleet uses it (bridge.py implements it on the tasks job's files)."""

    def watch_dir(self) -> str | None:
        """The directory whose changes mean a local task changed (woken for it), or None."""
        ...

    def create(self, row: Mapping[str, Any], clone: str, lease_file: str) -> str:
        """A local task for attempt ``row['attempt']`` of fleet task ``row``, run in ``clone`` under the
        fence wrapper watching ``lease_file``; its id. Idempotent: the same attempt gives the same task."""
        ...

    def refresh(self, names: frozenset[str], rescan: bool) -> None:
        """Re-read what changed: ``names`` in watch_dir() since the last wake-up (everything at a rescan)."""
        ...

    def get(self, local_id: str) -> LocalTask | None: ...

    def stop(self, local_id: str, reason: str) -> None:
        """End its agent now and end the task as failed with ``reason``, without a local retry."""
        ...

    def cancel(self, local_id: str, reason: str) -> None: ...

    def capacity(self, projects: Mapping[str, str]) -> tuple[dict[str, int], int | None, int]:
        """(free slots per project name, max_agents, agents running now) for ``projects`` (name -> clone)."""
        ...


class FleetJob:
    name = "fleet"

    def __init__(self, root: str, tmux: object, notify: Notify, local: LocalTasks | None = None) -> None:
        self.root = root
        self.notify = notify
        if local is None:
            from ccm_agentd.fleet.bridge import TasksBridge

            local = TasksBridge(root, tmux)
        self.local = local
        self.leases = LeaseFiles(root)
        self.link: Link | None = None
        self.settings: fleetconf.FleetSettings | None = None
        self.problem: str | None = None
        self._dsn = ""
        self._sent: dict[str, tuple[int, str, str | None]] = {}  # task -> (attempt, state, detail) reported
        self._released: set[tuple[str, int]] = set()
        self._stopped: set[tuple[str, int]] = set()

    # --- the Job interface ------------------------------------------------------------------------------

    def configure(self, table: Mapping[str, Any]) -> None:
        try:
            if fleetconf.fleet_table(self.root) is None:  # [fleet] removed, then SIGHUP: idle
                raise CcmError("not configured: no [fleet] in config.toml")
            s = fleetconf.settings_from(table, self.root)
            dsn = fleetconf.load_dsn(s)
            fleetconf.parse(dsn)
        except CcmError as exc:
            self.problem = str(exc)
            log.error("fleet: %s", exc)
            self._stop_link()
            return
        self.problem = None
        warning = fleetconf.pooler_warning(dsn)
        if warning:
            log.warning("fleet: %s", warning)
        if self.link is not None and (s, dsn) == (self.settings, self._dsn):
            return
        self._stop_link()
        from ccm_agentd.fleet.commands import ccm_version

        self.settings, self._dsn = s, dsn
        self.link = Link(self.root, s, dsn, self.leases, ccm_version()).start()
        log.info("fleet: system %s, projects %s, labels %s", s.system, sorted(s.projects), s.labels)

    def dirs(self) -> list[str]:
        d = self.local.watch_dir()
        return [d] if d else []

    def fileno(self) -> int | None:
        return self.link.mail.daemon_fd if self.link is not None else None

    def wake(self, w: Wake) -> float | None:
        if self.link is None or self.settings is None:
            return None
        self.link.mail.hint(w.changed, w.rescan)
        watched = self.local.watch_dir()
        self.local.refresh(w.names.get(watched, frozenset()) if watched else frozenset(), w.rescan)
        for msg in self.link.mail.drain():
            self._on(msg)
        now = boot_clock()
        due: float | None = None
        for lease in self.leases.snapshot().values():
            when = self._tend(lease, w, now)
            if when is not None:
                due = when if due is None else min(due, when)
        gen = self.link.mail.capacity_generation()
        self.link.mail.set_capacity(*self._capacity(gen))
        return None if due is None else w.now + max(0.0, due - now)

    def health(self) -> dict[str, Any]:
        out: dict[str, Any] = {"problem": self.problem}
        if self.settings is not None:
            out["system"] = self.settings.system
        if self.link is not None:
            out.update(self.link.mail.health())
        counts: dict[str, int] = {}
        for lease in self.leases.snapshot().values():
            counts[lease.status] = counts.get(lease.status, 0) + 1
        out["leases"] = counts
        return out

    def metrics(self, m: Metrics) -> None:
        h = self.health()
        m.set_gauge(
            "ccm_fleet_connected", 1 if h.get("connected") else 0, help="Connected to the fleet database."
        )
        m.set_gauge("ccm_fleet_backlog_bytes", h.get("backlog_bytes") or 0, help="Log bytes not yet shipped.")
        if h.get("lag_s") is not None:
            m.set_gauge(
                "ccm_fleet_lag_seconds", h["lag_s"], help="Age of the oldest record in the last batch."
            )
        m.clear_gauge("ccm_fleet_leases")
        for status in (HELD, FENCED, LOST, ENDED):
            m.set_gauge("ccm_fleet_leases", h["leases"].get(status, 0), {"status": status},
                        help="Fleet task leases by status.")  # fmt: skip
        current = m.value("ccm_fleet_shipped_total") or 0.0
        m.inc("ccm_fleet_shipped_total", max(0.0, (h.get("shipped") or 0) - current),
              help="Records shipped to the fleet database.")  # fmt: skip

    def close(self) -> None:
        self._stop_link()

    def _stop_link(self) -> None:
        if self.link is not None:
            self.link.close()
            self.link = None

    # --- what the link tells -----------------------------------------------------------------------------

    def _on(self, msg: Message) -> None:
        if isinstance(msg, Claimed):
            self._start(msg.row)
        elif isinstance(msg, Lost):
            log.warning("fleet: task %s attempt %d lost: %s", msg.task_id, msg.attempt, msg.why)
            self._stop(msg.task_id, msg.attempt, f"fleet: attempt {msg.attempt} lost its lease: {msg.why}")
        elif isinstance(msg, CancelAsked):
            lease = self.leases.snapshot().get(msg.task_id)
            if lease is not None and lease.attempt == msg.attempt and lease.local_id:
                self.local.cancel(lease.local_id, "cancelled from the fleet")
        elif isinstance(msg, Reported):
            self._reported(msg)

    def _start(self, row: Mapping[str, Any]) -> None:
        assert self.settings is not None and self.link is not None
        task_id, attempt = str(row["id"]), int(row["attempt"])
        clone = self.settings.projects.get(str(row["project"]))
        if clone is None:  # the config changed since the claim
            self._send(task_id, attempt, "queued", f"{self.settings.system} has no clone of {row['project']}")
            return
        try:
            local_id = self.local.create(row, clone, fence.lease_path(self.root, task_id))
        except CcmError as exc:
            self._send(task_id, attempt, "failed", f"{self.settings.system} could not start it: {exc}")
            return
        self.leases.attach(task_id, attempt, local_id)
        log.info("fleet: task %s attempt %d is local task %s", task_id, attempt, local_id)
        self._send(task_id, attempt, "starting", None, {"local_id": local_id})

    def _reported(self, msg: Reported) -> None:
        over = msg.state in TERMINAL or msg.state == "queued"  # this attempt's end, or giving the task back
        if msg.written is None:
            log.warning("fleet: the database refused %s for task %s attempt %d: a newer attempt holds it",
                        msg.state, msg.task_id, msg.attempt)  # fmt: skip
            if over:  # the attempt is over here anyway: nothing runs that another could collide with
                self.leases.end(msg.task_id, msg.attempt)
                return
            self.leases.lost(msg.task_id, msg.attempt)
            self._stop(
                msg.task_id, msg.attempt, f"fleet: attempt {msg.attempt} is stale (another holds the task)"
            )
        elif over:
            self.leases.end(msg.task_id, msg.attempt)

    def _send(self, task_id: str, attempt: int, state: str, reason: str | None,
              fields: dict[str, Any] | None = None, detail: str | None = None) -> None:  # fmt: skip
        assert self.link is not None
        self._sent[task_id] = (attempt, state, detail)
        self.link.mail.report(Report(task_id, attempt, state, reason, fields or {}))

    def _stop(self, task_id: str, attempt: int, reason: str) -> None:
        lease = self.leases.snapshot().get(task_id)
        if lease is None or lease.attempt != attempt or (task_id, attempt) in self._stopped:
            return
        self._stopped.add((task_id, attempt))
        if lease.local_id:
            local = self.local.get(lease.local_id)
            if local is not None and local.state not in TERMINAL:
                self.local.stop(lease.local_id, reason)
        try:
            self.notify("fleet_stopped", f"fleet:{task_id}", f"ccm: fleet task {task_id}: {reason}",
                        since=record.iso_utc(time.time()), state="stopped", reason=reason)  # fmt: skip
        except Exception:
            log.exception("fleet: notify failed")

    # --- one lease, each wake-up -------------------------------------------------------------------------

    def _tend(self, lease: Lease, w: Wake, now: float) -> float | None:
        """Act on one lease; when it next needs a look (boot clock), or None."""
        key = (lease.task_id, lease.attempt)
        local = self.local.get(lease.local_id) if lease.local_id else None
        if lease.status == HELD and local is not None and local.state in TERMINAL:
            # Ended here: nothing left to fence. Its end goes to the row when the database can be reached
            # (renewals go on meanwhile, so the attempt stays this machine's).
            self._sync(lease, local, w)
            return None
        if lease.status == HELD:
            if now >= lease.stop_at:
                silent = now - lease.renewed_at
                log.warning("fleet: no renewal of task %s attempt %d for %.0f s: stopping its agent",
                            lease.task_id, lease.attempt, silent)  # fmt: skip
                self.leases.fence(*key)
                self._stop(*key, f"fleet: {self._system()} could not renew the lease for {silent:.0f} s; "
                                 "stopped before the lease could expire (self-fenced)")  # fmt: skip
                return now
            if lease.local_id is None:
                return lease.stop_at  # claimed; the local task is made when the Claimed message arrives
            if local is not None:
                self._sync(lease, local, w)
            return lease.stop_at
        if lease.status == FENCED and key not in self._released:
            # Give the task back only once its agent is certainly gone: another machine may start it at once.
            if (local is None or local.state in TERMINAL) and not self._alive(local, w):
                if now - lease.changed_at >= fence.KILL_GRACE_S + RELEASE_GRACE_S:
                    self._released.add(key)
                    silent = lease.changed_at - lease.renewed_at
                    why = (f"{self._system()} stopped attempt {lease.attempt}: no contact with the fleet "
                           f"database for {silent:.0f} s (self-fenced)")  # fmt: skip
                    self._send(*key, "queued", why)
                    return None
                return lease.changed_at + fence.KILL_GRACE_S + RELEASE_GRACE_S
            return now + 1.0
        if (
            lease.status in (LOST, ENDED)
            and (local is None or local.state in TERMINAL)
            and not self._alive(local, w)
        ):
            self.leases.forget(lease.task_id)
            self._sent.pop(lease.task_id, None)
        return None

    def _sync(self, lease: Lease, local: LocalTask, w: Wake) -> None:
        """Report the local task's state to the row when it changed."""
        st = w.sessions.get(local.session_id or "") or {}
        if local.state in TERMINAL:
            state, detail = local.state, None
        elif local.state in ("queued", "starting"):
            state, detail = "starting", None
        else:
            state, detail = "running", str(st.get("state") or local.state)
        if self._sent.get(lease.task_id) == (lease.attempt, state, detail):
            return
        fields: dict[str, Any] = {"local_id": lease.local_id}
        if local.session_id:
            fields["session_id"] = local.session_id
        if detail:
            fields["session_state"] = detail
        if local.result is not None:
            fields["result"] = local.result
        self._send(
            lease.task_id, lease.attempt, state, local.reason if state in TERMINAL else None, fields, detail
        )

    def _alive(self, local: LocalTask | None, w: Wake) -> bool:
        """Whether the agent of ``local`` may still run: its session's claude process exists."""
        if local is None or not local.session_id:
            return False
        st = w.sessions.get(local.session_id) or {}
        return st.get("state") != "ended" and panes.pid_alive(st.get("claude_pid"))

    def _capacity(self, gen: int) -> tuple[dict[str, int], int, int | None, int]:
        """Free slots per project for the link's next claim, as of claim generation ``gen``."""
        assert self.settings is not None
        if not self.settings.claim:
            return {}, gen, None, 0
        free, max_agents, agents = self.local.capacity(self.settings.projects)
        # Claims whose local task does not exist yet take a slot too.
        pending = [x for x in self.leases.snapshot().values() if x.status == HELD and x.local_id is None]
        for lease in pending:
            if lease.project in free:
                free[lease.project] -= 1
        agents += len(pending)
        if max_agents is not None:
            free = {p: min(n, max_agents - agents) for p, n in free.items()}
        return {p: max(0, n) for p, n in free.items()}, gen, max_agents, agents

    def _system(self) -> str:
        return self.settings.system if self.settings else "this machine"
