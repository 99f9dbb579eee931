"""spec/ stays true to the code: every field written is described, every state and event documented,
the documented numbers are the code's, and the shell recipes run against a real state dir."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from ccm_hooks import handler, paths, record, state, store
from ccm_hooks.commands import settings_merge, validatelog
from ccm_hooks.statedir import sendqueue
from tests.conftest import REPO
from tests.hookrun import FIXTURES, FULL_ENV, payload, run_hook

SPEC = REPO / "spec"
PAYLOADS = sorted((FIXTURES / "payloads").glob("*.json"))
ENV = FULL_ENV
# Payloads beyond the captured ones, so that every branch of record.build_record writes its fields.
EXTRA: list[dict[str, Any]] = [
    {
        "hook_event_name": "PostToolUse",
        "tool_name": "Bash",
        "tool_use_id": "t1",
        "tool_input": {"command": "sleep 9", "run_in_background": True},
        "tool_response": {"interrupted": True},
    },
    {
        "hook_event_name": "PostToolUseFailure",
        "tool_name": "Bash",
        "tool_use_id": "t2",
        "tool_input": {"command": "x"},
        "error": "Interrupted",
        "is_interrupt": True,
    },
    {
        "hook_event_name": "PreToolUse",
        "tool_name": "Grep",
        "tool_use_id": "t3",
        "tool_input": {"pattern": "TODO", "path": "src", "-n": True},
    },
    {
        "hook_event_name": "PreToolUse",
        "tool_name": "Glob",
        "tool_use_id": "t4",
        "tool_input": {"pattern": "*.py"},
    },
    {
        "hook_event_name": "PreToolUse",
        "tool_name": "WebFetch",
        "tool_use_id": "t5",
        "tool_input": {"url": "https://example.com", "prompt": "summarise"},
    },
    {
        "hook_event_name": "PreToolUse",
        "tool_name": "WebSearch",
        "tool_use_id": "t6",
        "tool_input": {"query": "q"},
    },
    {
        "hook_event_name": "PreToolUse",
        "tool_name": "NotebookEdit",
        "tool_use_id": "t7",
        "tool_input": {"notebook_path": "a.ipynb", "new_source": "x"},
    },
    {
        "hook_event_name": "PreToolUse",
        "tool_name": "Task",
        "tool_use_id": "t8",
        "tool_input": {"description": "d", "subagent_type": "Explore", "prompt": "p"},
    },
    {
        "hook_event_name": "PreToolUse",
        "tool_name": "mcp__s__t",
        "tool_use_id": "t9",
        "tool_input": {f"k{i}": i for i in range(12)},
    },
    {"hook_event_name": "StopFailure", "error": {"type": "rate_limit", "message": "slow down"}},
    {"hook_event_name": "PreCompact", "trigger": "auto"},
    {"hook_event_name": "UserPromptSubmit", "prompt": "p" * 5000},
]


SUMMARISED = {"Bash", "Grep", "Glob", "WebFetch", "WebSearch", "Agent", "Task", *record.FILE_TOOLS}


def spec(name: str) -> str:
    return (SPEC / name).read_text()


def schema(name: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((SPEC / "schemas" / name).read_text())
    return result


def write_everything(home: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Run the real handler over every captured payload and EXTRA; return (records, statuses)."""
    env = {**ENV, "CCM_HOME": str(home)}
    for path in PAYLOADS:
        assert run_hook(path.read_bytes(), env=env).returncode == 0
    for i, extra in enumerate(EXTRA):
        data = {"session_id": f"extra-{i}", "cwd": "/w", "permission_mode": "default", **extra}
        assert run_hook(data, env={**env, "CCM_TASK_ID": ""}).returncode == 0  # task_id is optional
    write_watched_session(home, env)
    assert not (home / "log" / "hooks.log").exists()
    records = [
        json.loads(line) for p in (home / "events").glob("*.jsonl") for line in p.read_text().splitlines()
    ]
    statuses = [json.loads(p.read_text()) for p in (home / "status").glob("*.json")]
    return records, statuses


