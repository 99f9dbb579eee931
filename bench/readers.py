#!/usr/bin/env python3
"""What the read commands cost as the state dir grows, against baselines measured in the same run.

    python bench/readers.py [--runs 5] [--sessions 10,1000,10000] [--big-mb 10,500] [--keep DIR]

Two families of state dirs, made by bench/statedir_gen.py (the handler's own record code; while that
module is not on main, it is imported from the hotpath worktree, /work/wt/hotpath/bench/):

- sessions: 10, 1,000 and 10,000 sessions of 60 records (most ended, spread over 30 days, a few busy in
  the last hour);
- log size: one session whose log is 10 MB, then 500 MB, one record a minute, so that its last hour holds
  ~60 records, among 5 small sessions.

For each, the wall time (median of --runs, commands interleaved round by round so that noise hits all
alike) and the peak RSS of: `status`, `status --json`, `events -s ID`, `events --since 1h`, and the start
of `events --follow` (until its first 10 lines are out; RSS while it then waits), and of the baselines: the
equivalent jq one-liner, `tail -n 10`, `python -c pass` (the interpreter alone). Ratios are of medians;
"growth" compares each size with the smallest (10x and 100x the sessions; 50x the log).

Linux only (peak RSS from wait4 and /proc).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
BIN = Path(sys.executable).parent
CCM = str(BIN / "ccm-hooks")
PY = sys.executable
TIME = "/usr/bin/time" if os.path.exists("/usr/bin/time") else None  # GNU time, for the peak RSS


def generator() -> ModuleType:
    """bench/statedir_gen.py; while it is not on main, the hotpath worktree's copy (development only)."""
    for where in (BENCH, Path("/work/wt/hotpath/bench")):
        if (where / "statedir_gen.py").exists():
            sys.path.insert(0, str(where))
            import statedir_gen  # type: ignore[import-not-found]

            return statedir_gen
    raise SystemExit("bench/statedir_gen.py (the state dir generator) is missing")


