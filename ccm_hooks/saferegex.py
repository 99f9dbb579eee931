"""A regular-expression search that cannot run away: watch mode's done marker (spec/watch.md#the-done-marker).

Python's ``re`` backtracks: ``(a+)+$`` against 28 ``a`` s takes longer than Claude Code's 10 s hook timeout,
and even ``a*a*a*b`` is cubic in the text. This module accepts a subset of Python's syntax, with Python's
meaning, and runs it as a Thompson NFA (Pike's VM without captures: every thread advances one character
at a time, at most one thread per instruction): time O(len(text) x len(program)) whatever the pattern,
and the program is at most MAX_PROGRAM instructions.

The subset: literal characters; ``\\`` before any character that is not a letter or digit; ``\\t \\n \\r
\\f \\v``; ``.``; ``[...]`` and ``[^...]`` with characters, ranges and ``\\d \\w \\s \\D \\W \\S``; ``\\d \\w
\\s \\D \\W \\S``; ``^ $ \\A \\Z \\b \\B``; groups ``(...)`` and ``(?:...)``; ``|``; ``* + ?`` and
``{m}``, ``{m,}``, ``{m,n}`` (at most MAX_REPEAT), each optionally lazy (``*?``: the same answer, since
only *whether* it matches counts); flags ``(?i)``, ``(?m)``, ``(?s)`` (any of ``ims``) at the very start.
Anything else (backreferences, lookaround, possessive quantifiers, ``\\x`` escapes, ...) is refused with
a PatternError saying what. Standard library only and no ``re``: the handler imports this for a done
marker that is a regex.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not `from typing import ...`: importing typing costs ~3 ms per hook call
if TYPE_CHECKING:
    from typing import Any

MAX_PROGRAM = 100  # instructions, after {m,n} copies: the time bound is O(len(text) x MAX_PROGRAM)
MAX_REPEAT = 100  # the largest m or n of {m,n}
MAX_PATTERN = 500  # characters (watch.MAX_MARKER_CHARS)

# Instructions are tuples: (op, arg1, arg2).
_CHAR, _ANY, _SET, _SPLIT, _JMP, _ASSERT, _MATCH = range(7)
_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f", "v": "\v"}
_CLASSES = frozenset("dDwWsS")
_ASSERTIONS = frozenset("AZbB")
_AT = {"^": 1, "$": 2, "A": 4, "Z": 8, "b": 16, "B": 32}  # assertion -> its bit in a position's context


class PatternError(ValueError):
    """A pattern outside the subset (or not a valid pattern); the message says what and where."""


def _in_class(ch: str, cls: str) -> bool:
    if cls in "dD":
        hit = ch.isdecimal()
    elif cls in "wW":
        hit = ch.isalnum() or ch == "_"
    else:
        hit = ch.isspace()
    return hit if cls.islower() else not hit


class _Set:
    """A bracket expression: characters, ranges and classes, maybe negated."""

    __slots__ = ("cache", "chars", "classes", "fold", "negated", "ranges")

    def __init__(self, negated: bool, chars: set[str], ranges: list[tuple[str, str]], classes: list[str]):
        self.negated = negated
        self.chars = frozenset(chars)
        self.ranges = tuple(ranges)
        self.classes = tuple(classes)
        self.fold = False
        self.cache: dict[str, bool] = {}  # per character: a set repeated by {m,n} is evaluated once

    def _member(self, ch: str) -> bool:
        if ch in self.chars:
            return True
        for lo, hi in self.ranges:
            if lo <= ch <= hi:
                return True
        return any(_in_class(ch, cls) for cls in self.classes)

    def matches(self, ch: str) -> bool:
        known = self.cache.get(ch)
        if known is not None:
            return known
        hit = self._member(ch)
        if not hit and self.fold:
            hit = any(self._member(v) for v in (ch.lower(), ch.upper()) if len(v) == 1 and v != ch)
        self.cache[ch] = hit != self.negated
        return hit != self.negated


class _Parser:
    """Recursive descent over the pattern, producing a small tree:
    ("lit", ch) ("any",) ("set", _Set) ("assert", kind) ("cat", [nodes]) ("alt", [nodes])
    ("rep", node, min, max or None)."""

    def __init__(self, pattern: str):
        self.p = pattern
        self.i = 0
        self.flags = ""

    def fail(self, what: str) -> PatternError:
        return PatternError(f"{what} at position {self.i} of {self.p!r}")

    def peek(self) -> str | None:
        return self.p[self.i] if self.i < len(self.p) else None

    def parse(self) -> Any:
        if self.p.startswith("(?") and self.p[2:3] in ("i", "m", "s"):
            end = self.p.find(")")
            flags = self.p[2:end] if end > 0 else ""
            if not flags or any(f not in "ims" for f in flags):
                raise self.fail("only the flags (?i), (?m), (?s) are supported, and only at the start")
            self.flags = flags
            self.i = end + 1
        node = self.alternation()
        if self.i < len(self.p):
            raise self.fail("unbalanced )")
        return node

    def alternation(self) -> Any:
        branches = [self.sequence()]
        while self.peek() == "|":
            self.i += 1
            branches.append(self.sequence())
        return branches[0] if len(branches) == 1 else ("alt", branches)

    def sequence(self) -> Any:
        items: list[Any] = []
        while self.i < len(self.p) and self.p[self.i] not in "|)":
            atom = self.atom()
            items.append(self.quantified(atom))
        return ("cat", items)

    def quantified(self, atom: Any) -> Any:
        ch = self.peek()
        if ch is None or ch not in "*+?{":
            return atom
        if atom[0] == "assert":
            raise self.fail("nothing to repeat (a quantifier after an anchor)")
        if ch == "{":
            lo, hi = self.braces()
        else:
            self.i += 1
            lo, hi = {"*": (0, None), "+": (1, None), "?": (0, 1)}[ch]
        if self.peek() == "?":
            self.i += 1  # lazy: the same yes/no answer
        nxt = self.peek()
        if nxt is not None and nxt in "*+?{":
            raise self.fail(
                "a quantifier after a quantifier (possessive or multiple repeat) is not supported"
            )
        return ("rep", atom, lo, hi)

    def braces(self) -> tuple[int, int | None]:
        end = self.p.find("}", self.i)
        body = self.p[self.i + 1 : end] if end > 0 else ""
        parts = body.split(",")
        ok = 1 <= len(parts) <= 2 and all(x.isascii() and x.isdigit() for x in parts if x)
        if end < 0 or not ok or not parts[0]:
            raise self.fail("{ must be a repeat {m}, {m,} or {m,n} (write \\{ for a literal brace)")
        lo = int(parts[0])
        hi: int | None = lo if len(parts) == 1 else int(parts[1]) if parts[1] else None
        if lo > MAX_REPEAT or (hi is not None and hi > MAX_REPEAT):
            raise self.fail(f"repeat counts above {MAX_REPEAT} are not supported")
        if hi is not None and hi < lo:
            raise self.fail("a repeat {m,n} needs m <= n")
        self.i = end + 1
        return lo, hi

    def atom(self) -> Any:
        ch = self.p[self.i]
        self.i += 1
        if ch == "(":
            if self.p.startswith("?:", self.i):
                self.i += 2
            elif self.peek() == "?":
                raise self.fail("only (...) and (?:...) groups are supported (no lookaround, names, flags)")
            node = self.alternation()
            if self.peek() != ")":
                raise self.fail("missing )")
            self.i += 1
            return node
        if ch in "*+?{":
            self.i -= 1
            raise self.fail("nothing to repeat")
        if ch == ".":
            return ("any",)
        if ch == "^":
            return ("assert", "^")
        if ch == "$":
            return ("assert", "$")
        if ch == "[":
            return ("set", self.bracket())
        if ch == "\\":
            return self.escape(in_set=False)
        return ("lit", ch)

    def escape(self, in_set: bool) -> Any:
        if self.i >= len(self.p):
            raise self.fail("a trailing \\")
        ch = self.p[self.i]
        self.i += 1
        if ch in _CLASSES:
            return ("class", ch)
        if ch in _ESCAPES:
            return ("lit", _ESCAPES[ch])
        if not in_set and ch in _ASSERTIONS:
            return ("assert", ch)
        if ch.isascii() and ch.isalnum():
            raise self.fail(f"\\{ch} is not supported (backreferences, \\x, \\u, ... are not)")
        return ("lit", ch)

    def bracket(self) -> _Set:
        negated = self.peek() == "^"
        if negated:
            self.i += 1
        chars: set[str] = set()
        ranges: list[tuple[str, str]] = []
        classes: list[str] = []
        first = True
        while True:
            ch = self.peek()
            if ch is None:
                raise self.fail("missing ]")
            if ch == "]" and not first:
                self.i += 1
                return _Set(negated, chars, ranges, classes)
            if ch == "[" or self.p.startswith(("--", "&&", "~~", "||"), self.i):
                raise self.fail("write \\[ (and \\-, \\&, \\~, \\|) inside [...]")
            first = False
            item = self.set_item()
            if self.peek() == "-" and self.p[self.i + 1 : self.i + 2] not in ("]", ""):
                self.i += 1
                end = self.set_item()
                if item[0] != "lit" or end[0] != "lit":
                    raise self.fail("a range needs a character at each end")
                if end[1] < item[1]:
                    raise self.fail("a range a-b needs a <= b")
                ranges.append((item[1], end[1]))
            elif item[0] == "class":
                classes.append(item[1])
            else:
                chars.add(item[1])

    def set_item(self) -> tuple[str, str]:
        ch = self.p[self.i]
        self.i += 1
        if ch == "\\":
            kind, value = self.escape(in_set=True)
            return kind, value
        return "lit", ch


class Program:
    """A compiled pattern: ``search(text, start)`` says whether it matches anywhere in text[start:]."""

    def __init__(self, pattern: str):
        if len(pattern) > MAX_PATTERN:
            raise PatternError(f"a pattern of more than {MAX_PATTERN} characters is not supported")
        parser = _Parser(pattern)
        tree = parser.parse()
        self.fold = "i" in parser.flags
        self.multiline = "m" in parser.flags
        self.dotall = "s" in parser.flags
        self.code: list[tuple[int, Any, Any]] = []
        self._sets: dict[tuple[Any, ...], _Set] = {}
        self._emit(tree)
        self.code.append((_MATCH, None, None))

    def _shared(self, new: _Set) -> _Set:
        """One object per distinct set, so its per-character cache serves every copy of it."""
        new.fold = self.fold
        key = (new.negated, new.chars, new.ranges, new.classes)
        return self._sets.setdefault(key, new)

    def _add(self, op: int, a: Any = None, b: Any = None) -> int:
        if len(self.code) >= MAX_PROGRAM:
            raise PatternError(f"the pattern is too complex (more than {MAX_PROGRAM} steps once compiled)")
        self.code.append((op, a, b))
        return len(self.code) - 1

    def _emit(self, node: Any) -> None:
        kind = node[0]
        if kind == "lit":
            self._add(_CHAR, node[1].lower() if self.fold and len(node[1].lower()) == 1 else node[1])
        elif kind == "any":
            self._add(_ANY)
        elif kind == "class":
            self._add(_SET, self._shared(_Set(False, set(), [], [node[1]])))
        elif kind == "set":
            self._add(_SET, self._shared(node[1]))
        elif kind == "assert":
            self._add(_ASSERT, _AT[node[1]])
        elif kind == "cat":
            for item in node[1]:
                self._emit(item)
        elif kind == "alt":
            jumps = []
            branches = node[1]
            for n, branch in enumerate(branches):
                if n < len(branches) - 1:
                    split = self._add(_SPLIT)
                    self._emit(branch)
                    jumps.append(self._add(_JMP))
                    self.code[split] = (_SPLIT, split + 1, len(self.code))
                else:
                    self._emit(branch)
            for j in jumps:
                self.code[j] = (_JMP, len(self.code), None)
        else:  # rep
            _, sub, lo, hi = node
            for _ in range(lo):
                self._emit(sub)
            if hi is None:
                split = self._add(_SPLIT)
                self._emit(sub)
                self._add(_JMP, split)
                self.code[split] = (_SPLIT, split + 1, len(self.code))
            else:
                splits = []
                for _ in range(hi - lo):
                    splits.append(self._add(_SPLIT))
                    self._emit(sub)
                for s in splits:
                    self.code[s] = (_SPLIT, s + 1, len(self.code))

    def _context(self, text: str, i: int) -> int:
        """The assertions that hold at position ``i`` of ``text``, as _AT bits."""
        n = len(text)
        bits = 0
        if i == 0 or (self.multiline and text[i - 1] == "\n"):
            bits |= _AT["^"]
        if i == n or (i == n - 1 and text[i] == "\n") or (self.multiline and text[i] == "\n"):
            bits |= _AT["$"]
        if i == 0:
            bits |= _AT["A"]
        if i == n:
            bits |= _AT["Z"]
        before = i > 0 and (text[i - 1].isalnum() or text[i - 1] == "_")
        after = i < n and (text[i].isalnum() or text[i] == "_")
        if before != after:
            bits |= _AT["b"]
        elif n:  # as Python's re before 3.14: \B never matches an empty text
            bits |= _AT["B"]
        return bits

    def search(self, text: str, start: int = 0) -> bool:
        """Whether the pattern matches somewhere starting at or after ``start``. Anchors and ``\\b`` see
        the whole ``text`` (``^`` does not match at ``start`` unless a line starts there)."""
        code = self.code
        ops = [ins[0] for ins in code]
        args = [ins[1] for ins in code]
        alts = [ins[2] for ins in code]
        subject = text
        if self.fold:
            lowered = text.lower()
            subject = (
                lowered
                if len(lowered) == len(text)
                else "".join(c.lower() if len(c.lower()) == 1 else c for c in text)
            )
        dotall = self.dotall
        n = len(text)
        mark = [-1] * len(code)
        pending = [0]  # instructions to enter at position i (after their epsilon closure)
        for i in range(start, n + 1):
            # The threads at position i: the epsilon closure of what advanced over text[i - 1], plus a
            # new thread from the start (a search, not a match). One mark per instruction and position:
            # each instruction is visited at most once per position, whatever the pattern.
            stack = pending
            stack.append(0)
            threads = []
            context = -1  # the assertions holding at i, computed when first needed
            while stack:
                pc = stack.pop()
                if mark[pc] == i:
                    continue
                mark[pc] = i
                op = ops[pc]
                if op == _SPLIT:
                    stack.append(alts[pc])
                    stack.append(args[pc])
                elif op == _JMP:
                    stack.append(args[pc])
                elif op == _ASSERT:
                    if context < 0:
                        context = self._context(text, i)
                    if context & args[pc]:
                        stack.append(pc + 1)
                elif op == _MATCH:
                    return True
                else:
                    threads.append(pc)
            if i == n:
                return False
            ch = subject[i]
            pending = []
            for pc in threads:
                op = ops[pc]
                if op == _CHAR:
                    if args[pc] == ch:
                        pending.append(pc + 1)
                elif op == _ANY:
                    if dotall or ch != "\n":
                        pending.append(pc + 1)
                elif args[pc].matches(text[i]):
                    pending.append(pc + 1)
        return False


def compile(pattern: str) -> Program:
    """The program for ``pattern``, or PatternError if it is outside the subset."""
    return Program(pattern)
