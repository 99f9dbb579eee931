"""``ccm-hooks``: argument parsing only. Each command calls one function that returns an exit code.

Exit codes: 0 ok, 1 an expected failure (one line on stderr saying what to do), 3 an unexpected error
(traceback written to ``$CCM_HOME/log/cli.log``, one line pointing at it), 130 interrupted.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated

import typer

from ccm_hooks.error_boundary import run_command

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
        from ccm_hooks import installer

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
        from ccm_hooks import installer

        return installer.uninstall_cmd(scope.value, project, dry_run)

    raise typer.Exit(run_command(call))


@app.command()
def doctor(project: ProjectOpt = Path(".")) -> None:
    """Check the installation, the state dir, claude and tmux, and say what to fix."""

    def call() -> int:
        from ccm_hooks import doctor as doctor_mod

        return doctor_mod.doctor_cmd(project)

    raise typer.Exit(run_command(call))


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array of status objects.")] = False,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Redraw whenever a session changes.")] = False,
) -> None:
    """One line per session, newest first: state, project, last tool, age."""

    def call() -> int:
        from ccm_hooks import views

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
        from ccm_hooks import views

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
        from ccm_hooks import validate as validate_mod

        return validate_mod.validate_cmd(home)

    raise typer.Exit(run_command(call))


def main() -> None:
    app(prog_name="ccm-hooks")
