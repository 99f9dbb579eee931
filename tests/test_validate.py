"""`ccm-hooks validate`: a state dir written by the real handler passes; each kind of damage is reported."""

from __future__ import annotations

import copy
import fcntl
import json
import os
import random
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ccm_hooks.commands import schemacheck, validate, validatelog
from ccm_hooks.errors import CcmError
from tests.hookrun import FIXTURES, FULL_ENV, payload, run_hook, spawn_hook

PAYLOADS = sorted((FIXTURES / "payloads").glob("*.json"))
ENV = FULL_ENV
SID = "5e55a000-0000-4000-8000-00000000000a"
LINE = re.compile(r"^/.+?(:\d+)?: (error|warning): .+$")


def run_all(home: Path, names: list[str] | None = None, sid: str | None = None, **env: str) -> None:
    """Feed payloads to the real handler, in order, as Claude Code would."""
    for name in names if names is not None else [p.stem for p in PAYLOADS]:
        data = payload(name, **({"session_id": sid} if sid else {}))
        proc = run_hook(data, env={**ENV, "CCM_HOME": str(home), **env})
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"", b"")


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state dir holding every captured payload, written once per module (47 handler runs)."""
    home = tmp_path_factory.mktemp("written") / ".ccm"
    run_all(home)
    return home


@pytest.fixture
def home(written: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(written, copy, symlinks=True)  # copy2 + copystat: modes are kept
    return copy


def check(home: Path | None, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    code = validate.validate_cmd(home)
    lines = capsys.readouterr().out.splitlines()
    for line in lines[:-1]:
        assert LINE.match(line), line
    assert re.search(r": (ok|FAILED): \d+ sessions, \d+ records, \d+ errors, \d+ warnings$", lines[-1])
    return code, lines


def problems(lines: list[str], kind: str) -> list[str]:
    return [line for line in lines[:-1] if f": {kind}: " in line]


def a_log(home: Path, min_lines: int = 3) -> Path:
    return next(
        p for p in sorted((home / "events").glob("*.jsonl")) if len(p.read_bytes().splitlines()) >= min_lines
    )


def edit_line(path: Path, index: int, change: Callable[[dict[str, Any]], object]) -> None:
    lines = path.read_text().splitlines()
    rec = json.loads(lines[index])
    change(rec)
    lines[index] = json.dumps(rec, ensure_ascii=False, separators=(",", ":"))
    path.write_text("\n".join(lines) + "\n")


# --- what the handler writes is valid ------------------------------------------------------------------


def test_every_captured_payload_gives_a_valid_state_dir(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, lines = check(home, capsys)
    assert (code, lines[:-1]) == (0, [])
    sessions = {json.loads(p.read_text())["session_id"] for p in PAYLOADS}
    assert f"{len(sessions)} sessions, {len(PAYLOADS)} records, 0 errors, 0 warnings" in lines[-1]


SCRIPT = [
    "SessionStart__startup_interactive",
    "InstructionsLoaded__session_start",
    "UserPromptSubmit__interactive_continue",
    "PreToolUse__Bash",
    "PermissionRequest__Bash_interactive",
    "Notification__permission_prompt",
    "PostToolUse__Bash",
    "PostToolBatch__Read",
    "PreToolUse__Agent",
    "SubagentStart__general_purpose",
    "PreToolUse__Bash_inside_subagent",
    "SubagentStop__first",
    "PostToolUse__Agent",
    "PreToolUse__Edit",
    "PostToolUseFailure__Bash_exit3",
    "Stop__first",
    "Notification__idle_prompt",
    "PreCompact__manual",
    "SubagentStop__compaction_agent_empty_type",
    "PostCompact__manual",
    "SessionStart__compact",
    "UserPromptSubmit__p",
    "StopFailure__http400",
    "SessionEnd__prompt_input_exit",
    "PreToolUse__Read",
    "SessionStart__resume_p",
    "Stop__after_block",
]


def test_a_whole_session_in_order_and_parallel_tools_validate(
    ccm_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_all(ccm_home, SCRIPT, sid=SID)
    # Parallel tool calls: handlers race for the lock, records land out of ts order, some are stale.
    for kind in ("PreToolUse__Bash", "PostToolUse__Bash"):
        procs = [spawn_hook(payload(kind, session_id=SID, tool_use_id=f"toolu_p{i}"), ENV) for i in range(8)]
        assert all(p.wait(timeout=60) == 0 for p in procs)
    code, lines = check(None, capsys)  # None: $CCM_HOME, which conftest points at ccm_home
    assert (code, lines[:-1]) == (0, [])
    assert f"1 sessions, {len(SCRIPT) + 16} records" in lines[-1]


def test_clipped_fields_validate(ccm_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    long = "é" * 150 + "\n" + "x" * 150
    run_hook(payload("UserPromptSubmit__p", session_id=SID, prompt=long), env={"CCM_FIELD_CAP": "64"})
    mcp = {"title": long, "n": 3, "ok": True, "nothing": None, "k" * 300: long}
    run_hook(payload("PreToolUse__Bash", session_id=SID, tool_name="mcp__x__y", tool_input=mcp))
    run_hook(payload("PreToolUse__Bash", session_id=SID, tool_input={"command": long * 20}))
    recs = [json.loads(line) for line in (ccm_home / "events" / f"{SID}.jsonl").read_text().splitlines()]
    assert [sorted(r["truncated"]) for r in recs] == [
        ["prompt"],
        ["tool_input." + "k" * 200, "tool_input.title"],  # keys are cut to 200 characters, here too
        ["tool_input.command"],
    ]
    code, lines = check(ccm_home, capsys)
    assert (code, lines[:-1]) == (0, [])


def test_a_reclipped_record_is_valid_and_replays(ccm_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # 100k control characters escape to 600 kB each: over 1 MiB, so the record is re-clipped.
    huge = {"prompt": "\x01" * 100_000, "cwd": "/p/" + "\x02" * 90_000}
    run_all(ccm_home, ["SessionStart__startup_p"], sid=SID)
    run_hook(payload("UserPromptSubmit__p", session_id=SID, **huge), env={"CCM_FIELD_CAP": "100000"})
    last = json.loads((ccm_home / "events" / f"{SID}.jsonl").read_text().splitlines()[-1])
    assert last["truncated"] == {"prompt": 100_000, "cwd": 90_003}
    assert last["prompt"].endswith("…[+99800 chars]")
    code, lines = check(ccm_home, capsys)
    assert (code, lines[:-1]) == (0, [])


# --- damage is reported -----------------------------------------------------------------------------


def damage_garbage_line(home: Path) -> str:
    log = a_log(home)
    lines = log.read_text().splitlines()
    log.write_text("\n".join([lines[0], "hello, world", *lines[1:]]) + "\n")
    return f"{log}:2: error: not a JSON line"


def damage_unknown_field(home: Path) -> str:
    log = a_log(home)
    edit_line(log, 1, lambda r: r.update(surprise=1))
    return f"{log}:2: error: (record): Additional properties are not allowed ('surprise' was unexpected)"


def damage_missing_field(home: Path) -> str:
    log = a_log(home)
    edit_line(log, 0, lambda r: r.pop("ts"))
    return f"{log}:1: error: (record): 'ts' is a required property"


def damage_field_on_wrong_event(home: Path) -> str:
    log = a_log(home)
    edit_line(log, 0, lambda r: r.update(prompt="hi", event="Stop"))
    return f"{log}:1: error: event: 'UserPromptSubmit' was expected"


def damage_seq_gap(home: Path) -> str:
    log = a_log(home)
    edit_line(log, 2, lambda r: r.update(seq=r["seq"] + 5))
    return f"{log}:3: error: seq 8 after 2: 5 records missing"


def damage_seq_duplicate(home: Path) -> str:
    log = a_log(home)
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join([lines[0], lines[1], lines[1], *lines[2:]]))
    return f"{log}:3: error: seq 2 after 2: not strictly increasing (duplicate or reorder)"


def damage_first_seq(home: Path) -> str:
    log = a_log(home)
    log.write_text("".join(log.read_text().splitlines(keepends=True)[1:]))
    return f"{log}:1: error: the first record has seq 2, not 1"


def damage_session_id(home: Path) -> str:
    log = a_log(home)
    edit_line(log, 1, lambda r: r.update(session_id="another-session"))
    return f"{log}:2: error: session_id 'another-session' is not the file's name"


def damage_nan(home: Path) -> str:
    log = a_log(home)
    lines = log.read_text().splitlines()
    lines[0] = lines[0][:-1] + ',"duration_ms":NaN}'
    log.write_text("\n".join(lines) + "\n")
    return f"{log}:1: error: NaN is not JSON (RFC 8259); strict parsers reject the line"


def damage_marker(home: Path) -> str:
    log = a_log(home)
    edit_line(log, 0, lambda r: r.update(truncated={"cwd": 5000}))
    return f"{log}:1: error: truncated.cwd is 5000, but cwd lacks a matching '…[+N chars]'"


def damage_file_mode(home: Path) -> str:
    log = a_log(home)
    log.chmod(0o644)
    return f"{log}: error: mode 0644: open to others; it holds prompts and commands (want 0600)"


def damage_dir_mode(home: Path) -> str:
    (home / "status").chmod(0o755)
    return f"{home}/status: error: mode 0755: readable by others (want 0700)"


def damage_root_writable(home: Path) -> str:
    home.chmod(0o777)
    return f"{home}: error: mode 0777: writable by others, who could forge status (want 0700)"


def damage_file_name(home: Path) -> str:
    (home / "events" / "not a session.jsonl").write_text("")
    return (
        f"{home}/events/not a session.jsonl: error: unexpected name: want <session id>.jsonl (spec/layout.md)"
    )


def damage_stray_file(home: Path) -> str:
    (home / "status" / "notes.txt").write_text("")
    return f"{home}/status/notes.txt: error: unexpected name: want <session id>.json (spec/layout.md)"


def damage_symlink(home: Path) -> str:
    target = home / "events" / "zz-link.jsonl"
    target.symlink_to(a_log(home))
    return f"{target}: error: a symlink: the handler opens files with O_NOFOLLOW and will fail on it"


def _status_of(home: Path) -> Path:
    return home / "status" / (a_log(home).stem + ".json")


def damage_status_state(home: Path) -> str:
    path = _status_of(home)
    status = json.loads(path.read_text())
    real = status["state"]
    status["state"] = "idle" if real != "idle" else "working"
    path.write_text(json.dumps(status))
    return f"{path}: error: differs from the replay of the log: state is '{status['state']}', replay '{real}'"


def damage_status_seq(home: Path) -> str:
    path = _status_of(home)
    status = json.loads(path.read_text())
    seq = status["seq"]
    path.write_text(json.dumps({**status, "seq": seq + 1}))
    return f"{path}: error: seq {seq + 1}, but the log's last good record has seq {seq}"


def damage_status_schema(home: Path) -> str:
    path = _status_of(home)
    status = json.loads(path.read_text())
    path.write_text(json.dumps({**status, "state": "sleeping"}))
    return f"{path}: error: state: 'sleeping' is not one of"


def damage_status_not_json(home: Path) -> str:
    path = _status_of(home)
    path.write_text(path.read_text()[:40])
    return f"{path}: error: not JSON"


DAMAGE = [
    damage_garbage_line,
    damage_unknown_field,
    damage_missing_field,
    damage_field_on_wrong_event,
    damage_seq_gap,
    damage_seq_duplicate,
    damage_first_seq,
    damage_session_id,
    damage_nan,
    damage_marker,
    damage_file_mode,
    damage_dir_mode,
    damage_root_writable,
    damage_file_name,
    damage_stray_file,
    damage_symlink,
    damage_status_state,
    damage_status_seq,
    damage_status_schema,
    damage_status_not_json,
]


@pytest.mark.parametrize("damage", DAMAGE, ids=[d.__name__[len("damage_") :] for d in DAMAGE])
def test_damage_is_an_error(
    damage: Callable[[Path], str], home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = damage(home)
    code, lines = check(home, capsys)
    assert code == 1
    assert any(line.startswith(expected) for line in lines), "\n".join(lines)
    assert "FAILED" in lines[-1]


def warn_torn_tail(home: Path) -> str:
    log = a_log(home)
    number = len(log.read_text().splitlines()) + 1
    with log.open("ab") as fh:
        fh.write(b'{"v":1,"ts":"2026-11-21T05:4')  # a write in progress, or a writer killed mid-line
    return f"{log}:{number}: warning: torn: no newline"


def warn_repaired_fragment(home: Path) -> str:
    log = a_log(home)
    number = len(log.read_text().splitlines()) + 1
    with log.open("ab") as fh:
        fh.write(b'{"v":1,"ts":"2026-11-21T05:4')
    sid = log.stem
    # The next handler of that session ends the fragment with a newline and appends a whole record.
    run_all(home, ["Stop__first"], sid=sid)
    assert json.loads(log.read_text().splitlines()[-1])["event"] == "Stop"
    return f"{log}:{number}: warning: a record cut short by a writer that died"


def warn_root_readable(home: Path) -> str:
    home.chmod(0o755)
    return f"{home}: warning: mode 0755: readable by others (want 0700)"


def warn_missing_status(home: Path) -> str:
    path = _status_of(home)
    path.unlink()
    return f"{path}: warning: missing; the next hook event rebuilds it from the log"


def warn_handler_failures(home: Path) -> str:
    proc = run_hook(b"not json", env={"CCM_HOME": str(home)}, args=("PreToolUse",))
    assert (proc.returncode, proc.stdout) == (0, b"")
    return f"{home}/log/hooks.log: warning: 1 handler failures (events lost); last at "


WARNINGS = [
    warn_torn_tail,
    warn_repaired_fragment,
    warn_root_readable,
    warn_missing_status,
    warn_handler_failures,
]


@pytest.mark.parametrize("damage", WARNINGS, ids=[d.__name__[len("warn_") :] for d in WARNINGS])
def test_legitimate_states_are_warnings(
    damage: Callable[[Path], str], home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = damage(home)
    code, lines = check(home, capsys)
    assert (code, problems(lines, "error")) == (0, [])
    assert any(line.startswith(expected) for line in lines), "\n".join(lines)


def test_temp_files_are_ignored(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (home / "status" / f".{SID}.json.4242.tmp").write_text("{half a stat")
    (home / "events" / ".hidden").write_text("x")
    code, lines = check(home, capsys)
    assert (code, lines[:-1]) == (0, [])


def test_a_busy_session_is_checked_without_its_lock(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(validatelog, "LOCK_WAIT_S", 0.05)
    lock = home / "locks" / (a_log(home).stem + ".lock")
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as a handler in its critical section
        code, lines = check(home, capsys)
    finally:
        os.close(fd)
    assert code == 0
    assert problems(lines, "warning") == [f"{lock}: warning: session busy; checked without the lock"]


def test_a_missing_or_wrong_dir_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(CcmError, match=r"^state dir .*/nowhere does not exist; no hook has run yet"):
        validate.validate_cmd(tmp_path / "nowhere")
    (tmp_path / "file").write_text("")
    with pytest.raises(CcmError, match=r"/file is not a directory"):
        validate.validate_cmd(tmp_path / "file")


def test_cli_exit_codes(home: Path, tmp_path: Path) -> None:
    cli = str(Path(sys.executable).parent / "ccm-hooks")
    ok = subprocess.run([cli, "validate", "--home", str(home)], capture_output=True, text=True, timeout=60)
    assert (ok.returncode, ok.stderr) == (0, "") and ": ok: " in ok.stdout
    damage_seq_gap(home)
    bad = subprocess.run([cli, "validate", "--home", str(home)], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "records missing" in bad.stdout
    gone = subprocess.run([cli, "validate", "--home", str(tmp_path / "x")], capture_output=True, text=True)
    assert gone.returncode == 1 and gone.stdout == ""
    assert gone.stderr.startswith("ccm-hooks: state dir ") and gone.stderr.count("\n") == 1


# --- the fast check gives jsonschema's verdicts ---------------------------------------------------------


def test_the_fast_check_was_written_against_these_schemas() -> None:
    """If this fails, a schema changed: re-read schemacheck.event_ok/status_ok against it (they must never
    accept what the schema rejects), then put the new fingerprint in SCHEMA_FINGERPRINTS. Until then the
    fast check steps aside and validate runs jsonschema on everything (correct, slower)."""
    for name, expected in schemacheck.SCHEMA_FINGERPRINTS.items():
        schema = json.loads((FIXTURES.parent.parent / "spec" / "schemas" / name).read_text())
        assert schemacheck.fingerprint(schema) == expected, name


def corpus(home: Path) -> tuple[list[Any], list[Any]]:
    records = [
        json.loads(x) for p in sorted((home / "events").glob("*.jsonl")) for x in p.read_text().splitlines()
    ]
    statuses = [json.loads(p.read_text()) for p in sorted((home / "status").glob("*.json"))]
    return records, statuses


ODD_VALUES: list[Any] = [None, 0, 1, -1, 1.0, 2.5, True, False, "", "x", "Bash",
                         "2026-11-21T05:47:37.042923Z",
                         "2026-11-21T05:47:37.042923Z\n", [], {}, {"a": 1}, "ccm.watch", "PostToolUse",
                         "a" * 201, 10001, "idle", "waiting", {"item": "i", "kind": "queued", "seq": 3},
                         {"item": None, "kind": None, "seq": 0}]  # fmt: skip


def mutations(obj: dict[str, Any], rng: random.Random, n: int) -> list[dict[str, Any]]:
    out = []
    keys = list(obj)
    extra = ["surprise", "by", "watch", "ok", "exit_code", "interrupted", "prompt", "reason", "tool_input",
             "truncated", "duration_ms", "error", "tool_name", "source", "typing"]  # fmt: skip
    for _ in range(n):
        m = copy.deepcopy(obj)
        for _ in range(rng.randint(1, 3)):
            choice = rng.random()
            if choice < 0.3 and keys:
                m.pop(rng.choice(keys), None)
            elif choice < 0.6:
                m[rng.choice(keys + extra)] = rng.choice(ODD_VALUES)
            else:
                nested = [k for k, v in m.items() if isinstance(v, dict) and v]
                if nested:
                    inner = m[rng.choice(nested)]
                    key = rng.choice([*inner, "surprise", "command", "file_path", "stopped", "turn", "seq"])
                    if rng.random() < 0.3:
                        inner.pop(key, None)
                    else:
                        inner[key] = rng.choice(ODD_VALUES)
        out.append(m)
    return out


def test_the_fast_check_never_vouches_for_what_jsonschema_rejects(written: Path) -> None:
    rng = random.Random(9)
    records, statuses = corpus(written)
    events, status_schema = validatelog.schema("event.schema.json"), validatelog.schema("status.schema.json")
    vouched = 0
    for originals, fast, schema in (
        (records, schemacheck.event_ok, events),
        (statuses, schemacheck.status_ok, status_schema),
    ):
        for obj in originals:
            for candidate in [obj, *mutations(obj, rng, 150)]:
                if fast(candidate):
                    vouched += 1
                    assert list(schema.iter_errors(candidate)) == [], candidate
    assert vouched > len(records) + len(statuses)
    # And it vouches for every plain record the handler writes (that is where the speed comes from).
    assert all(schemacheck.event_ok(r) for r in records if not r["event"].startswith("ccm."))
    assert all(schemacheck.status_ok(s) for s in statuses)


@pytest.mark.parametrize("damage", [*DAMAGE, *WARNINGS], ids=lambda d: d.__name__)
def test_the_same_report_with_and_without_the_fast_check(
    damage: Callable[[Path], str],
    home: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    damage(home)
    reports = []
    for fast in (True, False):
        monkeypatch.setattr(validatelog, "FAST", fast)
        reports.append(check(home, capsys))
    assert reports[0] == reports[1]


# --- the whole layout is known ----------------------------------------------------------------------------


def test_ccm_own_files_are_part_of_the_layout(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("queue/done", "agentd", "bin", "backups/abc"):
        (home / name).mkdir(mode=0o700, parents=True)
    for name in ("queue/1700000000-abcd.json", "queue/done/1699999999-abcd.json", "agentd/health.json",
                 "agentd/agentd.lock", "config.toml", "config.toml.bak", "config.snapshot.json",
                 "log/agentd.log", "log/notify.log", "locks/config.lock",
                 "locks/settings-abc.lock"):  # fmt: skip
        (home / name).write_text("{}")
        (home / name).chmod(0o600)
    for d in ("queue", "backups"):
        (home / d).chmod(0o700)
    code, lines = check(home, capsys)
    assert (code, lines[:-1]) == (0, [])
    (home / "agentd" / "metrics.prom").write_text("")
    (home / "agentd" / "metrics.prom").chmod(0o644)
    (home / "mystery").write_text("")
    code, lines = check(home, capsys)
    assert f"{home}/agentd/metrics.prom: error: mode 0644" in "\n".join(lines)
    assert f"{home}/mystery: warning: not part of the layout" in "\n".join(lines)


def test_validate_memory_does_not_grow_with_the_log(ccm_home: Path) -> None:
    """A 60 MB log checks in bounded memory (streamed) and at a cost per record far below jsonschema's."""
    run_all(ccm_home, ["SessionStart__startup_p", "UserPromptSubmit__p"], sid=SID)
    log = ccm_home / "events" / f"{SID}.jsonl"
    lines = log.read_text().splitlines()
    last = json.loads(lines[-1])
    n = 150_000
    with log.open("a") as fh:
        for i in range(1, n + 1):
            rec = {**last, "seq": last["seq"] + i, "event": "Notification",
                   "notification_type": "idle_prompt", "message": "m" * 300}  # fmt: skip
            rec.pop("prompt", None)
            fh.write(json.dumps(rec, separators=(",", ":")) + "\n")
    (ccm_home / "status" / f"{SID}.json").unlink()  # no replay comparison needed here
    # Peak RSS from VmHWM: ru_maxrss would count the pages of the (large) pytest process it forked from.
    probe = (
        "import re, sys, time; from ccm_hooks.commands import validate\n"
        "t = time.process_time(); validate.validate_cmd(None); t = time.process_time() - t\n"
        "hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)\n"
        "print('RSS', hwm, 'CPU', t, file=sys.stderr)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=600)
    _, rss_kb, _, cpu = out.stderr.split()
    assert f"{n + 2} records, 0 errors" in out.stdout, out.stdout[-500:]
    assert int(rss_kb) < 60_000, rss_kb  # the log is 60 MB; a bare python is ~10 MB
    assert float(cpu) / n < 60e-6, cpu  # jsonschema alone costs ~500 us a record
