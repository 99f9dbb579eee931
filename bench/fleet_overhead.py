#!/usr/bin/env python3
"""What the fleet costs a machine: ccm-agentd's CPU and the hooks' latency, fleet on against fleet off.

    python bench/fleet_overhead.py [--seconds 60] [--rate 10]

Two state dirs, each with its ccm-agentd: one with [fleet] (a private PostgreSQL), one without. A busy
session in each: ``--rate`` tool calls a second (a PreToolUse and a PostToolUse hook each, the real handler
as Claude Code runs it), the two dirs interleaved call by call so machine noise hits both alike, with a bare
``python -c pass`` in the same loop as the baseline. Reported: each daemon's CPU time over the run
(utime + stime from /proc) and the hooks' median and p90 wall time. Linux only (/proc).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import fleetsetup as fs

SESSION = "b5e50000-0000-4000-8000-000000000001"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=10.0, help="tool calls per second in each session")
    args = parser.parse_args()
    pg = fs.cluster()
    daemons = {}
    try:
        dsn = fs.fresh_database(pg)
        homes = {"fleet on": fs.make_home(dsn), "fleet off": fs.make_home(None)}
        for name, home in homes.items():
            fs.run_hook(home, "SessionStart", fs.payload("SessionStart__startup_interactive", SESSION))
            daemons[name] = fs.start_daemon(home)
        fs.wait(
            lambda: fs.count(dsn, "SELECT count(*) FROM ccm.events") > 0, 60, "the fleet daemon's first ship"
        )
        time.sleep(3.0)  # start-up is not the steady state
        pre, post = fs.payload("PreToolUse__Bash", SESSION), fs.payload("PostToolUse__Bash", SESSION)
        hooks: dict[str, list[float]] = {name: [] for name in homes}
        bare: list[float] = []
        cpu0 = {name: fs.cpu_seconds(p.pid) for name, p in daemons.items()}
        start = time.monotonic()
        calls = 0
        while time.monotonic() - start < args.seconds:
            for name, home in homes.items():
                hooks[name].append(fs.run_hook(home, "PreToolUse", pre))
                hooks[name].append(fs.run_hook(home, "PostToolUse", post))
            t = time.perf_counter()
            subprocess.run([sys.executable, "-c", "pass"], check=True)
            bare.append(time.perf_counter() - t)
            calls += 1
            time.sleep(max(0.0, start + calls / args.rate - time.monotonic()))
        elapsed = time.monotonic() - start
        fs.wait(
            lambda: fs.count(dsn, "SELECT count(*) FROM ccm.events") >= 1 + 2 * calls, 60, "the last records"
        )
        cpu = {name: fs.cpu_seconds(p.pid) - cpu0[name] for name, p in daemons.items()}
    finally:
        for p in daemons.values():
            fs.stop_daemon(p)
        pg.destroy()
    base = statistics.median(bare)
    print(f"{calls} tool calls per session in {elapsed:.0f} s ({calls / elapsed:.1f}/s), 2 hooks each")
    print(f"baseline: python -c pass median {base * 1e3:.1f} ms")
    print(
        f"{'':<10} {'agentd CPU s':>12} {'% of a core':>11} {'hook median ms':>14} {'p90 ms':>7} "
        f"{'vs baseline':>11}"
    )
    for name in homes:
        values = sorted(hooks[name])
        median = statistics.median(values)
        print(f"{name:<10} {cpu[name]:12.2f} {100 * cpu[name] / elapsed:11.2f} {median * 1e3:14.1f} "
              f"{values[int(len(values) * 0.9)] * 1e3:7.1f} {median / base:10.2f}x")  # fmt: skip
    on, off = statistics.median(hooks["fleet on"]), statistics.median(hooks["fleet off"])
    print(f"hook latency, fleet on / off: {on / off:.2f}x; agentd CPU, fleet on / off: "
          f"{cpu['fleet on'] / max(cpu['fleet off'], 1e-9):.2f}x")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
