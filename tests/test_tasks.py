"""Tasks without Claude: the store and its files, the CLI (add, stdin lines, the queue bound, list, show,
cancel, retry, logs, attach, clean), the scheduler, the monitor's verdicts, trust, validate, top, start."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from ccm_agentd.jobs import Wake
from ccm_agentd.metrics import Metrics
from ccm_agentd.tasks import monitor, scheduler, trust
from ccm_agentd.tasks.job import TasksJob
from ccm_agentd.tasks.launcher import compose_prompt
from ccm_hooks import fileio, paths
from ccm_hooks.errors import CcmError
from ccm_hooks.record import iso_utc
from ccm_hooks.statedir import agentcmd, tasks, tasks_check, tasks_git
from tests.claude_harness import TmuxServer, wait_for
from tests.taskrun import add, ccm, git, git_repo, load

# --- adding, and the files ---------------------------------------------------------------------------


def test_add_writes_a_task_and_its_log_privately(ccm_home: Path, tmp_path: Path) -> None:
    project = git_repo(tmp_path / "project")
    task_id = add(
        "-C", str(project), "--name", "fix it", "--label", "team=core", "--priority", "3", "fix the bug"
    )
    assert paths.valid_session_id(task_id) and len(task_id) == 8
    task = load(ccm_home, task_id)
    head = git(project, "rev-parse", "HEAD").strip()
    assert task["state"] == "queued" and task["branch"] == f"ccm/{task_id}" and task["base_commit"] == head
    assert task["workdir"] == str(project / ".claude" / "worktrees" / f"ccm-{task_id}")
    assert task["labels"] == {"team": "core"} and task["priority"] == 3 and task["max_turns"] == 10
    assert task["retries"] == 1 and task["error_marker"] == r"\[ERROR\]" and task["created_by"] == "cli"
    directory = ccm_home / "tasks"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for name in (f"{task_id}.json", f"{task_id}.jsonl"):
        assert stat.S_IMODE((directory / name).stat().st_mode) == 0o600
    [created] = [json.loads(line) for line in (directory / f"{task_id}.jsonl").read_text().splitlines()]
    assert (
        created["event"] == "created" and created["seq"] == 1 and created["task"]["prompt"] == "fix the bug"
    )
    assert (ccm_home / "bin" / "ccm-hook").exists()  # agents are recorded through the shim
    listed = json.loads(ccm("task", "list", "--json").stdout)
    assert [t["id"] for t in listed] == [task_id]
    assert task_id in ccm("task", "list").stdout and "fix it" in ccm("task", "show", task_id).stdout
    assert ccm("task", "show", task_id[:3], "--json").returncode == 0
    check = ccm("validate")
    assert " 0 errors" in check.stdout and "1 tasks" in check.stdout, check.stdout


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["/review the code"], "slash command"),
        (["  /help"], "slash command"),
        ([""], "empty"),
        (["--timeout", "soon", "x"], "not a duration"),
        (["--permission-mode", "yolo", "x"], "is not one of"),
        (["--after", "nosuch", "x"], "no task matches"),
        (["--label", "novalue", "x"], "KEY=VALUE"),
        (["--base", "no-such-branch", "x"], "is not a commit"),
        (["--max-turns", "-1", "x"], "--max-turns"),
        (["--model", "--evil", "x"], "--model"),
    ],
)
def test_add_refuses_with_one_line(ccm_home: Path, tmp_path: Path, args: list[str], says: str) -> None:
    project = git_repo(tmp_path / "project")
    out = ccm("task", "add", "-C", str(project), *args)
    assert out.returncode == 1 and says in out.stderr and len(out.stderr.strip().splitlines()) == 1, (
        out.stderr
    )
    assert not (ccm_home / "tasks").exists() or not os.listdir(ccm_home / "tasks")


def test_a_directory_outside_git_needs_in_place(ccm_home: Path, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    out = ccm("task", "add", "-C", str(plain), "do it")
    assert out.returncode == 1 and "--in-place" in out.stderr
    task = load(ccm_home, add("-C", str(plain), "--in-place", "do it"))
    assert task["git"] is False and task["workdir"] == str(plain) and task["branch"] is None


def test_json_lines_on_stdin_are_all_added_or_none(ccm_home: Path, tmp_path: Path) -> None:
    project = git_repo(tmp_path / "project")
    good = [{"prompt": f"job {n}", "project": str(project), "labels": {"n": str(n)}} for n in range(2)]
    bad = {"prompt": "job 3", "project": str(project), "colour": "red"}
    out = ccm("task", "add", "-", stdin="\n".join(json.dumps(x) for x in [*good, bad]) + "\n")
    assert out.returncode == 1 and "stdin line 3" in out.stderr and "colour" in out.stderr
    assert tasks.task_ids(str(ccm_home)) == []
    first = add("-C", str(project), "first")
    lines = [
        *good,
        {"prompt": "after the others", "project": str(project), "after": [first], "headless": True},
    ]
    out = ccm("task", "add", "-", stdin="\n".join(json.dumps(x) for x in lines))
    assert out.returncode == 0, out.stderr
    ids = out.stdout.split()
    assert len(ids) == 3 and load(ccm_home, ids[2])["after"] == [first] and load(ccm_home, ids[2])["headless"]
    assert all(load(ccm_home, i)["created_by"] == "stdin" for i in ids)
    assert "takes everything from stdin" in ccm("task", "add", "--headless", "-", stdin="{}").stderr


def test_the_queue_is_bounded(ccm_home: Path, tmp_path: Path) -> None:
    project = git_repo(tmp_path / "project")
    ccm_home.mkdir(parents=True, exist_ok=True)
    (ccm_home / "config.toml").write_text("[tasks]\nmax_pending = 2\n")
    first = add("-C", str(project), "one")
    add("-C", str(project), "two")
    out = ccm("task", "add", "-C", str(project), "three")
    assert out.returncode == 1 and "the queue is full: 2 tasks pending, the limit is 2" in out.stderr
    assert ccm("task", "cancel", first).returncode == 0
    add("-C", str(project), "three")


def test_cancel_and_retry(ccm_home: Path, tmp_path: Path) -> None:
    project = git_repo(tmp_path / "project")
    task_id = add("-C", str(project), "something")
    assert "only a failed or cancelled" in ccm("task", "retry", task_id).stderr
    assert "had not started" in ccm("task", "cancel", task_id).stdout
    assert load(ccm_home, task_id)["state"] == "cancelled"
    assert "already cancelled" in ccm("task", "cancel", task_id).stderr
    assert ccm("task", "retry", task_id).returncode == 0
    again = load(ccm_home, task_id)
    assert again["state"] == "queued" and again["manual_retries"] == 1
    # A live task: the cancel is a request ccm-agentd carries out.
    tasks.change(str(ccm_home), task_id, "test", to="starting")
    out = ccm("task", "cancel", task_id)
    assert (
        "ccm-agentd interrupts" in out.stdout and load(ccm_home, task_id)["cancel"]["by"] == "ccm-hooks task"
    )
    events = [r["event"] for r in tasks.history(str(ccm_home), task_id)]
    assert events == ["created", "transition", "transition", "transition", "update"]


def test_logs_and_attach_say_why_they_cannot(ccm_home: Path, tmp_path: Path) -> None:
    project = git_repo(tmp_path / "project")
    task_id = add("-C", str(project), "something")
    assert "no session events yet" in ccm("task", "logs", task_id).stderr
    assert "no window yet" in ccm("task", "attach", task_id).stderr
    headless = add("-C", str(project), "--headless", "something")
    assert "runs headless" in ccm("task", "attach", headless).stderr
    assert "no task matches" in ccm("task", "show", "zzz").stderr


# --- the store -----------------------------------------------------------------------------------------


def _new(root: str, project: Path, **fields: Any) -> str:
    base: dict[str, Any] = dict.fromkeys(
        ("workdir", "branch", "base", "base_commit", "timeout_s", "model", "permission_mode", "not_before",
         "cancel", "result", "cleaned_at", "name"),
    )  # fmt: skip
    base.update(v=1, prompt="p", project=str(project), git=True, in_place=False, headless=False, after=[])
    base.update(priority=0, max_turns=10, done_marker=r"\[DONE\]", error_marker=r"\[ERROR\]", retries=1)
    base.update(manual_retries=0, labels={}, attempts=[])
    return tasks.create(root, [{**base, **fields}], "test")[0]


def test_the_file_is_the_fold_of_the_log_whatever_a_crash_left(ccm_home: Path, tmp_path: Path) -> None:
    root = str(ccm_home)
    task_id = _new(root, tmp_path)
    tasks.change(root, task_id, "test", to="starting", attempt={"n": 1, "session_id": "s1"})
    # A writer killed between its append and its replace: the file is one record behind.
    before = (ccm_home / "tasks" / f"{task_id}.json").read_bytes()
    tasks.change(root, task_id, "test", to="running", reason="up")
    (ccm_home / "tasks" / f"{task_id}.json").write_bytes(before)
    assert load(ccm_home, task_id)["state"] == "running"
    # A torn last line (a writer killed mid-append) is skipped; the next append terminates it.
    with open(ccm_home / "tasks" / f"{task_id}.jsonl", "ab") as fh:
        fh.write(b'{"v":1,"ts":"2026-')
    assert load(ccm_home, task_id)["state"] == "running"
    tasks.change(root, task_id, "test", to="done", reason="ok")
    assert load(ccm_home, task_id)["state"] == "done" and load(ccm_home, task_id)["seq"] == 4
    # The file gone: rebuilt from the log.
    (ccm_home / "tasks" / f"{task_id}.json").unlink()
    assert load(ccm_home, task_id)["reason"] == "ok"
    assert [r["seq"] for r in tasks.history(root, task_id)] == [1, 2, 3, 4]


def test_changes_refuse_stale_decisions_and_impossible_transitions(ccm_home: Path, tmp_path: Path) -> None:
    root = str(ccm_home)
    task_id = _new(root, tmp_path)
    with pytest.raises(tasks.Conflict):
        tasks.change(root, task_id, "test", to="running", expect=("starting",))
    with pytest.raises(tasks.Conflict):
        tasks.change(root, task_id, "test", to="done")  # queued cannot become done
    tasks.change(root, task_id, "test", to="cancelled")
    with pytest.raises(tasks.Conflict):
        tasks.change(root, task_id, "test", to="starting")


def test_ids_and_prefixes(ccm_home: Path, tmp_path: Path) -> None:
    root = str(ccm_home)
    one = _new(root, tmp_path, id="ab12")
    _new(root, tmp_path, id="ab34")
    assert tasks.resolve(root, "ab1") == one
    with pytest.raises(CcmError, match="matches 2 tasks"):
        tasks.resolve(root, "ab")
    with pytest.raises(CcmError, match="not a plain id"):
        tasks_check.check_id("../x")
    (ccm_home / "tasks" / "..bad.json").write_text("{}")
    (ccm_home / "tasks" / "notes.txt").write_text("x")
    assert tasks.task_ids(root) == ["ab12", "ab34"]


# --- scheduling and verdicts ---------------------------------------------------------------------------


def _t(task_id: str, state: str = "queued", project: str = "p", **more: Any) -> dict[str, Any]:
    return {"id": task_id, "state": state, "project": project, "priority": 0, "created_at": task_id, **more}


def test_the_scheduler_keeps_order_and_limits() -> None:
    now = time.time()
    queue = [_t("1"), _t("2", priority=5), _t("3", project="q"), _t("4", after=["1"]), _t("5", project="q"),
             _t("6", not_before=iso_utc(now + 60)), _t("7", project="r")]  # fmt: skip

    def pick(given: list[dict[str, Any]], max_agents: int, per_project: int) -> list[str]:
        return [
            t["id"] for t in scheduler.pick(given, {t["id"]: t for t in given}, max_agents, per_project, now)
        ]

    assert pick(queue, 3, 2) == ["2", "1", "3"]  # priority first, then FIFO; 4 waits for 1; 6 backs off
    running = [_t("8", "running"), _t("9", "running")]
    assert pick(queue + running, 4, 2) == ["3", "5"]  # p is full
    assert pick([*queue, _t("10", "done")], 9, 9) == ["2", "1", "3", "5", "7"]
    # --after looks among every task (by_id), the candidates being only the live and queued ones
    waiting = _t("4", after=["1"])
    assert [t["id"] for t in scheduler.pick([waiting], {"1": _t("1", "done"), "4": waiting}, 4, 2, now)] == [
        "4"
    ]
    assert scheduler.blocked_by(_t("4", after=["x"]), {}) == "waits for task x, which does not exist"


def _status(state: str, **more: Any) -> dict[str, Any]:
    watch = {"enabled": True, "stopped": None, "detail": None, "handoff": None, **more.pop("watch", {})}
    return {"state": state, "counters": {"turns": 1}, "watch": watch, "last_assistant_message": None, **more}


TASK = {"error_marker": r"\[ERROR\]", "timeout_s": None, "attempts": [{"started_at": iso_utc(time.time())}]}


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (_status("idle", watch={"stopped": "done", "detail": "the reply has the done marker"}), "done"),
        (_status("idle", watch={"stopped": "max_turns", "detail": "10 of 10"}), "done"),
        (_status("idle", watch={"stopped": "no_progress", "detail": "2 turns"}), "done"),
        (_status("idle", last_assistant_message="[ERROR] no spec", watch={"stopped": "done"}), "failed"),
        (_status("error", error="invalid_request: API Error: 400 bad"), "failed"),
        (_status("ended", reason="lost: tmux pane %3 is gone"), "failed"),
        (_status("error", error="rate_limit: API Error: Request rejected (429)"), None),
        (_status("idle", last_assistant_message="You've hit your limit · resets 3pm"), None),
        (_status("rate_limited"), None),
        (_status("working"), None),
        (_status("waiting"), None),
        (_status("idle", watch={"stopped": "needs_human"}), None),
        (_status("idle", watch={"handoff": {"prompt": "continue"}}), None),
        (_status("idle", watch={"enabled": False}), "done"),
        (None, None),
    ],
)
def test_the_monitor_reads_the_session(status: dict[str, Any] | None, verdict: str | None) -> None:
    got = monitor.assess(TASK, status, time.time())
    assert (got.state if got else None) == verdict


def test_timeouts_count_from_the_first_prompt() -> None:
    task = dict(
        TASK, timeout_s=60, attempts=[{"started_at": iso_utc(0), "confirmed_at": iso_utc(time.time() - 61)}]
    )
    got = monitor.assess(task, _status("working"), time.time())
    assert got is not None and got.state == "failed" and got.reason.startswith("timed out")
    said = {"type": "result", "subtype": "success", "result": "ok [ERROR] x", "is_error": False}
    headless = monitor.assess_headless(TASK, said, 0, time.time())
    assert headless is not None and headless.state == "failed"
    assert monitor.assess_headless(TASK, None, None, time.time()) is None
    assert monitor.assess_headless(TASK, None, 1, time.time()).state == "failed"  # type: ignore[union-attr]


def test_the_prompt_an_agent_gets() -> None:
    task = {"id": "ab12", "prompt": "fix it", "branch": "ccm/ab12", "done_marker": r"\[DONE\]",
            "error_marker": r"\[ERROR\]"}  # fmt: skip
    first = compose_prompt(task, {"n": 1}, True)
    assert first.startswith("fix it\n\n(ccm task ab12") and "[DONE]" in first and "[ERROR]" in first
    retry = compose_prompt(task, {"n": 2, "retry_note": "timed out"}, False)
    assert (
        retry
        == "fix it\n\n(This is attempt 2. The previous one failed: timed out. Its work, if any, is here.)"
    )
    assert tasks.stop_marker(task) == r"(?:\[DONE\])|(?:\[ERROR\])"
    argv = agentcmd.claude_argv("claude", "-x", session_id="u", name="n", permission_mode="manual")
    assert argv[-2:] == ["--", "-x"] and argv[argv.index("--permission-mode") + 1] == "default"
    settings = json.loads(argv[argv.index("--settings") + 1])
    assert "#ccm-hooks" in settings["hooks"]["Stop"][0]["hooks"][0]["command"]
    headless = agentcmd.claude_argv("claude", "x", session_id="u", headless=True)
    assert headless[1:5] == ["-p", "--output-format", "stream-json", "--verbose"]


def test_the_memory_cap_says_when_it_is_unavailable() -> None:
    probe = subprocess.run(["sh", "-c", "systemd-run --user --scope --quiet true"], capture_output=True)
    prefix, what = agentcmd.memory_cap_prefix("2G")
    if probe.returncode == 0:
        assert prefix[:3] == ["systemd-run", "--user", "--scope"] and "MemoryMax=2G" in prefix
    else:
        assert prefix == [] and what.startswith("memory cap 2G unavailable")
    assert agentcmd.memory_cap_prefix(None) == ([], "no memory cap configured")


# --- trust -----------------------------------------------------------------------------------------------


def test_trust_is_read_never_written(private_home: Path, tmp_path: Path) -> None:
    project = tmp_path / "a" / "project"
    (project / "sub").mkdir(parents=True)
    assert trust.trusted(str(project)) is False  # no ~/.claude.json
    path = private_home / ".claude.json"
    path.write_text(json.dumps({"projects": {str(tmp_path / "a"): {"hasTrustDialogAccepted": True}}}))
    before = path.read_bytes()
    assert trust.trusted(str(project / "sub")) is True  # a folder inside a trusted one
    assert trust.trusted(str(tmp_path / "other")) is False
    path.write_text("{not json")
    assert trust.trusted(str(project)) is None
    assert path.read_bytes() != before  # (we wrote it; ccm did not)
    screen = "Accessing workspace:\n\n /x\n\n ❯ 1. Yes, I trust this folder\n   2. No, exit\n"
    assert trust.shows_trust_dialog(screen) and not trust.shows_trust_dialog("❯ hello")


# --- clean ---------------------------------------------------------------------------------------------


def _finished_with_worktree(home: Path, project: Path, prompt: str) -> dict[str, Any]:
    task_id = add("-C", str(project), prompt)
    task = load(home, task_id)
    tasks_git.add_worktree(str(project), task["workdir"], task["branch"], task["base_commit"])
    for state in ("starting", "running", "done"):
        tasks.change(str(home), task_id, "test", to=state)
    return load(home, task_id)


def test_clean_never_loses_work(ccm_home: Path, tmp_path: Path) -> None:
    project = git_repo(tmp_path / "project")
    dirty = _finished_with_worktree(ccm_home, project, "dirty")
    Path(dirty["workdir"], "draft.txt").write_text("unsaved\n")
    detached = _finished_with_worktree(ccm_home, project, "detached")
    git(Path(detached["workdir"]), "checkout", "-q", "--detach")
    Path(detached["workdir"], "x.txt").write_text("x\n")
    git(Path(detached["workdir"]), "add", "x.txt")
    git(Path(detached["workdir"]), "commit", "-qm", "lost if removed")
    clean = _finished_with_worktree(ccm_home, project, "clean")
    running = add("-C", str(project), "still queued")
    assert "cancel it first" in ccm("task", "clean", running).stderr
    out = ccm("task", "clean", "--finished")
    assert out.returncode == 1 and "2 worktree(s) kept" in out.stderr
    assert "1 uncommitted file(s): draft.txt" in out.stderr and "1 commit(s) no branch holds" in out.stderr
    assert Path(dirty["workdir"], "draft.txt").exists() and Path(detached["workdir"]).exists()
    assert not Path(clean["workdir"]).exists() and load(ccm_home, clean["id"])["cleaned_at"]
    assert git(project, "branch", "--list", clean["branch"]).strip()  # branches are never deleted
    forced = ccm("task", "clean", "--force", dirty["id"])
    assert forced.returncode == 0 and "lost: 1 uncommitted" in forced.stdout
    assert not Path(dirty["workdir"]).exists() and git(project, "branch", "--list", dirty["branch"]).strip()
    assert git(project, "status", "--porcelain") == ""


# --- validate, top, the job's own numbers ------------------------------------------------------------


def test_validate_checks_tasks(ccm_home: Path, tmp_path: Path) -> None:
    project = git_repo(tmp_path / "project")
    task_id = add("-C", str(project), "something")
    assert ccm("validate").returncode == 0
    path = ccm_home / "tasks" / f"{task_id}.json"
    task = json.loads(path.read_text())
    path.write_text(json.dumps(dict(task, state="done")) + "\n")
    out = ccm("validate")
    assert out.returncode == 1 and "differs from the fold of its log" in out.stdout
    fileio.append_line(str(ccm_home / "tasks" / f"{task_id}.jsonl"), b'{"v":1,"seq":9,"event":"nope"}\n')
    out = ccm("validate")
    assert "seq 9, expected 2" in out.stdout and "'ts' is a required property" in out.stdout, out.stdout


def test_validate_of_a_task_changed_while_it_reads(
    ccm_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A live daemon appends a record and replaces the file between validate's read of the log and its read
    of the file: the file is ahead of the log as read, which is no error."""
    from ccm_hooks.commands import validate_tasks

    project = git_repo(tmp_path / "project")
    task_id = add("-C", str(project), "something")
    task_file = str(ccm_home / "tasks" / f"{task_id}.json")
    real_open = open

    def racing_open(path: Any, *args: Any, **kw: Any) -> Any:
        if str(path) == task_file:
            tasks.change(str(ccm_home), task_id, "test", note="a change meanwhile")
        return real_open(path, *args, **kw)

    monkeypatch.setattr(validate_tasks, "open", racing_open, raising=False)
    said: list[tuple[str, str]] = []
    validate_tasks._check_task(str(ccm_home), task_id, lambda p, m: said.append((p, m)), lambda p, m: None)
    assert said == []