def write_watched_session(home: Path, env: dict[str, str]) -> None:
    """A watched session that meets every kind of ccm record and decision: continue, handoff, stop, reset."""
    sid = "watched-1"
    wenv = {**env, "CCM_HOME": str(home), "CCM_WATCH": "1", "CLAUDE_CODE_STOP_HOOK_BLOCK_CAP": "1"}
    stop = {"session_id": sid, "cwd": "/w", "hook_event_name": "Stop", "last_assistant_message": "x"}
    assert run_hook({**stop, "stop_hook_active": False}, env=wenv).stdout  # ccm.watch, then a continue
    health = Path(paths.agentd_health_path(str(home)))
    health.parent.mkdir(mode=0o700, exist_ok=True)
    health.write_text("{}")
    assert not run_hook({**stop, "stop_hook_active": True}, env=wenv).stdout  # cap reached: a handoff
    prompt = {"session_id": sid, "cwd": "/w", "hook_event_name": "UserPromptSubmit", "prompt": "continue"}
    assert run_hook(prompt, env=wenv).returncode == 0  # ccm-agentd typed it
    assert not run_hook({**stop, "last_assistant_message": "[DONE]"}, env=wenv).stdout  # stop: done
    store.append_ccm(str(home), sid, "ccm.watch_reset", {"by": "test"})
    # ccm-agentd's records: a queued prompt, its delivery, and the states hooks cannot see.
    item = sendqueue.enqueue(str(home), sid, "next task", by="test")["id"]
    for outcome, extra in (("typing", {"text": "next task"}), ("delivered", {})):
        delivery = {"item": item, "kind": "queued", "attempt": 1, "outcome": outcome, **extra, "detail": "d"}
        store.append_ccm(str(home), sid, "ccm.delivery", {"delivery": delivery})
    limited = {"state": "rate_limited", "reason": "usage limit", "resume_at": "2026-11-21T15:00:00.000000Z"}
    store.append_ccm(str(home), sid, "ccm.state", {"set_state": limited})


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return write_everything(tmp_path_factory.mktemp("spec") / ".ccm")


# --- schemas ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["event.schema.json", "status.schema.json"])
def test_schemas_are_valid_draft_2020_12(name: str) -> None:
    jsonschema.Draft202012Validator.check_schema(schema(name))


def test_the_package_ships_the_spec_schemas_through_a_symlink() -> None:
    link = REPO / "ccm_hooks" / "schemas"
    assert link.is_symlink() and os.readlink(link) == "../spec/schemas"
    for name in ("event.schema.json", "status.schema.json"):
        assert validatelog.schema(name).schema == schema(name)


def test_validate_names_the_schema_rule_sets_in_order() -> None:
    refs = [rule["$ref"] for rule in schema("event.schema.json")["allOf"]]
    assert refs == ["#/$defs/fields_per_event", "#/$defs/tool_input_per_tool"]
    assert len(validatelog.RULES) == len(refs)


def test_every_record_field_is_in_the_schema_and_the_schema_has_no_other(
    written: tuple[list[dict[str, Any]], list[dict[str, Any]]],
) -> None:
    records, _ = written
    props = schema("event.schema.json")["properties"]
    seen = {key for rec in records for key in rec}
    assert seen == set(props), "schema and handler disagree on the record's fields"
    always = set.intersection(*(set(rec) for rec in records))
    assert always == set(schema("event.schema.json")["required"])
    checker = jsonschema.Draft202012Validator(schema("event.schema.json"))
    for rec in records:
        assert list(checker.iter_errors(rec)) == [], rec


def test_every_record_field_and_tool_input_key_is_in_events_md(
    written: tuple[list[dict[str, Any]], list[dict[str, Any]]],
) -> None:
    text = spec("events.md")
    records, _ = written
    for key in {key for rec in records for key in rec}:
        assert f"| `{key}` |" in text, key
    for rec in records:
        if rec.get("tool_name") not in SUMMARISED:
            continue  # the generic summary keeps whatever keys the tool has
        for key in rec.get("tool_input", {}):
            assert f"`{key}`" in text, (rec["tool_name"], key)


def test_every_status_field_is_in_the_schema_and_status_md(
    written: tuple[list[dict[str, Any]], list[dict[str, Any]]],
) -> None:
    _, statuses = written
    text = spec("status.md")
    status_schema = schema("status.schema.json")
    checker = jsonschema.Draft202012Validator(status_schema)
    for status in statuses:
        assert list(checker.iter_errors(status)) == [], status
        assert set(status) == set(status_schema["properties"]) == set(status_schema["required"])
    for key in status_schema["properties"]:
        assert f"| `{key}` |" in text, key
    assert list(status_schema["properties"]["counters"]["properties"]) == list(state.COUNTERS)
    for counter in state.COUNTERS:
        assert f"| `counters.{counter}` |" in text, counter


