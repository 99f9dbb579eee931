"""Helpers for the tasks tests: a git project, config.toml for agents in the test's tmux server, a scripted
model that answers each task by a token in its prompt, and waiting for task states."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ccm_hooks.statedir import tasks
from tests.agentdrun import _notify_command
from tests.claude_harness import TmuxServer, claude_env, wait_for
from tests.fakeapi import FakeAnthropic, RecordedRequest, Reply, text, tool_use
from tests.hookrun import CCM_HOOKS, MINIMAL_PATH

GIT_ID = ["-c", "user.name=ccm-test", "-c", "user.email=test@ccm.invalid"]


def git(repo: Path, *args: str) -> str:
    out = subprocess.run(["git", "-C", str(repo), *GIT_ID, *args], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout


def git_repo(path: Path) -> Path:
    """A repository with one commit (README)."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    (path / "README").write_text("a project\n")
    git(path, "add", "README")
    git(path, "commit", "-qm", "start")
    return path


def commit_file(name: str, line: str = "hello") -> Reply:
    """A Bash tool call that writes ``name`` and commits it on the current branch."""
    command = (
        f"printf '{line}\\n' > {name} && git add {name} && git {' '.join(GIT_ID)} commit -qm 'add {name}'"
    )
    return [tool_use("Bash", {"command": command})]


def configure_tasks(
    home: Path, tmux: TmuxServer, api: FakeAnthropic, claude_bin: str, notified: Path | None = None,
    agentd_settings: dict[str, Any] | None = None, env_extra: dict[str, str] | None = None, **settings: Any,
) -> None:  # fmt: skip
    """config.toml: [agentd] as the daemon tests use it (plus ``agentd_settings``), [tasks] running agents in
    ``tmux``'s server with the environment claude needs to talk to ``api`` (plus ``env_extra``), and no
    notifications but the recording command."""
    agentd: dict[str, Any] = {"liveness_s": 0.5, "notify_desktop": False, **(agentd_settings or {})}
    if notified is not None:
        agentd["notify_commands"] = [_notify_command(notified)]
    table: dict[str, Any] = {
        "tmux_socket": str(tmux.socket_path), "claude": claude_bin, "launch_timeout_s": 30,
        "close_after_s": 1, "retry_backoff_s": [0.5], "end_grace_s": 2, **settings,
    }  # fmt: skip
    env = {
        k: v
        for k, v in claude_env(api, {"PATH": MINIMAL_PATH, **(env_extra or {})}).items()
        if k != "CCM_HOME"
    }
    lines = ["[agentd]", *(f"{k} = {json.dumps(v)}" for k, v in agentd.items())]
    lines += ["[tasks]", *(f"{k} = {json.dumps(v)}" for k, v in table.items())]
    lines += ["[tasks.env]", *(f"{k} = {json.dumps(v)}" for k, v in env.items())]
    home.mkdir(mode=0o700, parents=True, exist_ok=True)  # as ccm makes it
    (home / "config.toml").write_text("\n".join(lines) + "\n")
    (home / "config.toml").chmod(0o600)  # it holds commands: private, as ccm writes it


def ccm(*args: str, stdin: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CCM_HOOKS, *args], capture_output=True, text=True, timeout=60, input=stdin, cwd=cwd
    )


def add(*args: str, cwd: Path | None = None) -> str:
    """``ccm-hooks task add ARGS``: the new task's id."""
    out = ccm("task", "add", *args, cwd=cwd)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def load(home: Path, task_id: str) -> dict[str, Any]:
    task = tasks.load(str(home), task_id)
    assert task is not None
    return task


def wait_task(home: Path, task_id: str, states: Sequence[str], timeout: float = 45.0,
              what: str = "") -> dict[str, Any]:  # fmt: skip
    """Poll the task until its state is one of ``states``; the task then."""

    def check() -> dict[str, Any] | None:
        task = tasks.load(str(home), task_id)
        return task if task is not None and task.get("state") in states else None

    def show() -> str:
        task = tasks.load(str(home), task_id) or {}
        log = (
            (home / "log" / "agentd.log").read_text()[-3000:]
            if (home / "log" / "agentd.log").exists()
            else ""
        )
        return f"task is {task.get('state')}: {task.get('reason')}\nagentd.log tail:\n{log}"

    return wait_for(check, timeout, 0.1, what=what or f"task {task_id} {'/'.join(states)}", diagnostics=show)


def by_token(table: Mapping[str, Sequence[Reply]]) -> Any:
    """A responder: the first token of ``table`` found in the conversation's first user message picks the
    script; the number of assistant messages so far picks the reply (then "All done. [DONE]")."""

    def respond(body: dict[str, Any]) -> Reply:
        messages = body.get("messages") or []
        first = json.dumps(next((m for m in messages if m.get("role") == "user"), {}))
        step = sum(1 for m in messages if m.get("role") == "assistant")
        for token, replies in table.items():
            if token in first:
                return replies[step] if step < len(replies) else [text("All done. [DONE]")]
        return [text("Hi there.")]

    return respond


def max_concurrent(requests: list[RecordedRequest]) -> int:
    """The most conversations open at once at the model server: each session from its first main request
    to its last (the X-Claude-Code-Session-Id header names the session)."""
    spans: dict[str, list[float]] = {}
    for r in requests:
        sid = r.headers.get("X-Claude-Code-Session-Id") or r.headers.get("x-claude-code-session-id")
        if r.kind != "main" or not sid:
            continue
        span = spans.setdefault(sid, [r.time, r.time])
        span[0], span[1] = min(span[0], r.time), max(span[1], r.time)
    edges = sorted([(a, 1) for a, _ in spans.values()] + [(b, -1) for _, b in spans.values()],
                   key=lambda e: (e[0], -e[1]))  # fmt: skip
    best = now = 0
    for _, step in edges:
        now += step
        best = max(best, now)
    return best


class Slow:
    """A responder wrapper that holds each main request ``delay`` seconds, so conversations overlap."""

    def __init__(self, inner: Any, delay: float) -> None:
        self.inner, self.delay = inner, delay

    def __call__(self, body: dict[str, Any]) -> Reply:
        time.sleep(self.delay)
        reply: Reply = self.inner(body)
        return reply
