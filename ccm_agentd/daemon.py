"""``ccm-agentd run``: watch the state dir and act on it.

One loop, one thread. It sleeps in ``select`` on the file watcher (inotify, or watchfiles behind a pipe),
a signal wake-up pipe and the descriptors of its jobs, with a timeout that is the nearest thing it has
promised to do (a session's timer, a job's, the heartbeat) or the periodic rescan, because watchers drop
events. Work per wake-up is proportional to what changed: the watcher names the status files that changed
and only those sessions are read and acted on; each session's next look without a change (a retry, a
resume, a liveness check) is a timer; the rescan stats every status file and reads only the ones that moved.
Everything it must remember is in files (the queue, the session logs' ``ccm.delivery`` and ``ccm.state``
records), so a restart or a kill -9 loses nothing and repeats nothing. spec/agentd.md.
"""

from __future__ import annotations

import fcntl
import logging
import os
import random
import select
import signal
import time
from typing import Any

from ccm_agentd import health, liveness, notify, panes, registry, sdnotify
from ccm_agentd.delivery.deliverer import Deliverer
from ccm_agentd.delivery.history import Item
from ccm_agentd.jobs import Job, Notify, Wake
from ccm_agentd.sessions import QueueView, SessionCache, Timers, sid_of
from ccm_hooks import fileio, paths, store
from ccm_hooks.errors import CcmError
from ccm_hooks.statedir import agentd_settings, config, sendqueue
from ccm_hooks.statedir.agentd_lock import lock_path
from ccm_hooks.statedir.fswatch import Changes, DirWatcher
from ccm_hooks.statedir.timefmt import iso_utc, parse_ts

log = logging.getLogger("ccm_agentd")

RESCAN_S = 30.0  # watchers can drop events: stat everything this often anyway
NOTIFY_GRACE_S = 60.0  # at start, transitions older than this are history, not news
NOTIFIED_KINDS = {"error": "error", "stalled": "stalled", "rate_limited": "rate_limited"}


