"""A private PostgreSQL cluster for the tests: initdb in a temp dir, a unix socket there and a free TCP port
on 127.0.0.1, trust authentication (nothing but this machine can reach it), stopped at the end.

``pg_cluster`` (session-scoped) is shared by the whole run; ``pg_dsn`` gives each test a fresh empty
database on it (``CREATE DATABASE``: a few ms), dropped afterwards. A test that stops the server (an
outage) makes its own with ``pg_private``.

PostgreSQL refuses to run as root, and the tests often do (CI, containers): then the server runs as the
unprivileged ``nobody`` (a data dir it owns, in a fresh ``/tmp`` dir since pytest's tmp dirs are private to
root). The server is a direct child of pytest that gets SIGQUIT if pytest dies (Linux ``PR_SET_PDEATHSIG``),
so a killed test run leaves no server behind.
"""

from __future__ import annotations

import ctypes
import glob
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

START_TIMEOUT_S = 30.0
# Durability is worthless for a throwaway cluster and costs seconds per test run.
SERVER_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "32MB",
    "log_min_messages": "warning",
}
_counter = itertools.count(1)


def _unavailable(message: str) -> pytest.OutcomeException:
    """In CI a missing PostgreSQL is a failure (a skip would hide that nothing ran); locally a skip."""
    if os.environ.get("CI"):
        return pytest.fail.Exception(message, pytrace=False)
    return pytest.skip.Exception(message)


def import_psycopg() -> ModuleType:
    """psycopg for a test module: a missing [fleet] extra skips the module locally, fails it in CI."""
    if os.environ.get("CI"):
        import psycopg

        return psycopg
    return pytest.importorskip(
        "psycopg", reason="the fleet extra is not installed: pip install -e '.[fleet]'"
    )


def find_bindir() -> str | None:
    """The server's bin dir: $CCM_TEST_PG_BINDIR, `pg_config --bindir`, the newest /usr/lib/postgresql/*/bin
    (Debian keeps initdb off PATH), or the dir of an initdb on PATH (Homebrew)."""
    candidates: list[str] = []
    if os.environ.get("CCM_TEST_PG_BINDIR"):
        candidates.append(os.environ["CCM_TEST_PG_BINDIR"])
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10)
            candidates.append(out.stdout.strip())
        except (OSError, subprocess.TimeoutExpired):
            pass
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2] or 0))
    candidates.extend(reversed(versions))
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(os.path.dirname(os.path.realpath(initdb)))
    for bindir in candidates:
        if bindir and os.access(os.path.join(bindir, "initdb"), os.X_OK):
            return bindir
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _die_with_parent() -> None:
    """In the server's child process: SIGQUIT (immediate shutdown) when pytest dies."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGQUIT)  # PR_SET_PDEATHSIG


class PgCluster:
    """One initdb'd data dir and, while started, its postmaster."""

    def __init__(self, bindir: str, base: str) -> None:
        self.bindir = bindir
        self.base = base  # owned by the server's user: data/, the socket, server.log
        self.datadir = os.path.join(base, "data")
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.run_as: dict[str, Any] = {}
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            self.run_as = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}

    @classmethod
    def create(cls) -> PgCluster:
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise _unavailable("psycopg is not installed: pip install -e '.[test,fleet]'") from None
        bindir = find_bindir()
        if bindir is None:
            raise _unavailable(
                "PostgreSQL not found: run `sh install/dev-setup.sh` (apt: postgresql) "
                "or set CCM_TEST_PG_BINDIR"
            )
        # Not pytest's tmp dir: it is 0700 root's, so `nobody` could not reach the data dir under it. Short,
        # too: a unix socket path must fit in 107 bytes.
        base = tempfile.mkdtemp(prefix="ccm-pg-")
        cluster = cls(bindir, base)
        if cluster.run_as:
            os.chown(base, cluster.run_as["user"], cluster.run_as["group"])
        cluster._run("initdb", "-D", cluster.datadir, "-U", "postgres", "--auth=trust", "-E", "UTF8",
                     "--no-locale", "--no-sync")  # fmt: skip
        return cluster

    def _run(self, tool: str, *args: str) -> None:
        out = subprocess.run(
            [os.path.join(self.bindir, tool), *args], capture_output=True, text=True, timeout=120,
            env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"}, cwd=self.base, **self.run_as,
        )  # fmt: skip
        if out.returncode != 0:
            raise RuntimeError(f"{tool} failed ({out.returncode}): {out.stderr.strip()[-2000:]}")

    # --- server ---------------------------------------------------------------------------------------

    def start(self) -> PgCluster:
        """Start the postmaster and wait until it accepts connections. A taken port (another test run took
        the free one meanwhile) is retried on a new one; a restart after ``stop`` keeps the port."""
        for _ in range(3):
            settings = {**SERVER_SETTINGS, "port": str(self.port), "listen_addresses": "127.0.0.1",
                        "unix_socket_directories": self.base}  # fmt: skip
            args = [os.path.join(self.bindir, "postgres"), "-D", self.datadir]
            for key, value in settings.items():
                args += ["-c", f"{key}={value}"]
            log = open(os.path.join(self.base, "server.log"), "ab")  # noqa: SIM115 (the child keeps it)
            try:
                self.proc = subprocess.Popen(
                    args, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=self.base,
                    env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"}, preexec_fn=_die_with_parent, **self.run_as,
                )  # fmt: skip
            finally:
                log.close()
            if self._wait_ready():
                return self
            self.stop()
            self.port = free_port()
        raise RuntimeError(f"postgres did not start:\n{self.log_tail()}")

    def _wait_ready(self) -> bool:
        import psycopg

        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            try:
                psycopg.connect(self.dsn(), connect_timeout=2).close()
                return True
            except psycopg.OperationalError:
                time.sleep(0.05)
        return False

    def stop(self) -> None:
        """Fast shutdown (SIGINT): connections are ended, the server exits cleanly."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self.proc = None

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def log_tail(self, n: int = 4000) -> str:
        try:
            return Path(self.base, "server.log").read_text(errors="replace")[-n:]
        except OSError:
            return ""

    # --- connecting -----------------------------------------------------------------------------------

    def dsn(self, dbname: str = "postgres", user: str = "postgres", *, tcp: bool = False) -> str:
        host = "127.0.0.1" if tcp else self.base
        return f"host={host} port={self.port} dbname={dbname} user={user}"

    def execute(self, sql: str, dbname: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(self.dsn(dbname), autocommit=True) as conn:
            conn.execute(sql.encode())

    def create_database(self, prefix: str = "t") -> str:
        name = f"{prefix}_{os.getpid()}_{next(_counter)}"
        self.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return name

    def drop_database(self, name: str) -> None:
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    cluster = PgCluster.create()
    try:
        yield cluster.start()
    finally:
        cluster.destroy()


@pytest.fixture
def pg_dsn(pg_cluster: PgCluster) -> Iterator[str]:
    """A fresh, empty database for this test; the superuser's DSN (unix socket)."""
    name = pg_cluster.create_database()
    yield pg_cluster.dsn(name)
    pg_cluster.drop_database(name)


@pytest.fixture
def pg_private() -> Iterator[Callable[[], PgCluster]]:
    """Clusters of this test's own (started), for tests that stop the server; destroyed at the end."""
    made: list[PgCluster] = []

    def make() -> PgCluster:
        cluster = PgCluster.create()
        made.append(cluster)
        return cluster.start()

    yield make
    for cluster in made:
        cluster.destroy()
