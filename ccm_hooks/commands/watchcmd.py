"""``ccm-hooks watch on|off|status|reset``: watch mode settings for one session, a project, or everyone.

A session's settings live in its own log (``ccm.watch`` records, folded into ``status.watch``), so they
change under the session lock and survive anything the status file does. Defaults for sessions not yet
started live in ``$CCM_HOME/config.toml``, the file people edit; each write here also refreshes the JSON
snapshot handlers read (spec/watch.md).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from ccm_hooks import fileio, paths, store, watch
from ccm_hooks.errors import CcmError
from ccm_hooks.statedir import config, reader

SHORT_STOP = {
    "done": "done",
    "max_turns": "max",
    "no_progress": "stuck",
    "error": "error",
    "needs_human": "human",
    "block_cap": "cap",
}


def label(w: object) -> str:
    """Watch state in at most 10 characters, for tables: ``off``, ``on 7 left``, ``stop:max``, ``on tmux``."""
    if not isinstance(w, dict) or not w.get("enabled"):
        return "off"
    if w.get("stopped"):
        return "stop:" + SHORT_STOP.get(str(w["stopped"]), str(w["stopped"]))[:5]
    if w.get("handoff"):
        return "on tmux"
    left = max(0, int(w.get("max_turns") or 0) - int(w.get("continues") or 0))
    return f"on {left} left"


def describe_settings(s: dict[str, Any]) -> str:
    state = "on" if s.get("enabled") else "off"
    return (
        f"{state}: up to {s['max_turns']} continues saying {s['prompt']!r}, stop on /{s['done_marker']}/ "
        f"or after {s['no_progress_turns']} turns without a tool call"
    )


# --- one session ----------------------------------------------------------------------------------


def session_status(root: str, session_id: str) -> dict[str, Any]:
    st = reader.read_status(paths.status_path(root, session_id))
    if st is None:
        raise CcmError(f"session {session_id} has no status yet; wait for its first event")
    return st


def set_session(
    root: str, session_id: str, enabled: bool, changes: dict[str, Any], by: str
) -> dict[str, Any]:
    """Turn watch on or off for one session (a fresh run: counters reset). Returns the new status."""
    current = session_status(root, session_id).get("watch") or watch.new_watch()
    settings = {key: current.get(key, watch.DEFAULTS[key]) for key in watch.SETTING_KEYS}
    settings.update(changes, enabled=enabled, source="session")
    status = store.append_ccm(root, session_id, "ccm.watch", {"by": by, "watch": settings})
    assert status is not None  # no expect_seq: always written
    return status


def reset_session(root: str, session_id: str, by: str) -> dict[str, Any]:
    """Start a fresh run: the auto-continue budget is whole again, a stop is cleared."""
    session_status(root, session_id)
    status = store.append_ccm(root, session_id, "ccm.watch_reset", {"by": by})
    assert status is not None  # no expect_seq: always written
    return status


# --- defaults in config.toml ------------------------------------------------------------------------


def set_defaults(root: str, project: str | None, enabled: bool, changes: dict[str, Any]) -> dict[str, Any]:
    """Update ``[watch]`` or ``[projects."<dir>".watch]``; returns the effective settings for that scope."""
    paths.ensure_dir(paths.locks_dir(root))
    keys = ("watch",) if project is None else ("projects", project, "watch")
    with fileio.FileLock(os.path.join(paths.locks_dir(root), "config.lock"), 10.0):
        config.update_table(root, keys, {**changes, "enabled": enabled})
    snapshot = watch.load_config(root)
    effective = dict(watch.DEFAULTS)
    effective.update(snapshot.get("global") or {})
    if project is not None:
        effective.update(watch.project_settings(snapshot, project))
    return effective


# --- the commands -------------------------------------------------------------------------------------


def _target(root: str, session: str | None, project: Path | None, everyone: bool) -> tuple[str, str | None]:
    """("session", id) | ("project", dir) | ("global", None)."""
    given = (session is not None) + (project is not None) + everyone
    if given != 1:
        raise CcmError("say which: a SESSION_ID, --project DIR, or --global (every new session)")
    if session is not None:
        return "session", reader.resolve_session(root, session)
    if project is not None:
        directory = project.expanduser().resolve()
        if not directory.is_dir():
            raise CcmError(f"--project {project}: no such directory")
        return "project", str(directory)
    return "global", None


def check_changes(changes: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in changes.items():
        if value is None:
            continue
        try:
            out[key] = watch.check_setting(key, value)
        except watch.SettingError as exc:
            flag = "--" + key.replace("_turns", "-turns").replace("_", "-")
            raise CcmError(f"{flag}: {exc}") from None
    return out


def watch_set_cmd(
    enabled: bool, session: str | None, project: Path | None, everyone: bool, changes: dict[str, Any]
) -> int:
    root = paths.state_dir()
    good = check_changes(changes)
    kind, which = _target(root, session, project, everyone)
    if kind == "session":
        assert which is not None
        st = set_session(root, which, enabled, good, by="ccm-hooks watch")
        print(f"session {which[:8]}: watch {describe_settings(st['watch'])}")
        if st.get("state") == "ended":
            print("note: this session has ended; the setting applies if it is resumed", file=sys.stderr)
        return 0
    settings = set_defaults(root, which, enabled, good)
    scope = f"sessions started in {which}" if kind == "project" else "every new session"
    print(f"{scope}: watch {describe_settings(settings)}")
    print(
        f"(saved in {watch.config_path(root)}; running sessions keep theirs: `ccm-hooks watch on SESSION_ID`)"
    )
    return 0


def watch_reset_cmd(session: str) -> int:
    root = paths.state_dir()
    sid = reader.resolve_session(root, session)
    st = reset_session(root, sid, by="ccm-hooks watch reset")
    print(f"session {sid[:8]}: watch counter reset ({label(st['watch'])})")
    return 0


def watch_status_cmd(session: str | None, as_json: bool) -> int:
    root = paths.state_dir()
    try:
        snapshot = watch.load_config(root)
    except (OSError, ValueError) as exc:  # a broken config.toml: say so, show the sessions anyway
        snapshot = {"errors": [str(exc)]}
    statuses = reader.load_statuses(root)
    if session is not None:
        sid = reader.resolve_session(root, session)
        statuses = [s for s in statuses if s.get("session_id") == sid]
    if as_json:
        out = {
            "global": {**watch.DEFAULTS, **(snapshot.get("global") or {})},
            "projects": snapshot.get("projects") or {},
            "config_errors": snapshot.get("errors") or [],
            "sessions": {str(s.get("session_id")): s.get("watch") for s in statuses},
        }
        json.dump(out, sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
        return 0
    if session is None:
        print(f"global: {describe_settings({**watch.DEFAULTS, **(snapshot.get('global') or {})})}")
        for directory, settings in sorted((snapshot.get("projects") or {}).items()):
            print(f"project {directory}: {', '.join(f'{k}={v!r}' for k, v in settings.items())}")
        for error in snapshot.get("errors") or []:
            print(f"config error (ignored): {error}")
    for st in statuses:
        w = st.get("watch") or {}
        line = f"{str(st.get('session_id'))[:8]}  {label(w):<10}  {st.get('state', '?')!s:<10}"
        if w.get("enabled"):
            line += f"  {w.get('continues', 0)}/{w.get('max_turns')} continues"
        if w.get("detail"):
            line += f"  last: {w['detail']}"
        print(line)
    return 0
