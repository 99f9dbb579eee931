"""`ccm-hooks status` and `ccm-hooks events`, run as a user runs them, while handlers write."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ccm_hooks.commands.error_boundary import run_command
from tests.hookrun import payload, run_hook

CLI = str(Path(sys.executable).parent / "ccm-hooks")
A = "aaaaaaaa-0000-4000-8000-000000000001"
B = "bbbbbbbb-0000-4000-8000-000000000002"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=60)


def _two_sessions() -> None:
    for name in ("SessionStart__startup_p", "UserPromptSubmit__p", "PreToolUse__Bash", "PostToolUse__Bash"):
        run_hook(payload(name, session_id=A), env={"CLAUDE_PROJECT_DIR": "/src/alpha"})
    run_hook(payload("Stop__first", session_id=A), env={"CLAUDE_PROJECT_DIR": "/src/alpha"})
    for name in ("SessionStart__startup_interactive", "PermissionRequest__Bash_interactive"):
        run_hook(payload(name, session_id=B), env={"CLAUDE_PROJECT_DIR": "/src/beta"})


def test_status_lists_sessions_newest_first(ccm_home: Path) -> None:
    _two_sessions()
    out = cli("status")
    assert out.returncode == 0, out.stderr
    header, first, second = out.stdout.splitlines()
    assert header.split()[:3] == ["SESSION", "STATE", "PROJECT"]
    assert first.split()[:3] == [B[:8], "waiting", "beta"]
    assert "permission: Bash: echo hello > out.txt" in first
    assert second.split()[:4] == [A[:8], "idle", "alpha", "Bash"]
    assert "» All done." in second


def test_status_json_is_an_array_of_status_objects(ccm_home: Path) -> None:
    _two_sessions()
    out = cli("status", "--json")
    data = json.loads(out.stdout)
    assert [s["session_id"] for s in data] == [B, A]
    assert data[1]["counters"]["tool_uses"] == 1


def test_status_with_nothing_recorded_says_what_to_do(ccm_home: Path) -> None:
    out = cli("status")
    assert out.returncode == 0 and "ccm-hooks install" in out.stdout


def test_events_json_is_jq_ready_and_filterable(ccm_home: Path) -> None:
    _two_sessions()
    lines = cli("events", "--json").stdout.splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 7
    assert [r["seq"] for r in records if r["session_id"] == A] == [1, 2, 3, 4, 5]
    only = [json.loads(x) for x in cli("events", "--json", "-s", "aaaa", "-e", "Stop").stdout.splitlines()]
    assert [(r["session_id"], r["event"]) for r in only] == [(A, "Stop")]
    assert cli("events", "--json", "--since", "1h").stdout.count("\n") == 7
    assert cli("events", "--json", "--since", "2999-01-01T00:00Z").stdout == ""


def test_events_human_format(ccm_home: Path) -> None:
    _two_sessions()
    out = cli("events", "-s", A[:4]).stdout.splitlines()
    assert "UserPromptSubmit" in out[1] and "'please RUNTOOL now'" in out[1]
    assert "PostToolUse" in out[3] and "Bash: echo hello > out.txt ok 17ms" in out[3]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("events", "-s", "zzz"), "no session matches 'zzz'"),
        (("events", "--since", "yesterday"), "--since 'yesterday' is neither"),
    ],
)
def test_expected_errors_are_one_line_exit_1(ccm_home: Path, args: tuple[str, ...], message: str) -> None:
    _two_sessions()
    out = cli(*args)
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1 and message in out.stderr and "Traceback" not in out.stderr


def test_ambiguous_prefix_is_refused(ccm_home: Path) -> None:
    for sid in ("abc-1", "abc-2"):
        run_hook(payload("Stop__first", session_id=sid))
    out = cli("events", "-s", "abc")
    assert out.returncode == 1 and "matches 2 sessions" in out.stderr


def test_readers_skip_a_torn_last_line(ccm_home: Path) -> None:
    _two_sessions()
    with open(ccm_home / "events" / f"{A}.jsonl", "ab") as fh:
        fh.write(b'{"v":1,"seq":6,"event":"Pre')  # a writer mid-line
    records = [json.loads(x) for x in cli("events", "--json", "-s", A).stdout.splitlines()]
    assert [r["seq"] for r in records] == [1, 2, 3, 4, 5]


def test_events_follow_prints_new_records_as_they_arrive(ccm_home: Path) -> None:
    run_hook(payload("SessionStart__startup_p", session_id=A))
    proc = subprocess.Popen([CLI, "events", "--follow", "--json"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert json.loads(proc.stdout.readline())["event"] == "SessionStart"
        started = time.monotonic()
        run_hook(payload("UserPromptSubmit__p", session_id=A))
        run_hook(payload("Stop__first", session_id=B))  # a session that did not exist when follow started
        got = {json.loads(proc.stdout.readline())["event"] for _ in range(2)}
        assert got == {"UserPromptSubmit", "Stop"}
        assert time.monotonic() - started < 4  # pushed by inotify, not found by the 5 s rescan
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_events_into_a_closed_pipe_is_not_an_error(ccm_home: Path) -> None:
    for i in range(50):
        run_hook(payload("PreToolUse__Bash", session_id=A, tool_use_id=f"t{i}"))
    out = subprocess.run(
        f"{CLI} events | head -1", shell=True, capture_output=True, text=True, timeout=60, env=os.environ
    )
    assert out.stdout.count("\n") == 1 and out.stderr == ""


def test_unexpected_errors_exit_3_with_a_pointer_to_the_log(
    ccm_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken() -> int:
        raise NotADirectoryError("a bug somewhere")

    assert run_command(broken) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert str(ccm_home / "log" / "cli.log") in err
    assert "NotADirectoryError: a bug somewhere" in (ccm_home / "log" / "cli.log").read_text()


# --- one session in seq order, --since, -n, --follow from the end ---------------------------------------


def _rewrite_ts(sid: str, shift: dict[int, float]) -> None:
    """Move some records' ts (by seq) as parallel handlers do: file order stays, ts goes out of order."""
    from ccm_hooks.record import iso_utc
    from ccm_hooks.statedir.timefmt import parse_ts

    path = Path(os.environ["CCM_HOME"]) / "events" / f"{sid}.jsonl"
    out = []
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        if rec["seq"] in shift:
            rec["ts"] = iso_utc((parse_ts(rec["ts"]) or 0) + shift[rec["seq"]])
        out.append(json.dumps(rec, ensure_ascii=False, separators=(",", ":")))
    path.write_text("\n".join(out) + "\n")


