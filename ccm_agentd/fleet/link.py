"""The link: the fleet job's one connection to the database, run in a thread of its own so the daemon's
loop never waits on the network (a dead database, a partition, a slow catch-up).

The thread sleeps in ``select`` on the connection's socket (LISTEN ccm_tasks) and a control pipe the
daemon writes to when sessions changed, with a timeout that is its next duty: a renewal, a heartbeat, the
slow poll, the rate bound of a catch-up. Each wake-up it does, in this order: renew the leases it holds,
send reports, ship one batch of records, heartbeat, claim. It meets the daemon's thread in a Mailbox
(mailbox.py): requests in, messages out, a pipe each way.

When a call fails the connection is dropped and re-made after a backoff with jitter; after every
(re)connect it catches up: every log whose size moved is shipped, the tasks this system holds in the
database are compared with its lease files, and a claim pass runs.
"""

from __future__ import annotations

import json
import logging
import select
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ccm_agentd.fleet import claiming, connection, migrations, shipping
from ccm_agentd.fleet.fence import HELD, RENEW_FRACTION, LeaseFiles, boot_clock
from ccm_agentd.fleet.mailbox import CancelAsked, Claimed, Lost, Mailbox, Reported
from ccm_hooks.statedir import fleetdb
from ccm_hooks.statedir.fleetconf import FleetSettings

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger("ccm_agentd.fleet")

CALL_TIMEOUT_S = 15.0  # any one round of database calls (less for short leases); then the socket is shut
CHANNEL = "ccm_tasks"


