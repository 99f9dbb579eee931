"""Where ccm keeps its files, and which names are allowed to become file names.

Standard library only: the hook handler imports this on every call.

Layout of the state dir (``$CCM_HOME``, default ``~/.ccm``), documented in spec/layout.md::

    events/<session_id>.jsonl   append-only event log, one JSON object per line
    status/<session_id>.json    current status, replaced atomically
    locks/<session_id>.lock     flock(2) target serialising one session's handlers
    locks/settings-<slug>.lock  serialises ccm-hooks install/uninstall on one settings file
    log/hooks.log               handler errors (handlers never print); log/cli.log: CLI tracebacks
    bin/ccm-hook                the shim registered commands exec (see spec/settings.md)
    backups/<slug>/             copies of a settings file taken before ccm changed it
    config.toml                 defaults people edit (watch mode); config.snapshot.json: its compiled form
    agentd/health.json          ccm-agentd's heartbeat

Per-kind directories (rather than one directory per session) keep ``tail -f events/*.jsonl`` and
``jq -s . status/*.json`` natural, and let the daemon watch two directories instead of one per session.
"""

from __future__ import annotations

import os

DIR_MODE = 0o700
FILE_MODE = 0o600

MAX_ID_LEN = 128


def valid_session_id(value: object) -> bool:
    """True if ``value`` may be used as a file name under the state dir.

    Claude Code session ids are UUIDs; accept any plain ASCII token (letters, digits, ``-``, ``_``, starting
    with a letter or digit, at most 128 chars) so other producers still work, but nothing that could climb out
    of a directory, hide a file or differ only by Unicode normalisation. String methods, not ``re``: the
    handler imports this module on every call.
    """
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID_LEN or not value.isascii():
        return False
    return value[0].isalnum() and value.replace("-", "").replace("_", "").isalnum()


def state_dir(environ: os._Environ[str] | dict[str, str] | None = None) -> str:
    """The state dir: ``$CCM_HOME`` if set and non-empty, else ``~/.ccm``. Always absolute."""
    env = os.environ if environ is None else environ
    home = env.get("CCM_HOME") or os.path.join(os.path.expanduser("~"), ".ccm")
    return os.path.abspath(home)


def events_dir(root: str) -> str:
    return os.path.join(root, "events")


def status_dir(root: str) -> str:
    return os.path.join(root, "status")


def locks_dir(root: str) -> str:
    return os.path.join(root, "locks")


def log_dir(root: str) -> str:
    return os.path.join(root, "log")


def bin_dir(root: str) -> str:
    return os.path.join(root, "bin")


def backups_dir(root: str) -> str:
    return os.path.join(root, "backups")


def events_path(root: str, session_id: str) -> str:
    return os.path.join(root, "events", session_id + ".jsonl")


def status_path(root: str, session_id: str) -> str:
    return os.path.join(root, "status", session_id + ".json")


def lock_path(root: str, session_id: str) -> str:
    return os.path.join(root, "locks", session_id + ".lock")


def hooks_log_path(root: str) -> str:
    return os.path.join(root, "log", "hooks.log")


def agentd_health_path(root: str) -> str:
    """Rewritten by ccm-agentd while it runs; its age tells handlers whether a daemon is there."""
    return os.path.join(root, "agentd", "health.json")


def ensure_dir(path: str) -> None:
    """Create ``path`` (and parents) private to the user. Existing dirs keep their mode."""
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        return
    except FileNotFoundError:
        ensure_dir(os.path.dirname(path))
        try:
            os.mkdir(path, DIR_MODE)
        except FileExistsError:
            return


def ensure_layout(root: str) -> None:
    """Create the state dir and the subdirectories the handlers write to."""
    ensure_dir(root)
    for sub in ("events", "status", "locks", "log"):
        ensure_dir(os.path.join(root, sub))
