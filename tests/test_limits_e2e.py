"""Bounds and limits end to end, on every supported Claude Code version: a watch run stops at exactly its
``max_turns`` through in-band continues and tmux handoffs, a claude.ai usage limit is resumed exactly once
(by Claude Code itself on 2.1.328, by ccm on 2.1.197), and a 400 that merely mentions "429" is an error.

Real parts: the claude CLI of each version (``claude_bin``), a tmux server on a private socket, the
ccm-agentd process, the scripted Messages API. What the model server received is the proof.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from ccm_hooks.statedir.timefmt import parse_ts
from tests.agentdrun import (
    Agentd,
    configure,
    deliveries,
    notified_kinds,
    said,
    session_of,
    start_in_tmux,
    wait_state,
)
from tests.claude_harness import (
    TmuxServer,
    capture,
    claude_env,
    run_claude_p,
    submit,
    wait_for,
    wait_for_screen,
)
from tests.fakeapi import FakeAnthropic, RecordedRequest, Script, always, api_error, text, usage_limit
from tests.hookrun import MINIMAL_PATH, install_hooks, read_log, read_status

pytestmark = [pytest.mark.e2e, pytest.mark.tmux]

FEEDBACK = "Stop hook feedback:\n"
# A trailing space: Claude Code trims what it submits, so a handoff must still be recognised as ccm's and
# never restart the budget (issue 8: 117 turns past --max-turns 12).
WATCH_PROMPT = "keep going "
SENT = WATCH_PROMPT.strip()
# Claude Code retries a 429 itself before the turn ends in StopFailure; skip straight to the end of that.
NO_RETRIES = {"CLAUDE_CODE_MAX_RETRIES": "0"}
# Claude Code 2.1.328's own continue at a usage limit's reset (spec/claude-versions.md).
CLAUDE_OWN_CONTINUE = "Your claude.ai usage limit has reset."
SELF_CONTINUING = re.compile(r"continuing automatically|Continuing shortly", re.IGNORECASE)  # 2.1.328
MENU = "What do you want to do?"  # 2.1.197's usage-limit menu (/rate-limit-options)


def _records(home: Path, sid: str, event: str) -> list[dict[str, Any]]:
    return [r for r in read_log(home, sid) if r["event"] == event]


def _decisions(home: Path, sid: str) -> list[dict[str, Any]]:
    return [r["decision"] for r in _records(home, sid, "ccm.decision")]


# --- watch mode: bounded, always ------------------------------------------------------------------------


def test_watch_in_tmux_stops_at_exactly_max_turns_through_handoffs(
    claude_bin: str, fake_api: FakeAnthropic, project_dir: Path, ccm_home: Path,
    tmux_server: TmuxServer, agentd: Agentd,
) -> None:  # fmt: skip
    """Claude Code's own cap (3 blocks in a row here) forces a handoff through tmux every 4th turn; the
    handed-over prompt comes back trimmed, yet the run ends after exactly 8 continues."""
    install_hooks(project_dir)
    fake_api.responder = lambda body: [text("Still going.")]
    watch_env = {
        "CCM_WATCH": "1", "CCM_WATCH_MAX_TURNS": "8", "CCM_WATCH_NO_PROGRESS": "100",
        "CCM_WATCH_PROMPT": WATCH_PROMPT, "CLAUDE_CODE_STOP_HOOK_BLOCK_CAP": "3",
    }  # fmt: skip
    pane = start_in_tmux(tmux_server, claude_bin, project_dir, fake_api, extra=watch_env)
    agentd.start()
    submit(pane, "work through the list")
    sid = session_of(ccm_home)

    def stopped() -> bool:
        decisions = _decisions(ccm_home, sid)
        return bool(decisions) and decisions[-1]["action"] == "stop"

    wait_for(stopped, timeout=120, what="the run to stop", diagnostics=lambda: capture(pane) + agentd.log())
    st = wait_state(ccm_home, sid, "idle")
    time.sleep(3.0)  # six daemon passes later: nothing more typed, no turn more
    decisions = _decisions(ccm_home, sid)
    assert [(d["action"], d["turn"]) for d in decisions] == [
        ("continue", 1), ("continue", 2), ("continue", 3), ("handoff", 4),
        ("continue", 5), ("continue", 6), ("continue", 7), ("handoff", 8), ("stop", 8),
    ]  # fmt: skip
    assert decisions[-1]["reason"] == "max_turns"
    assert all(d["prompt"] == SENT for d in decisions[:-1])  # the rule for typed text: trimmed at the source
    # What the model received: the person's prompt, 6 in-band continues, 2 typed handoffs; nothing else.
    mains = fake_api.main_requests()
    assert [r.last_user_text for r in mains] == [
        "work through the list", *[FEEDBACK + SENT] * 3, SENT, *[FEEDBACK + SENT] * 3, SENT,
    ]  # fmt: skip
    assert said(fake_api, SENT) == 2
    assert [(d["kind"], d["outcome"]) for d in deliveries(ccm_home, sid)] == [
        ("handoff", "typing"),
        ("handoff", "delivered"),
    ] * 2
    # One run: its settings logged once, never reset by the handoffs' prompts.
    assert len(_records(ccm_home, sid, "ccm.watch")) == 1
    assert st["watch"]["stopped"] == "max_turns" and st["watch"]["continues"] == 8
    assert st["counters"]["prompts"] == 3  # the person's and the two handoffs
    assert len(fake_api.main_requests()) == 9


def test_watch_in_p_stops_at_exactly_max_turns_with_a_trailing_space_prompt(
    claude_bin: str, fake_api: FakeAnthropic, project_dir: Path, ccm_home: Path
) -> None:
    install_hooks(project_dir)
    fake_api.responder = lambda body: [text("Still going.")]
    env = {"CCM_WATCH": "1", "CCM_WATCH_MAX_TURNS": "5", "CCM_WATCH_NO_PROGRESS": "100",
           "CCM_WATCH_PROMPT": WATCH_PROMPT}  # fmt: skip
    proc = run_claude_p(
        claude_bin, project_dir, "work through the list", claude_env(fake_api, {"PATH": MINIMAL_PATH, **env}),
        timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [r.last_user_text for r in fake_api.main_requests()] == ["work through the list"] + [
        FEEDBACK + SENT
    ] * 5
    (sid,) = [p.stem for p in (ccm_home / "status").glob("*.json")]
    decisions = _decisions(ccm_home, sid)
    assert [(d["action"], d["turn"]) for d in decisions] == [("continue", n) for n in range(1, 6)] + [
        ("stop", 5)
    ]
    assert decisions[-1]["reason"] == "max_turns"
    assert len(_records(ccm_home, sid, "ccm.watch")) == 1


# --- a claude.ai usage limit: one resume, never two -----------------------------------------------------


def test_a_subscription_usage_limit_is_resumed_exactly_once(
    claude_bin: str, claude_version: str, fake_api: FakeAnthropic, project_dir: Path, ccm_home: Path,
    tmux_server: TmuxServer, agentd: Agentd, tmp_path: Path,
) -> None:  # fmt: skip
    """2.1.328 continues by itself after the reset: ccm types nothing. 2.1.197 opens its usage-limit menu:
    ccm closes it with Esc (its "Stop and wait") and types one resume after the reset."""
    install_hooks(project_dir)
    notified = tmp_path / "notified.txt"
    # A small grace: ccm's resume falls due before 2.1.328's own continue (30-90 s after the reset), so
    # what keeps ccm from typing is the screen saying Claude Code will continue by itself.
    configure(
        ccm_home, notified, rate_limit_jitter_s=0.5, self_continue_grace_s=1.0, resume_prompt="go on please"
    )
    pane = start_in_tmux(tmux_server, claude_bin, project_dir, fake_api, extra=NO_RETRIES, subscription=True)
    agentd.start()
    # Claude Code shows the reset rounded down to the minute and ccm reads it as that minute's end: a
    # reset late in its minute (:50 to :59) keeps ccm's resume due well before 2.1.328's own continue.
    reset = int(time.time()) + 8
    reset += (50 - reset % 60) % 60 if reset % 60 < 50 else 0
    fake_api.responder = Script([usage_limit(reset), [text("Resumed.")]])
    submit(pane, "start the job")
    sid = session_of(ccm_home)

    limited = wait_state(ccm_home, sid, "rate_limited")
    message = str(limited.get("last_assistant_message"))
    wording = "session limit" if claude_version == "2.1.197" else "5-hour limit"
    assert message.startswith(f"You've hit your {wording} · resets "), message
    resume_at = parse_ts(limited["resume_at"])
    assert resume_at is not None
    # Claude Code shows the reset to the minute ("resets 3:25am (UTC)"): that minute, not tomorrow's.
    assert reset < resume_at <= reset + 10, (limited["resume_at"], reset)
    if claude_version == "2.1.197":  # its own menu, a dialog ccm must not answer (Esc closes it)
        wait_for_screen(pane, lambda s: MENU in s, what="the usage-limit menu")
    else:  # its promise to continue by itself
        wait_for_screen(pane, lambda s: SELF_CONTINUING.search(s), what="the promise to continue")

    def after_limit() -> list[RecordedRequest]:
        return fake_api.main_requests()[1:]

    wait = reset - time.time() + 90 + 30  # 2.1.328 continues 30-90 s after the reset
    (resumed,) = wait_for(after_limit, timeout=wait, what="the resumed turn", diagnostics=agentd.log)
    assert resumed.time >= reset
    wait_state(ccm_home, sid, "idle")
    time.sleep(3.0)  # six daemon passes later: no second resume
    assert len(after_limit()) == 1
    lines = [line for line in resumed.last_user_text.splitlines() if line]
    # The failed turn left no reply, so the resume carries the prompt it could not answer.
    assert lines[0] == "start the job"
    if claude_version == "2.1.197":
        assert lines[1:] == ["go on please"]
        assert [(d["kind"], d["outcome"]) for d in deliveries(ccm_home, sid)] == [
            ("resume", "typing"),
            ("resume", "delivered"),
        ]
        assert agentd.log().count("closing Claude Code's usage-limit menu") == 1  # one Esc, no other key
    else:
        assert lines[1].startswith(CLAUDE_OWN_CONTINUE), lines
        # ccm's resume was due (reset + grace + jitter) well before Claude Code continued: only the screen
        # saying Claude Code would continue kept it from typing, and then the session was no longer limited.
        assert resumed.time > resume_at + 1.5 + 10.0
        assert deliveries(ccm_home, sid) == []
        assert said(fake_api, "go on please") == 0
        kinds = [r.get("notification_type") for r in _records(ccm_home, sid, "Notification")]
        assert "quota_auto_resume_fired" in kinds
    assert notified_kinds(notified) == ["rate_limited", "finished"]


def test_a_weekly_limit_days_away_is_resumed_on_its_day(
    claude_bin: str, fake_api: FakeAnthropic, project_dir: Path, ccm_home: Path,
    tmux_server: TmuxServer, agentd: Agentd,
) -> None:  # fmt: skip
    """More than a day away, Claude Code writes the reset with its date ("resets Dec 3, 3:25am (UTC)"):
    ccm resumes on that day, not after rate_limit_wait_s (again and again, each resume hitting the limit)."""
    install_hooks(project_dir)
    configure(ccm_home, rate_limit_wait_s=60.0)
    pane = start_in_tmux(tmux_server, claude_bin, project_dir, fake_api, extra=NO_RETRIES, subscription=True)
    agentd.start()
    reset = int(time.time()) + 3 * 86400 + 600
    fake_api.responder = Script([usage_limit(reset, claim="seven_day")])
    submit(pane, "start the job")
    sid = session_of(ccm_home)
    limited = wait_state(ccm_home, sid, "rate_limited")
    assert re.match(
        r"You've hit your weekly limit · resets [A-Z][a-z]{2} \d{1,2}, ", limited["last_assistant_message"]
    )
    # The end of the minute it names (shown rounded down).
    assert parse_ts(limited["resume_at"]) == reset - reset % 60 + 60, (
        limited["last_assistant_message"],
        reset,
    )


# --- a 400 is an error, whatever digits it holds ----------------------------------------------------------


# The API's message, and the StopFailure ``error`` and the start of ``last_assistant_message`` both versions
# make of it (they word a prompt that is too long themselves: "... cannot be compacted; reduce ...").
BAD_REQUESTS = {
    "prompt is too long: 204291 tokens > 200000 maximum": (
        "invalid_request",
        "Prompt is too long · the request is ~204291 tokens (limit 200000)",
    ),
    "upstream proxy answered 429 Too Many Requests": (
        "unknown",
        "API Error: 400 upstream proxy answered 429 Too Many Requests",
    ),
}


@pytest.mark.parametrize("message", list(BAD_REQUESTS))
def test_a_400_that_mentions_429_is_an_error_and_nothing_is_typed(
    claude_bin: str, fake_api: FakeAnthropic, project_dir: Path, ccm_home: Path,
    tmux_server: TmuxServer, agentd: Agentd, tmp_path: Path, message: str,
) -> None:  # fmt: skip
    install_hooks(project_dir)
    notified = tmp_path / "notified.txt"
    # Were it taken for a limit without a reset time, the resume would be typed 2 s later.
    configure(ccm_home, notified, rate_limit_wait_s=2.0, rate_limit_jitter_s=0.0, self_continue_grace_s=0.0)
    pane = start_in_tmux(tmux_server, claude_bin, project_dir, fake_api, extra=NO_RETRIES)
    agentd.start()
    # always: 2.1.328 sends a turn refused with a 400 again, with fewer betas, before it gives up.
    fake_api.responder = always(api_error(400, "invalid_request_error", message))
    submit(pane, "summarise everything")
    sid = session_of(ccm_home)
    st = wait_state(ccm_home, sid, "error")
    (failure,) = _records(ccm_home, sid, "StopFailure")
    error, shown = BAD_REQUESTS[message]
    assert failure["error"] == error and failure["last_assistant_message"].startswith(shown), failure
    assert "429" in st["error"] and not st["error"].startswith("rate_limit"), st["error"]
    asked = len(fake_api.main_requests())
    wait_for(lambda: notified_kinds(notified) == ["error"], what="the error notification")
    time.sleep(5.0)  # ten daemon passes, past rate_limit_wait_s: still an error, nothing typed
    assert read_status(ccm_home, sid)["state"] == "error"
    assert not [r for r in _records(ccm_home, sid, "ccm.state") if r["set_state"]["state"] == "rate_limited"]
    assert deliveries(ccm_home, sid) == []
    assert len(fake_api.main_requests()) == asked
    assert notified_kinds(notified) == ["error"]
