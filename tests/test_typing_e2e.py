"""Typing into a pane, end to end (issue 8, sections 2 and 4; spec/typing.md): the real claude of each
supported version in a real tmux pane on a private socket, the scripted Messages API, the real ccm-agentd.
What the scripted model received is the proof of delivery; the session's ``ccm.delivery`` records say what
ccm did, and a ``typing`` record comes before any key ccm sends (the typist is the only code that types).

One claude session takes several texts in sequence, to keep the run short.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ccm_hooks import fileio, record
from ccm_hooks.statedir import sendqueue
from ccm_hooks.texts import MAX_TYPED_CHARS
from tests.agentdrun import (
    Agentd,
    ccm,
    configure,
    deliveries,
    idle_session,
    said,
    session_of,
    start_in_tmux,
    wait_state,
)
from tests.claude_harness import (
    ASKING_PERMISSION_MODE,
    Pane,
    TmuxServer,
    WaitTimeout,
    capture,
    has_permission_dialog,
    input_line,
    send_keys,
    submit,
    wait_for,
    wait_for_screen,
    wait_idle,
)
from tests.fakeapi import FakeAnthropic, Reply, default_responder, last_user_text, text, tool_use
from tests.hookrun import install_hooks, read_log, read_status

pytestmark = [pytest.mark.e2e, pytest.mark.tmux]

# A reply that quotes what a busy pane and a permission dialog show: it must not keep the pane "busy".
LOOKALIKE = "Working… (esc to interrupt)\n\nDo you want to proceed?\n❯ 1. Yes\n  2. No\n\nesc to interrupt"
LONG = ("The quick brown fox jumps over the lazy dog; " * 20)[:699] + "."
# Each awkward text as given to `ccm-hooks send`, and what the model must receive (spec/typing.md: only
# surrounding whitespace is removed).
AWKWARD = [
    ("a trailing space ", "a trailing space"),
    ("ends in a semicolon;", "ends in a semicolon;"),
    ("an escaped \\; semicolon", "an escaped \\; semicolon"),
    ("-leading dash", "-leading dash"),
    ("-R", "-R"),
    ("café — 日本語 ✓", "café — 日本語 ✓"),
    (LONG, LONG),
]
# Texts the rule refuses, and words of the reason `ccm-hooks send` must give.
REFUSED = [
    ("a\ttab", "a tab"),
    ("a\x7fdel", "U+007F"),
    ("a\x85next line", "U+0085"),
    ("a\x9bcsi", "U+009B"),
    ("x" * (MAX_TYPED_CHARS + 1), f"has {MAX_TYPED_CHARS + 1} characters"),
    ("/ex", "starts with '/'"),
    ("/cle", "starts with '/'"),
    ("!ls", "starts with '!'"),
    ("ends in a backslash \\", "ends with a backslash"),
    ("zero\u200bwidth", "U+200B"),
]


def _outcomes(home: Path, sid: str) -> dict[str, list[str]]:
    """Each item's delivery outcomes, in order."""
    out: dict[str, list[str]] = {}
    for d in deliveries(home, sid):
        out.setdefault(d["item"], []).append(d["outcome"])
    return out


def _send(sid: str, text: str, *flags: str) -> str:
    """``ccm-hooks send`` (``--`` so a text starting with ``-`` is not an option); the queued item's id."""
    out = ccm("send", *flags, sid, "--", text)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()[1]


def _prompts(home: Path, sid: str) -> list[str]:
    return [r["prompt"] for r in read_log(home, sid) if r["event"] == "UserPromptSubmit"]


def _settled(home: Path, sid: str, item: str, timeout: float = 60.0) -> list[str]:
    """Wait until the item has a final outcome; its outcomes."""
    final = ("delivered", "refused", "failed", "unconfirmed", "cancelled")
    return wait_for(
        lambda: (o := _outcomes(home, sid).get(item)) and o[-1] in final and o,
        timeout=timeout, what=f"{item} settled",
    )  # fmt: skip


