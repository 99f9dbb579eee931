"""``[fleet]`` in config.toml and the database's address: what this machine is called, what it offers, and
how to reach the fleet's PostgreSQL (spec/fleet.md).

Shared by ``ccm-agentd`` (the fleet job, ``fleet init|status``) and the ``--fleet`` readers of ``ccm-hooks``.
Nothing here touches the network. The DSN holds a password: it is read from ``$CCM_FLEET_DSN`` or a file
only its owner can read, and is never logged or printed (``describe`` gives host, port, database and user).
psycopg is imported only to parse a DSN, so without the ``[fleet]`` extra this module still imports.
"""

from __future__ import annotations

import os
import re
import socket
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ccm_hooks.errors import CcmError
from ccm_hooks.statedir import config

DSN_ENV = "CCM_FLEET_DSN"
DSN_FILE = "fleet.dsn"  # in the state dir, unless [fleet] dsn_file says otherwise
# System, project and label names: safe in SQL text, file names and role names (spec/fleet.md#names).
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
LOCAL_HOSTS = frozenset({"", "localhost", "127.0.0.1", "::1"})
# Supabase's transaction pooler (Supavisor) listens on 6543: it gives each transaction any server connection,
# so LISTEN cannot work through it. Other poolers are found by a LISTEN probe once connected (link.py).
TRANSACTION_POOLER_PORT = "6543"


@dataclass(frozen=True)
class FleetSettings:
    system: str
    labels: dict[str, str] = field(default_factory=dict)
    projects: dict[str, str] = field(default_factory=dict)  # project name -> this machine's clone
    dsn_file: str = ""
    claim: bool = True  # take tasks from the shared queue (false: only mirror this machine)
    lease_s: float = 60.0  # a claim's lease; renewed every lease_s / 4 (spec/fleet.md#leases)
    poll_s: float = 30.0  # the slow poll behind LISTEN
    heartbeat_s: float = 15.0  # the systems row
    ship_rate: float = 20000.0  # records per second at most while catching up
    batch: int = 2000  # records per transaction

    def project_of(self, directory: str) -> str | None:
        """The project name ``directory`` (or a directory inside it) is mapped to here, if any."""
        path = os.path.realpath(directory)
        best: tuple[int, str] | None = None
        for name, clone in self.projects.items():
            root = os.path.realpath(clone)
            if (path == root or path.startswith(root.rstrip("/") + "/")) and (
                best is None or len(root) > best[0]
            ):
                best = (len(root), name)
        return best[1] if best else None


def default_system() -> str:
    """The host name up to its first dot, made a valid name."""
    host = socket.gethostname().split(".")[0]
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", host).lstrip("-_.")[:63]
    return name or "localhost"


def fleet_table(root: str) -> dict[str, Any] | None:
    """``[fleet]`` of config.toml, or None when the fleet is not configured (then nothing of it runs)."""
    table = config.read_config(root).get("fleet")
    if table is None:
        return None
    if not isinstance(table, dict):
        raise CcmError(f"[fleet] in {root}/config.toml must be a table; see spec/fleet.md")
    return table


def settings_from(table: Mapping[str, Any], root: str) -> FleetSettings:
    """Validated settings; a wrong value raises CcmError naming the key and what it may be."""

    def where(key: str) -> str:
        return f"[fleet] {key} in {root}/config.toml"

    def name(key: str, value: object) -> str:
        if not isinstance(value, str) or not NAME_RE.fullmatch(value):
            raise CcmError(f"{where(key)}: {value!r} is not a name (letters, digits, _ . -, at most 63)")
        return value

    def number(key: str, default: float, low: float, high: float) -> float:
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise CcmError(f"{where(key)} must be a number from {low:g} to {high:g}, not {value!r}")
        return float(value)

    known = {"system", "labels", "projects", "dsn_file", "claim", "lease_s", "poll_s", "heartbeat_s",
             "ship_rate", "batch"}  # fmt: skip
    unknown = sorted(set(table) - known)
    if unknown:
        raise CcmError(f"{where(unknown[0])}: unknown key; known: {', '.join(sorted(known))}")
    system = name("system", table.get("system") or default_system())
    labels_in = table.get("labels", {})
    if not isinstance(labels_in, dict):
        raise CcmError(f'{where("labels")} must be a table: labels = {{ gpu = "yes" }}')
    labels = {
        name("labels", k): str(v) for k, v in labels_in.items() if isinstance(v, (str, int, float, bool))
    }
    projects_in = table.get("projects", {})
    if not isinstance(projects_in, dict):
        raise CcmError(f'{where("projects")} must be a table: [fleet.projects] web = "/path/to/clone"')
    projects = {}
    for key, value in projects_in.items():
        path = os.path.expanduser(value) if isinstance(value, str) else ""
        if not os.path.isabs(path):
            raise CcmError(f"{where('projects')}: {key} must map to an absolute path, not {value!r}")
        projects[name("projects", key)] = os.path.normpath(path)
    dsn_file = table.get("dsn_file") or os.path.join(root, DSN_FILE)
    if not isinstance(dsn_file, str):
        raise CcmError(f"{where('dsn_file')} must be a path")
    claim = table.get("claim", True)
    if not isinstance(claim, bool):
        raise CcmError(f"{where('claim')} must be true or false")
    return FleetSettings(
        system=system, labels=labels, projects=projects, dsn_file=os.path.expanduser(dsn_file), claim=claim,
        lease_s=number("lease_s", 60.0, 5.0, 3600.0), poll_s=number("poll_s", 30.0, 1.0, 3600.0),
        heartbeat_s=number("heartbeat_s", 15.0, 1.0, 600.0),
        ship_rate=number("ship_rate", 20000.0, 10.0, 1e7), batch=int(number("batch", 2000, 1, 100000)),
    )  # fmt: skip