def run_once(argv: list[str], env: dict[str, str]) -> tuple[float, int]:
    """(wall seconds, peak RSS KiB) of one run, output discarded.

    The peak RSS comes from GNU time: a child forked straight from this process would report this
    process's own RSS as its peak (Linux records the pre-exec image's high-water mark)."""
    with tempfile.NamedTemporaryFile("r") as out:
        timed = [TIME, "-f", "%M", "-o", out.name, *argv] if TIME else argv
        start = time.perf_counter()
        proc = subprocess.run(timed, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        took = time.perf_counter() - start
        if proc.returncode not in (0, 1) or (proc.returncode == 1 and argv[-1] != "validate"):
            raise SystemExit(f"{argv[:4]} exited {proc.returncode}: {proc.stderr[-500:]!r}")
        rss = int(out.read().split()[-1]) if TIME else 0
    return took, rss


def follow_once(argv: list[str], env: dict[str, str], lines: int = 10) -> tuple[float, int]:
    """(seconds until ``lines`` lines are out, peak RSS KiB by then) of a command that then keeps running."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    try:
        assert proc.stdout is not None
        for _ in range(lines):
            if not proc.stdout.readline():
                break
        took = time.perf_counter() - start
        time.sleep(0.2)  # what it holds while it follows
        hwm = 0
        for row in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
            if row.startswith("VmHWM:"):
                hwm = int(row.split()[1])
        return took, hwm
    finally:
        proc.kill()
        proc.wait()


class Table:
    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], list[tuple[float, int]]] = {}

    def add(self, scenario: str, name: str, sample: tuple[float, int]) -> None:
        self.rows.setdefault((scenario, name), []).append(sample)

    def median(self, scenario: str, name: str) -> tuple[float, int]:
        samples = self.rows[(scenario, name)]
        return statistics.median(s[0] for s in samples), max(s[1] for s in samples)


def measure(
    scenario: str, root: Path, cases: dict[str, tuple[str, list[str]]], runs: int, table: Table
) -> None:
    env = {**os.environ, "CCM_HOME": str(root), "LC_ALL": "C.UTF-8"}
    for _ in range(runs):
        for name, (kind, argv) in cases.items():
            table.add(scenario, name, follow_once(argv, env) if kind == "follow" else run_once(argv, env))


def make_sessions(gen: ModuleType, root: Path, n: int) -> None:
    gen.write_statedir(str(root), sessions=n, records=60, busy=min(20, max(1, n // 50)))


def make_big_log(gen: ModuleType, root: Path, megabytes: int) -> str:
    """A few small sessions and one whose log is ``megabytes`` MB, one record a minute, ending now."""
    gen.write_statedir(str(root), sessions=5, records=60)
    [sid] = gen.session_ids(1, seed=77)
    records = megabytes * 1_000_000 // 400  # about; the log stops at the size, ending close to now
    gen.write_log_of_size(str(root), sid, megabytes * 1_000_000, start=time.time() - records * 60, step_s=60)
    return str(sid)


def last_hour(log: Path) -> str:
    """The ts one hour before the log's last record (what `--since 1h` means when the log ends now)."""
    from datetime import datetime, timedelta

    with log.open("rb") as fh:
        fh.seek(max(0, log.stat().st_size - 65536))
        last = fh.read().splitlines()[-1]
    ts = last.split(b'"ts":"', 1)[1][:26].decode()
    return (datetime.fromisoformat(ts) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def session_cases(root: Path) -> dict[str, tuple[str, list[str]]]:
    statuses = sorted(str(p) for p in (root / "status").glob("*.json"))
    logs = sorted((root / "events").glob("*.jsonl"), key=lambda p: p.stat().st_size)
    one = logs[len(logs) // 2]  # a typical session
    newest = max(logs, key=lambda p: p.stat().st_mtime)
    since = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(time.time() - 3600))
    all_logs = [str(p) for p in logs]
    return {
        "python -c pass": ("run", [PY, "-c", "pass"]),
        "jq -s . status/*.json": ("run", ["jq", "-s", ".", *statuses]),
        "status": ("run", [CCM, "status"]),
        "status --json": ("run", [CCM, "status", "--json"]),
        "jq -c . events/ID.jsonl": ("run", ["jq", "-c", ".", str(one)]),
        "events -s ID": ("run", [CCM, "events", "-s", one.stem]),
        "events -s ID --json": ("run", [CCM, "events", "-s", one.stem, "--json"]),
        "jq 'select(.ts >= T)' events/*": ("run", ["jq", "-c", f'select(.ts >= "{since}")', *all_logs]),
        "events --since 1h": ("run", [CCM, "events", "--since", since]),
        "tail -n 10 -f newest log": ("follow", ["tail", "-n", "10", "-f", str(newest)]),
        "events --follow (first 10)": ("follow", [CCM, "events", "--follow"]),
    }


def big_log_cases(root: Path, sid: str) -> dict[str, tuple[str, list[str]]]:
    log = str(root / "events" / f"{sid}.jsonl")
    since = last_hour(Path(log))
    return {
        "python -c pass": ("run", [PY, "-c", "pass"]),
        "jq 'select(.ts >= T)' log": ("run", ["jq", "-c", f'select(.ts >= "{since}")', log]),
        "events -s ID --since 1h": ("run", [CCM, "events", "-s", sid, "--since", since]),
        "events --since 1h": ("run", [CCM, "events", "--since", since]),
        "tail -n 10 -f log": ("follow", ["tail", "-n", "10", "-f", log]),
        "events -s ID --follow (first 10)": ("follow", [CCM, "events", "-s", sid, "--follow"]),
        "jq -c . log": ("run", ["jq", "-c", ".", log]),
        "events -s ID --json": ("run", [CCM, "events", "-s", sid, "--json"]),
        "events -s ID": ("run", [CCM, "events", "-s", sid]),
        "validate": ("run", [CCM, "validate"]),
    }


def report(table: Table, scenarios: list[str], baseline: dict[str, str]) -> None:
    names = list(dict.fromkeys(name for (scenario, name) in table.rows if scenario in scenarios))
    first = scenarios[0]
    print(f"\n{'command':<34}" + "".join(f"{s:>26}" for s in scenarios) + "   growth")
    for name in names:
        cells, times = [], []
        for scenario in scenarios:
            if (scenario, name) not in table.rows:
                cells.append(f"{'-':>26}")
                continue
            t, rss = table.median(scenario, name)
            base = baseline.get(name)
            ratio = ""
            if base and (scenario, base) in table.rows:
                ratio = f" {t / table.median(scenario, base)[0]:4.1f}x"
            cells.append(f"{t * 1000:9.1f} ms{ratio:>6} {rss / 1024:5.0f} MiB")
            times.append(t)
        growth = " ".join(f"{t / times[0]:.1f}x" for t in times[1:]) if len(times) > 1 else ""
        # The same, each time divided by `python -c pass` in its own column: machine noise cancels out.
        py = [table.median(s, "python -c pass")[0] for s in scenarios if (s, name) in table.rows]
        rel = [t / p for t, p in zip(times, py, strict=True)]
        steady = " ".join(f"{r / rel[0]:.1f}x" for r in rel[1:]) if len(rel) > 1 else ""
        print(f"{name:<34}" + "".join(cells) + f"   {growth:<10} {steady}")
    print(
        f"(ms: median wall time; Nx: against its baseline in the same column; MiB: peak RSS; growth: "
        f"against {first}, raw, then divided by python -c pass in each column)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--sessions", default="10,1000,10000")
    parser.add_argument("--big-mb", default="10,500")
    parser.add_argument("--keep", type=Path, help="generate into (and reuse) this directory")
    args = parser.parse_args()
    gen = generator()
    base = args.keep or Path(tempfile.mkdtemp(prefix="ccm-bench-readers-"))
    table = Table()

    scenarios = []
    for n in (int(x) for x in args.sessions.split(",")):
        root = base / f"sessions-{n}"
        if not root.exists():
            print(f"generating {n} sessions ...", file=sys.stderr)
            make_sessions(gen, root, n)
        scenario = f"{n} sessions"
        scenarios.append(scenario)
        measure(scenario, root, session_cases(root), args.runs, table)
    report(table, scenarios, {
        "status": "jq -s . status/*.json", "status --json": "jq -s . status/*.json",
        "events -s ID": "jq -c . events/ID.jsonl", "events -s ID --json": "jq -c . events/ID.jsonl",
        "events --since 1h": "jq 'select(.ts >= T)' events/*",
        "events --follow (first 10)": "tail -n 10 -f newest log",
        "jq -s . status/*.json": "python -c pass",
    })  # fmt: skip

    scenarios = []
    for mb in (int(x) for x in args.big_mb.split(",")):
        root = base / f"log-{mb}mb"
        if not root.exists():
            print(f"generating a {mb} MB log ...", file=sys.stderr)
            sid = make_big_log(gen, root, mb)
        else:
            sid = max((root / "events").glob("*.jsonl"), key=lambda p: p.stat().st_size).stem
        scenario = f"{mb} MB log"
        scenarios.append(scenario)
        runs = args.runs if mb <= 50 else max(1, args.runs // 2)
        cases = big_log_cases(root, sid)
        slow = {k: cases.pop(k) for k in ("jq -c . log", "events -s ID --json", "events -s ID", "validate")}
        measure(scenario, root, cases, runs, table)
        measure(scenario, root, slow, 1 if mb > 50 else runs, table)
    report(table, scenarios, {
        "events -s ID --since 1h": "jq 'select(.ts >= T)' log",
        "events --since 1h": "jq 'select(.ts >= T)' log",
        "events -s ID --follow (first 10)": "tail -n 10 -f log", "events -s ID --json": "jq -c . log",
        "events -s ID": "jq -c . log", "validate": "jq -c . log",
    })  # fmt: skip
    if not args.keep:
        import shutil

        shutil.rmtree(base)
    return 0


if __name__ == "__main__":
    sys.exit(main())
