"""Tasks end to end: the real ccm-agentd launches the real claude (each supported version) in a real tmux
server, in real git worktrees, against the scripted model; results, retries, cancel, timeout, a killed pane,
headless, folder trust, and a daemon that died in the middle of launches."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from ccm_agentd import panes
from ccm_hooks.commands import top_tasks
from ccm_hooks.statedir import agentcmd, tasks
from tests.agentdrun import Agentd, notified_kinds
from tests.claude_harness import TmuxServer, seed_claude_json, wait_for
from tests.fakeapi import FakeAnthropic, api_error, text, tool_use
from tests.taskrun import (
    Slow,
    add,
    by_token,
    ccm,
    commit_file,
    configure_tasks,
    git,
    git_repo,
    load,
    max_concurrent,
    wait_task,
)

pytestmark = [pytest.mark.e2e, pytest.mark.tmux]


def test_tasks_run_in_order_within_limits_and_bring_back_their_work(
    claude_bin: str, fake_api: FakeAnthropic, ccm_home: Path, tmux_server: TmuxServer, agentd: Agentd,
    tmp_path: Path, private_home: Path,
) -> None:  # fmt: skip
    project = git_repo(tmp_path / "project")
    seed_claude_json(private_home, project)
    notified = tmp_path / "notified.txt"
    configure_tasks(ccm_home, tmux_server, fake_api, claude_bin, notified, max_agents=2)
    fake_api.responder = Slow(by_token({
        "TOKEN-A": [commit_file("a.txt"), [text("a.txt is committed. [DONE]")]],
        "TOKEN-B": [commit_file("b.txt"), [text("b.txt is committed. [DONE]")]],
        # Attempt 1 gives up; attempt 2 (its prompt says why the first failed) commits and leaves a file.
        "attempt 2": [commit_file("c.txt"), [tool_use("Bash", {"command": "echo draft > notes.txt"})],
                      [text("c.txt is committed, notes.txt is a draft. [DONE]")]],
        "TOKEN-C": [[text("[ERROR] the spec file is missing")]],
        "TOKEN-D": [[text("Just an answer, no tools.")]],
        "TOKEN-E": [commit_file("e.txt"), [text("[DONE]")]],
        "TOKEN-F": [commit_file("f.txt"), [text("[DONE]")]],
    }), 0.3)  # fmt: skip
    a = add(
        "-C", str(project), "--permission-mode", "bypassPermissions", "--name", "task a", "TOKEN-A: add a.txt"
    )
    b = add("-C", str(project), "--permission-mode", "bypassPermissions", "--after", a, "TOKEN-B: add b.txt")
    c = add("-C", str(project), "--permission-mode", "bypassPermissions", "TOKEN-C: add c.txt")
    d = add("-C", str(project), "--max-turns", "0", "TOKEN-D: answer a question")
    e, f = (
        add("-C", str(project), "--permission-mode", "bypassPermissions", f"TOKEN-{n}: add") for n in "EF"
    )
    agentd.start()
    done = {t: wait_task(ccm_home, t, tasks.FINAL, 120) for t in (a, b, c, d, e, f)}
    assert {t: done[t]["state"] for t in done} == dict.fromkeys(done, "done"), {
        t: done[t]["reason"] for t in done
    }

    # Never more than max_agents conversations at once, measured at the model server.
    assert max_concurrent(fake_api.requests) <= 2
    # --after: B started only once A was done.
    assert done[b]["attempts"][0]["started_at"] >= done[a]["state_since"]
    # Each on its own branch with its commit, and a result a person can read.
    ra = done[a]["result"]
    assert ra["branch"] == f"ccm/{a}" and [x["subject"] for x in ra["commits"]] == ["add a.txt"]
    assert ra["files"] == [{"path": "a.txt", "added": 1, "removed": 0, "kind": "committed"}]
    assert ra["last_message"] == "a.txt is committed. [DONE]" and ra["turns"] == 1 and ra["tool_uses"] == 1
    assert "done marker" in done[a]["reason"] and ra["transcript_path"] and ra["tokens"]["output"] > 0
    assert git(project, "log", "--format=%s", f"ccm/{b}").splitlines()[0] == "add b.txt"
    # C: failed once ([ERROR]), retried in a fresh session on the same branch with the reason in its prompt.
    attempts = done[c]["attempts"]
    assert [x["outcome"] for x in attempts] == ["failed", "done"]
    assert attempts[0]["session_id"] != attempts[1]["session_id"]
    assert "[ERROR] the spec file is missing" in attempts[1]["retry_note"]
    rc = done[c]["result"]
    assert rc["sessions"] == [x["session_id"] for x in attempts]
    assert {(f["path"], f["kind"]) for f in rc["files"]} == {
        ("c.txt", "committed"),
        ("notes.txt", "untracked"),
    }
    # D: watch off, done after its first turn, nothing changed.
    assert done[d]["reason"] == "the first turn ended (watch off)" and done[d]["result"]["commits"] == []
    # The user's own work tree stays clean: the worktrees under .claude/worktrees/ are excluded.
    assert git(project, "status", "--porcelain") == ""
    # Done windows close after close_after_s; notifications went out; everything validates.
    assert all(done[t]["result"]["commits_total"] == 1 for t in (e, f))
    wait_for(lambda: all(load(ccm_home, t)["attempts"][-1]["closed_at"] for t in done), what="windows closed")
    assert [w.name for w in agentcmd.Tmux(str(tmux_server.socket_path)).windows()] in ([], ["keep"])
    wait_for(lambda: notified_kinds(notified).count("task_done") == 6, what="six task_done notifications")
    logs = ccm("task", "logs", c, "--json").stdout.splitlines()
    assert sum('"UserPromptSubmit"' in line for line in logs) == 2  # both attempts' sessions
    check = ccm("validate")
    assert check.returncode == 0 and " 0 errors" in check.stdout, check.stdout
    shown = ccm("task", "show", a).stdout
    assert "add a.txt" in shown and "+1" in shown and f"ccm/{a}" in shown
    top = ccm("top", "-n", "1").stdout
    # The most recently finished tasks (top_tasks.MAX_FINISHED of them) under the sessions.
    assert "TASK" in top and sum(t in top for t in done) == min(len(done), top_tasks.MAX_FINISHED)


def test_max_turns_no_progress_a_400_and_a_usage_limit(
    claude_bin: str, claude_version: str, fake_api: FakeAnthropic, ccm_home: Path, tmux_server: TmuxServer,
    agentd: Agentd, tmp_path: Path, private_home: Path,
) -> None:  # fmt: skip
    """How a task's watch run and its API errors end it: max turns and no progress are done, a 400 is failed,
    a usage limit waits (rate_limited on the task's session), is resumed once after its reset, then done."""
    project = git_repo(tmp_path / "project")
    seed_claude_json(private_home, project)
    configure_tasks(
        ccm_home, tmux_server, fake_api, claude_bin, max_agents=4,
        agentd_settings={"rate_limit_wait_s": 4, "rate_limit_jitter_s": 0.5, "resume_prompt": "go on please"},
        # No retries of a 429 by Claude Code itself; no colours: 2.1.328's "Resend your message" hint is then
        # not dim, and only the End probe tells it from a draft (screen.py, delivery/readiness.py).
        env_extra={"CLAUDE_CODE_MAX_RETRIES": "0", "NO_COLOR": "1"},
    )  # fmt: skip
    limited: list[float] = []

    def respond(body: dict[str, Any]) -> Any:
        first = json.dumps(next((m for m in body.get("messages") or [] if m.get("role") == "user"), {}))
        step = sum(1 for m in body.get("messages") or [] if m.get("role") == "assistant")
        if "TOKEN-M" in first:  # a tool in every turn, never done: only max turns ends it
            return [tool_use("Bash", {"command": f"echo {step}"})] if step % 2 == 0 else [text("A step.")]
        if "TOKEN-N" in first:  # talk, no tools, never done: no progress ends it
            return [text(f"Still thinking ({step}).")]
        if "TOKEN-E" in first:
            return api_error(400, "invalid_request_error", "messages.0: a bad request")
        if "TOKEN-L" in first:
            if not limited:
                limited.append(time.time())
                return api_error(429, "rate_limit_error", "Rate limited.")  # no reset time: rate_limit_wait_s
            return [text("Resumed and finished. [DONE]")]
        return [text("Hi there.")]

    fake_api.responder = respond
    mode = ("--permission-mode", "bypassPermissions")
    m = add("-C", str(project), *mode, "--max-turns", "2", "TOKEN-M: loop")
    n = add("-C", str(project), *mode, "--max-turns", "10", "TOKEN-N: ponder")
    e = add("-C", str(project), *mode, "--retries", "0", "TOKEN-E: fail")
    lim = add("-C", str(project), *mode, "TOKEN-L: hit the limit")
    agentd.start()
    # The usage limit: the task stays running while its session is rate_limited, then resumes once.
    seen = wait_for(
        lambda: (t := load(ccm_home, lim))["state"] == "running" and tasks_status(ccm_home, t).get("state")
        == "rate_limited" and t, timeout=60, what="the limited task's session rate_limited",
    )  # fmt: skip
    assert seen["state"] == "running"
    ended = {t: wait_task(ccm_home, t, tasks.FINAL, 90) for t in (m, n, e, lim)}
    assert {t: ended[t]["state"] for t in ended} == {m: "done", n: "done", e: "failed", lim: "done"}, {
        t: ended[t]["reason"] for t in ended
    }
    assert "2 of 2 auto-continues used" in ended[m]["reason"], ended[m]["reason"]
    assert "without a tool call" in ended[n]["reason"], ended[n]["reason"]
    assert ended[e]["reason"].startswith("API error") and "400" in ended[e]["reason"], ended[e]["reason"]
    assert len(ended[e]["attempts"]) == 1  # --retries 0
    assert len(ended[lim]["attempts"]) == 1 and "[DONE]" in ended[lim]["result"]["last_message"]
    resumes = [r for r in fake_api.main_requests() if r.last_user_text.endswith("go on please")]
    assert len(resumes) == 1 and resumes[0].time >= limited[0] + 3.5


def test_cancel_timeout_and_a_killed_pane(
    claude_bin: str, fake_api: FakeAnthropic, ccm_home: Path, tmux_server: TmuxServer, agentd: Agentd,
    tmp_path: Path, private_home: Path,
) -> None:  # fmt: skip
    project = git_repo(tmp_path / "project")
    seed_claude_json(private_home, project)
    configure_tasks(ccm_home, tmux_server, fake_api, claude_bin, max_agents=3)
    fake_api.responder = by_token({token: [busy()] for token in ("TOKEN-X", "TOKEN-Y", "TOKEN-Z")})
    mode = ("--permission-mode", "bypassPermissions")
    x = add("-C", str(project), *mode, "TOKEN-X: work for a long time")
    y = add("-C", str(project), *mode, "--timeout", "6s", "--retries", "0", "TOKEN-Y: work for too long")
    z = add("-C", str(project), *mode, "--retries", "1", "TOKEN-Z: get killed")
    agentd.start()
    tmux = agentcmd.Tmux(str(tmux_server.socket_path))

    def working(task_id: str) -> dict[str, object]:
        def check() -> dict[str, object] | None:
            task = load(ccm_home, task_id)
            status = tasks_status(ccm_home, task)
            return task if task["state"] == "running" and status.get("state") == "working" else None

        return wait_for(check, 45, what=f"task {task_id} running a tool")

    # Cancel while running: interrupted, its process ended, its window closed.
    running = working(x)
    pane = running["attempts"][-1]["pane"]  # type: ignore[index]
    pid = tmux.pane(pane).pane_pid  # type: ignore[union-attr]
    assert ccm("task", "cancel", x).returncode == 0
    cancelled = wait_task(ccm_home, x, ("cancelled",), 20)
    assert cancelled["result"]["state"] == "cancelled" and tmux.pane(pane) is None
    wait_for(lambda: not panes.pid_alive(pid), 10, what="the cancelled agent's process gone")
    # A killed pane: the session is lost, retried once in a fresh session, then failed.
    for n in (1, 2):
        task = wait_for(lambda n=n: (t := load(ccm_home, z))["state"] == "running" and len(t["attempts"]) == n
                        and tasks_status(ccm_home, t).get("state") == "working" and t, 45,
                        what=f"attempt {n} of {z} working")  # fmt: skip
        tmux.run("kill-pane", "-t", task["attempts"][-1]["pane"])
    failed = wait_task(ccm_home, z, ("failed",), 30)
    assert [a["outcome"] for a in failed["attempts"]] == ["failed", "failed"]
    assert "session ended" in failed["reason"] and "session ended" in failed["attempts"][1]["retry_note"]
    # --timeout: failed, interrupted (no more work), and its window kept for inspection.
    timed_out = wait_task(ccm_home, y, ("failed",), 45)
    assert timed_out["reason"].startswith("timed out") and len(timed_out["attempts"]) == 1
    kept = tmux.pane(timed_out["attempts"][0]["pane"])
    assert kept is not None and not kept.dead
    assert ccm("task", "retry", x).returncode == 0 and load(ccm_home, x)["state"] in (
        "queued",
        "starting",
        "running",
    )


def busy() -> list[dict[str, object]]:
    """A tool call that runs for a minute (2.1.328 refuses a bare `sleep 60`)."""
    return [tool_use("Bash", {"command": "python3 -c 'import time; time.sleep(60)'"})]


def tasks_status(home: Path, task: dict[str, object]) -> dict[str, object]:
    from ccm_hooks.statedir import tasks_result

    attempt = tasks.current_attempt(task)  # type: ignore[arg-type]
    return tasks_result.session_status(str(home), (attempt or {}).get("session_id")) or {}


def test_headless_and_an_untrusted_project(
    claude_bin: str, fake_api: FakeAnthropic, ccm_home: Path, tmux_server: TmuxServer, agentd: Agentd,
    tmp_path: Path, private_home: Path,
) -> None:  # fmt: skip
    trusted = git_repo(tmp_path / "trusted")
    untrusted = git_repo(tmp_path / "untrusted")
    seed_claude_json(private_home, trusted)
    notified = tmp_path / "notified.txt"
    configure_tasks(ccm_home, tmux_server, fake_api, claude_bin, notified, launch_timeout_s=8)
    fake_api.responder = by_token({"TOKEN-H": [commit_file("h.txt"), [text("h.txt committed [DONE]")]]})
    mode = ("--permission-mode", "bypassPermissions")
    h = add("-C", str(trusted), *mode, "--headless", "TOKEN-H: add h.txt")
    u = add("-C", str(untrusted), *mode, "TOKEN-U: anything")
    v = add("-C", str(untrusted), *mode, "--headless", "TOKEN-V: anything")
    agentd.start()
    # Headless: claude -p, its stream-json kept under the task, the same result, and its cost.
    done = wait_task(ccm_home, h, tasks.FINAL, 60)
    assert done["state"] == "done", done["reason"]
    result, attempt = done["result"], done["attempts"][0]
    assert [x["subject"] for x in result["commits"]] == ["add h.txt"] and result["cost_usd"] > 0
    assert attempt["pane"] is None and Path(attempt["output"]).read_text().count('"type":"result"') == 1
    # Untrusted: never answered; the task waits for a person and says why; headless does not even start.
    waiting = wait_task(ccm_home, u, ("waiting",), 30)
    assert "trust" in waiting["reason"]
    shown = agentcmd.Tmux(str(tmux_server.socket_path)).capture(waiting["attempts"][0]["pane"]) or ""
    assert "trust this folder" in shown
    headless_waiting = wait_task(ccm_home, v, ("waiting",), 10)
    assert "does not trust" in headless_waiting["reason"] and headless_waiting["attempts"][0]["pid"] is None
    wait_for(
        lambda: notified_kinds(notified).count("task_waiting") == 2, what="two task_waiting notifications"
    )
    assert ccm("task", "cancel", u).returncode == 0
    cancelled = wait_task(ccm_home, u, ("cancelled",), 20)
    assert agentcmd.Tmux(str(tmux_server.socket_path)).pane(cancelled["attempts"][0]["pane"]) is None
    assert not os.path.exists(os.path.join(str(untrusted), ".claude.json"))  # nothing of Claude's touched


def test_a_daemon_killed_mid_launch_finishes_each_launch_once(
    claude_bin: str, fake_api: FakeAnthropic, ccm_home: Path, tmux_server: TmuxServer, agentd: Agentd,
    tmp_path: Path, private_home: Path,
) -> None:  # fmt: skip
    """What a kill -9 leaves at each step of a launch, made by the launcher's own steps: the attempt only in
    the log; the worktree too; the agent's window open but not yet in the task file. A restarted daemon
    finishes each with exactly one agent, and no window or worktree is left that no task accounts for."""
    from ccm_agentd.tasks import config as tasks_config
    from ccm_agentd.tasks.launcher import Launcher
    from ccm_hooks.statedir import config

    project = git_repo(tmp_path / "project")
    seed_claude_json(private_home, project)
    configure_tasks(ccm_home, tmux_server, fake_api, claude_bin, max_agents=3)
    fake_api.responder = by_token({f"TOKEN-{n}": [commit_file(f"{n}.txt"), [text("[DONE]")]] for n in "123"})
    ids = [add("-C", str(project), "--permission-mode", "bypassPermissions", f"TOKEN-{n}: go") for n in "123"]
    launcher = Launcher(str(ccm_home), tasks_config.from_table(config.read_config(str(ccm_home))["tasks"]))
    now = time.time()
    after_record = launcher.begin(load(ccm_home, ids[0]), now)
    after_worktree = launcher._worktree(launcher.begin(load(ccm_home, ids[1]), now))
    third = launcher._worktree(launcher.begin(load(ccm_home, ids[2]), now))
    launcher.proceed(dict(third, attempts=[dict(third["attempts"][0])]), now)  # the window opens...
    tasks.change(
        str(ccm_home),
        ids[2],
        "test",
        attempt={"n": 1, "window": None, "pane": None, "pid": None, "launched_at": None},
    )  # ...and the record is lost
    assert after_record["state"] == after_worktree["state"] == "starting"
    agentd.start()
    finished = [wait_task(ccm_home, t, tasks.FINAL, 60) for t in ids]
    assert [t["state"] for t in finished] == ["done"] * 3, [t["reason"] for t in finished]
    sessions = {r.headers.get("X-Claude-Code-Session-Id") for r in fake_api.main_requests()}
    assert len(sessions) == 3 and all(len(t["attempts"]) == 1 for t in finished)
    wait_for(lambda: agentcmd.Tmux(str(tmux_server.socket_path)).windows() == [], what="no window left")
    listed = git(project, "worktree", "list", "--porcelain")
    assert sorted(line.split()[1] for line in listed.splitlines() if line.startswith("worktree ")) == sorted(
        [str(project), *(t["workdir"] for t in finished)]
    )
