"""``ccm-hooks task add|cancel|retry|logs|attach|clean``: queue work for ccm-agentd and act on it.

The CLI writes task files; ccm-agentd launches and ends agents. A cancel of a running task is a request
the daemon carries out (it owns the agents' windows); ``task clean`` removes worktrees itself, and only
when nothing would be lost.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping
from typing import Any

from ccm_hooks import paths, watch
from ccm_hooks.errors import CcmError
from ccm_hooks.statedir import agentcmd, config, tasks, tasks_check, tasks_git, tasks_result

BY = "ccm-hooks task"
# Keys of a JSON line on `task add -` stdin: the options' long names, with _ for -.
LINE_KEYS = frozenset({
    "prompt", "project", "name", "base", "in_place", "after", "priority", "max_turns", "done_marker",
    "error_marker", "retries", "timeout", "model", "permission_mode", "labels", "headless",
})  # fmt: skip


def _settings(root: str) -> dict[str, Any]:
    table = config.read_config(root).get("tasks", {})
    return table if isinstance(table, dict) else {}


def build(root: str, spec: Mapping[str, Any], defaults: Mapping[str, Any], cwd: str) -> dict[str, Any]:
    """A new task's fields from what was asked (options or one JSON line), checked; CcmError if wrong."""
    unknown = set(spec) - LINE_KEYS
    if unknown:
        raise CcmError(f"unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(LINE_KEYS))}")

    def pick(key: str, fallback: Any = None) -> Any:
        value = spec.get(key)
        return defaults.get(key, fallback) if value is None else value

    prompt = tasks_check.check_prompt(spec.get("prompt"))
    where = os.path.abspath(os.path.join(cwd, os.path.expanduser(str(spec.get("project") or "."))))
    if not os.path.isdir(where):
        raise CcmError(f"--project {where} is not a directory")
    in_place = bool(spec.get("in_place"))
    top = tasks_git.toplevel(where)
    if top is None and not in_place:
        raise CcmError(
            f"{where} is not in a git repository: a task runs in a worktree of one; "
            "pass --in-place to run it in that directory itself"
        )
    base = spec.get("base")
    base_commit = None
    if top is not None:
        if base is not None:
            tasks_check.check_word(base, "--base", 200)
        if tasks_git.head(top) is None and base is None:
            raise CcmError(f"the repository {top} has no commit yet; commit something first (or pass --base)")
        base_commit = tasks_git.resolve_commit(top, str(base or "HEAD"))
    after = spec.get("after") or []
    if isinstance(after, str):
        after = [after]
    if not isinstance(after, list) or len(after) > tasks_check.MAX_AFTER:
        raise CcmError(f"after must be a list of at most {tasks_check.MAX_AFTER} task ids")
    max_turns = tasks_check.check_int(
        pick("max_turns", tasks.DEFAULT_MAX_TURNS), "--max-turns", 0, watch.MAX_COUNT
    )
    timeout = pick("timeout")
    mode = pick("permission_mode")
    model = pick("model")
    name = spec.get("name")
    task = {
        "v": tasks.FORMAT_VERSION,
        "name": tasks_check.check_name(name) if name is not None else None,
        "prompt": prompt,
        "project": top if top is not None and not in_place else where,
        "git": top is not None,
        "workdir": where if in_place else None,
        "branch": None,
        "base": base,
        "base_commit": base_commit,
        "in_place": in_place,
        "headless": bool(spec.get("headless")),
        "after": [tasks.resolve(root, tasks_check.check_id(a)) for a in after],
        "priority": tasks_check.check_int(
            spec.get("priority") or 0, "--priority", -tasks_check.MAX_PRIORITY, tasks_check.MAX_PRIORITY
        ),
        "max_turns": max_turns,
        "done_marker": tasks_check.check_marker(
            pick("done_marker", watch.DEFAULTS["done_marker"]), "--done-marker"
        ),
        "error_marker": tasks_check.check_marker(
            pick("error_marker", tasks.DEFAULT_ERROR_MARKER), "error_marker"
        ),
        "retries": tasks_check.check_int(
            pick("retries", tasks.DEFAULT_RETRIES), "--retries", 0, tasks_check.MAX_RETRIES
        ),
        "manual_retries": 0,
        "timeout_s": tasks_check.parse_duration(timeout) if timeout is not None else None,
        "model": tasks_check.check_word(model, "--model") if model is not None else None,
        "permission_mode": tasks_check.check_permission_mode(mode) if mode is not None else None,
        "labels": tasks_check.check_labels(spec.get("labels") or {}),
        "not_before": None,
        "cancel": None,
        "result": None,
        "cleaned_at": None,
        "attempts": [],
    }
    tasks_check.check_marker(tasks.stop_marker(task), "--done-marker with the error marker")
    return task