class Link:
    def __init__(self, root: str, s: FleetSettings, dsn: str, leases: LeaseFiles, version: str) -> None:
        self.root, self.s, self.dsn, self.leases, self.version = root, s, dsn, leases, version
        self.mail = Mailbox()
        self.conn: psycopg.Connection[Any] | None = None
        self.outbox: shipping.Outbox | None = None
        self.backoff = connection.Backoff()
        self.deadline = connection.Deadline()
        # Several renewals must fit before the daemon fences at 2/3 of the lease, even when calls hang.
        self.call_timeout = min(CALL_TIMEOUT_S, max(2.0, s.lease_s / 5))
        self._cancel_told: set[tuple[str, int]] = set()
        self._next = {"renew": 0.0, "heartbeat": 0.0, "poll": 0.0, "ship": 0.0, "connect": 0.0}
        self._started = time.time()
        self._thread = threading.Thread(target=self._run, name="ccm-fleet-link", daemon=True)

    def start(self) -> Link:
        self._thread.start()
        return self

    def close(self) -> None:
        self.mail.close()
        self._thread.join(self.call_timeout + 5)
        self.deadline.close()
        self.mail.close_fds()

    # --- the thread -------------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self.mail.closing:
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
            if self.mail.health()["error"] != str(exc):
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
        error = str(exc) if isinstance(exc, SchemaBehind) else connection.error_line(exc)
        self.mail.update(connected=False, error=error)
        self._next["connect"] = boot_clock() + delay

    def _wait(self, timeout: float, conn_fd: int | None) -> list[int]:
        fds = [self.mail.link_fd] + ([conn_fd] if conn_fd is not None else [])
        ready, _, _ = select.select(fds, [], [], max(0.0, timeout))
        if self.mail.link_fd in ready:
            self.mail.woken()
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
                self.mail.update(schema=have)
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
        with self.mail.lock:
            self.mail.rescan = self.mail.claim_wanted = True
            reconnects = self.mail.stats["reconnects"] + 1
            self.mail.stats.update(connected=True, error=None, listen=listen, schema=have,
                                   connected_at=time.time(), reconnects=reconnects)  # fmt: skip
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
                self.mail.claim_wanted = True
                self._next["poll"] = now + self.s.poll_s
            if self._claim_due():
                self._claim(conn)
        self.backoff.reset()  # a whole round worked: the next failure starts the delays over

    def _due(self) -> float:
        """The link's next duty, on the boot clock."""
        now = boot_clock()
        dues = [self._next["heartbeat"], self._next["poll"]]
        if self._held():
            dues.append(self._next["renew"])
        if self.mail.next_report() is not None or self._claim_due():
            dues.append(now)
        with self.mail.lock:
            if self.mail.changed or self.mail.rescan:
                dues.append(self._next["ship"])
        return min(dues)

    def _notifications(self, conn: psycopg.Connection[Any]) -> None:
        for note in conn.notifies(timeout=0):
            try:
                body = json.loads(note.payload)
            except ValueError:
                continue
            if body.get("event") == "queued":
                self.mail.claim_wanted = True
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
                why = "the database refused the renewal: the lease expired or a newer attempt holds the task"
                self.mail.post(Lost(task_id, attempt, why))
                continue
            self.leases.renewed(task_id, attempt, sent, r.lease_until.isoformat(), system=self.s.system,
                                lease_s=self.s.lease_s)  # fmt: skip
            if r.cancel_requested and (task_id, attempt) not in self._cancel_told:
                self._cancel_told.add((task_id, attempt))
                self.mail.post(CancelAsked(task_id, attempt))
        with self.mail.lock:
            self.mail.stats["renewals"] += 1

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
                    self.mail.post(Claimed(row))
        self._next["renew"] = 0.0

    def _record_claim(self, row: Mapping[str, Any], sent: float) -> bool:
        until = row["lease_until"].isoformat()
        return self.leases.renewed(row["id"], row["attempt"], sent, until, system=self.s.system,
                                   lease_s=self.s.lease_s, project=row["project"])  # fmt: skip

    def _send_reports(self, conn: psycopg.Connection[Any]) -> None:
        while (r := self.mail.next_report()) is not None:
            written = claiming.report(conn, self.s.system, r.task_id, r.attempt, r.state, r.reason, r.fields)
            self.mail.report_done()
            self.mail.post(Reported(r.task_id, r.attempt, r.state, written))

    # --- claims -----------------------------------------------------------------------------------------

    def _claim_due(self) -> bool:
        with self.mail.lock:
            return self.s.claim and self.mail.claim_wanted and self.mail.has_capacity()

    def _claim(self, conn: psycopg.Connection[Any]) -> None:
        with self.mail.lock:
            capacity = dict(self.mail.capacity)
            self.mail.claim_wanted = False
        limit = sum(n for n in capacity.values() if n > 0)
        sent = boot_clock()
        rows = claiming.claim(conn, self.s, capacity, limit)
        for row in rows:
            self._record_claim(row, sent)
            capacity[row["project"]] -= 1
            log.info(
                "fleet: claimed task %s (attempt %d, project %s)", row["id"], row["attempt"], row["project"]
            )
            self.mail.post(Claimed(row))
        if rows:
            self.mail.claimed(capacity, len(rows))
            self.mail.claim_wanted = True  # maybe more: claim again until nothing or no room is left

    # --- shipping and the systems row -------------------------------------------------------------------

    def _ship(self, conn: psycopg.Connection[Any]) -> None:
        assert self.outbox is not None
        started = boot_clock()
        wanted, rescan = self.mail.take_changed()
        if rescan:
            wanted.update(self.outbox.moved())
        if not wanted:
            return
        batch, more = self.outbox.read_batch(sorted(wanted), self.s.batch)
        try:
            new = shipping.ship(conn, self.s.system, batch) if batch.sessions else 0
        except BaseException:
            self.mail.put_back(wanted)  # nothing moved: all of it again after the reconnect
            raise
        self.outbox.committed(batch)
        n = batch.records
        oldest = batch.oldest_ts()
        self.mail.put_back(more)
        backlog = self.outbox.backlog()
        with self.mail.lock:
            stats = self.mail.stats
            stats["shipped"] += new
            stats["resent"] += n - new
            if oldest is not None:
                stats["lag_s"] = round(max(0.0, time.time() - oldest.timestamp()), 3)
            stats["backlog_bytes"], stats["backlog_sessions"] = backlog
        # The rate bound: this batch's n records take n / rate seconds of the budget, counted from its start
        # (the time spent reading and writing it is part of that budget, not added to it).
        self._next["ship"] = started + n / self.s.ship_rate

    def _heartbeat(self, conn: psycopg.Connection[Any]) -> None:
        with self.mail.lock:
            max_agents, agents = self.mail.agents
            health = {
                k: self.mail.stats[k] for k in ("shipped", "backlog_bytes", "lag_s", "listen", "reconnects")
            }
        claiming.heartbeat(conn, self.s, version=self.version, max_agents=max_agents, agents=agents,
                           health=health, started_at=self._started)  # fmt: skip
        self._next["heartbeat"] = boot_clock() + self.s.heartbeat_s


class SchemaBehind(Exception):
    """The database has not been migrated to what this ccm needs."""
