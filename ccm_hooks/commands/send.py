"""``ccm-hooks send SESSION TEXT``: queue a prompt for ccm-agentd to type into the session's pane;
``ccm-hooks queue``: what is queued, and why it waits; ``ccm-hooks queue cancel ID``."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from ccm_hooks import fileio, paths, watch
from ccm_hooks.errors import CcmError
from ccm_hooks.statedir import reader, sendqueue
from ccm_hooks.statedir.timefmt import format_age, parse_ts

BY = "ccm-hooks send"


def _unreachable(sid: str, st: dict[str, Any]) -> str | None:
    """Why nothing could ever type into this session, or None."""
    if st.get("state") == "ended":
        return f"session {sid[:8]} has ended ({st.get('reason')}); resume it in tmux first"
    if st.get("background"):
        return (
            f"session {sid[:8]} runs in the background (claude --bg): it has no pane to type into; "
            f"`claude attach {sid[:8]}` opens it"
        )
    if not st.get("tmux_pane"):
        return (
            f"session {sid[:8]} does not run in tmux, so nothing can type into it; start claude inside tmux "
            "(or use watch mode, which continues a session without typing)"
        )
    return None


def send_cmd(session: str, text: str, command: bool = False) -> int:
    root = paths.state_dir()
    sid = reader.resolve_session(root, session)
    st = reader.read_status(paths.status_path(root, sid))
    if st is None:
        raise CcmError(f"session {sid} has no status yet; wait for its first event")
    why = _unreachable(sid, st)
    if why:
        raise CcmError(why)
    item = sendqueue.enqueue(root, sid, text, by=BY, command=command)
    print(f"queued {item['id']} for {sid[:8]}: ccm-agentd types it when the session is idle")
    if not watch.agentd_alive(root, time.time()):
        print(
            "warning: ccm-agentd is not running; start it: ccm-agentd run (or install-service)",
            file=sys.stderr,
        )
    return 0


def _reasons(root: str) -> dict[str, Any]:
    """Why each pending item waits, as the running daemon last said (its health file)."""
    try:
        health = fileio.read_json(paths.agentd_health_path(root))
    except (OSError, ValueError):
        return {}
    queue = health.get("queue") if isinstance(health, dict) else None
    return queue if isinstance(queue, dict) and watch.agentd_alive(root, time.time()) else {}


def queue_cmd(as_json: bool) -> int:
    root = paths.state_dir()
    reasons = _reasons(root)
    items = []
    for item in sendqueue.pending(root):
        why = reasons.get(item["id"]) or {}
        items.append({**item, "attempts": why.get("attempts", 0),
                      "waiting": why.get("waiting") or "ccm-agentd is not running"})  # fmt: skip
    if as_json:
        sys.stdout.write(json.dumps(items, ensure_ascii=False, indent=2) + "\n")
        return 0
    if not items:
        print("no prompts queued")
        return 0
    now = time.time()
    for item in items:
        age = format_age(now - (parse_ts(item.get("created_at")) or now))
        text = " ".join(str(item["text"]).split())
        head = f"{item['id']}  to {item['session_id'][:8]}  {age:>4} ago  attempts {item['attempts']}"
        print(f"{head}  {text[:60]!r}")
        print(f"    waiting: {item['waiting']}")
    return 0


def queue_cancel_cmd(item_id: str) -> int:
    root = paths.state_dir()
    item = sendqueue.cancel(root, item_id, by="ccm-hooks queue cancel")
    print(f"cancelled {item['id']} (to {item['session_id'][:8]}): it will not be typed")
    return 0