def _read_lines(stream: Any) -> list[dict[str, Any]]:
    specs = []
    for number, line in enumerate(stream, 1):
        if not line.strip():
            continue
        try:
            spec = json.loads(line)
        except ValueError as exc:
            raise CcmError(f"stdin line {number} is not JSON: {exc}") from None
        if not isinstance(spec, dict):
            raise CcmError(f"stdin line {number} is not a JSON object")
        specs.append(spec)
    if not specs:
        raise CcmError('no task on stdin: give one JSON object per line, e.g. {"prompt": "..."}')
    return specs


def add_from_cli(prompt: str, kw: dict[str, Any]) -> int:
    """``task add`` as either parser gives it (typer in cli_tasks.py, the fast one in main.py): keyword
    arguments named as the typer command's parameters."""
    project = str(kw["project"]) if kw["project"] is not None else None
    label, after = kw["label"] or [], kw["after"] or []
    if kw["fleet"] or kw["on"] is not None:
        from ccm_hooks.commands import fleetcmd

        carried = {key: kw[key] for key in ("name", "priority", "base", "max_turns", "done_marker", "retries",
                                            "timeout", "model", "permission_mode")}  # fmt: skip
        carried.update(in_place=kw["in_place"] or None, headless=kw["headless"] or None)
        return fleetcmd.task_add_cmd(prompt, project, kw["on"], label, after, carried)
    options = {key: kw[key] for key in ("name", "base", "priority", "max_turns", "done_marker", "retries",
                                        "timeout", "model", "permission_mode")}  # fmt: skip
    options.update(
        project=project,
        in_place=kw["in_place"] or None,
        after=after or None,
        headless=kw["headless"] or None,
        labels=dict(tasks_check.parse_label(text) for text in label) if label else None,
    )
    return add_cmd(prompt, options)


def add_cmd(prompt: str | None, options: dict[str, Any]) -> int:
    """``task add PROMPT [options]`` or ``task add -`` (JSON lines on stdin). Prints each new id."""
    root = paths.state_dir()
    defaults = _settings(root)
    cwd = os.getcwd()
    if prompt == "-":
        given = {k: v for k, v in options.items() if v not in (None, False, [], {})}
        if given:
            raise CcmError(f"`task add -` takes everything from stdin; drop {', '.join(sorted(given))}")
        specs = _read_lines(sys.stdin)
    else:
        specs = [{**{k: v for k, v in options.items() if v is not None}, "prompt": prompt}]
    built = []
    for number, spec in enumerate(specs, 1):
        try:
            built.append(build(root, spec, defaults, cwd))
        except CcmError as exc:
            raise CcmError(f"stdin line {number}: {exc}" if prompt == "-" else str(exc)) from None
    ensure_shim(root)
    max_pending = defaults.get("max_pending", tasks.DEFAULT_MAX_PENDING)
    if isinstance(max_pending, bool) or not isinstance(max_pending, int) or max_pending < 1:
        max_pending = tasks.DEFAULT_MAX_PENDING
    ids = tasks.create(root, built, "stdin" if prompt == "-" else "cli", max_pending)
    for task_id, task in zip(ids, built, strict=True):
        print(task_id)
        where = f"branch ccm/{task_id} from {str(task['base_commit'])[:10]}" if task["git"] and not task[
            "in_place"] else task["project"]  # fmt: skip
        print(f"queued task {task_id} ({where})", file=sys.stderr)
    if not watch.agentd_alive(root, time.time()):
        print("warning: ccm-agentd is not running, so nothing will start: ccm-agentd run", file=sys.stderr)
    return 0


