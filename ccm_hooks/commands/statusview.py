"""``ccm-hooks status``: one line per session (or ``--json``), and ``--watch`` to keep it on screen.

The output is built whole and written in large chunks: a write per JSON token is two million system calls
for 10,000 sessions on an unbuffered stdout. ``--watch`` re-reads only the status files the watcher reports
(``StatusCache``), redraws at most every WATCH_MIN_REDRAW_S, and lists the directory every
WATCH_RESCAN_S in case the watcher missed something.
"""

from __future__ import annotations

import os
import sys
import time

from ccm_hooks import paths
from ccm_hooks.statedir import reader
from ccm_hooks.statedir.safetext import clean, json_safe_bytes, one_line
from ccm_hooks.statedir.timefmt import format_age, parse_ts

TYPE_CHECKING = False  # no typing at run time on this path (main.py says why)
if TYPE_CHECKING:
    from typing import Any

WATCH_REDRAW_S = 2.0  # redraw this often anyway, so the ages stay true
WATCH_MIN_REDRAW_S = 0.25  # and never more often than this, however busy the sessions are
WATCH_RESCAN_S = 5.0
ORJSON_FROM = 200  # statuses; below this, importing orjson costs more than it saves


def stale_watch_reason(st: dict[str, Any]) -> bool:
    """An idle session's reason left over from a watch run that has since been reset (``watch reset``, top's
    ``r``): the state machine keeps ``reason`` until the next state change, but it no longer applies."""
    reason, w = st.get("reason"), st.get("watch")
    if st.get("state") != "idle" or not isinstance(reason, str) or not reason.startswith("watch"):
        return False
    return isinstance(w, dict) and not w.get("stopped") and not w.get("handoff")


def status_action(st: dict[str, Any]) -> str:
    """What a person wants to know next to the state: why it waits or stopped, what it does or said."""
    state = st.get("state")
    if state in ("waiting", "error", "ended", "stalled", "rate_limited"):
        return str(st.get("reason") or "")
    if state == "idle":
        if st.get("reason") and not stale_watch_reason(st):  # watch mode said why it stopped here
            return str(st["reason"])
        return "» " + str(st.get("last_assistant_message") or "")
    return str(st.get("current_action") or "")


def project_of(st: dict[str, Any]) -> str:
    return str(st.get("project") or st.get("cwd") or "")


def select(statuses: list[dict[str, Any]], active: bool, project: str | None) -> list[dict[str, Any]]:
    """``--active``: not ended. ``--project DIR``: sessions whose project (or cwd) is DIR or below it."""
    if active:
        statuses = [st for st in statuses if st.get("state") != "ended"]
    if project is not None:
        want = os.path.abspath(project).rstrip("/") or "/"
        prefix = want if want.endswith("/") else want + "/"
        statuses = [st for st in statuses if project_of(st) == want or project_of(st).startswith(prefix)]
    return statuses


def render_json(statuses: list[dict[str, Any]]) -> bytes:
    """A JSON array, indented by 2 like ``jq -s .``; values exact, terminal controls escaped.

    orjson writes the same text as ``json.dumps(indent=2, ensure_ascii=False)`` 20x faster (the json
    module's indenting encoder is pure Python), but costs ~15 ms to import: used from ORJSON_FROM statuses.
    """
    data = None
    if len(statuses) >= ORJSON_FROM:
        try:
            import orjson

            data = orjson.dumps(statuses, option=orjson.OPT_INDENT_2)
        except (ImportError, TypeError, ValueError):
            data = None  # an integer past 64 bits, say: the json module writes it exactly
    if data is None:
        import json

        data = json.dumps(statuses, ensure_ascii=False, indent=2).encode("utf-8", "backslashreplace")
    return json_safe_bytes(data) + b"\n"


