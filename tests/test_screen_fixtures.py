"""What real Claude Code screens look like (tests/fixtures/screens: 2.1.328 and 2.1.197 captured in tmux).

Two kinds of checks, no claude process needed:

* layout facts every screen shares, which a reader of the pane can rely on: the LIVE input box is the last
  pair of full-width rules (exactly ``─`` x pane width, column 0) whose first line starts with the prompt
  character; the cursor that tmux reports is inside it; the footer is the line(s) right below it and says
  ``esc to interrupt`` exactly while a turn runs; text Claude draws in the box that is not the user's (a
  hint) is dim in ``capture-pane -e`` and the cursor sits before it. Transcript text never forms such a box:
  Claude indents it (two columns) and does not draw full-width rules in it.
* what ``ccm_agentd/screen.py`` answers on each screen today; its known misreadings are strict xfails (fix
  the reader, then drop the mark).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from ccm_agentd import screen

SCREENS = Path(__file__).resolve().parent / "fixtures" / "screens"
ALL = sorted(SCREENS.glob("*/*.txt"))
PROMPTS = ("❯", "!")  # "!" in shell mode


def fixture_id(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


def label(name: str) -> str:
    """What the screen really is: idle (empty box), typed (box holds text), working, shell, no_box."""
    special = {
        "after_esc_model_turn_prompt_restored": "typed",  # Esc puts the prompt back into the box
        "after_send_keys_l_dash_R_terminal_reset": "no_box",
        "after_trust_dialog_enter_exited": "no_box",  # claude exited: the pane is dead
        "usage_limit_oauth_rate_limit_options_dialog": "no_box",
        "folder_trust_dialog": "no_box",
        "rewind_selector_after_double_esc_on_empty_box": "no_box",
        # A turn runs, but with text in the box the footer drops "esc to interrupt" (both versions): only
        # the spinner line above the box still tells. Typed text alone already makes it unsafe to type.
        "working_with_text_typed": "typed",
    }
    if name in special:
        return special[name]
    for prefix, kind in (
        ("idle_", "idle"),
        ("after_", "idle"),
        ("usage_limit_", "idle"),
        ("working_", "working"),
        ("typed_", "typed"),
        ("slash_autocomplete_", "typed"),
        ("shell_mode_", "shell"),
        ("dialog_", "no_box"),
    ):
        if name.startswith(prefix):
            return kind
    raise AssertionError(f"no label for {name}: add one")


@dataclass
class Box:
    top: int  # index of the rule above the box
    bottom: int  # index of the rule below it
    prompt: str
    lines: list[str]
    footer: list[str]


def live_box(text: str, width: int) -> Box | None:
    """The live input box: the LAST pair of full-width rules, if its first line starts with a prompt."""
    lines = text.rstrip("\n").split("\n")
    rules = [i for i, line in enumerate(lines) if line.rstrip() == "─" * width]
    if len(rules) < 2:
        return None
    top, bottom = rules[-2], rules[-1]
    first = lines[top + 1] if bottom - top >= 2 else ""
    if not first.startswith(PROMPTS):
        return None
    footer = [line for line in lines[bottom + 1 :] if line.strip()]
    return Box(top, bottom, first[0], lines[top + 1 : bottom], footer)


def meta(path: Path) -> dict[str, int]:
    data: dict[str, int] = json.loads(path.with_suffix(".json").read_text())
    return data


_SGR = re.compile(r"\x1b\[([0-9;]*)m")


def styled_chars(ansi_line: str) -> list[tuple[str, bool, bool]]:
    """(char, dim, reverse) for each character of one ``capture-pane -e`` line (SGR only)."""
    out: list[tuple[str, bool, bool]] = []
    dim = reverse = False
    pos = 0
    for match in _SGR.finditer(ansi_line + "\x1b[m"):
        out.extend((ch, dim, reverse) for ch in ansi_line[pos : match.start()])
        pos = match.end()
        for code in (match.group(1) or "0").split(";"):
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


def box_hint(ansi_text: str, box: Box) -> str | None:
    """The text in the box's first line if Claude drew it as a hint (dim, cursor cell first), else None."""
    chars = styled_chars(ansi_text.rstrip("\n").split("\n")[box.top + 1])
    body = chars[2:]  # after the prompt character and its no-break space
    visible = [c for c in body if not c[2]]  # the reverse-video cell is the cursor
    if not body or not body[0][2] or not visible or not all(dim for ch, dim, _ in visible if ch.strip()):
        return None
    return "".join(ch for ch, _, _ in body).strip()


