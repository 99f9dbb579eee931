"""What a session's log says about the items ccm-agentd types into it: ``ccm.delivery`` records and the
hook events that follow them. Read incrementally, from shortly before the oldest pending item: never the
whole history of a long-lived session."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ccm_hooks.statedir import reader
from ccm_hooks.statedir.timefmt import parse_ts

FINAL = ("delivered", "unconfirmed", "failed", "refused", "cancelled")
# Hook events a typed command (an explicit /command or !command) may cause instead of UserPromptSubmit:
# built-in commands fire none (/clear: SessionEnd then SessionStart; /compact: PreCompact; /exit: SessionEnd).
COMMAND_EFFECTS = frozenset({"UserPromptSubmit", "UserPromptExpansion", "SessionEnd", "SessionStart",
                             "PreCompact", "PreModelSwitch", "DirectoryAdded", "Stop"})  # fmt: skip
KEEP_EVENTS = 200  # hook events kept per session, newest last: what confirmations look at


@dataclass(frozen=True)
class Item:
    id: str
    session_id: str
    text: str
    kind: str  # queued | handoff | resume
    created: str = ""  # ts of the item (its queue file, the handoff decision, the limit)
    command: bool = False  # a slash or ! command a person asked for explicitly (ccm-hooks send --command)


@dataclass
class Track:
    """What the log says about one item."""

    item: Item
    attempts: int = 0
    outcome: str | None = None  # the last delivery record's outcome
    typing_seq: int | None = None
    typing_ts: float = 0.0
    last_ts: float = 0.0  # when the last delivery record was written
    enter_again: bool = False  # in memory: after a restart, one more Enter on our own text is harmless


@dataclass
class History:
    tail: reader.LogTail
    tracks: dict[str, Track] = field(default_factory=dict)
    events: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # (seq, hook record), newest last

    def update(self) -> None:
        for rec in self.tail.read_new():
            event = str(rec.get("event") or "")
            seq = int(rec.get("seq") or 0)
            if event == "ccm.delivery":
                self._delivery(rec, seq)
            elif not event.startswith("ccm.") and event != "Notification":
                self.events.append((seq, rec))
                del self.events[:-KEEP_EVENTS]

    def _delivery(self, rec: dict[str, Any], seq: int) -> None:
        d = rec.get("delivery") or {}
        item_id = str(d.get("item"))
        track = self.tracks.get(item_id)
        if track is None:
            item = Item(item_id, str(rec.get("session_id")), str(d.get("text") or ""), str(d.get("kind")),
                        command=d.get("command") is True)  # fmt: skip
            track = self.tracks[item_id] = Track(item)
        if d.get("text"):
            old = track.item
            track.item = Item(item_id, old.session_id, str(d["text"]), old.kind, old.created,
                              d.get("command") is True or old.command)  # fmt: skip
        track.outcome = d.get("outcome")
        track.attempts = max(track.attempts, int(d.get("attempt") or 0))
        track.last_ts = parse_ts(rec.get("ts")) or 0.0
        if track.outcome == "typing":
            track.typing_seq = seq
            track.typing_ts = track.last_ts
            track.enter_again = False

    def caused(self, track: Track) -> dict[str, Any] | None:
        """The hook record the typing caused: the first UserPromptSubmit after it that Claude Code did not
        write itself (for a command, the first of the events a command causes); None while there is none."""
        from ccm_hooks.texts import claude_own

        assert track.typing_seq is not None
        for seq, rec in self.events:
            if seq <= track.typing_seq:
                continue
            event = rec.get("event")
            if event == "UserPromptSubmit" and not claude_own(rec.get("prompt")):
                return rec
            if track.item.command and event in COMMAND_EFFECTS:
                return rec
        return None