def _delivered(outcomes: list[str]) -> bool:
    """Typed and delivered once. A ``retry`` (the pasted text did not show in time on a loaded machine:
    nothing was submitted) may come before; the model's requests prove it arrived once."""
    before = set(outcomes[:-1])
    return outcomes[-1] == "delivered" and before <= {"typing", "retry"}


def test_awkward_texts_reach_the_model_once_and_verbatim(
    claude_bin: str, fake_api: FakeAnthropic, project_dir: Path, ccm_home: Path,
    tmux_server: TmuxServer, agentd: Agentd,
) -> None:  # fmt: skip
    """Every reply quotes `esc to interrupt` and `Do you want to proceed?`: each next item is still typed."""
    install_hooks(project_dir)
    fake_api.responder = lambda body: [text(LOOKALIKE)]
    pane, sid = idle_session(tmux_server, claude_bin, project_dir, fake_api, ccm_home, "first prompt")
    wait_for_screen(pane, lambda s: "Do you want to proceed?" in s and input_line(s) == "", what="the reply")
    agentd.start()
    items = [_send(sid, given) for given, _ in AWKWARD]  # queued at once: typed one by one, in order
    for item in items:
        assert _delivered(_settled(ccm_home, sid, item)), agentd.log()
    wait_for(lambda: len(fake_api.main_requests()) == 1 + len(AWKWARD), what="every turn at the model")
    wait_idle(pane)
    time.sleep(1.0)  # the last turn is over: nothing more may arrive
    expected = [want for _, want in AWKWARD]
    assert [r.last_user_text for r in fake_api.main_requests()] == ["first prompt", *expected]
    assert _prompts(ccm_home, sid) == ["first prompt", *expected]
    for item, want in zip(items, expected, strict=True):
        typed = {
            d["text"] for d in deliveries(ccm_home, sid) if d["item"] == item and d["outcome"] == "typing"
        }
        assert typed == {want}
    assert not any("submitted it as" in d["detail"] for d in deliveries(ccm_home, sid))
    assert input_line(capture(pane)) == ""


def test_refused_texts_are_never_typed_and_never_block_the_queue(
    claude_bin: str, fake_api: FakeAnthropic, project_dir: Path, ccm_home: Path,
    tmux_server: TmuxServer, agentd: Agentd,
) -> None:  # fmt: skip
    install_hooks(project_dir)
    pane, sid = idle_session(tmux_server, claude_bin, project_dir, fake_api, ccm_home, "first prompt")
    agentd.start()

    # At `ccm-hooks send`: exit 1, one line saying which rule, nothing queued.
    for given, why in REFUSED:
        out = ccm("send", sid, "--", given)
        assert out.returncode == 1, (given, out)
        assert out.stdout == "" and out.stderr.count("\n") == 1, (given, out.stderr)
        assert out.stderr.startswith("ccm-hooks: the prompt ") and why in out.stderr, (given, out.stderr)
    assert not list((ccm_home / "queue").glob("*.json"))

    # Items that reached the queue another way: each refused at delivery, with the reason; the good one
    # queued after them arrives once.
    refused = [_write_item(ccm_home, sid, given) for given, _ in REFUSED]
    good = _write_item(ccm_home, sid, "after the refused ones")
    assert _delivered(_settled(ccm_home, sid, good)), agentd.log()
    records = {d["item"]: d for d in deliveries(ccm_home, sid)}
    for item, (_, why) in zip(refused, REFUSED, strict=True):
        assert _outcomes(ccm_home, sid)[item] == ["refused"]
        assert records[item]["detail"].startswith("not typed: the text ") and why in records[item]["detail"]
    # The record comes first, then the item moves to queue/done.
    wait_for(lambda: not list((ccm_home / "queue").glob("*.json")), what="an empty queue")

    # `/ex` sent on purpose as a command: the TUI would complete it to /exit. It must not end the session.
    ex = _send(sid, "/ex", "--command")
    assert _settled(ccm_home, sid, ex)[-1] == "failed", agentd.log()
    failed = [d for d in deliveries(ccm_home, sid) if d["item"] == ex][-1]
    assert failed["detail"] == "the TUI would complete '/ex' to '/exit': not submitted"
    wait_idle(pane)  # ccm cleared its own /ex from the box
    later = _send(sid, "still here after /ex")
    assert _delivered(_settled(ccm_home, sid, later)), agentd.log()
    wait_idle(pane)
    time.sleep(1.0)
    assert not pane.dead() and read_status(ccm_home, sid)["state"] != "ended"
    assert [r.last_user_text for r in fake_api.main_requests()] == [
        "first prompt", "after the refused ones", "still here after /ex",
    ]  # fmt: skip
    assert _prompts(ccm_home, sid) == ["first prompt", "after the refused ones", "still here after /ex"]
    assert input_line(capture(pane)) == ""


