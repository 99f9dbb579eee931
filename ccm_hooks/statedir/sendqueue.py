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

MAX_TEXT_CHARS = 10_000


def queue_dir(root: str) -> str:
    return os.path.join(root, "queue")


def done_dir(root: str) -> str:
    return os.path.join(root, "queue", "done")


def new_item_id(session_id: str) -> str:
    return f"{time.time_ns()}-{session_id[:8]}-{secrets.token_hex(3)}"


def check_text(text: str) -> str:
    if not text.strip():
        raise CcmError("the prompt is empty")
    if len(text) > MAX_TEXT_CHARS:
        raise CcmError(f"the prompt has {len(text)} characters; the limit is {MAX_TEXT_CHARS}")
    if any(ch in text for ch in "\r\n") or any(ord(ch) < 32 and ch != "\t" for ch in text):
        # Typed into the TUI, a newline is Enter: the first line would be submitted on its own.
        raise CcmError(
            "the prompt must be one line (tmux would press Enter at each newline); join the lines, or "
            "write the text to a file and send: read FILE and do what it says"
        )
    return text


def enqueue(root: str, session_id: str, text: str, by: str) -> dict[str, Any]:
    """Write the item, then log it in the session (``ccm.queued``). Returns the item."""
    item: dict[str, Any] = {
        "v": 1,
        "id": new_item_id(session_id),
        "session_id": session_id,
        "text": check_text(text),
        "created_at": record.iso_utc(time.time()),
        "by": by,
    }
    paths.ensure_dir(queue_dir(root))
    fileio.atomic_write(os.path.join(queue_dir(root), item["id"] + ".json"), fileio.encode_line(item))
    store.append_ccm(root, session_id, "ccm.queued", {"queued": {"item": item["id"], "text": text}})
    return item


def pending(root: str) -> list[dict[str, Any]]:
    """Pending items, oldest first. Unreadable or foreign files are skipped."""
    try:
        names = sorted(
            n for n in os.listdir(queue_dir(root)) if n.endswith(".json") and not n.startswith(".")
        )
    except FileNotFoundError:
        return []
    items = []
    for name in names:
        try:
            item = fileio.read_json(os.path.join(queue_dir(root), name))
        except (OSError, ValueError):
            continue
        if (
            isinstance(item, dict)
            and item.get("id") == name[: -len(".json")]
            and paths.valid_session_id(item.get("session_id"))
            and isinstance(item.get("text"), str)
        ):
            items.append(item)
    return items


def finish(root: str, item_id: str) -> None:
    """Move a pending item to queue/done (idempotent: a restarted daemon may finish it again)."""
    paths.ensure_dir(done_dir(root))
    try:
        os.replace(
            os.path.join(queue_dir(root), item_id + ".json"), os.path.join(done_dir(root), item_id + ".json")
        )
    except FileNotFoundError:
        pass
