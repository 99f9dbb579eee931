#!/usr/bin/env python3
"""ccm-agentd's cost as sessions pile up on disk: one busy session, 10 to 5,000 others (issue 9).

    python bench/agentd_scale.py [--sizes 10,100,1000,5000] [--runs 3] [--busy-seconds 15]
                                 [--rest-sizes 10,5000] [--rest-seconds 60] [--keep DIR]

For each size, a state dir of that many sessions written by bench/statedir_gen.py (the handler's own
record code; 60 records each, most ended, spread over 30 days) and the real ``ccm-agentd run`` on it:

- start-up: from the process's start to its ``READY=1`` (sd_notify, on a socket of ours bound as
  ``$NOTIFY_SOCKET``), sent after the first pass has read every status and acted on every session;
- busy: its CPU (utime + stime from /proc, % of one core) while ONE more session gets ~8 hook events a
  second from the real handler (``ccm-hook``, payloads from tests/fixtures/payloads, PreToolUse and
  PostToolUse of Bash in turn), after a 2 s warm-up; the writer's own CPU, handler processes included,
  is printed beside it (what the activity itself costs);
- at rest (``--rest-sizes`` only): its CPU over ``--rest-seconds`` with nothing happening, long enough to
  hold the 30 s rescan (stat every status file) and heartbeats.

Sizes are interleaved round by round (``--runs``) so that machine noise hits all alike; medians are
printed, with the ratio to the 10-session baseline of the same run and the growth at 10x and 100x.
Linux only (/proc).

Results (`python bench/agentd_scale.py`: 3 runs, 20 s busy, 60 s at rest; a 2-core machine shared with
other test runs, load average 3 to 5):

    sessions  busy CPU  ratio  writer  start-up  ratio  its CPU  ratio  rest CPU
          10     0.40%  1.00x   24.6%     886ms  1.00x    0.29s  1.00x    0.017%
         100     0.50%  1.25x   27.8%     270ms  0.30x    0.26s  0.90x         -
        1000     0.40%  1.00x   25.1%     576ms  0.65x    0.32s  1.10x         -
        5000     0.55%  1.38x   26.0%     892ms  1.01x    0.44s  1.52x    0.283%
    growth at 10x (10 -> 100): busy CPU 1.25x; at 100x (10 -> 1000): 1.00x; at 500x (10 -> 5000): 1.38x

Busy CPU is flat within the clock's resolution (0.01 s of CPU in 20 s is 0.05%): the busy session's events
cost the same with 10 or 5,000 sessions on disk. What 5,000 add is the rest cost, in the busy figure too: a
rescan every 30 s (one scandir, a stat per file: ~45 ms of CPU at 5,000) and a heartbeat every 15 s
(health.json and metrics.prom count sessions by state: ~11 ms). Start-up wall times are noise on a loaded
machine (10 sessions: 0.27 to 2.9 s over the three runs); its CPU to READY=1 is the steady figure: 0.29 s
(imports, mostly) and 0.44 s with 5,000 statuses to read. The writer (the handler processes) costs 60
times what the daemon spends on what they write.

Before issue 9's fix, the busy session cost 5% of a core with 100 sessions on disk, 49% with 1,000 and
100% with 5,000 (every status file re-read per event); start-up took 1.7 s at 5,000, rest 2.2%. The
delivery delay (`python bench/agentd_delivery.py --rounds 15 --sessions 5000`, in the same hour, while
this ran): status idle to keys sent, median 79 ms (max 170 ms) with 5,000 sessions on disk, 127 ms (max
293 ms) with none; before the fix 55 ms grew to 160 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.statedir_gen import write_statedir  # noqa: E402

BIN = Path(sys.executable).parent
PAYLOADS = REPO / "tests" / "fixtures" / "payloads"
BUSY_SID = "bench-busy-0001"


def cpu_seconds(pid: int, children: bool = False) -> float:
    """utime + stime of ``pid`` (with ``children``, of its waited-for children too), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


# The busy session: the real handler run ``rate`` times a second, as Claude Code runs a hook (payload on
# stdin), Pre and PostToolUse of Bash in turn after a SessionStart and a prompt.
WRITER = """
import json, subprocess, sys, time
hook, payloads, sid, rate = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
def load(name, **changes):
    data = json.load(open(f"{payloads}/{name}.json"))
    data.update(changes, session_id=sid)
    return data
def run(data):
    subprocess.run([hook], input=json.dumps(data).encode(), stdout=subprocess.DEVNULL, check=True)
run(load("SessionStart__startup_interactive"))
run(load("UserPromptSubmit__p"))
n, start = 0, time.monotonic()
while True:
    n += 1
    tool_id = f"toolu_bench_{n // 2}"
    run(load("PreToolUse__Bash" if n % 2 else "PostToolUse__Bash", tool_use_id=tool_id))
    time.sleep(max(0.0, start + n / rate - time.monotonic()))
"""


class Daemon:
    """``ccm-agentd run`` on ``home``, with its sd_notify messages on a socket of ours."""

    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.sock_path = home / "notify.sock"
        self.sock_path.unlink(missing_ok=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.sock_path))
        started = time.perf_counter()
        self.proc = subprocess.Popen(
            [str(BIN / "ccm-agentd"), "run"], env={**env, "NOTIFY_SOCKET": str(self.sock_path)},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.sock.settimeout(0.2)
        while True:
            try:
                if b"READY=1" in self.sock.recv(4096):
                    break
            except TimeoutError:
                if self.proc.poll() is not None:
                    raise SystemExit(
                        f"ccm-agentd exited {self.proc.returncode} before it was ready"
                    ) from None
        self.startup_s = time.perf_counter() - started
        self.startup_cpu_s = self.cpu()

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)
        self.sock.close()
        self.sock_path.unlink(missing_ok=True)


