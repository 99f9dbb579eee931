"""Launching one attempt of a task: the write-ahead record, the worktree, then the agent (a tmux window, or
``claude -p`` with no tmux), and finding an agent launched before a restart (spec/tasks.md#crash-safety).

Every step is idempotent and ordered so a kill -9 between any two leaves something a restart can finish:
the attempt (with its session id, chosen here) is in the task's log before anything exists; the worktree
is found again by its path and branch; the agent is found again by its session id on its command line;
an agent is started only when none is found, so there is never a second one for an attempt.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import uuid
from typing import Any

from ccm_agentd import panes
from ccm_agentd.tasks import trust
from ccm_agentd.tasks.config import TasksConfig
from ccm_hooks import paths, watch
from ccm_hooks.errors import CcmError
from ccm_hooks.record import iso_utc
from ccm_hooks.statedir import agentcmd, tasks, tasks_git

log = logging.getLogger("ccm_agentd.tasks")
BY = "ccm-agentd"


class LaunchError(Exception):
    """The attempt cannot start (the reason is the message): it fails, and is retried if it may be."""


class NeedsPerson(Exception):
    """The attempt cannot start until a person acts (the reason is the message): the task waits."""


def compose_prompt(task: dict[str, Any], attempt: dict[str, Any], instructions: bool) -> str:
    """What the agent is asked: the task's prompt, why the previous attempt failed, how to say it is done."""
    parts = [str(task["prompt"])]
    note = attempt.get("retry_note")
    if note:
        n = attempt["n"]
        parts.append(f"(This is attempt {n}. The previous one failed: {note}. Its work, if any, is here.)")
    if instructions:
        done = watch.literal_of(str(task.get("done_marker") or ""))
        failed = watch.literal_of(str(task.get("error_marker") or ""))
        words = [f"(ccm task {task['id']}"]
        if task.get("branch"):
            words.append(
                f"; you work in your own git worktree on branch {task['branch']}: commit your work there"
            )
        if done:
            words.append(f"; when the task is complete, end your reply with {done}")
        if failed:
            words.append(f"; if it cannot be done, end your reply with {failed} and the reason")
        parts.append("".join(words) + ".)")
    return "\n\n".join(parts)


def display_name(task: dict[str, Any]) -> str:
    name = task.get("name") or " ".join(str(task.get("prompt") or "").split())[:40]
    return f"{name} [ccm {task['id']}]"