def ensure_shim(root: str) -> None:
    """Agents are recorded through the per-user hook shim; write it if ``ccm-hooks install`` never ran."""
    from ccm_hooks.commands import shim

    if not os.access(shim.shim_path(root), os.X_OK):
        shim.write_shim(root)


# --- cancel, retry -----------------------------------------------------------------------------------


def cancel_cmd(wanted: str) -> int:
    root = paths.state_dir()
    task_id = tasks.resolve(root, wanted)
    for _ in range(3):  # the daemon may move the task on between our read and our write
        task = _load(root, task_id)
        state = task.get("state")
        if state in tasks.FINAL:
            raise CcmError(f"task {task_id} is already {state}")
        try:
            if state == "queued":
                tasks.change(root, task_id, BY, to="cancelled", reason="cancelled by ccm-hooks task cancel",
                             expect=("queued",))  # fmt: skip
                print(f"cancelled task {task_id} (it had not started)")
                return 0
            tasks.change(root, task_id, BY, expect=tuple(tasks.LIVE),
                         changes={"cancel": {"at": _now(), "by": BY}})  # fmt: skip
        except tasks.Conflict:
            continue
        print(f"cancelling task {task_id}: ccm-agentd interrupts its agent and closes its window")
        if not watch.agentd_alive(root, time.time()):
            print("warning: ccm-agentd is not running; the cancel waits for it", file=sys.stderr)
        return 0
    raise CcmError(f"task {task_id} keeps changing; try again")


def retry_cmd(wanted: str) -> int:
    root = paths.state_dir()
    task_id = tasks.resolve(root, wanted)
    task = _load(root, task_id)
    if task.get("state") not in ("failed", "cancelled"):
        raise CcmError(
            f"task {task_id} is {task.get('state')}; only a failed or cancelled task can be retried"
        )
    try:
        again = {
            "manual_retries": int(task.get("manual_retries") or 0) + 1,
            "not_before": None,
            "cancel": None,
        }
        tasks.change(root, task_id, BY, to="queued", reason="retried by ccm-hooks task retry",
                     expect=("failed", "cancelled"), changes={**again, "result": None})  # fmt: skip
    except tasks.Conflict as exc:
        raise CcmError(str(exc)) from None
    where = f" on branch {task['branch']}" if task.get("branch") else ""
    print(f"task {task_id} queued again{where}: a fresh session, the last failure in its prompt")
    return 0


# --- logs, attach ------------------------------------------------------------------------------------


def logs_cmd(wanted: str, follow: bool, as_json: bool) -> int:
    from ccm_hooks.commands import eventsview

    root = paths.state_dir()
    task = _load(root, tasks.resolve(root, wanted))
    sessions = [str(a["session_id"]) for a in task.get("attempts") or []]
    started = [s for s in sessions if os.path.exists(paths.events_path(root, s))]
    if not started:
        raise CcmError(f"task {task['id']} has no session events yet ({task.get('state')})")
    for sid in started[:-1]:
        eventsview.events_cmd(sid, [], None, False, as_json)
    return eventsview.events_cmd(started[-1], [], None, follow, as_json)


