"""Watch mode: which settings a session is watched with, and what to do when one of its turns ends.

Standard library only, and no ``re``/``json``/``tomllib``: the handler imports this on every call
(spec/watch.md). The only slow path is compiling a hand-edited ``config.toml`` (once per edit). A done
marker that is a regular expression runs on ``saferegex`` (a subset of Python's syntax, linear time), never
on ``re``: a backtracking engine can be made to outlast Claude Code's hook timeout.

Where settings come from, lowest to highest: built-in defaults, ``[watch]`` in ``$CCM_HOME/config.toml``,
``[projects."<dir>".watch]`` for the project (longest matching directory), ``CCM_WATCH*`` in claude's
environment; all resolved once, at a session's first event, and written to its log as a ``ccm.watch``
record. ``ccm-hooks watch on|off SESSION`` later writes another. Decisions are ``ccm.decision`` records; the
status is a fold of the log, so counting is exact under concurrent handlers and after crashes.
"""

from __future__ import annotations

import os
import time

from ccm_hooks import fastjson, fileio, paths
from ccm_hooks.record import ascii_int

TYPE_CHECKING = False  # not `from typing import ...`: importing typing costs ~3 ms per hook call
if TYPE_CHECKING:
    from typing import Any

DEFAULTS: dict[str, Any] = {
    "enabled": False,
    "max_turns": 10,
    "prompt": "continue",
    "done_marker": r"\[DONE\]",
    "no_progress_turns": 2,
}
SETTING_KEYS = tuple(DEFAULTS)
ENV_VARS = {
    "enabled": "CCM_WATCH",
    "max_turns": "CCM_WATCH_MAX_TURNS",
    "prompt": "CCM_WATCH_PROMPT",
    "done_marker": "CCM_WATCH_DONE_MARKER",
    "no_progress_turns": "CCM_WATCH_NO_PROGRESS",
}
SOURCES = ("default", "global", "project", "env", "session")
STOP_REASONS = ("done", "max_turns", "no_progress", "error", "needs_human", "block_cap")
MAX_COUNT = 10_000  # max_turns and no_progress_turns must be finite: 1..MAX_COUNT
MAX_PROMPT_CHARS = 2000
MAX_MARKER_CHARS = 500
MARKER_TEXT_CAP = 2000  # a regex marker is searched for in the last this many characters of the reply
MAX_CONFIG_BYTES = 1 << 20  # config.toml is a few lines; a larger one is not read
MAX_BLOCK_CAP = 1_000_000
CLAUDE_BLOCK_CAP = 8  # Claude Code overrides the 9th Stop-hook block in a row without a tool call
AGENTD_FRESH_S = 90.0  # ccm-agentd's health file is rewritten every 30 s; older than this, it is gone
DECISION_EVENTS = frozenset({"Stop", "StopFailure", "PermissionRequest", "Notification"})
HUMAN_NOTIFICATIONS = frozenset({"permission_prompt", "elicitation_dialog"})
_TRUE = ("1", "true", "on", "yes")
_FALSE = ("0", "false", "off", "no")
_REGEX_CHARS = frozenset(".^$*+?{}[]|()")


class SettingError(ValueError):
    """A watch setting with a wrong type or value; the message says which and what is allowed."""


def literal_of(pattern: str) -> str | None:
    """The plain text ``pattern`` matches if it has no regex operators (``\\[DONE\\]`` -> ``[DONE]``)."""
    out = []
    escaped = False
    for ch in pattern:
        if escaped:
            if ch.isalnum():
                return None  # \d, \b, \1 ...: a real regular expression
            out.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch in _REGEX_CHARS:
            return None
        else:
            out.append(ch)
    return None if escaped else "".join(out)


def marker_found(pattern: str, text: object) -> bool:
    """Whether the reply ``text`` has the done marker ``pattern`` (spec/watch.md#the-done-marker).

    A plain-text marker is looked for in the whole reply (``str.__contains__``: linear, in C). A regex
    marker runs on ``saferegex`` over the last MARKER_TEXT_CAP characters, so its worst case is bounded
    whatever the pattern and the reply. A pattern outside the subset (set through an environment variable
    before it was checked, or by an older ccm) is looked for as plain text.
    """
    if not isinstance(text, str) or not pattern:
        return False
    literal = literal_of(pattern)
    if literal is not None:
        return literal in text
    from ccm_hooks import saferegex  # only for a marker that really is a regex

    try:
        program = saferegex.compile(pattern)
    except saferegex.PatternError:
        return pattern in text
    return program.search(text, max(0, len(text) - MARKER_TEXT_CAP))


