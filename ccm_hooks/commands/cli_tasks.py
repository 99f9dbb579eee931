"""``ccm-hooks task ...`` and ``ccm-hooks start``: argument parsing only (spec/tasks.md); cli.py mounts
them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ccm_hooks.commands.error_boundary import in_home, run_command

task_app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Tasks: work ccm-agentd launches as Claude Code agents in their own worktrees (spec/tasks.md).",
    context_settings={"help_option_names": ["-h", "--help"]},
)
TaskArg = Annotated[
    str,
    typer.Argument(help="Task id or unique prefix (`ccm-hooks task list` lists them).", metavar="TASK_ID"),
]


@task_app.command("add")
def task_add(
    prompt: Annotated[
        str,
        typer.Argument(help="What the agent should do; `-` reads JSON lines from stdin.", metavar="PROMPT"),
    ],
    project: Annotated[
        Path | None, typer.Option("--project", "-C", help="The git repository (default: .).", metavar="DIR")
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="A display name.", metavar="NAME")] = None,
    base: Annotated[
        str | None, typer.Option("--base", help="Branch from this ref (default: HEAD now).", metavar="REF")
    ] = None,
    in_place: Annotated[
        bool, typer.Option("--in-place", help="Run in the project itself, no worktree.")
    ] = False,
    after: Annotated[
        list[str] | None,
        typer.Option("--after", help="Start only once this task is done (repeatable).", metavar="TASK_ID"),
    ] = None,
    priority: Annotated[
        int | None, typer.Option("--priority", help="Higher starts first (default 0).", metavar="N")
    ] = None,
    max_turns: Annotated[
        int | None,
        typer.Option(
            "--max-turns", help="Watch-mode auto-continues; 0: watch off (default 10).", metavar="N"
        ),
    ] = None,
    done_marker: Annotated[
        str | None,
        typer.Option(
            "--done-marker", help="Done when a reply matches (default \\[DONE\\]).", metavar="REGEX"
        ),
    ] = None,
    retries: Annotated[
        int | None, typer.Option("--retries", help="Retries after a failure (default 1).", metavar="N")
    ] = None,
    timeout: Annotated[
        str | None, typer.Option("--timeout", help="Fail after this long: 90s, 30m, 2h.", metavar="DURATION")
    ] = None,
    model: Annotated[str | None, typer.Option("--model", help="claude --model.", metavar="MODEL")] = None,
    permission_mode: Annotated[
        str | None, typer.Option("--permission-mode", help="claude --permission-mode.", metavar="MODE")
    ] = None,
    label: Annotated[
        list[str] | None, typer.Option("--label", help="KEY=VALUE (repeatable).", metavar="KEY=VALUE")
    ] = None,
    headless: Annotated[bool, typer.Option("--headless", help="claude -p, no tmux.")] = False,
    fleet: Annotated[
        bool,
        typer.Option("--fleet", help="Into the fleet's shared queue: a machine with the project runs it."),
    ] = False,
    on: Annotated[
        str | None, typer.Option("--on", help="With --fleet: only this system may run it.", metavar="SYSTEM")
    ] = None,
) -> None:
    """Queue a task; prints its id. `task add -` reads one JSON object per line (same keys, with _)."""

    def call() -> int:
        from ccm_hooks.commands import taskcmd

        return taskcmd.add_from_cli(prompt, {
            "project": project, "name": name, "base": base, "in_place": in_place, "after": after,
            "priority": priority, "max_turns": max_turns, "done_marker": done_marker, "retries": retries,
            "timeout": timeout, "model": model, "permission_mode": permission_mode, "label": label,
            "headless": headless, "fleet": fleet, "on": on,
        })  # fmt: skip

    raise typer.Exit(run_command(in_home(call, write=True)))


@task_app.command("list")
def task_list(
    state: Annotated[
        str | None, typer.Option("--state", help="Only tasks in this state.", metavar="STATE")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array of task objects.")] = False,
    fleet: Annotated[bool, typer.Option("--fleet", help="The fleet's shared queue: every system's.")] = False,
) -> None:
    """Every task: live and queued first, then finished."""

    def call() -> int:
        if fleet:
            from ccm_hooks.commands import fleetcmd

            return fleetcmd.task_list_cmd(state, as_json)
        from ccm_hooks.commands import taskview

        return taskview.list_cmd(state, as_json)

    raise typer.Exit(run_command(in_home(call)))


@task_app.command("show")
def task_show(
    task: TaskArg, as_json: Annotated[bool, typer.Option("--json", help="Print the task object.")] = False
) -> None:
    """One task: its attempts and its result (commits, files, last message, turns, time)."""

    def call() -> int:
        from ccm_hooks.commands import taskview

        return taskview.show_cmd(task, as_json)

    raise typer.Exit(run_command(in_home(call)))


@task_app.command("cancel")
def task_cancel(
    task: TaskArg,
    fleet: Annotated[
        bool, typer.Option("--fleet", help="A task of the fleet's shared queue (its id).")
    ] = False,
) -> None:
    """Cancel a task: a queued one at once, a running one's agent interrupted and its window closed."""

    def call() -> int:
        if fleet:
            from ccm_hooks.commands import fleetcmd

            return fleetcmd.task_cancel_cmd(task)
        from ccm_hooks.commands import taskcmd

        return taskcmd.cancel_cmd(task)

    raise typer.Exit(run_command(in_home(call, write=True)))


