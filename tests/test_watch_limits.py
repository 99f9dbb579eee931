"""Watch settings that cannot run away or vanish: a done marker is searched for in bounded time whatever
the pattern and the reply, and every number from the environment is ASCII digits in range, or logged and
ignored while the rest still applies. The real handler and CLI; issue 9, items 4 and 5."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ccm_hooks import watch
from tests.hookrun import payload, read_log, read_status
from tests.hostile import assert_quiet, logged, run_handler

CLI = str(Path(sys.executable).parent / "ccm-hooks")
SID = "7e7e7e7e-0000-4000-8000-000000000001"


def _stop(message: str, **changes: Any) -> dict[str, Any]:
    return payload(
        "Stop__first", session_id=SID, last_assistant_message=message, stop_hook_active=False, **changes
    )


def _decision(home: Path) -> dict[str, Any]:
    [decision] = [r["decision"] for r in read_log(home, SID) if r["event"] == "ccm.decision"]
    return decision


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        ("(a+)+$", "a" * 28 + "b"),  # the reported one: catastrophic for re, past Claude's 10 s kill
        ("(a|a)*c", "a" * 5000),
        ("(.*a){20}x", "a" * 100_000),  # a long reply: only its end is searched
        ("(?:a?){30}a{30}", "a" * 29),
    ],
)
def test_a_catastrophic_marker_is_decided_at_once(marker: str, message: str, ccm_home: Path) -> None:
    proc, took = run_handler(_stop(message), env={"CCM_WATCH": "1", "CCM_WATCH_DONE_MARKER": marker})
    assert proc.returncode == 0 and proc.stdout == b'{"decision":"block","reason":"continue"}'
    assert took < 3.0
    assert _decision(ccm_home)["action"] == "continue"
    assert logged(ccm_home) == []


def test_the_marker_cli_accepts_the_safe_subset_and_names_what_it_refuses(ccm_home: Path) -> None:
    ok = subprocess.run(
        [CLI, "watch", "on", "--global", "--done-marker", "(a+)+$"], capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stderr
    for bad, why in [
        (r"(?=DONE)", "lookaround"),
        (r"(a)\1", r"\1 is not supported"),
        ("a{1000}", "above 100"),
    ]:
        out = subprocess.run(
            [CLI, "watch", "on", "--global", "--done-marker", bad], capture_output=True, text=True
        )
        assert out.returncode == 1 and why in out.stderr and out.stderr.count("\n") == 1, out.stderr


def test_a_marker_outside_the_subset_from_the_environment_is_logged_and_ignored(ccm_home: Path) -> None:
    env = {"CCM_WATCH": "1", "CCM_WATCH_DONE_MARKER": r"(?<=x)DONE", "CCM_WATCH_MAX_TURNS": "3"}
    proc, _ = run_handler(_stop("DONE"), env=env)
    assert proc.stdout == b'{"decision":"block","reason":"continue"}'  # watch stays on, max_turns applies
    w = read_status(ccm_home, SID)["watch"]
    assert (w["done_marker"], w["max_turns"]) == (watch.DEFAULTS["done_marker"], 3)
    [entry] = logged(ccm_home)
    assert "CCM_WATCH_DONE_MARKER" in entry["error"] and "outside the regex subset" in entry["error"]


def test_a_regex_marker_is_found_at_the_end_of_a_long_reply_and_literal_ones_anywhere(ccm_home: Path) -> None:
    long = "x" * 50_000
    cases = [
        (r"ALL (DONE|FINISHED)", long + " ALL FINISHED", True),
        (r"ALL (DONE|FINISHED)", "ALL FINISHED " + long, False),  # outside the last MARKER_TEXT_CAP chars
        (r"\[DONE\]", "[DONE] " + long, True),  # plain text: the whole reply
    ]
    for marker, message, found in cases:
        assert watch.marker_found(marker, message) is found, marker


def test_the_worst_allowed_marker_on_the_capped_text_is_bounded() -> None:
    """The number spec/watch.md states: the slowest patterns the subset allows, on the worst text."""
    worst = 0.0
    for unit in (".?", "a?", "(?:\\b.?)", "[^b]?"):
        pattern = unit * 200
        while True:
            try:
                watch.check_marker(pattern + "x")
                break
            except watch.SettingError:
                pattern = pattern[: -len(unit)]
        for text in ("a" * 10_000, "a\n" * 5_000):
            started = time.perf_counter()
            assert not watch.marker_found(pattern + "x", text)
            worst = max(worst, time.perf_counter() - started)
    assert worst < 2.0  # measured ~0.1 s on a 2-core VM; generous for a loaded CI machine


@pytest.mark.parametrize("value", ["²", "١٠", "-3", "+4", "1_0", "1e3", "ten", " ", "0", "10001", "9" * 40])
def test_a_bad_max_turns_is_logged_and_the_rest_still_applies(value: str, ccm_home: Path) -> None:
    env = {"CCM_WATCH": "1", "CCM_WATCH_MAX_TURNS": value, "CCM_WATCH_PROMPT": "next"}
    proc, _ = run_handler(_stop("working"), env=env)
    assert_quiet_or_block(proc, b'{"decision":"block","reason":"next"}')
    w = read_status(ccm_home, SID)["watch"]
    assert (w["enabled"], w["max_turns"], w["prompt"]) == (True, watch.DEFAULTS["max_turns"], "next")
    if value.strip():
        [entry] = logged(ccm_home)
        assert "CCM_WATCH_MAX_TURNS" in entry["error"]


def assert_quiet_or_block(proc: subprocess.CompletedProcess[bytes], block: bytes) -> None:
    assert proc.returncode == 0 and proc.stderr == b"" and proc.stdout == block


def test_ascii_digits_with_spaces_are_fine(ccm_home: Path) -> None:
    env = {"CCM_WATCH": "1", "CCM_WATCH_MAX_TURNS": " 7 ", "CCM_WATCH_NO_PROGRESS": "\t3"}
    run_handler(_stop("working"), env=env)
    w = read_status(ccm_home, SID)["watch"]
    assert (w["max_turns"], w["no_progress_turns"]) == (7, 3)
    assert logged(ccm_home) == []


@pytest.mark.parametrize(
    ("value", "cap", "said"),
    [("²", 4000, "not a whole number"), ("999999999", 100_000, "outside"), ("5", 64, "outside")],
)
def test_a_bad_field_cap_is_logged_once_and_a_sane_cap_applies(
    value: str, cap: int, said: str, ccm_home: Path
) -> None:
    env = {"CCM_FIELD_CAP": value}
    long = "p" * 200_000
    for _ in range(3):
        assert_quiet(run_handler(payload("UserPromptSubmit__p", session_id=SID, prompt=long), env=env)[0])
    records = read_log(ccm_home, SID)
    assert all(len(r["prompt"]) < cap + 40 and r["prompt"].startswith("p" * cap) for r in records)
    [entry] = logged(ccm_home)  # at the session's first event, not every event
    assert "CCM_FIELD_CAP" in entry["error"] and said in entry["error"]


@pytest.mark.parametrize("value", ["٣", "-1", "1e9", "99999999999"])
def test_a_bad_claude_block_cap_means_claudes_default(value: str, ccm_home: Path) -> None:
    assert watch.block_cap({"CLAUDE_CODE_STOP_HOOK_BLOCK_CAP": value}) == watch.CLAUDE_BLOCK_CAP
    run_handler(_stop("working"), env={"CCM_WATCH": "1", "CLAUDE_CODE_STOP_HOOK_BLOCK_CAP": value})
    [entry] = logged(ccm_home)
    assert "CLAUDE_CODE_STOP_HOOK_BLOCK_CAP" in entry["error"]
    assert watch.block_cap({"CLAUDE_CODE_STOP_HOOK_BLOCK_CAP": "0"}) == 0  # 0 means no cap, as in Claude


def test_bad_numbers_do_not_hide_each_other(ccm_home: Path) -> None:
    env = {"CCM_WATCH": "1", "CCM_WATCH_MAX_TURNS": "²", "CCM_WATCH_NO_PROGRESS": "x", "CCM_FIELD_CAP": "³"}
    proc, _ = run_handler(_stop("working"), env={**env, "CCM_WATCH_PROMPT": "on"})
    assert proc.stdout == b'{"decision":"block","reason":"on"}'
    errors = " ".join(e["error"] for e in logged(ccm_home))
    for var in ("CCM_WATCH_MAX_TURNS", "CCM_WATCH_NO_PROGRESS", "CCM_FIELD_CAP"):
        assert var in errors
    assert_quiet(run_handler(payload("PreToolUse__Bash", session_id=SID), env=env)[0])
    assert len(logged(ccm_home)) == 3  # once per session, not per event
