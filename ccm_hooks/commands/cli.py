"""``ccm-hooks``: argument parsing only. Each command calls one function that returns an exit code.

Exit codes: 0 ok, 1 an expected failure (one line on stderr saying what to do), 3 an unexpected error
(traceback written to ``$CCM_HOME/log/cli.log``, one line pointing at it), 130 interrupted.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated

import typer

from ccm_hooks.commands.error_boundary import run_command

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,  # run_command is the one error boundary
    no_args_is_help=True,
    help="Record what every Claude Code session does, through its hooks, and read it back.",
    context_settings={"help_option_names": ["-h", "--help"]},
)


class Scope(enum.StrEnum):
    project = "project"
    local = "local"
    user = "user"


ScopeOpt = Annotated[
    Scope,
    typer.Option(
        "--scope",
        help="project: .claude/settings.json (shared, usually committed); "
        "local: .claude/settings.local.json (just you); user: ~/.claude/settings.json (every project).",
    ),
]
ProjectOpt = Annotated[
    Path,
    typer.Option("--project", "-C", help="Project directory for project/local scope.", show_default="."),
]


@app.command()
def install(
    scope: ScopeOpt = Scope.project,
    project: ProjectOpt = Path("."),
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the change, write nothing.")] = False,
) -> None:
    """Register the ccm hook handlers in a Claude Code settings file (merging, never clobbering)."""

    def call() -> int:
        from ccm_hooks.commands import installer

        return installer.install_cmd(scope.value, project, dry_run)

    raise typer.Exit(run_command(call))


@app.command()
def uninstall(
    scope: ScopeOpt = Scope.project,
    project: ProjectOpt = Path("."),
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the change, write nothing.")] = False,
) -> None:
    """Remove exactly the entries ccm added; the file goes back to what it was before install."""

    def call() -> int:
        from ccm_hooks.commands import installer

        return installer.uninstall_cmd(scope.value, project, dry_run)

    raise typer.Exit(run_command(call))


@app.command()
def doctor(project: ProjectOpt = Path(".")) -> None:
    """Check the installation, the state dir, claude and tmux, and say what to fix."""

    def call() -> int:
        from ccm_hooks.commands import doctor as doctor_mod

        return doctor_mod.doctor_cmd(project)

    raise typer.Exit(run_command(call))


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array of status objects.")] = False,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Redraw whenever a session changes.")] = False,
) -> None:
    """One line per session, newest first: state, project, last tool, age."""

    def call() -> int:
        from ccm_hooks.commands import views

        return views.status_cmd(as_json, watch)

    raise typer.Exit(run_command(call))


@app.command()
def events(
    session: Annotated[
        str | None, typer.Option("--session", "-s", help="Only this session (id or unique prefix).")
    ] = None,
    event: Annotated[
        list[str] | None, typer.Option("--event", "-e", help="Only this event name (repeatable).")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help="Only records at or after TIME: ISO 8601, or an age: 90s, 15m, 2h, 1d."),
    ] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new records.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print records as JSON lines (jq-ready).")] = False,
) -> None:
    """Print the event log, oldest first."""

    def call() -> int:
        from ccm_hooks.commands import views

        return views.events_cmd(session, event or [], since, follow, as_json)

    raise typer.Exit(run_command(call))


@app.command()
def validate(
    home: Annotated[
        Path | None, typer.Option("--home", help="State dir to check.", show_default="$CCM_HOME or ~/.ccm")
    ] = None,
) -> None:
    """Check a state dir against spec/: layout, modes, every record and status file."""

    def call() -> int:
        from ccm_hooks.commands import validate as validate_mod

        return validate_mod.validate_cmd(home)

    raise typer.Exit(run_command(call))


@app.command()
def send(
    session: Annotated[str, typer.Argument(help="Session id or unique prefix.")],
    text: Annotated[str, typer.Argument(help="The prompt, one line.")],
) -> None:
    """Queue a prompt for a session; ccm-agentd types it into the session's tmux pane once it is idle."""

    def call() -> int:
        from ccm_hooks.commands import send as send_mod

        return send_mod.send_cmd(session, text)

    raise typer.Exit(run_command(call))


