"""Reading Claude Code's TUI from a tmux capture (``capture-pane -p``): is it really idle?

Hooks cannot see everything (an Esc interrupt, a dialog answered "No"), and typing into a pane that is not
idle is harmful: text sent while a tool runs joins the current turn, and Enter sent while a permission
dialog is open APPROVES it. So before ccm-agentd types, the screen must show Claude's empty input box,
no running turn and no dialog. The markers are Claude Code 2.1.197's: an input line starting with ``❯``
between two horizontal rules; ``esc to interrupt`` in the footer while a turn runs; ``Do you want to
proceed?`` in a permission dialog. The test harness drives the TUI with these same functions.
"""

from __future__ import annotations

import re

_RULE = re.compile(r"^\s*─{20,}\s*$")
# The rule above the input box carries the session's display name when it has one (`claude --name`, which
# ccm's task agents get): "───── fix the parser ──" on 2.1.197 and 2.1.328.
_TOP_RULE = re.compile(r"^\s*─{20,}(?: .{1,200} ─+)?\s*$")
PROMPT = "❯"
WORKING = "esc to interrupt"
DIALOGS = ("Do you want to proceed?", "Do you want to make this edit", "Do you want to create")


def _lines(screen: str) -> list[str]:
    return screen.rstrip("\n").split("\n")


def input_line(screen: str) -> str | None:
    """The text of Claude's input box (after ``❯ ``) if the box is on screen, else None.

    The box is a ``❯`` line with a horizontal rule right above it and another rule below (a long input
    wraps onto more lines before that rule). Dialog choices such as ``❯ 1. Yes`` have no rules around them.
    """
    lines = _lines(screen)
    for i, line in enumerate(lines):
        if not line.startswith(PROMPT) or i == 0 or not _TOP_RULE.match(lines[i - 1]):
            continue
        below = lines[i + 1 : i + 8]
        end = next((j for j, text in enumerate(below) if _RULE.match(text)), None)
        if end is None:
            continue
        parts = [line[len(PROMPT) :].strip(), *(text.strip() for text in below[:end])]
        return " ".join(p for p in parts if p)
    return None


def is_working(screen: str) -> bool:
    """A turn is running: the footer offers ``esc to interrupt`` (spinner and ``Running…`` come with it)."""
    return WORKING in screen


def has_dialog(screen: str) -> bool:
    """A permission (or edit) dialog is open: the input box is replaced by numbered choices."""
    return any(marker in screen for marker in DIALOGS)


def is_idle(screen: str, *, empty: bool = True) -> bool:
    """Claude waits for input: input box shown, no turn running, no dialog. ``empty=False`` also accepts a
    box that already holds typed text."""
    box = input_line(screen)
    if box is None or is_working(screen) or has_dialog(screen):
        return False
    return box == "" or not empty


def shows_text(screen: str, text: str) -> bool:
    """The input box holds ``text`` (compared whitespace-normalised, by a prefix: long input wraps)."""
    head = " ".join(text.split())[:30]
    return head in " ".join((input_line(screen) or "").split())
