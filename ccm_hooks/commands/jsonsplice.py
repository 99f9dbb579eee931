"""Writing a changed JSON document back over the text it was parsed from (spec/settings.md, "Round trip").

A value the edit did not touch is copied from the original text byte for byte (numbers, string escapes,
spacing, key order); a changed container keeps its own whitespace around the items it keeps, and only
new values are written fresh, in the file's style.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ccm_hooks.commands.jsontext import CannotRoundTrip, Node, Number, Tree, same


@dataclass(frozen=True)
class Style:
    """How a JSON file is laid out, for what has to be written fresh."""

    indent: str | None = "  "  # None: everything on one line
    newline: str = "\n"
    final_newline: bool = True
    minified: bool = False  # one line without spaces after "," and ":"


DEFAULT_STYLE = Style()
Similar = Callable[[Any, Any], bool]


def scalar(value: Any) -> str:
    if isinstance(value, Number):
        return value.text
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if value is True or value is False or value is None:
        return json.dumps(value)
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float) and value == value and value not in (float("inf"), float("-inf")):
        return float.__repr__(value)
    raise TypeError(f"cannot write {value!r} as JSON")


def dumps(value: Any, style: Style = DEFAULT_STYLE) -> str:
    """A whole new file (like ``json.dumps`` with the style's indent, ``ensure_ascii=False``)."""
    text = _Writer("", style, None).fresh(value, "", style.indent is None)
    return text + (style.newline if style.final_newline else "")


def render(value: Any, tree: Tree, style: Style, similar: Similar | None = None) -> str:
    """``value`` written over ``tree``'s text: unchanged parts byte for byte, the rest in ``style``.

    ``similar(new, old)`` tells which array elements are edited versions of one another (so they are
    spliced in place rather than dropped and written anew); exact matches are found without it.
    """
    text = tree.text
    prefix = text[: tree.root.start]
    indent = prefix.rsplit("\n", 1)[-1]
    body = _Writer(text, style, similar).value(value, tree.root, indent, style.indent is None)
    return prefix + body + text[tree.root.end :]


@dataclass
class _Entry:
    old: int | None  # index of the old item it replaces or keeps; None: new
    prefix: str  # objects: the key and the colon
    value: Any


class _Writer:
    def __init__(self, text: str, style: Style, similar: Similar | None) -> None:
        self.text = text
        self.style = style
        self.similar = similar

    def value(self, new: Any, old: Node | None, indent: str, inline: bool) -> str:
        if old is not None:
            if same(new, old.value):
                return self.text[old.start : old.end]
            if isinstance(new, dict) and isinstance(old.value, dict):
                return self.obj(new, old, indent)
            if isinstance(new, list) and isinstance(old.value, list):
                return self.arr(new, old, indent)
        return self.fresh(new, indent, inline)

    def fresh(self, value: Any, indent: str, inline: bool) -> str:
        if not isinstance(value, (dict, list)):
            return scalar(value)
        opening, closing = ("{", "}") if isinstance(value, dict) else ("[", "]")
        if not value:
            return opening + closing
        unit = self.style.indent
        if inline or unit is None:
            sep, colon = (",", ":") if self.style.minified else (", ", ": ")
            if isinstance(value, dict):
                parts = [scalar(k) + colon + self.fresh(v, indent, True) for k, v in value.items()]
            else:
                parts = [self.fresh(v, indent, True) for v in value]
            return opening + sep.join(parts) + closing
        inner = indent + unit
        lead = self.style.newline + inner
        if isinstance(value, dict):
            parts = [lead + scalar(k) + ": " + self.fresh(v, inner, False) for k, v in value.items()]
        else:
            parts = [lead + self.fresh(v, inner, False) for v in value]
        return opening + ",".join(parts) + self.style.newline + indent + closing

    def obj(self, new: dict[str, Any], old: Node, indent: str) -> str:
        if old.duplicate_keys:
            raise self.duplicate(old)
        by_key = {it.key: n for n, it in enumerate(old.items)}
        colon = old.items[-1].colon if old.items else (":" if self.style.minified else ": ")
        entries: list[_Entry] = []
        for key, val in new.items():
            n = by_key.get(key)
            if n is None:
                entries.append(_Entry(None, scalar(key) + colon, val))
            else:
                it = old.items[n]
                entries.append(_Entry(n, it.key_src + it.colon, val))
        return self.assemble(old, entries, "{", "}", indent)

    def duplicate(self, old: Node) -> CannotRoundTrip:
        seen: set[str | None] = set()
        for it in old.items:
            if it.key in seen:
                problem = (
                    f"has the key {it.key_src} twice in an object it must edit (Claude reads the last one)"
                )
                return CannotRoundTrip(problem, self.text, it.node.start)
            seen.add(it.key)
        raise AssertionError("no duplicate key")

    def arr(self, new: list[Any], old: Node, indent: str) -> str:
        olds = old.items
        match: list[int | None] = [None] * len(new)
        used: set[int] = set()
        start = 0
        for i, val in enumerate(new):  # exact matches, in order
            for k in range(start, len(olds)):
                if k not in used and same(val, olds[k].node.value):
                    match[i], start = k, k + 1
                    used.add(k)
                    break
        if self.similar is not None:  # edited elements: between the neighbours' matches only
            for i, val in enumerate(new):
                if match[i] is not None:
                    continue
                lo = max((m for m in match[:i] if m is not None), default=-1)
                hi = min((m for m in match[i + 1 :] if m is not None), default=len(olds))
                for k in range(lo + 1, hi):
                    if k not in used and self.similar(val, olds[k].node.value):
                        match[i] = k
                        used.add(k)
                        break
        entries = [_Entry(k, "", val) for val, k in zip(new, match, strict=True)]
        return self.assemble(old, entries, "[", "]", indent)

    def assemble(
        self,
        old: Node,
        entries: list[_Entry],
        opening: str,
        closing: str,
        indent: str,
    ) -> str:
        """Write ``entries`` between the old container's brackets, with its own whitespace."""
        if not entries:
            return opening + closing
        style = self.style
        items = old.items
        # An old container written on one line stays on one line; an empty one takes the file's style.
        inline = style.indent is None or (bool(items) and "\n" not in self.text[old.start : old.end])
        fresh_lead = style.newline + indent + (style.indent or "")
        if items:
            first_lead = items[0].lead
            later = [it.lead for it in items[1:]]
            if later:
                sep_lead = later[-1]
            elif "\n" in first_lead:
                sep_lead = first_lead
            else:
                sep_lead = "" if style.minified else " "
            tail = old.tail
        elif inline:
            first_lead, sep_lead, tail = "", ("" if style.minified else " "), ""
        else:
            first_lead = sep_lead = fresh_lead
            tail = style.newline + indent
        out = [opening]
        last = len(entries) - 1
        for pos, entry in enumerate(entries):
            k = entry.old
            if pos == 0:
                lead = first_lead
            else:
                out.append(",")
                lead = items[k].lead if k is not None and k >= 1 else sep_lead
            child_indent = lead.rsplit("\n", 1)[1] if "\n" in lead else indent
            node = items[k].node if k is not None else None
            out.append(lead + entry.prefix + self.value(entry.value, node, child_indent, inline))
            if pos < last and k is not None:
                out.append(items[k].trail)
        out.append(tail + closing)
        return "".join(out)
