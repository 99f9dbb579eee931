"""Connecting to the fleet database, and keeping every call on it bounded in time.

- connecting itself is ccm_hooks/statedir/fleetdb.py's (the CLI's readers connect alike): TLS by default
  for a non-local host, a connect timeout, TCP keepalives and ``tcp_user_timeout`` (a dead peer is noticed
  in seconds, not after the kernel's 15 minutes), a server-side statement timeout.
- ``Deadline``: a peer that still acknowledges packets but never answers (a stopped proxy, a hung server)
  would block a call forever whatever the TCP settings; a helper thread shuts the socket down when a call
  outlives its deadline, so it fails at once and the link reconnects.
- ``Backoff``: reconnect delays that grow and are jittered, so machines that lost the database together do
  not all come back in the same second.
- ``probe_listen``: a transaction pooler accepts LISTEN and then never delivers a notification; a NOTIFY to
  ourselves tells the difference.
"""

from __future__ import annotations

import os
import random
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg


def error_line(exc: BaseException) -> str:
    """One line about a database error, for logs and health: the last line libpq gave, never the DSN."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[-1] if text else ''}"[:300]


class Backoff:
    """Delays for reconnecting: doubling from ``base`` up to ``cap``, each drawn from its upper half."""

    def __init__(self, base: float = 0.5, cap: float = 15.0, rng: random.Random | None = None) -> None:
        self.base, self.cap = base, cap
        self.failures = 0
        self.rng = rng or random.Random()

    def next(self) -> float:
        high = min(self.cap, self.base * 2**self.failures)
        self.failures += 1
        return self.rng.uniform(high / 2, high)

    def reset(self) -> None:
        self.failures = 0


class Deadline:
    """Bounds database calls: ``with deadline.on(conn, 10): ...`` shuts the connection's socket down if the
    block is still running after 10 s. One helper thread, idle unless armed."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._fd = -1
        self._at = 0.0
        self._closed = False
        self.fired = 0
        self._thread = threading.Thread(target=self._run, name="ccm-fleet-deadline", daemon=True)
        self._thread.start()

    @contextmanager
    def on(self, conn: psycopg.Connection[Any], seconds: float) -> Iterator[None]:
        with self._cond:
            self._fd, self._at = conn.fileno(), time.monotonic() + seconds
            self._cond.notify()
        try:
            yield
        finally:
            with self._cond:
                self._fd = -1

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                if self._fd < 0:
                    self._cond.wait()
                    continue
                left = self._at - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
                # Still armed past its time: end the call. shutdown() acts on the socket itself, so the
                # blocked recv in the other thread returns at once; the fd stays open (the link closes it).
                try:
                    s = socket.socket(fileno=os.dup(self._fd))
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    finally:
                        s.close()
                except OSError:
                    pass
                self.fired += 1
                self._fd = -1

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(5)


PROBE_CHANNEL = "ccm_probe"


def probe_listen(conn: psycopg.Connection[Any], timeout: float = 2.0) -> bool:
    """Whether notifications reach this connection: NOTIFY ourselves and wait for it."""
    token = f"{os.getpid()}-{time.monotonic_ns()}"
    conn.execute(f"LISTEN {PROBE_CHANNEL}")
    try:
        conn.execute("SELECT pg_notify(%s, %s)", (PROBE_CHANNEL, token))
        for note in conn.notifies(timeout=timeout):
            if note.channel == PROBE_CHANNEL and note.payload == token:
                return True
        return False
    finally:
        conn.execute(f"UNLISTEN {PROBE_CHANNEL}")
