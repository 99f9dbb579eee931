#!/usr/bin/env python3
"""Tasks: how long from ``ccm-hooks task add`` to the model's first request, and how 20 one-turn tasks at
``max_agents 4`` compare with 5 times one task's.

    python bench/tasks_launch.py [--rounds 5] [--tasks 20]

The real parts: ``ccm-agentd run``, claude (tests/node_modules/.bin/claude or $CCM_TEST_CLAUDE) in a tmux
server on a private socket and in git worktrees, the scripted Messages API in tests/fakeapi.py answering
every turn at once with "[DONE]".

1. Launch latency, per round: the time from just before ``ccm-hooks task add`` to the first main-conversation
   request of the task's session at the model server (the ``X-Claude-Code-Session-Id`` header names it),
   for an interactive task and a headless one; the baseline, in the same rounds, is a bare ``claude -p``
   from just before its start to its first request. Printed: medians and their ratios (aim: within 1.3x).
   A third start, ``claude -p`` run directly with the argv and environment ccm-agentd gives a headless
   agent (its hooks, stream-json, name, permission mode) but without ``task add`` or the daemon, tells
   what ccm's hooks and flags cost claude from what the queue costs.
2. Throughput: one task from ``task add`` to ``done``, alone, ``--rounds`` times (median); then ``--tasks``
   tasks added at once (``task add -``) at ``max_agents 4`` to the last ``done``. Printed: that wall time
   against 5 x the single task's median (aim: within 1.3x: 20 tasks are 5 waves of 4).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ccm_hooks.statedir import agentcmd, tasks  # noqa: E402
from ccm_hooks.statedir.timefmt import parse_ts  # noqa: E402
from tests.claude_harness import claude_env, seed_claude_json, wait_for  # noqa: E402
from tests.fakeapi import FakeAnthropic, text  # noqa: E402
from tests.hookrun import MINIMAL_PATH  # noqa: E402

BIN = Path(sys.executable).parent


def _claude() -> str:
    for candidate in (os.environ.get("CCM_TEST_CLAUDE"), str(REPO / "tests/node_modules/.bin/claude")):
        if candidate and Path(candidate).exists():
            return candidate
    raise SystemExit("claude not found: run `sh install/dev-setup.sh` or set CCM_TEST_CLAUDE")


def _git(repo: Path, *args: str) -> None:
    ident = ["-c", "user.name=bench", "-c", "user.email=bench@ccm.invalid"]
    subprocess.run(["git", "-C", str(repo), *ident, *args], check=True, capture_output=True, timeout=30)


def _first_request(api: FakeAnthropic, session_id: str, timeout: float = 60) -> float:
    def found() -> float | None:
        for r in api.requests:
            if r.kind == "main" and r.headers.get("X-Claude-Code-Session-Id") == session_id:
                return r.time
        return None

    return wait_for(found, timeout, 0.005, what=f"the first request of {session_id}")


class Bench:
    def __init__(self, tmp: Path, max_agents: int) -> None:
        self.home = tmp / "home"
        self.ccm_home = self.home / ".ccm"
        self.project = tmp / "project"
        self.project.mkdir(parents=True)
        self.home.mkdir()
        _git(self.project, "init", "-q", "-b", "main")
        _git(self.project, "commit", "-q", "--allow-empty", "-m", "start")
        seed_claude_json(self.home, self.project)
        self.api = FakeAnthropic(lambda body: [text("Done. [DONE]")]).start()
        self.socket = f"/tmp/ccm-bench-{secrets.token_hex(4)}"
        self.env = {**os.environ, "HOME": str(self.home), "CCM_HOME": str(self.ccm_home)}
        self.claude = _claude()
        agent_env = {k: v for k, v in claude_env(self.api, {"PATH": MINIMAL_PATH}, home=self.home).items()
                     if k != "CCM_HOME"}  # fmt: skip
        self.agent_env = agent_env
        lines = ["[agentd]", "notify_desktop = false", "[tasks]", f"tmux_socket = {json.dumps(self.socket)}",
                 f"claude = {json.dumps(self.claude)}", f"max_agents = {max_agents}",
                 f"max_agents_per_project = {max_agents}", "close_after_s = 0", "max_pending = 1000",
                 "[tasks.env]", *(f"{k} = {json.dumps(v)}" for k, v in agent_env.items())]  # fmt: skip
        self.ccm_home.mkdir()
        (self.ccm_home / "config.toml").write_text("\n".join(lines) + "\n")
        self.daemon = subprocess.Popen([str(BIN / "ccm-agentd"), "run"], env=self.env,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        wait_for(lambda: (self.ccm_home / "agentd" / "health.json").exists(), 30, what="ccm-agentd up")

    def add(self, *args: str, stdin: str | None = None) -> list[str]:
        out = subprocess.run([str(BIN / "ccm-hooks"), "task", "add", "-C", str(self.project),
                              "--permission-mode", "bypassPermissions", *args], env=self.env, input=stdin,
                             capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
        return out.stdout.split()

    def task(self, task_id: str) -> dict[str, object]:
        task = tasks.load(str(self.ccm_home), task_id)
        assert task is not None
        return task

    def session_of(self, task_id: str) -> str:
        def found() -> str | None:
            attempts = self.task(task_id).get("attempts") or []
            return str(attempts[0]["session_id"]) if attempts else None  # type: ignore[index]

        return wait_for(found, 60, 0.005, what=f"task {task_id} launched")

    def wait_done(self, ids: list[str], timeout: float = 600) -> float:
        wait_for(lambda: all(self.task(t)["state"] in tasks.FINAL for t in ids), timeout, 0.1,
                 what="tasks done")  # fmt: skip
        return time.time()

    def bare(self) -> float:
        sid = _uuid()
        t0 = time.time()
        proc = subprocess.Popen([self.claude, "-p", "--session-id", sid, "say hi"], cwd=self.project,
                                env=claude_env(self.api, home=self.home), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        latency = _first_request(self.api, sid) - t0
        proc.wait(60)
        return latency

    def direct(self) -> float:
        """``claude -p`` with a headless agent's argv and environment, started here (the shim must exist:
        a ``task add`` writes it)."""
        sid = _uuid()
        argv = agentcmd.claude_argv(self.claude, "say hi", session_id=sid, name="say hi",
                                    permission_mode="bypassPermissions", headless=True)  # fmt: skip
        env = {**self.env, **agentcmd.agent_env(str(self.ccm_home), task_id=None, max_turns=0,
                                                done_marker=None, extra=self.agent_env)}  # fmt: skip
        t0 = time.time()
        proc = subprocess.Popen(argv, cwd=self.project, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        latency = _first_request(self.api, sid) - t0
        proc.wait(60)
        return latency

    def close(self) -> None:
        self.daemon.terminate()
        self.daemon.wait(30)
        subprocess.run(["tmux", "-S", self.socket, "kill-server"], capture_output=True)
        self.api.stop()


def _uuid() -> str:
    import uuid

    return str(uuid.uuid4())


def latency(rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="ccm-bench-", ignore_cleanup_errors=True) as tmp:
        b = Bench(Path(tmp), max_agents=4)
        try:
            bare, interactive, headless, direct = [], [], [], []
            parts: dict[str, dict[str, list[float]]] = {
                kind: {"cli": [], "daemon": [], "claude": []} for kind in ("interactive", "headless")
            }
            for _ in range(rounds):
                bare.append(b.bare())
                kinds = (("interactive", interactive, ()), ("headless", headless, ("--headless",)))
                for kind, sink, args in kinds:
                    t0 = time.time()
                    [task_id] = b.add(*args, "say hi")
                    first = _first_request(b.api, b.session_of(task_id))
                    sink.append(first - t0)
                    b.wait_done([task_id])
                    log = list(tasks.history(str(b.ccm_home), task_id))
                    created = parse_ts(log[0]["ts"]) or t0
                    launched = next(parse_ts(r["ts"]) or created for r in log
                                    if (r.get("attempt") or {}).get("launched_at"))  # fmt: skip
                    parts[kind]["cli"].append(created - t0)
                    parts[kind]["daemon"].append(launched - created)
                    parts[kind]["claude"].append(first - launched)
                direct.append(b.direct())
        finally:
            b.close()
    base = statistics.median(bare)
    print(f"task add -> first model request, median of {rounds} (seconds):")
    print(f"  bare claude -p           {base:.3f}")
    med = statistics.median(direct)
    print(f"  claude -p as ccm runs it {med:.3f}  ({med / base:.2f}x: ccm's hooks and flags, no queue)")
    for name, values in (("interactive task", interactive), ("headless task", headless)):
        med = statistics.median(values)
        print(f"  {name:<24} {med:.3f}  ({med / base:.2f}x; slowest {max(values):.3f})")
    print("  where it goes (medians; cli: task add until the task is written; daemon: until the agent is"
          " started and recorded; claude: until its first request, its SessionStart and UserPromptSubmit"
          " hooks included):")  # fmt: skip
    for kind, split in parts.items():
        print(f"    {kind:<12} " + ", ".join(f"{k} {statistics.median(v):.3f}" for k, v in split.items()))


def throughput(rounds: int, count: int) -> None:
    with tempfile.TemporaryDirectory(prefix="ccm-bench-", ignore_cleanup_errors=True) as tmp:
        b = Bench(Path(tmp), max_agents=4)
        try:
            singles = []
            for _ in range(rounds):
                t0 = time.time()
                singles.append(b.wait_done(b.add("say hi")) - t0)
            spec = {"project": str(b.project), "permission_mode": "bypassPermissions"}
            lines = "".join(json.dumps({**spec, "prompt": f"say hi {n}"}) + "\n" for n in range(count))
            t0 = time.time()
            out = subprocess.run([str(BIN / "ccm-hooks"), "task", "add", "-"], env=b.env, input=lines,
                                 capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
            total = b.wait_done(out.stdout.split()) - t0
            states = [b.task(t)["state"] for t in out.stdout.split()]
        finally:
            b.close()
    one = statistics.median(singles)
    waves = count / 4
    print(f"one task, add -> done, median of {rounds}: {one:.2f} s")
    print(
        f"{count} tasks at max_agents 4: {total:.2f} s = {total / (waves * one):.2f}x {waves:g} x one task "
        f"({states.count('done')} done)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=20)
    args = parser.parse_args()
    latency(args.rounds)
    throughput(args.rounds, args.tasks)


if __name__ == "__main__":
    main()
