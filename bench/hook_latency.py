#!/usr/bin/env python3
"""Wall time of a registered hook handler, as Claude Code runs it, against a bare interpreter start.

Each sample is `/bin/sh -c COMMAND` with a captured payload on stdin, exactly as Claude Code spawns a
command hook. The baseline runs `<python> -c pass` through the same `/bin/sh -c`, same stdin, in the same
loop (interleaved, so machine noise hits both alike). Ratios are of medians.

    python bench/hook_latency.py [--runs 200]

The budget (issue 2): the registered handler's median is at most 2.0x the baseline; the aim is 1.5x.
Watched Stops (issue 3) are in the same budget: the decision, its record and the block printed on stdout;
once with the default done marker (plain text) and once with a marker that needs the regex engine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ccm_hooks.commands import settings_merge, shim  # noqa: E402

PAYLOADS = REPO / "tests" / "fixtures" / "payloads"
BUDGET = 2.0


Case = tuple[str, bytes, dict[str, str], bytes]  # command, stdin, extra environment, expected stdout
BLOCK = b'{"decision":"block","reason":"continue"}'


def _time(case: Case, env: dict[str, str]) -> float:
    command, stdin, extra, expected = case
    env = {**env, **extra}
    start = time.perf_counter()
    proc = subprocess.run(["/bin/sh", "-c", command], input=stdin, env=env, capture_output=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0 or proc.stdout != expected:
        raise SystemExit(f"{command!r} exited {proc.returncode} with stdout {proc.stdout[:200]!r}")
    return elapsed


def _watched_stop(session_id: str) -> bytes:
    stop = json.loads((PAYLOADS / "Stop__first.json").read_text())
    stop.update(session_id=session_id, stop_hook_active=False)  # a person's turn: Claude's cap never nears
    return json.dumps(stop).encode()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()

    home = tempfile.mkdtemp(prefix="ccm-bench-")
    env = {"HOME": home, "CCM_HOME": os.path.join(home, ".ccm"), "PATH": "/usr/bin:/bin"}
    shim.write_shim(env["CCM_HOME"])
    python = sys.executable
    big_read = json.loads((PAYLOADS / "PostToolUse__Read.json").read_text())
    big_read["tool_response"]["file"]["content"] = "x" * 200_000  # a typical large Read
    cases: dict[str, Case] = {
        "baseline: python -c pass": (f"{python} -c pass", b"", {}, b""),
        # Not the baseline, shown for honesty: most of the handler's edge is skipping site (-S).
        "python -IS -c pass (the shim's flags)": (f"{python} -IS -c pass", b"", {}, b""),
    }
    for event, payload_file in (
        ("PreToolUse", "PreToolUse__Bash.json"),
        ("PostToolUse", "PostToolUse__Bash.json"),
        ("Stop", "Stop__first.json"),
    ):
        cases[f"{event} (registered command)"] = (
            settings_merge.hook_command(event),
            (PAYLOADS / payload_file).read_bytes(),
            {},
            b"",
        )
    cases["PostToolUse, 200 KB Read response"] = (
        settings_merge.hook_command("PostToolUse"),
        json.dumps(big_read).encode(),
        {},
        b"",
    )
    watched = {"CCM_WATCH": "1", "CCM_WATCH_MAX_TURNS": "10000", "CCM_WATCH_NO_PROGRESS": "10000"}
    cases["Stop, watched: continue (registered)"] = (
        settings_merge.hook_command("Stop"), _watched_stop("bench-watch-1"), watched, BLOCK,
    )  # fmt: skip
    cases["Stop, watched, regex marker (registered)"] = (
        settings_merge.hook_command("Stop"),
        _watched_stop("bench-watch-2"),
        {**watched, "CCM_WATCH_DONE_MARKER": "ALL (DONE|FINISHED)"},
        BLOCK,
    )
    console = Path(python).parent / "ccm-hook"
    if console.exists():
        cases["PostToolUse via console script (site on)"] = (
            str(console),
            (PAYLOADS / "PostToolUse__Bash.json").read_bytes(),
            {},
            b"",
        )

    samples: dict[str, list[float]] = {name: [] for name in cases}
    for case in cases.values():  # warm the page cache and the .pyc files
        for _ in range(5):
            _time(case, env)
    for _ in range(args.runs):
        for name, case in cases.items():
            samples[name].append(_time(case, env))

    base = statistics.median(samples["baseline: python -c pass"])
    print(f"python: {python}  runs: {args.runs} each, interleaved  budget: {BUDGET:.1f}x baseline median")
    print(f"{'case':<44} {'median ms':>9} {'p90 ms':>8} {'ratio':>6}")
    worst = 0.0
    for name, values in samples.items():
        values.sort()
        median = statistics.median(values)
        p90 = values[int(len(values) * 0.9)]
        ratio = median / base
        if "registered" in name:
            worst = max(worst, ratio)
        print(f"{name:<44} {median * 1e3:9.2f} {p90 * 1e3:8.2f} {ratio:6.2f}")
    verdict = "within" if worst <= BUDGET else "OVER"
    print(f"worst registered-handler ratio: {worst:.2f}x ({verdict} the {BUDGET:.1f}x budget)")
    shutil.rmtree(home, ignore_errors=True)
    return 0 if worst <= BUDGET else 1


if __name__ == "__main__":
    sys.exit(main())