def _write_item(home: Path, sid: str, given: str) -> str:
    """A queue item written straight into queue/ (spec/layout.md), past `ccm-hooks send`'s check."""
    item = {"v": 1, "id": sendqueue.new_item_id(sid), "session_id": sid, "text": given,
            "created_at": record.iso_utc(time.time()), "by": "a test"}  # fmt: skip
    fileio.atomic_write(str(home / "queue" / f"{item['id']}.json"), fileio.encode_line(item))
    return str(item["id"])


def _answer_dialog(pane: Pane, *keys: str) -> None:
    """Answer the open permission dialog with ``keys``. 2.1.328 ignores keys for about a second after a
    dialog opens (no accidental approval): press again until the dialog is gone."""
    for _ in range(8):
        send_keys(pane, *keys)
        try:
            wait_for_screen(pane, lambda s: not has_permission_dialog(s), timeout=2.0, what="the dialog gone")
            return
        except WaitTimeout:
            continue
    raise WaitTimeout(f"the dialog never took {keys}\n{pane.describe()}")


def _no_choice(screen: str) -> str:
    """The number of the dialog's "No" choice (3 on 2.1.197, 4 on 2.1.328)."""
    for line in screen.splitlines():
        words = line.replace("❯", " ").split()
        if len(words) >= 2 and words[0].endswith(".") and words[0][:-1].isdigit() and words[1] == "No":
            return words[0][:-1]
    raise AssertionError(f"no 'No' choice in the dialog:\n{screen}")


def test_a_dialog_dismissed_or_answered_no_leaves_waiting_and_then_delivers(
    claude_bin: str, claude_version: str, fake_api: FakeAnthropic, project_dir: Path, ccm_home: Path,
    tmux_server: TmuxServer, agentd: Agentd,
) -> None:  # fmt: skip
    install_hooks(project_dir)
    configure(ccm_home, liveness_s=10.0)  # the default (agentd_settings.py), not the tests' quick 0.5 s

    def respond(body: dict[str, Any]) -> Reply:
        # After a dialog was dismissed Claude Code sends the next prompt with its own note of the interrupt
        # in front ("[Request interrupted by user ...]"), in the same user message.
        for prompt, name in (("write one", "one.txt"), ("after the dismissed dialog", "two.txt")):
            if last_user_text(body).endswith(prompt):
                return [tool_use("Bash", {"command": f"echo x > {name}", "description": "ask"})]
        return [text("Hi there.")]

    fake_api.responder = respond
    pane = start_in_tmux(
        tmux_server, claude_bin, project_dir, fake_api,
        args=("--permission-mode", ASKING_PERMISSION_MODE[claude_version]),
    )  # fmt: skip
    agentd.start()
    submit(pane, "write one")
    sid = session_of(ccm_home)
    wait_for_screen(pane, has_permission_dialog, what="the first permission dialog")
    wait_state(ccm_home, sid, "waiting")
    first = _send(sid, "after the dismissed dialog")  # waits: a dialog is open

    _answer_dialog(pane, "Escape")
    dismissed = time.time()
    st = _idle_record(ccm_home, sid, 1)  # leaves waiting
    assert time.time() - dismissed < 15.0
    assert str(st["reason"]).startswith(DIALOG_GONE), st
    # The queued prompt arrives once; its turn asks again, and this time the answer is No.
    assert _delivered(_settled(ccm_home, sid, first)), agentd.log()
    screen = wait_for_screen(pane, has_permission_dialog, what="the second permission dialog")
    wait_state(ccm_home, sid, "waiting")
    second = _send(sid, "after the refused dialog")
    _answer_dialog(pane, _no_choice(screen))
    answered = time.time()
    st = _idle_record(ccm_home, sid, 2)
    assert time.time() - answered < 15.0
    assert str(st["reason"]).startswith(DIALOG_GONE), st
    assert _delivered(_settled(ccm_home, sid, second)), agentd.log()
    wait_idle(pane)
    time.sleep(1.0)
    # Neither Esc nor No fires a hook (both versions): only the daemon's record says the dialog is gone.
    events = [(r["event"], (r.get("set_state") or {}).get("state")) for r in read_log(ccm_home, sid)]
    asked = [i for i, (event, _) in enumerate(events) if event == "PermissionRequest"]
    assert len(asked) == 2
    for i in asked:
        assert events[i + 1 : i + 3] == [("ccm.queued", None), ("ccm.state", "idle")], events
    assert _prompts(ccm_home, sid) == ["write one", "after the dismissed dialog", "after the refused dialog"]
    for prompt in ("after the dismissed dialog", "after the refused dialog"):
        assert [r.last_user_text.endswith(prompt) for r in fake_api.main_requests()].count(True) == 1
    assert not (project_dir / "one.txt").exists() and not (project_dir / "two.txt").exists()