def test_top_shows_tasks(ccm_home: Path, tmp_path: Path) -> None:
    project = git_repo(tmp_path / "project")
    task_id = add("-C", str(project), "--name", "shown in top", "something")
    out = ccm("top", "-n", "1").stdout
    assert "TASK" in out and task_id in out and "queued" in out and "shown in top" in out


def test_the_job_at_rest(ccm_home: Path) -> None:
    job = TasksJob(str(ccm_home))
    job.configure({"max_agents": 0, "tmux_socket": 7})  # bad values: logged, defaults used
    assert job.cfg.max_agents == 4 and job.cfg.tmux_socket is None
    assert job.wake(Wake(time.time(), {}, frozenset(), {}, True)) is None
    m = Metrics()
    job.metrics(m)
    assert m.value("ccm_tasks", {"state": "queued"}) == 0 and job.health()["launches"] == 0
    assert "ccm_task_launch_failures_total" in m.render()


def test_a_wake_never_walks_the_finished_tasks(ccm_home: Path) -> None:
    """5,000 finished tasks on disk: a session's change costs what it costs with none (issue 9's rule)."""
    job = TasksJob(str(ccm_home))
    job.wake(Wake(time.time(), {}, frozenset(), {}, True))  # loaded: an empty tasks dir

    def timed_wakes() -> float:
        start = time.perf_counter()
        for _ in range(200):
            job.wake(Wake(time.time(), {}, frozenset({"some-session"}), {}, False))
        return time.perf_counter() - start

    empty = min(timed_wakes() for _ in range(3))
    for n in range(5000):
        job._put(f"{n:08x}", _t(f"{n:08x}", "done" if n % 2 else "failed"))
    assert job.active == set() and job.queued == set()
    assert min(timed_wakes() for _ in range(3)) < empty * 5 + 0.01  # flat, with room for a loaded machine
    job._put("0000000a", _t("0000000a"))
    assert job.queued == {"0000000a"}


