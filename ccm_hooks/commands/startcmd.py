"""``ccm-hooks start``: one interactive agent now, in a new window of the ``ccm`` tmux session; switch to it.

Not a task: a person starts it and drives it (no queue, no done or failed). It is started like a task's
agent (spec/tasks.md#starting-the-agent): a session id chosen here, ccm's hooks on its command line, the
watch settings asked for, and, with ``--worktree``, a worktree of its own on a new branch ``ccm/<id>``.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

from ccm_hooks import paths
from ccm_hooks.errors import CcmError
from ccm_hooks.statedir import agentcmd, config, tasks, tasks_check, tasks_git


def start_cmd(prompt: str | None, project: Path, watch_on: bool, max_turns: int | None, worktree: bool,
              name: str | None, detach: bool) -> int:  # fmt: skip
    root = paths.state_dir()
    table = config.read_config(root).get("tasks", {})
    table = table if isinstance(table, dict) else {}
    where = os.path.abspath(project)
    if not os.path.isdir(where):
        raise CcmError(f"--project {where} is not a directory")
    if prompt is not None:
        tasks_check.check_prompt(prompt)
    if max_turns is not None and not watch_on:
        raise CcmError("--max-turns goes with --watch")
    cwd, what = where, ""
    if worktree:
        top = tasks_git.toplevel(where)
        if top is None:
            raise CcmError(f"{where} is not in a git repository; --worktree needs one")
        short = tasks.new_task_id()
        cwd = tasks.worktree_path(top, short)
        tasks_git.add_worktree(top, cwd, tasks.branch_name(short), tasks_git.resolve_commit(top, "HEAD"))
        what = f" in {cwd} on branch {tasks.branch_name(short)}"
    from ccm_hooks.commands import taskcmd

    taskcmd.ensure_shim(root)
    session_id = str(uuid.uuid4())
    argv = agentcmd.claude_argv(agentcmd.find_claude(table.get("claude")), prompt, session_id=session_id,
                                name=name and tasks_check.check_name(name))  # fmt: skip
    turns = (max_turns or 10) if watch_on else None
    extra = table.get("env") if isinstance(table.get("env"), dict) else None
    env = agentcmd.agent_env(root, task_id=None, max_turns=turns, done_marker=None, extra=extra)
    tmux = agentcmd.Tmux(table.get("tmux_socket"))
    session = str(table.get("tmux_session") or agentcmd.SESSION)
    window = tmux.new_window(f"ccm-{session_id[:8]}", cwd, argv, env, session)
    print(f"started session {session_id} in tmux window {window.window_id} of {session!r}{what}")
    if detach:
        return 0
    inside = os.environ.get("TMUX", "").split(",", 1)[0]
    if inside and inside == tmux.socket_path():
        tmux.run("switch-client", "-t", window.pane_id)
        return 0
    if not sys.stdin.isatty():
        print(f"attach with: {' '.join(tmux.argv('attach-session', '-t', window.window_id))}")
        return 0
    tmux.select(window.window_id)
    attach = tmux.argv("attach-session", "-t", window.window_id)
    os.execvp(attach[0], attach)
