"""The command line: the fast parser and the typer definition accept the same options and give the same
values; --version; help that reads naturally; shell completion that installs and works in bash."""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer.main

from ccm_hooks.commands import main
from ccm_hooks.commands.cli import app

BIN = Path(sys.executable).parent
CLI = str(BIN / "ccm-hooks")
AGENTD = str(BIN / "ccm-agentd")
GROUP = typer.main.get_command(app)
KINDS = {bool: "flag", str: "str", int: "int", float: "float", Path: "path", list[str]: "multi"}


def typer_command(command: str) -> Any:
    found: Any = GROUP
    for word in command.split():  # "task list": a sub-app's command
        found = found.commands[word]
    return found


def typer_options(command: str) -> dict[str, tuple[str, tuple[str, ...]]]:
    """dest -> (kind, option names) of the typer command, help excluded."""
    out = {}
    for param in typer_command(command).params:
        if param.param_type_name == "argument":
            assert main.POSITIONAL.get(command) == param.name, f"{command}'s argument is not in POSITIONAL"
            continue
        if "--help" in param.opts:
            continue
        kind = KINDS[param.type_descriptor.annotation]
        out[param.name] = (kind, tuple(sorted([*param.opts, *param.secondary_opts])))
    return out


@pytest.mark.parametrize("command", sorted(main.FAST))
def test_fast_parser_declares_exactly_the_typer_options(command: str) -> None:
    assert command in main.RUNNERS
    fast = {o.dest: (o.kind, tuple(sorted(o.names))) for o in main.FAST[command]}
    assert fast == typer_options(command)
    arguments = [p.name for p in typer_command(command).params if p.param_type_name == "argument"]
    assert arguments == ([main.POSITIONAL[command]] if command in main.POSITIONAL else [])


def click_values(argv: list[str]) -> dict[str, Any] | None:
    """What typer/click parse from ``argv`` (None: they reject it)."""
    words = next(c for c in main.FAST if argv[: len(c.split())] == c.split()).split()
    try:
        ctx = typer_command(" ".join(words)).make_context(words[-1], list(argv[len(words) :]))
    except Exception:
        return None
    values = dict(ctx.params)
    for key, value in values.items():
        if isinstance(value, Path):
            values[key] = os.path.abspath(value)  # what the command makes of either
        if value is None and key in ("event", "after", "label"):  # both mean none (task add: `or []`)
            values[key] = []
        if isinstance(value, tuple):
            values[key] = list(value)
    return values


WORDS = ["--json", "--watch", "-w", "--active", "-a", "--project", "-C", "/tmp/p", "--session", "-s",
         "abc", "--event", "-e", "Stop", "--since", "2h", "--lines", "-n", "5", "-3", "x1", "--follow",
         "-f", "-fw", "-aw", "-fa", "--json=1", "--lines=7", "-n7", "-sabc", "--iterations", "--delay",
         "-d", "0.5", "--all", "-h", "--help", "--", "-", "extra", "--nope", "-z", "--project=/x",
         "1_000", " 5", "+5", "0x10", "5.0", "1e3", "inf", "nan", "\u0663", "-0", "007", "",
         "\u00e9t\u00e9", "--name", "--base", "--in-place", "--after", "--priority", "--max-turns", "3",
         "--done-marker", "--retries", "--timeout", "--model", "--permission-mode", "--label", "k=v",
         "--headless", "--fleet", "--on", "do the thing"]  # fmt: skip


@pytest.mark.parametrize("command", sorted(main.FAST))
def test_whatever_the_fast_parser_accepts_typer_parses_the_same(command: str) -> None:
    rng = random.Random(command)
    accepted = 0
    for _ in range(3000):
        argv = [*command.split(), *rng.choices(WORDS, k=rng.randrange(0, 5))]
        fast = main.parse(argv)
        if fast is None:
            continue  # declined: typer handles it, so nothing can differ
        accepted += 1
        assert fast[0] == command
        kinds = {o.dest: o.kind for o in main.FAST[command]} | {main.POSITIONAL.get(command): "str"}
        got = {
            k: os.path.abspath(v) if kinds[k] == "path" and v is not None else v for k, v in fast[1].items()
        }
        assert got == click_values(argv), argv
    assert accepted > 100


