"""The done marker's regex engine: Python's meaning on the subset it accepts (checked against ``re`` on
thousands of random patterns and texts), a clear refusal of the rest, and linear time where ``re``
backtracks for seconds."""

from __future__ import annotations

import random
import re
import signal
import time
from types import FrameType

import pytest

from ccm_hooks import saferegex

ATOMS = [
    "a",
    "b",
    "c",
    ".",
    r"\d",
    r"\w",
    r"\s",
    r"\W",
    "[ab]",
    "[^a]",
    "[a-c]",
    r"[\d_]",
    r"\.",
    r"\n",
    " ",
    "A",
    "é",
]
ASSERTS = ["^", "$", r"\b", r"\B", r"\A", r"\Z"]
QUANTS = ["", "", "", "*", "+", "?", "{2}", "{1,3}", "{0,}", "*?", "+?", "{2,}"]
TEXT = "abcAB x._\n1é"


def _pattern(rng: random.Random, depth: int = 0) -> str:
    parts = []
    for _ in range(rng.randint(1, 4)):
        if rng.random() < 0.12:
            parts.append(rng.choice(ASSERTS))
            continue
        if rng.random() < 0.25 and depth < 3:
            inner = "|".join(_pattern(rng, depth + 1) for _ in range(rng.randint(1, 3)))
            atom = rng.choice(["(", "(?:"]) + inner + ")"
        else:
            atom = rng.choice(ATOMS)
        parts.append(atom + rng.choice(QUANTS))
    flags = "(?" + "".join(rng.sample("ims", rng.randint(1, 3))) + ")" if rng.random() < 0.2 else ""
    return flags + "".join(parts)


class _Slow(Exception):
    pass


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise _Slow


def test_same_answers_as_python_re_on_random_patterns() -> None:
    rng = random.Random(20261130)
    previous = signal.signal(signal.SIGALRM, _alarm)
    checked = skipped = 0
    try:
        for _ in range(1500):
            pattern = _pattern(rng)
            try:
                program = saferegex.compile(pattern)
            except saferegex.PatternError:
                continue  # too complex once compiled: refused, fine
            expected = re.compile(pattern)  # whatever we accept, Python accepts too
            for _ in range(6):
                text = "".join(rng.choice(TEXT) for _ in range(rng.randint(0, 12)))
                start = rng.randint(0, len(text))
                signal.setitimer(signal.ITIMER_REAL, 0.2)
                try:
                    want = expected.search(text, start) is not None
                except _Slow:
                    skipped += 1  # re backtracking for ages on 12 characters: the reason this exists
                    continue
                finally:
                    signal.setitimer(signal.ITIMER_REAL, 0)
                assert program.search(text, start) is want, (pattern, text, start)
                checked += 1
    finally:
        signal.signal(signal.SIGALRM, previous)
    assert checked > 5000


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        (r"(?=x)", "no lookaround"),
        (r"(?<!x)y", "no lookaround"),
        (r"(?P<n>x)", "no lookaround, names"),
        (r"(a)\1", r"\1 is not supported"),
        (r"\x41", r"\x is not supported"),
        (r"a{1000}", "above 100"),
        (r"a{3,2}", "m <= n"),
        (r"a{,3}", "{m,n}"),
        (r"a**", "a quantifier after a quantifier"),
        (r"a*+", "a quantifier after a quantifier"),
        (r"*a", "nothing to repeat"),
        (r"^*", "nothing to repeat"),
        (r"(ab", "missing )"),
        (r"ab)", "unbalanced )"),
        (r"[ab", "missing ]"),
        (r"[[a]", r"write \["),
        (r"[a-\d]", "a character at each end"),
        (r"[z-a]", "a <= b"),
        (r"x(?i)", "only (...) and (?:...)"),
        (r"(?x)a", "only (...) and (?:...)"),
        ("a\\", "trailing"),
        ("(?:a{10}){10}b", "too complex"),
        ("a" * 501, "more than 500"),
    ],
)
def test_outside_the_subset_is_refused_with_a_reason(pattern: str, why: str) -> None:
    with pytest.raises(saferegex.PatternError, match=re.escape(why)):
        saferegex.compile(pattern)


def test_what_re_takes_seconds_on_takes_milliseconds_here() -> None:
    program = saferegex.compile("(a+)+$")
    started = time.perf_counter()
    assert program.search("a" * 5000 + "b") is False
    assert time.perf_counter() - started < 1.0


def test_flags_and_anchors() -> None:
    assert saferegex.compile("(?i)all done").search("We are ALL DONE.")
    assert saferegex.compile("(?m)^DONE$").search("summary\nDONE\nthanks")
    assert not saferegex.compile("^DONE$").search("summary\nDONE\nthanks")
    assert saferegex.compile("DONE$").search("DONE\n")  # $ before a final newline, as in re
    assert not saferegex.compile(r"DONE\Z").search("DONE\n")
    assert saferegex.compile("(?s)a.b").search("a\nb") and not saferegex.compile("a.b").search("a\nb")
    # Searching from an offset keeps the context: ^ and \b are about the whole text.
    assert not saferegex.compile("^b").search("ab", 1)
    assert not saferegex.compile(r"\bb").search("ab", 1)
    assert saferegex.compile(r"\bb").search("a b", 2)
