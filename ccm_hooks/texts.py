"""The one rule for every text ccm types into a Claude Code pane (spec/typing.md).

Queued prompts (``ccm-hooks send``), watch mode's prompt (handed to ccm-agentd past Claude Code's Stop-hook
cap), the resume after a usage limit, task prompts: each is checked by ``check_typed`` where it is set (the
CLI, config.toml, the environment) and again where it is typed (ccm-agentd), so a text that reached a file
some other way is refused before a key is sent.

The rule, and why:
- Surrounding whitespace is removed (Claude Code trims the prompt it submits: a text typed with a trailing
  space would never match the UserPromptSubmit that confirms it). What is typed is exactly the result.
- One line of printable text: no C0 controls (a newline or ``\\r`` is Enter and submits early, a tab moves the
  focus or completes, ESC starts a key sequence, BEL rings), no DEL, no C1 controls (U+0080-U+009F: terminals
  take some as ESC sequences), no Unicode line or paragraph separators.
- No invisible formatting characters (zero-width spaces, bidi controls, a lone zero-width joiner): Claude
  Code 2.1.328 drops some of them, so what arrived would not be what was sent (a joiner inside an emoji is
  kept).
- Not ending in ``\\``: Enter after a backslash inserts a newline instead of submitting.
- Not a command: a leading ``/`` is a slash command (the TUI completes ``/ex`` to ``/exit``), ``!`` enters
  shell mode, ``#`` was the memory shortcut: refused unless the caller explicitly allows commands.
- At most ``MAX_TYPED_CHARS`` characters: from 801 on, the TUI shows a ``[Pasted text]`` placeholder and
  2.1.328 wraps what it submits in ``<pasted_content>``.

Standard library only and no ``re``: watch mode's handler checks its prompt on the hot path.
"""

from __future__ import annotations

MAX_TYPED_CHARS = 800
COMMAND_PREFIXES = ("/", "!", "#")
_SEPARATORS = ("\u2028", "\u2029")
_ZWJ = "\u200d"
# Zero-width and bidi formatting characters (Unicode category Cf), which Claude Code may drop or which
# change how the text reads; a zero-width joiner between two non-ASCII characters (an emoji) is allowed.
_FORMAT = frozenset(
    [*map(chr, range(0x200B, 0x2010)), *map(chr, range(0x202A, 0x202F)), *map(chr, range(0x2060, 0x2070)),
     "\ufeff", "\u00ad"]
)  # fmt: skip
# Prompts Claude Code submits by itself (2.1.328): a background subagent's result, its own continue at a
# usage limit's reset (seen), or before it when usage is available again (its other text, read from the
# binary). Nobody typed them: not a person's prompt, not what ccm typed.
CLAUDE_LIMIT_CONTINUES = (
    "Your claude.ai usage limit has reset.",
    "Your claude.ai usage is available again before the usage-limit reset.",
)
CLAUDE_OWN_PREFIXES = ("<task-notification>", *CLAUDE_LIMIT_CONTINUES)


class TextError(ValueError):
    """A text ccm must not type; the message says why, for a person."""


def normalize(text: str) -> str:
    """The text as ccm types it and as a confirmation compares it: surrounding whitespace removed."""
    return text.strip()


def check_typed(text: object, *, allow_command: bool = False, limit: int = MAX_TYPED_CHARS) -> str:
    """The normalized ``text`` if ccm may type it, else TextError saying why."""
    if not isinstance(text, str):
        raise TextError("must be text")
    clean = normalize(text)
    if not clean:
        raise TextError("is empty")
    for ch in clean:
        code = ord(ch)
        if code < 0x20 or code == 0x7F or 0x80 <= code <= 0x9F or ch in _SEPARATORS:
            what = {"\n": "a newline", "\r": "a carriage return", "\t": "a tab", "\x1b": "an escape (ESC)"}
            raise TextError(
                f"holds {what.get(ch, f'the control character U+{code:04X}')}: ccm types one line of "
                "printable text (a newline would submit the first line on its own)"
            )
    for i, ch in enumerate(clean):
        if ch in _FORMAT and not (ch == _ZWJ and 0 < i < len(clean) - 1 and not clean[i - 1].isascii()
                                  and not clean[i + 1].isascii()):  # fmt: skip
            raise TextError(
                f"holds the invisible formatting character U+{ord(ch):04X}, which Claude Code may drop"
            )
    if clean.endswith("\\"):
        raise TextError("ends with a backslash, which makes Enter insert a newline instead of submitting")
    if len(clean) > limit:
        raise TextError(
            f"has {len(clean)} characters; ccm types at most {limit} (longer input becomes a "
            "[Pasted text] placeholder): write it to a file and send: read FILE and do what it says"
        )
    if not allow_command and clean.startswith(COMMAND_PREFIXES):
        raise TextError(
            f"starts with {clean[0]!r}, which Claude Code takes as a command (/ slash command, ! shell, "
            "# memory); say it explicitly to send a command"
        )
    return clean


def claude_own(prompt: object) -> bool:
    """A UserPromptSubmit prompt that Claude Code wrote itself (see CLAUDE_OWN_PREFIXES)."""
    return isinstance(prompt, str) and prompt.startswith(CLAUDE_OWN_PREFIXES)


def same_text(submitted: object, wanted: object) -> bool:
    """A prompt Claude Code submitted is the text ccm typed (both normalized)."""
    return (
        isinstance(submitted, str) and isinstance(wanted, str) and normalize(submitted) == normalize(wanted)
    )
