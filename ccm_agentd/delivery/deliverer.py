"""Typing items into sessions: the exact text once, confirmed by the event it causes, or nothing and why.

Items: a prompt queued by ``ccm-hooks send`` (``queued``), the continue watch mode hands over past Claude
Code's Stop-hook cap (``handoff``), the resume after a usage limit (``resume``). The protocol, every step a
``ccm.delivery`` record in the session's log (spec/typing.md, spec/agentd.md):

1. The text must pass the one rule for typed text (``ccm_hooks.texts``); if not: ``refused``, with why, and
   the session's next item goes on (a bad item never blocks the others).
2. Only into a pane all three witnesses call idle (readiness.py): status ``idle`` (``rate_limited`` for a
   resume), Claude Code's registry ``idle``, the screen an empty box.
3. ``typing`` is logged first, conditional on the log still ending where the decision was made; then the
   typist pastes the text and presses Enter only once the box shows exactly it.
4. ``delivered`` when the typing caused its UserPromptSubmit (the first one after the ``typing`` record that
   Claude Code did not write itself), whatever Claude Code made of the text (it trims it): the typing
   record, not a comparison of texts, says whose it is. A different text there is noted in the record.
5. No such event after 5 s: the transcript is searched for the prompt (a lost hook); the box still holding
   exactly our text gets Enter once more; an empty box with Claude idle means the text was lost: ``retry``,
   again after 2, 5, 15, 30, 60 s, then ``failed``; a busy session with no event for 60 s: ``unconfirmed``,
   never typed again.

A restarted daemon rebuilds all of this from the log, so a kill -9 at any point neither loses an item nor
types one twice.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from ccm_agentd import panes, registry, screen, transcript
from ccm_agentd.delivery import readiness, typist
from ccm_agentd.delivery.history import FINAL, History, Item, Track
from ccm_hooks import paths, store
from ccm_hooks.record import iso_utc
from ccm_hooks.statedir import logscan, reader, sendqueue
from ccm_hooks.statedir.timefmt import parse_ts
from ccm_hooks.texts import TextError, check_typed, same_text

log = logging.getLogger("ccm_agentd.delivery")

CONFIRM_S = 5.0  # after Enter, how long the event it causes may take before we look at the pane
GIVE_UP_S = 60.0  # a busy session with no such event this long after Enter: unconfirmed
SETTLE_POLL_S = 0.02  # the quickest look again at a pane not yet idle
BACKOFF_S = (2.0, 5.0, 15.0, 30.0, 60.0)  # before attempts 2, 3, ...; past the last one: failed
MENU_ESC_AGAIN_S = 2.0  # the least time between two Escs into a usage-limit menu that is still shown
HISTORY_MARGIN_S = 300.0  # a session's log is read from this long before its oldest pending item
_BUFFER_CHARS = re.compile(r"[^A-Za-z0-9_-]")


class Deliverer:
    def __init__(
        self,
        root: str,
        tmux: panes.Tmux,
        counts: dict[str, int] | None = None,
        registry_dir: str | None = None,
    ) -> None:
        self.root = root
        self.tmux = tmux
        self.registry_dir = registry_dir
        self.histories: dict[str, History] = {}
        self.counts = counts if counts is not None else {}  # outcome -> number, for metrics
        self.why: dict[str, tuple[str, str]] = {}  # item id -> (session, why it is not typed yet)
        self.unknown_screens: dict[str, str] = {}  # pane -> why nothing was typed into it
        self.menu_esc: dict[str, float] = {}  # session -> when Esc was last pressed into its usage-limit menu

    # --- what is pending --------------------------------------------------------------------------------

    def items_for(self, status: dict[str, Any], queued: list[dict[str, Any]]) -> list[Item]:
        """What is waiting to be typed into this session, in order: a person's queued prompts first."""
        sid = str(status.get("session_id"))
        items = [
            Item(q["id"], sid, q["text"], "queued", str(q.get("created_at") or ""), q.get("command") is True)
            for q in queued
            if q.get("session_id") == sid
        ]
        handoff = (status.get("watch") or {}).get("handoff")
        if isinstance(handoff, dict) and isinstance(handoff.get("prompt"), str):
            item_id = f"handoff-{handoff.get('turn')}-{handoff.get('ts')}"
            items.append(Item(item_id, sid, handoff["prompt"], "handoff", str(handoff.get("ts") or "")))
        return items

    def forget(self, sid: str) -> None:
        """The session is gone: drop what was read of its log."""
        self.histories.pop(sid, None)
        self.menu_esc.pop(sid, None)
        for item_id in [i for i, (s, _) in self.why.items() if s == sid]:
            del self.why[item_id]

    def history(self, sid: str, since: str = "") -> History:
        """The delivery records of a session's log, read from shortly before ``since`` (the oldest pending
        item) the first time, then incrementally: never the whole history of a long-lived session."""
        h = self.histories.get(sid)
        if h is None:
            path = paths.events_path(self.root, sid)
            start = parse_ts(since)
            offset = logscan.seek_since(path, iso_utc(start - HISTORY_MARGIN_S)) if start is not None else 0
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

    def waits_report(self, by_session: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, str]]:
        """Resumes and watch handoffs not typed yet, and why (queued items are in queue_report)."""
        queued = {str(item.get("id")) for items in by_session.values() for item in items}
        return {i: {"session": sid, "waiting": why} for i, (sid, why) in self.why.items() if i not in queued}

    def screen_report(self) -> dict[str, str]:
        """Panes whose screen the daemon did not recognise: it typed nothing there."""
        return dict(self.unknown_screens)

    # --- one step ---------------------------------------------------------------------------------------

    def step(
        self, status: dict[str, Any], items: list[Item], now: float, expire_s: float | None = None
    ) -> float | None:
        """Advance this session's deliveries. Returns when to look again (epoch seconds), or None."""
        sid = str(status.get("session_id"))
        pending = {item.id for item in items}
        for gone in [i for i, (s, _) in self.why.items() if s == sid and i not in pending]:
            del self.why[gone]  # no longer pending (the session left rate_limited, a handoff was consumed)
        if not items and sid not in self.histories:
            return None  # nothing pending, nothing typed that is not settled: no need to read its log
        history = self.history(sid, min((i.created for i in items if i.created), default=""))
        # One item at a time per session: a typed one is settled before anything else is typed. It may no
        # longer be pending (a handoff is consumed by the UserPromptSubmit that confirms it).
        for track in history.tracks.values():
            if track.outcome == "typing" and track.typing_seq is not None:
                return self._confirm(status, track, history, now)
        for item in items:
            track = history.tracks.get(item.id) or Track(item)
            if track.outcome in FINAL:
                self._finish(item)  # a restart after the record, before the move
                continue
            try:
                text = check_typed(item.text, allow_command=item.command)
            except TextError as exc:
                self._record(status, item, track.attempts, "refused", f"not typed: the text {exc}")
                self._finish(item)
                continue
            if expire_s is not None and self._expired(status, item, track, now, expire_s):
                continue
            if track.outcome == "retry":
                if track.attempts >= len(BACKOFF_S) + 1:
                    self._record(status, item, track.attempts, "failed", "no confirmation after every retry")
                    self._finish(item)
                    continue
                due = track.last_ts + BACKOFF_S[track.attempts - 1]
                if now < due:
                    return due
            return self._try_type(status, item, text, track.attempts + 1, now)
        return None

    def _expired(self, status: dict[str, Any], item: Item, track: Track, now: float, expire_s: float) -> bool:
        created = parse_ts(item.created)
        if item.kind != "queued" or created is None or now - created <= expire_s:
            return False
        why = self.why.get(item.id, (item.session_id, "never idle"))[1]
        self._record(status, item, track.attempts, "failed", f"expired after {int(expire_s)} s: {why}")
        self._finish(item)
        return True

    # --- typing -----------------------------------------------------------------------------------------

    def wait(self, item: Item, why: str) -> None:
        """``item`` is not typed yet, for this reason (ccm-agentd status shows it)."""
        self.why[item.id] = (item.session_id, why)
        log.debug("not typing %s into %s: %s", item.id, item.session_id[:8], why)

    def _try_type(
        self, status: dict[str, Any], item: Item, text: str, attempt: int, now: float
    ) -> float | None:
        wanted = "rate_limited" if item.kind == "resume" else "idle"
        if status.get("state") != wanted:
            self.wait(item, f"the session is {status.get('state')}, not {wanted}")
            return None  # the next status change wakes us
        look = readiness.look(self.tmux, status, self.registry_dir)
        pane = str(status.get("tmux_pane"))
        if look.unknown:
            if self.unknown_screens.get(pane) != look.why:
                log.warning("typing nothing into %s (session %s): %s", pane, item.session_id[:8], look.why)
            self.unknown_screens[pane] = look.why
        else:
            self.unknown_screens.pop(pane, None)
        if not look.ok:
            self.wait(item, look.why)
            if look.rate_limit_menu and item.kind == "resume":
                # 2.1.197 opened its own usage-limit menu; Esc there is its choice 1, "Stop and wait". Once
                # per MENU_ESC_AGAIN_S: the menu stays on screen a moment after Esc, and a step that comes
                # sooner (any wake-up) must not press it again: Esc Esc on the prompt opens Rewind.
                pressed = self.menu_esc.get(item.session_id)
                if pressed is None or now - pressed >= MENU_ESC_AGAIN_S:
                    log.info("closing Claude Code's usage-limit menu in %s with Esc before the resume", pane)
                    self.tmux.press(str(status["tmux_socket"]), pane, "Escape")
                    self.menu_esc[item.session_id] = pressed = now
                return min(now + 0.5, pressed + MENU_ESC_AGAIN_S)
            if not status.get("tmux_pane"):
                return None
            # The screen settles without a hook event: Claude Code fires Stop before it redraws its prompt
            # (bench/agentd_delivery.py). Look again soon after the status change, then less and less often
            # (a tenth of the time since), up to every 2 s: about 40 looks in the first 5 s, not 250.
            since = parse_ts(status.get("state_since")) or 0.0
            return now + min(2.0, max(SETTLE_POLL_S, (now - since) / 10))
        typing = self._record(
            status, item, attempt, "typing", f"attempt {attempt}", text=text, expect=status["seq"]
        )
        if typing is None:
            return None  # a hook event arrived meanwhile: decide again on the new status
        socket = str(status["tmux_socket"])
        buffer = "ccm-" + _BUFFER_CHARS.sub("_", item.id)[:60]
        hint = look.reading is not None and look.reading.maybe_hint
        outcome, detail = typist.type_once(
            self.tmux, socket, pane, text, buffer, command=item.command, hint_probed=hint
        )
        if outcome == "entered":
            self.counts["typed"] = self.counts.get("typed", 0) + 1
            self.why[item.id] = (item.session_id, "typed: waiting for the event it causes")
            log.info("typed %s into %s (%s, attempt %d)", item.id, item.session_id[:8], pane, attempt)
            return time.time() + CONFIRM_S
        if outcome == "mismatch":
            self._record(status, item, attempt, "failed", detail)
            self._finish(item)
            return None
        # not_idle or lost: nothing was submitted; try again after the backoff
        self._record(status, item, attempt, "retry", detail)
        return now + BACKOFF_S[min(attempt - 1, len(BACKOFF_S) - 1)]

    # --- confirming -------------------------------------------------------------------------------------

    def _confirm(self, status: dict[str, Any], track: Track, history: History, now: float) -> float | None:
        item = track.item
        caused = history.caused(track)
        if caused is not None:
            latency = max(0.0, now - track.typing_ts)
            event = caused.get("event")
            detail = f"{event} after {latency:.1f} s"
            if event == "UserPromptSubmit" and not same_text(caused.get("prompt"), item.text):
                detail += f"; Claude Code submitted it as {str(caused.get('prompt'))[:80]!r}"
            self._record(status, item, track.attempts, "delivered", detail)
            self._finish(item)
            return None
        waited = now - track.typing_ts
        if waited < CONFIRM_S:
            return track.typing_ts + CONFIRM_S
        if transcript.submitted_after(status.get("transcript_path"), item.text, track.typing_ts):
            self._record(status, item, track.attempts, "delivered", "in the transcript (no hook event came)")
            self._finish(item)
            return None
        socket, pane = status.get("tmux_socket"), status.get("tmux_pane")
        view = self.tmux.view(str(socket), str(pane)) if socket and pane else None
        entry = registry.read(status.get("claude_pid"), self.registry_dir)
        claude_idle = entry is None or entry.status == "idle"
        reading = screen.read(view) if view is not None else None
        if reading is not None and claude_idle:
            if reading.verdict == "typed" and screen.same_box_text(reading.box, item.text):
                if not track.enter_again and not item.text.endswith("\\"):
                    track.enter_again = True  # the text is there, Enter was not taken: once more
                    self.tmux.press_enter(str(socket), str(pane))
                    return now + CONFIRM_S
            elif reading.verdict == "idle":
                self._record(
                    status,
                    item,
                    track.attempts,
                    "retry",
                    "no event, nothing in the transcript, the box is empty",
                )
                return now + BACKOFF_S[min(track.attempts - 1, len(BACKOFF_S) - 1)]
        if waited > GIVE_UP_S:
            why = reading.why if reading is not None else "no pane to look at"
            self._record(
                status, item, track.attempts, "unconfirmed", f"no event it causes in {int(waited)} s ({why})"
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
        if item.command:
            delivery["command"] = True
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