def attach_cmd(wanted: str) -> int:
    root = paths.state_dir()
    task = _load(root, tasks.resolve(root, wanted))
    attempt = tasks.current_attempt(task)
    if task.get("headless"):
        raise CcmError(
            f"task {task['id']} runs headless (no tmux); `ccm-hooks task logs {task['id']}` shows it"
        )
    if attempt is None or not attempt.get("pane"):
        raise CcmError(f"task {task['id']} has no window yet ({task.get('state')})")
    tmux = agentcmd.Tmux(attempt.get("tmux_socket") or _settings(root).get("tmux_socket"))
    window = tmux.pane(str(attempt["pane"]))
    if window is None:
        raise CcmError(f"the window of task {task['id']} is gone ({task.get('state')}: {task.get('reason')})")
    tmux.select(window.window_id)
    inside = os.environ.get("TMUX", "").split(",", 1)[0]
    if inside and inside == tmux.socket_path():
        tmux.run("switch-client", "-t", window.pane_id)
        return 0
    if not sys.stdin.isatty():
        raise CcmError(
            f"not a terminal; run: {' '.join(tmux.argv('attach-session', '-t', window.window_id))}"
        )
    argv = tmux.argv("attach-session", "-t", window.window_id)
    os.execvp(argv[0], argv)


# --- clean ---------------------------------------------------------------------------------------------


def clean_cmd(wanted: str | None, finished: bool, force: bool) -> int:
    """Remove finished tasks' worktrees (and close their windows); never a branch, never lost work."""
    root = paths.state_dir()
    if (wanted is None) == (not finished):
        raise CcmError("name a task, or pass --finished for every finished task")
    if wanted is not None:
        targets = [_load(root, tasks.resolve(root, wanted))]
        if targets[0].get("state") not in tasks.FINAL:
            raise CcmError(f"task {targets[0]['id']} is {targets[0].get('state')}: cancel it first")
    else:
        targets = [
            t for t in tasks.load_all(root) if t.get("state") in tasks.FINAL and not t.get("cleaned_at")
        ]
    kept = []
    for task in targets:
        _close_window(task)
        lost = tasks_result.lost_work(task)
        workdir = task.get("workdir")
        if task.get("in_place") or not isinstance(workdir, str) or not os.path.isdir(workdir):
            print(f"task {task['id']}: no worktree to remove")
        elif lost and not force:
            kept.append(task["id"])
            print(
                f"task {task['id']}: kept {workdir}: removing it would lose {'; '.join(lost)}",
                file=sys.stderr,
            )
            continue
        else:
            tasks_git.remove_worktree(str(task["project"]), workdir, force=bool(lost))
            what = f" (lost: {'; '.join(lost)})" if lost else ""
            print(f"task {task['id']}: removed {workdir}; branch {task.get('branch')} kept{what}")
        tasks.change(root, task["id"], BY, changes={"cleaned_at": _now()}, note="cleaned")
    if kept:
        raise CcmError(
            f"{len(kept)} worktree(s) kept ({', '.join(kept)}): commit the work or check it, "
            "then clean again (--force removes them anyway)"
        )
    return 0


def _close_window(task: dict[str, Any]) -> None:
    attempt = tasks.current_attempt(task)
    if task.get("headless") or attempt is None or not attempt.get("pane") or attempt.get("closed_at"):
        return
    tmux = agentcmd.Tmux(attempt.get("tmux_socket"))
    window = tmux.pane(str(attempt["pane"]))
    pid = window.pane_pid if window is not None else None
    if window is not None and pid is not None and str(attempt["session_id"]) in agentcmd.process_args(pid):
        tmux.kill_window(window.window_id)


# --- helpers -----------------------------------------------------------------------------------------


def _load(root: str, task_id: str) -> dict[str, Any]:
    task = tasks.load(root, task_id)
    if task is None:
        raise CcmError(f"task {task_id} has no readable file or log")
    return task


def _now() -> str:
    from ccm_hooks.record import iso_utc

    return iso_utc(time.time())
