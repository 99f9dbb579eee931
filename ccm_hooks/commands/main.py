"""The ``ccm-hooks`` entry point: the read commands and ``task add`` start without importing typer.

typer (with click, rich and pydantic under it) costs 120-150 ms to import, several times what ``status``
itself costs on a small state dir, and ``jq`` answers the same question in ~40 ms (``task add`` is what
scripts and cron call, and every task's launch waits for it). The CLI is still defined once, with typer, in
cli.py: it gives ``--help``, completion and the error messages. Here a small parser handles the common,
well-formed invocations of those commands (FAST below) and hands everything else to typer: a help or
completion request, a ``--``, an option it does not know, a value that does not convert. Declining is
always safe, so this parser may be incomplete but never different: tests/test_cli.py checks that FAST
declares exactly the options of the typer commands, and that both parse the same argv the same.
"""

from __future__ import annotations

import os
import sys

# Not `from typing import ...` nor dataclasses: on this path they cost more than the command (typing
# imports re); the same trick as the hook handler.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

PROG = "ccm-hooks"
COMPLETE_VAR = "_CCM_HOOKS_COMPLETE"  # set by the completion scripts typer generates


class Opt:
    """One option: its names, the keyword it fills, and its kind: "flag" (True when given), "str", "path"
    (a str the command makes absolute), "int", "float", "multi" (a repeatable str, collected in a list)."""

    __slots__ = ("dest", "kind", "names")

    def __init__(self, names: tuple[str, ...], dest: str, kind: str) -> None:
        self.names, self.dest, self.kind = names, dest, kind


# The read commands, by their words ("task list" would be a two-word key), and their options. Each has a
# runner below that calls the command's function with these keyword arguments; the state dir is checked
# first (home.usable). To add one: an entry here, a runner in RUNNERS, and the typer command in cli.py with
# the same options (tests/test_cli.py checks they match).
FAST: dict[str, tuple[Opt, ...]] = {
    "status": (
        Opt(("--json",), "as_json", "flag"),
        Opt(("--watch", "-w"), "watch", "flag"),
        Opt(("--active", "-a"), "active", "flag"),
        Opt(("--project", "-C"), "project", "path"),
        Opt(("--fleet",), "fleet", "flag"),
    ),
    "events": (
        Opt(("--session", "-s"), "session", "str"),
        Opt(("--event", "-e"), "event", "multi"),
        Opt(("--since",), "since", "str"),
        Opt(("--lines", "-n"), "lines", "int"),
        Opt(("--follow", "-f"), "follow", "flag"),
        Opt(("--json",), "as_json", "flag"),
    ),
    "top": (
        Opt(("--iterations", "-n"), "iterations", "int"),
        Opt(("--delay", "-d"), "delay", "float"),
        Opt(("--all", "-a"), "show_all", "flag"),
        Opt(("--fleet",), "fleet", "flag"),
    ),
    "task add": (
        Opt(("--project", "-C"), "project", "path"),
        Opt(("--name",), "name", "str"),
        Opt(("--base",), "base", "str"),
        Opt(("--in-place",), "in_place", "flag"),
        Opt(("--after",), "after", "multi"),
        Opt(("--priority",), "priority", "int"),
        Opt(("--max-turns",), "max_turns", "int"),
        Opt(("--done-marker",), "done_marker", "str"),
        Opt(("--retries",), "retries", "int"),
        Opt(("--timeout",), "timeout", "str"),
        Opt(("--model",), "model", "str"),
        Opt(("--permission-mode",), "permission_mode", "str"),
        Opt(("--label",), "label", "multi"),
        Opt(("--headless",), "headless", "flag"),
        Opt(("--fleet",), "fleet", "flag"),
        Opt(("--on",), "on", "str"),
    ),
}
# The one argument a command takes, if any (its keyword); `-` (stdin) and anything after `--` go to typer.
POSITIONAL = {"task add": "prompt"}
WRITES = {"task add"}  # commands that need a state dir they can write


def _status(kw: dict[str, Any]) -> int:
    if kw["fleet"]:
        from ccm_hooks.commands import fleetcmd

        return fleetcmd.status_cmd(kw["as_json"], kw["watch"])
    from ccm_hooks.commands import statusview

    return statusview.status_cmd(kw["as_json"], kw["watch"], kw["active"], kw["project"])


