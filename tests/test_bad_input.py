"""Whatever arrives on stdin and whatever state the disk is in, the handler exits 0 and prints nothing,
writes only under $CCM_HOME, and never writes an unbounded line."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.hookrun import HANDLER, payload, run_hook

GOOD = payload("PostToolUse__Bash")


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _assert_quiet(proc: subprocess.CompletedProcess[bytes]) -> None:
    assert proc.returncode == 0
    assert proc.stdout == b""
    assert proc.stderr == b""


def _logged_errors(home: Path) -> list[dict[str, Any]]:
    log = home / "log" / "hooks.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


BAD_STDIN = {
    "empty": b"",
    "not json": b"hello world\n",
    "truncated json": b'{"session_id": "abc", "hook_event_name": "Stop"',
    "json array": b"[1, 2, 3]",
    "json string": b'"just a string"',
    "null": b"null",
    "deeply nested": b'{"session_id":"abc","hook_event_name":"Stop","x":'
    + b"[" * 100_000
    + b"]" * 100_000
    + b"}",
}


@pytest.mark.parametrize("name", list(BAD_STDIN))
def test_unparseable_stdin_is_logged_not_raised(name: str, ccm_home: Path) -> None:
    _assert_quiet(run_hook(BAD_STDIN[name]))
    assert not (ccm_home / "events").exists() or not list((ccm_home / "events").iterdir())
    [entry] = _logged_errors(ccm_home)
    assert entry["error"] and entry["pid"] > 0


def test_invalid_utf8_is_recorded_with_replacement(ccm_home: Path) -> None:
    raw = json.dumps(payload("UserPromptSubmit__p", prompt="PLACEHOLDER")).encode()
    raw = raw.replace(b"PLACEHOLDER", b"caf\xc3\xa9 \xff\xfe bad")
    _assert_quiet(run_hook(raw))
    [line] = (ccm_home / "events" / f"{GOOD['session_id']}.jsonl").read_bytes().splitlines()
    line.decode("utf-8")  # the log itself is valid UTF-8
    assert json.loads(line)["prompt"] == "café \ufffd\ufffd bad"


def test_lone_surrogates_stay_valid_json_and_utf8(ccm_home: Path) -> None:
    raw = (
        b'{"session_id":"s","hook_event_name":"UserPromptSubmit","cwd":"/x","prompt":"a\\ud800b\\\\\\udc00"}'
    )
    _assert_quiet(run_hook(raw))
    line = (ccm_home / "events" / "s.jsonl").read_bytes()
    line.decode("utf-8")
    assert json.loads(line)["prompt"] == "a\ud800b\\\udc00"


@pytest.mark.parametrize(
    "changes",
    [
        {"cwd": None, "tool_name": None, "tool_input": None, "tool_use_id": None},
        {"cwd": 5, "tool_name": ["Bash"], "tool_input": "rm -rf /", "tool_use_id": {"a": 1}},
        {"duration_ms": "17", "tool_response": None},
        {"duration_ms": True, "tool_response": [1, 2]},
        {"hook_event_name": None},
        {"hook_event_name": 42},
        {"hook_event_name": "../../etc/passwd"},
        {
            "prompt": {"nested": ["x"] * 10},
            "last_assistant_message": 3.5,
            "error": {"type": "t", "message": 9},
        },
    ],
)
def test_wrong_types_never_crash(changes: dict[str, Any], ccm_home: Path) -> None:
    _assert_quiet(run_hook({**GOOD, **changes}))
    events = ccm_home / "events" / f"{GOOD['session_id']}.jsonl"
    if events.exists():
        rec = json.loads(events.read_text())
        assert isinstance(rec["event"], str) and rec["event"].isidentifier()
        for key in ("cwd", "tool_name", "tool_use_id"):
            assert rec.get(key) is None or isinstance(rec[key], str)
    else:
        assert _logged_errors(ccm_home)


@pytest.mark.parametrize(
    "session_id",
    [
        "../../x",
        "../escape",
        "/etc/passwd",
        "a/b",
        ".hidden",
        "..",
        "",
        "-rf",
        "café",
        "ＡＢＣ",  # fullwidth letters: alphanumeric to Python, not ASCII
        "a" * 129,
        "a\x00b",
        "a\nb",
        None,
        12345,
        ["a"],
    ],
)
def test_unsafe_session_ids_write_nothing_outside_home(
    session_id: Any, tmp_path: Path, ccm_home: Path
) -> None:
    before = _tree(tmp_path)
    _assert_quiet(run_hook({**GOOD, "session_id": session_id}))
    created = _tree(tmp_path) - before
    assert all(p.startswith("home/.ccm") for p in created), created
    assert not (ccm_home / "events").exists() or not list((ccm_home / "events").iterdir())
    assert _logged_errors(ccm_home)


def test_20mb_tool_response_gives_a_bounded_line(ccm_home: Path) -> None:
    data = payload("PostToolUse__Read")
    data["tool_response"]["file"]["content"] = "y" * (20 * 1024 * 1024)
    data["tool_input"]["file_path"] = "/very/" + "long/" * 5000 + "path"
    _assert_quiet(run_hook(data))
    raw = (ccm_home / "events" / f"{data['session_id']}.jsonl").read_bytes()
    assert len(raw) < 10_000
    rec = json.loads(raw)
    assert rec["tool_input"]["file_path"].endswith("chars]")
    assert "tool_input.file_path" in rec["truncated"]


def test_every_free_text_field_at_once_stays_bounded(ccm_home: Path) -> None:
    huge = "z" * 3_000_000
    data = {**payload("StopFailure__http400"), "last_assistant_message": huge, "error": huge, "cwd": huge}
    data["cwd"] = "\x01" * 3_000_000  # 6 bytes each once JSON-escaped
    _assert_quiet(run_hook(data, env={"CCM_FIELD_CAP": "999999999"}))
    raw = (ccm_home / "events" / f"{data['session_id']}.jsonl").read_bytes()
    assert len(raw) <= 1 << 20  # the hard line bound, whatever the configured cap
    rec = json.loads(raw)
    assert rec["event"] == "StopFailure" and rec["error"].startswith("zzz")
    assert rec["truncated"] == {"cwd": 3_000_000, "last_assistant_message": 3_000_000, "error": 3_000_000}
    # The status was computed from exactly the record that was written.
    status = json.loads((ccm_home / "status" / f"{data['session_id']}.json").read_text())
    assert status["state"] == "error" and status["cwd"] == rec["cwd"]


@pytest.mark.parametrize("kind", ["file", "dangling symlink", "not writable"])
def test_unusable_state_dir(kind: str, tmp_path: Path) -> None:
    home = tmp_path / "state"
    if kind == "file":
        home.write_text("I am a file")
    elif kind == "dangling symlink":
        home.symlink_to(tmp_path / "nowhere" / "deeper")
    else:
        home.mkdir()
        (home / "events").write_text("a file where a directory should be")
        (home / "locks").mkdir()
    _assert_quiet(run_hook(GOOD, env={"CCM_HOME": str(home)}))


def test_disk_full_fails_open(ccm_home: Path) -> None:
    """RLIMIT_FSIZE makes writes fail with EFBIG, as a full disk fails them with ENOSPC."""
    run_hook(GOOD)  # the layout exists and the log has one record

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (400, 400))

    proc = subprocess.run(
        [HANDLER],
        input=json.dumps(GOOD).encode(),
        capture_output=True,
        preexec_fn=limit,
        timeout=60,
        env=os.environ.copy(),
    )
    _assert_quiet(proc)
    # A later, healthy handler still appends a whole record on its own line.
    _assert_quiet(run_hook(GOOD))
    lines = (ccm_home / "events" / f"{GOOD['session_id']}.jsonl").read_bytes().split(b"\n")
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            continue
    assert parsed[0]["seq"] == 1 and parsed[-1]["event"] == "PostToolUse"
    assert json.loads(lines[-2])["seq"] == parsed[-1]["seq"]


def test_non_finite_numbers_are_written_as_strings(ccm_home: Path) -> None:
    raw = (
        b'{"session_id":"s","hook_event_name":"PreToolUse","cwd":"/x","tool_name":"mcp__x__y",'
        b'"tool_use_id":"t","tool_input":{"a":NaN,"b":Infinity,"c":-Infinity,"d":1.5}}'
    )
    _assert_quiet(run_hook(raw))
    line = (ccm_home / "events" / "s.jsonl").read_text()
    assert "NaN" not in line.replace('"NaN"', "")  # no bare token: strict JSON parsers accept the line
    rec = json.loads(line, parse_constant=lambda c: pytest.fail(f"bare {c}"))
    assert rec["tool_input"] == {"a": "nan", "b": "inf", "c": "-inf", "d": 1.5}


def test_huge_keys_of_unknown_tool_inputs_stay_bounded(ccm_home: Path) -> None:
    data = {
        **payload("PreToolUse__Bash"),
        "tool_name": "mcp__x__y",
        "tool_input": {"k" * 100_000: "v" * 100_000},
    }
    _assert_quiet(run_hook(data))
    raw = (ccm_home / "events" / f"{data['session_id']}.jsonl").read_bytes()
    assert len(raw) < 2_000


def test_removed_subdirectories_are_recreated_and_no_event_is_lost(ccm_home: Path) -> None:
    import shutil

    run_hook(GOOD)
    shutil.rmtree(ccm_home / "events")
    shutil.rmtree(ccm_home / "status")
    _assert_quiet(run_hook(GOOD))
    assert (ccm_home / "events" / f"{GOOD['session_id']}.jsonl").exists()
    assert (ccm_home / "status" / f"{GOOD['session_id']}.json").exists()