def test_examples_in_the_spec_validate() -> None:
    events = jsonschema.Draft202012Validator(schema("event.schema.json"))
    examples = [json.loads(b) for b in re.findall(r"```json\n(\{.*?\})\n```", spec("events.md"), re.DOTALL)]
    assert len(examples) >= 3
    for example in examples:
        assert list(events.iter_errors(example)) == [], example
    [status_example] = re.findall(r"```json\n(\{.*?\})\n```", spec("status.md"), re.DOTALL)
    checker = jsonschema.Draft202012Validator(schema("status.schema.json"))
    assert list(checker.iter_errors(json.loads(status_example))) == []
    [log_example] = re.findall(r"```json\n(\{.*?\})\n```", spec("layout.md"), re.DOTALL)
    assert list(json.loads(log_example)) == ["ts", "pid", "event", "session_id", "error", "where"]


# --- states and events --------------------------------------------------------------------------------


def test_every_state_is_documented() -> None:
    text = spec("state-machine.md")
    all_states = [*state.STATES, *state.RESERVED_STATES]
    assert schema("status.schema.json")["properties"]["state"]["enum"] == all_states
    for name in all_states:
        assert f"| `{name}` |" in text, name  # its row in the States table
    never_stale = re.search(r"its event is not one of (.*?) \(`state.NEVER_STALE`\)", text, re.DOTALL)
    assert never_stale is not None
    assert set(re.findall(r"\w+", never_stale.group(1))) - {"and"} == set(state.NEVER_STALE)


def test_every_captured_event_is_in_events_md() -> None:
    table = spec("events.md").split("\n## Events\n", 1)[1]
    for path in PAYLOADS:
        event = json.loads(path.read_text())["hook_event_name"]
        assert f"\n| {event} |" in table, event


def test_registered_column_is_what_install_registers() -> None:
    table = spec("events.md").split("\n## Events\n", 1)[1]
    rows = re.findall(r"^\| (\w+) \| [^|]* \| (yes|no) \|", table, re.MULTILINE)
    assert len(rows) >= len(PAYLOADS) // 2
    assert {event for event, registered in rows if registered == "yes"} == set(settings_merge.EVENTS)


def test_every_event_with_a_transition_is_in_the_transition_table() -> None:
    text = spec("state-machine.md").split("## Transitions", 1)[1].split("## Ordering", 1)[0]
    for event in (
        "SessionStart",
        "UserPromptSubmit",
        "PreToolUse",
        "PostToolUse",
        "PostToolUseFailure",
        "SubagentStart",
        "SubagentStop",
        "PermissionRequest",
        "Notification",
        "Stop",
        "StopFailure",
        "SessionEnd",
        "PreCompact",
    ):
        assert re.search(rf"^\| [^|]*\b{event}\b", text, re.MULTILINE), event


# --- numbers and rules the spec states ----------------------------------------------------------------


def _has_number(text: str, n: int) -> bool:
    return str(n) in text.replace(",", "")


def test_documented_numbers_are_the_codes() -> None:
    events, layout, status = spec("events.md"), spec("layout.md"), spec("status.md")
    assert record.FORMAT_VERSION == 1 == schema("event.schema.json")["properties"]["v"]["const"]
    assert schema("status.schema.json")["properties"]["v"]["const"] == record.FORMAT_VERSION
    assert f"default **{record.DEFAULT_FIELD_CAP}**" in events
    assert f"**{record.MIN_FIELD_CAP}** if lower" in events
    assert f"**{record.MAX_FIELD_CAP}** if higher" in events
    assert f"clipped at {record.SHORT_CAP} characters" in events
    assert f"the first {record.MAX_INPUT_KEYS} keys" in events
    assert store.MAX_LINE_BYTES == 1 << 20 and _has_number(events, store.MAX_LINE_BYTES)
    assert handler.MAX_LOG_BYTES == 1 << 20 and _has_number(layout, handler.MAX_LOG_BYTES)
    assert f"at most **{store.LOCK_TIMEOUT_S:g} s**" in layout
    assert f"cut to {state.STATUS_TEXT_CAP} characters" in status
    assert f"at most {state.MAX_RUNNING_TOOLS}" in status
    assert status_schema_max_running() == state.MAX_RUNNING_TOOLS


def status_schema_max_running() -> int:
    result: int = schema("status.schema.json")["properties"]["tools_running"]["maxProperties"]
    return result