def statedir(base: Path, n: int) -> tuple[Path, dict[str, str]]:
    """A home with ``n`` generated sessions under .ccm (made once, reused); its environment."""
    home = base / f"sessions-{n}"
    ccm = home / ".ccm"
    if not (ccm / "status").exists():
        ccm.mkdir(parents=True, mode=0o700)
        (ccm / "config.toml").write_text("[agentd]\nnotify_desktop = false\n")
        os.chmod(ccm / "config.toml", 0o600)
        write_statedir(str(ccm), sessions=n, records=60)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TMUX", "NOTIFY_SOCKET", "WATCHDOG"))}
    env.update(HOME=str(home), CCM_HOME=str(ccm), CLAUDE_PROJECT_DIR=str(home))
    return home, env


def reset_busy(home: Path) -> None:
    """Remove the busy session of an earlier round: every round starts from the generated dir."""
    ccm = home / ".ccm"
    for sub, suffix in (("status", ".json"), ("events", ".jsonl"), ("locks", ".lock")):
        (ccm / sub / f"{BUSY_SID}{suffix}").unlink(missing_ok=True)


def one_round(home: Path, env: dict[str, str], busy_s: float, rest_s: float, rate: float) -> dict[str, float]:
    reset_busy(home)
    daemon = Daemon(home, env)
    out = {"startup_s": daemon.startup_s, "startup_cpu_s": daemon.startup_cpu_s}
    try:
        if rest_s:
            time.sleep(2.0)  # the rest of start-up (first heartbeat, the tasks job's first pass)
            c0, t0 = daemon.cpu(), time.monotonic()
            time.sleep(rest_s)
            out["rest"] = 100 * (daemon.cpu() - c0) / (time.monotonic() - t0)
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(BIN / "ccm-hook"), str(PAYLOADS), BUSY_SID, str(rate)], env=env
        )
        try:
            time.sleep(2.0)
            e0, c0, w0 = ccm_events(home), daemon.cpu(), cpu_seconds(writer.pid, children=True)
            t0 = time.monotonic()
            time.sleep(busy_s)
            wall = time.monotonic() - t0
            out["events_per_s"] = (ccm_events(home) - e0) / wall
            out["busy"] = 100 * (daemon.cpu() - c0) / wall
            out["writer"] = 100 * (cpu_seconds(writer.pid, children=True) - w0) / wall
        finally:
            writer.kill()
            writer.wait()
        assert daemon.proc.poll() is None, "ccm-agentd died"
    finally:
        daemon.stop()
    return out


def ccm_events(home: Path) -> int:
    path = home / ".ccm" / "events" / f"{BUSY_SID}.jsonl"
    return sum(1 for _ in path.open("rb")) if path.exists() else 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10,100,1000,5000")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--busy-seconds", type=float, default=15.0)
    parser.add_argument("--rest-sizes", default="10,5000")
    parser.add_argument("--rest-seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=8.0, help="hook events a second of the busy session")
    parser.add_argument("--keep", type=Path, help="make the state dirs here and keep them")
    args = parser.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    rest_sizes = {int(x) for x in args.rest_sizes.split(",") if x}
    base = args.keep or Path(tempfile.mkdtemp(prefix="ccm-bench-scale-"))
    dirs = {n: statedir(base, n) for n in sizes}
    got: dict[int, list[dict[str, float]]] = {n: [] for n in sizes}
    try:
        for r in range(args.runs):
            for n in sizes:
                home, env = dirs[n]
                rest = args.rest_seconds if n in rest_sizes else 0.0
                got[n].append(one_round(home, env, args.busy_seconds, rest, args.rate))
                shown = json.dumps({k: round(v, 3) for k, v in got[n][-1].items()})
                print(f"run {r + 1}, {n} sessions: {shown}", file=sys.stderr, flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)

    def med(n: int, key: str) -> float:
        values = [g[key] for g in got[n] if key in g]
        return statistics.median(values) if values else float("nan")

    b = sizes[0]
    print(f"ccm-agentd, one session at ~{args.rate:g} hook events/s; medians of {args.runs} runs; "
          f"ratios against {b} sessions")  # fmt: skip
    head = ("sessions", "busy CPU", "ratio", "writer", "start-up", "ratio", "its CPU", "ratio", "rest CPU")
    print("{:>8} {:>9} {:>6} {:>7} {:>9} {:>6} {:>8} {:>6} {:>9}".format(*head))
    for n in sizes:
        busy, wall, cpu, rest = med(n, "busy"), med(n, "startup_s"), med(n, "startup_cpu_s"), med(n, "rest")
        ratios = busy / med(b, "busy"), wall / med(b, "startup_s"), cpu / med(b, "startup_cpu_s")
        line = (f"{n:>8} {busy:8.2f}% {ratios[0]:5.2f}x {med(n, 'writer'):6.1f}% {wall * 1000:7.0f}ms "
                f"{ratios[1]:5.2f}x {cpu:7.2f}s {ratios[2]:5.2f}x {rest:8.3f}%")  # fmt: skip
        print(line.replace("nan%", "   -"))
    for n in sizes:
        for m in sizes:
            if m > n and m // n in (10, 100, 500) and m % n == 0:
                g = [med(m, k) / med(n, k) for k in ("busy", "startup_s", "startup_cpu_s")]
                print(f"growth at {m // n}x ({n} -> {m} sessions): busy CPU {g[0]:.2f}x, "
                      f"start-up {g[1]:.2f}x (its CPU {g[2]:.2f}x)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
