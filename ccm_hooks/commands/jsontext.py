"""JSON text that keeps what its author wrote: a strict parser that remembers where each value came from
(``jsonsplice`` writes a changed document back over it; spec/settings.md, "Round trip").

Why not ``json``: ``json.loads`` turns ``1e400`` into ``inf`` (written back as ``Infinity``, which no JSON
parser accepts) and ``1E2`` into ``100.0``, accepts ``NaN``, keeps the last of two equal keys silently,
and recurses until Python's stack runs out. Here a value the edit did not touch is copied from the
original text byte for byte (numbers, string escapes, spacing, key order); only what changed is written
fresh, in the file's own style. What cannot be written back exactly is refused with a one-line reason.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from json import decoder
from typing import Any

MAX_DEPTH = 100  # settings nest about 6 deep; a file nested deeper is refused
_WS_RE = re.compile(r"[ \t\n\r]*")
# The C string scanner behind json.loads (strict: control characters refused); typeshed does not list it.
_scanstring: Callable[[str, int, bool], tuple[str, int]] = decoder.scanstring  # type: ignore[attr-defined]


class Number:
    """A JSON number whose Python value would not print back as written: ``1E2``, ``1e400``, ``-0``, ``1.50``.

    Numbers that do print back exactly (``10``, ``0.5``) are plain ``int``/``float``, so documents built
    in code compare equal to parsed ones. Equal only to a Number written the same way.
    """

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Number) and other.text == self.text

    def __hash__(self) -> int:
        return hash((Number, self.text))

    def __repr__(self) -> str:
        return f"Number({self.text!r})"

    def __deepcopy__(self, memo: dict[int, Any]) -> Number:
        return self  # immutable


class CannotRoundTrip(ValueError):
    """Valid JSON that could not be written back exactly (or at all): the caller refuses the file."""

    def __init__(self, problem: str, text: str, pos: int) -> None:
        self.problem = problem
        self.lineno = text.count("\n", 0, pos) + 1
        self.colno = pos - text.rfind("\n", 0, pos)
        super().__init__(f"{problem} (line {self.lineno}, column {self.colno})")


@dataclass(eq=False)
class Item:
    """One member of an object or element of an array, with the text around it."""

    lead: str  # whitespace after the opening bracket or the comma
    node: Node
    trail: str = ""  # whitespace between the value and the next comma (the last item's goes to ``tail``)
    key: str | None = None  # objects only
    key_src: str = ""  # the key as written, quotes and escapes included
    colon: str = ""  # from the end of the key to the value: ``": "``, ``":"``, ``" : "``


class Node:
    """A value and where it stands in the text. A container's items are found when first asked for: an
    edit descends into a few containers only, and everything else is copied by its span."""

    __slots__ = ("_items", "_tail", "end", "start", "text", "value")

    def __init__(self, text: str, start: int, end: int, value: Any) -> None:
        self.text = text
        self.start = start
        self.end = end
        self.value = value
        self._items: list[Item] | None = None
        self._tail = ""

    @property
    def items(self) -> list[Item]:
        if self._items is None:
            self._scan()
        assert self._items is not None
        return self._items

    @property
    def tail(self) -> str:
        """Whitespace before the closing bracket."""
        if self._items is None:
            self._scan()
        return self._tail

    @property
    def duplicate_keys(self) -> bool:
        return isinstance(self.value, dict) and len(self.value) != len(self.items)

    def _scan(self) -> None:
        # The whole text was validated by parse(): no error can occur here.
        text, skip = self.text, _skip
        is_object = text[self.start] == "{"
        close = "}" if is_object else "]"
        items: list[Item] = []
        ws_start = self.start + 1
        i = skip(text, ws_start)
        while text[i] != close:
            item = Item(lead=text[ws_start:i], node=self)
            if is_object:
                item.key, key_end = _scanstring(text, i + 1, True)
                item.key_src = text[i:key_end]
                i = skip(text, skip(text, key_end) + 1)  # past the colon
                item.colon = text[key_end:i]
            value, end = _DECODER.raw_decode(text, i)
            item.node = Node(text, i, end, value)
            items.append(item)
            k = skip(text, end)
            if text[k] != ",":
                ws_start, i = end, k
                break
            item.trail = text[end:k]
            ws_start = k + 1
            i = skip(text, ws_start)
        self._items = items
        self._tail = text[ws_start:i]


@dataclass(eq=False)
class Tree:
    """A parsed document: its text, and where its top-level value starts and ends."""

    text: str
    root: Node

    @property
    def value(self) -> Any:
        return self.root.value


def parse(text: str) -> Tree:
    """Parse strict JSON (RFC 8259). Raises ``json.JSONDecodeError`` or ``CannotRoundTrip``.

    The C decoder behind ``json.loads`` does the work, with hooks that keep numbers as written and refuse
    ``NaN``/``Infinity``; a walk over the result then refuses deep nesting and lone surrogates.
    """
    start = _skip(text, 0)
    try:
        value, end = _DECODER.raw_decode(text, start)
    except _Constant as exc:
        raise json.JSONDecodeError("Expecting value", text, _find_outside_strings(text, exc.name)) from None
    except RecursionError:
        raise _too_deep(text) from None
    rest = _skip(text, end)
    if rest != len(text):
        raise json.JSONDecodeError("Extra data", text, rest)
    _check_values(value, text)
    return Tree(text, Node(text, start, end, value))


class _Constant(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _no_constant(name: str) -> Any:
    raise _Constant(name)


def _skip(text: str, pos: int) -> int:
    return _WS_RE.match(text, pos).end()  # type: ignore[union-attr]


def _check_values(root: Any, text: str) -> None:
    """Refuse nesting deeper than MAX_DEPTH and strings holding a lone surrogate (iteratively)."""
    stack = [(root, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            if depth >= MAX_DEPTH:
                raise _too_deep(text)
            for key, child in value.items():
                _check_string(key, text)
                stack.append((child, depth + 1))
        elif isinstance(value, list):
            if depth >= MAX_DEPTH:
                raise _too_deep(text)
            stack.extend((child, depth + 1) for child in value)
        elif isinstance(value, str):
            _check_string(value, text)


def _check_string(value: str, text: str) -> None:
    if value.isascii():
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        escape = f"\\u{ord(value[exc.start]):04x}"
        problem = f"has a lone UTF-16 surrogate escape ({escape}: half of a character, so no text)"
        raise CannotRoundTrip(problem, text, _lone_surrogate_at(text)) from None


# Error paths only: where in the text the problem the decoder or the walk found stands.
_STRING_OR_BRACKET_RE = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')
_ESCAPE_RE = re.compile(r"\\(?:u([0-9a-fA-F]{4})|.)")


def _too_deep(text: str) -> CannotRoundTrip:
    depth, pos = 0, 0
    for match in _STRING_OR_BRACKET_RE.finditer(text):
        if match.group() in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                pos = match.start()
                break
        elif match.group() in "]}":
            depth -= 1
    return CannotRoundTrip(f"nests objects or arrays deeper than {MAX_DEPTH} levels", text, pos)


def _lone_surrogate_at(text: str) -> int:
    pending = -1  # position of a high surrogate waiting for its low half
    for match in _ESCAPE_RE.finditer(text):
        code = int(match.group(1), 16) if match.group(1) else -1
        if pending >= 0:
            if 0xDC00 <= code <= 0xDFFF and match.start() == pending + 6:
                pending = -1
                continue
            return pending
        if 0xD800 <= code <= 0xDBFF:
            pending = match.start()
        elif 0xDC00 <= code <= 0xDFFF:
            return match.start()
    return max(pending, 0)


def _find_outside_strings(text: str, word: str) -> int:
    for match in re.finditer(r'"(?:[^"\\]|\\.)*"|' + re.escape(word), text):
        if match.group() == word:
            return match.start()
    return 0


def _number(token: str) -> Any:
    if len(token) <= 40:  # longer: keep the text (and never meet int()'s 4300-digit limit)
        if not any(c in token for c in ".eE"):
            as_int = int(token)
            if str(as_int) == token:
                return as_int
        else:
            as_float = float(token)
            if repr(as_float) == token:
                return as_float
    return Number(token)


_DECODER = json.JSONDecoder(parse_float=_number, parse_int=_number, parse_constant=_no_constant)


def same(a: Any, b: Any) -> bool:
    """Equal as JSON text would be: types must match (``1 != 1.0 != true``), key order counts."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return len(a) == len(b) and all(
            ka == kb and same(va, vb) for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=True)
        )
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)
