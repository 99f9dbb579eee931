"""``ccm-hooks send SESSION TEXT``: queue a prompt for ccm-agentd to type into the session's pane."""

from __future__ import annotations

import sys
import time

from ccm_hooks import paths
from ccm_hooks.errors import CcmError
from ccm_hooks.statedir import reader, sendqueue


def send_cmd(session: str, text: str) -> int:
    root = paths.state_dir()
    sid = reader.resolve_session(root, session)
    st = reader.read_status(paths.status_path(root, sid))
    if st is None:
        raise CcmError(f"session {sid} has no status yet; wait for its first event")
    if st.get("state") == "ended":
        raise CcmError(f"session {sid[:8]} has ended ({st.get('reason')}); resume it in tmux first")
    item = sendqueue.enqueue(root, sid, text, by="ccm-hooks send")
    print(f"queued {item['id']} for {sid[:8]}: ccm-agentd types it when the session is idle")
    if not st.get("tmux_pane"):
        print(f"warning: session {sid[:8]} does not run in tmux; nothing can type into it", file=sys.stderr)
    from ccm_hooks import watch

    if not watch.agentd_alive(root, time.time()):
        print(
            "warning: ccm-agentd is not running; start it: ccm-agentd run (or install-service)",
            file=sys.stderr,
        )
    return 0
