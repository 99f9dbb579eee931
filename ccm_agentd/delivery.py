"""Typing prompts into sessions, safely and at most once.

What gets typed (an *item*): a prompt queued by ``ccm-hooks send`` (``queued``), the continue watch mode
hands over past Claude Code's Stop-hook cap (``handoff``), the resume after a usage limit (``resume``).

The protocol, every step a ``ccm.delivery`` record in the session's log (spec/agentd.md):

1. Only into a pane that is really idle: status ``idle`` (``rate_limited`` for a resume), the pane alive
   and running claude, its screen showing the empty input box, no turn running, no dialog.
2. ``typing`` is logged first, conditional on the log still ending where the decision was made (so a
   hook event that arrived meanwhile cancels it), then the screen is checked once more, the text sent
   literally (``send-keys -l``), and Enter pressed as a separate step once the box shows the text.
3. ``delivered`` when a UserPromptSubmit with that prompt follows the ``typing`` record in the log.
4. No confirmation: if the box still holds the text, Enter again (once); if the pane is idle with an empty
   box, the text was lost: ``retry`` with backoff; if the pane is busy, the turn started though its hook
   was not seen: ``unconfirmed``, never typed again.

A restarted daemon rebuilds all of this from the log (``History``), so a kill -9 at any point neither
loses an item nor types one twice.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

from ccm_agentd import panes, screen
from ccm_hooks import paths, state, store
from ccm_hooks.statedir import reader, sendqueue
from ccm_hooks.statedir.timefmt import parse_ts

log = logging.getLogger("ccm_agentd.delivery")

CONFIRM_S = 5.0  # after Enter, how long a UserPromptSubmit may take before we look at the pane
GIVE_UP_S = 60.0  # a busy pane with no UserPromptSubmit this long after Enter: unconfirmed
SHOW_TEXT_S = 2.0  # how long the typed text may take to appear in the input box
SETTLE_POLL_S = 0.02  # the quickest look again at a pane not yet idle (one capture-pane costs about 2 ms)
BACKOFF_S = (2.0, 5.0, 15.0, 30.0, 60.0)  # before attempts 2, 3, ...; past the last one: failed
FINAL = ("delivered", "unconfirmed", "failed")


HISTORY_MARGIN_S = 300.0  # a session's log is read from this long before its oldest pending item


@dataclass(frozen=True)
class Item:
    id: str
    session_id: str
    text: str
    kind: str  # queued | handoff | resume
    created: str = (
        ""  # ts of the item (its queue file, the handoff decision, the limit): where its records start
    )


@dataclass
class Track:
    """What the log says about one item."""

    item: Item
    attempts: int = 0
    outcome: str | None = None  # the last delivery record's outcome
    typing_seq: int | None = None
    last_ts: float = 0.0  # when the last delivery record was written
    enter_again: bool = False


@dataclass
class History:
    """The delivery-relevant records of one session's log, read incrementally."""

    tail: reader.LogTail
    tracks: dict[str, Track] = field(default_factory=dict)
    prompts: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # (seq, UserPromptSubmit record)

    def update(self) -> None:
        for rec in self.tail.read_new():
            event = rec.get("event")
            if event == "UserPromptSubmit" and isinstance(rec.get("prompt"), str):
                self.prompts.append((int(rec.get("seq") or 0), rec))
                del self.prompts[:-50]
            elif event == "ccm.delivery":
                d = rec.get("delivery") or {}
                item_id = str(d.get("item"))
                track = self.tracks.get(item_id)
                if track is None:
                    item = Item(
                        item_id, str(rec.get("session_id")), str(d.get("text") or ""), str(d.get("kind"))
                    )
                    track = self.tracks[item_id] = Track(item)
                if d.get("text"):
                    track.item = Item(item_id, track.item.session_id, str(d["text"]), track.item.kind)
                track.outcome = d.get("outcome")
                track.attempts = max(track.attempts, int(d.get("attempt") or 0))
                track.last_ts = parse_ts(rec.get("ts")) or 0.0
                if track.outcome == "typing":
                    track.typing_seq = int(rec.get("seq") or 0)
                    track.enter_again = False

    def prompt_after(self, seq: int, text: str) -> bool:
        return any(s > seq and state.same_prompt(rec, text) for s, rec in self.prompts)


