#!/usr/bin/env python3
"""The worst case of a done marker: the slowest patterns the subset allows, on the worst replies.

A regex done marker runs on ccm_hooks/saferegex.py (Pike's VM: every instruction visited at most once
per character) over the last watch.MARKER_TEXT_CAP characters of the reply, and a pattern compiles to at
most saferegex.MAX_PROGRAM instructions: so time is bounded by MAX_PROGRAM x MARKER_TEXT_CAP steps. This
measures how long that is here, with patterns that keep every instruction alive at every character, and
shows the reported case on Python's ``re`` for comparison (in a subprocess, killed after 10 s).

    python bench/done_marker.py [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ccm_hooks import saferegex, watch  # noqa: E402


def _fill(unit: str, tail: str = "x") -> str:
    """``unit`` repeated as often as the program size allows, then ``tail`` (which never matches)."""
    n = 1
    while True:
        try:
            saferegex.compile(unit * (n + 1) + tail)
        except saferegex.PatternError:
            return unit * n + tail
        n += 1


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    cap = watch.MARKER_TEXT_CAP
    patterns = {
        "(?:.?)^n x": _fill(".?"),
        "(?:a?)^n x": _fill("a?"),
        "(?:.*)^n x": _fill(".*"),
        "(?i)[^b]?^n x": "(?i)" + _fill("[^b]?"),
        "(?:\\b.?)^n x": _fill("(?:\\b.?)"),
        "(?m)(?:^.?$)?^n x": "(?m)" + _fill("(?:^.?$)?"),
        "(a+)+$ (the report)": "(a+)+$",
    }
    replies = {
        "100k a": "a" * 100_000,
        "50k a+newline": "a\n" * 50_000,
        "distinct chars": "".join(chr(0x100 + i) for i in range(cap)),
        "a..ab": "a" * 100_000 + "b",
    }
    print(
        f"MAX_PROGRAM {saferegex.MAX_PROGRAM} instructions, last {cap} characters searched, runs {args.runs}"
    )
    print(f"{'pattern':<24} {'instr':>5} {'reply':<15} {'median ms':>9} {'max ms':>8}")
    worst = 0.0
    for name, pattern in patterns.items():
        size = len(saferegex.compile(pattern).code)
        for label, reply in replies.items():
            times = []
            for _ in range(args.runs):
                started = time.perf_counter()
                watch.marker_found(pattern, reply)
                times.append(time.perf_counter() - started)
            worst = max(worst, max(times))
            median = statistics.median(times)
            print(f"{name:<24} {size:5d} {label:<15} {median * 1e3:9.1f} {max(times) * 1e3:8.1f}")
    print(f"worst: {worst * 1e3:.0f} ms")
    probe = (
        "import re, time; t = time.perf_counter(); re.search(r'(a+)+$', 'a' * 28 + 'b'); "
        "print(time.perf_counter() - t)"
    )
    try:
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=10)
        print(f"python re, (a+)+$ on 28 a's and a b: {float(out.stdout) * 1e3:.0f} ms")
    except subprocess.TimeoutExpired:
        print("python re, (a+)+$ on 28 a's and a b: killed after 10 s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