def render_text(
    root: str, statuses: list[dict[str, Any]], width: int | None, limit: int | None = None
) -> str:
    if not statuses:
        hint = "`ccm-hooks install` in a project, then start claude"
        return f"no sessions recorded in {clean(root)} yet ({hint})\n"
    now = time.time()
    out = [f"{'SESSION':<8}  {'STATE':<10}  {'PROJECT':<16}  {'LAST TOOL':<10}  {'AGE':>4}  ACTION"]
    shown = statuses if limit is None else statuses[:limit]
    for st in shown:
        updated = parse_ts(st.get("updated_at"))
        age = format_age(now - updated) if updated else "?"
        project = os.path.basename(project_of(st).rstrip("/")) or "-"
        head = (
            f"{one_line(str(st.get('session_id', '?')))[:8]:<8}  {one_line(str(st.get('state', '?'))):<10}  "
            f"{one_line(project, 16):<16}  {one_line(st.get('last_tool') or '-', 10):<10}  {age:>4}  "
        )
        room = None if width is None else max(10, width - len(head))
        out.append(head + one_line(status_action(st), room))
    if len(shown) < len(statuses):
        out.append(f"… {len(statuses) - len(shown)} more (a taller window, or --active / --project DIR)")
    return "\n".join(out) + "\n"


def terminal_size() -> tuple[int, int] | None:
    """(columns, lines) of the terminal stdout is, else None (a pipe: whole lines for grep and awk)."""
    if not sys.stdout.isatty():
        return None
    try:
        size = os.get_terminal_size(sys.stdout.fileno())
    except OSError:
        return 80, 24
    columns = int(os.environ["COLUMNS"]) if os.environ.get("COLUMNS", "").isdigit() else size.columns
    lines = int(os.environ["LINES"]) if os.environ.get("LINES", "").isdigit() else size.lines
    return columns or 80, lines or 24


def _write(text: str | bytes) -> None:
    if isinstance(text, str):
        data = text.encode(getattr(sys.stdout, "encoding", None) or "utf-8", "replace")
    else:
        data = text
    out = sys.stdout.buffer
    for i in range(0, len(data), 1 << 20):
        out.write(data[i : i + (1 << 20)])
    out.flush()


def status_cmd(as_json: bool, watch: bool = False, active: bool = False, project: str | None = None) -> int:
    root = paths.state_dir()
    if not watch:
        statuses = select(reader.load_statuses(root), active, project)
        size = terminal_size()  # fit a terminal; into a pipe (grep, awk) give whole lines
        _write(render_json(statuses) if as_json else render_text(root, statuses, size and size[0]))
        return 0
    return _watch(root, as_json, active, project)


def _watch(root: str, as_json: bool, active: bool, project: str | None) -> int:
    from ccm_hooks.statedir.fswatch import DirWatcher
    from ccm_hooks.statedir.statuscache import StatusCache

    paths.ensure_layout(root)
    tty = sys.stdout.isatty() and not as_json
    with DirWatcher([paths.status_dir(root)]) as watcher:
        cache = StatusCache(root)
        cache.rescan()
        rescanned = drawn = time.monotonic()
        while True:
            statuses = select(cache.statuses(), active, project)
            if as_json:
                _write(render_json(statuses))
            else:
                size = terminal_size() if tty else None
                # A screen shows what fits; the rest would scroll away before anyone read it.
                width, rows = (size[0], max(1, size[1] - 3)) if size else (None, None)
                _write(("\x1b[H\x1b[2J" if tty else "") + render_text(root, statuses, width, rows))
            drawn = time.monotonic()
            # Until a change (or the age tick), then a short pause so that a burst is drawn once.
            watcher.wait(max(0.0, drawn + WATCH_REDRAW_S - time.monotonic()))
            time.sleep(max(0.0, drawn + WATCH_MIN_REDRAW_S - time.monotonic()))
            watcher.wait(0)
            cache.apply(watcher.take())
            if time.monotonic() - rescanned >= WATCH_RESCAN_S:
                cache.rescan()
                rescanned = time.monotonic()