class Deliverer:
    def __init__(self, root: str, tmux: panes.Tmux, counts: dict[str, int] | None = None) -> None:
        self.root = root
        self.tmux = tmux
        self.histories: dict[str, History] = {}
        self.counts = counts if counts is not None else {}  # outcome -> number, for metrics
        self.why: dict[str, tuple[str, str]] = {}  # item id -> (session, why it is not typed yet)
        self.unknown_screens: dict[str, str] = {}  # pane -> why nothing was typed into it

    def forget(self, sid: str) -> None:
        """The session is gone: drop what was read of its log."""
        self.histories.pop(sid, None)
        for item_id in [i for i, (s, _) in self.why.items() if s == sid]:
            del self.why[item_id]

    def history(self, sid: str, since: str = "") -> History:
        """The delivery records of a session's log, read from shortly before ``since`` (the oldest pending
        item) the first time, then incrementally: never the whole history of a long-lived session."""
        h = self.histories.get(sid)
        if h is None:
            path = paths.events_path(self.root, sid)
            start = parse_ts(since)
            offset = offset_of_time(path, start - HISTORY_MARGIN_S) if start is not None else 0
            h = self.histories[sid] = History(reader.LogTail(path, offset))
        h.update()
        return h

    def queue_report(self, by_session: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
        """Each pending queued item: its session, attempts so far, and why it is not typed yet."""
        out: dict[str, dict[str, Any]] = {}
        for sid, items in by_session.items():
            tracks = self.histories[sid].tracks if sid in self.histories else {}
            for item in items:
                track = tracks.get(str(item.get("id")))
                out[str(item.get("id"))] = {
                    "session": sid,
                    "created_at": item.get("created_at"),
                    "attempts": track.attempts if track else 0,
                    "waiting": self.why.get(str(item.get("id")), (sid, "not looked at yet"))[1],
                }
        return out

    def screen_report(self) -> dict[str, str]:
        """Panes whose screen the daemon did not recognise, and what it did about it (typed nothing)."""
        return dict(self.unknown_screens)

    def items_for(self, status: dict[str, Any], queued: list[dict[str, Any]]) -> list[Item]:
        """What is waiting to be typed into this session, in order: a person's queued prompts first."""
        sid = str(status.get("session_id"))
        items = [
            Item(q["id"], sid, q["text"], "queued", str(q.get("created_at") or ""))
            for q in queued
            if q.get("session_id") == sid
        ]
        handoff = (status.get("watch") or {}).get("handoff")
        if isinstance(handoff, dict) and isinstance(handoff.get("prompt"), str):
            item_id = f"handoff-{handoff.get('turn')}-{handoff.get('ts')}"
            items.append(Item(item_id, sid, handoff["prompt"], "handoff", str(handoff.get("ts") or "")))
        return items

    def step(
        self, status: dict[str, Any], items: list[Item], now: float, extra_ready: bool = False,
        expire_s: float | None = None,
    ) -> float | None:  # fmt: skip
        """Advance this session's deliveries. Returns when to look again (epoch seconds), or None."""
        sid = str(status.get("session_id"))
        if not items and sid not in self.histories:
            return None  # nothing pending, nothing typed that is not settled: no need to read its log
        history = self.history(sid, min((i.created for i in items if i.created), default=""))
        if expire_s is not None:
            items = self._expire(status, items, history, now, expire_s)
        # One item at a time per session: a typed one is settled before anything else is typed. It may no
        # longer be pending (a handoff is consumed by the UserPromptSubmit that confirms it).
        for track in history.tracks.values():
            if track.outcome == "typing" and track.typing_seq is not None:
                return self._confirm(status, track.item, track, history, now)
        for item in items:
            track = history.tracks.get(item.id) or Track(item)
            if track.outcome in FINAL:
                self._finish(item)  # a restart after the record, before the move
                continue
            if track.outcome == "typing" and track.typing_seq is not None:
                return self._confirm(status, item, track, history, now)
            if track.outcome == "retry":
                if track.attempts >= len(BACKOFF_S) + 1:
                    self._record(status, item, track.attempts, "failed", "no confirmation after every retry")
                    self._finish(item)
                    continue
                due = track.last_ts + BACKOFF_S[track.attempts - 1]
                if now < due:
                    return due
            return self._try_type(status, item, track.attempts + 1, now, extra_ready)
        return None

    def _expire(
        self, status: dict[str, Any], items: list[Item], history: History, now: float, expire_s: float
    ) -> list[Item]:
        """Queued items older than ``expire_s`` that are not being typed fail as expired."""
        keep = []
        for item in items:
            created = parse_ts(item.created)
            track = history.tracks.get(item.id)
            typing = track is not None and track.outcome == "typing"
            if item.kind == "queued" and created is not None and now - created > expire_s and not typing:
                attempts = track.attempts if track else 0
                why = self.why.get(item.id, (item.session_id, "never idle"))[1]
                self._record(status, item, attempts, "failed", f"expired after {int(expire_s)} s: {why}")
                self._finish(item)
            else:
                keep.append(item)
        return keep

    # --- typing ---------------------------------------------------------------------------------------

    def pane_is_idle(self, status: dict[str, Any]) -> tuple[bool, str]:
        socket, pane = status.get("tmux_socket"), status.get("tmux_pane")
        if not socket or not pane:
            return False, "the session does not run in tmux"
        info = self.tmux.pane_info(socket, pane)
        if info is None or info.dead:
            return False, "the pane is gone"
        if not panes.runs_claude(info, status.get("claude_pid")):
            return False, f"the pane runs {info.command!r}, not claude"
        shown = self.tmux.capture(socket, pane)
        if shown is None or not screen.is_idle(shown):
            return False, "the pane is not at an empty prompt"
        return True, ""

    def _try_type(
        self, status: dict[str, Any], item: Item, attempt: int, now: float, extra_ready: bool
    ) -> float | None:
        wanted = "rate_limited" if item.kind == "resume" else "idle"
        if status.get("state") != wanted and not extra_ready:
            self.why[item.id] = (item.session_id, f"the session is {status.get('state')}, not {wanted}")
            return None  # the next status change wakes us
        ok, why = self.pane_is_idle(status)
        self.why[item.id] = (item.session_id, why or "typing")
        if not ok:
            log.debug("not typing %s into %s: %s", item.id, item.session_id[:8], why)
            if not status.get("tmux_pane"):
                return None
            # The screen settles without a hook event: Claude Code fires Stop before it redraws its prompt
            # (bench/agentd_delivery.py). Look again soon after the status change, then less and less often
            # (a tenth of the time since), up to every 2 s: about 40 looks in the first 5 s, not 250.
            since = parse_ts(status.get("state_since")) or 0.0
            return now + min(2.0, max(SETTLE_POLL_S, (now - since) / 10))
        typing = self._record(
            status, item, attempt, "typing", f"attempt {attempt}", text=item.text, expect=status["seq"]
        )
        if typing is None:
            return None  # a hook event arrived meanwhile: decide again on the new status
        socket, pane = str(status["tmux_socket"]), str(status["tmux_pane"])
        shown = self.tmux.capture(socket, pane) or ""
        if not screen.is_idle(shown):
            self._record(status, item, attempt, "retry", "the pane stopped being idle before typing")
            return now + BACKOFF_S[0]
        self.tmux.type_text(socket, pane, item.text)
        if not self._wait_for_text(socket, pane, item.text):
            # Nothing to submit: the keys were lost (claude was redrawing). Clearing is not needed.
            self._record(status, item, attempt, "retry", "the text did not appear in the input box")
            return now + BACKOFF_S[min(attempt - 1, len(BACKOFF_S) - 1)]
        self.tmux.press_enter(socket, pane)
        self.counts["typed"] = self.counts.get("typed", 0) + 1
        log.info("typed %s into %s (%s, attempt %d)", item.id, item.session_id[:8], pane, attempt)
        return time.time() + CONFIRM_S

    def _wait_for_text(self, socket: str, pane: str, text: str) -> bool:
        deadline = time.monotonic() + SHOW_TEXT_S
        while True:
            shown = self.tmux.capture(socket, pane) or ""
            if screen.shows_text(shown, text) and not screen.has_dialog(shown):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)

    # --- confirming -----------------------------------------------------------------------------------

    def _confirm(
        self, status: dict[str, Any], item: Item, track: Track, history: History, now: float
    ) -> float | None:
        assert track.typing_seq is not None
        if history.prompt_after(track.typing_seq, item.text):
            latency = max(0.0, now - track.last_ts)
            self._record(status, item, track.attempts, "delivered", f"UserPromptSubmit after {latency:.1f} s")
            self._finish(item)
            return None
        waited = now - track.last_ts
        if waited < CONFIRM_S:
            return track.last_ts + CONFIRM_S
        socket, pane = status.get("tmux_socket"), status.get("tmux_pane")
        shown = self.tmux.capture(str(socket), str(pane)) if socket and pane else None
        if shown is not None and screen.is_idle(shown, empty=False) and screen.shows_text(shown, item.text):
            if not track.enter_again:
                track.enter_again = True  # in memory: after a restart, one more Enter is harmless
                self.tmux.press_enter(str(socket), str(pane))
                return now + CONFIRM_S
        elif shown is not None and screen.is_idle(shown):
            self._record(
                status, item, track.attempts, "retry", "no UserPromptSubmit and the input box is empty"
            )
            return now + BACKOFF_S[min(track.attempts - 1, len(BACKOFF_S) - 1)]
        if waited > GIVE_UP_S:
            self._record(
                status, item, track.attempts, "unconfirmed", "the pane is busy but no UserPromptSubmit came"
            )
            self._finish(item)
            return None
        return now + CONFIRM_S

    # --- records ----------------------------------------------------------------------------------------

    def _record(
        self, status: dict[str, Any], item: Item, attempt: int, outcome: str, detail: str,
        text: str | None = None, expect: int | None = None,
    ) -> dict[str, Any] | None:  # fmt: skip
        delivery: dict[str, Any] = {
            "item": item.id,
            "kind": item.kind,
            "attempt": attempt,
            "outcome": outcome,
        }
        if text is not None:
            delivery["text"] = text
        delivery["detail"] = detail
        new = store.append_ccm(
            self.root, item.session_id, "ccm.delivery", {"delivery": delivery}, expect_seq=expect
        )
        if new is not None:
            self.counts[outcome] = self.counts.get(outcome, 0) + 1
            log.info("delivery %s %s: %s", item.id, outcome, detail)
            self.history(item.session_id)
        return new

    def _finish(self, item: Item) -> None:
        self.why.pop(item.id, None)
        if item.kind == "queued":
            sendqueue.finish(self.root, item.id)


def offset_of_time(path: str, since: float, chunk: int = 1 << 16) -> int:
    """A byte offset in a JSONL log at or before the first record with ``ts`` >= ``since``: the log is read
    backwards from its end, a chunk at a time, until a whole record older than ``since`` is found."""
    from ccm_hooks import fileio
    from ccm_hooks.record import iso_utc

    wanted = iso_utc(since)  # the ts format sorts as text
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return 0
    try:
        end = os.fstat(fd).st_size
        while end > 0:
            start = max(0, end - chunk)
            data = os.pread(fd, end - start, start)
            first = data.find(b"\n") + 1 if start > 0 else 0  # the first line may be cut: it starts before
            found = None
            for line_end, rec in fileio.iter_lines(data[first:]):
                if str(rec.get("ts") or "") < wanted:
                    found = start + first + line_end  # just after an older record
            if found is not None:
                return found
            if start == 0:
                return 0
            end = start + first if first > 0 else start
        return 0
    finally:
        os.close(fd)