def test_one_session_is_printed_in_seq_order_even_where_ts_is_not(ccm_home: Path) -> None:
    _two_sessions()
    _rewrite_ts(A, {2: 30.0, 4: -30.0})  # record 2 claims a later start than 3, record 4 an earlier one
    for args in (("events", "--json", "-s", A[:6]), ("events", "--json", "-s", A, "-n", "4")):
        seqs = [json.loads(x)["seq"] for x in cli(*args).stdout.splitlines()]
        assert seqs == sorted(seqs) and seqs[-1] == 5
    text = cli("events", "-s", A).stdout.splitlines()
    assert [line.split()[2] for line in text] == ["#1", "#2", "#3", "#4", "#5"]
    # Merged with another session, each session still keeps its own order.
    merged = [json.loads(x) for x in cli("events", "--json").stdout.splitlines()]
    assert [r["seq"] for r in merged if r["session_id"] == A] == [1, 2, 3, 4, 5]


def test_lines_gives_the_last_records_in_order(ccm_home: Path) -> None:
    _two_sessions()
    everything = cli("events", "--json").stdout.splitlines()
    assert cli("events", "--json", "-n", "3").stdout.splitlines() == everything[-3:]
    assert cli("events", "--json", "-n", "0").stdout == ""
    assert cli("events", "--json", "-n", "100").stdout.splitlines() == everything
    only = [
        json.loads(x)["event"]
        for x in cli("events", "--json", "-n", "1", "-e", "SessionStart").stdout.splitlines()
    ]
    assert only == ["SessionStart"]


