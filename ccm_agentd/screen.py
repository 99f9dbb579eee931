"""Reading Claude Code's TUI from tmux before typing into it: is the live input box empty, and nothing else
going on? (spec/typing.md; the facts are from tests/fixtures/screens, both versions, both renderers.)

Typing into a pane that is not idle is harmful: Enter sent into a permission dialog approves it, into the
2.1.328 folder-trust dialog exits claude, text sent while a tool runs joins the turn. So the reader is
structural and strict, and anything it does not recognise is ``unknown``: type nothing and say why.

- The live input box is the LAST pair of full-width rules (exactly ``─`` x pane width, column 0) whose first
  line starts with the prompt ``❯`` (``!`` is shell mode). Transcript text above it can say anything (a reply
  quoting ``esc to interrupt`` or ``Do you want to proceed?``) and is never looked at: Claude indents it and
  never draws full-width rules in it. No such box: a dialog, the trust question, the rewind selector, a reset
  terminal: unknown.
- tmux's cursor position (Claude hides the cursor but tmux knows it) must be inside that box.
- The footer (the lines under the box) alone says whether a turn runs (``esc to interrupt``), whether Claude
  Code will act by itself (``Continuing automatically``, ``Esc to cancel``: a usage limit's own continue),
  and it must be one ccm knows: a footer it has never seen means unknown.
- The box is empty when the cursor sits right after ``❯ `` and the box holds nothing, or only a hint Claude
  draws dim (``Resend your message to try again`` after an API error on 2.1.328): with ``capture-pane -e`` the
  hint is dim; from plain text, the known hints are recognised by their words.
- Without colours (``NO_COLOR``, ``CI`` set, ...: Claude Code then draws no attribute but its reverse-video
  cursor cell) a hint is not dim, and the screen is the same byte for byte as a draft of the hint's words
  with the cursor moved to its start. Such a box is ``typed`` with ``maybe_hint``: delivery/readiness.py
  tells them apart by pressing End, which moves the cursor over a draft and leaves it before a hint.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PROMPT = "❯"
SHELL_PROMPT = "!"
RULE = "─"
WORKING = "esc to interrupt"
# Footers of an idle box: the permission mode line (both versions; 2.1.197 shows "? for shortcuts").
IDLE_FOOTERS = ("? for shortcuts", "auto mode on", "manual mode on", "bypass permissions on",
                "accept edits on", "plan mode on", "don't ask on", "paste again to expand")  # fmt: skip
# Claude Code acts by itself soon (2.1.328's continue at a usage limit's reset): never type then.
SELF_ACTING = ("Continuing automatically", "Continuing shortly", "Esc to cancel")
HINTS = ("Resend your message to try again", "Once fixed, resend your message", "Run /rewind to go back",
         "Press up to edit queued messages")  # fmt: skip
_SGR = re.compile(r"\x1b\[([0-9;:]*)m")
_NAMED_RULE = re.compile(r"^─{3,} \S.{0,200} ─+$")
_ANY_ESCAPE = re.compile(r"\x1b\[[0-9;:?]*[A-Za-z]")
_MONOCHROME = frozenset(("", "0", "7", "27", "39", "49"))  # reset, reverse on/off, default colours


@dataclass(frozen=True)
class View:
    """One consistent look at a pane: ``capture-pane -p -e`` lines and where tmux says the cursor is."""

    lines: list[str]  # with SGR sequences (``-e``), or plain text
    cursor_x: int | None = None
    cursor_y: int | None = None
    width: int | None = None
    in_mode: bool = False  # copy mode or another tmux mode: it swallows send-keys
    dead: bool = False


@dataclass(frozen=True)
class Reading:
    verdict: str  # idle | typed | working | self_acting | unknown
    box: str | None  # the user's text in the box ("" when empty), None without a box
    footer: str
    why: str  # for people: what was seen
    maybe_hint: bool = False  # a colourless screen: the box holds a known hint, or a draft of its words

    @property
    def idle(self) -> bool:
        return self.verdict == "idle"


def plain(line: str) -> str:
    return _ANY_ESCAPE.sub("", line)


def _codes(match: re.Match[str]) -> list[str]:
    """The parameters of one SGR sequence (``ESC[m`` is a reset; ``:`` separates sub-parameters)."""
    return (match.group(1) or "0").replace(":", ";").split(";")


def _styled(line: str) -> list[tuple[str, bool, bool]]:
    """(char, dim, reverse) of each character of a ``capture-pane -e`` line."""
    out: list[tuple[str, bool, bool]] = []
    dim = reverse = False
    pos = 0
    for match in _SGR.finditer(line + "\x1b[m"):
        out.extend((ch, dim, reverse) for ch in plain(line[pos : match.start()]))
        pos = match.end()
        for code in _codes(match):
            if code in ("", "0"):
                dim = reverse = False
            elif code == "2":
                dim = True
            elif code == "22":
                dim = False
            elif code == "7":
                reverse = True
            elif code == "27":
                reverse = False
    return out


def _colourless(lines: list[str]) -> bool:
    """Claude Code drew this screen without colours or dim (only its reverse-video cursor cell)."""
    for line in lines:
        for match in _SGR.finditer(line):
            if any(code not in _MONOCHROME for code in _codes(match)):
                return False
    return True


def _is_rule(line: str, width: int | None) -> bool:
    text = line.rstrip()
    if width:
        return text == RULE * width
    return len(text) >= 20 and set(text) == {RULE}  # plain text of unknown width: a long rule at column 0


def _is_top_rule(line: str, width: int | None) -> bool:
    """The rule above the box; it carries the session's name when it has one (``claude --name``):
    ``───── fix the parser ──``, still at column 0."""
    if _is_rule(line, width):
        return True
    match = _NAMED_RULE.match(line.rstrip())
    return match is not None and (not width or len(line.rstrip()) >= width - 2)


def _hint(raw_first: str) -> str | None:
    """The box's first line, if all of its text is dim (a hint Claude drew), from ``-e`` attributes."""
    chars = _styled(raw_first)[2:]  # after the prompt and its no-break space
    visible = [(ch, dim) for ch, dim, reverse in chars if not reverse and ch.strip()]
    if not visible or not all(dim for _, dim in visible):
        return None
    return "".join(ch for ch, _, _ in chars).strip()


def _ghost(raw: str) -> int:
    """How many characters at the end of a box line are a completion Claude suggests, not typed text:
    2.1.197 draws the rest of a slash command it would complete (``/ex`` -> ``it``) after the text, its
    first character in the cursor cell (reverse video), the others dim. Enter submits the text without it."""
    chars = _styled(raw)
    end = len(chars)
    while end and not chars[end - 1][0].strip() and not chars[end - 1][2]:
        end -= 1
    i = end
    while i and chars[i - 1][1] and not chars[i - 1][2]:
        i -= 1
    if not i or not chars[i - 1][2] or not chars[i - 1][0].strip():
        return 0
    return len(chars) - (i - 1)


def read(view: View) -> Reading:
    """What the pane shows, for deciding whether ccm may type into it."""
    if view.dead:
        return Reading("unknown", None, "", "the pane's process has exited")
    if view.in_mode:
        return Reading("unknown", None, "", "the pane is in a tmux mode (copy mode swallows keys)")
    lines = [plain(line) for line in view.lines]
    while lines and not lines[-1].strip():
        lines.pop()
    last = next((line.strip() for line in reversed(lines) if line.strip()), "")
    rules = [i for i, line in enumerate(lines) if _is_rule(line, view.width)]
    bottom = rules[-1] if rules else -1
    top = next((i for i in range(bottom - 1, -1, -1) if _is_top_rule(lines[i], view.width)), -1)
    if top < 0:
        return Reading("unknown", None, "", f"no input box on screen (a dialog?): {last[:120]!r}")
    body = lines[top + 1 : bottom]
    footer = " ".join(line.strip() for line in lines[bottom + 1 :] if line.strip())
    if not body or not body[0].startswith(PROMPT):
        what = "shell mode (!)" if body and body[0].startswith(SHELL_PROMPT) else "no input box"
        return Reading("unknown", None, footer, f"{what} on screen: {last[:120]!r}")
    if view.cursor_y is not None and not top < view.cursor_y < bottom:
        return Reading("unknown", None, footer, "the cursor is not in the input box")
    raw_first = view.lines[top + 1] if top + 1 < len(view.lines) else ""
    at = view.cursor_y if view.cursor_y is not None else bottom - 1
    if top < at < bottom and "\x1b[" in view.lines[at] and (cut := _ghost(view.lines[at])):
        body[at - top - 1] = plain(view.lines[at])[:-cut]
    text = " ".join([body[0][len(PROMPT) :].strip("\u00a0 "), *(line.strip() for line in body[1:])]).strip()
    hint = _hint(raw_first) if "\x1b[" in raw_first else (text if text in HINTS else None)
    at_start = view.cursor_x is None or (view.cursor_x == 2 and view.cursor_y == top + 1)
    empty = len(body) == 1 and at_start and (text == "" or text == hint)
    unsure = (
        not empty and len(body) == 1 and at_start and view.cursor_x is not None and text in HINTS
        and "\x1b[" in raw_first and _colourless(view.lines)
    )  # fmt: skip
    box = "" if empty else text
    if WORKING in footer:
        return Reading("working", box, footer, "a turn is running (esc to interrupt)")
    if any(marker in footer for marker in SELF_ACTING):
        return Reading("self_acting", box, footer, f"Claude Code will act by itself: {footer[:120]!r}")
    if not empty and not unsure:
        why = "the input box holds text (a draft?)" if text else "the input box holds blank text"
        return Reading("typed", box, footer, why)
    if not any(marker in footer for marker in IDLE_FOOTERS):
        return Reading("unknown", box, footer, f"a footer ccm does not know: {footer[:120]!r}")
    if unsure:
        why = f"the input box shows {text!r} without colours: Claude Code's hint, or a draft of its words?"
        return Reading("typed", box, footer, why, maybe_hint=True)
    return Reading("idle", "", footer, "idle: an empty input box")


def read_text(text: str) -> Reading:
    """``read`` for plain ``capture-pane -p`` text (no cursor, no attributes: hints known by their words)."""
    return read(View(text.rstrip("\n").split("\n")))


# --- the plain-text helpers the test harness drives the TUI with ---------------------------------------


def input_line(text: str) -> str | None:
    """The text in the live input box ("" when empty or a hint), or None without a box."""
    reading = read_text(text)
    return reading.box if reading.verdict != "unknown" or reading.box is not None else None


def is_working(text: str) -> bool:
    return read_text(text).verdict == "working"


def has_dialog(text: str) -> bool:
    """No input box, but a question: a permission dialog and its kin (``Do you want to ...``)."""
    reading = read_text(text)
    return reading.box is None and ("Do you want to" in text or "Esc to cancel" in text)


def is_idle(text: str, *, empty: bool = True) -> bool:
    """Idle with an empty box; ``empty=False`` also accepts a box holding typed text (no turn running)."""
    verdict = read_text(text).verdict
    return verdict == "idle" or (not empty and verdict == "typed")


def same_box_text(box: str | None, wanted: str) -> bool:
    """The box holds ``wanted``, whitespace aside: a long input wraps onto indented lines, anywhere."""
    return box is not None and "".join(box.split()) == "".join(wanted.split())


def shows_text(text: str, wanted: str) -> bool:
    """The live box of a plain capture holds ``wanted``."""
    return same_box_text(input_line(text), wanted)
