#!/usr/bin/env python3
"""CPU of the live views (`top`, `status --watch`) while a few sessions are busy among many on disk.

    python bench/readers_live.py [--sessions 1000,5000] [--busy 20] [--rate 8] [--seconds 20]

A state dir with --sessions sessions (bench/statedir_gen.py) gets --busy of them rewritten --rate times a
second each, as their hooks would (the status replaced by a rename; 160 replaces/s by default). `top`
(the curses view) and `status --watch` each run in an 80x24 tmux pane for --seconds, while that happens and
at rest. CPU is utime + stime from /proc, as % of one core; the writer's own CPU is the baseline measured in
the same run (what the activity itself costs). Linux and tmux only.
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
BIN = Path(sys.executable).parent

from readers import generator  # noqa: E402


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Writer:
    """Replaces the busy sessions' status files at the given rate, in a child process."""

    CODE = """
import json, os, sys, time
root, rate, sids = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
statuses = {s: json.load(open(f"{root}/status/{s}.json")) for s in sids}
n = 0
while True:
    for sid, st in statuses.items():
        n += 1
        st["updated_at"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + ".000000Z"
        st["current_action"] = f"Bash: step {n}"
        st["state"] = "working"
        tmp = f"{root}/status/.{sid}.json.{os.getpid()}.tmp"
        with open(tmp, "w") as fh:
            fh.write(json.dumps(st))
        os.replace(tmp, f"{root}/status/{sid}.json")
    time.sleep(1 / rate)
"""

    def __init__(self, root: Path, sids: list[str], rate: float) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", self.CODE, str(root), str(rate), *sids])

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def in_pane(root: Path, argv: list[str], seconds: float) -> float:
    """% of a core used by ``argv`` running in a tmux pane for ``seconds`` (after a 2 s start)."""
    sock = f"ccm-bench-{secrets.token_hex(4)}"
    tmux = ["tmux", "-L", sock, "-f", "/dev/null"]
    env_args = ["-e", f"CCM_HOME={root}", "-e", "TERM=xterm-256color", "-e", "LANG=C.UTF-8"]
    out = subprocess.run([*tmux, "new-session", "-d", "-P", "-F", "#{pane_pid}", "-x", "80", "-y", "24",
                          *env_args, *argv], capture_output=True, text=True, check=True)  # fmt: skip
    pid = int(out.stdout.strip())
    try:
        time.sleep(2.0)  # start-up and the first full read are not what is measured
        before, start = cpu_seconds(pid), time.monotonic()
        time.sleep(seconds)
        return 100 * (cpu_seconds(pid) - before) / (time.monotonic() - start)
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", default="1000,5000")
    parser.add_argument("--busy", type=int, default=20)
    parser.add_argument("--rate", type=float, default=8.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--keep", type=Path)
    args = parser.parse_args()
    gen = generator()
    base = args.keep or Path(tempfile.mkdtemp(prefix="ccm-bench-live-"))
    views = {
        "top": [str(BIN / "ccm-hooks"), "top"],
        "status --watch": [str(BIN / "ccm-hooks"), "status", "--watch"],
    }
    print(f"{'sessions':>8}  {'view':<15} {'at rest':>8} {'busy':>8}   writer (baseline)")
    for n in (int(x) for x in args.sessions.split(",")):
        root = base / f"sessions-{n}"
        if not root.exists():
            gen.write_statedir(str(root), sessions=n, records=60)
        sids = sorted(p.stem for p in (root / "status").glob("*.json"))[: args.busy]
        for name, argv in views.items():
            rest = in_pane(root, argv, args.seconds)
            writer = Writer(root, sids, args.rate)
            try:
                w0, t0 = cpu_seconds(writer.proc.pid), time.monotonic()
                busy = in_pane(root, argv, args.seconds)
                wcpu = 100 * (cpu_seconds(writer.proc.pid) - w0) / (time.monotonic() - t0)
            finally:
                writer.stop()
            activity = f"{args.busy} sessions x {args.rate:g}/s"
            print(f"{n:>8}  {name:<15} {rest:7.1f}% {busy:7.1f}%   {wcpu:5.1f}% ({activity})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