# --- start ---------------------------------------------------------------------------------------------


def test_start_opens_a_window_in_the_ccm_session(
    ccm_home: Path, tmp_path: Path, tmux_server: TmuxServer
) -> None:
    """``start --detach`` with a stand-in for claude that records how it was started."""
    project = git_repo(tmp_path / "project")
    record = tmp_path / "started.json"
    fake = tmp_path / "claude"
    fake.write_text(f'#!/bin/sh\nenv > {record}.env\nprintf "%s\\n" "$@" > {record}\nexec sleep 60\n')
    fake.chmod(0o755)
    ccm_home.mkdir(parents=True, exist_ok=True)
    (ccm_home / "config.toml").write_text(
        f'[tasks]\ntmux_socket = "{tmux_server.socket_path}"\nclaude = "{fake}"\n'
    )
    out = ccm("start", "--detach", "--worktree", "--watch", "--max-turns", "3", "-C", str(project), "hello")
    assert out.returncode == 0, out.stderr
    wait_for(lambda: record.exists() and Path(f"{record}.env").exists(), what="the stand-in started")
    argv = record.read_text().splitlines()
    assert argv[-2:] == ["--", "hello"] and "--session-id" in argv
    env = Path(f"{record}.env").read_text()
    assert "CCM_WATCH=1" in env and "CCM_WATCH_MAX_TURNS=3" in env and f"CCM_HOME={ccm_home}" in env
    windows = agentcmd.Tmux(str(tmux_server.socket_path)).windows("ccm")
    assert len(windows) == 1 and windows[0].name.startswith("ccm-")
    assert any(
        line.startswith("ccm/") for line in git(project, "branch", "--format=%(refname:short)").split()
    )
