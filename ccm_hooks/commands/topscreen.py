"""``ccm-hooks top`` on a terminal: the curses view.

It sleeps in ``select`` on the terminal and the status-dir watcher. A change re-reads only the files the
watcher names (``StatusCache``); the screen is redrawn at most every MIN_REDRAW_S (a burst of hook events
is drawn once), every REDRAW_S anyway so the ages stay true, and at once after a key.
"""

from __future__ import annotations

import os
import select
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ccm_hooks import paths
from ccm_hooks.commands import tmuxjump, top_tasks, watchcmd
from ccm_hooks.commands.top import (
    BY,
    HEADER,
    MIN_REDRAW_S,
    REDRAW_S,
    RESCAN_S,
    _pad,
    fit,
    format_row,
    row_values,
    visible,
)
from ccm_hooks.errors import CcmError
from ccm_hooks.statedir.fswatch import DirWatcher
from ccm_hooks.statedir.safetext import one_line
from ccm_hooks.statedir.statuscache import StatusCache

if TYPE_CHECKING:
    import curses

MESSAGE_S = 6.0  # a key's result stays on the bottom line this long (or until the selection moves)
KEYS_HELP = (
    "ccm top: keys",
    "",
    "  Up/Down, k/j     select a session (PgUp/PgDn, Home/End: by pages, to the ends)",
    "  Enter            go to its tmux pane: switch-client inside tmux, attach outside",
    "                   (top waits while you are attached; detach to come back)",
    "  w                watch mode on/off for it (a fresh run)",
    "  r                reset its watch run: the continue count back to 0, a stop cleared",
    "  a                show or hide ended sessions",
    "  ?                this help; any key closes it",
    "  q, Esc           quit",
)


