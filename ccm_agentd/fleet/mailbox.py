"""Where the daemon's thread and the link's thread meet (link.py): what the daemon asks (sessions to ship,
reports to write, free slots to claim with) and what the link tells (claims, lost leases, cancels, the
outcome of each report, its health). One lock; each side is woken through a pipe it can select on.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# --- what the link tells the daemon ----------------------------------------------------------------------


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


# --- what the daemon asks the link to write --------------------------------------------------------------


@dataclass(frozen=True)
class Report:
    task_id: str
    attempt: int
    state: str
    reason: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)


def _pipe() -> tuple[int, int]:
    return os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)


def _wake(fd: int) -> None:
    try:
        os.write(fd, b"x")
    except BlockingIOError:
        pass  # already woken


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


class Mailbox:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.link_fd, self._link_w = _pipe()  # the link selects on link_fd
        self.daemon_fd, self._daemon_w = _pipe()  # the daemon selects on daemon_fd (the job's fileno)
        self._out: deque[Message] = deque()
        self.closing = False
        self.changed: set[str] = set()
        self.rescan = True
        self.reports: deque[Report] = deque()
        self.capacity: dict[str, int] = {}
        self.capacity_gen = 0  # grows with every claim
        self.agents: tuple[int | None, int] = (None, 0)  # (max_agents, agents running): the systems row
        self.claim_wanted = True
        self.stats: dict[str, Any] = {"connected": False, "error": None, "listen": None, "reconnects": 0,
                                      "shipped": 0, "resent": 0, "lag_s": None, "claimed": 0, "renewals": 0,
                                      "backlog_bytes": 0, "backlog_sessions": 0, "schema": None}  # fmt: skip

    # --- the daemon's side ------------------------------------------------------------------------------

    def hint(self, changed: Iterable[str], rescan: bool = False) -> None:
        """Sessions whose status changed (their logs grew); ``rescan``: look at every log's size."""
        with self.lock:
            before = len(self.changed), self.rescan
            self.changed.update(changed)
            self.rescan = self.rescan or rescan
            if (len(self.changed), self.rescan) != before:
                _wake(self._link_w)

    def report(self, r: Report) -> None:
        with self.lock:
            self.reports.append(r)
        _wake(self._link_w)

    def capacity_generation(self) -> int:
        with self.lock:
            return self.capacity_gen

    def set_capacity(
        self, capacity: Mapping[str, int], gen: int, max_agents: int | None, agents: int
    ) -> None:
        """Free slots per project, computed by the daemon's thread when the claim generation was ``gen``;
        ignored if the link claimed meanwhile (it would count those claims twice as free)."""
        with self.lock:
            self.agents = (max_agents, agents)
            if gen != self.capacity_gen:
                return
            grew = any(n > self.capacity.get(p, 0) for p, n in capacity.items())
            self.capacity = dict(capacity)
            if grew:
                self.claim_wanted = True
                _wake(self._link_w)

    def drain(self) -> list[Message]:
        _drain(self.daemon_fd)
        with self.lock:
            out = list(self._out)
            self._out.clear()
        return out

    def health(self) -> dict[str, Any]:
        with self.lock:
            return dict(self.stats)

    def close(self) -> None:
        with self.lock:
            self.closing = True
        _wake(self._link_w)

    # --- the link's side --------------------------------------------------------------------------------

    def post(self, msg: Message) -> None:
        with self.lock:
            self._out.append(msg)
        _wake(self._daemon_w)

    def woken(self) -> None:
        _drain(self.link_fd)

    def take_changed(self) -> tuple[set[str], bool]:
        with self.lock:
            changed, rescan = self.changed, self.rescan
            self.changed, self.rescan = set(), False
        return changed, rescan

    def put_back(self, sessions: Iterable[str]) -> None:
        """Sessions to read again (more than a batch held, or the batch failed)."""
        with self.lock:
            self.changed.update(sessions)

    def next_report(self) -> Report | None:
        with self.lock:
            return self.reports[0] if self.reports else None

    def report_done(self) -> None:
        with self.lock:
            self.reports.popleft()

    def claimed(self, left: Mapping[str, int], n: int) -> None:
        """``n`` tasks were claimed; ``left`` is what capacity remains (until the daemon recounts)."""
        with self.lock:
            self.capacity = dict(left)
            self.capacity_gen += 1
            self.stats["claimed"] += n

    def has_capacity(self) -> bool:
        return any(n > 0 for n in self.capacity.values())

    def update(self, **stats: Any) -> None:
        with self.lock:
            self.stats.update(stats)

    def close_fds(self) -> None:
        for fd in (self.link_fd, self._link_w, self.daemon_fd, self._daemon_w):
            os.close(fd)
