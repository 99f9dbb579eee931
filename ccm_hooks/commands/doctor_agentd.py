"""``ccm-hooks doctor``, the daemon's half: is ccm-agentd running, and will anything reach the user?

Read from the files ccm-agentd keeps (spec/agentd.md): ``agentd/agentd.lock`` is flock(2)-ed for the
daemon's life, ``agentd/health.json`` is rewritten every 15 s; ``[agentd]`` in config.toml says how
to notify.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from typing import TYPE_CHECKING, Any

from ccm_hooks import paths, watch
from ccm_hooks.errors import CcmError
from ccm_hooks.statedir import config
from ccm_hooks.statedir.agentd_lock import lock_held
from ccm_hooks.statedir.timefmt import format_age, parse_ts

if TYPE_CHECKING:
    from ccm_hooks.commands.doctor import Report

STALE_S = 90.0  # as the handlers judge it: six missed heartbeats
START = "ccm-agentd install-service (or ccm-agentd run in a terminal)"


def _health(root: str) -> dict[str, Any] | None:
    path = paths.agentd_health_path(root)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        health = json.loads(os.read(fd, 1 << 20))
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
    return health if isinstance(health, dict) else None


def check_agentd(report: Report, root: str) -> None:
    # A warning, not a FIX: recording works without the daemon; what waits for it is named.
    if not lock_held(root):
        report.warn(
            f"ccm-agentd is not running for {root}: sessions are recorded, but queued prompts (ccm-hooks "
            f"send), watch handoffs to tmux, stall detection and notifications wait for it; start it: {START}"
        )
        return
    health = _health(root) or {}
    beat = parse_ts(health.get("heartbeat_at"))
    pid = health.get("pid")
    if beat is None:
        report.ok(f"ccm-agentd is running for {root} (no heartbeat yet)")
        return
    age = time.time() - beat
    if age > STALE_S:
        report.warn(
            f"ccm-agentd (pid {pid}) holds its lock but its last heartbeat was {format_age(age)} ago: it may "
            f"be stuck; restart it (systemctl --user restart ccm-agentd, or stop pid {pid} and {START})"
        )
    else:
        report.ok(f"ccm-agentd is running for {root} (pid {pid}, heartbeat {format_age(age)} ago)")


def desktop_notifier() -> str | None:
    """The desktop notifier ccm-agentd would run from this environment, or None."""
    from ccm_agentd import notify  # the daemon's own rule, so doctor and the daemon agree

    probe = notify.Notification("finished", "doctor", "idle", "", None, None, None, None, "ccm doctor")
    argv = notify.desktop_argv(probe, sys.platform, os.environ)
    return os.path.basename(argv[0]) if argv else None


def check_notify(report: Report, root: str) -> None:
    path = watch.config_path(root)
    try:
        table = config.read_config(root).get("agentd") or {}
    except CcmError:
        return  # check_watch_config names the problem with the file
    if not isinstance(table, dict):
        table = {}
    raw = table.get("notify_commands")
    commands = [c for c in raw if isinstance(c, str) and c.strip()] if isinstance(raw, list) else []
    desktop_on = table.get("notify_desktop", True) is not False
    notifier = desktop_notifier() if desktop_on else None
    if commands:
        also = f" and the desktop ({notifier})" if notifier else ""
        report.ok(f"notifications: {len(commands)} notify_commands in {path}{also}")
        return
    if notifier:
        report.ok(
            f"notifications: desktop ({notifier}); a ccm-agentd service started outside this desktop "
            f"session may not reach it: notify_commands under [agentd] in {path} always run"
        )
        return
    why = (
        "notify_desktop = false"
        if not desktop_on
        else "there is no desktop notifier here (notify-send in a graphical session, osascript on macOS)"
    )
    report.warn(
        f"no notification is configured, so nothing will be sent when a session needs you, finishes or "
        f'stalls ({why}): add notify_commands = ["ntfy publish ccm \\"$CCM_SUMMARY\\""] (any command) '
        f"under [agentd] in {path}"
    )
