"""The fleet's schema: versioned SQL files shipped in the package (``sql/NNN_name.sql``), forward only.

``migrate`` is safe to re-run (applied versions are skipped) and safe with two machines running
``ccm-agentd fleet init`` at once: everything happens in one transaction that first takes an advisory lock,
so the second waits, then finds nothing left to do. A failed migration rolls back entirely. An applied file
whose text changed since is reported, never re-run: a change is a new file.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

# pg_advisory_xact_lock key: "ccmfleet" as a 64-bit integer. Advisory locks are per database.
LOCK_KEY = int.from_bytes(b"ccmfleet", "big") & 0x7FFF_FFFF_FFFF_FFFF
_FILE_RE = re.compile(r"(\d{3})_([a-z0-9_]+)\.sql")

BOOTSTRAP = """
CREATE SCHEMA IF NOT EXISTS ccm;
CREATE TABLE IF NOT EXISTS ccm.migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    applied_by text NOT NULL DEFAULT current_user
);
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass
class Outcome:
    applied: list[str]  # what this run applied, "001_schema"
    current: int  # the database's version afterwards
    changed: list[str]  # applied files whose text differs from what was applied
    unknown: list[int]  # versions in the database this ccm does not know (a newer ccm migrated it)


def available() -> list[Migration]:
    found = []
    for entry in resources.files("ccm_agentd.fleet").joinpath("sql").iterdir():
        m = _FILE_RE.fullmatch(entry.name)
        if m:
            found.append(Migration(int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda mig: mig.version)
    versions = [mig.version for mig in found]
    assert len(set(versions)) == len(versions), f"two migrations share a version: {versions}"
    return found


def latest() -> int:
    return available()[-1].version


def applied(conn: psycopg.Connection[Any]) -> dict[int, str]:
    """{version: checksum} of what the database has; {} before the first init."""
    row = conn.execute("SELECT to_regclass('ccm.migrations') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return {}
    return {int(v): str(c) for v, c in conn.execute("SELECT version, checksum FROM ccm.migrations")}


def migrate(conn: psycopg.Connection[Any]) -> Outcome:
    """Apply every pending migration in one transaction, under the advisory lock."""
    done: list[str] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        conn.execute(BOOTSTRAP.encode())  # no parameters: psycopg sends it as one simple query
        have = applied(conn)
        known = available()
        for mig in known:
            if mig.version in have:
                continue
            conn.execute(mig.sql.encode())
            conn.execute(
                "INSERT INTO ccm.migrations (version, name, checksum) VALUES (%s, %s, %s)",
                (mig.version, mig.name, mig.checksum),
            )
            done.append(f"{mig.version:03d}_{mig.name}")
        have = applied(conn)
    by_version = {mig.version: mig for mig in known}
    return Outcome(
        applied=done,
        current=max(have) if have else 0,
        changed=[
            f"{v:03d}_{by_version[v].name}"
            for v, c in sorted(have.items())
            if v in by_version and by_version[v].checksum != c
        ],
        unknown=sorted(v for v in have if v not in by_version),
    )


def version(conn: psycopg.Connection[Any]) -> int:
    """The database's schema version: 0 before ``fleet init``."""
    have = applied(conn)
    return max(have) if have else 0