watch_app = typer.Typer(
    no_args_is_help=True,
    help="Watch mode: when a session stops, continue it, within limits (spec/watch.md).",
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(watch_app, name="watch")

SessionArg = Annotated[
    str | None, typer.Argument(help="Session id or unique prefix (`ccm-hooks status` lists them).")
]
WatchProjectOpt = Annotated[
    Path | None,
    typer.Option("--project", "-C", help="Default for sessions started in DIR (and below) from now on."),
]
GlobalOpt = Annotated[bool, typer.Option("--global", help="Default for every session started from now on.")]


@watch_app.command("on")
def watch_on(
    session: SessionArg = None,
    project: WatchProjectOpt = None,
    everyone: GlobalOpt = False,
    max_turns: Annotated[
        int | None, typer.Option("--max-turns", help="Auto-continues per run (1-10000).", show_default="10")
    ] = None,
    prompt: Annotated[
        str | None, typer.Option("--prompt", help="What to say to continue.", show_default="continue")
    ] = None,
    done_marker: Annotated[
        str | None,
        typer.Option(
            "--done-marker", help="Stop when the reply matches this regex.", show_default="\\[DONE\\]"
        ),
    ] = None,
    no_progress: Annotated[
        int | None,
        typer.Option(
            "--no-progress", help="Stop after K auto-continued turns without a tool call.", show_default="2"
        ),
    ] = None,
) -> None:
    """Turn watch on for a SESSION_ID, a --project, or --global; unset options keep their current value."""

    def call() -> int:
        from ccm_hooks.commands import watchcmd

        changes = {"max_turns": max_turns, "prompt": prompt, "done_marker": done_marker,
                   "no_progress_turns": no_progress}  # fmt: skip
        return watchcmd.watch_set_cmd(True, session, project, everyone, changes)

    raise typer.Exit(run_command(call))


@watch_app.command("off")
def watch_off(
    session: SessionArg = None, project: WatchProjectOpt = None, everyone: GlobalOpt = False
) -> None:
    """Turn watch off for a SESSION_ID, a --project, or --global."""

    def call() -> int:
        from ccm_hooks.commands import watchcmd

        return watchcmd.watch_set_cmd(False, session, project, everyone, {})

    raise typer.Exit(run_command(call))


@watch_app.command("status")
def watch_status(
    session: SessionArg = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The defaults, and each session's watch state: turns used, why it stopped."""

    def call() -> int:
        from ccm_hooks.commands import watchcmd

        return watchcmd.watch_status_cmd(session, as_json)

    raise typer.Exit(run_command(call))


@watch_app.command("reset")
def watch_reset(
    session: Annotated[str, typer.Argument(help="Session id or unique prefix.")],
) -> None:
    """Give a session a fresh run: the auto-continue count back to 0, a stop cleared."""

    def call() -> int:
        from ccm_hooks.commands import watchcmd

        return watchcmd.watch_reset_cmd(session)

    raise typer.Exit(run_command(call))


@app.command()
def top(
    iterations: Annotated[
        int | None,
        typer.Option("--iterations", "-n", help="Print this many snapshots, then exit (plain output only)."),
    ] = None,
) -> None:
    """Live view of every session; keys: arrows/j/k select, w toggle watch, r reset its counter, q quit.

    When stdout is not a terminal, prints plain snapshots instead (one per change), like `top -b`.
    """

    def call() -> int:
        from ccm_hooks.commands import top as top_mod

        return top_mod.top_cmd(iterations)

    raise typer.Exit(run_command(call))


# --- tasks: queued work that ccm-agentd launches as agents (spec/tasks.md) ---------------------------------

task_app = typer.Typer(
    no_args_is_help=True,
    help="Tasks: work ccm-agentd launches as Claude Code agents in their own worktrees (spec/tasks.md).",
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(task_app, name="task")
TaskArg = Annotated[str, typer.Argument(help="Task id or unique prefix (`ccm-hooks task list` lists them).")]


@task_app.command("add")
def task_add(
    prompt: Annotated[str, typer.Argument(help="What the agent should do; `-` reads JSON lines from stdin.")],
    project: Annotated[
        Path | None, typer.Option("--project", "-C", help="The git repository (default: .).")
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="A display name.")] = None,
    base: Annotated[
        str | None, typer.Option("--base", help="Branch from this ref (default: HEAD now).")
    ] = None,
    in_place: Annotated[
        bool, typer.Option("--in-place", help="Run in the project itself, no worktree.")
    ] = False,
    after: Annotated[
        list[str] | None, typer.Option("--after", help="Start only once this task is done.")
    ] = None,
    priority: Annotated[
        int | None, typer.Option("--priority", help="Higher starts first (default 0).")
    ] = None,
    max_turns: Annotated[
        int | None,
        typer.Option("--max-turns", help="Watch-mode auto-continues; 0: watch off.", show_default="10"),
    ] = None,
    done_marker: Annotated[
        str | None,
        typer.Option("--done-marker", help="Done when a reply matches.", show_default="\\[DONE\\]"),
    ] = None,
    retries: Annotated[
        int | None, typer.Option("--retries", help="Retries after a failure.", show_default="1")
    ] = None,
    timeout: Annotated[
        str | None, typer.Option("--timeout", help="Fail after this long: 90s, 30m, 2h.")
    ] = None,
    model: Annotated[str | None, typer.Option("--model", help="claude --model.")] = None,
    permission_mode: Annotated[
        str | None, typer.Option("--permission-mode", help="claude --permission-mode.")
    ] = None,
    label: Annotated[list[str] | None, typer.Option("--label", help="KEY=VALUE (repeatable).")] = None,
    headless: Annotated[bool, typer.Option("--headless", help="claude -p, no tmux.")] = False,
) -> None:
    """Queue a task; prints its id. `task add -` reads one JSON object per line (same keys, with _)."""

    def call() -> int:
        from ccm_hooks.commands import taskcmd
        from ccm_hooks.statedir import tasks_check

        options = {
            "project": str(project) if project is not None else None, "name": name, "base": base,
            "in_place": in_place or None, "after": after or None, "priority": priority,
            "max_turns": max_turns,
            "done_marker": done_marker, "retries": retries, "timeout": timeout, "model": model,
            "permission_mode": permission_mode, "headless": headless or None,
            "labels": dict(tasks_check.parse_label(text) for text in label) if label else None,
        }  # fmt: skip
        return taskcmd.add_cmd(prompt, options)

    raise typer.Exit(run_command(call))


@task_app.command("list")
def task_list(
    state: Annotated[str | None, typer.Option("--state", help="Only tasks in this state.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array of task objects.")] = False,
) -> None:
    """Every task: live and queued first, then finished."""

    def call() -> int:
        from ccm_hooks.commands import taskview

        return taskview.list_cmd(state, as_json)

    raise typer.Exit(run_command(call))


@task_app.command("show")
def task_show(
    task: TaskArg, as_json: Annotated[bool, typer.Option("--json", help="Print the task object.")] = False
) -> None:
    """One task: its attempts and its result (commits, files, last message, turns, time)."""

    def call() -> int:
        from ccm_hooks.commands import taskview

        return taskview.show_cmd(task, as_json)

    raise typer.Exit(run_command(call))


@task_app.command("cancel")
def task_cancel(task: TaskArg) -> None:
    """Cancel a task: a queued one at once, a running one's agent interrupted and its window closed."""

    def call() -> int:
        from ccm_hooks.commands import taskcmd

        return taskcmd.cancel_cmd(task)

    raise typer.Exit(run_command(call))


@task_app.command("retry")
def task_retry(task: TaskArg) -> None:
    """Queue a failed or cancelled task again: a fresh session on the same branch."""

    def call() -> int:
        from ccm_hooks.commands import taskcmd

        return taskcmd.retry_cmd(task)

    raise typer.Exit(run_command(call))


@task_app.command("logs")
def task_logs(
    task: TaskArg,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new records.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print records as JSON lines.")] = False,
) -> None:
    """The events of the task's sessions, every attempt in order."""

    def call() -> int:
        from ccm_hooks.commands import taskcmd

        return taskcmd.logs_cmd(task, follow, as_json)

    raise typer.Exit(run_command(call))


@task_app.command("attach")
def task_attach(task: TaskArg) -> None:
    """Switch to (or attach) the tmux window of the task's agent."""

    def call() -> int:
        from ccm_hooks.commands import taskcmd

        return taskcmd.attach_cmd(task)

    raise typer.Exit(run_command(call))


@task_app.command("clean")
def task_clean(
    task: Annotated[str | None, typer.Argument(help="Task id or unique prefix.")] = None,
    finished: Annotated[bool, typer.Option("--finished", help="Every finished task.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Remove even a worktree with work in it.")] = False,
) -> None:
    """Remove finished tasks' worktrees, only when nothing would be lost; branches are always kept."""

    def call() -> int:
        from ccm_hooks.commands import taskcmd

        return taskcmd.clean_cmd(task, finished, force)

    raise typer.Exit(run_command(call))


@app.command()
def start(
    prompt: Annotated[str | None, typer.Argument(help="The first prompt (none: an empty session).")] = None,
    project: Annotated[Path, typer.Option("--project", "-C", help="Where to start it.")] = Path("."),
    watch: Annotated[bool, typer.Option("--watch", help="Watch mode on for this session.")] = False,
    max_turns: Annotated[
        int | None, typer.Option("--max-turns", help="With --watch.", show_default="10")
    ] = None,
    worktree: Annotated[
        bool, typer.Option("--worktree", help="In a new worktree on branch ccm/<id>.")
    ] = False,
    name: Annotated[str | None, typer.Option("--name", help="A display name.")] = None,
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Do not switch to its window.")] = False,
) -> None:
    """Start an interactive agent now, in a new window of the `ccm` tmux session, and switch to it."""

    def call() -> int:
        from ccm_hooks.commands import startcmd

        return startcmd.start_cmd(prompt, project, watch, max_turns, worktree, name, detach)

    raise typer.Exit(run_command(call))


def main() -> None:
    app(prog_name="ccm-hooks")
