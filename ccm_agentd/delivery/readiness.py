"""May ccm type into this session's pane now? Three witnesses, all of which must say yes (spec/typing.md):

1. tmux: the session's pane exists, is alive, and runs claude;
2. Claude Code's live registry (``~/.claude/sessions/<pid>.json``, the structured signal both supported
   versions keep): ``idle``, for this session;
3. the screen: an empty input box and a footer ccm knows (ccm_agentd/screen.py). On a screen drawn without
   colours a known hint's words with the cursor at their start may be the hint or a draft: End tells them
   apart (it moves the cursor over a draft only), and nothing else is pressed.

Anything missing or unknown is a no, with a reason a person can read; an unrecognised screen or registry
status is also reported as such (``ccm-agentd status``), because it is what a new Claude Code version looks
like to ccm.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from ccm_agentd import panes, registry, screen

log = logging.getLogger("ccm_agentd.delivery")
HINT_PROBE_S = 1.0  # how long End may take to move the cursor over a draft (Claude redraws within a frame)

RATE_LIMIT_MENU = ("What do you want to do?", "Stop and wait for limit to reset")


@dataclass(frozen=True)
class Look:
    ok: bool
    why: str
    reading: screen.Reading | None = None
    unknown: bool = False  # the screen or the registry said something ccm does not know
    # 2.1.197's own usage-limit menu (``/rate-limit-options``) is open: Esc closes it, which is the same
    # as its first choice, "Stop and wait for limit to reset".
    rate_limit_menu: bool = False


def look(tmux: panes.Tmux, status: dict[str, object], registry_dir: str | None = None) -> Look:
    socket, pane = status.get("tmux_socket"), status.get("tmux_pane")
    if not isinstance(socket, str) or not isinstance(pane, str) or not socket or not pane:
        return Look(False, "the session does not run in tmux: nothing can be typed into it")
    info = tmux.pane_info(socket, pane)
    if info is None or info.dead:
        return Look(False, "the pane is gone")
    if not panes.runs_claude(info, status.get("claude_pid")):
        return Look(False, f"the pane runs {info.command!r}, not claude")
    entry = registry.read(status.get("claude_pid"), registry_dir)
    if entry is not None:
        if entry.session_id and entry.session_id != status.get("session_id"):
            return Look(False, "Claude Code's registry names another session for this process")
        if not entry.known:
            why = f"Claude Code's registry says {entry.status!r}, which ccm does not know"
            return Look(False, why, unknown=True)
    view = tmux.view(socket, pane)
    if view is None:
        return Look(False, "the pane could not be read")
    reading = screen.read(view)
    text = "\n".join(screen.plain(line) for line in view.lines)
    menu = reading.verdict == "unknown" and all(marker in text for marker in RATE_LIMIT_MENU)
    if entry is not None and entry.status != "idle":
        waiting = f" ({entry.waiting_for})" if entry.waiting_for else ""
        return Look(False, f"Claude Code says it is {entry.status}{waiting}", reading, rate_limit_menu=menu)
    if reading.maybe_hint:
        why = _draft_of_hint_words(tmux, socket, pane)
        if why:
            log.info("typing nothing into %s: %s", pane, why)
            return Look(False, why, reading)
        log.info("the box in %s shows Claude Code's hint without colours (End left the cursor)", pane)
        return Look(True, "", reading)
    if reading.verdict != "idle":
        unknown = reading.verdict == "unknown" and not menu
        return Look(False, reading.why, reading, unknown=unknown, rate_limit_menu=menu)
    return Look(True, "", reading)


def _draft_of_hint_words(tmux: panes.Tmux, socket: str, pane: str) -> str:
    """On a colourless screen, whether the box's hint words are a draft (why, for the log) or the hint ("").

    End moves the cursor to the end of a draft and leaves it where it is before a hint (the box is empty);
    either way nothing is typed or deleted. Measured on both versions (tests/fixtures/screens/*-nocolor).
    A draft that End does not move within HINT_PROBE_S is read as the hint: the paste then goes in front
    of it, the box shows more than the text, and Enter is not pressed (``mismatch``, typist.py).
    """
    if not tmux.press(socket, pane, "End"):
        return "tmux refused a key"
    deadline = time.monotonic() + HINT_PROBE_S
    while time.monotonic() < deadline:
        time.sleep(0.05)
        view = tmux.view(socket, pane)
        reading = screen.read(view) if view is not None else None
        if reading is None or not reading.maybe_hint:
            what = reading.why if reading is not None else "the pane could not be read"
            return f"{what} (End moved the cursor: not a hint)"
    return ""
