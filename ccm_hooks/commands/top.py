"""``ccm-hooks top``: every session in one table, redrawn when a status file changes.

On a terminal (stdin and stdout both ttys) it is a curses view with keys to select a session, toggle its
watch mode and reset its counter. Otherwise, or with ``-n``, it prints plain snapshots like ``top -b``: one
table now, then a blank line and another table after each change.
"""

from __future__ import annotations

import os
import select
import sys
import time
import unicodedata
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ccm_hooks import paths
from ccm_hooks.commands import top_tasks, watchcmd
from ccm_hooks.errors import CcmError
from ccm_hooks.statedir import reader, timefmt
from ccm_hooks.statedir.fswatch import DirWatcher

if TYPE_CHECKING:
    import curses

REDRAW_S = 2.0  # redraw this often even when nothing changed, so the ages stay true
PLAIN_RESCAN_S = 5.0  # watchers can drop events: plain mode re-reads this often anyway
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
    """One line of printable text: an action can hold a command with newlines or escape sequences."""
    flat = " ".join(str(value or "").split())
    return "".join(ch if ch.isprintable() else "?" for ch in flat)


def action(st: dict[str, Any]) -> str:
    """What to read next to the state: why it waits or stopped, what it does, or the last tool it used."""
    state, reason = st.get("state"), st.get("reason")
    if state in ("waiting", "error", "ended") or (state == "idle" and reason):
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


def plain_snapshot(root: str, statuses: list[dict[str, Any]], now: float) -> str:
    task_lines = top_tasks.lines(top_tasks.view_for(root), statuses, now, None)  # tasks: top_tasks.py
    if not statuses:
        return f"no sessions recorded in {root} yet\n" + "".join(f"\n{line}" for line in task_lines)
    lines = [format_row(HEADER, None), *(format_row(row_values(st, now), None) for st in statuses)]
    return "\n".join(lines + (["", *task_lines] if task_lines else [])) + "\n"


# --- plain mode ---------------------------------------------------------------------------------------


def run_plain(root: str, iterations: int | None) -> int:
    # The watcher exists before the first read, so a change made while we print is not missed.
    with DirWatcher([paths.status_dir(root)]) as watcher:
        statuses = reader.load_statuses(root)
        shown = 0
        while True:
            sys.stdout.write(("\n" if shown else "") + plain_snapshot(root, statuses, time.time()))
            sys.stdout.flush()
            shown += 1
            if iterations is not None and shown >= iterations:
                return 0
            statuses = _next_change(watcher, root, statuses)