class Daemon:
    def __init__(self, root: str, jobs: list[Job] | None = None) -> None:
        self.root = root
        self.started = time.time()
        self.stop = False
        self.reload = True
        self.tmux = panes.Tmux()
        self.counts: dict[str, int] = {}
        self.cache = SessionCache(root)
        self.queue = QueueView(root)
        self.timers = Timers()
        self.deliverer = Deliverer(root, self.tmux, self.counts)
        self.settings = agentd_settings.AgentdSettings()
        self.notifier: notify.Notifier | None = None
        self.health = health.Health(root, self.started)
        self.jobs: list[Job] = (
            list(jobs) if jobs is not None else default_jobs(root, self.tmux, self.job_notify)
        )
        self.job_due: dict[str, float | None] = {}
        self.last_checked: dict[str, float] = {}
        self.jitter: dict[str, float] = {}  # resume item id -> its jitter, drawn once
        self.next_rescan = 0.0
        self.lag_ms = 0.0

    # --- configuration --------------------------------------------------------------------------------

    def load_config(self) -> None:
        try:
            data = config.read_config(self.root)
        except CcmError as exc:
            log.error("config.toml: %s; using the defaults", exc)
            data = {}
        s = self.settings = agentd_settings.parse(data.get("agentd"))
        for error in s.errors:
            log.error("config.toml: %s; using its default", error)
        liveness_cfg = liveness.Config(
            s.stall_after_s, s.rate_limit_wait_s, s.rate_limit_jitter_s, s.self_continue_grace_s
        )
        self.liveness_cfg = liveness_cfg
        if self.notifier is None:
            self.notifier = notify.Notifier(
                self.root, s.notify_commands, desktop=s.notify_desktop, timeout=s.notify_timeout_s
            )
        else:  # in place: running notifiers, counters and what was notified survive a reload
            self.notifier.configure(s.notify_commands, desktop=s.notify_desktop, timeout=s.notify_timeout_s)
        self.health.config_errors = list(s.errors)
        self.health.notifier = self.notifier.describe()
        for job in self.jobs:
            table = data.get(job.name)
            job.configure(table if isinstance(table, dict) else {})
        log.info("config loaded: %s; notifications go to %s", _shown(s), self.notifier.describe())

    # --- the loop -------------------------------------------------------------------------------------

    def run(self) -> None:
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)
        watched = [paths.status_dir(self.root), sendqueue.queue_dir(self.root)]
        for job in self.jobs:
            for directory in job.dirs():
                paths.ensure_dir(directory)
                watched.append(directory)
        with DirWatcher(watched) as watcher:
            log.info(
                "started: pid %d, state dir %s, watching with %s", os.getpid(), self.root, watcher.backend
            )
            ping = sdnotify.watchdog_interval()
            next_ping = time.monotonic()
            ready_jobs: set[str] = set()
            first = True
            while not self.stop:
                if self.reload:
                    self.reload = False
                    if not first:
                        sdnotify.reloading()
                    self.load_config()
                    if not first:
                        sdnotify.ready()
                due = self.step(watcher.take(), ready_jobs, startup=first)
                if first:
                    sdnotify.ready()
                    first = False
                mono = time.monotonic()
                if ping and mono >= next_ping:
                    sdnotify.watchdog()
                    next_ping = mono + ping
                timeout = due - time.time()
                if ping:
                    timeout = min(timeout, next_ping - mono)
                if self.notifier is not None and self.notifier.running:
                    timeout = min(timeout, 0.5)  # reap finished notifiers, kill ones past their timeout
                ready_jobs = self._wait(watcher, wake_r, max(0.0, timeout))
        sdnotify.stopping()
        self.health.write("stopped", self._health_facts())
        if self.notifier is not None:
            self.notifier.close()
        for job in self.jobs:
            job.close()
        log.info("stopped")

    def _wait(self, watcher: DirWatcher, wake_r: int, timeout: float) -> set[str]:
        """Sleep until a file changes, a signal, a job's descriptor, or ``timeout``; the jobs that woke it."""
        fd = watcher.fileno()
        job_fds = {job.name: job.fileno() for job in self.jobs}
        fds = [fd, wake_r, *(f for f in job_fds.values() if f is not None)]
        expected = time.monotonic() + timeout
        ready, _, _ = select.select(fds, [], [], timeout)
        if fd in ready:
            watcher.wait(0)
        if wake_r in ready:
            try:
                os.read(wake_r, 512)
            except BlockingIOError:
                pass
        # Loop lag: how late we woke for a timeout (an early wake-up by an event is no lag).
        self.lag_ms = max(0.0, (time.monotonic() - expected) * 1000.0)
        return {name for name, f in job_fds.items() if f is not None and f in ready}

    def _on_stop(self, signum: int, frame: object) -> None:
        self.stop = True

    def _on_hup(self, signum: int, frame: object) -> None:
        self.reload = True

    # --- one wake-up ----------------------------------------------------------------------------------

    def step(self, changes: Changes, ready_jobs: set[str] | None = None, startup: bool = False) -> float:
        """Act on what changed and on what is due. Returns when the loop must wake at the latest."""
        now = time.time()
        status_dir, queue_dir = paths.status_dir(self.root), sendqueue.queue_dir(self.root)
        rescan = startup or changes.overflow or now >= self.next_rescan
        if rescan:
            changed = self.cache.rescan(now)
            queued = self.queue.reload()
            self._clean_temps()
            self.next_rescan = now + RESCAN_S
        else:
            names = changes.names.get(status_dir, set())
            changed = self.cache.refresh({sid for sid in map(sid_of, names) if sid is not None})
            queued = self.queue.reload() if changes.names.get(queue_dir) else set()
        todo = changed | queued | set(self.timers.pop_due(now))
        if startup:
            todo |= set(self.cache.statuses)
        for sid in todo:
            try:
                self._act(sid, now)
            except Exception:
                log.exception("session %s: unexpected error", sid)
        self._wake_jobs(now, changes, frozenset(changed), ready_jobs or set(), rescan)
        if self.notifier is not None:
            self.notifier.reap()
        due = [now + RESCAN_S, self.next_rescan, self.timers.next_due()]
        due += list(self.job_due.values())
        if now >= self.health.next_heartbeat:
            self._heartbeat(now)
        due.append(self.health.next_heartbeat)
        return min(d for d in due if d is not None)

    def _clean_temps(self) -> None:
        """Remove what writers that died left in the small directories ccm rewrites files in (the cache's
        rescan does ``status/``); spec/layout.md#temp-files."""
        dirs = [sendqueue.queue_dir(self.root), health.agentd_dir(self.root), self.root]
        for directory in dirs + [d for job in self.jobs for d in job.dirs()]:
            removed = fileio.clean_stale_temps(directory)
            if removed:
                log.info("removed %d temp files left in %s by writers that died", removed, directory)

    def _wake_jobs(
        self, now: float, changes: Changes, changed: frozenset[str], ready: set[str], rescan: bool
    ) -> None:
        for job in self.jobs:
            names = {d: frozenset(changes.names.get(d, ())) for d in job.dirs()}
            due = self.job_due.get(job.name)
            timely = due is not None and now >= due
            if not (rescan or changed or timely or job.name in ready or any(names.values())):
                continue
            try:
                self.job_due[job.name] = job.wake(Wake(now, self.cache.statuses, changed, names, rescan))
            except Exception:
                log.exception("job %s: unexpected error", job.name)
                self.job_due[job.name] = now + RESCAN_S  # try again later, not in a tight loop

    def _act(self, sid: str, now: float) -> None:
        """Everything the daemon does for one session: liveness, typing, notifying; then its next timer."""
        st = self.cache.get(sid)
        if st is None:  # its status file is gone (pruned)
            self.timers.set(sid, None)
            self.deliverer.forget(sid)
            self.last_checked.pop(sid, None)
            return
        changed = self._liveness(st, now)
        if changed is not None:
            st = changed
            self.cache.put(sid, st)
        when = self._deliver(st, now)
        self._notify(st, now)
        self.timers.set(sid, _earliest(when, self._next_look(st, now)))

    def _next_look(self, st: dict[str, Any], now: float) -> float | None:
        """When this session needs a look even if nothing changes: liveness, a stall, a wait to notify."""
        state = st.get("state")
        if state == "ended":
            return None
        sid = str(st.get("session_id"))
        due = self.last_checked.get(sid, now) + self.settings.liveness_s
        updated = parse_ts(st.get("updated_at")) or now
        if state in liveness.BUSY:
            due = min(due, updated + self.settings.stall_after_s)
        if state in liveness.REGISTRY_WATCHED:
            due = min(due, now + liveness.REGISTRY_LOOK_S)
        if state == "waiting":
            since = parse_ts(st.get("state_since")) or now
            notify_at = since + self.settings.waiting_notify_after_s
            if notify_at > now:
                due = min(due, notify_at)
        return max(due, now + 0.05)

    def _liveness(self, st: dict[str, Any], now: float) -> dict[str, Any] | None:
        sid = str(st.get("session_id"))
        state = st.get("state")
        if state == "ended":
            return None
        if state in liveness.REGISTRY_WATCHED:
            # Esc, or a dialog answered No or dismissed, fires no hook; Claude Code's registry says idle at
            # once. One small file read per REGISTRY_LOOK_S, not throttled by liveness_s (10 s by default):
            # the session must leave busy or waiting within seconds, not at the next check or stall_after_s.
            found = liveness.from_registry(st, registry.read(st.get("claude_pid")), now)
            if found is not None:
                return self._set_state(st, found)
        cfg = self.liveness_cfg
        busy_overdue = (
            state in liveness.BUSY and now - (parse_ts(st.get("updated_at")) or now) >= cfg.stall_after_s
        )
        limited = liveness.is_rate_limit(st)
        if (
            not busy_overdue
            and not limited
            and now - self.last_checked.get(sid, 0) < self.settings.liveness_s
        ):
            return None
        self.last_checked[sid] = now
        if state not in liveness.LOOKED_AT and panes.pid_alive(st.get("claude_pid")) and not limited:
            return None  # claude still runs: not lost, and neither busy nor stalled: nothing to look at
        change = liveness.check(st, self.tmux, cfg, now)
        if change is None or change.get("state") == state:
            return None
        return self._set_state(st, change)

    def _set_state(self, st: dict[str, Any], change: dict[str, Any]) -> dict[str, Any] | None:
        """Record what the daemon found (a ccm.state record), unless the session moved on meanwhile."""
        sid = str(st.get("session_id"))
        new = store.append_ccm(self.root, sid, "ccm.state", {"set_state": change}, expect_seq=st.get("seq"))
        if new is not None:
            log.info("session %s: %s (%s)", sid[:8], change["state"], change.get("reason"))
            self.counts[f"state_{change['state']}"] = self.counts.get(f"state_{change['state']}", 0) + 1
        return new

    def _deliver(self, st: dict[str, Any], now: float) -> float | None:
        sid = str(st.get("session_id"))
        items = self.deliverer.items_for(st, self.queue.items(sid))
        if st.get("state") == "rate_limited":
            since = str(st.get("state_since") or "")
            item = Item(f"resume-{since}", sid, self.settings.resume_prompt, "resume", since)
            jitter = self.jitter.setdefault(item.id, random.uniform(0, self.liveness_cfg.rate_limit_jitter_s))
            entry = registry.read(st.get("claude_pid"))
            version = entry.version if entry is not None else None
            resume = liveness.resume_due(st, jitter, version, self.liveness_cfg.self_continue_grace_s)
            if resume is not None and now < resume:
                reset = parse_ts(st.get("resume_at")) or resume
                itself = liveness.awaits_self_continue(st, version)
                later = " unless Claude Code has continued by itself" if itself else ""
                why = f"the limit resets at {iso_utc(reset)}: typed at {iso_utc(resume)}{later}"
                self.deliverer.wait(item, why)
                return resume
            items.append(item)
        return self.deliverer.step(st, items, now, expire_s=self.settings.queue_expiry_s)

    def _notify(self, st: dict[str, Any], now: float) -> None:
        if self.notifier is None:
            return
        state = st.get("state")
        since = parse_ts(st.get("state_since")) or now
        if since < self.started - NOTIFY_GRACE_S:
            return  # history: do not page anyone for what happened before we started
        kind = NOTIFIED_KINDS.get(str(state))
        sid = str(st.get("session_id"))
        if state == "ended" and st.get("error") and self.notifier.last_kind(sid) != "error":
            kind = "error"  # its last turn failed as it ended (claude -p): the error was not seen as a state
        if state == "waiting" and now - since >= self.settings.waiting_notify_after_s:
            kind = "needs_human"
        elif state == "idle" and not (st.get("watch") or {}).get("handoff"):
            kind = "finished"
            if liveness.is_headless(st) and not self.settings.notify_headless:
                return  # `claude -p` runs end by themselves; a script that started them knows
        if kind is None:
            return
        reason = st.get("error") if kind == "error" else st.get("reason") or st.get("last_assistant_message")
        n = notify.Notification(
            kind=kind, session_id=sid, state=str(state), since=str(st.get("state_since")),
            project=st.get("project"), reason=None if reason is None else str(reason)[:500],
            tmux_pane=st.get("tmux_pane"), tmux_socket=st.get("tmux_socket"),
            summary=f"ccm: {sid[:8]} {kind.replace('_', ' ')}: {str(reason or state)[:120]}",
        )  # fmt: skip
        if self.notifier.send(n):
            log.info("notified %s for %s: %s", kind, sid[:8], n.summary)

    def job_notify(
        self, kind: str, subject: str, summary: str, *, since: str, state: str = "",
        project: str | None = None, reason: str | None = None, tmux_pane: str | None = None,
        tmux_socket: str | None = None,
    ) -> None:  # fmt: skip
        """The ``Notify`` jobs get (jobs.py): ``subject`` is what is deduplicated on (``task:<id>``)."""
        if self.notifier is None:
            return
        n = notify.Notification(kind, subject, state, since, project, reason, tmux_pane, tmux_socket, summary)
        if self.notifier.send(n):
            log.info("notified %s for %s: %s", kind, subject, summary)

    # --- health and metrics ---------------------------------------------------------------------------

    def _health_facts(self) -> dict[str, Any]:
        return {
            "sessions": health.by_state(self.cache.statuses.values()),
            "deliveries": dict(self.counts),
            "loop_lag_ms": round(self.lag_ms, 1),
            "queue": self.deliverer.queue_report(self.queue.by_session),
            "waits": self.deliverer.waits_report(self.queue.by_session),
            "screens": self.deliverer.screen_report(),
            "jobs": {job.name: job.health() for job in self.jobs},
        }

    def _heartbeat(self, now: float) -> None:
        facts = self._health_facts()
        self.health.write("running", facts)
        self.health.write_metrics(self.cache.statuses.values(), len(self.queue), self.counts, self.notifier,
                                  self.lag_ms, self.jobs)  # fmt: skip
        self.health.next_heartbeat = now + self.settings.heartbeat_s