class Launcher:
    def __init__(self, root: str, cfg: TasksConfig) -> None:
        self.root = root
        self.cfg = cfg
        self.tmux = agentcmd.Tmux(cfg.tmux_socket)
        self.children: dict[str, subprocess.Popen[bytes]] = {}  # headless agents this daemon started
        self.exit_codes: dict[str, int] = {}  # session id -> exit code of a headless agent that exited
        # pid -> (when its grace period ends, session id, a headless process group): agents being ended
        self.ending: dict[int, tuple[float, str, bool]] = {}

    def configure(self, cfg: TasksConfig) -> None:
        self.cfg = cfg
        self.tmux = agentcmd.Tmux(cfg.tmux_socket)

    # --- the write-ahead record ---------------------------------------------------------------------------

    def begin(self, task: dict[str, Any], now: float) -> dict[str, Any]:
        """queued -> starting, with the new attempt (its session id chosen now) in the log first."""
        attempts = task.get("attempts") or []
        n = len(attempts) + 1
        previous = attempts[-1] if attempts else None
        output = None
        if task.get("headless"):
            output = os.path.join(tasks.output_dir(self.root, task["id"]), f"attempt-{n}.jsonl")
        attempt = {
            "n": n, "session_id": str(uuid.uuid4()), "started_at": iso_utc(max(now, time.time())),
            "launched_at": None,
            "confirmed_at": None, "ended_at": None, "outcome": None, "reason": None,
            "retry_note": (previous or {}).get("reason"), "tmux_socket": None, "window": None, "pane": None,
            "pid": None, "output": output, "memory": None, "closed_at": None,
        }  # fmt: skip
        return tasks.change(self.root, task["id"], BY, to="starting", reason=f"launching attempt {n}",
                            expect=("queued",), attempt=attempt)  # fmt: skip

    # --- carrying an attempt forward ------------------------------------------------------------------

    def proceed(self, task: dict[str, Any], now: float) -> dict[str, Any]:
        """Make sure the attempt's worktree and agent exist (found first). Returns the task as recorded.

        Raises LaunchError or NeedsPerson when it cannot go on.
        """
        attempt = tasks.current_attempt(task)
        assert attempt is not None
        task = self._worktree(task)
        if self.find(task, attempt) is not None:
            return self._record_found(task, attempt)
        workdir = str(task.get("workdir") or task["project"])
        if not os.path.isdir(workdir):
            raise LaunchError(f"the work tree {workdir} does not exist")
        if task.get("headless") and trust.trusted(workdir) is False:
            raise NeedsPerson(
                f"Claude Code does not trust {task['project']} (claude -p skips the question): run claude "
                "there once and accept the trust dialog; ccm never answers it"
            )
        try:
            claude = agentcmd.find_claude(self.cfg.claude)
        except CcmError as exc:
            raise LaunchError(str(exc)) from None
        prefix, memory = agentcmd.memory_cap_prefix(self.cfg.memory_max)
        fleet = task.get("fleet")
        if isinstance(fleet, dict) and fleet.get("lease"):
            # A fleet task: its fence ends the agent before the claim's lease can expire (spec/fleet.md).
            prefix = [sys.executable, "-m", "ccm_agentd.fleet.fence", str(fleet["lease"]), "--", *prefix]
        argv = prefix + agentcmd.claude_argv(
            claude, compose_prompt(task, attempt, self.cfg.instructions), session_id=attempt["session_id"],
            name=display_name(task), model=task.get("model"), permission_mode=task.get("permission_mode"),
            headless=bool(task.get("headless")),
        )  # fmt: skip
        env = agentcmd.agent_env(self.root, task_id=task["id"], max_turns=int(task.get("max_turns") or 0),
                                 done_marker=tasks.stop_marker(task), extra=self.cfg.env)  # fmt: skip
        changes: dict[str, Any] = {"n": attempt["n"], "launched_at": iso_utc(now), "memory": memory}
        if task.get("headless"):
            changes["pid"] = self._spawn(task, attempt, argv, env, workdir)
        else:
            try:
                window = self.tmux.new_window(f"ccm-{task['id']}", workdir, argv, env, self.cfg.tmux_session)
            except CcmError as exc:
                raise LaunchError(str(exc)) from None
            changes.update(window=window.window_id, pane=window.pane_id, pid=window.pane_pid,
                           tmux_socket=self.tmux.socket_path())  # fmt: skip
        log.info("task %s: attempt %d launched (%s)", task["id"], attempt["n"], memory)
        return tasks.change(self.root, task["id"], BY, attempt=changes)

    def _worktree(self, task: dict[str, Any]) -> dict[str, Any]:
        if not task.get("git"):
            return task
        project = str(task["project"])
        try:
            if not task.get("base_commit"):
                base = tasks_git.resolve_commit(project, str(task.get("base") or "HEAD"))
                task = tasks.change(self.root, task["id"], BY, changes={"base_commit": base})
            if not task.get("in_place"):
                how = tasks_git.add_worktree(project, str(task["workdir"]), str(task["branch"]),
                                             str(task["base_commit"]))  # fmt: skip
                if how != "reused":
                    log.info("task %s: worktree %s %s", task["id"], task["workdir"], how)
        except CcmError as exc:
            raise LaunchError(str(exc)) from None
        return task

    def _spawn(self, task: dict[str, Any], attempt: dict[str, Any], argv: list[str], env: dict[str, str],
               workdir: str) -> int:  # fmt: skip
        """``claude -p`` in its own process group, its stream-json kept under the task. A small sh writes the
        pid before it execs claude, so an agent started just before a crash is found again."""
        out_dir = tasks.output_dir(self.root, task["id"])
        paths.ensure_dir(out_dir)
        output = str(attempt["output"])
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW
        out_fd = os.open(output, flags, paths.FILE_MODE)
        err_fd = os.open(output[: -len(".jsonl")] + ".err", flags, paths.FILE_MODE)
        pidfile = output[: -len(".jsonl")] + ".pid"
        try:
            proc = subprocess.Popen(
                ["/bin/sh", "-c", 'echo $$ > "$0"; exec "$@"', pidfile, *argv], cwd=workdir,
                env={**os.environ, **env}, stdin=subprocess.DEVNULL, stdout=out_fd, stderr=err_fd,
                start_new_session=True,
            )  # fmt: skip
        except OSError as exc:
            raise LaunchError(f"cannot start claude -p: {exc}") from None
        finally:
            os.close(out_fd)
            os.close(err_fd)
        self.children[attempt["session_id"]] = proc
        return proc.pid

    # --- finding an agent again --------------------------------------------------------------------------

    def find(self, task: dict[str, Any], attempt: dict[str, Any]) -> agentcmd.Window | int | None:
        """The attempt's live agent: its tmux window, or (headless) its pid. None if there is none."""
        sid = str(attempt["session_id"])
        if task.get("headless"):
            pid = attempt.get("pid") or read_pid(attempt.get("output"))
            alive = isinstance(pid, int) and panes.pid_alive(pid) and sid in agentcmd.process_args(pid)
            return pid if alive and isinstance(pid, int) else None
        pane = attempt.get("pane")
        if isinstance(pane, str):
            window = self.tmux.pane(pane)
            # The pane and pid this attempt recorded at launch are its agent for as long as the pane lives (a
            # pane's pid never changes). The command line is no proof yet in the moment between tmux's fork
            # and its exec of claude: it is tmux's own then, and an agent just launched was taken for gone.
            if (
                window is not None
                and not window.dead
                and (window.pane_pid == attempt.get("pid") or _runs(window, sid))
            ):
                return window
        for window in self.tmux.windows(self.cfg.tmux_session):
            if not window.dead and _runs(window, sid):
                return window
        return None

    def exit_note(self, attempt: dict[str, Any]) -> str:
        """What a dead agent's pane still shows (tmux keeps it with remain-on-exit): its exit status and last
        line, for the reason a person reads. Empty when the pane is gone."""
        pane = attempt.get("pane")
        if not isinstance(pane, str):
            return ""
        out = self.tmux.run(
            "display-message", "-p", "-t", pane, "#{pane_dead}\t#{pane_dead_status}", check=False
        )
        dead, _, status = out.stdout.strip().partition("\t")
        if out.returncode != 0 or dead != "1":
            return ""
        shown = self.tmux.capture(pane) or ""
        last = next((ln.strip() for ln in reversed(shown.splitlines()) if ln.strip()), "")
        return f" (exit status {status or '?'}{'; its last line: ' + last[:160] if last else ''})"

    def _record_found(self, task: dict[str, Any], attempt: dict[str, Any]) -> dict[str, Any]:
        found = self.find(task, attempt)
        if isinstance(found, agentcmd.Window) and found.pane_id != attempt.get("pane"):
            log.info("task %s: adopted the agent in tmux pane %s", task["id"], found.pane_id)
            return tasks.change(self.root, task["id"], BY, note="adopted its agent after a restart", attempt={
                "n": attempt["n"], "window": found.window_id, "pane": found.pane_id, "pid": found.pane_pid,
                "tmux_socket": self.tmux.socket_path(),
                "launched_at": attempt.get("launched_at") or attempt.get("started_at")})  # fmt: skip
        if isinstance(found, int) and found != attempt.get("pid"):
            log.info("task %s: adopted the headless agent pid %d", task["id"], found)
            return tasks.change(self.root, task["id"], BY, note="adopted its agent after a restart",
                                attempt={"n": attempt["n"], "pid": found})  # fmt: skip
        return task

    # --- headless children ---------------------------------------------------------------------------------

    def reap(self) -> None:
        for sid, proc in list(self.children.items()):
            code = proc.poll()
            if code is not None:
                self.exit_codes[sid] = code
                del self.children[sid]

    def headless_exit(self, attempt: dict[str, Any]) -> int | None:
        """The exit code of a headless attempt that ended; None while it runs. A pid this daemon did not start
        (a restart) that is gone reads as -1: its exit code is lost, its output says what happened."""
        sid = str(attempt.get("session_id"))
        self.reap()
        if sid in self.exit_codes:
            return self.exit_codes[sid]
        if sid in self.children:
            return None
        pid = attempt.get("pid") or read_pid(attempt.get("output"))
        if isinstance(pid, int) and panes.pid_alive(pid) and sid in agentcmd.process_args(pid):
            return None
        return -1

    def close(self) -> None:
        """At shutdown: headless agents keep running (their own process group), and are adopted later."""
        self.children.clear()


def _runs(window: agentcmd.Window, session_id: str) -> bool:
    """The window's process is the agent of this session (its command line names the session id)."""
    return window.pane_pid is not None and session_id in agentcmd.process_args(window.pane_pid)


def read_pid(output: object) -> int | None:
    if not isinstance(output, str) or not output.endswith(".jsonl"):
        return None
    try:
        with open(output[: -len(".jsonl")] + ".pid", "rb") as fh:
            text = fh.read(32).decode().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None
