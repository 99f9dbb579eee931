"""The systemd notification protocol (sd_notify(3)), spoken directly: no libsystemd, standard library only.

The protocol: when a service runs with ``Type=notify``, systemd puts the path of a unix datagram socket in
``$NOTIFY_SOCKET`` (absolute, or ``@name`` for Linux's abstract namespace, meaning a leading NUL byte). The
service sends newline-separated ``KEY=VALUE`` assignments, one datagram per message: ``READY=1`` once it
is up (until then ``systemctl start`` waits), ``WATCHDOG=1`` at least once per ``WatchdogSec`` (systemd
passes the period as ``$WATCHDOG_USEC``, for ``$WATCHDOG_PID`` only, and kills and restarts a service that
goes quiet), ``RELOADING=1`` / ``STOPPING=1`` around a reload or shutdown, ``STATUS=...`` free text that
``systemctl status`` shows. Messages are fire-and-forget: systemd never replies.

Everything here returns False rather than raising: outside systemd (launchd, a terminal, tests) there is no
socket, and a notification that cannot be sent must never take the daemon down. With ``NotifyAccess=main``
systemd only accepts messages from the main process, so children (tmux, claude) inheriting
``$NOTIFY_SOCKET`` cannot confuse it; a caller may still drop the variable from their environment.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

# Linux only; elsewhere Python's sockets are close-on-exec anyway (PEP 446), so 0 loses nothing.
_CLOEXEC: int = getattr(socket, "SOCK_CLOEXEC", 0)


def _address(value: str) -> str | None:
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    return None  # relative paths and other families (vsock:...) are not for us


def notify(message: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send ``message`` as one datagram to ``$NOTIFY_SOCKET``; True if it was sent.

    False when the variable is unset or empty (not running under systemd) or the send failed: the caller
    decides whether that is worth a log line.
    """
    env = os.environ if environ is None else environ
    address = _address(env.get("NOTIFY_SOCKET", ""))
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | _CLOEXEC) as sock:
            sock.sendto(message.encode("utf-8"), address)
    except (OSError, ValueError):  # ValueError: an embedded NUL in a path
        return False
    return True


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """How often to send ``WATCHDOG=1``, in seconds (half the watchdog timeout), or None for never.

    None when ``$WATCHDOG_USEC`` is unset or not a positive integer, or when ``$WATCHDOG_PID`` names another
    process (a child that inherited the environment must not ping on its parent's behalf).
    """
    env = os.environ if environ is None else environ
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid is not None:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    return usec / 1_000_000 / 2


def ready(environ: Mapping[str, str] | None = None) -> bool:
    return notify("READY=1", environ)


def watchdog(environ: Mapping[str, str] | None = None) -> bool:
    return notify("WATCHDOG=1", environ)


def stopping(environ: Mapping[str, str] | None = None) -> bool:
    return notify("STOPPING=1", environ)


def reloading(environ: Mapping[str, str] | None = None) -> bool:
    """Announce a reload; send ``ready()`` when it is done.

    MONOTONIC_USEC lets systemd 253+ tell this reload from an earlier one; older versions ignore it.
    """
    return notify(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}", environ)


def status(text: str, environ: Mapping[str, str] | None = None) -> bool:
    """Set the one-line status ``systemctl status`` shows (line breaks become spaces)."""
    return notify("STATUS=" + " ".join(text.splitlines()), environ)
