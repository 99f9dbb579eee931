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
