#!/usr/bin/env python3
"""ccm-agentd's delivery delay: from a session's status turning idle to the queued prompt's keys being sent.

    python bench/agentd_delivery.py [--rounds 20] [--sessions 0]

The real parts: claude (tests/node_modules/.bin/claude or $CCM_TEST_CLAUDE) in a tmux pane on a private
socket, talking to the scripted Messages API in tests/fakeapi.py, ccm's hooks installed, and the real
``ccm-agentd run``. Each round's prompt makes the model run one Bash ``sleep 0.3``; while that turn works,
the next round's prompt is queued with ``ccm-hooks send``, so the daemon can type it only after the Stop.

Per round, from the files: the Stop record's ``ts`` (the handler writes it just before it replaces the
status, so this is the status change), the daemon's ``typing`` delivery record, and its ``typed ... into``
log line (written after Enter went out: the keys are sent). Printed: medians and the slowest round, and the
ratio of the median delay to one bare ``tmux send-keys`` measured in the same run (the least any tool that
types through tmux must pay).

``--sessions N`` first puts N other sessions in the state dir (bench/statedir_gen.py, 60 records each):
the delay must not grow with what is on disk.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ccm_hooks.statedir.timefmt import parse_ts  # noqa: E402
from tests.claude_harness import (  # noqa: E402
    TmuxServer,
    claude_env,
    start_claude,
    submit,
    wait_for,
    wait_idle,
)
from tests.fakeapi import FakeAnthropic, last_user_is_tool_result, text, tool_use  # noqa: E402

BIN = Path(sys.executable).parent


def _claude() -> str:
    for candidate in (os.environ.get("CCM_TEST_CLAUDE"), str(REPO / "tests/node_modules/.bin/claude")):
        if candidate and Path(candidate).exists():
            return candidate
    raise SystemExit("claude not found: run `sh install/dev-setup.sh` or set CCM_TEST_CLAUDE")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _last_prompt_is(status_file: Path, prompt: str) -> bool:
    return bool(json.loads(status_file.read_text()).get("last_prompt") == prompt)


def _delivered(log_file: Path, count: int) -> bool:
    """Whether ``count`` deliveries are confirmed in the log."""
    outcomes = [(r.get("delivery") or {}).get("outcome") for r in _read_jsonl(log_file)]
    return outcomes.count("delivered") == count


def _tmux_server(root: Path) -> TmuxServer:
    conf = root / "tmux.conf"
    conf.write_text("set -g status off\nset -g focus-events on\n")
    tmux = shutil.which("tmux")
    if tmux is None:
        raise SystemExit("tmux not found: install tmux")
    env = {"HOME": str(root), "SHELL": "/bin/sh", "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
           "LANG": "C.UTF-8", "TERM": "xterm-256color"}  # fmt: skip
    return TmuxServer(tmux, f"ccm-bench-{secrets.token_hex(4)}", conf, env)


def _responder(body: dict[str, Any]) -> list[dict[str, Any]]:
    if last_user_is_tool_result(body):
        return [text("Round done.")]
    return [tool_use("Bash", {"command": "sleep 0.3", "description": "a short step"})]


def _send_keys_ms(server: TmuxServer, pane: str, runs: int = 30) -> float:
    """One bare ``tmux send-keys`` (an empty literal string: nothing reaches claude)."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        server.run("send-keys", "-t", pane, "-l", "")
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def measure(rounds: int, sessions: int = 0) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="ccm-bench-delivery-"))
    home, project = root / "home", root / "project"
    home.mkdir()
    project.mkdir()
    ccm_home = home / ".ccm"
    os.environ.update(HOME=str(home), CCM_HOME=str(ccm_home))
    ccm_home.mkdir(mode=0o700)
    (ccm_home / "config.toml").write_text("[agentd]\nnotify_desktop = false\n")
    if sessions:
        from bench.statedir_gen import write_statedir

        write_statedir(str(ccm_home), sessions=sessions, records=60)
    others = {p.stem for p in (ccm_home / "status").glob("*.json")} if sessions else set()
    subprocess.run(
        [str(BIN / "ccm-hooks"), "install", "--project", str(project)], check=True, capture_output=True
    )
    server = _tmux_server(root)
    api = FakeAnthropic(_responder)
    daemon: subprocess.Popen[bytes] | None = None
    try:
        api.start()
        daemon = subprocess.Popen(
            [str(BIN / "ccm-agentd"), "run"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        pane = start_claude(server, _claude(), project, claude_env(api, {"PATH": f"{BIN}:/usr/bin:/bin"}))
        wait_idle(pane)
        submit(pane, "round 0")
        sid = wait_for(
            lambda: [p.stem for p in (ccm_home / "status").glob("*.json") if p.stem not in others],
            what="a session",
        )[0]
        status_file = ccm_home / "status" / f"{sid}.json"
        log_file = ccm_home / "events" / f"{sid}.jsonl"
        for i in range(1, rounds + 1):
            # Queue the next prompt while this round's turn is still working.
            wait_for(partial(_last_prompt_is, status_file, f"round {i - 1}"), what=f"round {i - 1} submitted")
            subprocess.run(
                [str(BIN / "ccm-hooks"), "send", sid, f"round {i}"], check=True, capture_output=True
            )
            wait_for(partial(_delivered, log_file, i), timeout=30, what=f"round {i} delivered")
        wait_idle(pane)
        baseline_ms = _send_keys_ms(server, pane.pane_id)
    finally:
        if daemon is not None:
            daemon.terminate()
            daemon.wait(timeout=30)
        server.kill()
        api.stop()

    typed_at = {}
    for line in _read_jsonl(ccm_home / "log" / "agentd.log"):
        words = str(line.get("msg")).split()
        if words[:1] == ["typed"]:
            typed_at[words[1]] = parse_ts(line["ts"])
    stop_ts: float | None = None
    to_typing, to_keys = [], []
    for rec in _read_jsonl(log_file):
        if rec["event"] == "Stop":
            stop_ts = parse_ts(rec["ts"])
        elif (
            rec["event"] == "ccm.delivery" and rec["delivery"]["outcome"] == "typing" and stop_ts is not None
        ):
            typing_ts = parse_ts(rec["ts"])
            keys_ts = typed_at.get(rec["delivery"]["item"])
            assert typing_ts is not None and keys_ts is not None
            to_typing.append((typing_ts - stop_ts) * 1000)
            to_keys.append((keys_ts - stop_ts) * 1000)
            stop_ts = None
    shutil.rmtree(root, ignore_errors=True)
    return {"to_typing": to_typing, "to_keys": to_keys, "baseline_ms": baseline_ms}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--sessions", type=int, default=0, help="other sessions on disk")
    args = parser.parse_args()
    got = measure(args.rounds, args.sessions)
    to_typing, to_keys, baseline = got["to_typing"], got["to_keys"], got["baseline_ms"]
    median = statistics.median(to_keys)
    print(f"rounds delivered: {len(to_keys)} of {args.rounds}, {args.sessions} other sessions on disk")
    for label, values in (("status idle -> typing record", to_typing), ("status idle -> keys sent", to_keys)):
        print(f"{label:32} median {statistics.median(values):7.1f} ms   max {max(values):7.1f} ms")
    print(f"{'baseline, one tmux send-keys':32} median {baseline:7.1f} ms")
    print(f"ratio (median delay / baseline): {median / baseline:.1f}x   target: under 100 ms")
    return 0 if len(to_keys) == args.rounds else 1


if __name__ == "__main__":
    sys.exit(main())