def check_marker(value: object) -> str:
    """``value`` if it is a done marker ccm can search for in bounded time; SettingError otherwise."""
    if not isinstance(value, str) or not value or len(value) > MAX_MARKER_CHARS:
        raise SettingError(f"done_marker must be a non-empty regex of at most {MAX_MARKER_CHARS} chars")
    if literal_of(value) is None:
        from ccm_hooks import saferegex

        try:
            saferegex.compile(value)
        except saferegex.PatternError as exc:
            raise SettingError(
                f"done_marker {value!r} is outside the regex subset ccm runs in bounded time: {exc} "
                "(see spec/watch.md#the-done-marker)"
            ) from None
    return value


def check_setting(key: str, value: object) -> Any:
    """``value`` if it is allowed for ``key``; SettingError otherwise."""
    if key == "enabled":
        if isinstance(value, bool):
            return value
        raise SettingError("enabled must be true or false")
    if key in ("max_turns", "no_progress_turns"):
        if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_COUNT:
            return value
        raise SettingError(f"{key} must be a whole number from 1 to {MAX_COUNT} (got {value!r})")
    if key == "prompt":
        if isinstance(value, str) and value.strip() and len(value) <= MAX_PROMPT_CHARS:
            return value
        raise SettingError(f"prompt must be non-empty text of at most {MAX_PROMPT_CHARS} characters")
    if key == "done_marker":
        return check_marker(value)
    raise SettingError(f"unknown watch setting {key!r} (known: {', '.join(SETTING_KEYS)})")


def check_settings(table: object, where: str) -> tuple[dict[str, Any], list[str]]:
    """The valid settings of one table, and a message for each invalid or unknown one."""
    if not isinstance(table, dict):
        return {}, [f"{where} must be a table"]
    good: dict[str, Any] = {}
    errors: list[str] = []
    for key, value in table.items():
        try:
            good[key] = check_setting(key, value)
        except SettingError as exc:
            errors.append(f"{where}: {exc}")
    return good, errors


def settings_from_env(environ: os._Environ[str] | dict[str, str]) -> tuple[dict[str, Any], list[str]]:
    out: dict[str, Any] = {}
    errors: list[str] = []
    for key, var in ENV_VARS.items():
        raw = environ.get(var)
        if raw is None or raw.strip() == "":
            continue
        value: object = raw
        if key == "enabled":
            low = raw.strip().lower()
            value = True if low in _TRUE else False if low in _FALSE else raw
        elif key in ("max_turns", "no_progress_turns"):
            number = ascii_int(raw)  # not int(): "²" and "١٠" are digits to int() and isdigit()
            if number is None:
                errors.append(f"${var}={raw[:40]!r}: {key} must be a whole number from 1 to {MAX_COUNT} "
                              "written with ASCII digits; ignored")  # fmt: skip
                continue
            value = number
        try:
            out[key] = check_setting(key, value)
        except SettingError as exc:
            errors.append(f"${var}: {exc}")
    return out, errors


# --- config.toml and its snapshot -------------------------------------------------------------------


def config_path(root: str) -> str:
    return os.path.join(root, "config.toml")


def snapshot_path(root: str) -> str:
    return os.path.join(root, "config.snapshot.json")


def _stamp(st: os.stat_result) -> list[int]:
    return [st.st_ino, st.st_size, st.st_mtime_ns]


def compile_config(root: str) -> dict[str, Any]:
    """Parse config.toml and write the JSON snapshot handlers read. Slow path: imports tomllib.

    Only a regular file of the user's, not writable by others, of at most MAX_CONFIG_BYTES: otherwise
    UnsafePath (another user could put orders in a watch prompt) or SettingError.
    """
    import tomllib

    path = config_path(root)
    fd, st = fileio.open_regular_stat(path, os.O_RDONLY, private=True)
    try:
        raw = fileio.read_fd(fd, st.st_size, MAX_CONFIG_BYTES, path)
    except ValueError as exc:
        raise SettingError(str(exc)) from None
    finally:
        os.close(fd)
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SettingError(f"{path} is not valid TOML: {exc}") from None
    snapshot = snapshot_of(data)
    snapshot["toml"] = _stamp(st)
    fileio.atomic_write(snapshot_path(root), fileio.encode_line(snapshot))
    return snapshot