def load_settings(root: str) -> FleetSettings:
    table = fleet_table(root)
    if table is None:
        raise CcmError(f"the fleet is not configured: add [fleet] to {root}/config.toml (spec/fleet.md)")
    return settings_from(table, root)


# --- the DSN ----------------------------------------------------------------------------------------------


def load_dsn(settings: FleetSettings, environ: Mapping[str, str] | None = None) -> str:
    """``$CCM_FLEET_DSN``, else the DSN file, which must be a regular file only its owner can read."""
    env = os.environ if environ is None else environ
    if env.get(DSN_ENV, "").strip():
        return env[DSN_ENV].strip()
    path = settings.dsn_file
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise CcmError(
            f"no database address: set {DSN_ENV} or write the DSN to {path} (chmod 600); see spec/supabase.md"
        ) from None
    except OSError as exc:
        raise CcmError(f"cannot open {path} ({exc.strerror}); it must be a plain file, chmod 600") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise CcmError(f"{path} is not a regular file; write the DSN into a plain file, chmod 600")
        if st.st_mode & 0o077:
            raise CcmError(
                f"{path} is readable by others (mode {stat.S_IMODE(st.st_mode):o}); it holds a password: "
                f"chmod 600 {path}"
            )
        if st.st_uid != os.geteuid():
            raise CcmError(f"{path} belongs to another user; write your own DSN file (chmod 600)")
        text = fh.read(65536).decode("utf-8", "replace")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise CcmError(f"{path} is empty; write the DSN (postgresql://user:password@host:5432/db) into it")
    return lines[0]


def parse(dsn: str) -> dict[str, str]:
    """The DSN's parameters (URI or key=value), or CcmError without echoing it (it may hold a password)."""
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    try:
        return {k: str(v) for k, v in conninfo_to_dict(dsn).items() if v is not None}
    except ProgrammingError:
        raise CcmError(
            "the fleet DSN does not parse; use postgresql://user:password@host:5432/dbname "
            "or host=... dbname=... user=..."
        ) from None


def _hosts(params: Mapping[str, str], environ: Mapping[str, str]) -> list[str]:
    raw = params.get("host") or params.get("hostaddr") or environ.get("PGHOST", "")
    return [h.strip() for h in raw.split(",")]


def is_local(params: Mapping[str, str], environ: Mapping[str, str] | None = None) -> bool:
    """A unix socket or the loopback: then TLS buys nothing."""
    env = os.environ if environ is None else environ
    return all(h.startswith(("/", "@")) or h in LOCAL_HOSTS for h in _hosts(params, env))


def effective_dsn(dsn: str, environ: Mapping[str, str] | None = None) -> str:
    """The DSN to connect with: ``sslmode=require`` added for a non-local host unless the DSN (or
    ``$PGSSLMODE``) chose a mode. require encrypts; verify-full also checks the server's name, and needs
    its CA (Supabase publishes one): spec/supabase.md."""
    from psycopg.conninfo import make_conninfo

    env = os.environ if environ is None else environ
    params = parse(dsn)
    if "sslmode" in params or env.get("PGSSLMODE") or is_local(params, env):
        return dsn
    return make_conninfo(dsn, sslmode="require")


def describe(dsn: str, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """What may be shown of a DSN: host, port, database, user, sslmode. Never the password."""
    env = os.environ if environ is None else environ
    params = parse(dsn)
    hosts = ",".join(h or "local socket" for h in _hosts(params, env))
    return {
        "host": hosts,
        "port": params.get("port") or env.get("PGPORT", "5432"),
        "dbname": params.get("dbname") or env.get("PGDATABASE", "") or params.get("user", ""),
        "user": params.get("user") or env.get("PGUSER", ""),
        "sslmode": parse(effective_dsn(dsn, env)).get("sslmode") or env.get("PGSSLMODE", "prefer"),
    }


def pooler_warning(dsn: str, environ: Mapping[str, str] | None = None) -> str | None:
    """One line when the address looks like a transaction pooler, which cannot LISTEN."""
    if describe(dsn, environ)["port"] != TRANSACTION_POOLER_PORT:
        return None
    return (
        "port 6543 is Supabase's transaction pooler, which cannot LISTEN (new tasks would be seen only at "
        "the slow poll): use the direct connection or the session pooler, port 5432 (spec/supabase.md)"
    )
