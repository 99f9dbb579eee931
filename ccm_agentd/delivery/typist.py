"""The one path that types into a Claude Code pane: the exact text, once, or nothing (spec/typing.md).

Every text ccm types (queued prompts, watch handoffs, the resume after a usage limit) goes through
``type_once``: the pane must read idle (an empty input box) right before; the text goes in as a bracketed
paste, so tmux's argument parser never sees it (a final ``;`` would be a command separator, a leading ``-``
a flag); Enter is pressed only once the box shows exactly that text; otherwise nothing is submitted, and
text of ccm's own left in the box is cleared (``C-u``, which only ever deletes the line just pasted).
"""

from __future__ import annotations

import re
import time

from ccm_agentd import panes, screen

SHOW_TEXT_S = 2.0  # how long the pasted text may take to appear in the input box
COMPLETION_S = 0.5  # how long an explicit command's completions may take to appear after its text
_POPUP = re.compile(r"^\s*❯\s+(/\S+)")  # 2.1.328's highlighted slash-command completion, above the box
# 2.1.197 lists the completions under the box instead, unmarked, the selected one (the first) on top:
# "/exit                         Exit the CLI". Enter runs it (`/ex` + Enter ended the session).
_LIST = re.compile(r"^(/\S+)\s{2,}\S")


def type_once(
    tmux: panes.Tmux, socket: str, pane: str, text: str, buffer: str, command: bool = False,
    hint_probed: bool = False,
) -> tuple[str, str]:  # fmt: skip
    """Type ``text`` and press Enter. Returns (outcome, detail): ``entered`` (Enter pressed on exactly
    ``text``), ``not_idle`` (nothing typed), ``lost`` (the text never appeared: nothing to submit) or
    ``mismatch`` (the box showed something else: Enter not pressed). ``hint_probed``: readiness.look found
    the box's colourless hint words to be Claude Code's hint (End left the cursor before them)."""
    view = tmux.view(socket, pane)
    reading = screen.read(view) if view is not None else None
    if reading is None or not (reading.idle or (hint_probed and reading.maybe_hint)):
        return "not_idle", reading.why if reading else "the pane could not be read"
    if not tmux.paste(socket, pane, text, buffer):
        return "lost", "tmux refused the paste"
    deadline = time.monotonic() + SHOW_TEXT_S
    while True:
        view = tmux.view(socket, pane)
        reading = screen.read(view) if view is not None else None
        if reading is not None and reading.verdict == "typed" and screen.same_box_text(reading.box, text):
            break
        if time.monotonic() > deadline:
            if reading is None or reading.box in (None, ""):
                return "lost", "the text did not appear in the input box"
            if reading.verdict == "typed" and screen.same_box_text(reading.box, text[: len(reading.box)]):
                _clear_own(tmux, socket, pane, reading.box)
                return "lost", "only part of the text appeared in the input box"
            return "mismatch", f"the input box shows {str(reading.box)[:80]!r}, not the text: not submitted"
        time.sleep(0.01)
    if command and view is not None:
        # The completions may be drawn a frame after the text: look a little longer before Enter.
        chosen = _completion(view, reading)
        until = time.monotonic() + COMPLETION_S
        while chosen is None and time.monotonic() < until:
            time.sleep(0.02)
            view = tmux.view(socket, pane)
            chosen = _completion(view, reading) if view is not None else None
        if chosen is not None and chosen != text.split()[0]:
            _clear_own(tmux, socket, pane, text)
            return "mismatch", f"the TUI would complete {text.split()[0]!r} to {chosen!r}: not submitted"
    tmux.press_enter(socket, pane)
    return "entered", ""


def _completion(view: screen.View, reading: screen.Reading) -> str | None:
    """The slash command the TUI would run on Enter, where it shows it (2.1.328: marked ``❯`` above the
    box; 2.1.197: the first line under the box)."""
    lines = [screen.plain(line) for line in view.lines]
    rules = [i for i, line in enumerate(lines) if line.rstrip() and set(line.rstrip()) == {screen.RULE}]
    top = rules[-2] if len(rules) >= 2 else len(lines)
    for line in lines[max(0, top - 12) : top]:
        match = _POPUP.match(line)
        if match:
            return match.group(1)
    below = [line for line in lines[rules[-1] + 1 :] if line.strip()] if rules else []
    match = _LIST.match(below[0]) if below else None
    return match.group(1) if match else None


def _clear_own(tmux: panes.Tmux, socket: str, pane: str, text: str) -> None:
    """Delete the text ccm just pasted (the box held nothing before): C-u clears the line. Never Esc, which
    twice on an empty box opens Rewind."""
    if text and "\n" not in text:
        tmux.press(socket, pane, "C-u")