def snapshot_of(data: dict[str, Any]) -> dict[str, Any]:
    """The watch settings of a parsed config.toml: ``global``, ``projects`` ({dir: settings}), ``errors``."""
    errors: list[str] = []
    global_watch: dict[str, Any] = {}
    if "watch" in data:
        global_watch, errs = check_settings(data["watch"], "[watch]")
        errors += errs
    projects: dict[str, Any] = {}
    table = data.get("projects", {})
    if not isinstance(table, dict):
        errors.append("[projects] must be a table")
        table = {}
    for directory, entry in table.items():
        where = f'[projects."{directory}".watch]'
        if not os.path.isabs(directory):
            errors.append(f"{where}: the project must be an absolute directory")
            continue
        if isinstance(entry, dict) and "watch" in entry:
            settings, errs = check_settings(entry["watch"], where)
            errors += errs
            if settings:
                projects[os.path.normpath(directory)] = settings
    return {"v": 1, "global": global_watch, "projects": projects, "errors": errors}


def load_config(root: str) -> dict[str, Any]:
    """The current snapshot, recompiled first if config.toml changed since it was made.

    A config.toml that is not a regular file of the user's (a FIFO, a symlink, another user's file, one
    group or others can write) raises UnsafePath without being opened; a snapshot like that is ignored
    and rebuilt (it is replaced, never opened).
    """
    path = config_path(root)
    try:
        toml_stat = os.lstat(path)
    except FileNotFoundError:
        return {"v": 1, "global": {}, "projects": {}, "errors": []}
    problem = paths.file_problem(toml_stat, path)
    if problem:
        raise paths.UnsafePath(f"{problem}; its watch settings are ignored")
    try:
        snapshot = fileio.read_json(snapshot_path(root))
    except (OSError, ValueError):
        snapshot = None
    if isinstance(snapshot, dict) and snapshot.get("toml") == _stamp(toml_stat):
        return snapshot
    return compile_config(root)


def project_settings(snapshot: dict[str, Any], project: str | None) -> dict[str, Any]:
    """The settings of the longest configured directory that contains ``project``."""
    if not project:
        return {}
    project = os.path.normpath(project)
    best: dict[str, Any] = {}
    best_len = -1
    for directory, settings in (snapshot.get("projects") or {}).items():
        inside = project == directory or project.startswith(directory.rstrip("/") + "/")
        if inside and len(directory) > best_len:
            best, best_len = settings, len(directory)
    return best


def resolve(
    root: str, environ: os._Environ[str] | dict[str, str], project: str | None
) -> tuple[dict[str, Any], list[str]]:
    """Effective settings for a new session (with ``source``: the highest layer that set anything)."""
    errors: list[str] = []
    settings = dict(DEFAULTS)
    source = "default"
    try:
        snapshot = load_config(root)
        errors += [str(e) for e in snapshot.get("errors") or []]
    except (OSError, ValueError) as exc:  # SettingError is a ValueError: a broken file means "no defaults"
        snapshot = {}
        errors.append(str(exc))
    from_env, env_errors = settings_from_env(environ)
    errors += env_errors
    cap_problem = _block_cap(environ)[1]
    if cap_problem:
        errors.append(cap_problem)
    layers = (
        ("global", snapshot.get("global") or {}),
        ("project", project_settings(snapshot, project)),
        ("env", from_env),
    )
    for name, layer in layers:
        if layer:
            settings.update(layer)
            source = name
    settings["source"] = source
    return settings, errors


# --- the status's watch object and the decision at the end of a turn ------------------------------------


def new_watch() -> dict[str, Any]:
    w: dict[str, Any] = dict(DEFAULTS)
    w.update(source="default", continues=0, no_progress=0, blocks=0, tool_mark=0)
    w.update(stopped=None, detail=None, handoff=None)
    return w


def _block_cap(environ: os._Environ[str] | dict[str, str]) -> tuple[int, str | None]:
    raw = environ.get("CLAUDE_CODE_STOP_HOOK_BLOCK_CAP", "")
    if raw.strip() == "":
        return CLAUDE_BLOCK_CAP, None
    value = ascii_int(raw)
    if value is None or value > MAX_BLOCK_CAP:
        return CLAUDE_BLOCK_CAP, (
            f"CLAUDE_CODE_STOP_HOOK_BLOCK_CAP={raw[:40]!r} is not a whole number from 0 to {MAX_BLOCK_CAP} "
            f"written with ASCII digits: watch assumes Claude Code's default, {CLAUDE_BLOCK_CAP}"
        )
    return value, None


