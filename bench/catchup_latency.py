#!/usr/bin/env python3
"""A hook on a session with a long log: its cost must not grow with the log (issue 9).

For each log size (default 5, 50 and 500 MB: 1x, 10x, 100x), one session written by
bench/statedir_gen.py, and the real registered handler run as Claude Code runs it (``/bin/sh -c``,
payload on stdin), interleaved with the baselines so machine noise hits all alike:

- ``baseline: python -c pass`` and ``any hook``: a PostToolUse on a small, current session;
- ``status current``: a PostToolUse on the long log, its status up to date;
- ``status 1 behind``: the same after a handler was killed between its append and its status replace
  (the status is put back one record behind the log before each sample): the handler catches up from
  the status's seq instead of replaying the log;
- ``no status``: the status deleted: the one case that replays the log, streamed, for at most
  store.CATCH_UP_BUDGET_S per hook; reported with how many hooks it took to be current again and the
  peak RSS.

    python bench/catchup_latency.py [--sizes 5,50,500] [--runs 30]

Ratios are of medians, against ``any hook`` measured in the same run. Aim: ``status 1 behind`` within 2x.
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

from bench.statedir_gen import session_ids, write_log_of_size, write_session  # noqa: E402
from ccm_hooks import paths, store  # noqa: E402
from ccm_hooks.commands import settings_merge, shim  # noqa: E402

PAYLOADS = REPO / "tests" / "fixtures" / "payloads"
AIM = 2.0


def _hook(env: dict[str, str], session_id: str) -> tuple[str, bytes]:
    data = json.loads((PAYLOADS / "PostToolUse__Bash.json").read_text())
    data["session_id"] = session_id
    return settings_merge.hook_command("PostToolUse"), json.dumps(data).encode()


# Runs the command and reports its peak RSS: through this small process because a child's ru_maxrss
# counts the memory it had before exec, that is, the size of whoever forked it (this bench is big).
_MEASURE = (
    "import os, subprocess, sys\n"
    "p = subprocess.Popen(sys.argv[1:])\n"
    "_, s, u = os.wait4(p.pid, 0)\n"
    "sys.stderr.write('%d %d' % (os.waitstatus_to_exitcode(s), u.ru_maxrss))\n"
)


def _timed(command: str, stdin: bytes, env: dict[str, str], rss: bool = False) -> tuple[float, int]:
    """Wall seconds of one ``/bin/sh -c command`` (as Claude Code runs a hook), and with ``rss`` its
    peak RSS in KiB (measured through _MEASURE, which adds its own start-up to the time)."""
    argv = ["/bin/sh", "-c", command]
    if rss:
        argv = [sys.executable, "-S", "-c", _MEASURE, *argv]
    start = time.perf_counter()
    proc = subprocess.run(argv, input=stdin, capture_output=True, env=env)
    elapsed = time.perf_counter() - start
    code, peak = proc.stderr.split()[-2:] if rss else (str(proc.returncode), b"0")
    if int(code) != 0 or proc.stdout:
        raise SystemExit(f"{command!r} exited {int(code)} with {proc.stdout[:200]!r}")
    return elapsed, int(peak)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="5,50,500", help="log sizes in MB, comma-separated")
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    sizes = [float(x) for x in args.sizes.split(",")]

    home = tempfile.mkdtemp(prefix="ccm-bench-catchup-")
    root = os.path.join(home, ".ccm")
    env = {"HOME": home, "CCM_HOME": root, "PATH": "/usr/bin:/bin"}
    shim.write_shim(root)
    ids = session_ids(len(sizes) + 1, seed=9)
    small = ids[0]
    write_session(root, small, 20)
    print(f"python: {sys.executable}  runs: {args.runs} per case, interleaved")
    made = {}
    for sid, mb in zip(ids[1:], sizes, strict=True):
        started = time.perf_counter()
        write_log_of_size(root, sid, int(mb * 1e6), seed=1)
        size = os.path.getsize(paths.events_path(root, sid))
        made[mb] = sid
        print(f"generated a {size / 1e6:.0f} MB log ({sid[:8]}) in {time.perf_counter() - started:.0f} s")

    cases: dict[str, list[float]] = {"baseline: python -c pass": [], "any hook (small session)": []}
    for mb in sizes:
        cases[f"{mb:g} MB: status current"] = []
        cases[f"{mb:g} MB: status 1 behind"] = []
    base_cmd = f"{sys.executable} -c pass"
    small_cmd, small_in = _hook(env, small)
    for _ in range(3):  # warm the page cache and the .pyc files
        _timed(base_cmd, b"", env)
        _timed(small_cmd, small_in, env)
    for _ in range(args.runs):
        cases["baseline: python -c pass"].append(_timed(base_cmd, b"", env)[0])
        cases["any hook (small session)"].append(_timed(small_cmd, small_in, env)[0])
        for mb in sizes:
            sid = made[mb]
            cmd, stdin = _hook(env, sid)
            cases[f"{mb:g} MB: status current"].append(_timed(cmd, stdin, env)[0])
            status_file = paths.status_path(root, sid)
            before = Path(status_file).read_bytes()
            _timed(cmd, stdin, env)  # appends one record and moves the status on ...
            Path(status_file).write_bytes(before)  # ... which a kill -9 would have left one behind
            cases[f"{mb:g} MB: status 1 behind"].append(_timed(cmd, stdin, env)[0])

    base = statistics.median(cases["baseline: python -c pass"])
    anyhook = statistics.median(cases["any hook (small session)"])
    print(f"{'case':<34} {'median ms':>9} {'p90 ms':>8} {'/any hook':>9} {'/python':>8}")
    worst = 0.0
    for name, values in cases.items():
        values.sort()
        median = statistics.median(values)
        p90 = values[int(len(values) * 0.9)]
        if "behind" in name:
            worst = max(worst, median / anyhook)
        print(f"{name:<34} {median * 1e3:9.2f} {p90 * 1e3:8.2f} {median / anyhook:9.2f} {median / base:8.2f}")

    print(f"\nno status (deleted): the log replayed, at most {store.CATCH_UP_BUDGET_S:.1f} s per hook")
    print(f"{'log':>8} {'hooks':>6} {'first ms':>9} {'total s':>8} {'peak RSS MiB':>13}")
    for mb in sizes:
        sid = made[mb]
        cmd, stdin = _hook(env, sid)
        os.unlink(paths.status_path(root, sid))
        total, hooks, first, peak = 0.0, 0, 0.0, 0
        while True:
            elapsed, rss = _timed(cmd, stdin, env, rss=True)
            hooks += 1
            total += elapsed
            first = first or elapsed
            peak = max(peak, rss)
            status = json.loads(Path(paths.status_path(root, sid)).read_text())
            if status["seq"] >= _last_seq(paths.events_path(root, sid)) or hooks > 200:
                break
        print(f"{mb:>6g}MB {hooks:6d} {first * 1e3:9.0f} {total:8.1f} {peak / 1024:13.1f}")
    verdict = "within" if worst <= AIM else "OVER"
    print(f"\nworst 'status 1 behind' ratio: {worst:.2f}x any hook ({verdict} the {AIM:.1f}x aim)")
    shutil.rmtree(home, ignore_errors=True)
    return 0 if worst <= AIM else 1


def _last_seq(log: str) -> int:
    with open(log, "rb") as fh:
        fh.seek(max(0, os.path.getsize(log) - 65536))
        lines = fh.read().splitlines()
    for line in reversed(lines):
        try:
            return int(json.loads(line)["seq"])
        except (ValueError, KeyError):
            continue
    return 0


if __name__ == "__main__":
    sys.exit(main())
