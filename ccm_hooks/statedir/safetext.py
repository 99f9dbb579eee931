"""Text from the state dir, made safe to print for people.

Records and statuses hold what the model and its tools wrote: a prompt, a shell command, an error message,
an assistant message. Printed raw, that text can drive the terminal: OSC 52 writes the clipboard, OSC 0
retitles the window, ``ESC[2J`` clears the screen, a carriage return overwrites what was shown, and the
bidi overrides make a command read differently from what it is. Everything ccm prints for people goes
through ``clean`` (or ``one_line``, which uses it); ``--json`` output goes through ``json_safe``, which keeps
the text exact.

Neutralised: C0 controls (tab becomes a space; newline only where a text is printed whole), DEL, C1
controls, the bidi embeddings, overrides and isolates (U+202A-202E, U+2066-2069), and lone surrogates,
which no terminal encoding can carry. C0 and DEL are shown in caret notation as ``cat -v`` does (``^[``
for ESC); the others as ``<U+XXXX>``, so the reader sees that something was there.
"""

from __future__ import annotations

# The read commands import this on every run: no ``re`` unless there is something to replace (``re`` with
# its enum and functools costs more than the rest of `ccm-hooks status`).
_C1_AND_BIDI = (
    frozenset(range(0x80, 0xA0)) | frozenset(range(0x202A, 0x202F)) | frozenset(range(0x2066, 0x206A))
)
_JSON_RAW_BYTES = (b"\x7f", b"\xc2", b"\xe2\x80", b"\xe2\x81")  # how those may start in UTF-8


def unsafe(ch: str) -> bool:
    """True for a character that could act on a terminal (see the module docstring)."""
    code = ord(ch)
    return code < 0x20 or code == 0x7F or code in _C1_AND_BIDI or 0xD800 <= code <= 0xDFFF


def _shown(ch: str) -> str:
    code = ord(ch)
    if ch in "\t\n":
        return " "
    if code < 0x20:
        return "^" + chr(code + 0x40)
    if code == 0x7F:
        return "^?"
    return f"<U+{code:04X}>"


def clean(text: str, keep_newlines: bool = False) -> str:
    """``text`` with every character that could act on a terminal replaced by a visible stand-in."""
    if text.isprintable():  # the common case, one C-level scan: none of those characters is printable
        return text
    return "".join(_shown(ch) if unsafe(ch) and not (keep_newlines and ch == "\n") else ch for ch in text)


def one_line(value: object, width: int | None = None) -> str:
    """``value`` (a string; anything else is empty) as one clean line, whitespace runs collapsed, cut to
    ``width`` characters with an ellipsis."""
    if not isinstance(value, str):
        return ""
    flat = clean(" ".join(value.split()))
    if width is None or len(flat) <= width:
        return flat
    return flat[: max(0, width - 1)] + "…"


def json_safe_bytes(data: bytes) -> bytes:
    """UTF-8 JSON text with DEL, C1 and bidi controls written as ``\\uXXXX`` escapes.

    JSON requires escapes only below U+0020, so encoders (and ccm's own record lines) leave these raw.
    Outside strings JSON is ASCII, so they can only be inside strings, where the escape denotes the same
    character: a parser gets exactly the same value, and a terminal gets nothing it could act on.
    """
    if not any(start in data for start in _JSON_RAW_BYTES):
        return data
    import re

    raw = re.compile(b"\x7f|\xc2[\x80-\x9f]|\xe2\x80[\xaa-\xae]|\xe2\x81[\xa6-\xa9]")
    return raw.sub(lambda m: f"\\u{ord(m.group().decode()):04x}".encode(), data)