def test_every_fixture_is_listed_in_the_readme() -> None:
    readme = (SCREENS / "README.md").read_text()
    assert ALL
    for path in ALL:
        assert f"`{path.stem}`" in readme, fixture_id(path)
        assert path.with_suffix(".json").exists(), fixture_id(path)


@pytest.mark.parametrize("path", ALL, ids=fixture_id)
def test_the_live_box_is_the_last_full_width_rule_pair(path: Path) -> None:
    kind = label(path.stem)
    info = meta(path)
    box = live_box(path.read_text(), info["width"])
    if kind == "no_box":
        assert box is None
        return
    assert box is not None
    assert box.prompt == ("!" if kind == "shell" else "❯")
    # tmux knows where Claude's (hidden) cursor is: in the box, whatever the transcript above says.
    assert box.top < info["cursor_y"] < box.bottom


BOXED = [p for p in ALL if label(p.stem) in ("idle", "typed", "working")]


@pytest.mark.parametrize("path", BOXED, ids=fixture_id)
def test_the_footer_alone_tells_a_running_turn(path: Path) -> None:
    box = live_box(path.read_text(), meta(path)["width"])
    assert box is not None
    working = bool(box.footer) and "esc to interrupt" in box.footer[0]
    assert working == (label(path.stem) == "working")


# Colourless screens (NO_COLOR, CI): a hint is not dim, and the box line of a hint is byte for byte a draft
# of the hint's words with the cursor at its start. The reader says "typed, maybe a hint"; End tells them.
MAYBE_HINT = {
    "2.1.328-nocolor/after_api_error_429_resend_hint",
    "2.1.328-nocolor/after_api_error_429_resend_hint_then_end",
    "2.1.328-nocolor/typed_hint_words_cursor_home",
    "2.1.197-nocolor/typed_hint_words_cursor_home",
}


@pytest.mark.parametrize(
    "path", [p for p in ALL if label(p.stem) in ("idle", "typed") and fixture_id(p) not in MAYBE_HINT],
    ids=fixture_id,
)  # fmt: skip
def test_an_empty_box_is_told_by_the_cursor_and_dim_hints(path: Path) -> None:
    """Empty = nothing after the prompt, or only a dim hint; and the cursor right after ``❯ `` (column 2).
    Plain text alone cannot tell: ``   `` typed looks like ``❯ `` and a hint looks like typed text."""
    info = meta(path)
    text = path.read_text()
    box = live_box(text, info["width"])
    assert box is not None
    first = box.lines[0][2:].strip()
    ansi = path.with_suffix(".ansi")
    hint = box_hint(ansi.read_text(), box) if ansi.exists() else None
    at_start = info["cursor_y"] == box.top + 1 and info["cursor_x"] == 2
    empty = at_start and len(box.lines) == 1 and (first == "" or hint == first)
    assert empty == (label(path.stem) == "idle"), (first, hint, info)


HINTS = {
    "2.1.328/after_api_error_429_resend_hint": "Resend your message to try again",
    "2.1.328-classic/after_api_error_429_resend_hint": "Resend your message to try again",
    "2.1.328/after_api_error_401_once_fixed_hint": "Once fixed, resend your message",
    "2.1.328/working_with_queued_message_hint": "Press up to edit queued messages",
    "2.1.197/working_with_queued_message_hint": "Press up to edit queued messages",
}


@pytest.mark.parametrize("name", sorted(HINTS))
def test_hints_are_dim_and_typed_text_is_not(name: str) -> None:
    path = SCREENS / f"{name}.txt"
    box = live_box(path.read_text(), meta(path)["width"])
    assert box is not None
    assert box_hint(path.with_suffix(".ansi").read_text(), box) == HINTS[name]
    typed = SCREENS / name.split("/")[0] / "typed_not_submitted.ansi"
    if typed.exists():
        typed_box = live_box(typed.with_suffix(".txt").read_text(), meta(typed)["width"])
        assert typed_box is not None
        assert box_hint(typed.read_text(), typed_box) is None


# --- what ccm_agentd/screen.py reads on each screen -------------------------------------------------------

# What the reader must answer where the label alone does not say it.
VERDICTS = {
    "usage_limit_oauth_auto_continue_pending": "self_acting",  # 2.1.328 continues by itself: never type
    "after_trust_dialog_enter_exited": "unknown",
    "after_send_keys_l_dash_R_terminal_reset": "unknown",
}
KIND_VERDICT = {
    "idle": "idle",
    "typed": "typed",
    "working": "working",
    "shell": "unknown",
    "no_box": "unknown",
}


