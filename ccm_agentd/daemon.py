"""``ccm-agentd run``: watch the state dir and act on it; ``ccm-agentd status``: read its health file.

One loop, one thread. It sleeps in ``select`` on the inotify descriptor (watchfiles elsewhere) and a
signal wake-up pipe, with a timeout that is the nearest thing it has promised to do (a retry, a resume,
a heartbeat) or a slow rescan, because watchers drop events. Everything it must remember is in files: the
queue, and the session logs (``ccm.delivery``, ``ccm.state``), so a restart or a kill -9 loses nothing and
repeats nothing. Layout and records: spec/agentd.md.
"""

from __future__ import annotations

import fcntl
import json
import logging
import logging.handlers
import os
import random
import select
import signal
import sys
import time
from typing import Any

from ccm_agentd import delivery, liveness, notify, panes, sdnotify
from ccm_agentd.metrics import Metrics
from ccm_hooks import fileio, paths, record, store
from ccm_hooks.errors import CcmError
from ccm_hooks.statedir import config, reader, sendqueue
from ccm_hooks.statedir.fswatch import DirWatcher
from ccm_hooks.statedir.timefmt import format_age, parse_ts

log = logging.getLogger("ccm_agentd")

RESCAN_S = 30.0  # watchers can drop events: look at everything this often anyway
HEARTBEAT_S = 15.0  # health.json; handlers treat the daemon as gone when it is older than 90 s
LIVENESS_S = 10.0  # how often one session is checked for being lost
NOTIFY_GRACE_S = 60.0  # at start, transitions older than this are history, not news
STATES = ("starting", "processing", "working", "waiting", "idle", "error", "ended", "stalled", "rate_limited")


def agentd_dir(root: str) -> str:
    return os.path.dirname(paths.agentd_health_path(root))


def lock_path(root: str) -> str:
    return os.path.join(agentd_dir(root), "agentd.lock")


def _config(root: str) -> dict[str, Any]:
    try:
        table = config.read_config(root).get("agentd", {})
    except CcmError as exc:
        log.error("using the defaults: %s", exc)
        return {}
    return table if isinstance(table, dict) else {}


