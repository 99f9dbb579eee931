"""What ccm-agentd says about itself: its log, ``agentd/health.json`` and ``agentd/metrics.prom``.

None of it may take the daemon down: a full disk makes a heartbeat fail (logged once a minute at most), the
loop goes on, and the next heartbeat tries again.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import sys
import time
from collections.abc import Iterable
from typing import Any

from ccm_agentd.jobs import Job
from ccm_agentd.metrics import Metrics
from ccm_agentd.notify import Notifier
from ccm_hooks import fileio, paths, record

log = logging.getLogger("ccm_agentd")

WARN_EVERY_S = 60.0
STATES = ("starting", "processing", "working", "waiting", "idle", "error", "ended", "stalled", "rate_limited")


def agentd_dir(root: str) -> str:
    return os.path.dirname(paths.agentd_health_path(root))


def by_state(statuses: Iterable[dict[str, Any]]) -> dict[str, int]:
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


class PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A rotating log whose files are created 0600, like everything in the state dir, whatever the umask."""

    def _open(self):  # type: ignore[no-untyped-def]  # the base class leaves it untyped
        fd = os.open(
            self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
            paths.FILE_MODE,
        )  # fmt: skip
        return os.fdopen(fd, "a", encoding=self.encoding, errors=self.errors)


def setup_logging(root: str) -> None:
    top = logging.getLogger("ccm_agentd")
    top.setLevel(logging.DEBUG if os.environ.get("CCM_AGENTD_DEBUG") else logging.INFO)
    try:
        handler: logging.Handler = PrivateRotatingFileHandler(
            os.path.join(paths.log_dir(root), "agentd.log"), maxBytes=5 << 20, backupCount=3, encoding="utf-8"
        )
        handler.setFormatter(JsonFormatter())
    except OSError as exc:  # a full disk or an unwritable log dir: log to stderr rather than not start
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("ccm-agentd: %(message)s"))
        print(
            f"ccm-agentd: cannot open {paths.log_dir(root)}/agentd.log ({exc}); logging here", file=sys.stderr
        )
    top.handlers[:] = [handler]
    if sys.stderr.isatty() and not isinstance(handler, logging.StreamHandler):
        console = logging.StreamHandler()
        console.setFormatter(logging.Formatter("ccm-agentd: %(message)s"))
        console.setLevel(logging.INFO)
        top.addHandler(console)


class Health:
    def __init__(self, root: str, started: float) -> None:
        self.root = root
        self.started = started
        self.next_heartbeat = 0.0
        self.metrics = Metrics()
        self.config_errors: list[str] = []
        self.notifier = ""
        self._warned = 0.0

    def _failed(self, what: str, exc: OSError) -> None:
        now = time.monotonic()
        if now - self._warned >= WARN_EVERY_S:
            self._warned = now
            log.warning("cannot write %s: %s (the daemon keeps running and tries again)", what, exc)

    def write(self, state: str, facts: dict[str, Any]) -> None:
        doc = {
            "v": 1, "pid": os.getpid(), "state": state, "started_at": record.iso_utc(self.started),
            "heartbeat_at": record.iso_utc(time.time()), "state_dir": self.root,
            "config_errors": self.config_errors, "notifications": self.notifier, **facts,
        }  # fmt: skip
        try:
            paths.ensure_dir(agentd_dir(self.root))
            fileio.atomic_write(paths.agentd_health_path(self.root), fileio.encode_line(doc))
        except OSError as exc:
            self._failed("agentd/health.json", exc)

    def _counter(self, name: str, total: int, labels: dict[str, str] | None, help: str) -> None:
        """Feed a Prometheus counter from one of our running totals."""
        current = self.metrics.value(name, labels) or 0.0
        self.metrics.inc(name, max(0.0, total - current), labels, help=help)

    def write_metrics(
        self, statuses: Iterable[dict[str, Any]], pending: int, counts: dict[str, int],
        notifier: Notifier | None, lag_ms: float, jobs: list[Job],
    ) -> None:  # fmt: skip
        m = self.metrics
        statuses = list(statuses)
        m.clear_gauge("ccm_sessions")
        for state, n in {**dict.fromkeys(STATES, 0), **by_state(statuses)}.items():
            m.set_gauge("ccm_sessions", n, {"state": state}, help="Sessions by state.")
        m.set_gauge("ccm_queue_pending", pending, help="Queued prompts not yet delivered.")
        for outcome in ("typed", "delivered", "retry", "unconfirmed", "failed", "refused"):
            self._counter("ccm_deliveries_total", counts.get(outcome, 0), {"outcome": outcome},
                          "Delivery steps by outcome.")  # fmt: skip
        continues = sum(int((st.get("watch") or {}).get("continues") or 0) for st in statuses)
        m.set_gauge(
            "ccm_watch_continues", continues, help="Auto-continues in the current runs of all sessions."
        )
        self._counter("ccm_stalls_total", counts.get("state_stalled", 0), None, "Sessions marked stalled.")
        if notifier is not None:
            for outcome in ("sent", "failed", "deduped"):
                total = getattr(notifier, outcome, 0)
                self._counter(
                    "ccm_notifications_total", total, {"outcome": outcome}, "Notifications by outcome."
                )
        for job in jobs:
            job.metrics(m)
        m.set_gauge("ccm_agentd_loop_lag_seconds", lag_ms / 1000.0, help="How late the loop last woke.")
        m.set_gauge("ccm_agentd_heartbeat_timestamp_seconds", time.time(), help="Last heartbeat.")
        try:
            m.write(os.path.join(agentd_dir(self.root), "metrics.prom"))
        except OSError as exc:
            self._failed("agentd/metrics.prom", exc)
