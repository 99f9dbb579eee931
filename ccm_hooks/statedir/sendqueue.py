"""The prompt queue: ``ccm-hooks send`` writes items, ccm-agentd types them into idle sessions.

Layout (spec/layout.md)::

    queue/<item id>.json        pending, one file per prompt, written atomically
    queue/done/<item id>.json   delivered (or given up on: see the ccm.delivery records in the log)

Item ids start with a nanosecond timestamp, so a plain sort is queue order. An item file is only ever
created (atomically, complete) and then moved: what happened to it is told by the session's event log
(``ccm.queued``, then ``ccm.delivery`` records), which is how a restarted daemon knows not to type it twice.
"""

from __future__ import annotations

import os
import secrets
import time
from typing import Any

from ccm_hooks import fileio, paths, record, store
from ccm_hooks.errors import CcmError
from ccm_hooks.texts import TextError, check_typed

MAX_PENDING_PER_SESSION = 50  # a script gone wrong must not queue without bound


def queue_dir(root: str) -> str:
    return os.path.join(root, "queue")


def done_dir(root: str) -> str:
    return os.path.join(root, "queue", "done")


def new_item_id(session_id: str) -> str:
    return f"{time.time_ns()}-{session_id[:8]}-{secrets.token_hex(3)}"


def check_text(text: str, command: bool = False) -> str:
    """The text as ccm will type it (spec/typing.md), or a one-line CcmError saying why it cannot be."""
    try:
        return check_typed(text, allow_command=command)
    except TextError as exc:
        raise CcmError(f"the prompt {exc}") from None


def enqueue(root: str, session_id: str, text: str, by: str, command: bool = False) -> dict[str, Any]:
    """Write the item, then log it in the session (``ccm.queued``). Returns the item.

    Either both happen or neither: if the log cannot take the record (a full disk), the item file is
    removed again and CcmError says so, so a retry cannot queue the same prompt twice.
    """
    if sum(1 for item in pending(root) if item["session_id"] == session_id) >= MAX_PENDING_PER_SESSION:
        raise CcmError(
            f"session {session_id[:8]} already has {MAX_PENDING_PER_SESSION} prompts queued; "
            "`ccm-hooks queue` lists them, `ccm-hooks queue cancel ID` removes one"
        )
    item: dict[str, Any] = {
        "v": 1,
        "id": new_item_id(session_id),
        "session_id": session_id,
        "text": check_text(text, command),
        "created_at": record.iso_utc(time.time()),
        "by": by,
    }
    if command:
        item["command"] = True
    path = os.path.join(queue_dir(root), item["id"] + ".json")
    try:
        paths.ensure_dir(queue_dir(root))
        fileio.atomic_write(path, fileio.encode_line(item))
        try:
            store.append_ccm(
                root, session_id, "ccm.queued", {"queued": {"item": item["id"], "text": item["text"]}}
            )
        except BaseException:
            os.unlink(path)
            raise
    except OSError as exc:
        where = exc.filename or root
        raise CcmError(
            f"nothing was queued: {exc.strerror or exc} ({where}); fix that and send again"
        ) from None
    return item


def pending(root: str, refused: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Pending items, oldest first. Unreadable or foreign files are skipped; with ``refused``, each one's
    path is put there with why (ccm-agentd logs it once)."""
    try:
        names = sorted(
            n for n in os.listdir(queue_dir(root)) if n.endswith(".json") and not n.startswith(".")
        )
    except FileNotFoundError:
        return []
    items = []
    for name in names:
        path = os.path.join(queue_dir(root), name)
        try:
            item = fileio.read_json(path)
        except (OSError, ValueError) as exc:
            if refused is not None:
                refused[path] = str(exc) if isinstance(exc, fileio.UnsafePath) else f"{path}: {exc}"
            continue
        if item is None:  # taken out of the queue meanwhile
            continue
        if (
            isinstance(item, dict)
            and item.get("id") == name[: -len(".json")]
            and paths.valid_session_id(item.get("session_id"))
            and isinstance(item.get("text"), str)
        ):
            items.append(item)
        elif refused is not None:
            refused[path] = f"{path} is not a queue item (spec/agentd.md)"
    return items


def cancel(root: str, item_id: str, by: str) -> dict[str, Any]:
    """Take a pending item out of the queue before it is typed. Refused once its typing has begun.

    The ``cancelled`` record is written only if the session's log still ends where this decision was made,
    and only if no ``typing`` record of the item is in it, so a daemon about to type it sees the record
    first (its own ``typing`` record is conditional the same way) and the two cannot both happen.
    """
    from ccm_hooks.statedir import logscan, reader
    from ccm_hooks.statedir.timefmt import parse_ts

    item = next((i for i in pending(root) if i["id"] == item_id), None)
    if item is None:
        raise CcmError(f"no pending item {item_id!r}; `ccm-hooks queue` lists them")
    sid = item["session_id"]
    for _ in range(5):
        status = reader.read_status(paths.status_path(root, sid))
        seq = status.get("seq") if status else None
        # Its records come after the item was made: read the log from there, not from its start.
        log = paths.events_path(root, sid)
        since = record.iso_utc((parse_ts(item.get("created_at")) or 0.0) - 60.0)
        typed = [
            r
            for r in logscan.LogStream(log, logscan.seek_since(log, since), min_ts=since)
            if r.get("event") == "ccm.delivery" and (r.get("delivery") or {}).get("item") == item_id
        ]
        if typed and (typed[-1].get("delivery") or {}).get("outcome") == "typing":
            raise CcmError(f"{item_id} is being typed right now; it can no longer be cancelled")
        fields = {"delivery": {"item": item_id, "kind": "queued", "attempt": len(typed),
                               "outcome": "cancelled", "detail": f"cancelled by {by}"}}  # fmt: skip
        if store.append_ccm(
            root, sid, "ccm.delivery", fields, expect_seq=seq if isinstance(seq, int) else None
        ):
            finish(root, item_id)
            return item
    raise CcmError(f"session {sid[:8]} is too busy to cancel {item_id} safely; try again")


def finish(root: str, item_id: str) -> None:
    """Move a pending item to queue/done (idempotent: a restarted daemon may finish it again)."""
    paths.ensure_dir(done_dir(root))
    try:
        os.replace(
            os.path.join(queue_dir(root), item_id + ".json"), os.path.join(done_dir(root), item_id + ".json")
        )
    except FileNotFoundError:
        pass