DIALOG_GONE = "the dialog was answered No or dismissed"


def _idle_record(home: Path, sid: str, nth: int) -> dict[str, Any]:
    """The ``set_state`` of the daemon's ``nth`` record that the session is idle. Read from the log, not the
    status: the queued prompt is typed within milliseconds of it, so the status may be busy again before a
    poll of it sees idle."""

    def found() -> dict[str, Any] | None:
        idle = [c for r in read_log(home, sid) if (c := r.get("set_state") or {}).get("state") == "idle"]
        return idle[nth - 1] if len(idle) >= nth else None

    return wait_for(found, timeout=20, what=f"the daemon's idle record #{nth}")


class _Held:
    """A responder that holds its answer to one prompt until released (or 60 s): a model turn that runs
    with no tool, which only Esc ends."""

    def __init__(self, prompt: str) -> None:
        self.prompt = prompt
        self.release = threading.Event()

    def __call__(self, body: dict[str, Any]) -> Reply:
        if last_user_text(body) == self.prompt:
            self.release.wait(60)
            return [text("Too late.")]
        return default_responder()(body)


@pytest.fixture
def held(fake_api: FakeAnthropic) -> Iterator[_Held]:
    responder = _Held("think for a long time")
    fake_api.responder = responder
    yield responder
    responder.release.set()


def test_esc_during_a_model_turn_is_idle_within_seconds(
    claude_bin: str, fake_api: FakeAnthropic, project_dir: Path, ccm_home: Path,
    tmux_server: TmuxServer, agentd: Agentd, held: _Held,
) -> None:  # fmt: skip
    install_hooks(project_dir)
    configure(ccm_home, liveness_s=10.0)  # the default; stall_after_s stays 600 s
    pane, sid = idle_session(tmux_server, claude_bin, project_dir, fake_api, ccm_home, "first prompt")
    agentd.start()
    submit(pane, held.prompt)
    wait_for(lambda: said(fake_api, held.prompt) == 1, what="the held turn at the model")
    st = wait_state(ccm_home, sid, "processing")
    assert st["tools_running"] == {}
    send_keys(pane, "Escape")
    pressed = time.time()
    idle = wait_state(ccm_home, sid, "idle", timeout=20)
    assert time.time() - pressed < 10.0, idle
    assert str(idle["reason"]).startswith("interrupted: Claude Code is idle again"), idle
    # Esc fires no hook: after the held prompt, only the daemon's record.
    log = read_log(ccm_home, sid)
    assert [r["event"] for r in log][-2:] == ["UserPromptSubmit", "ccm.state"], log[-3:]
    assert not pane.dead()
