"""[fleet] in config.toml and the DSN: validated, never shown, TLS by default off this machine."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ccm_hooks.errors import CcmError
from ccm_hooks.statedir import fleetconf
from tests.pgcluster import import_psycopg

import_psycopg()  # fleetconf parses DSNs with psycopg's parser

SECRET = "s3cr3t-pa55"


def settings(root: Path, **table: object) -> fleetconf.FleetSettings:
    return fleetconf.settings_from(table, str(root))


def test_defaults_and_validation(tmp_path: Path) -> None:
    s = settings(tmp_path)
    assert s.system == fleetconf.default_system() and fleetconf.NAME_RE.fullmatch(s.system)
    assert s.dsn_file == str(tmp_path / "fleet.dsn") and s.claim and s.lease_s == 60.0
    s = settings(tmp_path, system="lap-1", labels={"gpu": "yes", "ram": 64}, projects={"web": "~/src/web"})
    assert s.labels == {"gpu": "yes", "ram": "64"}
    assert s.projects == {"web": os.path.expanduser("~/src/web")}
    for bad in ({"system": "../x"}, {"system": "a b"}, {"projects": {"web": "relative/path"}},
                {"projects": {"we b": "/x"}}, {"lease_s": 1}, {"claim": "yes"}, {"labels": ["gpu"]},
                {"sytem": "typo"}):  # fmt: skip
        with pytest.raises(CcmError):
            settings(tmp_path, **bad)


def test_project_of_picks_the_longest_mapped_clone(tmp_path: Path) -> None:
    (tmp_path / "web" / "sub").mkdir(parents=True)
    (tmp_path / "web-api").mkdir()
    s = settings(tmp_path, projects={"web": str(tmp_path / "web"), "api": str(tmp_path / "web-api")})
    assert s.project_of(str(tmp_path / "web" / "sub")) == "web"
    assert s.project_of(str(tmp_path / "web-api")) == "api"
    assert s.project_of(str(tmp_path)) is None


def test_the_dsn_comes_from_the_environment_or_a_private_file(tmp_path: Path) -> None:
    s = settings(tmp_path)
    with pytest.raises(CcmError, match="CCM_FLEET_DSN"):
        fleetconf.load_dsn(s, {})
    assert fleetconf.load_dsn(s, {"CCM_FLEET_DSN": " postgresql://x@h/db "}) == "postgresql://x@h/db"
    path = tmp_path / "fleet.dsn"
    path.write_text(f"# the fleet\npostgresql://me:{SECRET}@db.example.com/ccm\n")
    path.chmod(0o644)
    with pytest.raises(CcmError, match="chmod 600") as err:
        fleetconf.load_dsn(s, {})
    assert SECRET not in str(err.value)
    path.chmod(0o600)
    assert fleetconf.load_dsn(s, {}) == f"postgresql://me:{SECRET}@db.example.com/ccm"
    path.unlink()
    path.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(CcmError, match="plain file"):
        fleetconf.load_dsn(s, {})


def test_tls_is_required_for_a_remote_host_unless_the_dsn_says_otherwise() -> None:
    remote = f"postgresql://me:{SECRET}@db.example.com:5432/ccm"
    assert fleetconf.parse(fleetconf.effective_dsn(remote, {}))["sslmode"] == "require"
    chosen = remote + "?sslmode=verify-full"
    assert fleetconf.parse(fleetconf.effective_dsn(chosen, {}))["sslmode"] == "verify-full"
    assert fleetconf.effective_dsn(remote, {"PGSSLMODE": "disable"}) == remote
    for local in ("host=/run/postgresql dbname=x", "postgresql://me@localhost/x", "host=127.0.0.1 dbname=x"):
        assert fleetconf.effective_dsn(local, {}) == local


def test_describe_never_shows_the_password_and_a_bad_dsn_is_not_echoed() -> None:
    info = fleetconf.describe(f"postgresql://me:{SECRET}@db.example.com:6543/ccm", {})
    assert info == {
        "host": "db.example.com",
        "port": "6543",
        "dbname": "ccm",
        "user": "me",
        "sslmode": "require",
    }
    assert SECRET not in repr(info)
    assert "transaction pooler" in (
        fleetconf.pooler_warning(f"postgresql://me:{SECRET}@h:6543/ccm", {}) or ""
    )
    assert fleetconf.pooler_warning("postgresql://me@h:5432/ccm", {}) is None
    with pytest.raises(CcmError) as err:
        fleetconf.parse(f"postgresql://me:{SECRET}@h:notaport/x?bogus=1")
    assert SECRET not in str(err.value)


def test_the_listen_probe_tells_a_connection_notifications_reach_from_one_they_do_not(pg_dsn: str) -> None:
    import psycopg

    from ccm_agentd.fleet import connection

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert connection.probe_listen(conn, timeout=2.0)
    # Inside a transaction nothing is delivered until it ends: the probe's NOTIFY never comes back in time,
    # as through a transaction pooler.
    with psycopg.connect(pg_dsn) as conn:
        assert not connection.probe_listen(conn, timeout=0.5)


def test_backoff_grows_with_jitter_and_starts_over() -> None:
    import random

    from ccm_agentd.fleet.connection import Backoff

    b = Backoff(base=0.5, cap=15.0, rng=random.Random(7))
    delays = [b.next() for _ in range(8)]
    assert 0.25 <= delays[0] <= 0.5 and all(7.5 <= d <= 15.0 for d in delays[5:])
    assert len({round(d, 6) for d in delays}) == len(delays)  # jittered
    b.reset()
    assert b.next() <= 0.5


def test_a_call_to_a_peer_that_stopped_answering_ends_at_its_deadline(
    pg_cluster: object, pg_dsn: str
) -> None:
    import time

    import psycopg

    from ccm_agentd.fleet.connection import Deadline
    from tests.fleetrun import dsn_with
    from tests.tcpproxy import tcp_proxy

    port = pg_cluster.port  # type: ignore[attr-defined]
    with tcp_proxy(("127.0.0.1", port)) as proxy:
        dsn = dsn_with(pg_dsn, host="127.0.0.1", port=proxy.port, sslmode="disable")
        deadline = Deadline()
        with psycopg.connect(dsn, autocommit=True) as conn:
            with deadline.on(conn, 1.0):
                assert conn.execute("SELECT 1").fetchone() == (1,)
            proxy.pause()  # packets still acknowledged; no answer ever comes
            started = time.monotonic()
            with pytest.raises(psycopg.OperationalError), deadline.on(conn, 1.0):
                conn.execute("SELECT 1")
            assert time.monotonic() - started < 5.0
        deadline.close()
        assert deadline.fired == 1