def test_follow_starts_at_the_end_like_tail(ccm_home: Path) -> None:
    for i in range(30):
        run_hook(payload("PreToolUse__Bash", session_id=A, tool_use_id=f"t{i}"))
    proc = subprocess.Popen(
        [CLI, "events", "--follow", "--json", "-n", "2"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        first = [json.loads(proc.stdout.readline())["seq"] for _ in range(2)]
        assert first == [29, 30]  # the last two, not the whole history
        run_hook(payload("Stop__first", session_id=A))
        assert json.loads(proc.stdout.readline())["seq"] == 31
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_follow_reads_a_burst_bigger_than_its_buffers(ccm_home: Path) -> None:
    """A log that grows by megabytes between two wake-ups is read in chunks, every record once."""
    run_hook(payload("SessionStart__startup_p", session_id=A))
    proc = subprocess.Popen(
        [CLI, "events", "--follow", "--json", "-n", "0"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        time.sleep(0.5)  # not synchronisation: only makes it likely the burst lands between two reads
        log = ccm_home / "events" / f"{A}.jsonl"
        last = json.loads(log.read_text().splitlines()[-1])
        burst = [
            {**last, "seq": last["seq"] + i, "event": "Notification", "message": "m" * 3000}
            for i in range(1, 1501)
        ]
        with log.open("a") as fh:
            fh.write("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in burst))
        got = [json.loads(proc.stdout.readline())["seq"] for _ in burst]
        assert got == [r["seq"] for r in burst]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_since_seeks_and_agrees_with_a_full_scan(ccm_home: Path) -> None:
    _two_sessions()
    every = [json.loads(x) for x in cli("events", "--json").stdout.splitlines()]
    cut = sorted(r["ts"] for r in every)[3]
    got = [json.loads(x) for x in cli("events", "--json", "--since", cut).stdout.splitlines()]
    assert got == [r for r in every if r["ts"] >= cut]


# --- status --active, --project, --json -----------------------------------------------------------------


def test_status_active_and_project(ccm_home: Path) -> None:
    _two_sessions()
    run_hook(payload("SessionEnd__clear", session_id=A), env={"CLAUDE_PROJECT_DIR": "/src/alpha"})
    assert [line.split()[0] for line in cli("status").stdout.splitlines()[1:]] == [A[:8], B[:8]]
    assert [line.split()[0] for line in cli("status", "--active").stdout.splitlines()[1:]] == [B[:8]]
    assert [s["session_id"] for s in json.loads(cli("status", "--json", "-C", "/src/beta").stdout)] == [B]
    assert json.loads(cli("status", "--json", "--project", "/src").stdout) != []
    assert json.loads(cli("status", "--json", "--project", "/src/bet").stdout) == []  # a prefix is not a dir


def test_status_json_is_what_the_json_module_writes_in_few_writes(
    ccm_home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same text as json.dumps(indent=2) on both paths (json below ORJSON_FROM statuses, orjson above),
    and written in a few large writes, not one per token."""
    from ccm_hooks.commands import statusview
    from ccm_hooks.statedir import reader

    run_hook(payload("UserPromptSubmit__p", session_id=A, prompt="é \u202e \x7f \x9b 1e16 \x1b"))
    status = json.loads((ccm_home / "status" / f"{A}.json").read_text())
    many = [{**status, "session_id": f"s{i:05d}", "updated_at": status["updated_at"]} for i in range(400)]
    for statuses in (many[:3], many):
        expected = json.dumps(statuses, ensure_ascii=False, indent=2)
        got = statusview.render_json(statuses).decode()
        assert json.loads(got) == statuses  # exact values
        assert (
            got
            == expected.replace("\u202e", "\\u202e").replace("\x7f", "\\u007f").replace("\x9b", "\\u009b")
            + "\n"
        )
    for i, st in enumerate(many):
        (ccm_home / "status" / f"s{i:05d}.json").write_text(json.dumps(st))

    writes = []

    class Counting:
        def write(self, data: bytes) -> int:
            writes.append(len(data))
            return len(data)

        def flush(self) -> None:
            pass

    class Stdout:
        buffer = Counting()
        encoding = "utf-8"

        def isatty(self) -> bool:
            return False

    monkeypatch.setattr(sys, "stdout", Stdout())
    assert statusview.status_cmd(as_json=True) == 0
    assert len(reader.load_statuses(str(ccm_home))) == 401
    assert 0 < len(writes) <= 3 and sum(writes) > 400 * 1000


# --- text from sessions cannot drive the terminal ------------------------------------------------------

HOSTILE = (
    "ok \x1b]52;c;Y3VybCBldmlsLnNoIHwgc2g=\x07 \x1b]0;pwned\x07 \x1b[2J \u202eexe.txt \x9b31m \x7f\r\x08 end"
)
UNSAFE = ["\x1b", "\x07", "\x9b", "\u202e", "\x7f", "\r", "\x08"]


def _hostile_session() -> None:
    env = {"CLAUDE_PROJECT_DIR": "/src/\x1b]0;title\x07proj"}
    run_hook(payload("SessionStart__startup_interactive", session_id=A), env=env)
    run_hook(payload("UserPromptSubmit__p", session_id=A, prompt=HOSTILE), env=env)
    bash = {"command": HOSTILE, "description": HOSTILE}
    run_hook(payload("PreToolUse__Bash", session_id=A, tool_input=bash), env=env)
    run_hook(payload("PermissionRequest__Bash_interactive", session_id=A, tool_input=bash), env=env)
    run_hook(payload("Notification__permission_prompt", session_id=A, message=HOSTILE), env=env)


@pytest.mark.parametrize(
    "args", [("status",), ("events",), ("events", "-s", A), ("top", "-n", "1"), ("watch", "status")]
)
def test_text_for_people_has_no_terminal_controls(ccm_home: Path, args: tuple[str, ...]) -> None:
    _hostile_session()
    out = subprocess.run([CLI, *args], capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    text = out.stdout.decode()
    assert A[:8] in text
    for ch in UNSAFE:
        assert ch not in text, (args, ch, text)


@pytest.mark.parametrize("args", [("status", "--json"), ("events", "--json")])
def test_json_output_stays_exact_and_inert(ccm_home: Path, args: tuple[str, ...]) -> None:
    _hostile_session()
    out = subprocess.run([CLI, *args], capture_output=True, timeout=60).stdout
    for raw in (b"\x1b", b"\x07", b"\xc2\x9b", b"\xe2\x80\xae", b"\x7f", b"\r", b"\x08"):
        assert raw not in out
    on_disk = (
        ccm_home
        / ("status" if args[0] == "status" else "events")
        / f"{A}.json{'l' if args[0] == 'events' else ''}"
    )
    if args[0] == "status":
        assert json.loads(out) == [json.loads(on_disk.read_text())]
    else:
        assert [json.loads(x) for x in out.splitlines()] == [
            json.loads(x) for x in on_disk.read_text().splitlines()
        ]


# --- nothing in the state dir can make a reader hang --------------------------------------------------


def test_fifos_where_files_belong_do_not_hang_readers(ccm_home: Path) -> None:
    _two_sessions()
    os.mkfifo(ccm_home / "status" / "cccccccc-0000-4000-8000-000000000003.json")
    os.mkfifo(ccm_home / "events" / "cccccccc-0000-4000-8000-000000000003.jsonl")
    (ccm_home / "status" / f"{A}.json").unlink()
    os.mkfifo(ccm_home / "status" / f"{A}.json")
    for args in (("status",), ("status", "--json"), ("events",), ("events", "-n", "2"), ("top", "-n", "1")):
        out = subprocess.run([CLI, *args], capture_output=True, text=True, timeout=20)
        assert out.returncode == 0, (args, out.stderr)
    assert B[:8] in cli("status").stdout
    assert len(cli("events", "--json").stdout.splitlines()) == 7


def readline(proc: subprocess.Popen[str], timeout: float) -> str:
    """The next line of ``proc``'s stdout, failing (not hanging) if none comes within ``timeout``."""
    import select

    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, f"no output within {timeout} s"
    return proc.stdout.readline()


def test_follow_completes_a_record_being_written_in_a_log_it_did_not_read(ccm_home: Path) -> None:
    """A log not read at start (too old for the last N) that ended in a half-written record: the follower
    starts that log at the record's start, not at the size it saw, so the record comes out whole."""
    _two_sessions()
    _rewrite_ts(A, {seq: -86400.0 for seq in range(1, 6)})
    log = ccm_home / "events" / f"{A}.jsonl"
    whole = json.dumps({**json.loads(log.read_text().splitlines()[-1]), "seq": 6, "event": "Notification"})
    with log.open("a") as fh:
        fh.write(whole[:40])  # a handler mid-write
    day_ago = time.time() - 86400
    os.utime(log, (day_ago, day_ago))
    proc = subprocess.Popen(
        [CLI, "events", "--follow", "--json", "-n", "1"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert json.loads(proc.stdout.readline())["session_id"] == B
        with log.open("a") as fh:
            fh.write(whole[40:] + "\n")
        got = json.loads(readline(proc, 10))
        assert (got["session_id"], got["seq"], got["event"]) == (A, 6, "Notification")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