def by_state(statuses: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for st in statuses:
        counts[str(st.get("state"))] = counts.get(str(st.get("state")), 0) + 1
    return counts


class JsonFormatter(logging.Formatter):
    def format(self, rec: logging.LogRecord) -> str:
        entry = {"ts": record.iso_utc(rec.created), "level": rec.levelname.lower(), "logger": rec.name,
                 "msg": rec.getMessage()}  # fmt: skip
        if rec.exc_info:
            entry["error"] = self.formatException(rec.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(root: str) -> None:
    handler = logging.handlers.RotatingFileHandler(
        os.path.join(paths.log_dir(root), "agentd.log"), maxBytes=5 << 20, backupCount=3, encoding="utf-8"
    )
    handler.setFormatter(JsonFormatter())
    top = logging.getLogger("ccm_agentd")
    top.handlers[:] = [handler]
    top.setLevel(logging.DEBUG if os.environ.get("CCM_AGENTD_DEBUG") else logging.INFO)
    if sys.stderr.isatty():
        console = logging.StreamHandler()
        console.setFormatter(logging.Formatter("ccm-agentd: %(message)s"))
        console.setLevel(logging.INFO)
        top.addHandler(console)


class Daemon:
    def __init__(self, root: str) -> None:
        self.root = root
        self.started = time.time()
        self.stop = False
        self.reload = True
        self.tmux = panes.Tmux()
        self.counts: dict[str, int] = {}
        self.deliverer = delivery.Deliverer(root, self.tmux, self.counts)
        self.metrics = Metrics()
        self.notifier: notify.Notifier | None = None
        self.cfg = liveness.Config()
        self.waiting_notify_s = 120.0
        self.liveness_s = LIVENESS_S
        self.last_checked: dict[str, float] = {}
        self.jitter: dict[str, float] = {}  # resume item id -> its jitter, drawn once
        self.resume_prompt = "continue"
        self.next_heartbeat = 0.0
        self.lag_ms = 0.0
        self.last_statuses: list[dict[str, Any]] = []

    def load_config(self) -> None:
        table = _config(self.root)
        num = {
            k: float(v) for k, v in table.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        self.cfg = liveness.Config(
            stall_after_s=num.get("stall_after_s", 600.0),
            rate_limit_wait_s=num.get("rate_limit_wait_s", 3600.0),
            rate_limit_jitter_s=num.get("rate_limit_jitter_s", 60.0),
        )
        self.waiting_notify_s = num.get("waiting_notify_after_s", 120.0)
        self.liveness_s = num.get("liveness_s", LIVENESS_S)
        # Typed with send-keys -l: one line, or its newlines would submit it in pieces.
        prompt = table.get("resume_prompt")
        one_line = isinstance(prompt, str) and prompt.strip() and "\n" not in prompt.strip()
        self.resume_prompt = str(prompt).strip() if one_line else "continue"
        commands = table.get("notify_commands")
        commands = [c for c in commands if isinstance(c, str)] if isinstance(commands, list) else None
        desktop = table.get("notify_desktop", True) is not False
        timeout = num.get("notify_timeout_s", 10.0)
        if self.notifier is None:
            self.notifier = notify.Notifier(self.root, commands, desktop=desktop, timeout=timeout)
        else:  # in place: running notifiers, counters and the dedupe set survive a reload
            self.notifier.configure(commands, desktop=desktop, timeout=timeout)
        loaded = {
            **vars(self.cfg),
            "waiting_notify_after_s": self.waiting_notify_s,
            "resume_prompt": self.resume_prompt,
        }
        log.info("config loaded: %s", loaded)

    # --- the loop -------------------------------------------------------------------------------------

    def run(self) -> None:
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)
        watched = [paths.status_dir(self.root), paths.events_dir(self.root), sendqueue.queue_dir(self.root)]
        with DirWatcher(watched) as watcher:
            self._startup(watcher.backend)
            sdnotify.ready()
            ping = sdnotify.watchdog_interval()
            next_ping = time.monotonic()
            while not self.stop:
                if self.reload:
                    first = self.notifier is None
                    self.reload = False
                    if not first:
                        sdnotify.reloading()
                    self.load_config()
                    if not first:
                        sdnotify.ready()
                due = self.tick()
                mono = time.monotonic()
                if ping and mono >= next_ping:
                    sdnotify.watchdog()
                    next_ping = mono + ping
                timeout = min(RESCAN_S, self.liveness_s, due - time.time(), self.next_heartbeat - time.time())
                if ping:
                    timeout = min(timeout, next_ping - mono)
                if self.notifier is not None and self.notifier.running:
                    timeout = min(timeout, 0.5)  # reap finished notifiers, kill ones past their timeout
                self._wait(watcher, wake_r, max(0.0, timeout))
        sdnotify.stopping()
        self._write_health("stopped")
        if self.notifier is not None:
            self.notifier.close()
        log.info("stopped")

    def _wait(self, watcher: DirWatcher, wake_r: int, timeout: float) -> None:
        fd = watcher.fileno()
        expected = time.monotonic() + timeout
        ready, _, _ = select.select([fd, wake_r], [], [], timeout)
        if fd in ready:
            watcher.wait(0)
        if wake_r in ready:
            try:
                os.read(wake_r, 512)
            except BlockingIOError:
                pass
        # Loop lag: how late we woke for a timeout (an early wake-up by an event is no lag).
        self.lag_ms = max(0.0, (time.monotonic() - expected) * 1000.0)

    def _on_stop(self, signum: int, frame: object) -> None:
        self.stop = True

    def _on_hup(self, signum: int, frame: object) -> None:
        self.reload = True

    def _startup(self, backend: str) -> None:
        for st in reader.load_statuses(self.root):
            if st.get("state") != "ended" and st.get("tmux_pane"):
                self.deliverer.load(str(st.get("session_id")))
        log.info("started: pid %d, state dir %s, watching with %s", os.getpid(), self.root, backend)

    # --- one pass over every session ------------------------------------------------------------------

    def tick(self) -> float:
        """Act on every session once. Returns when the next timed action is due (epoch seconds)."""
        now = time.time()
        due = now + RESCAN_S
        statuses = reader.load_statuses(self.root)
        queued = sendqueue.pending(self.root)
        for st in statuses:
            try:
                st = self._liveness(st, now) or st
                when = self._deliver(st, queued, now)
                if when is not None:
                    due = min(due, when)
                self._notify(st, now)
            except Exception:
                log.exception("session %s: unexpected error", st.get("session_id"))
        if self.notifier is not None:
            self.notifier.reap()
        self.last_statuses = statuses
        if now >= self.next_heartbeat:
            self._write_health("running")
            self._write_metrics(statuses, len(queued))
            self.next_heartbeat = now + HEARTBEAT_S
        return min(due, self.next_heartbeat)

    def _liveness(self, st: dict[str, Any], now: float) -> dict[str, Any] | None:
        sid = str(st.get("session_id"))
        state = st.get("state")
        if state == "ended":
            return None
        busy_overdue = (
            state in liveness.BUSY and now - (parse_ts(st.get("updated_at")) or now) >= self.cfg.stall_after_s
        )
        limited = liveness.is_rate_limit(st)
        if not busy_overdue and not limited and now - self.last_checked.get(sid, 0) < self.liveness_s:
            return None
        self.last_checked[sid] = now
        if state not in liveness.LOOKED_AT and panes.pid_alive(st.get("claude_pid")) and not limited:
            return None  # claude still runs: not lost, and neither busy nor stalled: nothing to look at
        change = liveness.check(st, self.tmux, self.cfg, now)
        if change is None or change.get("state") == state:
            return None
        new = store.append_ccm(self.root, sid, "ccm.state", {"set_state": change}, expect_seq=st.get("seq"))
        if new is not None:
            log.info("session %s: %s (%s)", sid[:8], change["state"], change.get("reason"))
            self.counts[f"state_{change['state']}"] = self.counts.get(f"state_{change['state']}", 0) + 1
        return new

    def _deliver(self, st: dict[str, Any], queued: list[dict[str, Any]], now: float) -> float | None:
        items = self.deliverer.items_for(st, queued)
        if st.get("state") == "rate_limited":
            item = delivery.Item(
                f"resume-{st.get('state_since')}", str(st.get("session_id")), self.resume_prompt, "resume"
            )
            jitter = self.jitter.setdefault(item.id, random.uniform(0, self.cfg.rate_limit_jitter_s))
            resume = liveness.resume_due(st, jitter)
            if resume is not None and now < resume:
                return resume
            items.append(item)
        return self.deliverer.step(st, items, now)

    def _notify(self, st: dict[str, Any], now: float) -> None:
        if self.notifier is None:
            return
        state = st.get("state")
        since = parse_ts(st.get("state_since")) or now
        if since < self.started - NOTIFY_GRACE_S:
            return  # history: do not page anyone for what happened before we started
        kind = {"error": "error", "stalled": "stalled", "rate_limited": "rate_limited"}.get(str(state))
        if state == "waiting" and now - since >= self.waiting_notify_s:
            kind = "needs_human"
        elif state == "idle" and not (st.get("watch") or {}).get("handoff"):
            kind = "finished"
        if kind is None:
            return
        sid = str(st.get("session_id"))
        reason = st.get("reason") or st.get("last_assistant_message")
        n = notify.Notification(
            kind=kind, session_id=sid, state=str(state), since=str(st.get("state_since")),
            project=st.get("project"), reason=None if reason is None else str(reason)[:500],
            tmux_pane=st.get("tmux_pane"), tmux_socket=st.get("tmux_socket"),
            summary=f"ccm: {sid[:8]} {kind.replace('_', ' ')}: {str(reason or state)[:120]}",
        )  # fmt: skip
        self.notifier.send(n)

    # --- health and metrics ---------------------------------------------------------------------------

    def _write_health(self, state: str) -> None:
        health = {
            "v": 1, "pid": os.getpid(), "state": state, "started_at": record.iso_utc(self.started),
            "heartbeat_at": record.iso_utc(time.time()), "state_dir": self.root,
            "sessions": by_state(self.last_statuses), "deliveries": dict(self.counts),
            "loop_lag_ms": round(self.lag_ms, 1),
        }  # fmt: skip
        paths.ensure_dir(agentd_dir(self.root))
        fileio.atomic_write(paths.agentd_health_path(self.root), fileio.encode_line(health))

    def _counter(self, name: str, total: int, labels: dict[str, str] | None, help: str) -> None:
        """Feed a Prometheus counter from one of our running totals."""
        current = self.metrics.value(name, labels) or 0.0
        self.metrics.inc(name, max(0.0, total - current), labels, help=help)

    def _write_metrics(self, statuses: list[dict[str, Any]], pending: int) -> None:
        m = self.metrics
        m.clear_gauge("ccm_sessions")
        for state, n in {**dict.fromkeys(STATES, 0), **by_state(statuses)}.items():
            m.set_gauge("ccm_sessions", n, {"state": state}, help="Sessions by state.")
        m.set_gauge("ccm_queue_pending", pending, help="Queued prompts not yet delivered.")
        for outcome in ("typed", "delivered", "retry", "unconfirmed", "failed"):
            self._counter("ccm_deliveries_total", self.counts.get(outcome, 0), {"outcome": outcome},
                          "Delivery steps by outcome.")  # fmt: skip
        continues = sum(int((st.get("watch") or {}).get("continues") or 0) for st in statuses)
        m.set_gauge(
            "ccm_watch_continues", continues, help="Auto-continues in the current runs of all sessions."
        )
        self._counter(
            "ccm_stalls_total", self.counts.get("state_stalled", 0), None, "Sessions marked stalled."
        )
        if self.notifier is not None:
            for outcome in ("sent", "failed", "deduped"):
                total = getattr(self.notifier, outcome, 0)
                self._counter(
                    "ccm_notifications_total", total, {"outcome": outcome}, "Notifications by outcome."
                )
        m.set_gauge("ccm_agentd_loop_lag_seconds", self.lag_ms / 1000.0, help="How late the loop last woke.")
        m.set_gauge("ccm_agentd_heartbeat_timestamp_seconds", time.time(), help="Last heartbeat.")
        m.write(os.path.join(agentd_dir(self.root), "metrics.prom"))


def run_cmd() -> int:
    root = paths.state_dir()
    paths.ensure_layout(root)
    paths.ensure_dir(agentd_dir(root))
    paths.ensure_dir(sendqueue.queue_dir(root))
    fd = os.open(lock_path(root), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, paths.FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        other = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        raise CcmError(
            f"another ccm-agentd (pid {other or '?'}) runs for {root}; `ccm-agentd status` shows it"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    setup_logging(root)
    try:
        Daemon(root).run()
    except Exception:
        log.exception("crashed")
        raise
    finally:
        os.close(fd)
    return 0


def status_cmd(as_json: bool) -> int:
    root = paths.state_dir()
    try:
        health = fileio.read_json(paths.agentd_health_path(root))
    except (OSError, ValueError):
        health = None
    running = _lock_held(root)
    if as_json:
        print(json.dumps({"running": running, "health": health}, indent=2))
        return 0 if running else 1
    if not running:
        raise CcmError(
            f"ccm-agentd is not running for {root}; start it: ccm-agentd run (or ccm-agentd install-service)"
        )
    if not isinstance(health, dict):
        print(f"ccm-agentd is running for {root} (no heartbeat yet)")
        return 0
    age = time.time() - (parse_ts(health.get("heartbeat_at")) or 0)
    sessions = ", ".join(f"{n} {s}" for s, n in sorted((health.get("sessions") or {}).items()))
    print(f"ccm-agentd running (pid {health.get('pid')}) for {root}; heartbeat {format_age(age)} ago")
    deliveries = health.get("deliveries") or {}
    print(
        f"sessions: {sessions or 'none'}; deliveries: {deliveries}; loop lag {health.get('loop_lag_ms')} ms"
    )
    return 0


def _lock_held(root: str) -> bool:
    try:
        fd = os.open(lock_path(root), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