def _next_change(watcher: DirWatcher, root: str, last: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Block until the statuses differ from ``last``. Comparing, rather than trusting each event, skips
    the temp-file events of an atomic write and still notices a change the watcher dropped."""
    while True:
        watcher.wait(PLAIN_RESCAN_S)
        statuses = reader.load_statuses(root)
        if statuses != last:
            return statuses


# --- interactive mode ----------------------------------------------------------------------------------


class TopScreen:
    """The curses view: a title, the header, one row per session, a message line."""

    def __init__(self, stdscr: curses.window, root: str, watcher: DirWatcher) -> None:
        import curses

        self.curses = curses
        self.stdscr = stdscr
        self.root = root
        self.watcher = watcher
        self.statuses: list[dict[str, Any]] = []
        self.sid: str | None = None  # the selection follows a session id, not a row number
        self.index = 0
        self.scroll = 0
        self.message = ""
        self.encoding = stdscr.encoding or "utf-8"
        self.ellipsis = "…"
        try:
            self.ellipsis.encode(self.encoding)
        except (UnicodeError, LookupError):
            self.ellipsis = "~"  # an ASCII terminal (LANG=C)

    def reload(self) -> None:
        self.statuses = reader.load_statuses(self.root)
        ids = [str(st.get("session_id")) for st in self.statuses]
        if self.sid in ids:
            self.index = ids.index(self.sid)
        else:  # gone (or nothing selected yet): whatever is now on the same row
            self.index = max(0, min(self.index, len(ids) - 1))
            self.sid = ids[self.index] if ids else None

    def move(self, delta: int) -> None:
        if self.statuses:
            self.index = max(0, min(self.index + delta, len(self.statuses) - 1))
            self.sid = str(self.statuses[self.index].get("session_id"))

    def act(self, key: str) -> None:
        """``w``: toggle watch, ``r``: reset its counter, on the selected session."""
        if self.sid is None:
            self.message = "no session selected"
            return
        sid, current = self.sid, self.statuses[self.index]
        try:
            if key == "w":
                enabled = not (current.get("watch") or {}).get("enabled")
                new = watchcmd.set_session(self.root, sid, enabled=enabled, changes={}, by=BY)
                self.message = f"watch {'on' if enabled else 'off'} for {sid[:8]}"
            else:
                new = watchcmd.reset_session(self.root, sid, by=BY)
                self.message = f"counter reset for {sid[:8]} ({watchcmd.label(new.get('watch'))})"
        except (CcmError, OSError) as exc:
            self.message = f"{sid[:8]}: {exc}"
            return
        # A second key in the same burst must see this result, not the status read before it.
        self.statuses[self.index] = new

    def handle(self, key: int) -> bool:
        """False when it is time to quit."""
        c = self.curses
        if key in (ord("q"), ord("Q"), 27):  # 27: Esc
            return False
        if key in (c.KEY_UP, ord("k")):
            self.move(-1)
        elif key in (c.KEY_DOWN, ord("j")):
            self.move(1)
        elif key in (ord("w"), ord("r")):
            self.act(chr(key))
        return True

    def put(self, y: int, text: str, attr: int = 0, fill: bool = False) -> None:
        """Draw one line cut to the window; ``fill`` pads it so a highlight spans the whole width."""
        height, width = self.stdscr.getmaxyx()
        if not 0 <= y < height:
            return
        line = fit(text, width, self.ellipsis)
        if fill:
            line = _pad(line, width, False)
        try:  # unencodable characters become "?" instead of an exception
            self.stdscr.addstr(y, 0, line.encode(self.encoding, "replace").decode(self.encoding), attr)
        except self.curses.error:
            pass  # writing the bottom-right cell "fails" after drawing it; a tiny window clips the rest

    def draw(self) -> None:
        c = self.curses
        height, width = self.stdscr.getmaxyx()
        self.stdscr.erase()
        sessions = f"{len(self.statuses)} session" + ("" if len(self.statuses) == 1 else "s")
        self.put(0, f"ccm top: {sessions}  w watch on/off  r reset  q quit", c.A_BOLD)
        self.put(1, format_row(HEADER, width, self.ellipsis), c.A_UNDERLINE)
        now = time.time()
        # Tasks (top_tasks.py) below the sessions, in at most half of the rows.
        task_lines = top_tasks.lines(top_tasks.view_for(self.root), self.statuses, now, width)
        task_lines = task_lines[: max(0, (height - 4) // 2)]
        rows = max(0, height - 3 - (len(task_lines) + 1 if task_lines else 0))  # title, header, message
        for i, line in enumerate(task_lines):
            self.put(2 + rows + 1 + i, line, c.A_UNDERLINE if i == 0 else 0)
        # Scroll just enough to keep the selection visible, and no further than needed to fill the rows.
        self.scroll = max(min(self.scroll, self.index, len(self.statuses) - rows), self.index - rows + 1, 0)
        for i, st in enumerate(self.statuses[self.scroll : self.scroll + rows]):
            row = format_row(row_values(st, now), width, self.ellipsis)
            selected = self.scroll + i == self.index
            self.put(2 + i, row, c.A_REVERSE if selected else 0, fill=selected)
        if not self.statuses and rows:
            self.put(2, "no sessions yet")
        if height >= 3:
            self.put(height - 1, self.message or (self.sid or ""))
        self.stdscr.noutrefresh()
        c.doupdate()

    def keys(self) -> Iterator[int]:
        """Every key pending, without waiting."""
        self.stdscr.timeout(0)
        key = self.stdscr.getch()
        while key != -1:
            yield key
            key = self.stdscr.getch()

    def run(self) -> int:
        c = self.curses
        try:
            c.curs_set(0)
        except c.error:
            pass  # some terminals cannot hide the cursor
        c.set_escdelay(25)  # Esc quits; don't wait the default second for an escape sequence
        self.stdscr.keypad(True)
        watch_fd, stdin_fd = self.watcher.fileno(), sys.stdin.fileno()
        empty_wakeups = 0
        while True:
            self.reload()
            self.draw()
            # Sleep until a status file changes, a key arrives, or it is time to tick the ages.
            ready, _, _ = select.select([stdin_fd, watch_fd], [], [], REDRAW_S)
            if watch_fd in ready:
                self.watcher.wait(0)  # drain the events; the reload above reads the files
            # Read keys even when select saw none: a terminal resize is reported as a key (KEY_RESIZE).
            got_key = False
            for key in self.keys():
                got_key = True
                if not self.handle(key):
                    return 0
            # stdin readable yet no key, time after time: the terminal is gone (EOF). Don't spin on it.
            empty_wakeups = empty_wakeups + 1 if stdin_fd in ready and not got_key else 0
            if empty_wakeups > 50:
                return 0


def run_interactive(root: str) -> int:
    import curses

    with DirWatcher([paths.status_dir(root)]) as watcher:
        try:
            return curses.wrapper(lambda stdscr: TopScreen(stdscr, root, watcher).run())
        except curses.error as exc:
            raise CcmError(
                f"cannot run the terminal view ({exc}; TERM={os.environ.get('TERM', '')!r}); "
                "`ccm-hooks top | cat` prints plain snapshots"
            ) from None


def top_cmd(iterations: int | None) -> int:
    if iterations is not None and iterations < 1:
        raise CcmError("-n/--iterations must be at least 1")
    root = paths.state_dir()
    paths.ensure_layout(root)
    if iterations is not None or not (sys.stdout.isatty() and sys.stdin.isatty()):
        return run_plain(root, iterations)
    return run_interactive(root)
