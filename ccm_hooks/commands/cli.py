"""``ccm-hooks``: argument parsing only. Each command calls one function that returns an exit code.

Exit codes: 0 ok, 1 an expected failure (one line on stderr saying what to do), 3 an unexpected error
(traceback written to ``$CCM_HOME/log/cli.log``, one line pointing at it), 130 interrupted.

This is the one definition of the CLI (help, completion, errors). The entry point is main.py, which runs
the read commands (status, events, top) through a small parser without importing typer; tests/test_cli.py
keeps its table of options equal to the options declared here. Help is plain text (``rich_markup_mode``
None): flags read ``-f, --follow`` rather than ``--follow -f <bool>``. Options take a ``metavar`` naming
what they want.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated

import typer

from ccm_hooks.commands.error_boundary import in_home, run_command

app = typer.Typer(
    pretty_exceptions_enable=False,  # run_command is the one error boundary
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Record what every Claude Code session does, through its hooks, and read it back.",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        from ccm_hooks.commands.main import PROG, version

        typer.echo(f"{PROG} {version()}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Record what every Claude Code session does, through its hooks, and read it back."""


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
        metavar="SCOPE",
    ),
]
FleetOpt = Annotated[
    bool, typer.Option("--fleet", help="Every system's, from the fleet database ([fleet] in config.toml).")
]
ProjectOpt = Annotated[
    Path,
    typer.Option(
        "--project", "-C", help="Project directory for project/local scope (default: .).", metavar="DIR",
        show_default=False,
    ),
]  # fmt: skip


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

    raise typer.Exit(run_command(in_home(call, write=True)))


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

    raise typer.Exit(run_command(in_home(call, write=True)))


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
    active: Annotated[bool, typer.Option("--active", "-a", help="Leave out ended sessions.")] = False,
    project: Annotated[
        Path | None,
        typer.Option("--project", "-C", help="Only sessions in DIR or below it.", metavar="DIR"),
    ] = None,
    fleet: FleetOpt = False,
) -> None:
    """One line per session, newest first: state, project, last tool, age."""

    def call() -> int:
        if fleet:
            from ccm_hooks.commands import fleetcmd

            return fleetcmd.status_cmd(as_json, watch)
        from ccm_hooks.commands import statusview

        return statusview.status_cmd(as_json, watch, active, str(project) if project is not None else None)

    raise typer.Exit(run_command(in_home(call)))


@app.command()
def events(
    session: Annotated[
        str | None,
        typer.Option("--session", "-s", help="Only this session (id or unique prefix).", metavar="ID"),
    ] = None,
    event: Annotated[
        list[str] | None,
        typer.Option("--event", "-e", help="Only this event name (repeatable).", metavar="NAME"),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            help="Only records at or after TIME: ISO 8601, or an age: 90s, 15m, 2h, 1d.",
            metavar="TIME",
        ),
    ] = None,
    lines: Annotated[
        int | None,
        typer.Option(
            "--lines", "-n", help="Only the last N records (with --follow: 10 unless given).", metavar="N"
        ),
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Then keep printing new records, as tail -f does.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print records as JSON lines (jq-ready).")] = False,
) -> None:
    """Print the event log, oldest first: one session in seq order, several merged by time."""

    def call() -> int:
        from ccm_hooks.commands import eventsview

        return eventsview.events_cmd(session, event or [], since, follow, as_json, lines)

    raise typer.Exit(run_command(in_home(call)))


@app.command()
def validate(
    home: Annotated[
        Path | None,
        typer.Option("--home", help="State dir to check (default: $CCM_HOME or ~/.ccm).", metavar="DIR"),
    ] = None,
) -> None:
    """Check a state dir against spec/: layout, modes, every record and status file."""

    def call() -> int:
        from ccm_hooks.commands import validate as validate_mod

        return validate_mod.validate_cmd(home)

    raise typer.Exit(run_command(call))


@app.command()
def send(
    session: Annotated[str, typer.Argument(help="Session id or unique prefix.", metavar="SESSION_ID")],
    text: Annotated[
        str,
        typer.Argument(
            help="The prompt: one line of printable text, at most 800 characters.", metavar="TEXT"
        ),
    ],
    command: Annotated[
        bool, typer.Option("--command", help="TEXT is a /command or !command, typed as such on purpose.")
    ] = False,
) -> None:
    """Queue a prompt for a session; ccm-agentd types it into the session's tmux pane once it is idle."""

    def call() -> int:
        from ccm_hooks.commands import send as send_mod

        return send_mod.send_cmd(session, text, command)

    raise typer.Exit(run_command(in_home(call, write=True)))