def view_of(path: Path) -> screen.View:
    """The view ccm-agentd takes of a pane: ``capture-pane -e`` (plain where no .ansi exists) + the cursor."""
    info = meta(path)
    ansi = path.with_suffix(".ansi")
    text = ansi.read_text() if ansi.exists() else path.read_text()
    return screen.View(
        text.rstrip("\n").split("\n"), info["cursor_x"], info["cursor_y"], info["width"],
        dead=bool(info.get("pane_dead")),
    )  # fmt: skip


@pytest.mark.parametrize("path", ALL, ids=fixture_id)
def test_the_reader_tells_each_real_screen(path: Path) -> None:
    maybe_hint = fixture_id(path) in MAYBE_HINT
    expected = "typed" if maybe_hint else VERDICTS.get(path.stem) or KIND_VERDICT[label(path.stem)]
    reading = screen.read(view_of(path))
    assert (reading.verdict, reading.maybe_hint) == (expected, maybe_hint), reading.why
    if expected == "idle":
        assert reading.box == ""


def _box_line(path: Path) -> str:
    box = live_box(path.read_text(), meta(path)["width"])
    assert box is not None
    return path.with_suffix(".ansi").read_text().split("\n")[box.top + 1]


@pytest.mark.parametrize("version", ["2.1.328", "2.1.197"])
def test_without_colours_only_end_tells_a_hint_from_a_draft_of_its_words(version: str) -> None:
    """What the End probe of delivery/readiness.py relies on: the two screens cannot be told apart, and End
    moves the cursor over a draft and leaves it before a hint."""
    draft = SCREENS / f"{version}-nocolor" / "typed_hint_words_cursor_home.txt"
    moved = meta(draft.with_name("typed_hint_words_cursor_home_then_end.txt"))
    assert meta(draft)["cursor_x"] == 2 and moved["cursor_x"] == 2 + len("Resend your message to try again")
    assert not screen.read(view_of(draft.with_name("typed_hint_words_cursor_home_then_end.txt"))).maybe_hint
    if version == "2.1.328":  # only 2.1.328 draws the hint
        hint = SCREENS / "2.1.328-nocolor" / "after_api_error_429_resend_hint.txt"
        assert _box_line(hint) == _box_line(draft)
        assert meta(hint.with_name("after_api_error_429_resend_hint_then_end.txt"))["cursor_x"] == 2


@pytest.mark.parametrize(
    "path", [p for p in ALL if label(p.stem) in ("idle", "no_box", "shell")], ids=fixture_id
)
def test_plain_text_alone_never_reads_a_non_idle_screen_as_idle(path: Path) -> None:
    """Without cursor and attributes (the harness's plain captures) the reader may be less sure, never wrong:
    idle screens with a known hint still read idle, and nothing that is not idle reads idle."""
    idle = screen.read_text(path.read_text()).verdict == "idle"
    if fixture_id(path) in MAYBE_HINT:
        return  # plain text cannot tell either; ccm-agentd reads with attributes and the cursor, and probes
    if label(path.stem) != "idle" or path.stem in VERDICTS:
        assert not idle


@pytest.mark.parametrize(
    "name", ["2.1.328/idle_after_reply", "2.1.197/idle_after_reply", "2.1.328/working_model_no_tool"]
)
def test_a_named_session_s_rule_still_bounds_the_box(name: str) -> None:
    """``claude --name X`` (ccm's task agents) draws the name into the rule above the box."""
    path = SCREENS / f"{name}.txt"
    view = view_of(path)
    width = meta(path)["width"]
    lines = list(view.lines)
    rules = [i for i, line in enumerate(lines) if screen.plain(line).rstrip() == "─" * width]
    named = "─" * 4 + " fix the parser " + "─" * (width - 4 - len(" fix the parser "))
    lines[rules[-2]] = named
    reading = screen.read(screen.View(lines, view.cursor_x, view.cursor_y, width))
    assert reading.verdict == screen.read(view).verdict


def test_a_suggested_completion_is_not_typed_text() -> None:
    """2.1.197 draws the rest of a slash command after the text (`/ex` + a reverse `i` + a dim `t`): Enter
    submits the text without it, so the box holds the text without it (else the typist never sees its text
    and a prompt ending in a command's prefix is never typed)."""
    path = SCREENS / "2.1.197" / "typed_slash_command_ghost_completion.txt"
    reading = screen.read(view_of(path))
    assert (reading.verdict, reading.box) == ("typed", "still here after /ex")
