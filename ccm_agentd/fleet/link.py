"""The link: the fleet job's one connection to the database, run in a thread of its own so the daemon's
loop never waits on the network (a dead database, a partition, a slow catch-up).

The thread sleeps in ``select`` on the connection's socket (LISTEN ccm_tasks) and a control pipe the
daemon writes to when sessions changed, with a timeout that is its next duty: a renewal, a heartbeat, the
slow poll, the rate bound of a catch-up. Each wake-up it does, in this order: renew the leases it holds,
send reports, ship one batch of records, heartbeat, claim. It tells the daemon what happened through
messages and a pipe the daemon selects on (``fileno``).

When a call fails the connection is dropped and re-made after a backoff with jitter; after every
(re)connect it catches up: every log whose size moved is shipped, the tasks this system holds in the
database are compared with its lease files, and a claim pass runs.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ccm_agentd.fleet import claiming, connection, migrations, shipping
from ccm_agentd.fleet.fence import HELD, RENEW_FRACTION, LeaseFiles, boot_clock
from ccm_hooks.statedir import fleetdb
from ccm_hooks.statedir.fleetconf import FleetSettings

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger("ccm_agentd.fleet")

CALL_TIMEOUT_S = 15.0  # any one round of database calls (less for short leases); then the socket is shut
CHANNEL = "ccm_tasks"


# --- messages to the daemon's thread ---------------------------------------------------------------------


@dataclass(frozen=True)
class Claimed:
    row: dict[str, Any]


@dataclass(frozen=True)
class Lost:
    task_id: str
    attempt: int
    why: str


@dataclass(frozen=True)
class CancelAsked:
    task_id: str
    attempt: int


@dataclass(frozen=True)
class Reported:
    task_id: str
    attempt: int
    state: str  # what was reported
    written: str | None  # what the database wrote, None when it refused (a stale attempt)


Message = Claimed | Lost | CancelAsked | Reported


@dataclass(frozen=True)
class Report:
    task_id: str
    attempt: int
    state: str
    reason: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)


class Link:
    def __init__(self, root: str, s: FleetSettings, dsn: str, leases: LeaseFiles, version: str) -> None:
        self.root, self.s, self.dsn, self.leases, self.version = root, s, dsn, leases, version
        self._lock = threading.Lock()
        self._ctl_r, self._ctl_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._out_r, self._out_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._out: deque[Message] = deque()
        self._closing = False
        # Inputs from the daemon's thread (under _lock).
        self._changed: set[str] = set()
        self._rescan = True
        self._reports: deque[Report] = deque()
        self._capacity: dict[str, int] = {}
        self._capacity_gen = 0
        self._agents: tuple[int | None, int] = (None, 0)  # (max_agents, agents running): the systems row
        # The thread's own state.
        self.conn: psycopg.Connection[Any] | None = None
        self.outbox: shipping.Outbox | None = None
        self.backoff = connection.Backoff()
        self.deadline = connection.Deadline()
        # Several renewals must fit before the daemon fences at 2/3 of the lease, even when calls hang.
        self.call_timeout = min(CALL_TIMEOUT_S, max(2.0, s.lease_s / 5))
        self._claim_wanted = True
        self._cancel_told: set[tuple[str, int]] = set()
        self._next = {"renew": 0.0, "heartbeat": 0.0, "poll": 0.0, "ship": 0.0, "connect": 0.0}
        self._started = time.time()
        self.stats: dict[str, Any] = {"connected": False, "error": None, "listen": None, "reconnects": 0,
                                      "shipped": 0, "resent": 0, "lag_s": None, "claimed": 0, "renewals": 0,
                                      "backlog_bytes": 0, "backlog_sessions": 0, "schema": None}  # fmt: skip
        self._thread = threading.Thread(target=self._run, name="ccm-fleet-link", daemon=True)

    # --- the daemon's side ------------------------------------------------------------------------------

    def start(self) -> Link:
        self._thread.start()
        return self

    def fileno(self) -> int:
        return self._out_r

    def hint(self, changed: Iterable[str], rescan: bool = False) -> None:
        """Sessions whose status changed (their logs grew); ``rescan``: look at every log's size."""
        with self._lock:
            before = len(self._changed), self._rescan
            self._changed.update(changed)
            self._rescan = self._rescan or rescan
            if (len(self._changed), self._rescan) != before:
                self._poke()

    def report(self, r: Report) -> None:
        with self._lock:
            self._reports.append(r)
            self._poke()

    def capacity_generation(self) -> int:
        with self._lock:
            return self._capacity_gen

    def set_capacity(
        self, capacity: Mapping[str, int], gen: int, max_agents: int | None, agents: int
    ) -> None:
        """Free slots per project, computed by the daemon's thread when the claim generation was ``gen``;
        ignored if the link claimed meanwhile (it would count those claims twice as free)."""
        with self._lock:
            self._agents = (max_agents, agents)
            if gen != self._capacity_gen:
                return
            grew = any(n > self._capacity.get(p, 0) for p, n in capacity.items())
            self._capacity = dict(capacity)
            if grew:
                self._claim_wanted = True
                self._poke()

    def drain(self) -> list[Message]:
        try:
            while os.read(self._out_r, 4096):
                pass
        except BlockingIOError:
            pass
        with self._lock:
            out = list(self._out)
            self._out.clear()
        return out

    def health(self) -> dict[str, Any]:
        with self._lock:
            return dict(self.stats)

    def close(self) -> None:
        with self._lock:
            self._closing = True
            self._poke()
        self._thread.join(self.call_timeout + 5)
        self.deadline.close()
        for fd in (self._ctl_r, self._ctl_w, self._out_r, self._out_w):
            os.close(fd)

    def _poke(self) -> None:
        try:
            os.write(self._ctl_w, b"x")
        except BlockingIOError:
            pass  # already woken

    def _post(self, msg: Message) -> None:
        with self._lock:
            self._out.append(msg)
        try:
            os.write(self._out_w, b"x")
        except BlockingIOError:
            pass

    # --- the thread -------------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._closing:
            try:
                if self.conn is None:
                    self._connect()
                else:
                    self._cycle()
            except Exception as exc:
                self._drop(exc)
        if self.conn is not None:
            self.conn.close()

    def _drop(self, exc: BaseException) -> None:
        import psycopg

        if isinstance(exc, SchemaBehind):
            delay = self.s.poll_s
            if self.stats["error"] != str(exc):
                log.error("%s", exc)
        else:
            if not isinstance(exc, psycopg.Error):
                log.exception("fleet link: unexpected error")
            delay = self.backoff.next()
        if self.conn is not None:
            log.warning("fleet database lost (%s); reconnecting in %.1f s", connection.error_line(exc), delay)
            try:
                self.conn.close()
            except Exception:
                pass
            self.conn = None
        with self._lock:
            error = str(exc) if isinstance(exc, SchemaBehind) else connection.error_line(exc)
            self.stats.update(connected=False, error=error)
        self._next["connect"] = boot_clock() + delay

    def _wait(self, timeout: float, conn_fd: int | None) -> list[int]:
        fds = [self._ctl_r] + ([conn_fd] if conn_fd is not None else [])
        ready, _, _ = select.select(fds, [], [], max(0.0, timeout))
        if self._ctl_r in ready:
            try:
                while os.read(self._ctl_r, 4096):
                    pass
            except BlockingIOError:
                pass
        return ready

    def _connect(self) -> None:
        wait = self._next["connect"] - boot_clock()
        if wait > 0:
            self._wait(wait, None)
            return
        app = f"ccm-agentd {self.s.system}"
        conn = fleetdb.connect(self.dsn, app)
        self.conn = conn
        with self.deadline.on(conn, self.call_timeout):
            have = migrations.version(conn)
            if have < migrations.latest():
                with self._lock:
                    self.stats["schema"] = have
                raise SchemaBehind(f"the fleet database is at schema {have}, this ccm needs "
                                   f"{migrations.latest()}: run `ccm-agentd fleet init`")  # fmt: skip
            row = conn.execute("SELECT fleet_id::text FROM ccm.meta").fetchone()
            fleet_id = str(row[0]) if row else ""
            listen = connection.probe_listen(conn)
            conn.execute(f"LISTEN {CHANNEL}")
            self._heartbeat(conn)  # the systems row first: sessions refer to it
        if not listen:
            log.warning("fleet: notifications do not reach this connection (a transaction pooler?); "
                        "new tasks are seen at the slow poll, every %.0f s", self.s.poll_s)  # fmt: skip
        if self.outbox is None or self.outbox.fleet_id != fleet_id:
            self.outbox = shipping.Outbox(self.root, fleet_id)
        with self._lock:
            self._rescan = True
            self._claim_wanted = True
            self.stats.update(connected=True, error=None, listen=listen, schema=have,
                              reconnects=self.stats["reconnects"] + 1, connected_at=time.time())  # fmt: skip
        self._next.update(renew=0.0, poll=0.0)
        log.info("fleet database connected as system %s (LISTEN %s)", self.s.system, "ok" if listen else "no")
        self._adopt()

    def _cycle(self) -> None:
        conn = self.conn
        assert conn is not None
        with self.deadline.on(conn, self.call_timeout):
            self._notifications(conn)  # what arrived during the last round's calls
        self._wait(self._due() - boot_clock(), conn.fileno())
        with self.deadline.on(conn, self.call_timeout):
            self._notifications(conn)
            now = boot_clock()
            if self._held() and now >= self._next["renew"]:
                self._renew(conn)
            self._send_reports(conn)
            if now >= self._next["ship"]:
                self._ship(conn)
            if now >= self._next["heartbeat"]:
                self._heartbeat(conn)
            if now >= self._next["poll"]:
                self._claim_wanted = True
                self._next["poll"] = now + self.s.poll_s
            with self._lock:
                wanted = self._claim_wanted and self._has_capacity()
            if wanted:
                self._claim(conn)
        self.backoff.reset()  # a whole round worked: the next failure starts the delays over

    def _due(self) -> float:
        """The link's next duty, on the boot clock."""
        now = boot_clock()
        dues = [self._next["heartbeat"], self._next["poll"]]
        if self._held():
            dues.append(self._next["renew"])
        with self._lock:
            if self._reports or (self._claim_wanted and self._has_capacity()):
                dues.append(now)
            if self._changed or self._rescan:
                dues.append(self._next["ship"])
        return min(dues)

    def _notifications(self, conn: psycopg.Connection[Any]) -> None:
        import json

        for note in conn.notifies(timeout=0):
            try:
                body = json.loads(note.payload)
            except ValueError:
                continue
            if body.get("event") == "queued":
                self._claim_wanted = True
            elif body.get("event") == "cancel" and body.get("system") == self.s.system:
                self._next["renew"] = 0.0  # the renewal says which attempt is to be cancelled

    # --- leases -----------------------------------------------------------------------------------------

    def _held(self) -> dict[str, int]:
        return {k: v.attempt for k, v in self.leases.snapshot().items() if v.status == HELD}

    def _renew(self, conn: psycopg.Connection[Any]) -> None:
        held = self._held()
        sent = boot_clock()
        got = claiming.renew(conn, self.s.system, held, self.s.lease_s)
        self._next["renew"] = sent + self.s.lease_s * RENEW_FRACTION
        for task_id, attempt in held.items():
            r = got.get(task_id)
            if r is None:
                self.leases.lost(task_id, attempt)
                self._post(Lost(task_id, attempt, "the database refused the renewal: the lease expired or a "
                                                  "newer attempt holds the task"))  # fmt: skip
                continue
            self.leases.renewed(task_id, attempt, sent, r.lease_until.isoformat(), system=self.s.system,
                                lease_s=self.s.lease_s)  # fmt: skip
            if r.cancel_requested and (task_id, attempt) not in self._cancel_told:
                self._cancel_told.add((task_id, attempt))
                self._post(CancelAsked(task_id, attempt))
        with self._lock:
            self.stats["renewals"] += 1

    def _adopt(self) -> None:
        """After a (re)connect: tasks the database says we hold without a local task (a crash between a
        claim's commit and its lease file, or before its local task was made) are announced again; lease
        files the database no longer backs are found lost by the renewal that follows at once."""
        assert self.conn is not None
        with self.deadline.on(self.conn, self.call_timeout):
            rows = claiming.held_by(self.conn, self.s.system)
        leases = self.leases.snapshot()
        for row in rows:
            lease = leases.get(row["id"])
            unmade = lease is not None and lease.attempt == row["attempt"] and not lease.local_id
            if lease is None or lease.attempt < row["attempt"] or (unmade and lease.status == HELD):
                sent = boot_clock()  # renewed at once below: until then the database's expiry stands
                if self._record_claim(row, sent):
                    self._post(Claimed(row))
        self._next["renew"] = 0.0

    def _record_claim(self, row: Mapping[str, Any], sent: float) -> bool:
        until = row["lease_until"].isoformat()
        return self.leases.renewed(row["id"], row["attempt"], sent, until, system=self.s.system,
                                   lease_s=self.s.lease_s, project=row["project"])  # fmt: skip

    def _send_reports(self, conn: psycopg.Connection[Any]) -> None:
        while True:
            with self._lock:
                if not self._reports:
                    return
                r = self._reports[0]
            written = claiming.report(conn, self.s.system, r.task_id, r.attempt, r.state, r.reason, r.fields)
            with self._lock:
                self._reports.popleft()
            self._post(Reported(r.task_id, r.attempt, r.state, written))

    # --- claims -----------------------------------------------------------------------------------------

    def _has_capacity(self) -> bool:
        return self.s.claim and any(n > 0 for n in self._capacity.values())

    def _claim(self, conn: psycopg.Connection[Any]) -> None:
        with self._lock:
            capacity = dict(self._capacity)
            self._claim_wanted = False
        limit = sum(n for n in capacity.values() if n > 0)
        sent = boot_clock()
        rows = claiming.claim(conn, self.s, capacity, limit)
        for row in rows:
            self._record_claim(row, sent)
            capacity[row["project"]] -= 1
            log.info(
                "fleet: claimed task %s (attempt %d, project %s)", row["id"], row["attempt"], row["project"]
            )
            self._post(Claimed(row))
        if rows:
            with self._lock:
                self._capacity = capacity
                self._capacity_gen += 1
                self.stats["claimed"] += len(rows)
            self._claim_wanted = True  # maybe more: claim again until nothing or no room is left

    # --- shipping and the systems row -------------------------------------------------------------------

    def _ship(self, conn: psycopg.Connection[Any]) -> None:
        assert self.outbox is not None
        started = boot_clock()
        with self._lock:
            wanted = set(self._changed)
            self._changed.clear()
            rescan, self._rescan = self._rescan, False
        if rescan:
            wanted.update(self.outbox.moved())
        if not wanted:
            return
        batch, more = self.outbox.read_batch(sorted(wanted), self.s.batch)
        try:
            new = shipping.ship(conn, self.s.system, batch) if batch.sessions else 0
        except BaseException:
            with self._lock:
                self._changed.update(wanted)  # nothing moved: all of it again after the reconnect
            raise
        self.outbox.committed(batch)
        n = batch.records
        oldest = batch.oldest_ts()
        with self._lock:
            self._changed.update(more)
            self.stats["shipped"] += new
            self.stats["resent"] += n - new
            if oldest is not None:
                self.stats["lag_s"] = round(max(0.0, time.time() - oldest.timestamp()), 3)
            self.stats["backlog_bytes"], self.stats["backlog_sessions"] = self.outbox.backlog()
        # The rate bound: this batch's n records take n / rate seconds of the budget, counted from its start
        # (the time spent reading and writing it is part of that budget, not added to it).
        self._next["ship"] = started + n / self.s.ship_rate

    def _heartbeat(self, conn: psycopg.Connection[Any]) -> None:
        with self._lock:
            max_agents, agents = self._agents
            health = {k: self.stats[k] for k in ("shipped", "backlog_bytes", "lag_s", "listen", "reconnects")}
        claiming.heartbeat(conn, self.s, version=self.version, max_agents=max_agents, agents=agents,
                           health=health, started_at=self._started)  # fmt: skip
        self._next["heartbeat"] = boot_clock() + self.s.heartbeat_s


class SchemaBehind(Exception):
    """The database has not been migrated to what this ccm needs."""