def test_help_and_completion_requests_go_to_typer(monkeypatch: pytest.MonkeyPatch) -> None:
    assert main.parse(["status", "--help"]) is None
    assert main.parse(["events", "-h"]) is None
    assert main.parse(["events", "--", "x"]) is None
    out = subprocess.run([CLI, "status", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "--active" in out.stdout and "Usage: ccm-hooks status" in out.stdout
    out = subprocess.run([CLI, "events", "-n", "many"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "Invalid value for '--lines' / '-n'" in out.stderr


def test_the_read_commands_start_without_typer(ccm_home: Path) -> None:
    probe = (
        "import sys; from ccm_hooks.commands import main\n"
        "try:\n    main.main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('typer', 'click', 'rich', 'pydantic'))\n"
        "print('IMPORTED', bad)\n"
    )
    task = ["task", "add", "hello", "--project", str(ccm_home.parent), "--label", "k=v"]  # not git: refused
    for args in (["status"], ["status", "--json"], ["events", "-n", "3"], ["events", "--since", "1h"], task):
        out = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=60)
        assert out.stdout.strip().endswith("IMPORTED []"), (args, out.stdout, out.stderr)


def test_version_on_both_commands() -> None:
    from importlib.metadata import version

    for exe, name in ((CLI, "ccm-hooks"), (AGENTD, "ccm-agentd")):
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60)
        assert (out.returncode, out.stdout) == (0, f"{name} {version('ccm')}\n")


def all_commands(group: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [prefix]
    for name, sub in getattr(group, "commands", {}).items():
        found += all_commands(sub, (*prefix, name))
    return found


@pytest.mark.parametrize("exe", [CLI, AGENTD])
def test_help_reads_naturally(exe: str) -> None:
    from ccm_agentd.cli import app as agentd_app

    group = GROUP if exe == CLI else typer.main.get_command(agentd_app)
    for words in all_commands(group):
        out = subprocess.run([exe, *words, "--help"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, (words, out.stderr)
        # A positional argument's line names its type after its metavar (typer's way: "ITEM_ID <str>");
        # options must not show one.
        text = re.sub(r"\b([A-Z_]+) <str>", r"\1", out.stdout).replace("<str>  Session", "")
        for odd in ("<bool>", "<list", "<str>", "<int>", "<path>", "[default: ("):
            assert odd not in text, (words, odd, out.stdout)
    flags = subprocess.run([exe if exe == CLI else CLI, "events", "--help"], capture_output=True, text=True)
    assert "-f, --follow" in flags.stdout and "-e, --event NAME" in flags.stdout


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_completion_installs_and_completes(private_home: Path) -> None:
    env = {**os.environ, "SHELL": "/bin/bash", "HOME": str(private_home), "PATH": f"{BIN}:/usr/bin:/bin"}
    out = subprocess.run([CLI, "--install-completion", "bash"], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert "ccm-hooks" in (private_home / ".bashrc").read_text()
    # A new interactive bash, as the user opens one: the completion is loaded from .bashrc and completes
    # commands, subcommands and options through the real ccm-hooks.
    script = (
        "complete -p ccm-hooks >/dev/null || exit 9\n"
        'comp() { COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _ccm_hooks_completion ccm-hooks; '
        'printf "%s," "${COMPREPLY[@]}"; echo; }\n'
        "comp ccm-hooks st\ncomp ccm-hooks watch ''\ncomp ccm-hooks events --fo\n"
    )
    done = subprocess.run(["bash", "-i", "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-3:] == ["status,start,", "on,off,status,reset,", "--follow,"]