@pytest.mark.parametrize(
    "value",
    [
        "bca7eeb8-143f-469f-b7c4-3328c6a62bc0",
        "a",
        "A_b-9",
        "x" * 128,
        "x" * 129,
        "",
        "-a",
        "_a",
        "a.b",
        "a/b",
        "../a",
        "a b",
        "é",
        "١٢٣",
        "a\n",
        "ａ",
        ".a",
        "a" * 127 + "-",
    ],
)
def test_session_id_rule_is_the_documented_regex(value: str) -> None:
    documented = re.search(r"regular expression `(.*?)`", spec("layout.md"))
    assert documented is not None
    pattern = documented.group(1)
    assert schema("event.schema.json")["$defs"]["session_id"]["pattern"] == pattern
    assert schema("status.schema.json")["properties"]["session_id"]["pattern"] == pattern
    assert paths.valid_session_id(value) == bool(re.fullmatch(pattern.strip("^$"), value, re.ASCII))


def test_ts_is_fixed_width_and_sorts_in_time_order() -> None:
    pattern = schema("event.schema.json")["$defs"]["ts"]["pattern"]
    times = [
        0.0,
        0.5,
        0.999999,
        1.0,
        59.9999995,
        1_700_000_000.123456,
        1_700_000_000.9999999,
        4_102_444_799.0,
    ]
    stamps = [record.iso_utc(t) for t in times]
    assert all(re.fullmatch(pattern, s) and len(s) == 27 for s in stamps), stamps
    assert stamps == sorted(stamps)


def test_marker_is_as_documented() -> None:
    clip = record.Clipper(64)
    assert clip("prompt", "é" * 100) == "é" * 64 + "…[+36 chars]"
    assert clip.cut == {"prompt": 100}
    assert "`…[+N chars]`" in spec("events.md")


# --- the shell recipes --------------------------------------------------------------------------------


def _recipes() -> list[str]:
    out = []
    for name in ("layout.md", "status.md"):
        for block in re.findall(r"```sh\n(.*?)```", spec(name), re.DOTALL):
            out += [line for line in block.splitlines() if line and not line.startswith("#")]
    return out


def test_there_are_recipes() -> None:
    assert len(_recipes()) >= 12


@pytest.fixture(scope="module")
def recipe_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A HOME whose ~/.ccm holds every captured payload, a waiting session and a handler failure."""
    home = tmp_path_factory.mktemp("recipes")
    ccm = home / ".ccm"
    write_everything(ccm)
    env = {**ENV, "CCM_HOME": str(ccm)}
    for name in ("PreToolUse__Bash", "PermissionRequest__Bash_interactive"):
        run_hook(payload(name, session_id="waiting-1"), env=env)
    run_hook(b"not json", env=env, args=("PreToolUse",))  # so log/hooks.log has a line
    return home


# Recipes whose filter matches nothing in a fresh state dir: they must run cleanly, output is not expected.
QUIET = ("find events", "10 minutes ago")
BASH_SESSION = json.loads((FIXTURES / "payloads" / "PreToolUse__Bash.json").read_text())["session_id"]


# In CI a missing jq is a failure (dev-setup.sh installs it), elsewhere a skip.
@pytest.mark.skipif(
    shutil.which("jq") is None and not os.environ.get("CI"), reason="jq is not installed (apt install jq)"
)
@pytest.mark.parametrize("command", [c for c in _recipes() if not c.startswith("tail ")])
def test_recipe_runs_against_a_real_state_dir(command: str, recipe_home: Path) -> None:
    proc = subprocess.run(
        ["sh", "-c", command.replace("SESSION", BASH_SESSION)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "HOME": str(recipe_home)},  # the recipes say ~/.ccm
    )
    assert (proc.returncode, proc.stderr) == (0, ""), command
    if not any(q in command for q in QUIET):
        assert proc.stdout.strip(), command


def _slug(heading: str) -> str:
    # GitHub's anchors: lower case, punctuation dropped, spaces to hyphens.
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_links_between_spec_documents_resolve() -> None:
    for doc in SPEC.glob("*.md"):
        for target, anchor in re.findall(r"\]\(([\w./-]*?)(?:#([\w-]+))?\)", doc.read_text()):
            path = doc.parent / target if target else doc
            assert path.exists(), (doc.name, target)
            if anchor and path.suffix == ".md":
                headings = re.findall(r"^#+ (.*)$", path.read_text(), re.MULTILINE)
                assert anchor in {_slug(h) for h in headings}, (doc.name, target, anchor)