@task_app.command("retry")
def task_retry(task: TaskArg) -> None:
    """Queue a failed or cancelled task again: a fresh session on the same branch."""

    def call() -> int:
        from ccm_hooks.commands import taskcmd

        return taskcmd.retry_cmd(task)

    raise typer.Exit(run_command(in_home(call, write=True)))


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

    raise typer.Exit(run_command(in_home(call, write=True)))


@task_app.command("attach")
def task_attach(task: TaskArg) -> None:
    """Switch to (or attach) the tmux window of the task's agent."""

    def call() -> int:
        from ccm_hooks.commands import taskcmd

        return taskcmd.attach_cmd(task)

    raise typer.Exit(run_command(in_home(call, write=True)))


@task_app.command("clean")
def task_clean(
    task: Annotated[str | None, typer.Argument(help="Task id or unique prefix.", metavar="TASK_ID")] = None,
    finished: Annotated[bool, typer.Option("--finished", help="Every finished task.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Remove even a worktree with work in it.")] = False,
) -> None:
    """Remove finished tasks' worktrees, only when nothing would be lost; branches are always kept."""

    def call() -> int:
        from ccm_hooks.commands import taskcmd

        return taskcmd.clean_cmd(task, finished, force)

    raise typer.Exit(run_command(in_home(call, write=True)))


def start(
    prompt: Annotated[
        str | None, typer.Argument(help="The first prompt (none: an empty session).", metavar="PROMPT")
    ] = None,
    project: Annotated[
        Path,
        typer.Option(
            "--project", "-C", help="Where to start it (default: .).", metavar="DIR", show_default=False
        ),
    ] = Path("."),
    watch: Annotated[bool, typer.Option("--watch", help="Watch mode on for this session.")] = False,
    max_turns: Annotated[
        int | None, typer.Option("--max-turns", help="With --watch (default 10).", metavar="N")
    ] = None,
    worktree: Annotated[
        bool, typer.Option("--worktree", help="In a new worktree on branch ccm/<id>.")
    ] = False,
    name: Annotated[str | None, typer.Option("--name", help="A display name.", metavar="NAME")] = None,
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Do not switch to its window.")] = False,
) -> None:
    """Start an interactive agent now, in a new window of the `ccm` tmux session, and switch to it."""

    def call() -> int:
        from ccm_hooks.commands import startcmd

        return startcmd.start_cmd(prompt, project, watch, max_turns, worktree, name, detach)

    raise typer.Exit(run_command(in_home(call, write=True)))