def default_jobs(root: str, tmux: panes.Tmux, notify: Notify) -> list[Job]:
    """The jobs every daemon runs, each importing only what it needs (the fleet only when configured:
    its job checks `[fleet]` itself and stays idle without it). Jobs register here, one line each."""
    from ccm_agentd.tasks.job import TasksJob

    jobs: list[Job] = [TasksJob(root, tmux, notify)]
    try:
        fleet = "fleet" in config.read_config(root)
    except CcmError:
        fleet = False  # load_config says what is wrong with config.toml
    if fleet:  # nothing of the fleet is imported without [fleet] (added later: restart ccm-agentd)
        from ccm_agentd.fleet.job import FleetJob

        jobs.append(FleetJob(root, tmux, notify))
    return jobs


def _earliest(*times: float | None) -> float | None:
    present = [t for t in times if t is not None]
    return min(present) if present else None


def _shown(s: agentd_settings.AgentdSettings) -> dict[str, Any]:
    """The settings for the log line: no notify commands (they may hold tokens)."""
    shown = {k: v for k, v in vars(s).items() if k not in ("errors", "notify_commands")}
    shown["notify_commands"] = len(s.notify_commands)
    return shown


def run_cmd() -> int:
    root = paths.state_dir()
    paths.ensure_layout(root)
    paths.ensure_dir(health.agentd_dir(root))
    paths.ensure_dir(sendqueue.queue_dir(root))
    fd = os.open(lock_path(root), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, paths.FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        other = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        raise CcmError(
            f"another ccm-agentd (pid {other or '?'}) runs for {root}; `ccm-agentd status` shows it"
        ) from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError as exc:  # a full disk: the lock still works, only the pid in it is missing
        log.warning("cannot write the pid into %s: %s", lock_path(root), exc)
    health.setup_logging(root)
    try:
        Daemon(root).run()
    except Exception:
        log.exception("crashed")
        raise
    finally:
        os.close(fd)
    return 0
