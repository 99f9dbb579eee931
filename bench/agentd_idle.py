#!/usr/bin/env python3
"""ccm-agentd at rest: CPU time and RSS over a quiet period with many sessions' files present.

    python bench/agentd_idle.py [--sessions 100] [--seconds 60]

A scratch state dir gets ``--sessions`` idle sessions, written by the real handler. The daemon runs on it
for ``--seconds`` with nothing happening; its CPU time (utime + stime from /proc) and RSS are compared with a
bare ``python -c 'import time; time.sleep(N)'`` measured in the same run (its RSS is the baseline: what any
Python process costs). Linux only (/proc).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PAYLOADS = REPO / "tests" / "fixtures" / "payloads"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()

    home = tempfile.mkdtemp(prefix="ccm-bench-agentd-")
    env = {**os.environ, "HOME": home, "CCM_HOME": os.path.join(home, ".ccm")}
    stop = json.loads((PAYLOADS / "Stop__first.json").read_text())
    for i in range(args.sessions):
        stop["session_id"] = f"bench-{i:04d}"
        subprocess.run([str(BIN / "ccm-hook")], input=json.dumps(stop).encode(), env=env, check=True)

    daemon = subprocess.Popen([str(BIN / "ccm-agentd"), "run"], env=env, stderr=subprocess.DEVNULL)
    bare = subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({args.seconds + 30})"])
    time.sleep(5.0)  # start-up (imports, the first pass over every session) is not "idle"
    start_d, start_b, t0 = cpu_seconds(daemon.pid), cpu_seconds(bare.pid), time.monotonic()
    time.sleep(args.seconds)
    used_d, used_b = cpu_seconds(daemon.pid) - start_d, cpu_seconds(bare.pid) - start_b
    wall = time.monotonic() - t0
    rss_d, rss_b = rss_mib(daemon.pid), rss_mib(bare.pid)
    daemon.terminate()
    bare.kill()
    daemon.wait(timeout=30)
    print(f"sessions: {args.sessions}  idle period: {wall:.0f} s")
    print(
        f"ccm-agentd CPU: {used_d:.2f} s ({100 * used_d / wall:.3f}% of a core)  bare python: {used_b:.2f} s"
    )
    print(f"ccm-agentd RSS: {rss_d:.1f} MiB   bare python: {rss_b:.1f} MiB ({rss_d / rss_b:.1f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
