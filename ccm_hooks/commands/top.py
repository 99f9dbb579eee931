"""``ccm-hooks top``: every session in one table, kept current at the cost of what changed.

On a terminal (stdin and stdout both ttys) it is a curses view (topscreen.py) with keys to select a session,
go to its tmux pane, toggle its watch mode and reset its counter. Otherwise it prints plain snapshots like
``top -b``: one now and then one after each change; with ``-n N``, N snapshots DELAY seconds apart (so
``top -n 2 | cat`` ends after DELAY seconds even when nothing changes). Ended sessions are hidden unless
``--all`` (or the ``a`` key) asks for them.

Both modes keep a ``StatusCache``: the watcher says which status files changed and only those are read;
the directory is listed (a stat per file) every RESCAN_S and when the watcher lost events.
"""

from __future__ import annotations

import math
import os
import sys
import time
import unicodedata
from typing import Any

from ccm_hooks import paths
from ccm_hooks.commands import top_tasks, watchcmd
from ccm_hooks.commands.statusview import stale_watch_reason
from ccm_hooks.errors import CcmError
from ccm_hooks.statedir import timefmt
from ccm_hooks.statedir.fswatch import DirWatcher
from ccm_hooks.statedir.safetext import one_line
from ccm_hooks.statedir.statuscache import StatusCache

REDRAW_S = 2.0  # redraw this often even when nothing changed, so the ages stay true
MIN_REDRAW_S = 0.25  # and at most this often, however busy the sessions are
RESCAN_S = 5.0  # watchers can drop events: list the directory this often anyway
DEFAULT_DELAY_S = 2.0  # between snapshots with -n
BY = "ccm-hooks top"
# (title, width, right-aligned); ACTION takes what is left. 55 columns, so ACTION gets 24 of 80.
COLUMNS = (
    ("SESSION", 8, False),
    ("STATE", 10, False),
    ("AGE", 4, True),
    ("TURNS", 5, True),
    ("WATCH", 10, False),  # watchcmd.label() is at most 10 characters
    ("PROJECT", 12, False),
)


# --- the table, shared by both modes ---------------------------------------------------------------


def _cells(ch: str) -> int:
    """Terminal columns one character takes: CJK and emoji take two, combining marks none."""
    if unicodedata.combining(ch):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def fit(text: str, width: int, ellipsis: str = "…") -> str:
    """``text`` in at most ``width`` terminal columns, cut with ``ellipsis`` when too long."""
    if sum(map(_cells, text)) <= width:
        return text
    out, used = [], 0
    for ch in text:
        if used + _cells(ch) > width - 1:
            break
        out.append(ch)
        used += _cells(ch)
    return ("".join(out) + ellipsis) if width > 0 else ""


def _pad(text: str, width: int, right: bool) -> str:
    gap = " " * max(0, width - sum(map(_cells, text)))
    return gap + text if right else text + gap


def _clean(value: object) -> str:
    """One line of text safe for a terminal: an action can hold a command with newlines or escapes."""
    return one_line(str(value or ""))


def action(st: dict[str, Any]) -> str:
    """What to read next to the state: why it waits or stopped, what it does, or the last tool it used."""
    state, reason = st.get("state"), st.get("reason")
    if stale_watch_reason(st):
        reason = None  # a reset run: the stop it explained no longer holds
    if state in ("waiting", "error", "ended", "stalled", "rate_limited") or (state == "idle" and reason):
        return _clean(reason)
    if state == "idle":
        if st.get("current_action"):  # /compact typed at the prompt
            return _clean(st["current_action"])
        return f"last: {_clean(st['last_tool'])}" if st.get("last_tool") else ""
    return _clean(st.get("current_action"))


def row_values(st: dict[str, Any], now: float) -> list[str]:
    """The cells of one session's row, ACTION last."""
    updated = timefmt.parse_ts(st.get("updated_at"))
    counters = st.get("counters")
    turns = counters.get("turns") if isinstance(counters, dict) else None
    project = os.path.basename(str(st.get("project") or st.get("cwd") or "").rstrip("/")) or "-"
    return [
        _clean(st.get("session_id") or "?")[:8],
        _clean(st.get("state") or "?"),
        timefmt.format_age(now - updated) if updated is not None else "?",
        str(turns) if isinstance(turns, int) else "?",
        watchcmd.label(st.get("watch")),
        _clean(project),
        action(st),
    ]