def block_cap(environ: os._Environ[str] | dict[str, str]) -> int:
    """Claude Code's cap on Stop-hook blocks in a row without a tool call; 0 means no cap."""
    return _block_cap(environ)[0]


def agentd_alive(root: str, now: float) -> bool:
    """ccm-agentd's heartbeat is fresh, and is a regular file of the user's (another user's daemon, or a
    file planted by one, must not make a handler hand a continue over)."""
    path = paths.agentd_health_path(root)
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return paths.file_problem(st, path) is None and now - st.st_mtime < AGENTD_FRESH_S


def decide(
    status: dict[str, Any],
    event: str,
    payload: dict[str, Any],
    environ: os._Environ[str] | dict[str, str],
    root: str,
) -> dict[str, Any] | None:
    """The ``decision`` of a ccm.decision record for this event, or None when there is nothing to decide.

    ``status`` already includes the event. Called under the session lock, so counts cannot race.
    """
    w = status.get("watch")
    if not isinstance(w, dict) or not w.get("enabled") or w.get("stopped") or w.get("handoff"):
        return None
    if payload.get("agent_id"):
        return None  # a subagent's events are part of the main turn
    used = int(w.get("continues") or 0)
    tool_uses = int((status.get("counters") or {}).get("tool_uses") or 0)
    base = {"turn": used, "max_turns": w["max_turns"], "no_progress": w.get("no_progress") or 0}
    base.update(blocks=w.get("blocks") or 0, tool_mark=tool_uses)

    def stop(reason: str, detail: str, **changes: Any) -> dict[str, Any]:
        return {"action": "stop", "reason": reason, **base, **changes, "detail": detail}

    if event == "StopFailure":
        return stop("error", f"the turn ended in an error: {status.get('error') or 'unknown'}")
    if event == "PermissionRequest" or (
        event == "Notification" and payload.get("notification_type") in HUMAN_NOTIFICATIONS
    ):
        if status.get("state") != "waiting":
            return None  # a late notification for a dialog already answered
        return stop("needs_human", f"waiting for a person: {status.get('reason') or 'a dialog'}")
    if event != "Stop":
        return None

    progressed = tool_uses > int(w.get("tool_mark") or 0)
    # Claude's own count of blocks in a row restarts with any tool call and with any real prompt.
    blocks = 0 if progressed or payload.get("stop_hook_active") is not True else int(w.get("blocks") or 0)
    # Only turns we started count towards "no progress"; the turn a person started does not.
    no_progress = 0 if progressed or used == 0 else int(w.get("no_progress") or 0) + 1
    base.update(blocks=blocks, no_progress=no_progress)
    limit = w["max_turns"]
    if marker_found(w["done_marker"], payload.get("last_assistant_message")):
        return stop("done", f"the reply has the done marker {w['done_marker']} (after {used} of {limit})")
    if no_progress >= w["no_progress_turns"]:
        return stop("no_progress", f"{no_progress} auto-continued turns in a row without a tool call")
    if used >= limit:
        return stop("max_turns", f"{used} of {limit} auto-continues used")
    cap = block_cap(environ)
    if cap and blocks >= cap:
        # One more block would be overridden by Claude Code. A real prompt typed into the pane restarts
        # Claude's count: ccm-agentd does that when it runs and the session is in tmux.
        if status.get("tmux_pane") and agentd_alive(root, time.time()):
            detail = f"continue {used + 1}/{limit} goes through tmux: {blocks} Stop-hook blocks in a row"
            return {"action": "handoff", "reason": "block_cap", **base, "turn": used + 1, "blocks": 0,
                    "prompt": w["prompt"], "detail": detail}  # fmt: skip
        why = "no tmux pane" if not status.get("tmux_pane") else "ccm-agentd is not running"
        return stop(
            "block_cap",
            f"Claude Code's cap of {cap} Stop-hook blocks without a tool call reached after {used} of "
            f"{limit}; {why} to continue through tmux",
        )
    detail = f"continue {used + 1}/{limit}"
    return {"action": "continue", "reason": None, **base, "turn": used + 1, "blocks": blocks + 1,
            "prompt": w["prompt"], "detail": detail}  # fmt: skip


def block_output(decision: dict[str, Any] | None) -> bytes | None:
    """What the Stop handler prints for Claude, or None to print nothing."""
    if not decision or decision.get("action") != "continue":
        return None
    return fastjson.dumps({"decision": "block", "reason": decision["prompt"]}).encode("utf-8", "replace")