def _events(kw: dict[str, Any]) -> int:
    from ccm_hooks.commands import eventsview

    return eventsview.events_cmd(
        kw["session"], kw["event"], kw["since"], kw["follow"], kw["as_json"], kw["lines"]
    )


def _top(kw: dict[str, Any]) -> int:
    if kw["fleet"]:
        from ccm_hooks.commands import fleetcmd

        return fleetcmd.top_cmd(kw["iterations"], kw["delay"])
    from ccm_hooks.commands import top

    return top.top_cmd(kw["iterations"], kw["delay"], kw["show_all"])


def _task_add(kw: dict[str, Any]) -> int:
    from ccm_hooks.commands import taskcmd

    return taskcmd.add_from_cli(kw.pop("prompt"), kw)


RUNNERS: dict[str, Callable[[dict[str, Any]], int]] = {
    "status": _status, "events": _events, "top": _top, "task add": _task_add,
}  # fmt: skip


def defaults(command: str) -> dict[str, Any]:
    return {o.dest: ([] if o.kind == "multi" else False if o.kind == "flag" else None) for o in FAST[command]}


def parse(argv: list[str]) -> tuple[str, dict[str, Any]] | None:
    """(command, keyword arguments) for a well-formed fast invocation, else None (typer takes it)."""
    command = next((c for c in FAST if argv[: len(c.split())] == c.split()), None)
    if command is None:
        return None
    rest = argv[len(command.split()) :]
    by_name = {name: opt for opt in FAST[command] for name in opt.names}
    values = defaults(command)
    i = 0
    positional = POSITIONAL.get(command)
    while i < len(rest):
        arg = rest[i]
        i += 1
        if not arg.startswith("-"):
            if positional is None or positional in values:
                return None  # an argument it does not take, or a second one: typer says so
            values[positional] = arg
            continue
        if arg in ("-", "--"):
            return None
        name, eq, inline = arg.partition("=") if arg.startswith("--") else (arg[:2], "", arg[2:])
        opt = by_name.get(name)
        if opt is None:
            return None  # --help, -h, a typo: typer answers
        if opt.kind == "flag":
            if eq:
                return None
            values[opt.dest] = True
            if inline:  # -fj: a cluster of short flags
                for ch in inline:
                    more = by_name.get("-" + ch)
                    if more is None or more.kind != "flag":
                        return None
                    values[more.dest] = True
            continue
        if inline or eq:
            raw = inline
        elif i < len(rest):
            raw = rest[i]
            i += 1
        else:
            return None  # a missing value: typer says so
        value = _convert(opt.kind, raw)
        if value is None:
            return None
        if opt.kind == "multi":
            values[opt.dest].append(value)
        else:
            values[opt.dest] = value
    if positional is not None and positional not in values:
        return None  # the argument is missing: typer says so
    return command, values


def _convert(kind: str, raw: str) -> Any:
    """The value, or None to let typer judge it: numbers in plain ASCII only (typer's validation refuses
    "1_000", " 5", "٣" and "1e3" where Python's int and float would take them)."""
    if kind in ("str", "multi", "path"):
        return raw
    sign = raw[:1] in "+-" and raw[:1] != ""
    body = raw[1:] if sign else raw
    whole, dot, frac = body.partition(".")
    if not (whole.isascii() and whole.isdigit()):
        return None
    if kind == "int":
        return None if dot else int(raw)
    if dot and not (frac.isascii() and frac.isdigit()):
        return None
    return float(raw)


def _runner(command: str, kw: dict[str, Any]) -> Callable[[], int]:
    def run() -> int:
        from ccm_hooks import paths
        from ccm_hooks.statedir import home

        home.usable(paths.state_dir(), write=command in WRITES)
        return RUNNERS[command](kw)

    return run


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("ccm")
    except PackageNotFoundError:
        return "unknown"


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args == ["--version"]:
        print(f"{PROG} {version()}")
        raise SystemExit(0)
    fast = None if os.environ.get(COMPLETE_VAR) else parse(args)
    if fast is None:
        from ccm_hooks.commands.cli import app

        app(args=args, prog_name=PROG)
        return
    from ccm_hooks.commands.error_boundary import run_command

    raise SystemExit(run_command(_runner(*fast)))