def format_row(values: list[str], width: int | None, ellipsis: str = "…") -> str:
    """One line; ``width`` None: the ACTION cell is kept whole (for pipes, grep and awk)."""
    cells = zip(values[:-1], COLUMNS, strict=True)
    fixed = "".join(_pad(fit(v, w, ellipsis), w, right) + " " for v, (_, w, right) in cells)
    if width is None:
        return (fixed + values[-1]).rstrip()
    return fit(fixed + values[-1], width, ellipsis)


HEADER = [title for title, _, _ in COLUMNS] + ["ACTION"]


def visible(statuses: list[dict[str, Any]], show_all: bool) -> list[dict[str, Any]]:
    return statuses if show_all else [st for st in statuses if st.get("state") != "ended"]


def plain_snapshot(root: str, statuses: list[dict[str, Any]], now: float, hidden: int = 0) -> str:
    more = f" ({hidden} ended hidden: --all shows them)" if hidden else ""
    task_lines = top_tasks.lines(top_tasks.view_for(root), statuses, now, None)  # tasks: top_tasks.py
    tasks_part = "".join(f"\n{line}" for line in task_lines)
    if not statuses:
        return f"no sessions recorded in {one_line(root)} yet{more}\n" + (
            tasks_part + "\n" if tasks_part else ""
        )
    lines = [format_row(HEADER, None), *(format_row(row_values(st, now), None) for st in statuses)]
    if hidden:
        lines.append(f"({hidden} ended hidden: --all shows them)")
    return "\n".join(lines + (["", *task_lines] if task_lines else [])) + "\n"


# --- plain mode ---------------------------------------------------------------------------------------


def run_plain(root: str, iterations: int | None, delay: float, show_all: bool) -> int:
    # The watcher exists before the first read, so a change made while we print is not missed.
    with DirWatcher([paths.status_dir(root)]) as watcher:
        cache = StatusCache(root)
        cache.rescan()
        rescanned = time.monotonic()
        shown = 0
        last: list[dict[str, Any]] | None = None
        while True:
            everything = cache.statuses()
            rows = visible(everything, show_all)
            text = plain_snapshot(root, rows, time.time(), len(everything) - len(rows))
            sys.stdout.write(("\n" if shown else "") + text)
            sys.stdout.flush()
            shown += 1
            last = rows
            if iterations is not None and shown >= iterations:
                return 0
            drawn = time.monotonic()
            while True:
                # -n: the next snapshot is due DELAY after this one, changed or not (top -b -n).
                # Otherwise: at the next change, at most every MIN_REDRAW_S.
                due = drawn + delay if iterations is not None else math.inf
                wake = min(due, rescanned + RESCAN_S)
                watcher.wait(max(0.0, wake - time.monotonic()))
                changed = cache.apply(watcher.take())
                if time.monotonic() - rescanned >= RESCAN_S:
                    changed |= cache.rescan()
                    rescanned = time.monotonic()
                if time.monotonic() >= due:
                    break
                if iterations is None and changed and visible(cache.statuses(), show_all) != last:
                    time.sleep(max(0.0, drawn + MIN_REDRAW_S - time.monotonic()))
                    cache.apply(watcher.take())
                    break


def top_cmd(iterations: int | None, delay: float | None = None, show_all: bool = False) -> int:
    if iterations is not None and iterations < 1:
        raise CcmError("-n/--iterations must be at least 1")
    if delay is not None and not (math.isfinite(delay) and 0.05 <= delay <= 86400):
        raise CcmError("-d/--delay must be a number of seconds from 0.05 to 86400")
    root = paths.state_dir()
    paths.ensure_layout(root)
    if iterations is not None or not (sys.stdout.isatty() and sys.stdin.isatty()):
        return run_plain(root, iterations, delay if delay is not None else DEFAULT_DELAY_S, show_all)
    from ccm_hooks.commands import topscreen

    return topscreen.run_interactive(root, show_all)