class TopScreen:
    """The curses view: a title, the header, one row per session, a message line."""

    def __init__(self, stdscr: curses.window, root: str, watcher: DirWatcher, show_all: bool = False) -> None:
        import curses

        self.curses = curses
        self.stdscr = stdscr
        self.root = root
        self.watcher = watcher
        self.cache = StatusCache(root)
        self.show_all = show_all
        self.statuses: list[dict[str, Any]] = []
        self.hidden = 0
        self.sid: str | None = None  # the selection follows a session id, not a row number
        self.index = 0
        self.scroll = 0
        self.message = ""
        self.message_until = 0.0
        self.help = False
        self.encoding = stdscr.encoding or "utf-8"
        self.ellipsis = "…"
        try:
            self.ellipsis.encode(self.encoding)
        except (UnicodeError, LookupError):
            self.ellipsis = "~"  # an ASCII terminal (LANG=C)

    def reload(self) -> None:
        """The rows from the cache (no file is read here), the selection kept on its session."""
        everything = self.cache.statuses()
        self.statuses = visible(everything, self.show_all)
        self.hidden = len(everything) - len(self.statuses)
        ids = [str(st.get("session_id")) for st in self.statuses]
        if self.sid in ids:
            self.index = ids.index(self.sid)
        else:  # gone or hidden (or nothing selected yet): whatever is now on the same row
            self.index = max(0, min(self.index, len(ids) - 1))
            self.sid = ids[self.index] if ids else None

    def say(self, text: str) -> None:
        self.message = one_line(text)
        self.message_until = time.monotonic() + MESSAGE_S

    def move(self, delta: int) -> None:
        if self.statuses:
            self.index = max(0, min(self.index + delta, len(self.statuses) - 1))
            self.sid = str(self.statuses[self.index].get("session_id"))
            self.message = ""  # it was about the session selected before

    def act(self, key: str) -> None:
        """``w``: toggle watch, ``r``: reset its counter, on the selected session."""
        if self.sid is None:
            self.say("no session selected")
            return
        sid, current = self.sid, self.statuses[self.index]
        try:
            if key == "w":
                enabled = not (current.get("watch") or {}).get("enabled")
                new = watchcmd.set_session(self.root, sid, enabled=enabled, changes={}, by=BY)
                self.say(f"watch {'on' if enabled else 'off'} for {sid[:8]}")
            else:
                new = watchcmd.reset_session(self.root, sid, by=BY)
                self.say(f"counter reset for {sid[:8]} ({watchcmd.label(new.get('watch'))})")
        except (CcmError, OSError) as exc:
            self.say(f"{sid[:8]}: {exc}")
            return
        # A second key in the same burst must see this result, not the status read before it.
        self.cache.put(new)

    def jump(self) -> None:
        """Enter: to the selected session's tmux pane."""
        if self.sid is None:
            self.say("no session selected")
            return
        plan = tmuxjump.plan(self.statuses[self.index], os.environ)
        if plan.attach:  # outside tmux: hand the terminal to tmux until the user detaches
            c = self.curses
            c.def_prog_mode()
            c.endwin()
            try:
                outcome = tmuxjump.run(plan)
            finally:
                c.reset_prog_mode()
                self.stdscr.clear()
            self.say(outcome)
        else:
            self.say(tmuxjump.run(plan))

    def handle(self, key: int) -> bool:
        """False when it is time to quit."""
        c = self.curses
        if self.help:
            self.help = False  # any key closes the help
            return True
        if key in (ord("q"), ord("Q"), 27):  # 27: Esc
            return False
        page = max(1, self.stdscr.getmaxyx()[0] - 3)
        ends = len(self.statuses)
        moves = {c.KEY_UP: -1, ord("k"): -1, c.KEY_DOWN: 1, ord("j"): 1, c.KEY_PPAGE: -page,
                 c.KEY_NPAGE: page, c.KEY_HOME: -ends, c.KEY_END: ends}  # fmt: skip
        if key in moves:
            self.move(moves[key])
        elif key in (ord("w"), ord("r")):
            self.act(chr(key))
        elif key in (10, 13, c.KEY_ENTER):
            self.jump()
        elif key == ord("a"):
            self.show_all = not self.show_all
            self.reload()
            self.say("showing ended sessions" if self.show_all else "ended sessions hidden")
        elif key == ord("?"):
            self.help = True
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
        if self.help:
            for y, line in enumerate(KEYS_HELP):
                self.put(y, line, c.A_BOLD if y == 0 else 0)
            self.stdscr.noutrefresh()
            c.doupdate()
            return
        sessions = f"{len(self.statuses)} session" + ("" if len(self.statuses) == 1 else "s")
        hidden = f" (+{self.hidden} ended: a)" if self.hidden else ""
        self.put(0, f"ccm top: {sessions}{hidden}  Enter go  w watch  r reset  ? keys  q quit", c.A_BOLD)
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
            self.put(2, "no sessions yet" if not self.hidden else "no live sessions (a shows ended ones)")
        if height >= 3:
            if self.message and time.monotonic() >= self.message_until:
                self.message = ""
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
        self.cache.rescan()
        rescanned = time.monotonic()
        drawn = 0.0
        dirty = True
        empty_wakeups = 0
        while True:
            now = time.monotonic()
            if (dirty and now - drawn >= MIN_REDRAW_S) or now - drawn >= REDRAW_S:
                self.reload()
                self.draw()
                drawn, dirty = time.monotonic(), False
            # Sleep until a key, the next redraw that is due (soon if a change waits), or the rescan.
            due = drawn + (MIN_REDRAW_S if dirty else REDRAW_S)
            if self.message:
                due = min(due, self.message_until)
            wake = min(due, rescanned + RESCAN_S)
            ready, _, _ = select.select([stdin_fd, watch_fd], [], [], max(0.0, wake - time.monotonic()))
            if watch_fd in ready:
                self.watcher.wait(0)
                dirty |= self.cache.apply(self.watcher.take())
            if time.monotonic() - rescanned >= RESCAN_S:
                dirty |= self.cache.rescan()
                rescanned = time.monotonic()
            if self.message and time.monotonic() >= self.message_until:
                dirty = True
            # Read keys even when select saw none: a terminal resize is reported as a key (KEY_RESIZE).
            got_key = False
            for key in self.keys():
                got_key = True
                if not self.handle(key):
                    return 0
            if got_key:
                drawn = 0.0  # answer a key at once
                dirty = True
            # stdin readable yet no key, time after time: the terminal is gone (EOF). Don't spin on it.
            empty_wakeups = empty_wakeups + 1 if stdin_fd in ready and not got_key else 0
            if empty_wakeups > 50:
                return 0


def run_interactive(root: str, show_all: bool = False) -> int:
    import curses

    with DirWatcher([paths.status_dir(root)]) as watcher:
        try:
            return curses.wrapper(lambda stdscr: TopScreen(stdscr, root, watcher, show_all).run())
        except curses.error as exc:
            raise CcmError(
                f"cannot run the terminal view ({exc}; TERM={os.environ.get('TERM', '')!r}); "
                "`ccm-hooks top | cat` prints plain snapshots"
            ) from None
