"""Pure functions that add and remove ccm's entries in a Claude Code settings document (spec/settings.md).

No file IO here: ``installer`` reads, locks and writes; this module only turns text into a document, a
document into a changed document, and a document back into text in the original file's style.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

from ccm_hooks.commands import jsonsplice, jsontext
from ccm_hooks.errors import CcmError

Settings = dict[str, Any]

# Every event ccm records. One list, so install, uninstall, doctor and the docs agree.
EVENTS: tuple[str, ...] = (
    "SessionStart",
    "UserPromptSubmit",
    "PreToolUse",
    "PermissionRequest",
    "PostToolUse",
    "PostToolUseFailure",
    "Notification",
    "Stop",
    "StopFailure",
    "SubagentStart",
    "SubagentStop",
    "PreCompact",
    "SessionEnd",
)
# Events whose groups take a tool matcher; the others get no "matcher" key at all.
TOOL_EVENTS = frozenset({"PreToolUse", "PermissionRequest", "PostToolUse", "PostToolUseFailure"})

HOOK_TIMEOUT = 10  # seconds; the handler takes milliseconds, this only bounds a wedged disk
MARKER = "#ccm-hooks"
SHIM_RELATIVE = "bin/ccm-hook"

# An entry is ours iff its command execs the shim and ends with the marker comment. Both halves are
# required so a foreign command that merely mentions "ccm-hook" (or the marker) is never touched.
_OURS_RE = re.compile(r"bin/ccm-hook\b.*#ccm-hooks\s*\Z", re.DOTALL)


def hook_command(event: str) -> str:
    """The shell command registered for ``event``.

    No absolute path (project settings are committed and a teammate's ccm lives elsewhere), a silent
    exit 0 when the per-user shim is absent, and nothing run unless the shim and its directory belong to
    the user running Claude: ``[ -O ]`` (owned by the effective uid) is not in POSIX, but dash, bash,
    zsh, mksh and busybox sh all have it (a /bin/sh without it fails the test: exit 0, nothing run).
    Claude runs the command with ``/bin/sh -c``. Older ccm versions registered the same command without
    the two ``-O`` tests; ``is_ours`` recognises both, so ``install`` upgrades them in place.
    """
    return (
        f'h="${{CCM_HOME:-$HOME/.ccm}}/{SHIM_RELATIVE}"; [ -O "$h" ] && [ -O "${{h%/*}}" ] && [ -x "$h" ] '
        f'&& exec "$h" {event}; exit 0 {MARKER}'
    )


def our_group(event: str) -> Settings:
    """The matcher group ccm registers for ``event`` (a fresh object each call)."""
    handler = {"type": "command", "command": hook_command(event), "timeout": HOOK_TIMEOUT}
    if event in TOOL_EVENTS:
        return {"matcher": "*", "hooks": [handler]}
    return {"hooks": [handler]}


def is_ours(handler: object) -> bool:
    """True if ``handler`` (one element of a group's "hooks" list) was written by ccm."""
    if not isinstance(handler, dict):
        return False
    command = handler.get("command")
    return isinstance(command, str) and _OURS_RE.search(command) is not None


# --- parsing and validation -----------------------------------------------------------------------


def parse_tree(text: str, label: str, action: str = "install") -> jsontext.Tree | None:
    """Parse settings text keeping its layout; None for a file holding only whitespace (it counts as ``{}``).

    Raises a one-line ``CcmError`` naming ``label`` if the text is not usable: not JSON, not an object,
    a "hooks" section we could not edit without guessing, or something we could not write back exactly.
    """
    if not text.strip():
        return None
    try:
        tree = jsontext.parse(text)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}: {exc.msg}"
        if text.startswith("\ufeff"):
            where = "it starts with a byte order mark (BOM)"
        raise _malformed(label, f"is not valid JSON ({where})", action) from None
    except jsontext.CannotRoundTrip as exc:
        raise _malformed(label, cannot_round_trip(exc), action) from None
    doc = tree.value
    if not isinstance(doc, dict):
        raise _malformed(label, f"is not a JSON object at the top level (found {_kind(doc)})", action)
    check(doc, label, action)
    return tree


def parse(text: str, label: str, action: str = "install") -> Settings:
    """The settings document of ``text`` (``{}`` for whitespace); see ``parse_tree`` for the refusals.

    A file holding only whitespace counts as ``{}``: it holds no settings, and refusing would make the
    user delete an empty file by hand for no benefit.
    """
    tree = parse_tree(text, label, action)
    return {} if tree is None else dict(tree.value)


def check(doc: Settings, label: str, action: str = "install") -> None:
    """Refuse a "hooks" section we could not edit without guessing (Claude would not read it either)."""
    if "hooks" not in doc:
        return
    hooks = doc["hooks"]
    if not isinstance(hooks, dict):
        raise _malformed(label, f'has "hooks" that is not an object (found {_kind(hooks)})', action)
    for event, groups in hooks.items():
        where = f'"hooks"."{event}"'
        if not isinstance(groups, list):
            raise _malformed(label, f"has {where} that is not a list (found {_kind(groups)})", action)
        for i, group in enumerate(groups):
            if not isinstance(group, dict):
                found = _kind(group)
                raise _malformed(label, f"has {where}[{i}] that is not an object (found {found})", action)
            if not isinstance(group.get("hooks"), list):
                raise _malformed(label, f'has {where}[{i}] without a "hooks" list', action)
            for j, handler in enumerate(group["hooks"]):
                if not isinstance(handler, dict):
                    problem = f'has {where}[{i}]."hooks"[{j}] that is not an object (found {_kind(handler)})'
                    raise _malformed(label, problem, action)


def cannot_round_trip(exc: jsontext.CannotRoundTrip) -> str:
    return f"{exc.problem} (line {exc.lineno}, column {exc.colno}), which ccm-hooks cannot write back exactly"


def _malformed(label: str, problem: str, action: str) -> CcmError:
    return CcmError(f"{label} {problem}; fix it or move it aside, then run ccm-hooks {action} again")


def _kind(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


# --- the edits ------------------------------------------------------------------------------------


def count_ours(doc: Settings) -> dict[str, int]:
    """How many ccm handlers each event has (only events with at least one)."""
    counts: dict[str, int] = {}
    hooks = doc.get("hooks")
    if not isinstance(hooks, dict):
        return counts
    for event, groups in hooks.items():
        if not isinstance(groups, list):
            continue
        n = sum(
            1
            for group in groups
            if isinstance(group, dict) and isinstance(group.get("hooks"), list)
            for handler in group["hooks"]
            if is_ours(handler)
        )
        if n:
            counts[event] = n
    return counts


def _strip_event(groups: list[Any]) -> tuple[list[Any], int | None]:
    """Remove our handlers from one event's groups.

    Returns the new list and the index (in it) where our first group stood, so install can put the fresh
    group back in the same place. Groups emptied by the removal go; foreign groups stay as they were.
    """
    out: list[Any] = []
    first: int | None = None
    for group in groups:
        handlers = group["hooks"]
        kept = [h for h in handlers if not is_ours(h)]
        if len(kept) == len(handlers):
            out.append(group)
            continue
        if first is None:
            first = len(out)
        if kept:
            # A foreign group that also held one of ours: keep every other key and handler in order.
            out.append({**group, "hooks": kept})
    return out, first


def _with_own_hooks(doc: Settings) -> Settings:
    """A copy of ``doc`` whose "hooks" may be changed freely; the rest is shared (never changed here)."""
    new = dict(doc)
    if "hooks" in new:
        new["hooks"] = copy.deepcopy(new["hooks"])
    return new


def install(doc: Settings) -> Settings:
    """``doc`` with exactly one ccm group per registered event, everything else untouched.

    Existing ccm groups are replaced where they stand; missing ones are appended; ccm entries under events
    no longer registered (an older ccm) are removed.
    """
    new = _with_own_hooks(doc)
    hooks: dict[str, Any] = new.setdefault("hooks", {})
    for event in list(hooks):
        groups, first = _strip_event(hooks[event])
        if event in EVENTS:
            groups.insert(len(groups) if first is None else first, our_group(event))
        elif first is not None and not groups:
            del hooks[event]
            continue
        hooks[event] = groups
    for event in EVENTS:
        if event not in hooks:
            hooks[event] = [our_group(event)]
    return new


def uninstall(doc: Settings) -> tuple[Settings, int]:
    """``doc`` without ccm's handlers, and how many were removed.

    Containers (event lists, the "hooks" object) that become empty because of the removal are removed
    too; ones that were already empty are the user's and stay.
    """
    new = _with_own_hooks(doc)
    hooks = new.get("hooks")
    if not isinstance(hooks, dict):
        return new, 0
    removed = sum(count_ours(new).values())
    if not removed:
        return new, 0
    for event in list(hooks):
        groups, first = _strip_event(hooks[event])
        if first is not None and not groups:
            del hooks[event]
        else:
            hooks[event] = groups
    if not hooks:
        del new["hooks"]
    return new, removed


def normalized(doc: Settings) -> Settings:
    """``doc`` with empty hook containers dropped, for "is this what the user had before?" comparisons."""
    new = _with_own_hooks(doc)
    hooks = new.get("hooks")
    if isinstance(hooks, dict):
        for event in list(hooks):
            groups = hooks[event]
            if isinstance(groups, list):
                groups = [g for g in groups if not (isinstance(g, dict) and g.get("hooks") == [])]
                hooks[event] = groups
                if not groups:
                    del hooks[event]
        if not hooks:
            del new["hooks"]
    return new


# --- text style -----------------------------------------------------------------------------------

Style = jsonsplice.Style
DEFAULT_STYLE = jsonsplice.DEFAULT_STYLE
_INDENT_RE = re.compile(r"[{\[][ \t]*\r?\n([ \t]+)\S")
_SPACED_RE = re.compile(r'"\s*:\s|,\s')  # a space after a key or between items: not minified


def detect_style(text: str) -> Style:
    """Read indentation, line ending and final newline from existing text (defaults for empty text)."""
    if not text.strip():
        return DEFAULT_STYLE
    newline = "\r\n" if "\r\n" in text else "\n"
    body = text.rstrip()
    match = _INDENT_RE.search(body)
    if match:
        indent: str | None = match.group(1)
    elif "\n" in body:
        indent = DEFAULT_STYLE.indent  # multi-line but nothing nested: keep the usual look
    else:
        indent = None
    minified = indent is None and _SPACED_RE.search(body) is None
    return Style(indent=indent, newline=newline, final_newline=text.endswith(("\n", "\r")), minified=minified)


def dumps(doc: Settings, style: Style = DEFAULT_STYLE) -> str:
    """A whole new file in ``style``: same indent, line ending, final newline; non-ASCII kept as is."""
    return jsonsplice.dumps(doc, style)


def render(doc: Settings, text: str, tree: jsontext.Tree | None) -> str:
    """``doc`` written over the file's current ``text``: what ccm did not change stays byte for byte.

    Raises ``jsontext.CannotRoundTrip`` (caller: refuse) when the edit falls on a part it cannot rewrite.
    """
    if tree is None:
        return dumps(doc, detect_style(text))
    return jsonsplice.render(doc, tree, detect_style(text), similar=_edited_version)


def _edited_version(new: Any, old: Any) -> bool:
    """Is array element ``new`` an edit of ``old``? Groups and handlers compare without ccm's handlers."""
    return jsontext.same(_without_ours(new), _without_ours(old))


def _without_ours(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    if is_ours(value):
        return "a ccm handler"  # any of ours stands for any other: an old command is upgraded in place
    handlers = value.get("hooks")
    if isinstance(handlers, list):
        return {**value, "hooks": [h for h in handlers if not is_ours(h)]}
    return value
