"""ccm-agentd end to end, continued: a usage limit resumed exactly once after its reset, and a daemon that
died at each step of a delivery finishing it exactly once after a restart.

Same parts as tests/test_agentd.py: the real daemon process, a real tmux server on a private socket, the
real claude 2.1.197 on the scripted model server.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ccm_hooks import store
from ccm_hooks.statedir.timefmt import parse_ts
from tests.agentdrun import (
    Agentd,
    agentd_cli,
    ccm,
    configure,
    deliveries,
    idle_session,
    notified_kinds,
    said,
    session_of,
    start_in_tmux,
    wait_state,
)
from tests.claude_harness import (
    TmuxServer,
    capture,
    input_line,
    send_keys,
    submit,
    wait_for,
    wait_for_screen,
    wait_idle,
)
from tests.fakeapi import FakeAnthropic, RecordedRequest, Script, api_error, text
from tests.hookrun import install_hooks, read_log, read_status

pytestmark = [pytest.mark.e2e, pytest.mark.tmux]

# Claude Code retries a 429 itself (10 times by default, with backoff) before the turn ends in StopFailure;
# the tests skip straight to the end of that.
NO_RETRIES = {"CLAUDE_CODE_MAX_RETRIES": "0"}


# --- usage limits ---------------------------------------------------------------------------------------


def _resumes(api: FakeAnthropic) -> list[RecordedRequest]:
    """The model requests that carry the configured resume prompt ("go on please")."""
    return [r for r in api.main_requests() if r.last_user_text.endswith("go on please")]


@pytest.mark.parametrize("given", ["reset time in the message", "no reset time"])
def test_a_usage_limit_is_resumed_exactly_once_after_the_reset(
    claude_bin: str, fake_api: FakeAnthropic, project_dir: Path, ccm_home: Path,
    tmux_server: TmuxServer, agentd: Agentd, tmp_path: Path, given: str,
) -> None:  # fmt: skip
    install_hooks(project_dir)
    notified = tmp_path / "notified.txt"
    configure(
        ccm_home, notified, rate_limit_jitter_s=1.0, rate_limit_wait_s=6.0, resume_prompt="go on please"
    )
    pane = start_in_tmux(tmux_server, claude_bin, project_dir, fake_api, extra=NO_RETRIES)
    agentd.start()
    reset = int(time.time()) + 6
    # The wording Claude Code shows for a subscription's limit: "... usage limit reached|<epoch>".
    message = f"Claude AI usage limit reached|{reset}" if given.startswith("reset") else "Rate limited."
    fake_api.responder = Script([api_error(429, "rate_limit_error", message), [text("Resumed.")]])
    submit(pane, "start the job")
    sid = session_of(ccm_home)
    failed_at = time.time()

    limited = wait_state(ccm_home, sid, "rate_limited")
    resume_at = parse_ts(limited["resume_at"])
    assert resume_at is not None
    if given.startswith("reset"):
        assert resume_at == reset
    else:  # now + rate_limit_wait_s, "now" being the daemon's pass that saw the StopFailure
        assert failed_at + 5.0 <= resume_at <= failed_at + 8.0
    assert [r["event"] for r in read_log(ccm_home, sid)][-2:] == ["StopFailure", "ccm.state"]
    assert limited["reason"].startswith("usage limit: rate_limit")

    # The failed turn left no reply, so Claude sends the prompt it could not answer with the resume.
    (resumed,) = wait_for(
        lambda: _resumes(fake_api), timeout=30, what="the resume at the model", diagnostics=agentd.log
    )
    assert [line for line in resumed.last_user_text.splitlines() if line] == ["start the job", "go on please"]
    assert resume_at <= resumed.time <= resume_at + 1.0 + 3.0  # after the reset, within the jitter + typing
    wait_state(ccm_home, sid, "idle")
    assert [(d["kind"], d["outcome"]) for d in deliveries(ccm_home, sid)] == [
        ("resume", "typing"),
        ("resume", "delivered"),
    ]
    wait_for(lambda: notified_kinds(notified) == ["rate_limited", "finished"], what="two notifications")
    time.sleep(2.0)  # many daemon passes later: no second resume, no repeated notification
    assert len(_resumes(fake_api)) == 1 and len(fake_api.main_requests()) == 2
    assert notified_kinds(notified) == ["rate_limited", "finished"]


HINT_WORDS = "Resend your message to try again"


def test_without_colours_a_resume_goes_into_the_hint_never_into_a_draft_of_its_words(
    claude_bin: str, claude_version: str, fake_api: FakeAnthropic, project_dir: Path, ccm_home: Path,
    tmux_server: TmuxServer, agentd: Agentd,
) -> None:  # fmt: skip
    """NO_COLOR (or CI) in claude's environment: 2.1.328's hint after an API error is not dim, and its box is
    byte for byte a draft of the hint's words with the cursor at its start. The daemon presses End: it moves
    the cursor over a draft (nothing is typed, the draft stays as it was) and leaves the hint alone."""
    install_hooks(project_dir)
    configure(ccm_home, rate_limit_jitter_s=0.0, rate_limit_wait_s=3.0, resume_prompt="go on please",
              heartbeat_s=1.0)  # fmt: skip
    no_colour = {**NO_RETRIES, "NO_COLOR": "1"}
    pane = start_in_tmux(tmux_server, claude_bin, project_dir, fake_api, extra=no_colour)
    agentd.start()
    limit = api_error(429, "rate_limit_error", "Rate limited.")
    fake_api.responder = Script([limit, limit, [text("Resumed.")]])

    # A person's draft of the hint's words, the cursor moved to its start, when the resume falls due.
    submit(pane, "start the job")
    sid = session_of(ccm_home)
    first = wait_state(ccm_home, sid, "rate_limited")
    send_keys(pane, "C-u")  # 2.1.328's hint, if shown, is not text: C-u leaves an empty box either way
    pane.server.run("send-keys", "-t", pane.pane_id, "-l", HINT_WORDS)
    send_keys(pane, "C-a")
    due = parse_ts(first["resume_at"])
    assert due is not None
    wait_for(lambda: "End moved the cursor" in agentd.log(), timeout=30, what="the End probe's verdict")
    assert time.time() >= due
    time.sleep(2.0)
    assert not _resumes(fake_api) and deliveries(ccm_home, sid) == []
    status = agentd_cli("status")
    assert status.returncode == 0, status.stderr
    assert "the input box holds text" in status.stdout  # why the due resume is not typed
    # The draft as it was, the cursor at its end (plain text alone would read the words as the hint).
    box = [line for line in capture(pane).splitlines() if line.startswith("❯")][-1]
    assert box[1:].strip("\u00a0 ") == HINT_WORDS
    cursor = pane.server.run("display-message", "-p", "-t", pane.pane_id, "#{cursor_x}").stdout.strip()
    assert cursor == str(2 + len(HINT_WORDS))
    # The person clears the box: the due resume is typed into it once. Its turn hits the limit again, and
    # now the box holds only Claude Code's hint (2.1.328; 2.1.197 leaves it empty): typed into once more.
    send_keys(pane, "C-u")
    wait_for(
        lambda: len(_resumes(fake_api)) == 2,
        timeout=30,
        what="two resumes at the model",
        diagnostics=agentd.log,
    )
    wait_state(ccm_home, sid, "idle")
    assert [(d["kind"], d["outcome"]) for d in deliveries(ccm_home, sid)] == [
        ("resume", "typing"),
        ("resume", "delivered"),
    ] * 2
    if claude_version == "2.1.328":
        assert "shows Claude Code's hint without colours" in agentd.log()
    time.sleep(1.0)
    assert len(_resumes(fake_api)) == 2 and read_status(ccm_home, sid)["state"] == "idle"


# --- a daemon killed at each step of a delivery ----------------------------------------------------------

# What the log and the pane hold when the daemon dies (see spec/agentd.md, "Delivery"), and what a
# restarted daemon must make of it. The crash state is built from the real parts: the daemon's own record
# format, keys typed into the real pane, a real UserPromptSubmit. No timing luck is involved.
CRASH_POINTS = {
    # after the typing record, before any key: the box is empty, so the text was lost; typed again
    "before the keys": ["typing", "retry", "typing", "delivered"],
    # after the text, before Enter: the box holds it; Enter once, never the text again
    "between the keys and Enter": ["typing", "delivered"],
    # after Enter, before the delivered record: the UserPromptSubmit is in the log already
    "after Enter": ["typing", "delivered"],
}


@pytest.mark.parametrize("crash", list(CRASH_POINTS))
def test_a_delivery_cut_short_by_a_crash_completes_exactly_once(
    claude_bin: str, fake_api: FakeAnthropic, project_dir: Path, ccm_home: Path,
    tmux_server: TmuxServer, agentd: Agentd, crash: str,
) -> None:  # fmt: skip
    install_hooks(project_dir)
    pane, sid = idle_session(tmux_server, claude_bin, project_dir, fake_api, ccm_home, "first")
    prompt = "deliver me exactly once"
    assert ccm("send", sid, prompt).returncode == 0
    (queued,) = (ccm_home / "queue").glob("*.json")
    typing = {"item": queued.stem, "kind": "queued", "attempt": 1, "outcome": "typing", "text": prompt}
    store.append_ccm(str(ccm_home), sid, "ccm.delivery", {"delivery": {**typing, "detail": "attempt 1"}})
    if crash == "between the keys and Enter":
        pane.server.run("send-keys", "-t", pane.pane_id, "-l", prompt)
        wait_for_screen(pane, lambda s: prompt in (input_line(s) or ""), what="the text in the box")
    elif crash == "after Enter":
        submit(pane, prompt)
        wait_for(lambda: read_status(ccm_home, sid)["last_prompt"] == prompt, what="its UserPromptSubmit")

    agentd.start()
    wait_for(lambda: deliveries(ccm_home, sid)[-1]["outcome"] == "delivered", timeout=30, what="delivered")
    wait_idle(pane)
    time.sleep(1.0)  # nothing more may be typed
    assert [d["outcome"] for d in deliveries(ccm_home, sid)] == CRASH_POINTS[crash]
    assert said(fake_api, prompt) == 1
    assert prompt not in (input_line(capture(pane)) or "")
    assert not list((ccm_home / "queue").glob("*.json"))
    assert (ccm_home / "queue" / "done" / queued.name).exists()
