"""``ccm-agentd``: argument parsing only. Each command calls one function that returns an exit code.

Exit codes as ``ccm-hooks``: 0 ok, 1 an expected failure (one line saying what to do), 3 unexpected
(traceback in ``$CCM_HOME/log/cli.log``), 130 interrupted.
"""

from __future__ import annotations

from typing import Annotated

import typer

from ccm_hooks.commands.error_boundary import run_command

app = typer.Typer(
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    rich_markup_mode=None,  # plain help: flags read "--json", not "--json <bool>"
    help="The daemon that acts on what ccm's hooks record: continues, queued prompts, timeouts.",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        from ccm_hooks.commands.main import version

        typer.echo(f"ccm-agentd {version()}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """The daemon that acts on what ccm's hooks record: continues, queued prompts, timeouts."""


def _usable_home(write: bool) -> None:
    """One line (exit 1) for a CCM_HOME that is a file, a FIFO, unreadable or another user's."""
    from ccm_hooks import paths
    from ccm_hooks.statedir import home

    home.usable(paths.state_dir(), write=write)


@app.command()
def run() -> None:
    """Run in the foreground until SIGTERM/SIGINT (SIGHUP reloads the config)."""

    def call() -> int:
        from ccm_agentd import daemon

        _usable_home(write=True)
        return daemon.run_cmd()

    raise typer.Exit(run_command(call, prog="ccm-agentd"))


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print the health file as JSON.")] = False,
) -> None:
    """Is a daemon running for this state dir, and how is it doing (from its health file)."""

    def call() -> int:
        from ccm_agentd import statuscmd

        _usable_home(write=False)
        return statuscmd.status_cmd(as_json)

    raise typer.Exit(run_command(call, prog="ccm-agentd"))


@app.command("install-service")
def install_service(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the unit/plist, write nothing.")] = False,
) -> None:
    """Write and load a systemd user unit (Linux) or a launchd agent (macOS) that runs `ccm-agentd run`."""

    def call() -> int:
        from ccm_agentd import service

        return service.install_service_cmd(dry_run)

    raise typer.Exit(run_command(call, prog="ccm-agentd"))


@app.command("uninstall-service")
def uninstall_service() -> None:
    """Stop and remove the service that install-service wrote."""

    def call() -> int:
        from ccm_agentd import service

        return service.uninstall_service_cmd()

    raise typer.Exit(run_command(call, prog="ccm-agentd"))


fleet_app = typer.Typer(
    no_args_is_help=True,
    help="The fleet: one view and one task queue across machines, on PostgreSQL (spec/fleet.md).",
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(fleet_app, name="fleet")


@fleet_app.command("init")
def fleet_init() -> None:
    """Create or upgrade the fleet's schema (safe to re-run, and from two machines at once)."""

    def call() -> int:
        from ccm_agentd.fleet import commands

        return commands.init_cmd()

    raise typer.Exit(run_command(call, prog="ccm-agentd"))


@fleet_app.command("status")
def fleet_status(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The connection (never the password), this system, the shipping backlog and lag."""

    def call() -> int:
        from ccm_agentd.fleet import commands

        return commands.status_cmd(as_json)

    raise typer.Exit(run_command(call, prog="ccm-agentd"))


def main() -> None:
    app(prog_name="ccm-agentd")