queue_app = typer.Typer(
    invoke_without_command=True,
    rich_markup_mode=None,
    help="Prompts queued with `send`: what waits, and why; cancel one.",
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(queue_app, name="queue")


@queue_app.callback()
def queue_list(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array of the pending items.")] = False,
) -> None:
    """List the pending prompts: session, age, attempts, and why each is not typed yet."""
    if ctx.invoked_subcommand is not None:
        return

    def call() -> int:
        from ccm_hooks.commands import send as send_mod

        return send_mod.queue_cmd(as_json)

    raise typer.Exit(run_command(in_home(call)))


@queue_app.command("cancel")
def queue_cancel(
    item: Annotated[str, typer.Argument(help="The item id `ccm-hooks queue` shows.", metavar="ITEM_ID")],
) -> None:
    """Take a pending prompt out of the queue (refused once ccm-agentd has begun typing it)."""

    def call() -> int:
        from ccm_hooks.commands import send as send_mod

        return send_mod.queue_cancel_cmd(item)

    raise typer.Exit(run_command(in_home(call, write=True)))


watch_app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Watch mode: when a session stops, continue it, within limits (spec/watch.md).",
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(watch_app, name="watch")

SessionArg = Annotated[
    str | None,
    typer.Argument(help="Session id or unique prefix (`ccm-hooks status` lists them).", metavar="SESSION_ID"),
]
WatchProjectOpt = Annotated[
    Path | None,
    typer.Option(
        "--project", "-C", help="Default for sessions started in DIR (and below) from now on.", metavar="DIR"
    ),
]
GlobalOpt = Annotated[bool, typer.Option("--global", help="Default for every session started from now on.")]


@watch_app.command("on")
def watch_on(
    session: SessionArg = None,
    project: WatchProjectOpt = None,
    everyone: GlobalOpt = False,
    max_turns: Annotated[
        int | None,
        typer.Option("--max-turns", help="Auto-continues per run, 1-10000 (default 10).", metavar="N"),
    ] = None,
    prompt: Annotated[
        str | None,
        typer.Option("--prompt", help="What to say to continue (default: continue).", metavar="TEXT"),
    ] = None,
    done_marker: Annotated[
        str | None,
        typer.Option(
            "--done-marker",
            help="Stop when the reply matches this regex (default: \\[DONE\\]).",
            metavar="REGEX",
        ),
    ] = None,
    no_progress: Annotated[
        int | None,
        typer.Option(
            "--no-progress",
            help="Stop after K auto-continued turns without a tool call (default 2).",
            metavar="K",
        ),
    ] = None,
) -> None:
    """Turn watch on for a SESSION_ID, a --project, or --global; unset options keep their current value."""

    def call() -> int:
        from ccm_hooks.commands import watchcmd

        changes = {"max_turns": max_turns, "prompt": prompt, "done_marker": done_marker,
                   "no_progress_turns": no_progress}  # fmt: skip
        return watchcmd.watch_set_cmd(True, session, project, everyone, changes)

    raise typer.Exit(run_command(in_home(call, write=True)))


@watch_app.command("off")
def watch_off(
    session: SessionArg = None, project: WatchProjectOpt = None, everyone: GlobalOpt = False
) -> None:
    """Turn watch off for a SESSION_ID, a --project, or --global."""

    def call() -> int:
        from ccm_hooks.commands import watchcmd

        return watchcmd.watch_set_cmd(False, session, project, everyone, {})

    raise typer.Exit(run_command(in_home(call, write=True)))


@watch_app.command("status")
def watch_status(
    session: SessionArg = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The defaults, and each session's watch state: turns used, why it stopped."""

    def call() -> int:
        from ccm_hooks.commands import watchcmd

        return watchcmd.watch_status_cmd(session, as_json)

    raise typer.Exit(run_command(in_home(call)))


@watch_app.command("reset")
def watch_reset(
    session: Annotated[str, typer.Argument(help="Session id or unique prefix.", metavar="SESSION_ID")],
) -> None:
    """Give a session a fresh run: the auto-continue count back to 0, a stop cleared."""

    def call() -> int:
        from ccm_hooks.commands import watchcmd

        return watchcmd.watch_reset_cmd(session)

    raise typer.Exit(run_command(in_home(call, write=True)))


@app.command()
def top(
    iterations: Annotated[
        int | None,
        typer.Option(
            "--iterations",
            "-n",
            help="Print N snapshots, DELAY seconds apart, then exit (as top -b -n).",
            metavar="N",
        ),
    ] = None,
    delay: Annotated[
        float | None,
        typer.Option("--delay", "-d", help="Seconds between snapshots with -n (default 2).", metavar="DELAY"),
    ] = None,
    show_all: Annotated[
        bool, typer.Option("--all", "-a", help="Show ended sessions too (the a key toggles them).")
    ] = False,
    fleet: FleetOpt = False,
) -> None:
    """Live view of every session: Enter goes to its tmux pane, w toggles watch, r resets it, ? keys.

    When stdout is not a terminal, prints plain snapshots instead: one now and one after each change, or
    with -n, N of them DELAY seconds apart (as top -b -n N -d DELAY).
    """  # fmt: skip

    def call() -> int:
        if fleet:
            from ccm_hooks.commands import fleetcmd

            return fleetcmd.top_cmd(iterations, delay)
        from ccm_hooks.commands import top as top_mod

        return top_mod.top_cmd(iterations, delay, show_all)

    raise typer.Exit(run_command(in_home(call)))


@app.command()
def prune(
    older_than: Annotated[
        str,
        typer.Option(
            "--older-than",
            help="Remove ended sessions idle for longer than AGE: 90m, 12h, 7d, 2w.",
            metavar="AGE",
        ),
    ],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would go, remove nothing.")] = False,
) -> None:
    """Remove the files of ended sessions (log, status, lock) and stale temp files; never a live session's."""

    def call() -> int:
        from ccm_hooks.commands import prune as prune_mod

        return prune_mod.prune_cmd(older_than, dry_run)

    raise typer.Exit(run_command(in_home(call, write=True)))


# --- tasks (spec/tasks.md): `task ...` and `start`, defined in cli_tasks.py --------------------------------

from ccm_hooks.commands import cli_tasks  # noqa: E402  (after `app`, which it does not need)

app.add_typer(cli_tasks.task_app, name="task")
app.command()(cli_tasks.start)


def main() -> None:
    """The old entry point (scripts installed before main.py existed): same behaviour."""
    from ccm_hooks.commands import main as entry

    entry.main()
