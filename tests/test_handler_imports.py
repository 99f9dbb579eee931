"""Hooks never hurt Claude: the handler's import chain is standard library only, and lean."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO
from tests.hookrun import FIXTURES

HOOK_MODULES = {
    "ccm_hooks",
    "ccm_hooks.handler",
    "ccm_hooks.paths",
    "ccm_hooks.fastjson",
    "ccm_hooks.record",
    "ccm_hooks.state",
    "ccm_hooks.store",
    "ccm_hooks.fileio",
    "ccm_hooks.watch",
    "ccm_hooks.errors",
    "ccm_hooks.saferegex",
    "ccm_hooks.jsonl",
}
# Standard library, but each costs milliseconds per hook call; nothing on the hot path needs them.
# json, re, enum and signal included: fastjson and _signal do their jobs without them (~13 ms together).
TOO_SLOW = {
    "typing", "datetime", "contextlib", "dataclasses", "pathlib", "tomllib", "subprocess", "asyncio",
    "json", "re", "enum", "signal",
}  # fmt: skip

PROBE = """
import sys
sys.path.insert(0, {repo!r})
sys.stdin = open({payload!r})
from ccm_hooks import handler
handler.main()
sys.stderr.write(repr(sorted(sys.modules)))
"""


def _modules_after_one_event(name: str, env: dict[str, str] | None = None) -> set[str]:
    code = PROBE.format(repo=str(REPO), payload=str(FIXTURES / "payloads" / name))
    proc = subprocess.run(
        [sys.executable, "-IS", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )
    assert proc.returncode == 0
    if env:  # watch mode on: the Stop answers Claude with a block, and nothing else
        assert proc.stdout == '{"decision":"block","reason":"continue"}'
    else:
        assert proc.stdout == ""
    return set(eval(proc.stderr))  # our own repr of a list of strings


def test_handler_imports_only_the_standard_library(tmp_path: Path) -> None:
    cases = [
        ("PostToolUse__Bash.json", None),
        ("Stop__first.json", None),
        ("Stop__first.json", {"CCM_WATCH": "1", "CCM_HOME": str(tmp_path)}),
        # A done marker that is a regex runs on saferegex, never on re.
        (
            "Stop__first.json",
            {"CCM_WATCH": "1", "CCM_HOME": str(tmp_path / "r"), "CCM_WATCH_DONE_MARKER": "A(B|C)"},
        ),
    ]
    for name, env in cases:
        modules = _modules_after_one_event(name, env)
        ours = {m for m in modules if m.split(".")[0] == "ccm_hooks"}
        assert ours <= HOOK_MODULES, ours - HOOK_MODULES
        foreign = {m for m in modules - ours - {"__main__"} if m.split(".")[0] not in sys.stdlib_module_names}
        assert not foreign, foreign
        assert not modules & TOO_SLOW, modules & TOO_SLOW


def test_package_init_files_are_empty() -> None:
    for pkg in ("ccm_hooks", "ccm_agentd"):
        assert (REPO / pkg / "__init__.py").read_text() == ""


def test_fixture_payloads_are_the_captured_ones() -> None:
    # Sanity: the fixtures parse and carry the fields every payload has.
    for path in (FIXTURES / "payloads").glob("*.json"):
        data = json.loads(path.read_text())
        assert {"session_id", "transcript_path", "cwd", "hook_event_name"} <= set(data), path.name
