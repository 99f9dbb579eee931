"""May ccm type into this session's pane now? Three witnesses, all of which must say yes (spec/typing.md):

1. tmux: the session's pane exists, is alive, and runs claude;
2. Claude Code's live registry (``~/.claude/sessions/<pid>.json``, the structured signal both supported
   versions keep): ``idle``, for this session;
3. the screen: an empty input box and a footer ccm knows (ccm_agentd/screen.py).

Anything missing or unknown is a no, with a reason a person can read; an unrecognised screen or registry
status is also reported as such (``ccm-agentd status``), because it is what a new Claude Code version looks
like to ccm.
"""

from __future__ import annotations

from dataclasses import dataclass

from ccm_agentd import panes, registry, screen

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
    if reading.verdict != "idle":
        unknown = reading.verdict == "unknown" and not menu
        return Look(False, reading.why, reading, unknown=unknown, rate_limit_menu=menu)
    return Look(True, "", reading)
